"""Decoder guidance scale: world-judge accuracy of each mini decoder at several classifier-free guidance scales,
side by side in one run (issue 5). The mini model's ``guidance`` per decoder (configs/model/mini.yaml and the
bundle's config.yaml) is chosen from it.

Each decoder decodes the same held-out conditions (canonical renders of every object from a *tuning* stream,
world seed 9 by default, not the evaluation's seed 0: the encoder's image embedding for unCLIP, the decoder's own
caption embeddings for audio and video, i.e. the targets the heads are trained to produce), with the same seeds,
scheduler and steps, at every guidance scale; the judges shipped with the model score the outputs.

    python benchmarks/guidance_scale.py --model checkpoints/codi2-mini --n 48 \
        --out benchmarks/results/guidance_scale.json

Ratios reported per modality: accuracy and seconds per sample at each scale relative to the configured one.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import torch


def run(model_dir: str, n: int, scales: Sequence[float], modalities: Sequence[str], judges_dir: Optional[str],
        world_seed: int = 9, seed: int = 0, threads: int = 0) -> dict:
    from train.mini.common import world_batch
    from train.mini.decoder_train import conditions, judge_generations
    from codi2.modality import Modality
    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.judges import Judges

    if threads:
        torch.set_num_threads(threads)
    if any(g < 1.0 for g in scales):
        raise ValueError(f"--scales {list(scales)}: guidance scales must be >= 1 (1 = no guidance)")
    model = CoDi2Pipeline.from_pretrained(model_dir, device="cpu").model
    judges = Judges.load(judges_dir or str(Path(model_dir) / "judges"))
    results: dict = {}
    for m in modalities:
        dec = model.decoder(Modality(m))
        held = world_batch(m, 0, n, world_seed, "test", canonical=True)
        cond = conditions(dec, m, held, model.encoder, model.preprocess)
        configured = float(dec.cfg.guidance)
        rows = []
        for g in sorted(set(scales) | {configured}):
            t = time.perf_counter()
            r = judge_generations(dec, m, held, judges, cond, None, seed, guidance=g)
            r.update(guidance=g, wall_seconds=round(time.perf_counter() - t, 2))
            rows.append(r)
            attrs = " ".join(f"{a} {r[a]:.3f}" for a in ("shape", "colour", "size", "position", "direction") if a in r)
            print(f"{m:5s} guidance {g:4.1f}: {attrs} all {r['all']:.3f} {r['seconds_per_sample']:.3f} s/sample",
                  flush=True)
        ref = next(r for r in rows if r["guidance"] == configured)
        key = {"image": "shape+colour", "audio": "all", "video": "colour+direction"}[m]  # the world targets' keys
        for r in rows:
            r["accuracy_vs_configured"] = round(r[key] / ref[key], 3) if ref[key] else None
            r["time_vs_configured"] = round(r["seconds_per_sample"] / ref["seconds_per_sample"], 3)
        best = max(rows, key=lambda r: (round(r[key], 3), round(r["all"], 3), -abs(r["guidance"] - configured)))
        results[m] = {"rows": rows, "key": key, "configured": {"guidance": configured, "scheduler": dec.cfg.scheduler,
                                                                "steps": dec.cfg.steps},
                      "best": {"guidance": best["guidance"], key: best[key], "all": best["all"]}}
        dec.unload()
    return {"benchmark": "guidance_scale", "model": model_dir, "n": n, "world_seed": world_seed,
            "torch_threads": torch.get_num_threads(), "machine": platform.platform(), "results": results}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/codi2-mini")
    p.add_argument("--judges", help="default: MODEL/judges")
    p.add_argument("--n", type=int, default=48, help="held-out conditions per modality")
    p.add_argument("--scales", type=float, nargs="+", default=[1.5, 3.0, 5.0, 7.5])
    p.add_argument("--modalities", nargs="+", default=["image", "audio", "video"], choices=["image", "audio", "video"])
    p.add_argument("--world-seed", type=int, default=9, help="the tuning stream (the evaluation uses seed 0)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="guidance_scale.json")
    a = p.parse_args(argv)
    res = run(a.model, a.n, a.scales, a.modalities, a.judges, a.world_seed, a.seed, a.threads)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
