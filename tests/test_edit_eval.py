"""The editing-record schema end to end: the real builders (InstructPix2Pix, AUDIT, conversations) write held-out
splits from in-process fixtures, and the image-edit / audio-edit suites read them unchanged at 0 and k shots with
the tiny model and tiny metric backbones: the instruction (0 shots) or k exemplar pairs (k shots) reach the
prompt that samples.jsonl records, and every metric is a finite number. Before the shared schema the suites read
``meta.instruction`` while the builders wrote ``meta.pair.instruction``, and these tests fail on that."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from codi2.editing import TEST, TRAIN, edit_info, group_key, instruction_sentence, split_manifests, split_of
from codi2.eval import EvalConfig, run_eval
from data_builders import AuditSource, BuildOptions, InstructPix2PixSource, build, compose, load_mixture
from data_builders import fixtures as F

FAST = dict(force_output=True, max_new_tokens=4, n_boot=50)
IMAGE_METRICS = {"l1", "l2", "clip_i", "dino", "clip_t", "clip_dir_text", "output_rate"}
AUDIO_METRICS = {"lsd", "kl_softmax", "kl_sigmoid", "audio_t", "output_rate"}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Split builds: InstructPix2Pix (6 folders, 3 held out), AUDIT (8 instructions, 4 held out) and a
    conversations mixture of both (edits and in-context edits, pictures and sounds mixed)."""
    d = tmp_path_factory.mktemp("edits")
    ip = F.instructpix2pix_corpus(d / "ip2p", n_folders=6, seeds_per_folder=2)
    build(InstructPix2PixSource(inputs=[str(ip)]), BuildOptions(out=d / "ip", name="ip2p", eval_fraction=0.34,
                                                                progress=False))
    au = F.audit_corpus(d / "audit", n=16, groups=8)
    build(AuditSource(inputs=[str(au)]), BuildOptions(out=d / "au", name="audit", eval_fraction=0.34, progress=False))
    mix = load_mixture(None, ["n=12", "eval_n=8", "seed=2", "icl_shots=[1,1]", "weights={icl_edit: 1, edit: 1}"])
    compose([d / "ip" / "manifest.jsonl", d / "ip" / "test.jsonl", d / "au" / "manifest.jsonl",
             d / "au" / "test.jsonl"], d / "mix", mix, progress=False)
    return d


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_pipeline_dir):
    from codi2.eval.testing import save_tiny_audio_classifier, save_tiny_clip, save_tiny_dino

    d = tmp_path_factory.mktemp("backbones")
    return {"model": str(tiny_pipeline_dir), "clip": str(save_tiny_clip(d / "clip")),
            "dino": str(save_tiny_dino(d / "dino")), "ast": str(save_tiny_audio_classifier(d / "ast"))}


@pytest.fixture(scope="module")
def pipe(ws):
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(ws["model"])


# ----------------------------------------------------------------------------- the splits
def test_split_is_by_group_and_deterministic(built, tmp_path):
    for name, n_groups in (("ip", 6), ("au", 8)):
        out = built / name
        summary = json.loads((out / "summary.json").read_text())
        splits = split_manifests(out)
        assert [p.name for p in splits[TEST]] == ["test.jsonl"] and [p.name for p in splits[TRAIN]] == ["manifest.jsonl"]
        groups = {}
        for sp in (TRAIN, TEST):
            recs = lines(out / ("test.jsonl" if sp == TEST else "manifest.jsonl"))
            assert recs and all(r["meta"]["split"] == sp for r in recs)
            assert summary["splits"][sp]["records"] == len(recs)
            groups[sp] = {r["meta"]["pair"]["group"] for r in recs}
            for r in recs:  # the split is the hash of the group key, the same in every build
                assert split_of(group_key(r["meta"]["pair"], r["meta"]["orig_id"]), 0.34) == sp
        assert not groups[TRAIN] & groups[TEST] and len(groups[TRAIN] | groups[TEST]) == n_groups
    # the same input and fraction give the same files; no fraction gives no test file and no meta.split
    ip = built / "ip2p"
    build(InstructPix2PixSource(inputs=[str(ip)]), BuildOptions(out=tmp_path / "again", name="ip2p",
                                                                eval_fraction=0.34, progress=False))
    for f in ("manifest.jsonl", "test.jsonl"):
        assert (tmp_path / "again" / f).read_bytes() == (built / "ip" / f).read_bytes()
    s = build(InstructPix2PixSource(inputs=[str(ip)]), BuildOptions(out=tmp_path / "none", progress=False))
    assert "splits" not in s and not (tmp_path / "none" / "test.jsonl").exists()
    assert all("split" not in r["meta"] for r in lines(tmp_path / "none" / "manifest.jsonl"))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        build(InstructPix2PixSource(inputs=[str(ip)]), BuildOptions(out=tmp_path / "bad", eval_fraction=1.5,
                                                                    progress=False))


def test_composed_split_keeps_groups_apart_and_carries_the_schema(built):
    summary = json.loads((built / "mix" / "summary.json").read_text())
    assert summary["splits"]["test"]["records"] == 8 and summary["splits"]["train"]["records"] == 12
    test_groups = {(r["meta"]["pair"]["modality"], r["meta"]["pair"]["group"])
                   for f in ("ip", "au") for r in lines(built / f / "test.jsonl")}
    seen = set()
    for f, sp in (("manifest.jsonl", TRAIN), ("test.jsonl", TEST)):
        for r in lines(built / "mix" / f):
            info = edit_info(r["meta"])
            assert r["meta"]["split"] == sp and info is not None and info.instruction and info.schema
            key = (info.modality, info.group)
            assert (key in test_groups) == (sp == TEST)
            seen.add((sp, info.modality, r["meta"]["task"]))
    assert {m for sp, m, _ in seen if sp == TEST} == {"image", "audio"}  # a mixed picture/sound test split
    assert any(t == "icl_edit" for sp, _, t in seen if sp == TEST)


# ----------------------------------------------------------------------------- the suites on builder output
def _check_samples(out: Path, r: dict, metrics: set[str], modality: str, shots: set[int]) -> list[dict]:
    samples = lines(out / "samples.jsonl")
    assert len(samples) == len(r["samples"]) and samples
    for s in samples:
        prompt = s["runs"]["main"]["prompt"]
        media = [m for m, _ in prompt["media"]]
        assert set(media) == {modality}
        assert [p["path"] for p in prompt["parts"] if p["type"] != "text"] == [p for _, p in prompt["media"]]
        assert all(Path(p).is_file() for _, p in prompt["media"])
        assert len(media) == 2 * s["shots"] + 1  # k exemplar pairs, then the query
        want = metrics | ({"clip_dir_image"} if modality == "image" and s["shots"] else set())
        assert want <= set(s["metrics"]), (s["id"], sorted(s["metrics"]))
        assert all(isinstance(v, float) and math.isfinite(v) for v in s["metrics"].values()), s["metrics"]
    assert {s["shots"] for s in samples} == shots
    return samples


def test_image_edit_reads_the_split_build_at_0_and_k_shots(built, ws, pipe, tmp_path):
    test = lines(built / "ip" / "test.jsonl")
    instructions = {r["id"]: r["meta"]["pair"]["instruction"] for r in test}
    cfg = EvalConfig(suite="image-edit", model=ws["model"], data=str(built / "ip"), shots=[0, 2], n=2, seed=1,
                     clip=ws["clip"], dino=ws["dino"], **FAST)
    r = run_eval(cfg, tmp_path, pipeline=pipe)
    samples = _check_samples(tmp_path, r, IMAGE_METRICS, "image", {0, 2})
    train_media = {p for rec in lines(built / "ip" / "manifest.jsonl") for m in rec["messages"] for p in
                   (x.get("path") for x in m["content"]) if p}
    for s in samples:
        rid = s["id"].split("/", 1)[1]
        prompt = s["runs"]["main"]["prompt"]
        assert prompt["text"].endswith(instruction_sentence(instructions[rid]))  # the instruction is named at 0 and at k shots
        assert s["task"] == "instruct"
        exemplars = [p for _, p in prompt["media"][:-1]]
        assert all(p in train_media for p in exemplars)  # k-shot pairs come from the train split
    assert "0->2" in r["metrics"]["paired_shots"]


def test_audio_edit_reads_the_split_build_at_0_and_k_shots(built, ws, pipe, tmp_path):
    test = {r["id"]: r["meta"]["pair"] for r in lines(built / "au" / "test.jsonl")}
    train = lines(built / "au" / "manifest.jsonl")
    cfg = EvalConfig(suite="audio-edit", model=ws["model"], data=str(built / "au" / "test.jsonl"), shots=[0, 1],
                     n=2, seed=0, audio_classifier=ws["ast"], **FAST)
    r = run_eval(cfg, tmp_path, pipeline=pipe)
    samples = _check_samples(tmp_path, r, AUDIO_METRICS, "audio", {0, 1})
    for s in samples:
        pair = test[s["id"].split("/", 1)[1]]
        prompt = s["runs"]["main"]["prompt"]
        assert prompt["text"].endswith(instruction_sentence(pair["instruction"]))
        assert s["task"] == pair["type"] in ("add", "drop")
        if s["shots"]:
            a, b = (p for _, p in prompt["media"][:2])
            ex = next(t["meta"]["pair"] for t in train if Path(t["meta"]["pair"]["input"]) == Path(a))
            assert ex["type"] == pair["type"] and ex["group"] != pair["group"] and Path(ex["output"]) == Path(b)
    assert set(r["metrics"]["set"]["overall"]) == {"fd", "fad"}
    assert all(math.isfinite(v) for v in r["metrics"]["set"]["overall"].values())


def test_mixed_picture_and_sound_in_context_split_loads_in_both_suites(built, ws, pipe, tmp_path):
    test = lines(built / "mix" / "test.jsonl")
    by_mod = {m: sum(r["meta"]["pair"]["modality"] == m for r in test) for m in ("image", "audio")}
    for suite, modality, extra in (("image-edit", "image", dict(clip=ws["clip"], dino=ws["dino"])),
                                   ("audio-edit", "audio", dict(audio_classifier=ws["ast"]))):
        out = tmp_path / suite
        cfg = EvalConfig(suite=suite, model=ws["model"], data=str(built / "mix"), shots=[0, 1], n=2, seed=0,
                         **extra, **FAST)
        r = run_eval(cfg, out, pipeline=pipe)
        other = "audio" if modality == "image" else "image"
        assert r["skipped_records"]["other_modality"] == by_mod[other]
        metrics = IMAGE_METRICS if modality == "image" else AUDIO_METRICS
        samples = _check_samples(out, r, metrics, modality, {0, 1})
        for s in samples:
            rec = next(x for x in test if x["id"] == s["id"].split("/", 1)[1])
            text = s["runs"]["main"]["prompt"]["text"]
            if s["shots"] == 0:
                assert instruction_sentence(rec["meta"]["pair"]["instruction"]) in text
            elif rec["meta"]["task"] == "icl_edit":  # the record's own exemplars; the edit is not named
                assert instruction_sentence(rec["meta"]["pair"]["instruction"]) not in text


def test_dreambench_records_k_reference_images(ws, pipe, tmp_path):
    from codi2.eval.testing import make_dreambench

    db = make_dreambench(tmp_path / "db")
    cfg = EvalConfig(suite="dreambench", model=ws["model"], data=str(db), shots=[0, 3], n=1, seed=0,
                     clip=ws["clip"], dino=ws["dino"], **FAST)
    run_eval(cfg, tmp_path / "out", pipeline=pipe)
    for s in lines(tmp_path / "out" / "samples.jsonl"):
        prompt = s["runs"]["main"]["prompt"]
        assert len(prompt["media"]) == s["shots"] and prompt["text"].startswith(
            "Generate an image of" if s["shots"] == 0 else "These images show")
        assert {"dino", "clip_i", "clip_t"} <= set(s["metrics"])
        assert all(math.isfinite(v) for v in s["metrics"].values())


def test_the_suite_reader_finds_what_the_builders_wrote(built):
    """The old key mismatch: the suites read ``meta.instruction`` while the builders wrote ``meta.pair.…``."""
    from codi2.eval.suites import edit_user_message, read_edit_records

    for name, modality in (("ip", "image"), ("au", "audio")):
        test = lines(built / name / "test.jsonl")
        recs, skipped = read_edit_records([built / name / "test.jsonl"], modality)
        assert len(recs) == len(test) and skipped == {}
        for rec, raw in zip(recs, test):
            pair = raw["meta"]["pair"]
            assert rec.instruction == pair["instruction"] and rec.task == pair["type"] and rec.group == pair["group"]
            assert rec.target_caption == pair["output_caption"] and rec.target_caption
            assert rec.query_caption == pair["input_caption"]
            assert edit_user_message(rec, 0, modality).content[-1].text == instruction_sentence(pair["instruction"])
        wrong = read_edit_records([built / name / "test.jsonl"], "audio" if modality == "image" else "image")
        assert wrong[0] == [] and wrong[1] == {"other_modality": len(test)}


def test_a_record_naming_a_missing_file_is_skipped_and_counted(built, tmp_path):
    from codi2.eval.suites import EditSuite

    recs = lines(built / "ip" / "test.jsonl")
    recs[0]["messages"][1]["content"][1]["path"] = str(tmp_path / "gone.jpg")
    recs.append({"schema": 1, "id": "cap", "source": "x", "messages": [], "meta": {"task": "caption",
                                                                                "pair": {"kind": "captioned"}}})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    suite = EditSuite(tmp_path / "test.jsonl", [0], None, 0, exemplars=[built / "ip"])
    assert len(suite.records) == len(recs) - 2
    assert suite.skipped_records() == {"missing_file": 1, "not_edit": 1}
    assert suite.train_manifests == [built / "ip" / "manifest.jsonl"] and suite.pool["instruct"]
    with pytest.raises(ValueError, match="no image editing records"):
        EditSuite(built / "au" / "test.jsonl", [0], None, 0)


def test_command_lines_build_a_split_and_evaluate_it(ws, tmp_path, capsys):
    """The commands the README shows: ``codi2 build-data … --eval-fraction`` then ``codi2 eval --data OUT``."""
    from codi2.eval.cli import main as eval_main
    from data_builders import main as build_main

    au = F.audit_corpus(tmp_path / "audit", n=16, groups=8)
    assert build_main(["audit", "--input", str(au), "--out", str(tmp_path / "au"), "--eval-fraction", "0.34",
                       "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["splits"]["test"]["manifests"] == ["test.jsonl"] and printed["splits"]["test"]["records"] == 8
    assert build_main(["conversations", "--input", str(tmp_path / "au" / "manifest.jsonl"),
                       str(tmp_path / "au" / "test.jsonl"), "--out", str(tmp_path / "mix"), "--set", "n=4",
                       "weights={icl_edit: 1}", "icl_shots=[1,1]", "--eval-n", "2", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["splits"]["test"]["records"] == 2 and printed["splits"]["test"]["manifests"] == ["test.jsonl"]
    assert build_main(["audit", "--input", str(au), "--out", str(tmp_path / "bad"), "--eval-fraction", "2"]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    args = ["--suite", "audio-edit", "--model", ws["model"], "--data", str(tmp_path / "au"), "--shots", "0,1",
            "--n", "1", "--force-output", "--max-new-tokens", "4", "--n-boot", "50", "--audio-classifier", ws["ast"],
            "--out", str(tmp_path / "eval")]
    assert eval_main(args) == 0
    samples = lines(tmp_path / "eval" / "samples.jsonl")
    assert [s["shots"] for s in samples] == [0, 1]
    assert [len(s["runs"]["main"]["prompt"]["media"]) for s in samples] == [1, 3]
