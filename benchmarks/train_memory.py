"""Resident memory of the trainer at step N and at step 2N over records that are all new.

The full-scale stage configs (``configs/train/codi2-7b-stage1-alignment.yaml`` and ``…-stage2-instruction.yaml``)
run as they are, on the codi2-7b model config with dimension overrides only (``train.full_scale``) and local
weights in the real layouts; only the paths, the step count, the batch size and the save interval are set on the
command line. The image inputs are large enough for the cache to matter: ``modalities.image.n_in=257`` (the 7B
value) and a 512-wide encoder output (7B: 1024), so each image's features are 257 × 512 float32 = 514 KiB (about
1 MiB at 7B); the unCLIP decoder is written with 512-wide image embeddings to match.
Every record has its own image, and there are more records than the run reads, so every step encodes new images.

Runs, each in a fresh process (``VmRSS`` from ``/proc/self/status`` at the start of step N+1 and at the end of step
2N, before the final checkpoint):

* ``stage1_default`` / ``stage2_default``: the stage configs as they are (``data.feature_cache: disk``);
* ``memory_lru``: ``data.feature_cache=memory`` with a cap of ``--lru-mb`` MiB (the LRU);
* ``memory_uncapped``: ``data.feature_cache=memory`` with a cap far above what the run reads (what the memory
  cache did before it had a cap: keep every input's features).

    python benchmarks/train_memory.py --steps 60 --out benchmarks/results/train_memory.json

Target: ``rss_2n / rss_n ≤ 1.05`` for the stage defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = {"stage1": "configs/train/codi2-7b-stage1-alignment.yaml",
          "stage2": "configs/train/codi2-7b-stage2-instruction.yaml"}
HEAVY = ["encoder.out_embed_dim=512", "modalities.image.n_in=257", "modalities.image.head.targets.image_embeds=[512]"]
FEATURE_BYTES = 257 * 512 * 4


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    got = {}
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith(("VmRSS:", "VmHWM:")):
            k, v = ln.split(":")
            got[k] = int(v.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]


def prepare(work: Path, records: int) -> tuple[Path, Path]:
    """Weights, the model (``codi2 init`` of the codi2-7b config + overrides) and a manifest of ``records``
    captioning records (image in, caption out), each with its own image; returns ``(model dir, manifest)``."""
    from data_builders.fixtures import caption, image_bytes
    from codi2.decoders.tiny import save_tiny_unclip
    from train.full_scale import init_model, write_imagebind, write_weights

    env = write_weights(work / "weights", bin_variant=False)
    heavy, unclip = work / "weights" / "imagebind_huge-512.pth", work / "weights" / "unclip-512"
    if not heavy.is_file():
        write_imagebind(heavy, overrides={"out_embed_dim": 512})
        save_tiny_unclip(unclip, image_embed_dim=512)
    env = {**env, "CODI2_IMAGEBIND": str(heavy), "CODI2_UNCLIP": str(unclip)}
    model = init_model(work / "model", env, extra=HEAVY)
    data = work / "data"
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        (data / "media").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(records):
            name = f"media/{i:06d}.png"
            (data / name).write_bytes(image_bytes(10_000 + i, 32))
            lines.append(json.dumps({"schema": 1, "id": f"cap-{i:06d}", "source": "bench", "messages": [
                {"role": "user", "content": [{"type": "image", "path": name}, {"type": "text", "text": "Describe it."}]},
                {"role": "assistant", "content": [{"type": "text", "text": caption(i)}]}]}))
        manifest.write_text("\n".join(lines) + "\n")
    return model, manifest


def run_one(args: argparse.Namespace) -> int:
    """In a fresh process: trains ``2 × steps`` steps and prints the RSS figures as JSON."""
    import torch

    from train.loop import Trainer, load_train_config, setup_logging

    torch.set_num_threads(args.threads)
    setup_logging(rank=0)
    out = Path(args.run_dir)
    overrides = [f"model.pipeline={args.model}", f"data.manifests=[{args.manifest}]", f"output_dir={out}",
                 f"max_steps={2 * args.steps}", "save_every=0", "export=false", "tensorboard=false",
                 f"batch_size={args.batch_size}", "grad_accum=1", "deepspeed=null", "resume=none",
                 "data.workers=0", "optim.warmup_steps=0", *args.override]
    cfg = load_train_config(str(ROOT / STAGES[args.stage]), overrides)
    marks: dict = {}

    class Measured(Trainer):
        def micro_batch(self):
            if self.step == args.steps and "n" not in marks:
                marks["n"] = rss_mb()
                marks["t_n"] = time.perf_counter()
            return super().micro_batch()

        def save(self):
            if "2n" not in marks:
                marks["2n"] = rss_mb()
                marks["t_2n"] = time.perf_counter()
            return super().save()

    t = Measured(cfg)
    t.run()
    fc = t.feature_cache
    res = {"stage_config": STAGES[args.stage], "feature_cache": cfg.data.feature_cache,
           "feature_cache_max_mb": cfg.data.feature_cache_max_mb if cfg.data.feature_cache == "memory" else None,
           "steps_n": args.steps, "batch_size": args.batch_size, "rss_n_mb": round(marks["n"][0], 1),
           "rss_2n_mb": round(marks["2n"][0], 1), "ratio": round(marks["2n"][0] / marks["n"][0], 4),
           "hwm_mb": round(marks["2n"][1], 1), "seconds_n_to_2n": round(marks["t_2n"] - marks["t_n"], 1),
           "cache": fc.stats() if hasattr(fc, "stats") else None}
    print("RESULT " + json.dumps(res))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="N (the run trains 2N steps)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lru-mb", type=float, default=8.0, help="cap of the memory_lru run")
    p.add_argument("--work", default="/tmp/codi2-train-memory")
    p.add_argument("--runs", default="stage1_default,stage2_default,memory_lru,memory_uncapped")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/train_memory.json"))
    # internal: one measured run
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stage", default="stage1", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--manifest", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("override", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args)

    work = Path(args.work)
    records = 2 * args.steps * args.batch_size * 3 + 16  # stage phases weigh text 2/5 of steps at least: spare
    model, manifest = prepare(work, records)
    runs = {
        "stage1_default": ("stage1", []),
        "stage2_default": ("stage2", []),
        "memory_lru": ("stage1", ["data.feature_cache=memory", f"data.feature_cache_max_mb={args.lru_mb}"]),
        "memory_uncapped": ("stage1", ["data.feature_cache=memory", "data.feature_cache_max_mb=1000000"]),
    }
    results = {}
    for name in args.runs.split(","):
        stage, ov = runs[name]
        run_dir = work / "runs" / name
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(manifest.parent / ".codi2-targets", ignore_errors=True)  # the disk cache starts empty
        cmd = [sys.executable, __file__, "--one", "--stage", stage, "--model", str(model), "--manifest", str(manifest),
               "--run-dir", str(run_dir), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), *ov]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            results[name] = {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
        else:
            results[name] = {**json.loads(line[7:]), "wall_s": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps(results[name]), flush=True)
    target = 1.05
    out = {"benchmark": "train_memory", "target": f"rss_2n / rss_n <= {target} for the stage defaults",
           "model": "configs/model/codi2-7b.yaml + train.full_scale.TINY_MODEL_OVERRIDES + " + " ".join(HEAVY),
           "image_feature_bytes": FEATURE_BYTES, "records": records, "runs": results,
           "stage_defaults_pass": all(results[k].get("ratio", 99) <= target for k in results if k.endswith("_default")),
           "cpu": os.cpu_count(), "torch_threads": args.threads}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v.get("ratio") for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
