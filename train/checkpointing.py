"""Checkpoints and resuming, for the trainer and for the mini model's component trainers.

Both kinds are written atomically, capture the random state (:func:`torch_rng_state`, :func:`rng_state`) and
refuse to resume a run that is not the one they were saved by. The trainer keeps whole step folders (below);
a component trainer's loops keep one state file per loop (:class:`LoopCheckpoints`).

Trainer checkpoints: ``{output_dir}/checkpoints/step-000120/``.

A checkpoint is written into ``step-000120.tmp/`` (every rank writes its own files there), then
rank 0 writes the ``COMPLETE`` marker, syncs, and renames the folder to ``step-000120/``. Only a
folder with the final name *and* the marker counts as a checkpoint, so a crash at any moment of a
save leaves either the previous checkpoints or a ``.tmp`` folder that is ignored (and removed by the
next run). After a save the oldest complete checkpoints beyond ``keep_last`` are deleted.

Contents (plain PyTorch engine; the DeepSpeed engine writes its own files under ``ds/`` instead of
the first three):

    trainable.pt        trainable parameters by name (LoRA, new token rows, projectors, heads)
    optimizer.pt        optimizer state
    scheduler.pt        LR scheduler state
    trainer_state.json  step, sampler position, counters (identical on every rank; written by rank 0)
    rank-{r}.pt         RNG states of rank r (python, numpy, torch, CUDA) and its bad-record counts
    COMPLETE            written last
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from codi2.io import atomic_write

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
_STEP_RE = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: "str | Path", step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def tmp_dir(final: Path) -> Path:
    return final.with_name(final.name + ".tmp")


def complete_checkpoints(output_dir: "str | Path") -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir``, oldest first: ``[(step, path)]``."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: "str | Path") -> Optional[Path]:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, output_dir: "str | Path") -> Optional[Path]:
    """``auto`` -> latest complete checkpoint or None; ``none`` -> None; else that checkpoint (checked)."""
    if resume in ("none", "null", ""):
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    p = Path(resume)
    if not (p / COMPLETE).is_file():
        raise FileNotFoundError(f"resume = {resume!r}: {p} is not a complete checkpoint (no {COMPLETE} marker); "
                                f"use resume=auto, resume=none, or a step-XXXXXX folder under "
                                f"{Path(output_dir) / 'checkpoints'}")
    return p


def remove_stale_tmp(output_dir: "str | Path") -> None:
    """Deletes ``*.tmp`` folders left by a crash during a save (rank 0, before training)."""
    root = Path(output_dir) / "checkpoints"
    if root.is_dir():
        for p in root.glob("step-*.tmp"):
            log.warning("removing incomplete checkpoint %s (a previous run stopped while saving it)", p)
            shutil.rmtree(p)


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize(tmp: Path, final: Path, state: dict) -> None:
    """Rank 0, after every rank has written into ``tmp``: trainer state, marker, rename."""
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    with open(tmp / COMPLETE, "w") as f:
        f.write(f"step {state['step']}\n")
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # a checkpoint of the same step from an earlier attempt: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def prune(output_dir: "str | Path", keep_last: int) -> None:
    """Deletes the oldest complete checkpoints beyond ``keep_last``."""
    for _, p in complete_checkpoints(output_dir)[:-keep_last]:
        (p / COMPLETE).unlink()  # first un-mark it, so a crash mid-delete leaves nothing that looks complete
        shutil.rmtree(p)


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


# ----------------------------------------------------------------------------- RNG
def torch_rng_state(generators: Mapping[str, torch.Generator] = {}) -> dict[str, Any]:
    """torch's global CPU generator and the named generators a loop draws from (tensors only: loads with
    ``weights_only=True``)."""
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if generators:
        st["generators"] = {k: g.get_state() for k, g in generators.items()}
    return st


def set_torch_rng_state(st: dict[str, Any], generators: Mapping[str, torch.Generator] = {}) -> None:
    """Restores what :func:`torch_rng_state` captured (into ``generators``, by name)."""
    torch.set_rng_state(st["torch"])
    for name, g in generators.items():
        g.set_state(st["generators"][name])


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states of this process."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), **torch_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    set_torch_rng_state(st)
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_rank_state(tmp: Path, rank: int, extra: dict) -> None:
    torch.save({"rng": rng_state(), **extra}, tmp / f"rank-{rank}.pt")


def load_rank_state(ckpt: Path, rank: int) -> dict:
    p = ckpt / f"rank-{rank}.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: the checkpoint {ckpt} was written by fewer ranks; resume with "
                                f"the same number of processes")
    return torch.load(p, weights_only=False)


# ----------------------------------------------------------------------------- component training loops
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
                log.info("discarding the resume state in %s (%s)", self.folder,
                            "checkpoint_every = 0" if self.every == 0 else "resume = false")
                self.clear()
            return
        fp = self.folder / self.FINGERPRINT
        if fp.is_file() and fp.read_text() != self.text:
            diff = differing_keys(json.loads(fp.read_text()), json.loads(self.text))
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
        set_torch_rng_state(state["rng"], generators)
        log.info("%s: resumed after step %d of %d from %s", phase, state["step"], state["total"], path)
        return int(state["step"]), dict(state["extra"])

    def save(self, phase: str, step: int, total: int, modules: dict[str, torch.nn.Module],
             opt: torch.optim.Optimizer, generators: dict[str, torch.Generator], extra: dict) -> bool:
        """Writes the state after ``step`` (1-based) of ``total`` when it is a checkpoint step. Returns whether it did."""
        if self.every == 0 or (step % self.every and step != total):
            return False
        self._claim()
        state = {"step": step, "total": total, "modules": {k: m.state_dict() for k, m in modules.items()},
                 "optimizer": opt.state_dict(), "rng": torch_rng_state(generators), "extra": extra}
        atomic_write(self.folder / f"{phase}.pt", lambda tmp: torch.save(state, tmp))
        return True

    def keep(self, name: str, src: "str | Path") -> Optional[Path]:
        """Copies a file the run made before its loops (e.g. a trained tokenizer, which the checkpoints' weights
        depend on) into the state, so that a restart reuses it instead of making it again. No-op (None) when
        checkpoints are off."""
        if self.every == 0:
            return None
        self._claim()
        return atomic_write(self.folder / name, lambda tmp: shutil.copyfile(src, tmp))

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


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(root)"]
