"""Corpus readers, local files only: WebDataset tar shards, metadata tables (CSV / JSON / JSONL / Parquet) with a
media folder, the AudioCaps CSV, the InstructPix2Pix folder layout and AUDIT-style audio-edit tables.

Each reader is a :class:`data_builders.core.Source`: ``units()`` lists the input in a fixed order (sorted
file names, table row order) and ``read(unit, ctx)`` yields :class:`~data_builders.core.Sample` s (or
:class:`~data_builders.core.Skip` s for malformed input). Media paths are absolute, except members
extracted from a tar, which go to ``{out}/media/{shard}/{key}{ext}`` and are relative to the output folder.

Readers, with their ``codi2 build-data`` names:

* ``webdataset`` :class:`WebDatasetSource`  ``{key}.jpg|png|webp|wav|flac|mp3|ogg|mp4|webm|…`` + ``{key}.txt``
  and/or ``{key}.json`` (``caption`` / ``text`` / ``title``, ``license``, other fields -> ``meta.orig``)
* ``table`` :class:`TableSource`  one row per sample; columns named by ``--column image=COL caption=COL …``
* ``audiocaps`` :class:`AudioCapsSource`  ``audiocap_id,youtube_id,start_time,caption`` + a folder of clips
  named by ``--pattern`` (default ``{youtube_id}_{start}.wav``; ``start`` = int(start_time))
* ``instructpix2pix`` :class:`InstructPix2PixSource`  folders with ``prompt.json`` (``input``, ``edit``,
  ``output``) and ``{seed}_0.jpg`` / ``{seed}_1.jpg`` pairs (one edit group per folder)
* ``audit`` :class:`AuditSource`  ``input_audio, edit_instruction, output_audio`` (+ optional ``edit_type``,
  ``input_caption``, ``output_caption``, ``id``) rows, media in a folder
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .core import BuildError, Context, Sample, Skip, Source, Unit, safe_name

log = logging.getLogger(__name__)

EXT_KIND = {
    **{e: "image" for e in ("jpg", "jpeg", "png", "webp", "bmp", "gif")},
    **{e: "audio" for e in ("wav", "flac", "mp3", "ogg", "opus", "m4a")},
    **{e: "video" for e in ("mp4", "webm", "avi", "mov", "mkv")},
}
CAPTION_KEYS = ("caption", "text", "title", "txt", "prompt", "description")


def _expand(inputs: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """Files among ``inputs`` (a folder contributes its files with these suffixes, recursively), sorted, absolute."""
    files: list[str] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            files += [str(q.resolve()) for q in p.rglob("*") if q.is_file() and q.name.lower().endswith(suffixes)]
        elif p.is_file():
            files.append(str(p.resolve()))
        else:
            raise BuildError(f"input not found: {i} (give files or folders)")
    if not files:
        raise BuildError(f"no input files with suffix {'/'.join(suffixes)} in {inputs}")
    return sorted(dict.fromkeys(files))


def _unit_names(files: list[str]) -> list[str]:
    """Short unique folder-safe names for input files (stem, with a counter when stems repeat)."""
    names, seen = [], set()
    for f in files:
        base = safe_name(Path(f).name.split(".")[0])
        n, k = base, 1
        while n in seen:
            n, k = f"{base}-{k}", k + 1
        seen.add(n)
        names.append(n)
    return names


def _chunks(items: list, size: int, prefix: str) -> list[Unit]:
    if size < 1:
        raise BuildError(f"rows per unit = {size}; it must be >= 1")
    return [Unit(f"{prefix}-{i // size:05d}", items[i:i + size], len(items[i:i + size])) for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- WebDataset
def _split_key(member_name: str) -> tuple[str, str]:
    """WebDataset naming: ``dir/abc.seg.jpg`` -> key ``dir/abc``, extension ``seg.jpg`` (split at the first dot
    of the base name)."""
    d, base = os.path.split(member_name)
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _caption_from_json(meta: dict) -> Optional[str]:
    for k in CAPTION_KEYS:
        v = meta.get(k)
        if isinstance(v, str) and v.strip():
            return v
    return None


@dataclass
class WebDatasetSource(Source):
    """WebDataset tar shards (files or folders of ``*.tar``), read with :mod:`tarfile` as a stream.

    A sample is the run of consecutive members sharing a key. Its media are the members whose last
    extension is in :data:`EXT_KIND` (``.mp4`` is video unless ``mp4_kind="audio"``); at most one per kind.
    The caption is ``{key}.txt`` (or ``.caption``), else a caption field of ``{key}.json``. Media are
    extracted to ``{out}/media/{shard}/``.

    Attributes:
        inputs: tar files or folders.
        mp4_kind: ``video`` or ``audio``.
    """

    inputs: list[str] = field(default_factory=list)
    mp4_kind: str = "video"
    name = "webdataset"

    def units(self) -> list[Unit]:
        if self.mp4_kind not in ("video", "audio"):
            raise BuildError(f"mp4_kind = {self.mp4_kind!r}; allowed: video, audio")
        files = _expand(self.inputs, (".tar",))
        return [Unit(n, f) for n, f in zip(_unit_names(files), files)]

    def read(self, unit: Unit, ctx: Context) -> Iterator[Union[Sample, Skip]]:
        keys_seen: dict[str, int] = {}
        try:
            with tarfile.open(unit.payload, "r|*") as tar:
                key, group = None, []
                for m in tar:
                    if not m.isfile():
                        continue
                    k, ext = _split_key(m.name)
                    if k != key and group:
                        yield self._sample(unit, key, group, ctx, keys_seen)
                        group = []
                    key = k
                    group.append((ext, m.name, tar.extractfile(m).read()))
                if group:
                    yield self._sample(unit, key, group, ctx, keys_seen)
        except (tarfile.TarError, OSError, EOFError) as e:
            yield Skip(f"{unit.name}:<tar>", "undecodable", f"{unit.payload}: tar read error ({e}); "
                                                            "the samples after this point are lost")

    def _sample(self, unit: Unit, key: str, group: list[tuple[str, str, bytes]], ctx: Context,
                keys_seen: dict[str, int]) -> Union[Sample, Skip]:
        sid = f"{unit.name}/{key}"
        n = keys_seen.get(key, 0)
        keys_seen[key] = n + 1
        fname = safe_name(key.replace("/", "_")) + (f"~{n}" if n else "")
        caption, meta, media_members = None, {}, {}
        for ext, member, data in group:
            last = ext.rsplit(".", 1)[-1]
            if last in ("txt", "caption"):
                caption = data.decode("utf-8", errors="replace").strip()
            elif last == "json":
                try:
                    meta = json.loads(data)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    return Skip(sid, "bad_row", f"{member}: not valid JSON ({e})")
                if not isinstance(meta, dict):
                    return Skip(sid, "bad_row", f"{member}: expected a JSON object")
            elif last in EXT_KIND:
                kind = self.mp4_kind if last == "mp4" else EXT_KIND[last]
                if kind in media_members:
                    log.debug("%s: a second %s (%s) is ignored", sid, kind, member)
                    continue
                media_members[kind] = (last, data)
        if not media_members:
            return Skip(sid, "bad_row", f"no media member among {[m for _, m, _ in group]}")
        if caption is None:
            caption = _caption_from_json(meta)
        license = meta.pop("license", None) if isinstance(meta.get("license"), str) else None
        media, written, sha = {}, [], {}
        folder = Path(ctx.out) / "media" / unit.name
        folder.mkdir(parents=True, exist_ok=True)
        for kind, (ext, data) in sorted(media_members.items()):
            rel = f"media/{unit.name}/{fname}.{ext}"
            (Path(ctx.out) / rel).write_bytes(data)
            media[kind] = rel
            written.append(rel)
            sha[kind] = hashlib.sha256(data).hexdigest()
        extra = {k: v for k, v in meta.items() if k not in CAPTION_KEYS}
        return Sample(sid, media, caption=caption, license=license, extra=extra, written=written, sha256=sha,
                      subject=meta.get("subject") if isinstance(meta.get("subject"), str) else None)


# ----------------------------------------------------------------------------- tables
def read_table(path: Union[str, Path]) -> list[dict]:
    """Rows of a CSV / TSV / JSON (a list of objects) / JSONL / Parquet file, as dicts of plain Python values.

    Parquet needs ``pyarrow`` (``pip install pyarrow==26.0.1``).

    Raises:
        BuildError: unknown suffix, unreadable file, or a JSON that is not a list of objects.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(p, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        rows = []
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise BuildError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        return rows
    if suffix == ".json":
        rows = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(rows, dict):  # {"id": {...}, ...}
            rows = [{"id": k, **v} if isinstance(v, dict) else {"id": k, "value": v} for k, v in rows.items()]
        if not isinstance(rows, list):
            raise BuildError(f"{p}: expected a JSON list of objects (or an object of objects)")
        return rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise BuildError(f"{p}: reading Parquet needs pyarrow: pip install pyarrow==26.0.1") from None
        return pq.read_table(p).to_pylist()
    raise BuildError(f"{p}: unknown table format {suffix!r}; allowed: .csv, .tsv, .json, .jsonl, .parquet")


def _media_path(value: Any, root: str) -> Optional[str]:
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    v = str(value).strip()
    return v if os.path.isabs(v) else os.path.normpath(os.path.join(root, v))


def _str_or_none(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, float) and value != value):
        return None
    s = str(value).strip()
    return s or None


DEFAULT_COLUMNS = {
    "id": ("id", "key", "uid", "sample_id"),
    "caption": ("caption", "text", "title", "prompt", "description"),
    "image": ("image", "image_path", "img", "file_name", "filepath", "jpg", "png"),
    "audio": ("audio", "audio_path", "wav", "flac"),
    "video": ("video", "video_path", "mp4"),
    "license": ("license", "licence"),
    "subject": ("subject", "subject_name", "class"),
}
TABLE_FIELDS = tuple(DEFAULT_COLUMNS)


@dataclass
class _TableBase(Source):
    """Shared by the table readers: the table files, a media root and rows per unit.

    Attributes:
        inputs: table files (CSV / TSV / JSON / JSONL / Parquet) or folders of them.
        media_root: folder relative media paths are resolved against (default: each table's folder).
        rows_per_unit: rows per work unit (resume granularity and worker job size).
    """

    inputs: list[str] = field(default_factory=list)
    media_root: Optional[str] = None
    rows_per_unit: int = 1000

    def units(self) -> list[Unit]:
        files = _expand(self.inputs, (".csv", ".tsv", ".json", ".jsonl", ".parquet"))
        units = []
        for name, f in zip(_unit_names(files), files):
            root = str(Path(self.media_root).resolve()) if self.media_root else str(Path(f).parent)
            rows = [(i, row, root) for i, row in enumerate(read_table(f))]
            units += _chunks(rows, self.rows_per_unit, name)
        return units

    def read(self, unit: Unit, ctx: Context) -> Iterator[Union[Sample, Skip]]:
        for i, row, root in unit.payload:
            if not isinstance(row, dict):
                yield Skip(f"{unit.name}#{i}", "bad_row", f"row {i} is not an object: {str(row)[:80]}")
                continue
            yield self.row_sample(i, row, root, unit)

    def row_sample(self, i: int, row: dict, root: str, unit: Unit) -> Union[Sample, Skip]:
        raise NotImplementedError


@dataclass
class TableSource(_TableBase):
    """Metadata tables with a local media folder: one captioned sample per row.

    Attributes:
        columns: field -> column name, for fields ``id``, ``caption``, ``image``, ``audio``, ``video``,
            ``license``, ``subject``; a field not given uses the first present of :data:`DEFAULT_COLUMNS`.
            Media columns hold paths (absolute or relative to ``media_root``). Other columns go to ``meta.orig``.
    """

    columns: dict[str, str] = field(default_factory=dict)
    name = "table"

    def units(self) -> list[Unit]:
        bad = sorted(set(self.columns) - set(TABLE_FIELDS))
        if bad:
            raise BuildError(f"--column names unknown fields {bad}; allowed: {', '.join(TABLE_FIELDS)}")
        return super().units()

    def _col(self, field_name: str, row: dict) -> Optional[str]:
        if field_name in self.columns:
            return self.columns[field_name]
        return next((c for c in DEFAULT_COLUMNS[field_name] if c in row), None)

    def row_sample(self, i: int, row: dict, root: str, unit: Unit) -> Union[Sample, Skip]:
        id_col = self._col("id", row)
        sid = _str_or_none(row.get(id_col)) if id_col else None
        sid = sid or f"{unit.name.rsplit('-', 1)[0]}#{i}"
        for f_name in ("caption", "image", "audio", "video"):
            c = self.columns.get(f_name)
            if c is not None and c not in row:
                return Skip(sid, "bad_row", f"column {c!r} (for {f_name}) is not in the row; columns: {sorted(row)}")
        media = {}
        for kind in ("image", "audio", "video"):
            c = self._col(kind, row)
            p = _media_path(row.get(c), root) if c else None
            if p:
                media[kind] = p
        used = {self._col(f, row) for f in TABLE_FIELDS}
        lic_col, subj_col, cap_col = self._col("license", row), self._col("subject", row), self._col("caption", row)
        return Sample(sid, media, caption=_str_or_none(row.get(cap_col)) if cap_col else None,
                      license=_str_or_none(row.get(lic_col)) if lic_col else None,
                      subject=_str_or_none(row.get(subj_col)) if subj_col else None,
                      extra={k: v for k, v in row.items() if k not in used and _plain(v)})


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


@dataclass
class AudioCapsSource(_TableBase):
    """The AudioCaps CSVs (``audiocap_id,youtube_id,start_time,caption``) with a folder of downloaded clips.

    Attributes:
        pattern: the clip file name, formatted with the row's columns and ``start`` = int(float(start_time)),
            e.g. ``{youtube_id}_{start}.wav`` (default) or ``{audiocap_id}.flac``.

    The licence comes from ``--license`` (the clips are YouTube content under their uploaders' terms).
    The val/test CSVs have several captions per clip: build them with ``--filter dedup=false``, or media
    dedup keeps only the first caption of each clip.
    """

    pattern: str = "{youtube_id}_{start}.wav"
    name = "audiocaps"

    def row_sample(self, i: int, row: dict, root: str, unit: Unit) -> Union[Sample, Skip]:
        sid = _str_or_none(row.get("audiocap_id")) or f"{unit.name.rsplit('-', 1)[0]}#{i}"
        missing = [c for c in ("youtube_id", "start_time", "caption") if c not in row]
        if missing:
            return Skip(sid, "bad_row", f"AudioCaps row lacks columns {missing}; expected "
                                        "audiocap_id,youtube_id,start_time,caption")
        try:
            start = int(float(row["start_time"]))
            fname = self.pattern.format(**row, start=start)
        except (ValueError, KeyError) as e:
            return Skip(sid, "bad_row", f"cannot name the clip with pattern {self.pattern!r}: {e!r}")
        extra = {"youtube_id": row["youtube_id"], "start_time": start}
        return Sample(sid, {"audio": os.path.join(root, fname)}, caption=_str_or_none(row["caption"]), extra=extra)


# ----------------------------------------------------------------------------- edits
@dataclass
class InstructPix2PixSource(Source):
    """The InstructPix2Pix layout: folders (found recursively, sorted) holding ``prompt.json``
    (``{"input": caption, "edit": instruction, "output": caption}``) and ``{seed}_0.jpg`` (input) /
    ``{seed}_1.jpg`` (output) pairs; ``.png`` / ``.webp`` are accepted too. One sample per seed; the
    folder is the edit group (all its pairs share one edit: in-context exemplars draw from it).

    Attributes:
        inputs: dataset root folders.
        folders_per_unit: prompt folders per work unit.
    """

    inputs: list[str] = field(default_factory=list)
    folders_per_unit: int = 256
    name = "instructpix2pix"

    def units(self) -> list[Unit]:
        folders: list[str] = []
        for root in self.inputs:
            if not Path(root).is_dir():
                raise BuildError(f"InstructPix2Pix input {root} is not a folder")
            for d, dirs, files in os.walk(root):
                dirs.sort()
                if "prompt.json" in files:
                    folders.append(str(Path(d).resolve()))
        if not folders:
            raise BuildError(f"no prompt.json under {self.inputs}; expected folders with prompt.json and "
                             "{seed}_0.jpg / {seed}_1.jpg")
        return _chunks(sorted(folders), self.folders_per_unit, "ip2p")

    def read(self, unit: Unit, ctx: Context) -> Iterator[Union[Sample, Skip]]:
        for folder in unit.payload:
            group = os.path.basename(folder)
            try:
                prompt = json.loads(Path(folder, "prompt.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                yield Skip(group, "bad_row", f"{folder}/prompt.json: {e}")
                continue
            if not isinstance(prompt, dict) or not isinstance(prompt.get("edit"), str):
                yield Skip(group, "bad_row", f"{folder}/prompt.json has no 'edit' string")
                continue
            inputs: dict[str, str] = {}
            outputs: dict[str, str] = {}
            for name in sorted(os.listdir(folder)):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in (".jpg", ".jpeg", ".png", ".webp") or "_" not in stem:
                    continue
                seed, side = stem.rsplit("_", 1)
                if side == "0":
                    inputs[seed] = os.path.join(folder, name)
                elif side == "1":
                    outputs[seed] = os.path.join(folder, name)
            seeds = sorted(set(inputs) | set(outputs))
            if not seeds:
                yield Skip(group, "bad_row", f"{folder}: no {{seed}}_0 / {{seed}}_1 image pairs")
            for seed in seeds:
                sid = f"{group}/{seed}"
                if seed not in inputs or seed not in outputs:
                    yield Skip(sid, "missing_file", f"{folder}: {seed}_0 or {seed}_1 is missing")
                    continue
                edit = {"instruction": prompt["edit"], "type": "instruct", "group": group,
                        "input_caption": _str_or_none(prompt.get("input")),
                        "output_caption": _str_or_none(prompt.get("output"))}
                yield Sample(sid, {"input": inputs[seed], "output": outputs[seed]}, modality="image", edit=edit)


AUDIT_COLUMNS = ("id", "input_audio", "edit_instruction", "output_audio", "edit_type", "input_caption",
                 "output_caption", "license")
EDIT_TYPES = ("add", "drop", "replace", "inpaint", "super_resolution", "other")
_TYPE_WORDS = {"add": "add", "drop": "drop", "remove": "drop", "delete": "drop", "replace": "replace",
               "change": "replace", "inpaint": "inpaint", "fill": "inpaint", "upsample": "super_resolution",
               "enhance": "super_resolution", "increase": "super_resolution"}


def edit_type_of(instruction: str) -> str:
    """AUDIT's edit types from the instruction's first word (``Add …`` -> add, ``Drop/Remove …`` -> drop …)."""
    first = instruction.strip().split(" ", 1)[0].lower().strip(":,.") if instruction.strip() else ""
    return _TYPE_WORDS.get(first, "other")


@dataclass
class AuditSource(_TableBase):
    """AUDIT-style audio edits: a table of ``input_audio, edit_instruction, output_audio`` rows (optional
    ``edit_type``, ``input_caption``, ``output_caption``, ``id``, ``license``), paths relative to ``media_root``.

    The output audio needs a caption (its head target is computed from it): the ``output_caption`` column,
    else the instruction's object for ``add`` (``Add a dog barking`` -> ``a dog barking``, appended to the
    input caption when there is one), else the instruction itself; ``meta.pair.output_caption_derived`` says so
    (composed "describe the result" turns never use a derived caption). Other columns go to ``meta.orig``.
    ``edit_type`` (one of :data:`EDIT_TYPES`) is inferred from the instruction's first word when the column is
    missing. Edits are grouped for in-context exemplars by the normalised instruction.
    """

    name = "audit"

    def row_sample(self, i: int, row: dict, root: str, unit: Unit) -> Union[Sample, Skip]:
        sid = _str_or_none(row.get("id")) or f"{unit.name.rsplit('-', 1)[0]}#{i}"
        missing = [c for c in ("input_audio", "edit_instruction", "output_audio") if c not in row]
        if missing:
            return Skip(sid, "bad_row", f"AUDIT row lacks columns {missing}; expected input_audio, edit_instruction, "
                                        "output_audio (optional: edit_type, input_caption, output_caption, id)")
        src, dst = _media_path(row["input_audio"], root), _media_path(row["output_audio"], root)
        if not src or not dst:
            return Skip(sid, "bad_row", "empty input_audio or output_audio")
        instr = _str_or_none(row["edit_instruction"]) or ""
        etype = _str_or_none(row.get("edit_type")) or edit_type_of(instr)
        etype = etype.lower().replace("-", "_").replace(" ", "_")
        in_cap, out_cap = _str_or_none(row.get("input_caption")), _str_or_none(row.get("output_caption"))
        derived = not out_cap and bool(instr)
        if derived:
            obj = instr.split(" ", 1)[1].strip().rstrip(".") if etype == "add" and " " in instr.strip() else None
            out_cap = (f"{in_cap.rstrip('.')}, and {obj}" if in_cap else obj) if obj else instr
        edit = {"instruction": instr, "type": etype, "group": " ".join(instr.lower().split()),
                "input_caption": in_cap, "output_caption": out_cap, "output_caption_derived": derived}
        extra = {k: v for k, v in row.items() if k not in AUDIT_COLUMNS and _plain(v)}
        return Sample(sid, {"input": src, "output": dst}, modality="audio", edit=edit,
                      license=_str_or_none(row.get("license")), extra=extra)


SOURCES: dict[str, type[Source]] = {
    "webdataset": WebDatasetSource,
    "table": TableSource,
    "audiocaps": AudioCapsSource,
    "instructpix2pix": InstructPix2PixSource,
    "audit": AuditSource,
}
