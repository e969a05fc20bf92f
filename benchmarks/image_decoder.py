"""Image decoder variants side by side (issue 5): what each one can draw, with the LLM taken out.

For the same held-out renders of a tuning stream (world seed 9, test split, not the evaluation's seed 0), the world
judges score

* the clean renders (the judges' own ceiling),
* each decoder's VAE round trip (encode, decode: the most its UNet can reach),
* each decoder's UNet given the encoder's exact embeddings of those renders (the image head's training targets),
  decoded with the model's configured picture sampler, steps and guidance (``--guidance`` overrides it), the same
  seeds for every decoder,

per attribute, every attribute right (``all``), shape and colour right (the text -> image target's key) and the
most frequent confusions. Each decoder's figures are also given relative to the first one's.

    python benchmarks/image_decoder.py --decoders runs/mini/image_before checkpoints/codi2-mini/decoders/image \\
        --n 480 --threads 1 --out benchmarks/results/image_decoder.json

The encoder and judges come from ``--model`` (default: the bundle). Every decoder compared must have been trained
on that encoder's embeddings: a decoder of another run's encoder draws from a different embedding space (the
previous bundle's decoders, given the re-run's encoder, get 31-33 % every attribute right against its own 93 %).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

TOP_CONFUSIONS = 8


def score(judges, held: list, images: list) -> dict[str, Any]:
    """Per-attribute accuracy of ``images`` against ``held``'s attributes, ``all``, ``shape+colour`` and the most
    frequent confusions as ``attr size: want -> got`` counts."""
    from train.mini.decoder_train import attribute_accuracy, judge_scores

    scores = [judge_scores(judges, "image", im) for im in images]
    out: dict[str, Any] = attribute_accuracy(scores, [s.attrs for s in held])
    wrong: collections.Counter = collections.Counter()
    for sc, s in zip(scores, held):
        for a, want in s.attrs.items():
            if sc[a][0] != want:
                wrong[f"{a} ({s.attrs['size']}): {want} -> {sc[a][0]}"] += 1
    out["confusions"] = dict(wrong.most_common(TOP_CONFUSIONS))
    return out


def run(decoders: Sequence[str], model_dir: str, judges_dir: Optional[str], n: int, world_seed: int = 9,
        seed: int = 0, threads: int = 0, batch: int = 16, guidance: Optional[float] = None) -> dict:
    from codi2.decoders import build_decoder
    from train.mini.common import world_batch
    from train.mini.decoder_train import conditions, image_round_trip
    from codi2.modality import Modality
    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.judges import Judges

    if threads:
        torch.set_num_threads(threads)
    for d in decoders:
        if not (Path(d) / "model_index.json").is_file():
            raise FileNotFoundError(f"--decoders {d}: not an image decoder pipeline folder (no model_index.json)")
    model = CoDi2Pipeline.from_pretrained(model_dir, device="cpu").model
    judges = Judges.load(judges_dir or str(Path(model_dir) / "judges"))
    held = world_batch("image", 0, n, world_seed, "test")
    base_cfg = model.decoder(Modality.IMAGE).cfg
    if guidance is not None:
        base_cfg = dataclasses.replace(base_cfg, guidance=guidance)
    cond = None
    rows = []
    for d in decoders:
        dec = build_decoder("image", dataclasses.replace(base_cfg, path=str(d)), device="cpu").load()
        if cond is None:  # the encoder's embeddings: the same for every decoder
            cond = conditions(dec, "image", held, model.encoder, model.preprocess)
        t = time.perf_counter()
        outs: list = []
        for i in range(0, n, batch):
            outs += dec.decode({k: v[i:i + batch] for k, v in cond.items()}, seed=seed + i)
        seconds = time.perf_counter() - t
        sched = dec.pipe.scheduler.config
        rows.append({"decoder": str(d), "vae_round_trip": score(judges, held, image_round_trip(dec, [s.media for s in held])),
                     "unet": score(judges, held, outs), "seconds_per_sample": round(seconds / n, 3),
                     "schedule": {"prediction_type": sched.prediction_type,
                                  "rescale_betas_zero_snr": bool(sched.get("rescale_betas_zero_snr", False)),
                                  "timestep_spacing": sched.get("timestep_spacing")}})
        r = rows[-1]
        print(f"{d}: VAE round trip all {r['vae_round_trip']['all']:.3f}, UNet all {r['unet']['all']:.3f} "
              f"(shape+colour {r['unet']['shape+colour']:.3f}), {r['seconds_per_sample']} s/sample", flush=True)
        dec.unload()
    first = rows[0]
    for r in rows:
        r["vs_first"] = {k: round(r[k]["all"] / first[k]["all"], 3) if first[k]["all"] else None
                         for k in ("vae_round_trip", "unet")}
    return {"benchmark": "image_decoder", "model": model_dir, "n": n, "world_seed": world_seed, "seed": seed,
            "sampling": {"scheduler": base_cfg.scheduler, "steps": base_cfg.steps, "guidance": base_cfg.guidance},
            "clean": score(judges, held, [s.media for s in held]), "decoders": rows,
            "torch_threads": torch.get_num_threads(), "machine": platform.platform()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", nargs="+", required=True, help="image decoder pipeline folders, the first the reference")
    p.add_argument("--model", default="checkpoints/codi2-mini", help="the encoder (conditions) and judges")
    p.add_argument("--judges", help="default: MODEL/judges")
    p.add_argument("--n", type=int, default=480, help="held-out renders")
    p.add_argument("--world-seed", type=int, default=9, help="the tuning stream (the evaluation uses seed 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--guidance", type=float, help="classifier-free guidance for every decoder (default: the model's "
                                                   "configured picture guidance)")
    p.add_argument("--out", default="image_decoder.json")
    a = p.parse_args(argv)
    res = run(a.decoders, a.model, a.judges, a.n, a.world_seed, a.seed, a.threads, guidance=a.guidance)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
