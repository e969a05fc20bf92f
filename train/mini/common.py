"""Shared helpers of the mini-model component stages: seeding, logging, atomic writes, world samples.

World samples are rendered on the fly from ``(world seed, split, index)`` with the world's own functions
and render-seed streams (``data_builders.world.build.render_seed``): split ``train`` draws render seeds
from stream 0, ``val`` from 1, ``test`` from 2, so held-out evaluation never sees a training render.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

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


def setup_logging(level: int = logging.INFO) -> None:
    """Basic logging for an entry point (no-op when the root logger is already configured)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def set_threads(num_threads: int) -> None:
    """Sets torch's intra-op threads when ``num_threads > 0`` (0 keeps torch's default)."""
    if num_threads < 0:
        raise ValueError(f"num_threads = {num_threads}; must be >= 0 (0 = torch default)")
    if num_threads > 0:
        torch.set_num_threads(num_threads)


@contextlib.contextmanager
def atomic_dir(target: "str | Path") -> Iterator[Path]:
    """Yields a temporary sibling directory; on success it replaces ``target`` (old contents removed).

    A crash inside the block leaves ``target`` untouched and removes the temporary directory. A killed process
    cannot remove it: its name carries the process id, and the next ``atomic_dir`` of the same target removes those
    of processes no longer running.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*-*"):
        pid = stale.name[len(f".{target.name}.tmp-"):].split("-", 1)[0]
        if stale.is_dir() and pid.isdigit() and not _running(int(pid)):
            logger.info("removing %s, left by process %s (no longer running)", stale, pid)
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def atomic_torch_save(obj: Any, path: "str | Path") -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class LoopCheckpoints:
    """Mid-run checkpoints of a component stage's training loops, so that a killed run goes on where it stopped.

    The state lives in ``folder`` (e.g. ``<out>/.audio.resume``), beside the output it becomes and never inside the
    temporary build folder (which a crash removes, and a kill leaves orphaned). Each loop (a *phase*: ``vae``,
    ``vocoder``, ``unet`` …) calls :meth:`restore` before its first step and :meth:`save` after every step; every
    ``every``-th step and the last one are written (atomically): the phase's modules, its optimiser, its random
    generators, torch's global generator and ``extra`` (running losses, accumulated times). A restart with the same
    run restores a finished phase whole and continues an unfinished one from its last checkpoint, bit for bit on the
    same machine and thread count. Call :meth:`clear` once the stage's output is written.

    ``fingerprint`` (JSON-able: the run's config and what it starts from) is written with the first checkpoint; a
    folder holding a different run's state is refused with the keys that differ, never silently reused.

    Args:
        folder: where the state goes.
        fingerprint: what identifies the run.
        every: checkpoint interval in steps (0 = no checkpoints and no resuming).
        resume: False discards any state already in ``folder`` (start over), still checkpointing from here on.
    """

    FINGERPRINT = "fingerprint.json"

    def __init__(self, folder: "str | Path", fingerprint: dict, every: int, resume: bool = True):
        if every < 0:
            raise ValueError(f"checkpoint_every = {every}; must be >= 0 (0 = no mid-run checkpoints)")
        self.folder, self.every = Path(folder), int(every)
        self.text = json.dumps(fingerprint, sort_keys=True, indent=1, default=str) + "\n"
        if self.every == 0 or not resume:
            if self.folder.exists():
                logger.info("discarding the resume state in %s (%s)", self.folder,
                            "checkpoint_every = 0" if self.every == 0 else "resume = false")
                self.clear()
            return
        fp = self.folder / self.FINGERPRINT
        if fp.is_file() and fp.read_text() != self.text:
            diff = _differing_keys(json.loads(fp.read_text()), json.loads(self.text))
            raise ValueError(f"{self.folder} holds the resume state of a different run (differs in: "
                             f"{', '.join(diff[:6]) or 'its format'}{' …' if len(diff) > 6 else ''}); delete that "
                             "folder or set resume=false to start over, or run again with the settings it was made with")

    def restore(self, phase: str, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
                generators: dict[str, torch.Generator]) -> tuple[int, dict]:
        """Loads ``phase``'s last checkpoint into ``modules``, ``opt`` and ``generators``.
        Returns (steps already done, its ``extra``); (0, {}) when there is none."""
        path = self.folder / f"{phase}.pt"
        if self.every == 0 or not path.is_file():
            return 0, {}
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        for name, g in generators.items():
            g.set_state(state["generators"][name])
        torch.set_rng_state(state["torch_rng"])
        logger.info("%s: resumed after step %d of %d from %s", phase, state["step"], state["total"], path)
        return int(state["step"]), dict(state["extra"])

    def save(self, phase: str, step: int, total: int, modules: dict[str, torch.nn.Module],
             opt: torch.optim.Optimizer, generators: dict[str, torch.Generator], extra: dict) -> bool:
        """Writes the state after ``step`` (1-based) of ``total`` when it is a checkpoint step. Returns whether it did."""
        if self.every == 0 or (step % self.every and step != total):
            return False
        self._claim()
        atomic_torch_save({"step": step, "total": total,
                           "modules": {k: m.state_dict() for k, m in modules.items()},
                           "optimizer": opt.state_dict(),
                           "generators": {k: g.get_state() for k, g in generators.items()},
                           "torch_rng": torch.get_rng_state(), "extra": extra}, self.folder / f"{phase}.pt")
        return True

    def keep(self, name: str, src: "str | Path") -> Optional[Path]:
        """Copies a file the run made before its loops (e.g. a trained tokenizer, which the checkpoints' weights
        depend on) into the state, so that a restart reuses it instead of making it again. No-op (None) when
        checkpoints are off."""
        if self.every == 0:
            return None
        self._claim()
        dst = self.folder / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.folder)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return dst

    def kept(self, name: str) -> Optional[Path]:
        """The file :meth:`keep` stored under ``name`` for this run, or None."""
        path = self.folder / name
        return path if self.every and path.is_file() else None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _claim(self) -> None:
        """Creates the folder and writes this run's fingerprint into it (once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fp = self.folder / self.FINGERPRINT
        if not fp.is_file():
            fp.write_text(self.text)


class LoopClock:
    """Wall and CPU seconds of a training loop, added to those of the runs it resumes (a checkpoint's ``extra``)."""

    def __init__(self, extra: dict):
        self.seconds0, self.cpu0 = float(extra.get("seconds", 0.0)), float(extra.get("cpu_seconds", 0.0))
        self.t0, self.c0 = time.time(), time.process_time()

    def totals(self) -> dict[str, float]:
        return {"seconds": self.seconds0 + time.time() - self.t0,
                "cpu_seconds": self.cpu0 + time.process_time() - self.c0}


def resumed_note(done: int) -> dict:
    """The report's note of a loop that went on from a checkpoint after ``done`` steps."""
    return {"resumed_after_step": done} if done else {}


def file_digest(path: Path) -> Optional[str]:
    """sha256 of a whole file; None when there is no such file."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(root)"]


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
