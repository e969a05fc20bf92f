"""Decoder sampler steps: world-judge accuracy and decode time of each decoder at 10 / 20 / 50 steps with
DPM-Solver++ and DDIM, side by side in one run (issue 5). The mini model's default (``steps: 20``,
``scheduler: dpm++`` in configs/model/mini.yaml) is chosen from it.

Each decoder decodes the same held-out conditions (test-split canonical renders of every object: the
encoder's image embedding for unCLIP, the decoder's own caption embeddings for audio and video, i.e. the
targets the heads are trained to produce), with the same seeds, under every (scheduler, steps) setting; the
judges shipped with the model score the outputs against the rendered attributes.

    python benchmarks/sampler_steps.py --model checkpoints/codi2-mini --n 32 --out benchmarks/results/sampler_steps.json

Ratios reported per modality: accuracy and seconds per sample of every setting relative to dpm++ at 20 steps.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import torch


def run(model_dir: str, n: int, steps: Sequence[int], schedulers: Sequence[str], modalities: Sequence[str],
        judges_dir: Optional[str], seed: int = 0, threads: int = 0) -> dict:
    from train.mini.common import world_batch
    from train.mini.decoder_train import conditions, judge_generations
    from codi2.modality import Modality
    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.judges import Judges

    if threads:
        torch.set_num_threads(threads)
    pipe = CoDi2Pipeline.from_pretrained(model_dir, device="cpu")
    model = pipe.model
    judges = Judges.load(judges_dir or str(Path(model_dir) / "judges"))
    results: dict = {}
    for m in modalities:
        dec = model.decoder(Modality(m))
        held = world_batch(m, 0, n, 0, "test", canonical=True)
        cond = conditions(dec, m, held, model.encoder, model.preprocess)
        rows = []
        for sched in schedulers:
            for k in steps:
                t = time.perf_counter()
                r = judge_generations(dec, m, held, judges, cond, k, seed, scheduler=sched)
                r.update(scheduler=sched, steps=k, wall_seconds=round(time.perf_counter() - t, 2))
                rows.append(r)
                extra = f" colour+direction {r['colour+direction']:.3f}" if "colour+direction" in r else ""
                print(f"{m:5s} {sched:5s} {k:3d} steps: shape+colour {r['shape+colour']:.3f}{extra} all {r['all']:.3f} "
                      f"{r['seconds_per_sample']:.3f} s/sample", flush=True)
        ref = next((r for r in rows if r["scheduler"] == "dpm++" and r["steps"] == 20), rows[0])
        for r in rows:
            r["accuracy_vs_ref"] = round(r["all"] / ref["all"], 3) if ref["all"] else None
            r["time_vs_ref"] = round(r["seconds_per_sample"] / ref["seconds_per_sample"], 3)
        best = max(rows, key=lambda r: (round(r["all"], 2), -r["seconds_per_sample"]))
        results[m] = {"rows": rows, "reference": {"scheduler": ref["scheduler"], "steps": ref["steps"]},
                      "most_accurate_fastest": {"scheduler": best["scheduler"], "steps": best["steps"]},
                      "configured": {"scheduler": dec.cfg.scheduler, "steps": dec.cfg.steps}}
        dec.unload()
    return {"benchmark": "sampler_steps", "model": model_dir, "n": n, "torch_threads": torch.get_num_threads(),
            "machine": platform.platform(), "results": results}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/codi2-mini")
    p.add_argument("--judges", help="default: MODEL/judges")
    p.add_argument("--n", type=int, default=32, help="held-out conditions per modality")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--schedulers", nargs="+", default=["dpm++", "ddim"], choices=["dpm++", "ddim"])
    p.add_argument("--modalities", nargs="+", default=["image", "audio", "video"], choices=["image", "audio", "video"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sampler_steps.json")
    a = p.parse_args(argv)
    res = run(a.model, a.n, a.steps, a.schedulers, a.modalities, a.judges, a.seed, a.threads)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
