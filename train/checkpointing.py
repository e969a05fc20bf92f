"""Atomic training checkpoints: ``{output_dir}/checkpoints/step-000120/``.

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
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

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
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states of this process."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
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
