"""The bundled mini model (checkpoints/codi2-mini) behaves, judged by its own world judges on held-out renders.

These check behaviour, not shapes: captions name the right object, generated pictures and sounds are of the
object asked for, an edit changes what it was asked to. The held-out records come from the world's test
stream, built in-process; decoding is seeded, so the outcome is deterministic on a given machine. The full
figures come from `codi2 eval --suite world` (README, "The mini model").
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "checkpoints" / "codi2-mini"

pytestmark = [pytest.mark.skipif(not (BUNDLE / "config.yaml").is_file(), reason="checkpoints/codi2-mini not built"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def mini():
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(BUNDLE, device="cpu")


def test_bundle_is_self_contained_and_within_budget():
    import json

    text = (BUNDLE / "config.yaml").read_text()
    assert "/runs/" not in text and "/work/" not in text, "the bundle references files outside itself"
    adapter = json.loads((BUNDLE / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "llm", "the adapter must name the bundle's own base LLM"
    assert "/work/" not in (BUNDLE / "adapter" / "README.md").read_text()
    recipe = json.loads((BUNDLE / "recipe.json").read_text())
    assert recipe["total_mb"] <= 60
    assert (BUNDLE / "judges" / "judges.safetensors").is_file()


def test_mini_model_captions_generates_and_edits(mini, tmp_path):
    from codi2.eval import EvalConfig, run_eval
    from data_builders.world import build_world

    tasks = ["caption_image", "caption_audio", "gen_image", "edit_image", "gen_audio"]
    world = build_world(tmp_path / "world", n=6 * len(tasks), seed=7, tasks=tasks, split="test")
    cfg = EvalConfig(suite="world", model=str(BUNDLE), data=str(world), seed=0, n_boot=50)
    r = run_eval(cfg, tmp_path / "out", pipeline=mini)
    by_task = r["metrics"]["by_task"]

    def mean(task: str, metric: str) -> float:
        return by_task[task][metric]["mean"]

    # 6 held-out records per task (the eval on 30 per task: README "The mini model"); chance is 1/6 or less
    assert mean("caption_image", "acc") >= 5 / 6 and mean("caption_audio", "acc") >= 5 / 6
    assert mean("gen_image", "key") >= 4 / 6  # shape and colour of the picture right
    assert mean("edit_image", "edit_acc") >= 3 / 6  # the asked-for attribute changed
    # pitch, timbre and size (loudness and length) of the sound all right (chance 1/48); 6 / 6 here since the vocoder
    # keeps the level (docs/mini_model.md, "Sound"): before, long loud tones came out quiet and were heard as small
    assert mean("gen_audio", "exact") >= 5 / 6


def test_mini_model_videos_move_the_way_they_are_asked(mini, tmp_path):
    from codi2.eval import EvalConfig, run_eval
    from data_builders.world import build_world

    world = build_world(tmp_path / "world", n=6, seed=7, tasks=["gen_video"], split="test")
    cfg = EvalConfig(suite="world", model=str(BUNDLE), data=str(world), seed=0, n_boot=50)
    by_task = run_eval(cfg, tmp_path / "out", pipeline=mini)["metrics"]["by_task"]
    # the direction of motion (chance 1/4) comes from the video decoder's trained text encoder (docs/mini_model.md, "Video"):
    # with a random one it was at chance, then 53 % end to end
    assert by_task["gen_video"]["acc_direction"]["mean"] >= 4 / 6
    assert by_task["gen_video"]["acc_size"]["mean"] >= 4 / 6
    # colour (chance 1/6): a guard against losing it, not evidence for the guidance choice (these 6 records get
    # every colour right at 3.0 too; the comparison of guidance scales is benchmarks/guidance_scale.py and the world
    # eval, benchmarks/results/mini_video_guidance_e2e.json)
    assert by_task["gen_video"]["acc_colour"]["mean"] >= 4 / 6


def test_mini_model_draws_orange_orange_at_its_configured_guidance(mini):
    from train.mini.common import world_batch
    from train.mini.decoder_train import conditions, judge_generations
    from codi2.modality import Modality
    from data_builders.world.judges import Judges

    # The picture decoder from the encoder's exact embeddings (the LLM taken out), at the guidance the bundle's
    # config gives it. At 3.0 this zero-terminal-SNR decoder over-drove colour and drew orange as red: 24 / 32 of
    # these held-out renders right; at 1.5, the configured scale, 30 / 32 (docs/history.md, "Pictures: less guidance")
    model = mini.model
    dec = model.decoder(Modality("image"))
    held = [s for s in world_batch("image", 0, 200, 7, "test", canonical=True) if s.attrs["colour"] == "orange"]
    assert len(held) == 32
    cond = conditions(dec, "image", held, model.encoder, model.preprocess)
    r = judge_generations(dec, "image", held, Judges.load(BUNDLE / "judges"), cond, None, 0)
    assert r["colour"] >= 28 / 32, r


def test_mini_model_reads_a_picture_edit_off_one_example(mini, tmp_path):
    from codi2.eval import EvalConfig, run_eval
    from data_builders.world import build_world

    # A : A' :: B : ?, the edit never named in words; each record run with its first exemplar pair only
    world = build_world(tmp_path / "world", n=8, seed=7, tasks=["icl_edit_image"], split="test")
    cfg = EvalConfig(suite="world", model=str(BUNDLE), data=str(world), seed=0, n_boot=50, shots=[1])
    by_task = run_eval(cfg, tmp_path / "out", pipeline=mini)["metrics"]["by_task"]
    # the edited attribute takes the exemplar's new value (chance 1/5 or less: the query never has it already) and
    # the picture is otherwise the query's. A guard against losing it, not evidence for stage 6: these 8 records
    # get 8 / 8 edits and 6 / 8 pictures right before it too (43 -> 70 % is the world eval's, 30 records)
    assert by_task["icl_edit_image"]["edit_acc"]["mean"] >= 6 / 8
    assert by_task["icl_edit_image"]["exact"]["mean"] >= 4 / 8
