"""H.264 encoding of ``codi2.media.save_video``: x264 with its assembly paths vs without (``no-asm``, the default).

Side by side in one run, on the same frames: seconds per clip, and how many clips came out with other bytes
when each was encoded ``--repeats`` times in this one process (x264's assembly paths now and then choose another
bitstream for the same frames, which made the world's mp4 files, and so the trainer stages and evaluations that
read them, differ from one build to the next). Two sizes: the mini world's clips (rendered by
``data_builders.world``, 12 frames of 64 x 64) and the same clips blown up to a full-scale decoder's size
(Zeroscope's 24 frames of 576 x 320).

    python benchmarks/video_encode.py --out benchmarks/results/video_encode.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

SETTINGS = {"asm": {"crf": "18", "preset": "veryfast"},
            "no-asm": {"crf": "18", "preset": "veryfast", "x264-params": "no-asm=1"}}


def _world_clips(n: int) -> list:
    from data_builders.world.world import random_direction, random_object, render_video

    rng = np.random.default_rng(0)
    return [render_video(random_object(rng), random_direction(rng), seed=i) for i in range(n)]


def _large_clips(n: int) -> list:
    """World clips blown up to 24 x 320 x 576 (each frame twice, each pixel 5 x 9), plus light noise."""
    from codi2.media import Video

    rng = np.random.default_rng(1)
    out = []
    for clip in _world_clips(n):
        f = np.repeat(np.repeat(np.repeat(clip.frames, 2, axis=0), 5, axis=1), 9, axis=2).astype(np.int16)
        f = np.clip(f + rng.integers(-4, 5, f.shape), 0, 255).astype(np.uint8)
        out.append(Video(f, fps=clip.fps))
    return out


def _measure(clips: list, options: dict, repeats: int, tmp: Path) -> dict:
    from codi2 import media

    saved = media.X264_OPTIONS
    media.X264_OPTIONS = options
    try:
        digests = [[] for _ in clips]
        t = time.perf_counter()
        for r in range(repeats):
            for i, clip in enumerate(clips):
                path = media.save_video(clip, tmp / f"{r}-{i}.mp4")
                digests[i].append(hashlib.sha1(path.read_bytes()).hexdigest())
                path.unlink()
        seconds = time.perf_counter() - t
    finally:
        media.X264_OPTIONS = saved
    return {"seconds_per_clip": round(seconds / (repeats * len(clips)), 5),
            "clips_with_other_bytes": sum(len(set(d)) > 1 for d in digests), "clips": len(clips), "repeats": repeats}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-clips", type=int, default=300, help="mini-world clips (12 x 64 x 64)")
    p.add_argument("--large-clips", type=int, default=4, help="world clips blown up to 24 x 320 x 576")
    p.add_argument("--repeats", type=int, default=3, help="encodings of each clip per setting")
    p.add_argument("--out", default=None, help="write the JSON here")
    args = p.parse_args(argv)

    out = {"command": "python benchmarks/video_encode.py " + " ".join(argv or []), "machine": platform.machine(),
           "cpus": os.cpu_count(), "load_average_before": round(os.getloadavg()[0], 2), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="codi2-video-encode-") as tmp:
        for size, clips in (("world 12x64x64", _world_clips(args.world_clips)),
                            ("large 24x320x576", _large_clips(args.large_clips))):
            runs = {name: _measure(clips, opts, args.repeats, Path(tmp)) for name, opts in SETTINGS.items()}
            runs["time_ratio_no_asm_over_asm"] = round(runs["no-asm"]["seconds_per_clip"]
                                                       / runs["asm"]["seconds_per_clip"], 2)
            out["sizes"][size] = runs
    out["load_average_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
