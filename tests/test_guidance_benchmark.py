"""benchmarks/guidance_scale.py runs on the tiny pipeline (random decoders and judges) and writes its JSON."""
from __future__ import annotations

import json

import pytest

from .conftest import load_benchmark


def _load_benchmark():
    return load_benchmark("guidance_scale")


def test_guidance_benchmark_tiny(tiny_pipeline_dir, tmp_path):
    from data_builders.world.judges import JudgeConfig, Judges

    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    out = tmp_path / "g.json"
    bench = _load_benchmark()
    args = ["--model", str(tiny_pipeline_dir), "--judges", str(tmp_path / "judges"), "--n", "2", "--scales", "1", "2",
            "--modalities", "image", "audio", "--threads", "1", "--out", str(out)]
    assert bench.main(args) == 0
    saved = json.loads(out.read_text())
    assert saved["world_seed"] == 9 and saved["n"] == 2
    for m, key in (("image", "shape+colour"), ("audio", "all")):
        r = saved["results"][m]
        configured = r["configured"]["guidance"]
        assert r["key"] == key
        assert [row["guidance"] for row in r["rows"]] == sorted({1.0, 2.0, configured})  # the configured one too
        ref = next(row for row in r["rows"] if row["guidance"] == configured)
        assert ref["time_vs_configured"] == 1.0
        assert all(row["n"] == 2 and 0.0 <= row[key] <= 1.0 and row["seconds_per_sample"] > 0 for row in r["rows"])
        assert r["best"]["guidance"] in {row["guidance"] for row in r["rows"]}
        assert r["best"][key] == max(row[key] for row in r["rows"])
    with pytest.raises(ValueError, match="guidance scales must be >= 1"):
        bench.run(str(tiny_pipeline_dir), 2, [0.5], ["image"], None)


def test_image_decoder_benchmark_tiny(tiny_pipeline_dir, tmp_path):
    """benchmarks/image_decoder.py: two decoders side by side on the same renders, conditions and seeds."""
    from codi2.config import load_model_config
    from data_builders.world.judges import JudgeConfig, Judges

    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    bench = load_benchmark("image_decoder")
    cfg = load_model_config(str(tiny_pipeline_dir / "config.yaml"))
    image = tiny_pipeline_dir / cfg.modalities["image"].decoder.path
    out = tmp_path / "d.json"
    assert bench.main(["--decoders", str(image), str(image), "--model", str(tiny_pipeline_dir), "--judges",
                       str(tmp_path / "judges"), "--n", "3", "--threads", "1", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["n"] == 3 and saved["world_seed"] == 9 and len(saved["decoders"]) == 2
    a, b = saved["decoders"]
    for row in (a, b):
        for part in ("vae_round_trip", "unet"):
            assert 0.0 <= row[part]["all"] <= row[part]["shape"] <= 1.0
            assert sum(row[part]["confusions"].values()) <= 3 * 4  # at most every attribute of every render
    assert a["unet"] == b["unet"] and a["vae_round_trip"] == b["vae_round_trip"]  # same decoder, seeds: same result
    assert saved["clean"]["all"] <= 1.0
    want = cfg.modalities["image"].decoder
    assert saved["sampling"] == {"scheduler": want.scheduler, "steps": want.steps, "guidance": want.guidance}
    assert bench.main(["--decoders", str(image), "--model", str(tiny_pipeline_dir), "--judges", str(tmp_path / "judges"),
                       "--n", "1", "--guidance", "1.0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["sampling"]["guidance"] == 1.0 != want.guidance
    with pytest.raises(FileNotFoundError, match="not an image decoder pipeline folder"):
        bench.run([str(tmp_path)], str(tiny_pipeline_dir), str(tmp_path / "judges"), 2)


def test_round_losses_benchmark_tiny(tiny_pipeline_dir, tmp_path):
    """benchmarks/round_losses.py: held-out feature loss by dialogue round, per task, from one model load."""
    from data_builders.world import build_world

    bench = load_benchmark("round_losses")
    world = build_world(tmp_path / "world", n=8, seed=3, tasks=["multi_round_edit", "edit_image"], split="test")
    out = tmp_path / "r.json"
    assert bench.main(["--model", str(tiny_pipeline_dir), "--data", str(world), "--tasks", "multi_round_edit",
                       "edit_image", "--n", "3", "--batch", "2", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())["tasks"]
    multi, single = saved["multi_round_edit"], saved["edit_image"]
    assert multi["records"] == single["records"] == 3
    # three rounds, each with one output span per dialogue; a single edit has only a first reply
    rounds = {k.split("/")[1] for k in multi["feature_loss"]}
    assert rounds == {"reply1", "reply2", "reply3"}
    assert sum(r["spans"] for r in multi["feature_loss"].values()) == 9
    assert set(single["feature_loss"]) == {"image/reply1"} and single["feature_loss"]["image/reply1"]["spans"] == 3
    for r in multi["feature_loss"].values():
        assert r["loss"] > 0
    assert all(r["vs_reply1"] == 1.0 for k, r in multi["feature_loss"].items() if k.endswith("reply1"))
    with pytest.raises(ValueError, match="no records of task 'caption_video'"):
        bench.run(str(tiny_pipeline_dir), str(world), ["caption_video"], 3)
