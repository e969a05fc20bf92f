"""Data-builder throughput: records/s building a manifest from WebDataset tar shards with 1 and N workers.

Generates a synthetic shard set (random PNG/JPEG images + captions + JSON metadata, one duplicate and one
broken sample) in a temporary folder, then runs ``data_builders.build`` on it with each worker count,
side by side in one run, into fresh output folders; checks that every run wrote byte-identical manifests.
Times include process start-up of the workers (spawn) and extraction of the media to the output folder.
The 1-minute load average before and after is recorded: on a busy machine extra workers cannot help.

    python benchmarks/build_data.py --out build_data.json
    python benchmarks/build_data.py --shards 16 --per-shard 500 --image-size 256 --workers 1 2 4
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=8, help="tar shards")
    p.add_argument("--per-shard", type=int, default=200, help="samples per shard")
    p.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    p.add_argument("--kinds", nargs="+", default=["image"], choices=["image", "audio"], help="media in each sample")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts to compare")
    p.add_argument("--repeats", type=int, default=1, help="runs per worker count (the best is reported)")
    p.add_argument("--out", default=None, help="write the JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from data_builders import BuildOptions, WebDatasetSource, build
    from data_builders.fixtures import webdataset_shards

    load_before = os.getloadavg()[0]  # other processes on the machine skew the worker comparison
    with tempfile.TemporaryDirectory(prefix="codi2-build-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        shards = webdataset_shards(tmp / "wds", n_shards=args.shards, per_shard=args.per_shard,
                                   kinds=tuple(args.kinds), image_size=args.image_size)
        gen_s = time.perf_counter() - t0
        input_bytes = sum(s.stat().st_size for s in shards)
        src = WebDatasetSource(inputs=[str(tmp / "wds")])
        runs, manifests = [], {}
        for w in args.workers:
            best = None
            for r in range(args.repeats):
                out = tmp / f"out-w{w}-r{r}"
                t = time.perf_counter()
                s = build(src, BuildOptions(out=out, workers=w, progress=False))
                dt = time.perf_counter() - t
                manifests[w] = (out / "manifest.jsonl").read_bytes()
                if best is None or dt < best["seconds"]:
                    best = {"workers": w, "seconds": round(dt, 3), "samples": s["samples"], "records": s["records"],
                            "records_per_s": round(s["records"] / dt, 1), "samples_per_s": round(s["samples"] / dt, 1),
                            "input_mib_per_s": round(input_bytes / 2**20 / dt, 2), "skipped": s["skipped"]}
            runs.append(best)
    base = runs[0]["records_per_s"]
    for r in runs:
        r["speedup_vs_first"] = round(r["records_per_s"] / base, 2)
    result = {
        "benchmark": "build_data",
        "input": {"shards": args.shards, "samples_per_shard": args.per_shard, "image_size": args.image_size,
                  "kinds": args.kinds, "input_mib": round(input_bytes / 2**20, 2), "generate_s": round(gen_s, 2)},
        "runs": runs,
        "identical_manifests": len(set(manifests.values())) == 1,
        "machine": {"cpus": os.cpu_count(), "load_avg_1min_before": round(load_before, 2),
                    "load_avg_1min_after": round(os.getloadavg()[0], 2), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
