"""Atomic file and folder writes and the entry points' logging set-up, shared by every layer.

A write goes to a temporary sibling first (its name carries the process id) and is moved onto the target
(``os.replace``; :func:`atomic_dir` renames a folder), so a reader sees the old file or the new one, never a
half-written one.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

logger = logging.getLogger(__name__)


def atomic_write(path: "str | Path", write: Callable[[Path], Any]) -> Path:
    """Calls ``write(tmp)`` on a temporary sibling of ``path``, then moves it onto ``path`` (the parent is created).
    A failed write leaves ``path`` as it was and removes the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: "str | Path", text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: "str | Path", obj: Any, sort_keys: bool = False) -> Path:
    """Writes ``obj`` as indented JSON (non-ASCII kept, a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


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


def setup_logging(level: int = logging.INFO, rank: Optional[int] = None, timestamps: bool = True) -> None:
    """Logging for an entry point: ``LEVEL logger: message`` lines on stderr (after the time with ``timestamps``).

    Without ``rank``, a configuration already in place is kept. With ``rank`` (a distributed run), every line
    names the rank, ranks other than 0 log warnings and errors only, and any earlier configuration is replaced.
    """
    fmt = "%(levelname)s %(name)s: %(message)s"
    if rank is not None:
        fmt = f"[rank {rank}] {fmt}"
    if timestamps:
        fmt = f"%(asctime)s {fmt}"
    if rank is None:
        logging.basicConfig(level=level, format=fmt)
    else:
        logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt, force=True)
