"""Training data: the manifest schema (docs/design.md#manifest-schema), its validator, the dataset, and bad-record accounting.

A manifest is JSON Lines, one conversation a line::

    {"schema": 1, "id": "w-000123", "source": "world",
     "messages": [
       {"role": "user", "content": [{"type": "image", "path": "media/a.png"}, {"type": "text", "text": "Make it blue."}]},
       {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                                         {"type": "image", "path": "media/b.png", "caption": "a blue circle"}]}],
     "meta": {"task": "edit"}, "license": "CC-BY-4.0"}

* ``schema`` (int, = 1), ``id`` (non-empty str, unique in the manifest), ``source`` (str) and
  ``messages`` are required; ``meta`` (object) and ``license`` (str) are optional; other keys are errors.
* parts: ``{"type": "text", "text": ...}`` or ``{"type": "image"|"audio"|"video", "path": ..., "caption": ...}``;
  ``path`` is relative to the manifest's folder (absolute paths are kept as they are).
* roles: an optional leading ``system`` message, then ``user`` / ``assistant`` alternating, starting
  with ``user`` and ending with ``assistant``.
* every media part in an assistant message is an *output*: audio and video outputs need a
  ``caption`` (their head targets are computed from it); image outputs need a ``path`` (their
  target is the encoder embedding of that image).

A record's **phase** is the output modality of its assistant turns: ``text`` (no assistant media),
``image``, ``audio`` or ``video`` (one output modality), or ``multi`` when the assistant turns output
more than one modality (joint outputs, e.g. image + audio in one reply). Training batches are
phase-homogeneous; a ``multi`` batch carries the targets of every modality it contains.

Public API: :func:`read_manifest`, :func:`parse_record`, :class:`Record`, :class:`RecordError`,
:func:`validate_manifest` (``codi2 validate-data``), :class:`ManifestDataset`,
:class:`BadRecordCounter`, :class:`TooManyBadRecords`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch.utils.data

from .config import MediaLimits
from .conversation import Message, Part, message_from_dict, part_key

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema", "id", "source", "messages")
OPTIONAL_KEYS = ("meta", "license")
PHASES = ("text", "image", "audio", "video", "multi")

# Error kinds counted by the validator (ValidationReport.errors_by_kind keys).
ERROR_KINDS = ("json", "schema", "roles", "caption", "duplicate_id", "missing_file", "media")


# ----------------------------------------------------------------------------- records
class RecordError(ValueError):
    """A manifest record that cannot be used.

    Attributes:
        id: the record id, or ``"line N"`` when the id is unknown.
        reason: what is wrong, in words.
        kind: one of :data:`ERROR_KINDS`.
        line: the 1-based line number in the manifest (0 when unknown).
    """

    def __init__(self, id: str, reason: str, kind: str = "schema", line: int = 0):
        self.id, self.reason, self.kind, self.line = id, reason, kind, line
        where = f" (line {line})" if line and id != f"line {line}" else ""
        super().__init__(f"record {id}{where}: {reason}")


@dataclass
class Record:
    """One parsed conversation.

    Attributes:
        id: the record id.
        source: where it came from (a data builder's name).
        messages: the conversation; media parts carry absolute ``path`` s (and ``media`` once loaded).
        phase: one of :data:`PHASES`.
        meta: the optional ``meta`` object (``license`` is stored in it as ``meta["license"]``).
        line: the 1-based line number in the manifest.
    """

    id: str
    source: str
    messages: list[Message]
    phase: str
    meta: dict = field(default_factory=dict)
    line: int = 0

    def media_parts(self, output: Optional[bool] = None) -> list[Part]:
        """Media parts in order; ``output=True``: assistant parts only, ``False``: the others."""
        return [p for msg in self.messages for p in msg.media_parts
                if output is None or (msg.role == "assistant") == output]


def read_manifest(path: "str | Path") -> Iterator[tuple[int, dict]]:
    """Yields ``(line_number, raw_record)`` for every non-blank line (1-based line numbers).

    Raises:
        FileNotFoundError: no such manifest.
        RecordError: a line is not valid JSON or not a JSON object (kind ``json``; id ``"line N"``).
            A caller that wants to go on past it catches it and iterates :func:`_read_lines` itself;
            :class:`ManifestDataset` and :func:`validate_manifest` do.
    """
    for n, raw in _read_lines(path):
        if isinstance(raw, RecordError):
            raise raw
        yield n, raw


def _read_lines(path: "str | Path") -> Iterator[tuple[int, "dict | RecordError"]]:
    """Like :func:`read_manifest` but yields a :class:`RecordError` in place of a bad line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, RecordError(f"line {n}", f"not valid JSON ({e.msg} at column {e.colno})", "json", n)
                continue
            if not isinstance(raw, dict):
                yield n, RecordError(f"line {n}", f"expected a JSON object, got {type(raw).__name__}", "json", n)
                continue
            yield n, raw


def _record_id(raw: dict, line: int) -> str:
    rid = raw.get("id")
    return rid if isinstance(rid, str) and rid else f"line {line}"


def parse_record(raw: dict, base_dir: "str | Path", where: str = "", line: int = 0) -> Record:
    """Checks one raw manifest record (no file access) and turns it into a :class:`Record`.

    Args:
        raw: the JSON object of one line.
        base_dir: the manifest's folder; relative media paths are resolved against it.
        where: names the record's place in error messages (e.g. ``"data.jsonl:12"``).
        line: the 1-based line number, stored on the record and its errors.

    Returns:
        The record, with absolute media paths and its phase.

    Raises:
        RecordError: naming the record id (or ``line N``), the line and the problem; ``kind`` is
            ``schema``, ``roles`` or ``caption``.
    """
    rid = _record_id(raw, line) if isinstance(raw, dict) else f"line {line}"

    def fail(reason: str, kind: str = "schema") -> RecordError:
        return RecordError(rid, f"{where}: {reason}" if where else reason, kind, line)

    if not isinstance(raw, dict):
        raise fail(f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise fail(f"missing keys {missing}; a record needs {list(REQUIRED_KEYS)} (optional: {list(OPTIONAL_KEYS)})")
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)} (put extras in 'meta')")
    if type(raw["schema"]) is not int or raw["schema"] != SCHEMA_VERSION:
        raise fail(f"schema {raw['schema']!r} is not supported; this codi2 reads schema {SCHEMA_VERSION}")
    if not isinstance(raw["id"], str) or not raw["id"]:
        raise fail(f"'id' must be a non-empty string, got {raw['id']!r}")
    if not isinstance(raw["source"], str):
        raise fail(f"'source' must be a string, got {raw['source']!r}")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise fail(f"'meta' must be an object, got {type(meta).__name__}")
    meta = dict(meta)
    if "license" in raw:
        if not isinstance(raw["license"], str):
            raise fail(f"'license' must be a string, got {raw['license']!r}")
        meta["license"] = raw["license"]
    msgs_raw = raw["messages"]
    if not isinstance(msgs_raw, list) or not msgs_raw:
        raise fail("'messages' must be a non-empty list of messages")

    messages = []
    for i, d in enumerate(msgs_raw):
        try:
            messages.append(message_from_dict(d, where=f"messages[{i}]"))
        except ValueError as e:
            raise fail(str(e)) from None
    _check_roles(messages, fail)

    base = Path(base_dir)
    outputs: list[str] = []
    for i, msg in enumerate(messages):
        if not msg.content:
            raise fail(f"messages[{i}] ({msg.role}) has no content")
        for j, p in enumerate(msg.content):
            if p.type == "text":
                if not isinstance(p.text, str):
                    raise fail(f"messages[{i}].content[{j}].text must be a string")
                continue
            if not isinstance(p.path, str) or not p.path:
                raise fail(f"messages[{i}].content[{j}]: {p.type} part needs a non-empty 'path' string, got {p.path!r}")
            if p.caption is not None and not isinstance(p.caption, str):
                raise fail(f"messages[{i}].content[{j}].caption must be a string, got {p.caption!r}")
            p.path = str(base / p.path)
            if msg.role == "assistant":
                if p.type in ("audio", "video") and not (p.caption or "").strip():
                    raise fail(f"messages[{i}].content[{j}]: {p.type} output has no 'caption'; its head target "
                               "is computed from the caption", "caption")
                if p.type not in outputs:
                    outputs.append(p.type)
    return Record(raw["id"], raw["source"], messages, phase_of_outputs(outputs), meta, line)


def _check_roles(messages: Sequence[Message], fail) -> None:
    roles = [m.role for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        raise fail(f"roles {roles}: only the first message may be 'system'", "roles")
    if not body:
        raise fail("the conversation has no user/assistant messages", "roles")
    for k, r in enumerate(body):
        want = "user" if k % 2 == 0 else "assistant"
        if r != want:
            raise fail(f"roles {roles}: expected {want!r} at message {k + (len(roles) - len(body))}; roles must "
                       "alternate user/assistant (after an optional leading system message), starting with user",
                       "roles")
    if body[-1] != "assistant":
        raise fail(f"roles {roles}: the conversation must end with an assistant message", "roles")


def phase_of_outputs(output_types: Sequence[str]) -> str:
    """The phase of a conversation whose assistant turns output these media types (see module doc)."""
    kinds = set(output_types)
    if not kinds:
        return "text"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "multi"


# ----------------------------------------------------------------------------- validation
@dataclass
class ValidationReport:
    """What :func:`validate_manifest` found.

    Attributes:
        manifest: the manifest path.
        lines: non-blank lines read.
        records: records without errors.
        by_phase: phase -> number of good records.
        errors_by_kind: error kind (:data:`ERROR_KINDS`) -> number of bad records.
        examples: the first ``max_examples`` errors: ``{"id", "line", "kind", "reason"}``.
        media_checked: distinct media files checked.
    """

    manifest: str
    lines: int = 0
    records: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    media_checked: int = 0

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "errors": self.errors, "ok": self.ok}

    def to_text(self) -> str:
        out = [f"{self.manifest}: {self.lines} lines, {self.records} good records, {self.errors} bad, "
               f"{self.media_checked} media files checked"]
        if self.by_phase:
            out.append("  by phase:  " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_phase.items())))
        if self.errors_by_kind:
            out.append("  by error:  " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors_by_kind.items())))
        for e in self.examples:
            out.append(f"  ERROR {e['id']} (line {e['line']}, {e['kind']}): {e['reason']}")
        if self.errors > len(self.examples):
            out.append(f"  … and {self.errors - len(self.examples)} more")
        out.append("OK" if self.ok else "FAILED")
        return "\n".join(out)


def _check_media(path: str, kind: str, limits: MediaLimits, decode: bool) -> Optional[tuple[str, str]]:
    """None if the file is fine, else ``(error kind, reason)``."""
    from .media import MediaError, load_media, validate

    if not Path(path).is_file():
        return "missing_file", f"{kind} file not found: {path}"
    try:
        validate(path, kind, limits)
        if decode:
            load_media(path, kind, limits)
    except MediaError as e:
        return "media", str(e)
    except OSError as e:
        return "media", f"cannot read {path}: {e}"
    return None


def validate_manifest(path: "str | Path", limits: MediaLimits = MediaLimits(), check_media: bool = True,
                      workers: int = 1, decode: bool = False, max_examples: int = 20) -> ValidationReport:
    """Checks every line of a manifest.

    Per record: JSON, schema, roles, captions of audio/video outputs, unique ids; with
    ``check_media`` every media file exists and passes :func:`codi2.media.validate` (header only,
    within ``limits``), and with ``decode`` also decodes fully. Each distinct (file, kind) is checked once.

    Args:
        path: the manifest.
        limits: media limits.
        check_media: check the media files (False: structure only).
        workers: threads checking media files.
        decode: fully decode every media file as well (slow).
        max_examples: how many error examples the report keeps.

    Returns:
        A :class:`ValidationReport` (a record counts once, under its first error).
    """
    path = Path(path)
    base = path.parent
    report = ValidationReport(str(path))
    kinds: Counter = Counter()

    parse_examples: list[dict] = []
    media_examples: list[dict] = []

    def bad(rid: str, line: int, kind: str, reason: str) -> None:
        kinds[kind] += 1
        examples = media_examples if kind in ("missing_file", "media") else parse_examples
        if len(examples) < max_examples:
            examples.append({"id": rid, "line": line, "kind": kind, "reason": reason})

    parsed: list[Record] = []
    seen_ids: dict[str, int] = {}
    for n, raw in _read_lines(path):
        report.lines += 1
        try:
            if isinstance(raw, RecordError):
                raise raw
            rec = parse_record(raw, base, line=n)
        except RecordError as e:
            bad(e.id, n, e.kind, e.reason)
            continue
        if rec.id in seen_ids:
            bad(rec.id, n, "duplicate_id", f"id {rec.id!r} already used on line {seen_ids[rec.id]}")
            continue
        seen_ids[rec.id] = n
        parsed.append(rec)

    results: dict[tuple[str, str], Optional[tuple[str, str]]] = {}
    if check_media:
        files = sorted({(p.path, p.type) for r in parsed for p in r.media_parts()})
        check = lambda f: _check_media(f[0], f[1], limits, decode)  # noqa: E731
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                checked = list(_progress(ex.map(check, files), len(files), "checking media"))
        else:
            checked = list(_progress(map(check, files), len(files), "checking media"))
        results = dict(zip(files, checked))
        report.media_checked = len(files)

    phases: Counter = Counter()
    for rec in parsed:
        err = next((results[(p.path, p.type)] for p in rec.media_parts() if results.get((p.path, p.type))), None)
        if err is not None:
            bad(rec.id, rec.line, *err)
            continue
        report.records += 1
        phases[rec.phase] += 1
    report.by_phase = dict(phases)
    # each list holds the first errors of its kind in line order; together, the first overall
    report.examples = sorted(parse_examples + media_examples, key=lambda e: e["line"])[:max_examples]
    report.errors_by_kind = dict(kinds)
    return report


def _progress(items: Iterable, total: int, desc: str) -> Iterable:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="file", disable=total < 200, leave=False)


# ----------------------------------------------------------------------------- dataset
def group_by_phase(phase_of: Sequence[str]) -> dict[str, list[int]]:
    """Phase -> the indices whose phase it is, in order (only phases present)."""
    out: dict[str, list[int]] = {}
    for i, ph in enumerate(phase_of):
        out.setdefault(ph, []).append(i)
    return out


class ManifestDataset(torch.utils.data.Dataset):
    """The records of a manifest, for training.

    Reads and parses the whole manifest at construction *without* touching media files; lines that
    fail to parse (JSON, schema, roles, captions, duplicate ids) are skipped and listed in
    :attr:`bad`. ``__getitem__`` returns a fresh :class:`Record` with its media loaded.

    Args:
        manifest: the manifest path.
        limits: media limits applied when loading.
        phases: keep only records of these phases (default: all).
        load_outputs: also load the media of assistant (output) parts. Training with precomputed
            targets and no diffusion loss does not need them (False saves decoding them).

    Attributes:
        records: the parsed records (media not loaded).
        phase_of: the phase of each index.
        bad: ``(id or 'line N', reason)`` of each record that failed to parse.
        num_lines: non-blank lines in the manifest.
    """

    def __init__(self, manifest: "str | Path", limits: MediaLimits = MediaLimits(),
                 phases: Optional[Sequence[str]] = None, load_outputs: bool = True):
        self.manifest = Path(manifest)
        self.limits = limits
        self.load_outputs = load_outputs
        if phases is not None:
            unknown = sorted(set(phases) - set(PHASES))
            if unknown:
                raise ValueError(f"phases {unknown} unknown; allowed: {list(PHASES)}")
        self.records: list[Record] = []
        self.bad: list[tuple[str, str]] = []
        self.num_lines = 0
        seen: dict[str, int] = {}
        for n, raw in _read_lines(self.manifest):
            self.num_lines += 1
            try:
                if isinstance(raw, RecordError):
                    raise raw
                rec = parse_record(raw, self.manifest.parent, where=self.manifest.name, line=n)
                if rec.id in seen:
                    raise RecordError(rec.id, f"id already used on line {seen[rec.id]}", "duplicate_id", n)
            except RecordError as e:
                self.bad.append((e.id, e.reason))
                log.warning("skipping %s", e)
                continue
            seen[rec.id] = n
            if phases is None or rec.phase in phases:
                self.records.append(rec)
        self.phase_of: list[str] = [r.phase for r in self.records]
        self._keys: dict[str, str] = {}  # path -> content key (file hash), computed once per process

    def __len__(self) -> int:
        return len(self.records)

    def indices_by_phase(self) -> dict[str, list[int]]:
        """Phase -> dataset indices of that phase (only phases present)."""
        return group_by_phase(self.phase_of)

    def __getitem__(self, i: int) -> Record:
        """The record at ``i`` with ``Part.media`` loaded (a copy: the dataset keeps no media).

        Each media part also gets ``Part.key`` = the content hash of its *file*
        (:func:`codi2.conversation.part_key` before loading), the key the feature and target caches use.

        Raises:
            RecordError: a media file is missing, too large or does not decode (kind ``missing_file`` / ``media``).
        """
        from .media import MediaError, load_media

        rec = self.records[i]
        messages = []
        for msg in rec.messages:
            parts = []
            for p in msg.content:
                if p.type != "text":
                    p = dataclasses.replace(p, media=None, conditioning=None)
                    try:
                        p.key = self._key(p)
                        if self.load_outputs or msg.role != "assistant":
                            p.media = load_media(p.path, p.type, self.limits)
                    except FileNotFoundError:
                        raise RecordError(rec.id, f"{p.type} file not found: {p.path}", "missing_file", rec.line) from None
                    except MediaError as e:
                        raise RecordError(rec.id, str(e), "media", rec.line) from None
                    except OSError as e:
                        raise RecordError(rec.id, f"cannot read {p.path}: {e}", "media", rec.line) from None
                parts.append(p)
            messages.append(Message(msg.role, parts))
        return dataclasses.replace(rec, messages=messages, meta=dict(rec.meta))

    def _key(self, p: Part) -> str:
        k = self._keys.get(p.path)
        if k is None:
            k = self._keys[p.path] = part_key(Part(type=p.type, path=p.path))
        return k


# ----------------------------------------------------------------------------- bad records
class TooManyBadRecords(RuntimeError):
    """Raised by :meth:`BadRecordCounter.check` when the bad fraction passes the limit."""


class BadRecordCounter:
    """Counts records that failed to load and stops the run when there are too many.

    Usage (the trainer)::

        counter = BadRecordCounter(cfg.max_bad_fraction)
        for rid, reason in dataset.bad:          # parse failures, found when the manifest was read
            counter.record(rid, reason)
        ...
        try:
            rec = dataset[i]
            counter.seen()                       # a record that loaded fine
        except RecordError as e:
            counter.record(e.id, e.reason)       # a bad one (counts as seen too)
        counter.check()                          # raises TooManyBadRecords past the limit

    Args:
        max_bad_fraction: the largest allowed ``bad / seen`` (0 = no bad record allowed).
        min_seen: :meth:`check` only judges once this many records were seen (a few bad records
            among the first ones must not stop a run).
        max_examples: bad records kept for the error message.
    """

    def __init__(self, max_bad_fraction: float, min_seen: int = 100, max_examples: int = 5):
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction = {max_bad_fraction}; it must be in [0, 1]")
        if min_seen < 1:
            raise ValueError(f"min_seen = {min_seen}; it must be >= 1")
        self.max_bad_fraction = max_bad_fraction
        self.min_seen = min_seen
        self.max_examples = max_examples
        self.n_ok = 0
        self.n_bad = 0
        self.examples: list[tuple[str, str]] = []

    def record(self, id: str, reason: str) -> None:
        """Counts one bad record (as seen and bad) and logs its id and reason."""
        self.n_bad += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((id, reason))
        log.warning("bad record %s skipped: %s (%d bad of %d seen)", id, reason, self.n_bad, self.n_seen)

    def seen(self, n: int = 1) -> int:
        """Counts ``n`` records that loaded fine; returns the total seen (good + bad)."""
        self.n_ok += n
        return self.n_seen

    @property
    def n_seen(self) -> int:
        return self.n_ok + self.n_bad

    @property
    def fraction(self) -> float:
        return self.n_bad / self.n_seen if self.n_seen else 0.0

    def check(self) -> None:
        """Raises :class:`TooManyBadRecords` if at least ``min_seen`` records were seen and the bad
        fraction is over ``max_bad_fraction``."""
        if self.n_seen >= self.min_seen and self.fraction > self.max_bad_fraction:
            ex = "; ".join(f"{i}: {r}" for i, r in self.examples)
            raise TooManyBadRecords(
                f"{self.n_bad} of {self.n_seen} records failed to load ({self.fraction:.1%}), over the limit "
                f"max_bad_fraction = {self.max_bad_fraction:g}. First bad records: {ex}. Run `codi2 validate-data "
                "MANIFEST` to list every problem, fix or drop those records, or raise max_bad_fraction.")

    def state_dict(self) -> dict:
        """For checkpoints: the counts and examples."""
        return {"n_ok": self.n_ok, "n_bad": self.n_bad, "examples": [list(e) for e in self.examples]}

    def load_state_dict(self, state: dict) -> None:
        self.n_ok, self.n_bad = int(state["n_ok"]), int(state["n_bad"])
        self.examples = [tuple(e) for e in state["examples"]]


# ----------------------------------------------------------------------------- command line
def _parse_limits(items: Sequence[str]) -> MediaLimits:
    from .config import load_config

    return load_config(MediaLimits, None, list(items))


def _validate_command(args: Any) -> int:
    limits = _parse_limits(args.limits or [])
    report = validate_manifest(args.manifest, limits, check_media=not args.no_media, workers=args.workers,
                               decode=args.decode, max_examples=args.max_examples)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    """Adds ``codi2 validate-data MANIFEST [--json] [--decode] [--limits key=value …]``
    (exit status 0 when every record is fine, 1 otherwise)."""
    p = subparsers.add_parser("validate-data", help="check every record of a training manifest and its media files")
    p.add_argument("manifest", help="a JSONL manifest (docs/design.md#manifest-schema)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--decode", action="store_true", help="also decode every media file fully (slow)")
    p.add_argument("--no-media", action="store_true", help="check structure only, not the media files")
    p.add_argument("--limits", nargs="+", action="extend", metavar="KEY=VALUE",
                   help=f"media limits, e.g. max_audio_seconds=30 (fields: {', '.join(f.name for f in dataclasses.fields(MediaLimits))})")
    p.add_argument("--workers", type=int, default=4, help="threads checking media files")
    p.add_argument("--max-examples", type=int, default=20, help="error examples to show")
    p.set_defaults(func=_validate_command)
