"""The editing-record schema: what the corpus builders write on an edit and what the editing suites
(``codi2 eval --suite image-edit|audio-edit``) read. Both sides import the names below, so they cannot drift
apart. The schema is documented for people in ``docs/data.md`` ("Editing records").

An **editing record** is a manifest record whose ``meta.task`` is one of :data:`EDIT_TASKS` and whose
``meta.pair`` (:data:`PAIR`) is an object with ``kind: "edit"``::

    "meta": {"task": "edit" | "icl_edit",
             "pair": {"kind": "edit", "modality": "image" | "audio" | "video",
                      "input": PATH, "output": PATH,        # the query B and its ground truth B'
                      "instruction": "make it blue",        # the edit in words
                      "type": "instruct" | "add" | "drop" | …,   # the edit type (results are grouped by it)
                      "group": "0000123",                   # the edit group: pairs that share one edit
                      "input_caption": "a red car" | null,  # captions of B and B' (CLIP-T, directional score)
                      "output_caption": "a blue car" | null,
                      "output_caption_derived": false,      # true: made from the instruction, not the corpus'
                      "sha256": {"input": …, "output": …}},
             "split": "train" | "test"}                     # only in a split build (:func:`split_of`)

The messages hold the same media: the first user message holds ``A_1, A'_1, …, A_K, A'_K, B`` (K = 0 for
``edit``; K >= 1 exemplar pairs of the same edit group for ``icl_edit``, whose text never names the edit) and
the first assistant message holds ``B'`` (with ``output_caption`` as its caption).

**Held-out splits.** A build with an evaluation fraction ``f > 0`` sends every record to ``train`` or ``test``
by a hash of its group key (:func:`group_key`, :func:`split_of`): the same key always lands on the same side,
in every build, so no edit group is in both. Train records go to ``manifest.jsonl`` (or ``manifest-NNNNN.jsonl``
shards) as before, test records to ``test.jsonl`` (``test-NNNNN.jsonl``), and ``summary.json`` lists both
under ``"splits"`` (:func:`split_manifests` reads it back).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

PAIR = "pair"  # meta key of the paired datum (an edit, or a captioned pair)
KIND = "kind"
EDIT_KIND = "edit"  # meta.pair.kind of an edit
CAPTIONED_KIND = "captioned"
EDIT_TASKS = ("edit", "icl_edit")  # meta.task of the records the editing suites evaluate
EDIT_FIELDS = ("modality", "input", "output", "instruction", "type", "group", "input_caption", "output_caption",
               "output_caption_derived", "sha256")
SPLIT = "split"  # meta key of a record's split
TRAIN, TEST = "train", "test"
SPLITS = (TRAIN, TEST)
SPLIT_PREFIX = {TRAIN: "manifest", TEST: "test"}  # manifest.jsonl / test.jsonl (…-NNNNN.jsonl when sharded)
SUMMARY_FILE = "summary.json"
SUMMARY_SPLITS = "splits"  # summary.json: {"splits": {"train": {"manifests": [...], "records": n}, "test": {...}}}


def normalise_instruction(text: Optional[str]) -> str:
    """Lower case, single spaces: two instructions that differ only so are the same edit."""
    return " ".join((text or "").lower().split())


def instruction_sentence(text: str) -> str:
    """An instruction as a prompt says it: first letter upper case, ending in ``.`` (unless ``!`` / ``?``):
    ``"make it blue"`` -> ``"Make it blue."`` (the builders' edit turns and the suites' 0-shot prompts)."""
    t = text.strip().rstrip(".")
    t = t[:1].upper() + t[1:] if t else t
    return t if t.endswith((".", "!", "?")) else t + "."


def edit_pair(modality: str, input: str, output: str, instruction: Optional[str], type: Optional[str],
              group: Optional[str], input_caption: Optional[str] = None, output_caption: Optional[str] = None,
              output_caption_derived: bool = False, sha256: Optional[Mapping[str, str]] = None) -> dict:
    """The ``meta.pair`` object of an edit (the one constructor the builders use)."""
    return {KIND: EDIT_KIND, "modality": modality, "input": input, "output": output, "instruction": instruction,
            "type": type, "group": group, "input_caption": input_caption, "output_caption": output_caption,
            "output_caption_derived": bool(output_caption_derived), "sha256": dict(sha256 or {})}


@dataclass(frozen=True)
class EditInfo:
    """The edit a record describes (from ``meta.pair``, or from the older keys a hand-written manifest uses)."""

    modality: Optional[str]
    instruction: Optional[str]
    type: str
    group: Optional[str]
    input_caption: Optional[str]
    output_caption: Optional[str]
    split: Optional[str]
    schema: bool  # True: read from meta.pair (the schema); False: from the older keys


def _str(v: Any) -> Optional[str]:
    return v.strip() or None if isinstance(v, str) else None


def edit_info(meta: Optional[Mapping[str, Any]]) -> Optional[EditInfo]:
    """The edit of a record's ``meta``, or None when the record is not an edit.

    ``meta.pair`` with ``kind: "edit"`` and ``meta.task`` in :data:`EDIT_TASKS` is the schema. A record without
    ``meta.pair`` is read the older way (hand-written and mini-world manifests): the instruction from
    ``meta.instruction``, the type from ``meta.edit`` (a string), else ``meta.edits[0].attr``, else
    ``meta.task``, else ``"edit"``. A record whose ``meta.pair`` is not an edit (a captioned pair) or whose task
    is not an edit task (e.g. a ``multi_round`` dialogue) gives None.
    """
    meta = meta or {}
    pair = meta.get(PAIR)
    split = _str(meta.get(SPLIT))
    if isinstance(pair, Mapping):
        if pair.get(KIND) != EDIT_KIND or meta.get("task") not in EDIT_TASKS:
            return None
        return EditInfo(_str(pair.get("modality")), _str(pair.get("instruction")),
                        _str(pair.get("type")) or "edit", _str(pair.get("group")), _str(pair.get("input_caption")),
                        _str(pair.get("output_caption")), split, True)
    edits = meta.get("edits") if isinstance(meta.get("edits"), list) and meta.get("edits") else [{}]
    first = edits[0] if isinstance(edits[0], Mapping) else {}
    etype = _str(meta.get("edit")) or _str(first.get("attr")) or _str(meta.get("task")) or "edit"
    return EditInfo(None, _str(meta.get("instruction")), etype, None, None, None, split, False)


def group_key(pair: Mapping[str, Any], fallback: str) -> str:
    """The key a record is split by: an edit's modality and group (else its normalised instruction); a captioned
    pair's subject; else ``fallback`` (the sample's original id), so each such sample is its own group."""
    if pair.get(KIND) == EDIT_KIND:
        g = pair.get("group") or normalise_instruction(pair.get("instruction"))
        return f"edit:{pair.get('modality')}:{g}"
    if pair.get("subject"):
        return f"subject:{pair['subject']}"
    return f"sample:{fallback}"


def check_eval_fraction(f: float) -> float:
    """``f`` as a float in [0, 1) or a ``ValueError`` naming what is allowed."""
    try:
        v = float(f)
    except (TypeError, ValueError):
        raise ValueError(f"eval fraction {f!r} is not a number; give one in [0, 1), e.g. 0.1") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"eval fraction {v:g} is out of range; give one in [0, 1) (0: no test split)")
    return v


def split_of(key: str, eval_fraction: float) -> str:
    """:data:`TEST` for a fraction ``eval_fraction`` of group keys (by the sha256 of the key), else :data:`TRAIN`.
    Deterministic and independent of the build: the same key always goes to the same side."""
    if eval_fraction <= 0:
        return TRAIN
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) / 2.0 ** 64
    return TEST if h < eval_fraction else TRAIN


def split_manifests(folder: "str | Path") -> Optional[dict[str, list[Path]]]:
    """``{"train": [...], "test": [...]}`` manifests of a split build in ``folder`` (from its ``summary.json``),
    or None when the folder holds no split build."""
    p = Path(folder) / SUMMARY_FILE
    if not p.is_file():
        return None
    try:
        splits = json.loads(p.read_text(encoding="utf-8")).get(SUMMARY_SPLITS)
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(splits, Mapping):
        return None
    return {s: [Path(folder) / m for m in (splits.get(s) or {}).get("manifests", [])] for s in SPLITS}


__all__ = ["CAPTIONED_KIND", "EDIT_FIELDS", "EDIT_KIND", "EDIT_TASKS", "EditInfo", "KIND", "PAIR", "SPLIT",
           "SPLITS", "SPLIT_PREFIX", "SUMMARY_FILE", "SUMMARY_SPLITS", "TEST", "TRAIN", "check_eval_fraction",
           "edit_info", "edit_pair", "group_key", "instruction_sentence", "normalise_instruction", "split_manifests", "split_of"]
