"""data_builders: every reader on tiny generated corpora, validation, determinism, resume, workers, dedup and
filters, composed conversations, and a few training steps of the tiny model on a built manifest."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from codi2.data import validate_manifest
from data_builders import (
    AudioCapsSource,
    AuditSource,
    BuildError,
    BuildOptions,
    InstructPix2PixSource,
    TableSource,
    WebDatasetSource,
    build,
    compose,
    load_mixture,
    parse_filters,
)
from data_builders import core
from data_builders import fixtures as F

REPO = Path(__file__).resolve().parent.parent


def validate_cli(manifest: Path) -> dict:
    """Runs the ``codi2 validate-data MANIFEST --json`` handler; returns its report."""
    import io
    from contextlib import redirect_stdout

    from codi2.data import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["validate-data", str(manifest), "--json", "--workers", "1"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = args.func(args)
    report = json.loads(buf.getvalue())
    assert rc == 0, report
    return report


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def opts(out: Path, **kw) -> BuildOptions:
    return BuildOptions(out=out, progress=False, **kw)


# ----------------------------------------------------------------------------- readers
def test_webdataset_build_validates_and_carries_fields(tmp_path):
    F.webdataset_shards(tmp_path / "wds", n_shards=2, per_shard=3, kinds=("image", "audio"))
    s = build(WebDatasetSource(inputs=[str(tmp_path / "wds")]),
              opts(tmp_path / "out", name="cc", mix={"caption": 1, "generate": 1, "joint": 1}))
    # 6 samples + 1 broken; the last sample repeats the first one's media.
    assert s["samples"] == 7 and s["records"] == 5
    assert s["skipped"] == {"duplicate": 1, "undecodable": 1}
    assert s["examples"]["duplicate"][0]["id"] == "shard-00001/00100002"
    report = validate_cli(tmp_path / "out" / "manifest.jsonl")
    assert report["records"] == 5 and report["errors"] == 0
    recs = lines(tmp_path / "out" / "manifest.jsonl")
    assert [r["id"] for r in recs] == [f"cc-{i:08d}" for i in range(5)]
    for r in recs:
        assert r["source"] == "cc" and r["license"] == "CC-BY-4.0"
        assert r["meta"]["orig_id"].startswith("shard-0") and r["meta"]["orig"]["url"].startswith("http://")
        for part in (p for m in r["messages"] for p in m["content"] if p["type"] != "text"):
            assert part["path"].startswith("media/shard-") and (tmp_path / "out" / part["path"]).is_file()
    # extracted files of the dropped samples are gone: 5 records x (png|jpg + wav)
    assert len(list((tmp_path / "out" / "media").rglob("*.*"))) == 10
    assert s["tasks"].get("joint", 0) >= 1


def test_webdataset_video(tmp_path):
    F.webdataset_shards(tmp_path / "wds", n_shards=1, per_shard=2, kinds=("video",), duplicate=False, broken=False)
    s = build(WebDatasetSource(inputs=[str(tmp_path / "wds")]),
              opts(tmp_path / "out", name="webvid", mix={"caption": 0, "generate": 1}))
    assert s["records"] == 2 and s["tasks"] == {"generate": 2}
    report = validate_manifest(tmp_path / "out" / "manifest.jsonl")
    assert report.ok and report.by_phase == {"video": 2}
    rec = lines(tmp_path / "out" / "manifest.jsonl")[0]
    assert rec["messages"][1]["content"][1]["caption"] == F.caption(0)  # video outputs carry their caption


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_table_formats(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    table = F.table_corpus(tmp_path / "t", fmt=fmt, n=4)
    s = build(TableSource(inputs=[str(table)], rows_per_unit=2), opts(tmp_path / "out", name="tab"))
    assert s["records"] == 4 and s["skipped"] == {"missing_file": 1} and s["units"] == 3
    assert validate_cli(tmp_path / "out" / "manifest.jsonl")["records"] == 4
    recs = lines(tmp_path / "out" / "manifest.jsonl")
    assert {r["license"] for r in recs} == {"CC0-1.0"}
    assert [r["meta"]["orig_id"] for r in recs] == [f"row{i:04d}" for i in range(4)]
    paths = [p["path"] for r in recs for m in r["messages"] for p in m["content"] if p["type"] != "text"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)  # originals, not copies
    assert not (tmp_path / "out" / "media").exists()


def test_table_columns_relative_paths_and_copy(tmp_path):
    table = F.table_corpus(tmp_path / "t", fmt="csv", n=3, audio=False)
    s = build(TableSource(inputs=[str(table)], columns={"caption": "caption", "image": "image_path", "id": "key"}),
              opts(tmp_path / "rel", relative_paths=True))
    assert s["records"] == 3
    assert validate_manifest(tmp_path / "rel" / "manifest.jsonl").ok
    assert all(not Path(r["meta"]["pair"]["media"]["image"]).is_absolute()
               for r in lines(tmp_path / "rel" / "manifest.jsonl"))
    build(TableSource(inputs=[str(table)]), opts(tmp_path / "copy", copy_media=True))
    assert len(list((tmp_path / "copy" / "media").rglob("*.png"))) == 3
    assert validate_manifest(tmp_path / "copy" / "manifest.jsonl").ok
    with pytest.raises(BuildError, match="unknown fields"):
        build(TableSource(inputs=[str(table)], columns={"picture": "x"}), opts(tmp_path / "bad"))


def test_audiocaps(tmp_path):
    csv_path, audio = F.audiocaps_corpus(tmp_path / "ac", n=4)
    s = build(AudioCapsSource(inputs=[str(csv_path)], media_root=str(audio)), opts(tmp_path / "out", name="audiocaps"))
    assert s["records"] == 3 and s["skipped"] == {"missing_file": 1}
    report = validate_manifest(tmp_path / "out" / "manifest.jsonl")
    assert report.ok and set(report.by_phase) <= {"text", "audio"}
    rec = lines(tmp_path / "out" / "manifest.jsonl")[0]
    assert rec["meta"]["orig_id"] == "1000" and rec["meta"]["orig"] == {"youtube_id": "yt00000000AB", "start_time": 0}


def test_command_line(tmp_path, capsys):
    from data_builders import main

    csv_path, audio = F.audiocaps_corpus(tmp_path / "ac", n=4)
    args = ["audiocaps", "--input", str(csv_path), "--media-root", str(audio), "--out", str(tmp_path / "out"),
            "--workers", "2", "--license", "CC-BY-4.0", "--filter", "max_seconds=30", "--no-progress"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["records"] == 3 and printed["skipped"] == {"missing_file": 1}
    assert {r["license"] for r in lines(tmp_path / "out" / "manifest.jsonl")} == {"CC-BY-4.0"}
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # the folder holds a build
    assert main(args + ["--resume"]) == 0
    assert main(["audiocaps", "--input", str(csv_path), "--out", str(tmp_path / "o2"), "--filter", "max_byte=1"]) == 2


def test_instructpix2pix_and_audit(tmp_path):
    root = F.instructpix2pix_corpus(tmp_path / "ip2p", n_folders=3, seeds_per_folder=2)
    s = build(InstructPix2PixSource(inputs=[str(root)], folders_per_unit=2), opts(tmp_path / "ip", name="ip2p"))
    assert s["records"] == 6 and s["tasks"] == {"edit": 6} and s["units"] == 2
    report = validate_manifest(tmp_path / "ip" / "manifest.jsonl")
    assert report.ok and report.by_phase == {"image": 6}
    rec = lines(tmp_path / "ip" / "manifest.jsonl")[0]
    assert rec["meta"]["pair"]["instruction"] == "make it blue" and rec["meta"]["pair"]["group"] == "0000000"
    assert rec["messages"][0]["content"][0]["path"].endswith("1000_0.jpg")
    assert rec["messages"][1]["content"][1]["path"].endswith("1000_1.jpg")

    table = F.audit_corpus(tmp_path / "audit", n=4)
    s = build(AuditSource(inputs=[str(table)]), opts(tmp_path / "au", name="audit"))
    assert s["records"] == 4
    report = validate_manifest(tmp_path / "au" / "manifest.jsonl")
    assert report.ok and report.by_phase == {"audio": 4}
    pairs = [r["meta"]["pair"] for r in lines(tmp_path / "au" / "manifest.jsonl")]
    assert [p["type"] for p in pairs] == ["add", "drop", "add", "drop"]
    assert pairs[0]["output_caption"] == "the sound of a dog barking"  # derived from "Add …"
    assert pairs[1]["sha256"]["input"] == pairs[0]["sha256"]["output"]  # the chain the fixture made


# ----------------------------------------------------------------------------- determinism, resume, workers
def test_same_seed_identical_other_seed_differs(tmp_path):
    F.webdataset_shards(tmp_path / "wds", n_shards=2, per_shard=4)
    src = WebDatasetSource(inputs=[str(tmp_path / "wds")])
    build(src, opts(tmp_path / "a", seed=3))
    build(src, opts(tmp_path / "b", seed=3))
    build(src, opts(tmp_path / "c", seed=4))
    a, b, c = ((tmp_path / d / "manifest.jsonl").read_bytes() for d in "abc")
    assert a == b and a != c
    assert (tmp_path / "a" / "summary.json").read_text().count("\"records\": 7,") == 1


def test_workers_give_identical_output(tmp_path):
    F.webdataset_shards(tmp_path / "wds", n_shards=3, per_shard=3)
    src = WebDatasetSource(inputs=[str(tmp_path / "wds")])
    build(src, opts(tmp_path / "w1", workers=1, shard_size=3))
    build(src, opts(tmp_path / "w2", workers=2, shard_size=3))
    names = sorted(p.name for p in (tmp_path / "w1").glob("manifest-*.jsonl"))
    assert names == ["manifest-00000.jsonl", "manifest-00001.jsonl", "manifest-00002.jsonl"]
    for n in names:
        assert (tmp_path / "w1" / n).read_bytes() == (tmp_path / "w2" / n).read_bytes()
    assert all(validate_manifest(tmp_path / "w2" / n).ok for n in names)


def test_interrupted_build_resumes_to_identical_output(tmp_path, monkeypatch):
    F.webdataset_shards(tmp_path / "wds", n_shards=3, per_shard=3)
    src = WebDatasetSource(inputs=[str(tmp_path / "wds")])
    build(src, opts(tmp_path / "full", shard_size=2))

    real_write, calls = core.ShardWriter.write, {"n": 0}

    def flaky_write(self, record):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-way through the second unit, after 4 records were written
            raise KeyboardInterrupt("simulated interruption")
        real_write(self, record)

    monkeypatch.setattr(core.ShardWriter, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        build(src, opts(tmp_path / "part", shard_size=2))
    state = json.loads((tmp_path / "part" / core.STATE_FILE).read_text())
    assert state["units_done"] == 1 and not state["complete"]
    with pytest.raises(BuildError, match="--resume"):
        build(src, opts(tmp_path / "part", shard_size=2))
    with pytest.raises(BuildError, match="other inputs or options"):
        build(src, opts(tmp_path / "part", shard_size=3, resume=True))
    monkeypatch.setattr(core.ShardWriter, "write", real_write)
    s = build(src, opts(tmp_path / "part", shard_size=2, resume=True))
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s["manifests"] == full["manifests"] and s["records"] == full["records"] == 8
    for n in full["manifests"]:
        assert (tmp_path / "part" / n).read_bytes() == (tmp_path / "full" / n).read_bytes()
    assert {k: v for k, v in s.items() if k != "examples"} == {k: v for k, v in full.items() if k != "examples"}
    media = lambda d: sorted(str(p.relative_to(d)) for p in (d / "media").rglob("*.*"))  # noqa: E731
    assert media(tmp_path / "part") == media(tmp_path / "full")
    # resuming a complete build is a no-op
    assert build(src, opts(tmp_path / "part", shard_size=2, resume=True))["records"] == 8

    # interrupted inside the first unit, before any commit, with 2 workers: resume still works
    def early_write(self, record):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(core.ShardWriter, "write", early_write)
    with pytest.raises(KeyboardInterrupt):
        build(src, opts(tmp_path / "early", shard_size=2, workers=2))
    monkeypatch.setattr(core.ShardWriter, "write", real_write)
    build(src, opts(tmp_path / "early", shard_size=2, workers=2, resume=True))
    for n in full["manifests"]:
        assert (tmp_path / "early" / n).read_bytes() == (tmp_path / "full" / n).read_bytes()


# ----------------------------------------------------------------------------- dedup and filters
def test_dedup_and_filters_are_counted(tmp_path):
    root = tmp_path / "t"
    table = F.table_corpus(root, fmt="jsonl", n=5, audio=True)
    rows = lines(table)
    rows += [dict(rows[1], key="dupmedia"), dict(rows[2], key="dupcap", image_path="media/0004.png"),
             dict(rows[3], key="short", caption="ab", image_path="media/0003.png"),
             dict(rows[0], key="nocap", caption="")]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = TableSource(inputs=[str(table)])
    s = build(src, opts(tmp_path / "a", filters=parse_filters(["min_caption_chars=5", "dedup_captions=true"])))
    assert s["skipped"] == {"missing_file": 1, "duplicate": 1, "duplicate_caption": 1, "caption_too_short": 1,
                            "no_caption": 1}
    assert s["records"] == 5 and s["samples"] == 10
    # every audio file is 0.25 s: min_seconds drops them; max_bytes drops everything
    s = build(src, opts(tmp_path / "b", filters=parse_filters(["min_seconds=1.0"])))
    assert s["skipped"]["too_short"] == 8 and s["records"] == 0
    s = build(src, opts(tmp_path / "c", filters=parse_filters(["max_bytes=100", "dedup=false"])))
    assert s["skipped"]["too_large"] == 8
    s = build(src, opts(tmp_path / "d", filters=parse_filters(["max_seconds=0.1"])))
    assert s["skipped"]["too_long"] == 8
    with pytest.raises(ValueError, match="max_byte"):
        parse_filters(["max_byte=1"])


# ----------------------------------------------------------------------------- composed conversations
def _pair_manifests(tmp_path) -> list[Path]:
    ip = F.instructpix2pix_corpus(tmp_path / "ip2p", n_folders=2, seeds_per_folder=3)
    build(InstructPix2PixSource(inputs=[str(ip)]), opts(tmp_path / "ip", name="ip2p", license="ip2p-licence"))
    au = F.audit_corpus(tmp_path / "audit", n=4)
    build(AuditSource(inputs=[str(au)]), opts(tmp_path / "au", name="audit"))
    tab = F.table_corpus(tmp_path / "tab", fmt="csv", n=6, audio=True, subjects=2)
    build(TableSource(inputs=[str(tab)]), opts(tmp_path / "tb", name="tab"))
    return [tmp_path / d / "manifest.jsonl" for d in ("ip", "au", "tb")]


def test_compose_every_task(tmp_path):
    manifests = _pair_manifests(tmp_path)
    mix = load_mixture(None, ["n=60", "seed=1", "icl_shots=[1,2]", "subject_refs=[1,2]"])
    s = compose(manifests, tmp_path / "mix", mix, progress=False)
    assert set(s["tasks"]) == {"caption", "generate", "edit", "icl_edit", "subject", "multi_round", "joint"}
    assert s["unavailable"] == []
    report = validate_cli(tmp_path / "mix" / "manifest.jsonl")
    assert report["records"] == 60
    recs = lines(tmp_path / "mix" / "manifest.jsonl")
    for r in recs:
        assert r["license"] and r["source"] and r["meta"]["from"]
        assert len(r["meta"]["orig_ids"]) == len(r["meta"]["from"])
        if r["meta"]["task"] == "icl_edit":
            text = " ".join(p.get("text", "") for m in r["messages"] for p in m["content"]).lower()
            assert "make it blue" not in text and "add snow" not in text and "dog barking" not in text
            user = r["messages"][0]["content"]
            assert sum(p["type"] != "text" for p in user) >= 3  # >= 1 exemplar pair + the query
        if r["meta"]["task"] == "subject":
            assert sum(p["type"] == "image" for p in r["messages"][0]["content"]) >= 1
        if r["meta"]["task"] == "multi_round":
            assert len(r["messages"]) >= 4
    assert any(r["meta"]["task"] == "multi_round" and len(r["messages"]) == 4
               and r["messages"][2]["content"][0]["text"].startswith("Drop") for r in recs)  # the audio chain
    # deterministic by seed
    compose(manifests, tmp_path / "mix2", mix, progress=False)
    assert (tmp_path / "mix" / "manifest.jsonl").read_bytes() == (tmp_path / "mix2" / "manifest.jsonl").read_bytes()


def test_compose_mixture_yaml_and_unavailable(tmp_path):
    manifests = _pair_manifests(tmp_path)[:1]  # image edits only
    y = tmp_path / "mix.yaml"
    y.write_text("n: 10\nweights: {icl_edit: 1, subject: 1}\nname: ip2p-icl\nshard_size: 4\n")
    s = compose(manifests, tmp_path / "m", load_mixture(y), progress=False)
    assert s["tasks"] == {"icl_edit": 10} and s["unavailable"] == ["subject"]
    assert s["manifests"] == ["manifest-00000.jsonl", "manifest-00001.jsonl", "manifest-00002.jsonl"]
    with pytest.raises(ValueError, match="unknown tasks"):
        load_mixture(None, ["weights.dance=1"])
    with pytest.raises(BuildError, match="has data"):
        compose(manifests, tmp_path / "m2", load_mixture(None, ["weights={joint: 1}"]), progress=False)


# ----------------------------------------------------------------------------- training on a built manifest
def test_tiny_model_trains_on_built_manifests(tmp_path, tiny_pipeline_dir):
    """The trainer (``python -m train``'s Python API) runs a few steps of a fresh tiny model on manifests built
    from a tar shard (image + audio) and InstructPix2Pix folders, composed into a mixture (captioning, generation,
    joint outputs, edits, in-context, multi-round), with every phase present and no bad record allowed."""
    from train.loop import main

    F.webdataset_shards(tmp_path / "wds", n_shards=1, per_shard=4, kinds=("image", "audio"), broken=False)
    build(WebDatasetSource(inputs=[str(tmp_path / "wds")]),
          opts(tmp_path / "w", mix={"caption": 1, "generate": 1, "joint": 1}))
    ip = F.instructpix2pix_corpus(tmp_path / "ip2p", n_folders=2, seeds_per_folder=2)
    build(InstructPix2PixSource(inputs=[str(ip)]), opts(tmp_path / "ip"))
    compose([tmp_path / "w" / "manifest.jsonl", tmp_path / "ip" / "manifest.jsonl"], tmp_path / "mix",
            load_mixture(None, ["n=16"]), progress=False)
    manifests = [tmp_path / "mix" / "manifest.jsonl"]
    phases = set()
    for m in manifests:
        report = validate_manifest(m)
        assert report.ok, report.to_text()
        phases |= set(report.by_phase)
    assert {"text", "image", "audio", "multi"} <= phases

    run = tmp_path / "run"
    rc = main([str(REPO / "configs" / "train" / "tiny-smoke.yaml"), f"output_dir={run}", "model.config=null",
               f"model.pipeline={tiny_pipeline_dir}",
               f"data.manifests=[{manifests[0]}]", "max_steps=4", "batch_size=1", "save_every=0",
               "tensorboard=false", "data.bad_min_seen=1", "data.max_bad_fraction=0"])
    assert rc == 0 and (run / "final" / "config.yaml").is_file()
    steps = [json.loads(x) for f in sorted((run / "logs").glob("*.jsonl")) for x in f.read_text().splitlines()]
    trained = [r for r in steps if "loss/total" in r and r.get("skipped") is False]
    assert len(trained) >= 4 and all(r["loss/total"] == r["loss/total"] for r in trained)  # finite, not NaN
    assert len({r["phase"] for r in trained}) >= 3


def test_codi2_7b_recipes_load():
    """The full-scale training configs load as the trainer's TrainConfig and pass its checks; the mixture loads."""
    from train.loop import load_train_config

    stages = {}
    for name in ("codi2-7b-stage1-alignment", "codi2-7b-stage2-instruction"):
        cfg = load_train_config(str(REPO / "configs" / "train" / f"{name}.yaml"))
        cfg.check()
        assert cfg.bf16 and cfg.gradient_checkpointing and cfg.deepspeed == "configs/deepspeed/zero2.json"
        assert cfg.batch_size * cfg.grad_accum * 8 == 128  # the global batch on 8 GPUs
        assert (REPO / cfg.deepspeed).is_file()
        stages[cfg.stage] = cfg
    assert set(stages) == {"projector_alignment", "instruction_tuning"}
    assert stages["projector_alignment"].phases.weights["multi"] == 0
    mix = load_mixture(REPO / "data_builders" / "recipes" / "codi2-7b-stage2-mixture.yaml")
    assert mix.weights["icl_edit"] > 0 and mix.weights["multi_round"] > 0 and mix.shard_size == 0


# ----------------------------------------------------------------------------- bad input is skipped and counted
def test_bad_input_is_skipped_and_counted_with_its_reason(tmp_path):
    import io
    import tarfile

    # a shard with a truncated image (its header is fine: only decoding finds it) and a truncated wav
    F.webdataset_shards(tmp_path / "wds", n_shards=1, per_shard=2, kinds=("image", "audio"), duplicate=False,
                        broken=False)
    shard = tmp_path / "wds" / "shard-00000.tar"
    with tarfile.open(shard, "a") as tar:
        for name, data in (("bad1.png", F.image_bytes(7, 64)[:300]), ("bad1.txt", b"a truncated picture"),
                           ("bad2.png", F.image_bytes(8)), ("bad2.wav", F.audio_bytes(8)[:100]),
                           ("bad2.txt", b"a truncated sound")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s = build(WebDatasetSource(inputs=[str(tmp_path / "wds")]), opts(tmp_path / "w"))
    assert s["records"] == 2 and s["skipped"] == {"undecodable": 2}
    details = [e["detail"] for e in s["examples"]["undecodable"]]
    assert "truncated png" in details[0] and "truncated WAV" in details[1]
    assert not list((tmp_path / "w" / "media").rglob("bad*"))  # what they extracted is gone
    # headers only (decode=false): the truncated files pass, as they did before
    s = build(WebDatasetSource(inputs=[str(tmp_path / "wds")]), opts(tmp_path / "w2", filters=parse_filters(["decode=false"])))
    assert s["records"] == 4

    # AUDIT rows naming a missing input wav and a missing output wav; a row with no output column value
    table = F.audit_corpus(tmp_path / "audit", n=4, chain=False)
    text = table.read_text().splitlines()
    text[1] = text[1].replace("wav/in0.wav", "wav/nowhere.wav")
    text[2] = text[2].replace("wav/out1.wav", "wav/gone.wav")
    text[3] = text[3].replace("wav/out2.wav", "")
    table.write_text("\n".join(text) + "\n")
    s = build(AuditSource(inputs=[str(table)]), opts(tmp_path / "au"))
    assert s["records"] == 1 and s["skipped"] == {"missing_file": 2, "bad_row": 1}
    assert [e["id"] for e in s["examples"]["missing_file"]] == ["edit0", "edit1"]
    assert "nowhere.wav" in s["examples"]["missing_file"][0]["detail"]

    # an InstructPix2Pix pair whose output is missing; a corrupt input
    ip = F.instructpix2pix_corpus(tmp_path / "ip2p", n_folders=2, seeds_per_folder=2)
    (ip / "0000000" / "1000_1.jpg").unlink()
    (ip / "0000001" / "1017_0.jpg").write_bytes(b"not a jpeg")
    s = build(InstructPix2PixSource(inputs=[str(ip)]), opts(tmp_path / "ip"))
    assert s["records"] == 2 and s["skipped"] == {"missing_file": 1, "undecodable": 1}
    assert s["examples"]["missing_file"][0]["id"] == "0000000/1000"

    # a table row naming a missing wav
    tab = F.table_corpus(tmp_path / "tab", fmt="csv", n=3, audio=True)
    (tmp_path / "tab" / "media" / "0001.wav").unlink()
    s = build(TableSource(inputs=[str(tab)]), opts(tmp_path / "tb"))
    assert s["records"] == 2 and s["skipped"] == {"missing_file": 2}  # row 1's wav, and the fixture's missing png

    # composing from a pair manifest whose media went missing after the build: skipped and counted
    (tmp_path / "ip2p" / "0000001" / "1000_1.jpg").unlink()
    s = compose([tmp_path / "ip" / "manifest.jsonl"], tmp_path / "mix", load_mixture(None, ["n=4"]), progress=False)
    assert s["pairs"] == 1 and s["skipped"] == {"missing_file": 1} and s["records"] == 4
    assert "1000_1.jpg" in s["examples"]["missing_file"][0]["detail"]


def test_interrupted_split_build_resumes_to_identical_output(tmp_path, monkeypatch):
    ip = F.instructpix2pix_corpus(tmp_path / "ip2p", n_folders=6, seeds_per_folder=2)
    src = InstructPix2PixSource(inputs=[str(ip)], folders_per_unit=2)
    full = build(src, opts(tmp_path / "full", eval_fraction=0.34))
    assert full["splits"]["test"]["records"] == 6 and full["splits"]["train"]["records"] == 6
    real_write, calls = core.ShardWriter.write, {"n": 0}

    def flaky_write(self, record):
        calls["n"] += 1
        if calls["n"] == 7:  # inside the last unit
            raise KeyboardInterrupt("simulated interruption")
        real_write(self, record)

    monkeypatch.setattr(core.ShardWriter, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        build(src, opts(tmp_path / "part", eval_fraction=0.34))
    monkeypatch.setattr(core.ShardWriter, "write", real_write)
    with pytest.raises(BuildError, match="other inputs or options"):
        build(src, opts(tmp_path / "part", eval_fraction=0.5, resume=True))
    s = build(src, opts(tmp_path / "part", eval_fraction=0.34, resume=True))
    assert s["splits"] == full["splits"]
    for f in ("manifest.jsonl", "test.jsonl"):
        assert (tmp_path / "part" / f).read_bytes() == (tmp_path / "full" / f).read_bytes()
    with pytest.raises(BuildError, match="--resume"):  # a test split alone also marks the folder as a build
        (tmp_path / "part" / core.STATE_FILE).unlink()
        (tmp_path / "part" / "manifest.jsonl").unlink()
        build(src, opts(tmp_path / "part", eval_fraction=0.34))
