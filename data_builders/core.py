"""The build engine every corpus reader shares: checks, dedup, sharded output, resume, workers, summary.

A *source* (``data_builders.sources``) splits its input into ordered **units** (a tar shard, a chunk
of table rows, a chunk of edit folders) and reads a unit into :class:`Sample` s (one paired data
point: media + caption, or an edit input/output pair). :func:`build` then

1. hands the units to ``workers`` processes (``multiprocessing`` *spawn*, ``imap``: results come back
   in unit order whatever the worker count). A worker reads its unit, extracts tar members (only a tar
   source writes media, or any source with ``copy_media``), checks every sample (:func:`check_sample`:
   caption length, file exists, :func:`codi2.media.validate` from the header, size / duration
   filters, then a full decode of images and audio unless ``decode=false``) and hashes its media (sha256
   of the file bytes);
2. in the main process, in order: drops duplicates (the tuple of a sample's media hashes; optionally
   exact normalised captions), turns each kept sample into a manifest record
   (:func:`data_builders.conversations.pair_record`, phrasing drawn from an RNG seeded by
   ``(seed, original id)``) and appends it to the output shard;
3. after every unit, *commits*: flushes the shards and writes the state file
   (``.build-state.json``: units done, shard byte lengths, the dedup set's length, the summary so far).

Output folder::

    manifest.jsonl                  (shard_size = 0, the default) or
    manifest-00000.jsonl, …         (shard_size = N: N records a shard; each shard is a valid manifest,
                                     ids are unique across shards; give them all to data.manifests)
    test.jsonl / test-00000.jsonl … (eval_fraction > 0 only) the held-out split: records whose group key
                                     (:func:`codi2.editing.group_key`: an edit's group, a subject, else the
                                     sample) hashes into the evaluation fraction; the manifests above then hold
                                     the train split. Every record carries ``meta.split``.
    media/{unit}/{key}.{ext}        media extracted from tar shards (or copied with copy_media)
    summary.json                    records, skipped samples by reason (with examples), tasks, manifests
    .build-state.json               resume state (kept; ``complete: true`` once finished)

Media paths in records: files this build wrote (``media/…``) are relative to the manifest folder;
originals stay where they are and are written as absolute paths (``relative_paths=True``: relative
to the manifest folder instead, for a corpus that moves together with its manifests).

Resume: ``resume=True`` re-opens the state, truncates the shards and the dedup set to their
committed lengths (dropping whatever an interrupted unit had written) and goes on from the next unit;
the result is byte-identical to an uninterrupted build. The state stores a fingerprint of the
source and options; resuming with different ones is an error.

Skip reasons (``summary.json["skipped"]``): see :data:`SKIP_REASONS`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from tqdm import tqdm

from codi2.config import MediaLimits
from codi2.editing import PAIR, SPLIT, SPLIT_PREFIX, SUMMARY_SPLITS, TEST, TRAIN, check_eval_fraction, group_key, split_of
from codi2.io import write_json

from .conversations import pair_record
from .records import STATE_FILE, BuildError, Sample, ShardWriter, existing_outputs

log = logging.getLogger(__name__)

KINDS = ("image", "audio", "video")
SKIP_REASONS = {
    "bad_row": "the input row or sample is malformed (missing column, bad JSON, no media)",
    "missing_file": "a media file named by the input does not exist",
    "undecodable": "a media file is corrupt, truncated, empty or not of the expected kind",
    "too_large": "a media file is over max_bytes or max_pixels",
    "too_long": "an audio/video file is over max_seconds (or the frame limit)",
    "too_short": "an audio/video file is under min_seconds",
    "no_caption": "no caption (captioned pairs) or no instruction (edits)",
    "caption_too_short": "the caption (or edit instruction) is under min_caption_chars",
    "caption_too_long": "the caption (or edit instruction) is over max_caption_chars",
    "duplicate": "the same media bytes (all of the sample's media) were already kept",
    "duplicate_caption": "the same normalised caption was already kept (dedup_captions)",
}
SEEN_FILE = ".build-seen.txt"
SUMMARY_FILE = "summary.json"
N_EXAMPLES = 5


# ----------------------------------------------------------------------------- options
@dataclass
class Filters:
    """Per-sample filters (``--filter key=value``).

    Attributes:
        min_caption_chars / max_caption_chars: caption (edits: instruction) length in characters, after
            stripping whitespace.
        max_bytes: largest media file.
        max_pixels: largest image (width × height); video frames use ``max_video_pixels``.
        max_video_pixels: largest video frame.
        min_seconds / max_seconds: audio and video duration (from the header).
        dedup: drop samples whose media bytes (all of them) were already kept.
        dedup_captions: also drop samples whose normalised caption (lower case, single spaces) was already kept.
        decode: decode every image and audio file in full (a truncated file passes the header check and would
            fail only in training); ``false`` checks headers only. Video is checked from its header.
    """

    min_caption_chars: int = 1
    max_caption_chars: int = 2000
    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_video_pixels: int = 1920 * 1080
    min_seconds: float = 0.0
    max_seconds: float = 60.0
    dedup: bool = True
    dedup_captions: bool = False
    decode: bool = True

    def limits(self) -> MediaLimits:
        """The :class:`codi2.config.MediaLimits` that :func:`codi2.media.validate` checks against."""
        return MediaLimits(max_file_bytes=int(self.max_bytes), max_image_pixels=int(self.max_pixels),
                           max_video_pixels=int(self.max_video_pixels), max_audio_seconds=float(self.max_seconds),
                           max_video_seconds=float(self.max_seconds), max_video_frames=2**31)


def parse_filters(items: Sequence[str] = ()) -> Filters:
    """``["max_bytes=1000000", "dedup_captions=true"]`` -> :class:`Filters` (unknown keys are errors)."""
    from codi2.config import load_config

    return load_config(Filters, None, list(items))


@dataclass(frozen=True)
class Context:
    """What a worker needs besides its unit (picklable).

    Attributes:
        out: the output folder (absolute).
        filters: the sample filters.
        copy_media: copy original media into ``out/media`` (tar members are always extracted there).
        relative_paths: write original media paths relative to ``out`` instead of absolute.
    """

    out: str
    filters: Filters
    copy_media: bool = False
    relative_paths: bool = False


@dataclass
class BuildOptions:
    """Options of one build (``codi2 build-data SOURCE …``).

    Attributes:
        out: the output folder.
        name: the ``source`` field of every record and the prefix of record ids (default: the source's name);
            name each corpus (``cc3m``, ``webvid``) so that ids stay unique when manifests are combined.
        seed: seeds the phrasing and task choice of every record (same seed -> identical manifests).
        workers: processes reading and checking units (1 = in this process).
        shard_size: records per output shard; 0 = one ``manifest.jsonl``.
        resume: continue an interrupted build in ``out``.
        filters: :class:`Filters`.
        copy_media: copy original media files into ``out/media``.
        relative_paths: original media paths relative to ``out`` (default: absolute).
        license: the licence written to records whose input names none.
        mix: task weights for paired data (``caption``, ``generate``, ``joint``; edits are always ``edit``).
        progress: show a tqdm bar.
        eval_fraction: the fraction of groups held out as the ``test`` split (0: no split); see
            :func:`codi2.editing.split_of`.
    """

    out: Union[str, Path]
    name: Optional[str] = None
    seed: int = 0
    workers: int = 1
    shard_size: int = 0
    resume: bool = False
    filters: Filters = field(default_factory=Filters)
    copy_media: bool = False
    relative_paths: bool = False
    license: str = "unknown"
    mix: dict[str, float] = field(default_factory=lambda: {"caption": 1.0, "generate": 1.0, "joint": 0.0})
    progress: bool = True
    eval_fraction: float = 0.0


# ----------------------------------------------------------------------------- samples and units
@dataclass
class Unit:
    """An ordered piece of a source's input, processed by one worker call.

    Attributes:
        name: unique within the build, safe as a folder name (``media/{name}/`` holds what it extracts).
        payload: what the source needs to read it (a path, a list of rows …); must pickle.
        size: samples in it when known up front (for the progress bar).
    """

    name: str
    payload: Any
    size: Optional[int] = None


@dataclass
class Skip:
    """A sample that was dropped: its original id, the reason (a :data:`SKIP_REASONS` key) and details."""

    id: str
    reason: str
    detail: str = ""
    written: list[str] = field(default_factory=list)


class Source:
    """A corpus reader. Subclasses are dataclasses of plain fields (they are pickled to workers).

    Subclasses set ``name`` and implement :meth:`units` (main process, cheap: list the input) and
    :meth:`read` (a worker: read one unit).
    """

    name: str = "source"
    media_roles_written = False  # True: read() writes media files (tar extraction)

    def units(self) -> list[Unit]:
        raise NotImplementedError

    def read(self, unit: Unit, ctx: Context) -> Iterator[Union[Sample, Skip]]:
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """The fields that define the input (stored in the state; a resumed build must match)."""
        return {"source": self.name, **{k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------- checks (workers)
def sha256_file(path: Union[str, Path]) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(s: str, max_len: int = 120) -> str:
    """A file-name-safe version of an id (other characters become ``_``; no leading dot)."""
    s = _SAFE.sub("_", s).lstrip(".") or "_"
    return s[:max_len]


def media_error_reason(message: str) -> str:
    """Maps a :class:`codi2.media.MediaError` message to a skip reason."""
    if "over the limit" not in message:
        return "undecodable"
    if " long" in message or "frames" in message:
        return "too_long"
    return "too_large"


def _resolve(path: str, out: str) -> str:
    return path if os.path.isabs(path) else os.path.join(out, path)


def check_sample(s: Sample, ctx: Context, unit: Unit) -> Union[Sample, Skip]:
    """Checks one sample against the filters and hashes its media; copies media when asked.

    Returns:
        The sample (``sha256`` filled, media paths final), or a :class:`Skip` naming the reason.
    """
    from codi2.media import MediaError, load_audio, load_image, validate

    f = ctx.filters
    if not s.media:
        return Skip(s.id, "bad_row", "no media in the sample", s.written)
    text = (s.text or "").strip()
    if not text:
        return Skip(s.id, "no_caption", "no instruction" if s.edit is not None else "no caption", s.written)
    if len(text) < f.min_caption_chars:
        return Skip(s.id, "caption_too_short", f"{len(text)} chars < min_caption_chars={f.min_caption_chars}", s.written)
    if len(text) > f.max_caption_chars:
        return Skip(s.id, "caption_too_long", f"{len(text)} chars > max_caption_chars={f.max_caption_chars}", s.written)
    limits = f.limits()
    for role, path in s.media.items():
        kind = s.kind(role)
        full = _resolve(path, ctx.out)
        if not os.path.isfile(full):
            return Skip(s.id, "missing_file", f"{kind} file not found: {path}", s.written)
        try:
            info = validate(full, kind, limits)
            if f.decode and kind in ("image", "audio"):
                (load_image if kind == "image" else load_audio)(full, limits)
        except MediaError as e:
            return Skip(s.id, media_error_reason(str(e)), str(e), s.written)
        if kind in ("audio", "video") and info.duration is not None and info.duration < f.min_seconds:
            return Skip(s.id, "too_short", f"{path}: {info.duration:.2f} s < min_seconds={f.min_seconds:g}", s.written)
        if role not in s.sha256:  # a reader that had the bytes in memory (tar members) hashed them already
            s.sha256[role] = sha256_file(full)
    # Final paths: copy originals when asked; originals absolute or relative to the output folder.
    for role, path in list(s.media.items()):
        if path in s.written or not os.path.isabs(path):
            continue
        if ctx.copy_media:
            rel = os.path.join("media", unit.name, f"{safe_name(s.id)}_{role}{Path(path).suffix.lower()}")
            dst = os.path.join(ctx.out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(path, dst)
            s.written.append(rel)
            s.media[role] = rel
        elif ctx.relative_paths:
            s.media[role] = os.path.relpath(path, ctx.out)
    return s


def process_unit(source: Source, ctx: Context, unit: Unit) -> list[Union[Sample, Skip]]:
    """A worker's job: read one unit and check every sample (see the module docstring)."""
    out: list[Union[Sample, Skip]] = []
    for item in source.read(unit, ctx):
        if isinstance(item, Sample):
            item = check_sample(item, ctx, unit)
        if isinstance(item, Skip):
            _remove_written(ctx.out, item.written)
            item.detail = item.detail.replace(ctx.out + os.sep, "")  # summaries do not depend on where --out is
        out.append(item)
    return out


def _remove_written(out: str, written: Iterable[str]) -> None:
    for rel in written:
        try:
            os.unlink(os.path.join(out, rel))
        except FileNotFoundError:
            pass


def _truncate(path: Path, n_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(n_bytes)


def normalise_caption(text: str) -> str:
    """Lower case, single spaces: the key of ``dedup_captions``."""
    return " ".join(text.lower().split())


# ----------------------------------------------------------------------------- the build
class Summary:
    """Counts kept records, tasks and skipped samples (with the first few examples per reason)."""

    def __init__(self, state: Optional[dict] = None):
        state = state or {}
        self.samples = int(state.get("samples", 0))
        self.records = int(state.get("records", 0))
        self.tasks: Counter = Counter(state.get("tasks", {}))
        self.skipped: Counter = Counter(state.get("skipped", {}))
        self.examples: dict[str, list[dict]] = {k: list(v) for k, v in state.get("examples", {}).items()}
        self.splits: Counter = Counter(state.get("split_records", {}))

    def skip(self, unit: str, s: Skip) -> None:
        self.skipped[s.reason] += 1
        ex = self.examples.setdefault(s.reason, [])
        if len(ex) < N_EXAMPLES:
            ex.append({"id": s.id, "unit": unit, "detail": s.detail})

    def to_dict(self) -> dict:
        out = {"samples": self.samples, "records": self.records, "tasks": dict(sorted(self.tasks.items())),
               "skipped": dict(sorted(self.skipped.items())),
               "examples": {k: self.examples[k] for k in sorted(self.examples)}}
        if self.splits:
            out["split_records"] = dict(sorted(self.splits.items()))
        return out


def build(source: Source, opts: BuildOptions) -> dict:
    """Builds a manifest from a source (see the module docstring).

    Args:
        source: a :class:`Source` (e.g. ``data_builders.sources.WebDatasetSource(inputs=[...])``).
        opts: :class:`BuildOptions`.

    Returns:
        The summary dict (also written to ``out/summary.json``): ``records``, ``samples``, ``skipped``
        (reason -> count), ``examples``, ``tasks``, ``manifests`` (file names, in order), ``name``, ``source``;
        with ``eval_fraction`` > 0 also ``splits``: ``{"train": {"records", "manifests"}, "test": {…}}``
        (``manifests`` is then the train split).

    Raises:
        BuildError: ``out`` already holds a build and ``resume`` is off; the state does not match
            (different source or options); bad options.
    """
    if opts.workers < 1:
        raise BuildError(f"workers = {opts.workers}; it must be >= 1")
    if opts.shard_size < 0:
        raise BuildError(f"shard_size = {opts.shard_size}; it must be >= 0 (0 = one manifest.jsonl)")
    try:
        eval_fraction = check_eval_fraction(opts.eval_fraction)
    except ValueError as e:
        raise BuildError(f"--eval-fraction: {e}") from None
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = opts.name or source.name
    fingerprint = {"input": source.fingerprint(), "name": name, "seed": opts.seed, "shard_size": opts.shard_size,
                   "filters": dataclasses.asdict(opts.filters), "copy_media": opts.copy_media,
                   "relative_paths": opts.relative_paths, "license": opts.license,
                   "mix": dict(sorted(opts.mix.items()))}
    if eval_fraction > 0:
        fingerprint["eval_fraction"] = eval_fraction
    units = source.units()
    state_path, seen_path = out / STATE_FILE, out / SEEN_FILE

    # 1. start fresh, or re-open the committed state.
    if opts.resume and state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state["fingerprint"] != fingerprint:
            raise BuildError(f"{out} holds a build with other inputs or options than this one; resume it with the "
                             f"same command, or build into a new folder. State: {json.dumps(state['fingerprint'])}")
        if state.get("complete"):
            log.info("%s: the build is already complete (%d records)", out, state["summary"]["records"])
            return json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        for s in state["shards"] + state.get("test_shards", []):
            _truncate(out / s["file"], s["bytes"])
        kept = {s["file"] for s in state["shards"] + state.get("test_shards", [])}
        for n in existing_outputs(out):
            if n != STATE_FILE and n not in kept:
                (out / n).unlink()
        if not seen_path.exists():
            seen_path.touch()
        _truncate(seen_path, state["seen_bytes"])
        log.info("%s: resuming after %d of %d units (%d records)", out, state["units_done"], len(units),
                 state["summary"].get("records", 0))
    else:
        existing = existing_outputs(out)
        if existing:
            raise BuildError(f"{out} already holds a build ({', '.join(existing)}); pass --resume to continue it, "
                             "or choose an empty folder")
        state = {"version": 1, "fingerprint": fingerprint, "units": len(units), "units_done": 0, "shards": [],
                 "seen_bytes": 0, "summary": {}, "complete": False}
        if eval_fraction > 0:
            state["test_shards"] = []
        seen_path.write_bytes(b"")
        write_json(state_path, state)  # from here on, --resume can take over (even before the first commit)
    if state["units"] != len(units):
        raise BuildError(f"the input now has {len(units)} units, the state was started with {state['units']}; "
                         "the input changed since the interrupted build: build into a new folder")

    seen: set[str] = set(seen_path.read_text(encoding="utf-8").split())
    summary = Summary(state["summary"])
    writer = ShardWriter(out, opts.shard_size, state["shards"])
    test_writer = ShardWriter(out, opts.shard_size, state.get("test_shards"), prefix=SPLIT_PREFIX[TEST])
    seen_f = open(seen_path, "ab")
    ctx = Context(str(out), opts.filters, opts.copy_media, opts.relative_paths)
    todo = units[state["units_done"]:]
    work = functools.partial(process_unit, source, ctx)
    t0 = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(opts.workers) if opts.workers > 1 and len(todo) > 1 else None
    try:
        results: Iterable = pool.imap(work, todo, chunksize=1) if pool is not None else map(work, todo)
        with tqdm(total=len(units), initial=state["units_done"], unit="unit", desc=f"build-data {name}",
                  disable=not opts.progress) as bar:
            for unit, items in zip(todo, results):
                # 2. dedup, records, append (in unit order).
                for item in items:
                    summary.samples += 1
                    if isinstance(item, Skip):
                        summary.skip(unit.name, item)
                        continue
                    keys = _dedup_keys(item, opts.filters)
                    dup = next((k for k in keys if k in seen), None)
                    if dup is not None:
                        reason = "duplicate" if dup.startswith("m:") else "duplicate_caption"
                        what = "media" if reason == "duplicate" else "caption"
                        summary.skip(unit.name, Skip(item.id, reason, f"same {what} as an earlier sample"))
                        _remove_written(str(out), item.written)
                        continue
                    for k in keys:
                        seen.add(k)
                        seen_f.write((k + "\n").encode())
                    rid = f"{name}-{summary.records:08d}"
                    record = pair_record(item, rid, name, opts.seed, opts.mix, opts.license)
                    split = TRAIN
                    if eval_fraction > 0:
                        split = split_of(group_key(record["meta"][PAIR], item.id), eval_fraction)
                        record["meta"][SPLIT] = split
                        summary.splits[split] += 1
                    (test_writer if split == TEST else writer).write(record)
                    summary.records += 1
                    summary.tasks[record["meta"]["task"]] += 1
                # 3. commit.
                seen_f.flush()
                os.fsync(seen_f.fileno())
                state["shards"] = writer.commit()
                if eval_fraction > 0:
                    state["test_shards"] = test_writer.commit()
                state["seen_bytes"] = seen_f.tell()
                state["units_done"] += 1
                state["summary"] = summary.to_dict()
                write_json(state_path, state)
                bar.update(1)
                bar.set_postfix(records=summary.records, skipped=sum(summary.skipped.values()))
    finally:
        writer.close()
        test_writer.close()
        seen_f.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    result = {"name": name, "source": source.name, **summary.to_dict(),
              "manifests": [s["file"] for s in state["shards"]], "units": len(units)}
    if eval_fraction > 0:
        result["eval_fraction"] = eval_fraction
        result[SUMMARY_SPLITS] = {
            sp: {"records": summary.splits.get(sp, 0), "manifests": [s["file"] for s in state[key]]}
            for sp, key in ((TRAIN, "shards"), (TEST, "test_shards"))}
    write_json(out / SUMMARY_FILE, result)
    state["complete"] = True
    write_json(state_path, state)
    seen_path.unlink()
    dt = time.perf_counter() - t0
    log.info("%s: %d records from %d samples (%d skipped: %s) in %.1f s -> %s", name, summary.records,
             summary.samples, sum(summary.skipped.values()), dict(summary.skipped), dt,
             ", ".join(result["manifests"] + [s["file"] for s in state.get("test_shards", [])])
             or "no manifest (nothing kept)")
    return result


def _dedup_keys(s: Sample, f: Filters) -> list[str]:
    """The keys a kept sample adds to the dedup set: ``m:`` + the hash of its media hashes, ``c:`` + caption hash."""
    keys = []
    if f.dedup:
        joined = "|".join(f"{role}={s.sha256[role]}" for role in sorted(s.sha256))
        keys.append("m:" + hashlib.sha256(joined.encode()).hexdigest())
    if f.dedup_captions and s.caption:
        keys.append("c:" + hashlib.sha256(normalise_caption(s.caption).encode()).hexdigest())
    return keys
