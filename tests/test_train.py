"""The trainer on CPU with the tiny model: a run over all four phases, kill -9 + resume reproducing the
losses exactly, bad records, non-finite losses, stages, atomic checkpoints, export + chat, and
(marked slow) 2-process DeepSpeed ZeRO-2 and ZeRO-3-offload runs through the ``deepspeed`` launcher."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "train" / "tiny-smoke.yaml"
PHASES = {"text", "image", "audio", "video"}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """4 records of each phase + 3 broken ones (missing file, undecodable image, bad roles)."""
    from train.tiny_data import write_tiny_manifest

    return write_tiny_manifest(tmp_path_factory.mktemp("data"), per_phase=4, broken=3, seed=0)


def overrides(out: Path, manifest: Path, pipeline: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", f"data.manifests=[{manifest}]", f"model.pipeline={pipeline}", "model.config=null",
            "data.max_bad_fraction=0.5", "data.bad_min_seen=1", "optim.lr=0.01", "save_every=4", "keep_last=2",
            "log_every=1", *extra]


def train_cmd(out, manifest, pipeline, *extra) -> list[str]:
    return [sys.executable, "-m", "train", str(SMOKE), *overrides(out, manifest, pipeline, *extra)]


def read_log(out: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / f"rank-{rank}.jsonl").read_text().splitlines() if line]


def step_losses(log: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss/total"] for r in log if "loss/total" in r}


def assert_losses_fall_in_every_phase(log: list[dict]) -> None:
    by_phase: dict[str, list[float]] = {}
    for r in log:
        if "loss/total" in r and not r["skipped"]:
            by_phase.setdefault(r["phase"], []).append(r["loss/total"])
    assert set(by_phase) == PHASES, f"phases visited: {sorted(by_phase)}"
    for phase, losses in by_phase.items():
        assert losses[-1] < losses[0], f"{phase} loss did not fall: {losses}"


@pytest.fixture(scope="module")
def plain_run(manifest, tiny_pipeline_dir, tmp_path_factory) -> Path:
    """An uninterrupted 12-step `python -m train` run (the reference for the resume test)."""
    out = tmp_path_factory.mktemp("run") / "a"
    r = subprocess.run(train_cmd(out, manifest, tiny_pipeline_dir, "max_steps=12"), cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (out / "stderr.txt").write_text(r.stderr)
    return out


# ----------------------------------------------------------------------------- one process
def test_run_visits_every_phase_losses_fall_and_reports_bad_records(plain_run):
    log = read_log(plain_run)
    assert_losses_fall_in_every_phase(log)
    final = log[-1]
    assert final["final"] and final["step"] == 12 and final["nonfinite"] == 0
    # bad records: skipped, counted, logged with id and reason
    assert final["bad_records"] >= 2
    bad_ids = {i for r in log for i in r.get("bad", [])}
    assert bad_ids <= {"broken-000", "broken-001"} and bad_ids
    err = (plain_run / "stderr.txt").read_text()
    assert "bad record broken-002 skipped" in err and "roles" in err  # the unparseable one, with its reason
    assert any(f"bad record {i} skipped" in err for i in bad_ids)
    # checkpoints: the last two complete ones kept; TensorBoard written
    steps = sorted(p.name for p in (plain_run / "checkpoints").iterdir())
    assert steps == ["step-000008", "step-000012"]
    assert all((plain_run / "checkpoints" / s / "COMPLETE").is_file() for s in steps)
    assert list((plain_run / "tensorboard").glob("events.out.tfevents.*"))


def test_exported_model_loads_and_chats(plain_run, tiny_pipeline_dir, tmp_path):
    from codi2.cli import main as codi2_main
    from codi2.generation import SamplingOptions
    from codi2.pipeline import CoDi2Pipeline

    final = plain_run / "final"
    pipe = CoDi2Pipeline.from_pretrained(final)
    reply = pipe.chat("describe a red circle", SamplingOptions(max_new_tokens=12, prefix="Here <img>", seed=0, steps=2))
    assert reply.role == "assistant" and any(p.type == "image" and p.media is not None for p in reply.content)
    # the export holds the trained weights, not the starting ones
    start = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir).model
    a, b = pipe.model.heads["image"].trunk[0].weight, start.heads["image"].trunk[0].weight
    assert not torch.allclose(a, b)
    # and the image head's target-norm statistic, kept by the trainer (the tiny start never trained: 0)
    assert float(start.heads["image"].target_norm[0]) == 0.0 and float(pipe.model.heads["image"].target_norm[0]) > 0
    assert codi2_main(["chat", "--model", str(final), "hello", "--out", str(tmp_path / "o"), "--max-new-tokens", "3"]) == 0


def test_kill_9_and_resume_reproduces_the_losses(plain_run, manifest, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "b"
    cmd = train_cmd(out, manifest, tiny_pipeline_dir, "max_steps=12", "export=false", "tensorboard=false")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = out / "checkpoints" / "step-000004" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint at step 4 within 300 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "checkpoints" / "step-000012").exists(), "the run finished before it was killed"
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and "step-000004" in r.stderr
    want, got = step_losses(read_log(plain_run)), step_losses(read_log(out))
    assert sorted(got) == sorted(want) == list(range(12))
    for s in want:
        assert got[s] == pytest.approx(want[s], abs=1e-6, rel=0), f"step {s}: {got[s]} vs {want[s]}"
    assert read_log(out)[-1]["checksum"] == pytest.approx(read_log(plain_run)[-1]["checksum"], rel=1e-9)


# ----------------------------------------------------------------------------- in process
def _trainer(tmp_path, manifest, pipeline, *extra):
    from train.loop import Trainer, load_train_config

    cfg = load_train_config(str(SMOKE), overrides(tmp_path / "out", manifest, pipeline, "export=false",
                                                    "tensorboard=false", *extra))
    return Trainer(cfg)


def test_too_many_bad_records_stops_with_a_clear_message(tmp_path, manifest, tiny_pipeline_dir):
    from codi2.data import TooManyBadRecords

    t = _trainer(tmp_path, manifest, tiny_pipeline_dir, "max_steps=12", "data.max_bad_fraction=0.01")
    with pytest.raises(TooManyBadRecords, match=r"max_bad_fraction = 0.01.*broken-00"):
        t.run()


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, manifest, tiny_pipeline_dir, monkeypatch):
    import train.step
    from train.loop import NonFiniteLossError

    real = train.step.training_forward
    calls = {"n": 0}

    def flaky(*args):  # micro-batches 2 and 3 are NaN, then from 6 on always
        out = real(*args)
        calls["n"] += 1
        if calls["n"] in (2, 3) or calls["n"] >= 6:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(train.step, "training_forward", flaky)
    t = _trainer(tmp_path, manifest, tiny_pipeline_dir, "max_steps=20", "max_nonfinite_in_a_row=3")
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        t.run()
    log = read_log(tmp_path / "out")
    skipped = [r for r in log if r.get("skipped")]
    assert len(skipped) == 5 and t.nonfinite_total == 5
    # a skipped micro-batch does not step: 3 good micro-batches -> step 3
    assert t.step == 3


def test_stage1_trains_new_rows_projectors_heads_but_not_lora(tiny_cfg):
    from codi2.model import CoDi2Model
    from train.step import set_stage

    m = CoDi2Model(tiny_cfg)
    groups = set_stage(m, "projector_alignment")
    assert groups["lora"] == [] and groups["new_token_rows"] and groups["projectors"] and groups["heads"]
    assert not any(p.requires_grad for n, p in m.llm.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for p in m.encoder.parameters())
    trainable = {id(p) for g in groups.values() for p in g}
    assert {id(p) for p in m.parameters() if p.requires_grad} == trainable
    with pytest.raises(ValueError, match="allowed: projector_alignment, instruction_tuning"):
        set_stage(m, "stage3")


def test_freeze_keeps_named_groups_frozen_on_top_of_the_stage(tiny_cfg):
    """Re-fitting a head alone (configs/train/mini-video-head.yaml): the new token rows stay as they were."""
    from codi2.model import CoDi2Model
    from train.config import TrainConfig
    from train.step import set_stage

    m = CoDi2Model(tiny_cfg)
    groups = set_stage(m, "projector_alignment", freeze=["new_token_rows"])
    assert groups["lora"] == [] and groups["new_token_rows"] == [] and groups["projectors"] and groups["heads"]
    assert not any(p.requires_grad for n, p in m.llm.named_parameters() if "trainable_tokens" in n)
    assert {id(p) for p in m.parameters() if p.requires_grad} == {id(p) for g in groups.values() for p in g}
    assert set_stage(CoDi2Model(tiny_cfg), "instruction_tuning", freeze=["heads"])["lora"]
    with pytest.raises(ValueError, match="unknown parameter groups"):
        set_stage(CoDi2Model(tiny_cfg), "instruction_tuning", freeze=["lm_head"])
    with pytest.raises(ValueError, match="leaves nothing to train"):
        set_stage(CoDi2Model(tiny_cfg), "projector_alignment", freeze=["new_token_rows", "projectors", "heads"])
    with pytest.raises(ValueError, match=r"freeze = \['rows'\]: unknown \['rows'\]; allowed: lora, new_token_rows"):
        TrainConfig(freeze=["rows"]).check()


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    from train import checkpointing as ckpt

    for step in (2, 4, 6):
        final = ckpt.checkpoint_dir(tmp_path, step)
        tmp = ckpt.tmp_dir(final)
        tmp.mkdir(parents=True)
        ckpt.finalize(tmp, final, {"step": step})
        ckpt.prune(tmp_path, keep_last=2)
    # a save that crashed before its marker / rename is ignored, then removed
    crashed = ckpt.tmp_dir(ckpt.checkpoint_dir(tmp_path, 8))
    crashed.mkdir()
    (crashed / "trainable.pt").write_bytes(b"half")
    no_marker = ckpt.checkpoint_dir(tmp_path, 10)
    no_marker.mkdir()
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [4, 6]
    assert ckpt.resolve_resume("auto", tmp_path) == ckpt.checkpoint_dir(tmp_path, 6)
    assert ckpt.resolve_resume("none", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.resolve_resume(str(no_marker), tmp_path)
    ckpt.remove_stale_tmp(tmp_path)
    assert not crashed.exists()


def test_config_errors_name_the_field(tmp_path):
    from train.loop import load_train_config

    cfg = load_train_config(str(SMOKE), ["stage=stage3"])
    with pytest.raises(ValueError, match="stage = 'stage3'; allowed"):
        cfg.check()
    cfg = load_train_config(str(SMOKE), ["model.pipeline=/x"])
    with pytest.raises(ValueError, match="exactly one of model.pipeline"):
        cfg.check()
    with pytest.raises(ValueError, match="max_stepz"):
        load_train_config(str(SMOKE), ["max_stepz=3"])
    for bad, field in (("data.feature_cache_max_mb=0", "feature_cache_max_mb"),
                       ("dist_timeout_minutes=0", "dist_timeout_minutes")):
        with pytest.raises(ValueError, match=field):
            load_train_config(str(SMOKE), [bad]).check()


def test_full_scale_stage_configs_bound_the_feature_cache():
    from train.loop import load_train_config

    root = Path(__file__).resolve().parent.parent
    for name in ("codi2-7b-stage1-alignment.yaml", "codi2-7b-stage2-instruction.yaml"):
        cfg = load_train_config(str(root / "configs/train" / name))
        assert cfg.data.feature_cache == "disk", name
    assert load_train_config(str(SMOKE)).data.feature_cache_max_mb > 0


# ----------------------------------------------------------------------------- DeepSpeed, 2 processes
def _deepspeed(tmp_path, manifest, pipeline, ds_config: str, port: int, steps: int = 24) -> Path:
    out = tmp_path / "ds"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "train/train.py", str(SMOKE),
           *overrides(out, manifest, pipeline, f"max_steps={steps}", f"deepspeed={REPO / 'configs/deepspeed' / ds_config}",
                      "bf16=false", "save_every=12")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return out


def _check_ds_run(out: Path, steps: int) -> None:
    logs = [read_log(out, r) for r in (0, 1)]
    for log in logs:
        assert_losses_fall_in_every_phase(log)
    # ranks agree: same phase at every micro-batch, same trainable weights at the end
    assert [r["phase"] for r in logs[0][:-1]] == [r["phase"] for r in logs[1][:-1]]
    assert logs[0][-1]["step"] == logs[1][-1]["step"] == steps
    assert logs[0][-1]["checksum"] == logs[1][-1]["checksum"]
    # and they saw different records (disjoint shards): some step's losses differ
    assert any(a.get("loss/total") != b.get("loss/total") for a, b in zip(logs[0], logs[1]))
    assert (out / "checkpoints" / f"step-{steps:06d}" / "COMPLETE").is_file()
    from codi2.pipeline import CoDi2Pipeline

    assert CoDi2Pipeline.from_pretrained(out / "final").chat("hi").role == "assistant"


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_and_resume(tmp_path, manifest, tiny_pipeline_dir):
    out = _deepspeed(tmp_path, manifest, tiny_pipeline_dir, "zero2.json", 29581)
    _check_ds_run(out, 24)
    # resume from the DeepSpeed checkpoint at step 12: the same per-rank losses as the first run
    from codi2.pipeline import CoDi2Pipeline

    first = [step_losses(read_log(out, r)) for r in (0, 1)]
    norm = float(CoDi2Pipeline.from_pretrained(out / "final").model.heads["image"].target_norm[0])
    shutil.rmtree(out / "checkpoints" / "step-000024")
    shutil.rmtree(out / "final")
    _deepspeed(tmp_path, manifest, tiny_pipeline_dir, "zero2.json", 29583)
    for r in (0, 1):
        again = step_losses(read_log(out, r))
        assert sorted(again) == sorted(first[r])
        assert all(again[s] == pytest.approx(first[r][s], abs=1e-6, rel=0) for s in again)
    # the heads' target-norm statistic was restored with the weights and continued the same way
    resumed = CoDi2Pipeline.from_pretrained(out / "final").model.heads["image"].target_norm[0]
    assert norm > 0 and float(resumed) == pytest.approx(norm, rel=1e-6)


@pytest.mark.slow
def test_deepspeed_zero3_offload_two_processes(tmp_path, manifest, tiny_pipeline_dir):
    _check_ds_run(_deepspeed(tmp_path, manifest, tiny_pipeline_dir, "zero3-offload.json", 29582), 24)


def test_training_forward_equals_model_forward(tiny_model):
    """The DP-safe forward (every projector/head runs; LM head on supervised positions only) gives the
    model's own losses, and its gradient reaches every projector and head (zero where unused)."""
    from codi2.conversation import Message, Part
    from train.step import training_forward

    from .conftest import make_audio, make_image

    convs = [[Message("user", [Part("image", media=make_image(1)), Part.from_text("make it blue")]),
              Message("assistant", [Part.from_text("here"), Part("image", media=make_image(2))])],
             [Message("user", [Part("audio", media=make_audio(3)), Part.from_text("what is it")]),
              Message("assistant", "a sound")]]
    batch = tiny_model.collate(convs)
    with torch.no_grad():
        ref = tiny_model(batch)
    out = training_forward(tiny_model, batch, all_modules=True)
    alone = training_forward(tiny_model, batch, all_modules=False)
    assert set(out.parts) == set(alone.parts) == set(ref.parts) == {"text", "feature/image", "total"}
    for k in ref.parts:
        assert out.parts[k] == pytest.approx(ref.parts[k], abs=1e-5)
        assert alone.parts[k] == out.parts[k]
    out.loss.backward()
    try:
        assert tiny_model.projectors["video"].net[0].weight.grad is not None  # absent modality: ran, zero gradient
        assert float(tiny_model.projectors["video"].net[0].weight.grad.abs().sum()) == 0.0
        assert float(tiny_model.heads["image"].trunk[0].weight.grad.abs().sum()) > 0.0
    finally:
        tiny_model.zero_grad(set_to_none=True)


def test_training_forward_logs_each_round_of_a_dialogue(tiny_model):
    """The trainer's forward reports the feature loss per assistant reply as the model's own forward does
    (`loss/feature/<m>/reply<k>` in the run's log)."""
    from codi2.conversation import Message, Part
    from train.step import training_forward

    from .conftest import make_image

    conv = [Message("user", "Draw a red circle."), Message("assistant", [Part("image", media=make_image(3))]),
            Message("user", "Make it blue."), Message("assistant", [Part("image", media=make_image(4))])]
    batch = tiny_model.collate([conv])
    with torch.no_grad():
        ref = tiny_model(batch)
        out = training_forward(tiny_model, batch, all_modules=True)
    assert {"feature/image/reply1", "feature/image/reply2"} <= set(out.parts)
    for k in ref.parts:
        assert out.parts[k] == pytest.approx(ref.parts[k], abs=1e-5)
    assert out.parts["feature/image"] == pytest.approx(
        (out.parts["feature/image/reply1"] + out.parts["feature/image/reply2"]) / 2, rel=1e-5)
