"""What the build engine and the conversation builders share: the sample type, the build error and the
sharded manifest output (:class:`ShardWriter`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from codi2.editing import SPLIT_PREFIX

STATE_FILE = ".build-state.json"


class BuildError(ValueError):
    """A build that cannot start or continue (bad input, an output folder in the way, a state mismatch).
    A ``ValueError``, so ``codi2``'s command line prints it as an error message."""


@dataclass
class Sample:
    """One paired data point read from a source.

    Captioned pairs have ``media`` keyed by modality (``{"image": path}``, ``{"image": p, "audio": q}`` …)
    and a ``caption`` describing every item. Edits have ``media = {"input": p, "output": q}``,
    ``modality`` and ``edit``: ``{"instruction", "type", "group", "input_caption", "output_caption"}``.

    Attributes:
        id: the original id in the source (kept in ``meta.orig_id``).
        media: role -> path (absolute, or relative to the output folder for files this build wrote).
        caption: captioned pairs: the caption.
        modality: edits: the modality of input and output.
        edit: edits: the instruction and its metadata.
        subject: an optional subject / group label (subject-driven conversations).
        license: the licence named by the input (None: the build's default).
        extra: other input fields, kept in ``meta.orig``.
        sha256: role -> sha256 of the file bytes (filled by :func:`data_builders.core.check_sample`).
        written: files this build wrote for the sample (deleted when it is dropped).
    """

    id: str
    media: dict[str, str]
    caption: Optional[str] = None
    modality: Optional[str] = None
    edit: Optional[dict] = None
    subject: Optional[str] = None
    license: Optional[str] = None
    extra: dict = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    def kind(self, role: str) -> str:
        """The modality of the media in ``role``."""
        return self.modality if self.edit is not None else role

    @property
    def text(self) -> Optional[str]:
        """What the caption filters look at: the caption, or an edit's instruction."""
        return self.edit.get("instruction") if self.edit is not None else self.caption


class ShardWriter:
    """Appends record lines to ``manifest.jsonl`` (``shard_size = 0``) or ``manifest-NNNNN.jsonl`` shards.

    Args:
        out: the output folder.
        shard_size: records per shard (0 = one file).
        shards: committed shards ``[{"file", "records", "bytes"}]`` to continue from (resume).
        prefix: the file names' stem (``test`` for a held-out split: ``test.jsonl``, ``test-NNNNN.jsonl``).
    """

    def __init__(self, out: Path, shard_size: int, shards: Optional[list[dict]] = None, prefix: str = "manifest"):
        self.out, self.shard_size, self.prefix = out, shard_size, prefix
        self.shards: list[dict] = [dict(s) for s in (shards or [])]
        self._f = None
        if self.shards:
            last = self.shards[-1]
            self._f = open(out / last["file"], "ab")

    def _name(self, i: int) -> str:
        return f"{self.prefix}.jsonl" if self.shard_size == 0 else f"{self.prefix}-{i:05d}.jsonl"

    def write(self, record: dict) -> None:
        """Appends one record (compact JSON, one line)."""
        if not self.shards or (self.shard_size and self.shards[-1]["records"] >= self.shard_size):
            if self._f is not None:
                self._f.close()
            name = self._name(len(self.shards))
            self.shards.append({"file": name, "records": 0, "bytes": 0})
            self._f = open(self.out / name, "wb")
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        self._f.write(line)
        self.shards[-1]["records"] += 1
        self.shards[-1]["bytes"] += len(line)

    def commit(self) -> list[dict]:
        """Flushes to disk; returns the shard list for the state file."""
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
        return [dict(s) for s in self.shards]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def existing_outputs(out: Path) -> list[str]:
    """The build files already in ``out``: the state file, train and test manifests (shards included)."""
    names = [STATE_FILE]
    for prefix in SPLIT_PREFIX.values():
        names += [f"{prefix}.jsonl"] + sorted(p.name for p in out.glob(f"{prefix}-*.jsonl"))
    return [n for n in names if (out / n).exists()]
