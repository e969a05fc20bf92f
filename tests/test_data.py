"""Manifest schema, validator, dataset and bad-record accounting (codi2.data)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from codi2.config import MediaLimits
from codi2.data import (BadRecordCounter, ManifestDataset, RecordError, TooManyBadRecords, parse_record,
                        read_manifest, validate_manifest)
from tests.helpers import build_manifest, record, text_msg


# Good records by phase, and the broken ones with the error kind the validator must report.
GOOD_PHASES = {"t-plain": "text", "t-caption": "text", "t-system": "text", "i-gen": "image",
               "a-gen": "audio", "v-gen": "video", "m-joint": "multi"}
BROKEN_PARSE = {"line 9": "json", "b-roles": "roles", "b-caption": "caption", "t-plain#2": "duplicate_id"}
BROKEN_MEDIA = {"b-missing": "missing_file", "b-corrupt": "media"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return build_manifest(tmp_path_factory.mktemp("manifest"))


# ----------------------------------------------------------------------------- parsing
def test_parse_record_resolves_paths_and_phase(tmp_path):
    raw = record("x", {"role": "user", "content": [{"type": "image", "path": "a/b.png"}]},
               {"role": "assistant", "content": [{"type": "video", "path": "c.mp4", "caption": "moving"}]},
               license="MIT")
    rec = parse_record(raw, tmp_path, line=3)
    assert rec.phase == "video" and rec.line == 3 and rec.meta == {"license": "MIT"}
    assert rec.messages[0].content[0].path == str(tmp_path / "a/b.png")
    assert [p.type for p in rec.media_parts(output=True)] == ["video"]


@pytest.mark.parametrize("raw, kind, words", [
    ({"schema": 2, "id": "x", "source": "s", "messages": []}, "schema", "schema 2"),
    ({"schema": 1, "id": "x", "source": "s", "messages": [], "extra": 1}, "schema", "unknown keys ['extra']"),
    (record("x", text_msg("assistant", "a"), text_msg("user", "b")), "roles", "expected 'user'"),
    (record("x", text_msg("user", "a")), "roles", "end with an assistant"),
    (record("x", text_msg("user", "a"), text_msg("assistant", "b"), text_msg("system", "c")), "roles", "only the first"),
    (record("x", text_msg("user", "a"), {"role": "assistant", "content": [{"type": "video", "path": "v.mp4"}]}),
     "caption", "no 'caption'"),
    (record("x", text_msg("user", "a"), {"role": "bot", "content": "b"}), "schema", "role 'bot'"),
    (record("x", text_msg("user", "a"), {"role": "assistant", "content": []}), "schema", "has no content"),
    ({"schema": True, "id": "x", "source": "s", "messages": []}, "schema", "schema True"),
])
def test_parse_record_errors(tmp_path, raw, kind, words):
    with pytest.raises(RecordError) as e:
        parse_record(raw, tmp_path, where="m.jsonl:7", line=7)
    assert e.value.kind == kind and e.value.line == 7 and e.value.id == "x"
    assert words in str(e.value) and "m.jsonl:7" in str(e.value) and "record x" in str(e.value)


def test_read_manifest_reports_json_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps(record("a", text_msg("user", "a"), text_msg("assistant", "b"))) + "\n\n{oops\n")
    it = read_manifest(p)
    assert next(it)[0] == 1
    with pytest.raises(RecordError, match="line 3.*not valid JSON"):
        next(it)


# ----------------------------------------------------------------------------- validation
def test_validate_counts(manifest):
    r = validate_manifest(manifest, MediaLimits())
    assert r.lines == 13 and r.records == 7
    assert r.by_phase == {"text": 3, "image": 1, "audio": 1, "video": 1, "multi": 1}
    want = {}
    for k in list(BROKEN_PARSE.values()) + list(BROKEN_MEDIA.values()):
        want[k] = want.get(k, 0) + 1
    assert r.errors_by_kind == want and not r.ok
    assert [e["line"] for e in r.examples] == sorted(e["line"] for e in r.examples)
    ids = {e["id"]: e["kind"] for e in r.examples}
    assert ids["b-missing"] == "missing_file" and ids["b-corrupt"] == "media" and ids["line 9"] == "json"
    assert r.media_checked == 7  # distinct files: in, out, out2, wav, mp4, nope, corrupt


def test_validate_parallel_decode_and_limits(manifest):
    r = validate_manifest(manifest, MediaLimits(), workers=3, decode=True)
    assert r.records == 7
    r = validate_manifest(manifest, MediaLimits(max_audio_seconds=0.25))
    assert r.records == 5 and r.errors_by_kind["media"] == 3  # a-gen, m-joint + the corrupt png
    assert "max_audio_seconds" in " ".join(e["reason"] for e in r.examples)
    r = validate_manifest(manifest, check_media=False)
    assert r.records == 9 and "media" not in r.errors_by_kind


def test_validate_data_cli(manifest, tmp_path, capsys):
    from codi2.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd")
    if "validate-data" not in sub.choices:  # not yet wired into cli._PLUGINS
        from codi2.data import register

        register(sub)

    def run(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    assert run(["validate-data", str(manifest), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 7 and out["errors"] == 6 and out["ok"] is False
    assert run(["validate-data", str(manifest)]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "b-corrupt" in text and "by phase" in text
    good = build_manifest(tmp_path, broken=False)
    assert run(["validate-data", str(good), "--decode", "--limits", "max_video_seconds=30"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    assert run(["validate-data", str(good), "--limits", "max_audio_seconds=0.1"]) == 1
    with pytest.raises(ValueError, match="no_such_limit"):
        run(["validate-data", str(good), "--limits", "no_such_limit=1"])


# ----------------------------------------------------------------------------- dataset
def test_dataset_parses_without_decoding(manifest, monkeypatch):
    import codi2.media

    def boom(*a, **k):
        raise AssertionError("load_media called while building the dataset")

    monkeypatch.setattr(codi2.media, "load_media", boom)
    ds = ManifestDataset(manifest)
    assert len(ds) == 9  # 7 good + missing file + corrupt png (found only when loaded)
    assert sorted(i for i, _ in ds.bad) == ["b-caption", "b-roles", "line 9", "t-plain"]
    by = ds.indices_by_phase()
    assert {k: len(v) for k, v in by.items()} == {"text": 5, "image": 1, "audio": 1, "video": 1, "multi": 1}
    assert all(ds.phase_of[i] == ph for ph, idx in by.items() for i in idx)
    only = ManifestDataset(manifest, phases=["audio", "multi"])
    assert len(only) == 2 and set(only.phase_of) == {"audio", "multi"}
    with pytest.raises(ValueError, match="phases"):
        ManifestDataset(manifest, phases=["pictures"])


def test_dataset_getitem_loads_media(manifest):
    from PIL import Image

    from codi2.conversation import part_key, Part
    from codi2.media import Audio

    ds = ManifestDataset(manifest)
    i = next(i for i, r in enumerate(ds.records) if r.id == "a-gen")
    rec = ds[i]
    inp, out = rec.media_parts(output=False)[0], rec.media_parts(output=True)[0]
    assert isinstance(inp.media, Image.Image) and isinstance(out.media, Audio)
    assert inp.key == part_key(Part(type="image", path=inp.path))  # the file's hash, not the pixels'
    assert all(p.media is None for p in ds.records[i].media_parts())  # the dataset keeps no media
    assert ManifestDataset(manifest, load_outputs=False)[i].media_parts(output=True)[0].media is None
    for rid, kind in BROKEN_MEDIA.items():
        j = next(j for j, r in enumerate(ds.records) if r.id == rid)
        with pytest.raises(RecordError) as e:
            ds[j]
        assert e.value.kind == kind and e.value.id == rid and e.value.line > 0


def test_dataset_respects_limits(manifest):
    ds = ManifestDataset(manifest, limits=MediaLimits(max_image_pixels=100))
    i = next(i for i, r in enumerate(ds.records) if r.id == "i-gen")
    with pytest.raises(RecordError, match="max_image_pixels"):
        ds[i]


# ----------------------------------------------------------------------------- bad records
def test_bad_record_counter(caplog):
    c = BadRecordCounter(0.2, min_seen=10)
    with caplog.at_level(logging.WARNING, logger="codi2.data"):
        for i in range(3):
            c.record(f"r{i}", "file not found")
    assert "r0" in caplog.text and "file not found" in caplog.text
    c.check()  # 3 seen < min_seen: no verdict yet
    c.seen(6)
    with pytest.raises(TooManyBadRecords) as e:
        c.seen()
        c.check()  # 3 / 10 = 30 % > 20 %
    msg = str(e.value)
    assert "3 of 10" in msg and "30.0%" in msg and "max_bad_fraction = 0.2" in msg and "r0: file not found" in msg
    c.seen(5)  # 3 / 15 = 20 %: at the limit is fine
    c.check()
    state = c.state_dict()
    c2 = BadRecordCounter(0.2, min_seen=10)
    c2.load_state_dict(json.loads(json.dumps(state)))
    assert (c2.n_bad, c2.n_seen, c2.examples) == (3, 15, c.examples)
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadRecordCounter(1.5)
