"""Encoder throughput on CPU: images/s and audio clips/s, one at a time vs batched, side by side in one run.

    python benchmarks/encode.py --out encode.json [--encoders tiny,small] [--batch 16] [--repeats 5]

Each repeat times ``batch`` single-item calls and one batched call of the same items back to back,
so both see the same machine load; rates and ``speedup`` use the fastest repeat of each (robust to
other processes on a shared machine), ``speedup_median`` the medians. Inputs are
preprocessed tensors (random), so this measures the model only.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from codi2.config import ImageBindConfig
from codi2.encoders import ImageBindEncoder, small_imagebind_config, tiny_imagebind_config

logger = logging.getLogger("benchmarks.encode")

PRESETS: dict[str, Callable[[], ImageBindConfig]] = {"tiny": tiny_imagebind_config, "small": small_imagebind_config}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _side_by_side(single: Callable[[int], object], batched: Callable[[], object], batch: int, repeats: int) -> dict:
    """Times ``batch`` calls of ``single(i)`` and one ``batched()`` per repeat, interleaved."""
    single(0), batched()  # warm-up
    t_single, t_batched = [], []
    for _ in range(repeats):
        t_single.append(_seconds(lambda: [single(i) for i in range(batch)]))
        t_batched.append(_seconds(batched))
    one, many = min(t_single), min(t_batched)
    return {"one_at_a_time_per_s": batch / one, "batched_per_s": batch / many, "speedup": one / many,
            "speedup_median": statistics.median(t_single) / statistics.median(t_batched),
            "seconds_one_at_a_time": t_single, "seconds_batched": t_batched}


def bench_encoder(cfg: ImageBindConfig, batch: int, repeats: int) -> dict:
    """Image and audio-clip throughput of one encoder configuration."""
    torch.manual_seed(0)
    enc = ImageBindEncoder(cfg)
    s = cfg.image_size
    images = torch.randn(batch, 3, s, s)  # (B, 3, S, S)
    clips = torch.randn(batch, 1, 1, cfg.audio_num_mel_bins, cfg.audio_target_len)  # (B, 1 clip, 1, mel, T)
    return {
        "params": sum(p.numel() for p in enc.parameters()),
        "image_size": s, "image_tokens": enc.num_image_tokens,
        "audio_input": [cfg.audio_num_mel_bins, cfg.audio_target_len],
        "image": _side_by_side(lambda i: enc.encode_image(images[i:i + 1]), lambda: enc.encode_image(images), batch, repeats),
        "audio_clip": _side_by_side(lambda i: enc.encode_audio(clips[i:i + 1]), lambda: enc.encode_audio(clips), batch, repeats),
    }


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--encoders", default="tiny,small", help=f"comma-separated presets from {sorted(PRESETS)}")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        parser.error(f"--encoders {args.encoders!r}: unknown {unknown}; allowed: {sorted(PRESETS)}")
    if args.batch < 1 or args.repeats < 1:
        parser.error(f"--batch and --repeats must be >= 1, got {args.batch}, {args.repeats}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {"device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch": args.batch, "repeats": args.repeats, "encoders": {}}
    for name in names:
        logger.info("benchmarking the %s encoder", name)
        result["encoders"][name] = bench_encoder(PRESETS[name](), args.batch, args.repeats)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
