"""A tiny training manifest with generated media, for smoke runs, tests and benchmarks.

    python -m train.tiny_data OUT_DIR [--per-phase N] [--broken K] [--seed S]

Writes ``OUT_DIR/manifest.jsonl`` and ``OUT_DIR/media/``: ``N`` conversations of each phase
(text, image, audio, video outputs), with inputs of every modality, and optionally ``K`` broken
records (a missing media file, an undecodable image, a bad schema line). The content is random
noise: it exercises every code path of training, it teaches nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from codi2.io import setup_logging

log = logging.getLogger(__name__)

WORDS = "red green blue yellow circle square triangle star small big left right top bottom moving sound".split()


def _caption(rng: random.Random, lo: int = 2, hi: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_tiny_manifest(out_dir: "str | Path", per_phase: int = 8, broken: int = 0, seed: int = 0,
                        phases: Sequence[str] = ("text", "image", "audio", "video"),
                        text_words: tuple[int, int] = (2, 6)) -> Path:
    """Writes the manifest and its media; returns the manifest path.

    Args:
        out_dir: output folder (created).
        per_phase: conversations per phase.
        broken: extra broken records (cycling: missing file, undecodable image, schema error).
        seed: content seed.
        phases: phases to write.
        text_words: (min, max) words of each text part (wider ranges give more varied lengths).
    """
    from PIL import Image

    from codi2.media import Audio, Video, save_audio, save_video

    out = Path(out_dir)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)

    def image(name: str) -> str:
        Image.fromarray((nrng.random((32, 32, 3)) * 255).astype("uint8")).save(media / f"{name}.png")
        return f"media/{name}.png"

    def audio(name: str) -> str:
        save_audio(Audio((nrng.standard_normal((1, 8000)) * 0.1).astype("float32"), 16000), media / f"{name}.wav")
        return f"media/{name}.wav"

    def video(name: str) -> str:
        save_video(Video((nrng.random((4, 32, 32, 3)) * 255).astype("uint8"), 4.0), media / f"{name}.mp4")
        return f"media/{name}.mp4"

    make = {"image": image, "audio": audio, "video": video}
    lines = []
    for phase in phases:
        for k in range(per_phase):
            rid = f"{phase}-{k:03d}"
            in_kind = ("image", "audio", "video")[k % 3]
            user = [{"type": in_kind, "path": make[in_kind](f"{rid}-in")},
                    {"type": "text", "text": _caption(rng, *text_words)}]
            reply: list[dict] = [{"type": "text", "text": _caption(rng, *text_words)}]
            if phase != "text":
                reply.append({"type": phase, "path": make[phase](f"{rid}-out"), "caption": _caption(rng)})
            lines.append({"schema": 1, "id": rid, "source": "tiny",
                          "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
    for k in range(broken):
        rid = f"broken-{k:03d}"
        kind = k % 3
        if kind == 0:  # missing input file
            user = [{"type": "image", "path": "media/does-not-exist.png"}, {"type": "text", "text": "what is it"}]
            lines.append({"schema": 1, "id": rid, "source": "tiny", "messages": [
                {"role": "user", "content": user}, {"role": "assistant", "content": "a red circle"}]})
        elif kind == 1:  # undecodable image
            (media / f"{rid}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
            user = [{"type": "image", "path": f"media/{rid}.png"}, {"type": "text", "text": "what is it"}]
            lines.append({"schema": 1, "id": rid, "source": "tiny", "messages": [
                {"role": "user", "content": user}, {"role": "assistant", "content": "a blue square"}]})
        else:  # schema error (assistant first)
            lines.append({"schema": 1, "id": rid, "source": "tiny",
                          "messages": [{"role": "assistant", "content": "hello"}]})
    rng.shuffle(lines)
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    log.info("wrote %d records to %s", len(lines), path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.tiny_data", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--per-phase", type=int, default=8)
    p.add_argument("--broken", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    setup_logging(timestamps=False)
    write_tiny_manifest(a.out_dir, a.per_phase, a.broken, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
