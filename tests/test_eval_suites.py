"""Every eval suite end to end with the tiny model and tiny metric backbones; determinism; resume; folder scoring."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from codi2.eval import EvalConfig, run_eval, score_folder
from codi2.eval import runner as R
from codi2.eval.cli import add_arguments
from codi2.eval import suites as S
from data_builders.world import suite as W
from codi2.eval.testing import make_dreambench, make_edit_manifest

FAST = dict(force_output=True, max_new_tokens=4, n_boot=200)  # the random tiny model only makes media when forced


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_pipeline_dir):
    from codi2.eval.testing import save_tiny_audio_classifier, save_tiny_clip, save_tiny_dino

    d = tmp_path_factory.mktemp("eval")
    return {"model": str(tiny_pipeline_dir), "root": d,
            "clip": str(save_tiny_clip(d / "clip")), "dino": str(save_tiny_dino(d / "dino")),
            "ast": str(save_tiny_audio_classifier(d / "ast")),
            "db": make_dreambench(d / "db"), "ie": make_edit_manifest(d / "ie", "image"),
            "ae": make_edit_manifest(d / "ae", "audio")}


@pytest.fixture(scope="module")
def pipe(ws):
    """The tiny pipeline loaded once and shared by the run_eval calls (the CLI calls load their own)."""
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(ws["model"])


def _metrics(out: Path) -> tuple[str, str]:
    r = json.loads((out / "results.json").read_text())
    return json.dumps(r["metrics"], sort_keys=True), json.dumps(r["samples"], sort_keys=True)


def test_image_edit_cli_deterministic_and_resumable(ws, pipe, tmp_path, monkeypatch):
    from codi2.eval.cli import main

    args = ["--suite", "image-edit", "--model", ws["model"], "--data", str(ws["ie"]), "--shots", "0,1", "--n", "1",
            "--seed", "3", "--force-output", "--max-new-tokens", "4", "--n-boot", "200",
            "--clip", ws["clip"], "--dino", ws["dino"]]
    assert main(args + ["--out", str(tmp_path / "a"), "--json"]) == 0
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    assert r["complete"] and len(r["samples"]) == 2 and {s["shots"] for s in r["samples"]} == {0, 1}
    per = {s["shots"]: s["metrics"] for s in r["samples"]}
    assert {"l1", "l2", "clip_i", "dino", "clip_t", "clip_dir_text", "output_rate"} <= set(per[0])
    assert "clip_dir_image" in per[1] and "clip_dir_image" not in per[0]  # exemplar direction needs k >= 1
    assert 0 <= per[0]["l1"] <= 1 and -1 <= per[1]["clip_dir_image"] <= 1
    ov = r["metrics"]["overall"]["l1"]
    assert ov["ci_low"] <= ov["mean"] <= ov["ci_high"] and ov["n"] == 2
    assert r["fingerprints"]["model"] and r["fingerprints"]["data"] and set(r["fingerprints"]["backbones"]) == {"clip", "dino"}
    assert "torch" in r["versions"]
    for f in ("report.md", "plot_shots.png", "samples.jsonl", "run.json"):
        assert (tmp_path / "a" / f).is_file(), f
    outputs = sorted((tmp_path / "a" / "outputs").rglob("*.png"))
    assert len(outputs) == 2
    # an existing run is not overwritten without --resume
    assert main(args + ["--out", str(tmp_path / "a")]) == 2

    # same seed, model and data -> byte-identical metrics (and whole file: --out is not part of the config)
    cfg = EvalConfig(suite="image-edit", model=ws["model"], data=str(ws["ie"]), shots=[0, 1], n=1, seed=3,
                     clip=ws["clip"], dino=ws["dino"], **FAST)
    run_eval(cfg, tmp_path / "b", pipeline=pipe)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()

    # killed after one sample; --resume generates only the rest and gives the same results.json
    real, calls = R._generate, []

    def crash_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(R, "_generate", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, tmp_path / "c", pipeline=pipe)
    assert len((tmp_path / "c" / "samples.jsonl").read_text().splitlines()) == 1
    counted = []
    monkeypatch.setattr(R, "_generate", lambda *a, **k: counted.append(1) or real(*a, **k))
    assert main(args + ["--out", str(tmp_path / "c"), "--resume"]) == 0
    assert len(counted) == 1  # the finished sample was not recomputed
    assert (tmp_path / "c" / "results.json").read_bytes() == (tmp_path / "a" / "results.json").read_bytes()
    # resuming with another config is refused
    other = list(args)
    other[other.index("--seed") + 1] = "4"
    assert main(other + ["--out", str(tmp_path / "c"), "--resume"]) == 2


def test_dreambench_suite(ws, pipe, tmp_path):
    cfg = EvalConfig(suite="dreambench", model=ws["model"], data=str(ws["db"]), shots=[0, 2], n=1, seed=0,
                     clip=ws["clip"], dino=ws["dino"], **FAST)
    r = run_eval(cfg, tmp_path, pipeline=pipe)
    assert [s["shots"] for s in r["samples"]] == [0, 2]
    for s in r["samples"]:
        assert {"dino", "clip_i", "clip_t"} <= set(s["metrics"]) and s["metrics"]["output_rate"] == 1.0
        assert -1 <= s["metrics"]["clip_t"] <= 1
    assert set(r["metrics"]["by_shots"]) == {"0", "2"}
    assert [s["id"].split("/")[0] for s in r["samples"]] == ["k0", "k2"]
    assert all(s["task"] in ("dog", "red_toy") for s in r["samples"])


def test_audio_edit_suite_with_imagebind_fad(ws, pipe, tmp_path):
    cfg = EvalConfig(suite="audio-edit", model=ws["model"], data=str(ws["ae"]), shots=[0, 1], n=1, seed=0,
                     audio_classifier=ws["ast"], fad_model=None, **FAST)  # FAD on the model's ImageBind encoder
    r = run_eval(cfg, tmp_path, pipeline=pipe)
    assert len(r["samples"]) == 2
    for s in r["samples"]:
        m = s["metrics"]
        assert {"lsd", "kl_softmax", "kl_sigmoid"} <= set(m) and m["lsd"] > 0 and m["kl_softmax"] >= 0
    st = r["metrics"]["set"]["overall"]
    assert st["fd"] >= 0 and st["fad"] >= 0
    assert (tmp_path / "report.md").read_text().count("fad") >= 1


def test_world_suite(ws, pipe, tmp_path):
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=2, seed=0, tasks=["joint_image_audio", "caption_image"],
                        split="test")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"), **FAST)
    r = run_eval(cfg, tmp_path / "out", pipeline=pipe)
    tasks = {s["task"]: s for s in r["samples"]}
    assert set(tasks) == {"joint_image_audio", "caption_image"}
    joint = tasks["joint_image_audio"]
    assert set(joint["runs"]) == {"main", "image", "audio"}
    assert [m for m, _ in joint["runs"]["main"]["media"]] == ["image", "audio"]
    assert {"acc", "exact", "coherence", "sim", "coherence_separate", "sim_separate"} <= set(joint["metrics"])
    assert {"key", "acc_shape", "acc_colour"} <= set(joint["metrics"])
    assert all(0 <= s["metrics"]["acc"] <= 1 for s in r["samples"])
    targets = {t["label"]: t for t in r["metrics"]["targets"]}
    assert targets["image captioning"]["n"] == 1 and targets["text -> image: shape and colour right"]["n"] == 0
    assert targets["joint coherence > separate coherence"]["target"] is False  # reported beside the targets
    assert targets["image captioning"]["target"] is True
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Mini-world targets" in report and "Reported beside them, not targets" in report
    assert set(r["metrics"]["by_task"]) == set(tasks)
    assert r["fingerprints"]["backbones"] == {"judges": R.dir_fingerprint(tmp_path / "judges")}


def test_world_data_fingerprint_is_the_data_alone_wherever_it_and_the_judges_are(ws, tmp_path):
    # the same records and media give the same data fingerprint from any folder; the judges are a backbone,
    # fingerprinted on their own (they used to be hashed with the data, relative to a folder above both)
    import shutil

    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "a" / "world", n=3, seed=0, tasks=["caption_image", "edit_audio"], split="test")
    shutil.copytree(world.parent, tmp_path / "b" / "deeper" / "copy")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "j1")
    shutil.copytree(tmp_path / "j1", tmp_path / "far" / "away" / "j2")

    def prints(data, judges):
        suite = R.build_suite(EvalConfig(suite="world", model=ws["model"], data=str(data), judges=str(judges), **FAST),
                              model=object())
        assert not any(Path(judges) in Path(p).parents for p in suite.data_files())
        return R.fingerprint(suite.data_files()), R.dir_fingerprint(suite.backbone_dirs()["judges"])

    here = prints(world, tmp_path / "j1")
    assert prints(tmp_path / "b" / "deeper" / "copy" / "manifest.jsonl", tmp_path / "far" / "away" / "j2") == here
    Judges(JudgeConfig(width=6, hidden=8)).save(tmp_path / "far" / "away" / "j2")  # other judges, same data
    data, judges = prints(world, tmp_path / "far" / "away" / "j2")
    assert data == here[0] and judges != here[1]


def test_world_separate_generations_always_make_their_one_modality(ws, pipe, tmp_path):
    """Without --force-output the random model makes no media of its own accord, but the separate image-only and
    sound-only replies of a joint record start with their modality's opening token, so both exist to compare."""
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=1, seed=0, tasks=["joint_image_audio"], split="test")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"),
                     **{**FAST, "force_output": False})
    (joint,) = run_eval(cfg, tmp_path / "out", pipeline=pipe)["samples"]
    assert [m for m, _ in joint["runs"]["image"]["media"]][:1] == ["image"]
    assert [m for m, _ in joint["runs"]["audio"]["media"]][:1] == ["audio"]
    assert "sim_separate" in joint["metrics"]  # both separate outputs exist, so their SIM is measured


def test_world_suite_evaluates_in_context_records_at_each_shot_count(ws, tmp_path):
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=3, seed=0, tasks=["icl_edit_image", "icl_edit_audio", "gen_image"],
                        split="test", icl_shots=4)
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"),
                     shots=[0, 1, 2, 4], **FAST)
    samples = R.build_suite(cfg, model=object()).samples()
    by_id = {s.id: s for s in samples}
    icl = [r for r in map(json.loads, world.read_text().splitlines()) if r["meta"]["shots"]]
    assert len(samples) == 3 * len(icl) + 1 and "world-test-0-000002" in by_id  # gen_image: once, as it is
    for r in icl:
        media = [p["path"] for p in r["messages"][0]["content"] if p["type"] != "text"]
        for k in (1, 2, 4):
            s = by_id[f"k{k}/{r['id']}"]
            kept = [Path(p.path).name for p in s.user.content if p.type != "text"]
            assert s.shots == k and kept == [Path(p).name for p in media[:2 * k] + media[-1:]]
            assert [p.text for p in s.user.content if p.type == "text"] == \
                [p["text"] for p in r["messages"][0]["content"] if p["type"] == "text"]
            assert s.ref["targets"] == r["meta"]["targets"]  # the same query and target at every k
    with pytest.raises(ValueError, match="no count >= 1"):
        R.build_suite(dataclasses.replace(cfg, shots=[0]), model=object())


def test_edit_named_reads_the_change_the_reply_states():
    from data_builders.world.suite import edit_named
    from data_builders.world.world import parse_caption

    colour = [{"attr": "colour", "value": "green"}]
    assert edit_named("The change makes it green. Here it is:", colour, parse_caption) == 1.0
    assert edit_named("The change makes it yellow. Here you go:", colour, parse_caption) == 0.0  # another value
    assert edit_named("The change makes it a square. Done:", colour, parse_caption) == 0.0  # another attribute
    assert edit_named("", colour, parse_caption) == edit_named(None, colour, parse_caption) == 0.0  # said nothing
    assert edit_named("The change moves it to the middle.", [{"attr": "position", "value": "center"}],
                      parse_caption) == 1.0  # the parser's synonyms
    assert edit_named("anything", [], parse_caption) == 0.0
    caption = "a large green square at the top"  # names the new colour, and everything else
    assert edit_named(caption, colour, parse_caption) == 1.0 and edit_named(caption, colour, parse_caption, alone=True) == 0.0
    assert edit_named("The change makes it green.", colour, parse_caption, alone=True) == 1.0


def test_world_suite_scores_the_named_change_of_in_context_edits(ws, pipe, tmp_path):
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=3, seed=0, tasks=["icl_edit_image", "edit_image"], split="test")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"),
                     shots=[1], **FAST)
    r = run_eval(cfg, tmp_path / "out", pipeline=pipe)
    by_task = {}
    for smp in r["samples"]:
        by_task.setdefault(smp["task"], []).append(smp)
    assert set(by_task) == {"icl_edit_image", "edit_image"}
    for smp in by_task["icl_edit_image"]:  # the random model's words name nothing it was shown
        assert smp["metrics"]["edit_named"] in (0.0, 1.0) and "edit_acc" in smp["metrics"]
    assert all("edit_named" not in smp["metrics"] for smp in by_task["edit_image"])  # there the user names it
    assert "edit_named" in r["metrics"]["by_task"]["icl_edit_image"]


def test_world_suite_scores_spot_the_change_and_splits_edits_by_the_attribute_changed(ws, pipe, tmp_path):
    from data_builders.world import build_world
    from data_builders.world.build import change_words
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=8, seed=0, tasks=["spot_change_image", "spot_change_audio",
                                                                  "edit_image", "caption_image"], split="test")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"), **FAST)
    suite = R.build_suite(cfg, model=object())
    manifest = {rec["id"]: rec for rec in map(json.loads, world.read_text().splitlines())}
    spots = [smp for smp in suite.samples() if smp.task in W.SPOT_TASKS]
    assert len(spots) == 4 and all(smp.runs[0].outputs == () for smp in spots)  # text only: nothing to draw
    for smp in spots:  # scored by the words alone
        edit = smp.ref["edits"][0]
        right = S.Generated(change_words(edit["attr"], edit["value"]), [])
        wrong = S.Generated("The change makes it a star." if edit["attr"] != "shape" else "The change makes it red.", [])
        assert suite.score(smp, {"main": right}) == {"edit_named": 1.0, "exact": 1.0}
        assert suite.score(smp, {"main": wrong}) == {"edit_named": 0.0, "exact": 0.0}
        second = S.Generated(_caption_of_second(manifest[smp.id]), [])  # names the new value, and more
        assert suite.score(smp, {"main": second}) == {"edit_named": 0.0, "exact": 0.0}
        assert suite.breakdown(smp) == {"changed": edit["attr"]}
    r = run_eval(cfg, tmp_path / "out", pipeline=pipe)
    rows = r["metrics"]["by_breakdown"]
    edits = {smp["id"]: smp for smp in r["samples"] if smp["task"] != "caption_image"}
    assert sum(row["metrics"]["exact"]["n"] for row in rows) == len(edits)  # every editing sample once, captions none
    for row in rows:
        members = [smp for smp in edits.values() if smp["task"] == row["task"]
                   and manifest[smp["id"]]["meta"]["edits"][-1]["attr"] == row["value"]]
        assert row["by"] == "changed" and row["metrics"]["exact"]["n"] == len(members)
        assert row["metrics"]["exact"]["mean"] == pytest.approx(
            sum(smp["metrics"]["exact"] for smp in members) / len(members), abs=1e-4)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## By the attribute changed" in report
    assert sum(line.startswith("| spot_change_") for line in report.split("## By the attribute changed")[1]
               .split("##")[0].splitlines()) == len({(row["task"], row["value"]) for row in rows
                                                    if row["task"].startswith("spot")})


def _caption_of_second(record: dict) -> str:
    """The canonical caption of a spot-the-change record's second render."""
    from data_builders.world.world import WorldObject, caption

    second = record["meta"]["inputs"][1]
    return caption(second["modality"], WorldObject(**{"position": "center", **second["attrs"]}))


def test_by_breakdown_keeps_tasks_and_shot_counts_apart():
    recs = [{"id": f"k{k}/q{i}", "task": "icl", "shots": k, "metrics": {"exact": float(i % 2 == 0 or k == 2)}}
            for i in range(4) for k in (1, 2)] + [{"id": "e0", "task": "edit", "shots": 0, "metrics": {"exact": 1.0}},
                                                  {"id": "c0", "task": "caption", "shots": 0, "metrics": {"acc": 1.0}}]
    keys = {f"k{k}/q{i}": {"changed": "colour" if i < 2 else "shape"} for i in range(4) for k in (1, 2)}
    keys["e0"] = {"changed": "colour"}
    rows = R.by_breakdown(recs, keys, n_boot=100, seed=0)
    got = {(r["task"], r["shots"], r["value"]): (r["metrics"]["exact"]["mean"], r["metrics"]["exact"]["n"]) for r in rows}
    assert got == {("edit", 0, "colour"): (1.0, 1), ("icl", 1, "colour"): (0.5, 2), ("icl", 1, "shape"): (0.5, 2),
                   ("icl", 2, "colour"): (1.0, 2), ("icl", 2, "shape"): (1.0, 2)}
    assert R.by_breakdown(recs, {}, n_boot=100, seed=0) == []


def test_world_targets_count_the_open_joint_comparison_and_report_the_named_one_beside(tmp_path):
    """Joint vs separate replies is a target where the prompt leaves the object open (joint_open); on prompts that
    name the whole object it is reported beside the targets, and the report's count leaves it out."""
    from codi2.eval.report import write_report

    def rec(task, **m):
        return {"task": task, "shots": 0, "metrics": m}

    records = [rec("caption_image", acc=1.0), rec("caption_audio", acc=0.5),
               rec("joint_image_audio", coherence=1.0, coherence_separate=1.0, sim=0.5, sim_separate=0.6),
               rec("joint_open", coherence=1.0, coherence_separate=0.0, sim=0.6, sim_separate=0.2)]
    rows = {t["label"]: t for t in W.world_targets(records)}
    named, opened = rows["joint coherence > separate coherence"], rows["open joint coherence > separate coherence"]
    assert (named["target"], named["pass"], named["value"]) == (False, False, 0.0)
    assert (opened["target"], opened["pass"], opened["value"]) == (True, True, 1.0)
    assert rows["joint sim > separate sim"]["target"] is False and rows["open joint sim > separate sim"]["pass"]
    assert all(t["target"] for t in rows.values() if t["task"] not in W.JOINT_TASKS)
    empty = {"overall": {}, "by_shots": {}, "by_task": {}}
    path = write_report({"suite": "world", "config": {"model": "m", "data": "d", "shots": [0], "n": 4, "seed": 0},
                         "metrics": {**empty, "targets": list(rows.values())}}, tmp_path)
    report = path.read_text()
    # measured: image captioning (met), sound captioning (not), joint coherence, the open coherence and SIM (met)
    assert "4 of the 5 measured targets met (9 without records in this run)." in report
    targets, beside = report.split("Reported beside them")
    assert "| joint coherence > separate coherence |" in beside and "| joint coherence >" not in targets
    assert "| open joint coherence > separate coherence |" in targets


def test_paired_shots_compares_the_same_items():
    recs = [{"id": f"k{k}/q{i}", "task": "t", "shots": k, "metrics": {"exact": v, "acc": 0.5}}
            for i, row in enumerate([(0, 1, 1), (0, 0, 1), (1, 0, 1), (1, 1, 1)]) for k, v in zip((1, 2, 4), row)]
    recs.append({"id": "k4/only-at-4", "task": "t", "shots": 4, "metrics": {"exact": 0.0, "acc": 0.5}})
    recs.append({"id": "no-shots", "task": "u", "shots": 0, "metrics": {"exact": 1.0}})
    p = R.paired_shots(recs, n_boot=200, seed=0)
    # 0 shots is not an in-context count here: "no-shots" has no k prefix, so it pairs with nothing
    assert set(p) == {"1->2", "1->4"}
    assert p["1->4"]["exact"]["n"] == 4 and p["1->4"]["exact"]["mean"] == 0.5  # only-at-4 is left out
    assert (p["1->4"]["exact"]["better"], p["1->4"]["exact"]["worse"]) == (2, 0)
    assert (p["1->2"]["exact"]["better"], p["1->2"]["exact"]["worse"], p["1->2"]["exact"]["mean"]) == (1, 1, 0.0)
    assert p["1->2"]["acc"]["mean"] == 0.0 and p["1->2"]["acc"]["better"] == 0
    assert R.paired_shots([r for r in recs if r["shots"] == 4], 200, 0) == {}


def test_world_suite_needs_judges(ws, tmp_path):
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(tmp_path), **FAST)
    with pytest.raises(ValueError, match="--judges"):
        R.build_suite(cfg, model=object())


def test_score_folders_of_any_system(ws, tmp_path):
    """`codi2 eval score`: the references scored against themselves give perfect pairwise metrics."""
    from codi2.eval.cli import main

    media = ws["ie"].parent / "media"
    r = score_folder("image-edit", media, media, tmp_path / "img", clip=ws["clip"], dino=ws["dino"], n_boot=100)
    ov = r["metrics"]["overall"]
    assert ov["l1"]["mean"] == 0 and ov["l2"]["mean"] == 0
    assert ov["clip_i"]["mean"] == pytest.approx(1.0, abs=1e-6) and ov["dino"]["mean"] == pytest.approx(1.0, abs=1e-6)

    amedia = ws["ae"].parent / "media"
    assert main(["score", "--suite", "audio-edit", "--pred", str(amedia), "--ref", str(amedia), "--out",
                 str(tmp_path / "aud"), "--audio-classifier", ws["ast"], "--fad-model", ws["ast"], "--n-boot", "100"]) == 0
    a = json.loads((tmp_path / "aud" / "results.json").read_text())["metrics"]
    assert a["overall"]["lsd"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert a["overall"]["kl_softmax"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert a["set"]["overall"]["fd"] == pytest.approx(0.0, abs=1e-6)
    assert a["set"]["overall"]["fad"] == pytest.approx(0.0, abs=1e-6)

    # dreambench: outputs named <subject>/<prompt index>.png; a real image of the subject scores DINO/CLIP-I high
    pred = tmp_path / "db-pred" / "dog"
    pred.mkdir(parents=True)
    (pred / "01.png").write_bytes((ws["db"] / "dataset" / "dog" / "00.jpg").read_bytes())
    d = score_folder("dreambench", tmp_path / "db-pred", ws["db"], tmp_path / "db", clip=ws["clip"], dino=ws["dino"])
    assert d["samples"][0]["task"] == "dog" and d["samples"][0]["metrics"]["dino"] > 0.5
    with pytest.raises(ValueError, match="no image-edit outputs"):
        score_folder("image-edit", tmp_path / "db-pred", media, tmp_path / "x", clip=ws["clip"])


def test_dreambench_parser_reads_the_real_layout(ws):
    from codi2.eval.suites import dreambench_prompt, dreambench_user_text, parse_prompts_and_classes

    classes, obj, live = parse_prompts_and_classes(ws["db"] / "dataset" / "prompts_and_classes.txt")
    assert classes == {"red_toy": "toy", "dog": "dog"}
    assert obj[1] == "a {0} {1} in the snow" and live[1] == "a {0} {1} wearing a red hat"
    assert dreambench_prompt(obj[1], "toy") == "a toy in the snow"
    assert dreambench_user_text("a toy in the snow", "toy", 2) == "These images show a toy. Generate an image of this toy: a toy in the snow."


def test_edit_manifest_reader(tmp_path):
    from codi2.eval.suites import edit_user_message, read_edit_manifest, select

    path = make_edit_manifest(tmp_path, "audio", n=3, pairs=2)
    recs = read_edit_manifest(path, "audio")
    assert [r.task for r in recs] == ["add", "drop", "replace"] and len(recs[0].pairs) == 2
    assert recs[0].target_caption == "a blue circle" and recs[0].query.is_file()
    m = edit_user_message(recs[0], 1, "audio")
    assert [p.type for p in m.content] == ["text", "audio", "audio", "text", "audio"]
    assert [p.type for p in edit_user_message(recs[0], 0, "audio").content] == ["audio", "text"]
    assert select(list(range(10)), 3, seed=1) == select(list(range(10)), 3, seed=1) != select(list(range(10)), 3, seed=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "messages": [
        {"role": "user", "content": [{"type": "audio", "path": "media/0-a0.wav"}, {"type": "audio", "path": "media/0-b.wav"}]},
        {"role": "assistant", "content": [{"type": "audio", "path": "media/0-be.wav"}]}]}) + "\n")
    with pytest.raises(ValueError, match="odd number, got 2"):
        read_edit_manifest(bad, "audio")


def test_dir_fingerprint_follows_symlinked_parts(tmp_path):
    """A model folder built from links to shared weights fingerprints like a copy (and does not crash)."""
    from codi2.eval.runner import dir_fingerprint

    shared = tmp_path / "shared"
    (shared / "llm").mkdir(parents=True)
    (shared / "llm" / "w.bin").write_bytes(b"weights")
    copy, linked = tmp_path / "copy", tmp_path / "linked"
    (copy / "llm").mkdir(parents=True)
    (copy / "llm" / "w.bin").write_bytes(b"weights")
    (copy / "config.yaml").write_text("a: 1\n")
    linked.mkdir()
    (linked / "llm").symlink_to(shared / "llm", target_is_directory=True)
    (linked / "config.yaml").symlink_to(copy / "config.yaml")
    assert dir_fingerprint(linked) == dir_fingerprint(copy)
    (shared / "llm" / "w.bin").write_bytes(b"other")
    assert dir_fingerprint(linked) != dir_fingerprint(copy)


def test_world_open_joint_task_samples_its_choice_and_asks_the_separate_replies_in_their_words(ws, pipe, tmp_path):
    """joint_open: the prompt names one attribute; the joint reply and two separate replies (their own prompts from
    meta.separate) each sample the object they choose; targets hold only the asked attribute; the world targets
    gain the open joint-vs-separate rows."""
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    world = build_world(tmp_path / "world", n=2, seed=0, tasks=["joint_open"], split="test")
    rec = json.loads(world.read_text().splitlines()[0])
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    cfg = EvalConfig(suite="world", model=ws["model"], data=str(world), judges=str(tmp_path / "judges"),
                     **{**FAST, "force_output": True})
    (s, _) = R.build_suite(cfg, model=object()).samples()
    runs = {r.name: r for r in s.runs}
    assert set(runs) == {"main", "image", "audio"} and all(r.temperature == W.OPEN_TEMPERATURE for r in runs.values())
    assert runs["image"].prompt == rec["meta"]["separate"]["image"] and runs["main"].prompt is None
    assert runs["audio"].allowed == ("audio",) and runs["audio"].prompt.startswith("Let me hear")
    seen = []
    real_chat = pipe.chat

    def chat(message, options=None, history=()):
        seen.append((message.content[0].text, options.temperature))
        return real_chat(message, options, history)

    pipe.chat = chat
    try:
        out = run_eval(cfg, tmp_path / "out", pipeline=pipe)
    finally:
        pipe.chat = real_chat
    assert seen[:3] == [(rec["messages"][0]["content"][0]["text"], 1.0), (rec["meta"]["separate"]["image"], 1.0),
                        (rec["meta"]["separate"]["audio"], 1.0)]
    first = out["samples"][0]
    asked = set(rec["meta"]["asked"])
    assert {k[len("acc_"):] for k in first["metrics"] if k.startswith("acc_")} == asked  # scored on what was asked
    assert "coherence" in first["metrics"] and "coherence_separate" in first["metrics"]
    labels = [t["label"] for t in W.world_targets(out["samples"])]
    assert "open joint coherence > separate coherence" in labels
    assert all(t["target"] for t in W.world_targets(out["samples"]) if t["task"] == "joint_open")
    bad = tmp_path / "bad"
    bad.mkdir()
    rec["meta"].pop("separate")
    (bad / "manifest.jsonl").write_text(json.dumps(rec) + "\n")
    (bad / "media").symlink_to(world.parent / "media")
    with pytest.raises(ValueError, match="needs meta.separate"):
        R.build_suite(dataclasses.replace(cfg, data=str(bad)), model=object()).samples()


def test_world_suite_reads_several_manifests_as_one_set(ws, tmp_path):
    """`--data A B`: the default test split and a joint_open set evaluated in one run, each record's media read
    from its own folder; repeated ids across the manifests, and several manifests for another suite, are refused."""
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    a = build_world(tmp_path / "a", n=2, seed=0, tasks=["caption_image", "gen_image"], split="test")
    b = build_world(tmp_path / "b", n=2, seed=5, tasks=["joint_open", "caption_audio"], split="test")
    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    args = ["--suite", "world", "--model", ws["model"], "--data", str(a.parent), str(b), "--out", "x"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    parsed = p.parse_args(args)
    cfg = EvalConfig(suite="world", model=ws["model"], data=parsed.data, judges=str(tmp_path / "judges"), **FAST)
    assert cfg.data == [str(a.parent), str(b)]
    suite = R.build_suite(cfg, model=object())
    samples = suite.samples()
    assert sorted(s.task for s in samples) == ["caption_audio", "caption_image", "gen_image", "joint_open"]
    roots = {s.task: {Path(p.path).parent.parent.parent for m in (*s.history, s.user) for p in m.content if p.path}
             for s in samples}  # every media path resolved against its own manifest's folder
    assert roots["caption_image"] == {a.parent} and roots["caption_audio"] == {b.parent}
    assert all(Path(p.path).is_file() for s in samples for p in s.user.content if p.path)
    assert {a, b} <= set(suite.data_files())
    one = EvalConfig(suite="world", model=ws["model"], data=[str(a)], judges=str(tmp_path / "judges"), **FAST)
    assert one.data == str(a)  # one manifest is stored as before
    with pytest.raises(ValueError, match="same manifest twice"):
        R.build_suite(dataclasses.replace(cfg, data=[str(a), str(a.parent)]), model=object())
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.jsonl").write_text(a.read_text())  # another set built with the same --seed and --split
    with pytest.raises(ValueError, match="ids differ"):
        R.build_suite(dataclasses.replace(cfg, data=[str(a), str(copy)]), model=object())
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "manifest.jsonl").write_text(a.read_text() + a.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="appears twice"):
        R.build_suite(dataclasses.replace(cfg, data=str(twice)), model=object())
    with pytest.raises(ValueError, match="only the world suite"):
        EvalConfig(suite="audio-edit", model=ws["model"], data=[str(a), str(b)])
