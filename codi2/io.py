"""Atomic file writes and the entry points' logging set-up, shared by every layer.

A write goes to a temporary sibling first (its name carries the process id) and is moved onto the target
with ``os.replace``, so a reader sees the old file or the new one, never a half-written one.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional


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


def setup_logging(level: int = logging.INFO, rank: Optional[int] = None) -> None:
    """Logging for an entry point: timestamped lines on stderr.

    Without ``rank``, a configuration already in place is kept. With ``rank`` (a distributed run), every line
    names the rank, ranks other than 0 log warnings and errors only, and any earlier configuration is replaced.
    """
    if rank is None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                            format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", force=True)
