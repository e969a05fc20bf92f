"""Shared helpers of the mini-model component stages: seeding, threads, world samples.
(Checkpoints: :mod:`train.checkpointing`; atomic writes and logging: :mod:`codi2.io`.)

World samples are rendered on the fly from ``(world seed, split, index)`` with the world's own functions
and render-seed streams (``data_builders.world.build.render_seed``): split ``train`` draws render seeds
from stream 0, ``val`` from 1, ``test`` from 2, so held-out evaluation never sees a training render.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
WORLD_MODALITIES: tuple[str, ...] = ("image", "audio", "video")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(num_threads: int) -> None:
    """Sets torch's intra-op threads when ``num_threads > 0`` (0 keeps torch's default)."""
    if num_threads < 0:
        raise ValueError(f"num_threads = {num_threads}; must be >= 0 (0 = torch default)")
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def file_digest(path: Path) -> Optional[str]:
    """sha256 of a whole file; None when there is no such file."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_choice(field_name: str, value: str, allowed: "tuple[str, ...] | list[str]") -> str:
    if value not in allowed:
        raise ValueError(f"{field_name} = {value!r}; allowed: {', '.join(allowed)}")
    return value


# ----------------------------------------------------------------------------- world samples
@dataclass
class WorldSample:
    """One rendered world sample.

    media: ``PIL.Image`` (64x64) / ``codi2.media.Audio`` (1, 16000) / ``codi2.media.Video`` (12, 64, 64, 3).
    caption: a varied caption (canonical when rendered with ``canonical=True``).
    attrs: what the render expresses, e.g. ``{'shape': 'star', 'colour': 'red', 'size': 'large', 'position': 'left'}``.
    """

    modality: str
    media: Any
    caption: str
    attrs: dict[str, str]


def world_sample(modality: str, index: int, seed: int, split: str = "train", canonical: bool = False) -> WorldSample:
    """Renders sample ``index`` of ``modality`` for world ``seed`` and ``split`` (deterministic).

    Args:
        modality: image | audio | video.
        index: any int >= 0; each index is an independent random object and render variation.
        seed: world seed.
        split: train | val | test (disjoint render-seed streams).
        canonical: use the canonical caption wording (evaluation) instead of a random one.
    """
    from data_builders.world import build, world

    check_choice("modality", modality, WORLD_MODALITIES)
    stream = build.split_index(split)
    rng = np.random.default_rng([seed, stream, index, 0x51])
    obj = world.random_object(rng)
    rs = build.render_seed(seed, index, stream)
    text_rng = None if canonical else rng
    if modality == "image":
        return WorldSample(modality, world.render_image(obj, rs), world.image_caption(obj, text_rng), obj.attrs("image"))
    if modality == "audio":
        return WorldSample(modality, world.render_sound(obj, rs), world.audio_caption(obj, text_rng), obj.attrs("audio"))
    direction = world.random_direction(rng)
    attrs = {**obj.attrs("video"), "direction": direction}
    return WorldSample(modality, world.render_video(obj, direction, rs),
                       world.video_caption(obj, direction, text_rng), attrs)


def world_batch(modality: str, start: int, n: int, seed: int, split: str = "train",
                canonical: bool = False) -> list[WorldSample]:
    """Samples ``start … start+n-1`` (see :func:`world_sample`)."""
    return [world_sample(modality, i, seed, split, canonical) for i in range(start, start + n)]


def all_objects(modality: str) -> list[tuple[Any, Optional[str]]]:
    """Every distinct (object, direction) a modality can express, in a fixed order (for retrieval tests).

    image: 4 shapes x 6 colours x 2 sizes x 5 positions = 240; audio: 48; video: 48 x 4 directions = 192.
    """
    from data_builders.world import world

    objs = []
    positions = world.POSITIONS if modality == "image" else ("center",)
    directions: tuple[Optional[str], ...] = world.DIRECTIONS if modality == "video" else (None,)
    for shape in world.SHAPES:
        for colour in world.COLOURS:
            for size in world.SIZES:
                for position in positions:
                    for d in directions:
                        objs.append((world.WorldObject(shape, colour, size, position), d))
    return objs


def attrs_key(attrs: dict[str, str]) -> tuple:
    """A hashable, order-independent key of an attribute dict."""
    return tuple(sorted(attrs.items()))
