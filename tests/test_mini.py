"""The mini model's component stages (train.mini) at tiny size: each runs a few steps and writes an artifact
that loads through the real loader."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from codi2.config import DecoderConfig, load_model_config
from train.mini import STAGES, load_stage_config, register
from train.mini.common import all_objects, world_batch, world_sample
from codi2.modality import Modality

from .conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
TINY_ARCH = {"block_out_channels": [8, 16], "vae_block_out_channels": [8, 16], "norm_num_groups": 4,
             "attention_head_dim": 2, "vae_steps": 1, "vocoder_steps": 1, "unet_steps": 2, "batch_size": 2,
             "vae_batch_size": 2, "pool_size": 3, "vocoder_channels": 8}


# ----------------------------------------------------------------------------- configs and data
def test_stage_configs_and_mini_model_config_load():
    for stage, name in zip(STAGES, ("mini-encoder", "mini-decoders", "mini-llm")):
        cfg = load_stage_config(stage, str(REPO / "configs" / "train" / f"{name}.yaml"))
        assert type(cfg).__name__.endswith("Config")
    with pytest.raises(ValueError, match="steps"):
        load_stage_config("encoder", None, ["stepz=3"])
    from train.loop import load_train_config

    stages = {n: load_train_config(str(REPO / "configs" / "train" / f"{n}.yaml"))
              for n in ("mini-stage1", "mini-stage2", "mini-stage3", "mini-stage4", "mini-stage5", "mini-stage6",
                        "mini-stage7", "mini-stage9", "mini-video-head")}
    assert stages["mini-stage1"].stage == "projector_alignment"
    for n in (2, 3, 4, 5, 6, 7):  # the recipe's chain of exports
        assert stages[f"mini-stage{n}"].model.pipeline.endswith(f"stage{n - 1}/final")
    assert any(m.endswith("icl/manifest.jsonl") for m in stages["mini-stage4"].data.manifests)
    assert stages["mini-stage3"].phases.weights["image"] > stages["mini-stage2"].phases.weights["image"]
    assert {m.split("/")[-2] for m in stages["mini-stage5"].data.manifests} == {"train", "icl", "vidx", "mrx"}
    assert stages["mini-stage5"].phases.weights["video"] > stages["mini-stage4"].phases.weights["video"]
    # stage 6 adds in-context and fresh picture records and keeps stage 5's attention-only LoRA (widening it to the
    # MLP did no better on pictures and cost sounds: the config says so; the widening itself is tested in test_llm)
    six = stages["mini-stage6"]
    assert {m.split("/")[-2] for m in six.data.manifests} == {"train", "icl", "icl7", "img8", "vidx", "mrx"}
    assert not [o for o in six.model.overrides if o.startswith("llm.lora.")]
    assert load_model_config("mini").llm.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # the video-head re-fit: projector alignment (LLM and LoRA frozen) on the video phase alone
    head = stages["mini-video-head"]
    assert head.stage == "projector_alignment" and head.phases.weights["video"] > 0
    assert all(w == 0 for k, w in head.phases.weights.items() if k != "video")
    # stage 7, the editing pass: the three-round dialogues, fresh edits and open prompts on top of the instruction set,
    # the picture head's feature loss weighted up (a model override, so stages 1-6 keep the config's weight)
    seven = stages["mini-stage7"]
    assert seven.stage == "instruction_tuning"
    assert {m.split("/")[-2] for m in seven.data.manifests} == {"train", "icl", "mrx", "mr13", "mr15", "ed14", "open12"}
    assert seven.phases.weights["multi"] > six.phases.weights["multi"]
    assert "modalities.image.head.loss_weight=10.0" in seven.model.overrides
    assert load_model_config("mini", seven.model.overrides).modalities["image"].head.loss_weight == 10.0
    assert load_model_config("mini").modalities["image"].head.loss_weight == 1.0
    # stage 9, the second in-context picture pass: stage 6 again (its data, weights and optimiser) for half the steps,
    # from stage 8's export (stage 7 + the video head), without stage 7's picture-loss weighting
    nine = stages["mini-stage9"]
    assert nine.model.pipeline.endswith("stage8/final") and not nine.model.overrides
    assert nine.data.manifests == six.data.manifests and nine.phases == six.phases and nine.optim == six.optim
    assert nine.stage == six.stage and nine.batch_size == six.batch_size and nine.max_steps == six.max_steps // 2
    mini = load_model_config("mini")
    assert mini.modalities["image"].head.targets["image_embeds"] == [mini.encoder.out_embed_dim]
    assert mini.modalities["audio"].head.targets["prompt_embeds"][0] == mini.modalities["audio"].decoder.prompt_len
    assert mini.encoder.image_size == 64


def test_recipe_script_trains_each_stage_on_its_configs_data():
    """scripts/train_mini.sh overrides each trainer stage's manifests with its own run folder: the folders it names
    must be the config's, and every one of them built by the script; the bundle is the last stage's export."""
    import re

    from train.loop import load_train_config

    script = (REPO / "scripts" / "train_mini.sh").read_text()
    built = set(re.findall(r'^build "\$RUN/data/(\w+)"', script, re.M))
    calls = re.findall(r'codi2 train (configs/train/[\w-]+\.yaml) output_dir="\$RUN/(\w+)".*?'
                       r'"data\.manifests=\[([^\]]*)\]"', script, re.S)
    assert [c[1] for c in calls] == [f"stage{n}" for n in range(1, 17)]
    for cfg_path, stage, manifests in calls:
        dirs = [m.split("/")[-2] for m in manifests.split(",")]
        assert set(dirs) <= built, (stage, set(dirs) - built)
        cfg = load_train_config(str(REPO / cfg_path))
        assert dirs == [m.split("/")[-2] for m in cfg.data.manifests], stage
    # the bundle: the last stage's export
    assert 'train.mini.bundle "$FINAL"' in script and 'FINAL="$RUN/stage16/final"' in script
    assert "WORDS" not in script


def test_world_samples_are_seeded_and_splits_differ():
    a = world_sample("image", 3, seed=0, split="train")
    b = world_sample("image", 3, seed=0, split="train")
    c = world_sample("image", 3, seed=0, split="test")
    assert np.array_equal(np.asarray(a.media), np.asarray(b.media)) and a.caption == b.caption
    assert not np.array_equal(np.asarray(a.media), np.asarray(c.media))
    v = world_batch("video", 0, 2, seed=1)
    assert {"shape", "colour", "size", "direction"} == set(v[0].attrs) and v[0].media.frames.shape[0] == 12
    assert len(all_objects("image")) == 240 and len(all_objects("audio")) == 48 and len(all_objects("video")) == 192


def test_atomic_dir_replaces_on_success_and_removes_what_killed_runs_left(tmp_path):
    import subprocess

    from codi2.io import atomic_dir

    target = tmp_path / "audio"
    target.mkdir()
    (target / "old.txt").write_text("old")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".audio.tmp-{dead.pid}-abc"  # a killed run's build folder
    live = tmp_path / f".audio.tmp-{os.getpid()}-xyz"  # a running process's (this one)
    other = tmp_path / ".video.tmp-1-abc"  # another target's
    for d in (stale, live, other):
        d.mkdir()
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("crash")
    assert (target / "old.txt").is_file() and not tmp.exists()  # a crash keeps the target and removes its build
    assert not stale.exists() and live.is_dir() and other.is_dir()
    with atomic_dir(target) as tmp:
        assert tmp.name.startswith(f".audio.tmp-{os.getpid()}-")
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_register_adds_train_component():
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["train-component", "llm", "cfg.yaml", "steps=3"])
    assert (args.stage, args.config, args.overrides) == ("llm", "cfg.yaml", ["steps=3"]) and callable(args.func)
    with pytest.raises(SystemExit):
        p.parse_args(["train-component", "vae", "cfg.yaml"])


# ----------------------------------------------------------------------------- stage 1: encoder
def test_contrastive_loss_counts_equal_attributes_as_positives():
    from codi2.encoders import ImageBindModel
    from train.mini.encoder_align import contrastive_loss

    model = ImageBindModel(load_model_config("tiny").encoder, frozen=False)
    e = torch.eye(4, 16)
    aligned, acc = contrastive_loss(model, e, e, [("a",), ("b",), ("c",), ("d",)])
    shuffled, _ = contrastive_loss(model, e, e[[1, 2, 3, 0]], [("a",), ("b",), ("c",), ("d",)])
    assert acc == 1.0 and aligned < shuffled
    # two samples with equal attributes: retrieving either one counts as right
    e2 = torch.stack([e[0], e[0], e[1]])
    _, acc2 = contrastive_loss(model, e2, e2, [("a",), ("a",), ("b",)])
    assert acc2 == 1.0


def test_train_timesteps_over_sample_high_noise():
    from train.mini.decoder_train import DecoderArch, train_timesteps

    def draw(fraction):
        return train_timesteps(4000, DecoderArch(high_noise_fraction=fraction, high_noise_from=900),
                               torch.Generator().manual_seed(0))

    uniform, half, high = draw(0.0), draw(0.5), draw(1.0)
    assert int(uniform.min()) >= 0 and int(uniform.max()) <= 999
    assert 0.07 < float((uniform >= 900).float().mean()) < 0.13  # a tenth of uniform draws
    assert 0.5 < float((half >= 900).float().mean()) < 0.6  # half, plus a tenth of the other half
    assert int(high.min()) >= 900 and int(high.max()) <= 999
    assert torch.equal(draw(0.5), half)  # seeded


def test_judge_accuracy_keys():
    from train.mini.decoder_train import attribute_accuracy

    truth = [{"shape": "star", "colour": "red", "size": "small", "direction": "up"},
             {"shape": "circle", "colour": "blue", "size": "large", "direction": "left"}]
    said = [{"shape": ("star", 0.9), "colour": ("red", 0.8), "size": ("large", 0.7), "direction": ("up", 0.9)},
            {"shape": ("star", 0.9), "colour": ("blue", 0.8), "size": ("large", 0.7), "direction": ("right", 0.6)}]
    acc = attribute_accuracy(said, truth)
    assert acc["colour"] == 1.0 and acc["direction"] == 0.5 and acc["shape+colour"] == 0.5 and acc["all"] == 0.0
    assert acc["colour+direction"] == 0.5
    still = [{k: v for k, v in t.items() if k != "direction"} for t in truth]
    assert "colour+direction" not in attribute_accuracy(said, still)  # images and sounds have no direction


def test_encoder_stage_writes_a_strictly_loadable_checkpoint(tmp_path):
    from codi2.encoders import ImageBindModel, load_imagebind_weights
    from train.mini.encoder_align import EncoderAlignConfig, train_encoder

    out = tmp_path / "enc.pth"
    cfg = EncoderAlignConfig(model="tiny", out=str(out), steps=2, batch_size=3, warmup_steps=1, eval_n=3,
                             pool_size=4, lr=1e-2)
    report = train_encoder(cfg)
    model = ImageBindModel(load_model_config("tiny").encoder)
    assert load_imagebind_weights(model, out) == []
    init = float(torch.log(torch.tensor(1 / 0.07)))
    assert float(model.modality_postprocessors["text"][1].log_logit_scale) != pytest.approx(init)  # it trained
    saved = json.loads(out.with_name("enc.pth.json").read_text())
    assert saved["retrieval"]["image"]["candidates"] == 240 and 0.0 <= saved["retrieval"]["audio"]["top1"] <= 1.0
    assert report["cpu_seconds_per_step"] > 0 and set(report["final_loss"]) == {"image", "audio", "video"}


def test_encoder_stage_killed_mid_run_goes_on_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    """Killed in its 4th step (checkpoint after step 2), started again (its run folder moved meanwhile): the same
    weights as a run never stopped; a run with other settings is refused, naming them; resume=false starts over."""
    import dataclasses
    import shutil

    from train.mini.encoder_align import EncoderAlignConfig, train_encoder

    def cfg(name, **kw):
        return EncoderAlignConfig(model="tiny", out=str(tmp_path / name / "enc.pth"), steps=4, batch_size=3,
                                  warmup_steps=1, eval_n=2, eval_every=2, pool_size=4, lr=1e-2, checkpoint_every=2,
                                  log_every=0, **kw)

    straight = train_encoder(cfg("straight"))
    state = tmp_path / "killed" / ".enc.pth.resume"
    with monkeypatch.context() as mp:
        _killed_at(mp, 4)
        with pytest.raises(KeyboardInterrupt):
            train_encoder(cfg("killed"))
    assert torch.load(state / "align.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "killed" / "enc.pth").exists()
    with pytest.raises(ValueError, match=r"different run \(differs in: run\.lr\)"):
        train_encoder(dataclasses.replace(cfg("killed"), lr=2e-2))
    shutil.move(tmp_path / "killed", tmp_path / "moved")  # paths are not part of the run: it resumes elsewhere
    killed = train_encoder(cfg("moved"))
    assert not (tmp_path / "moved" / ".enc.pth.resume").exists()
    assert killed["resumed_after_step"] == 2 and "resumed_after_step" not in straight
    assert killed["final_loss"] == straight["final_loss"] and killed["evals"] == straight["evals"]
    a = torch.load(tmp_path / "straight" / "enc.pth", weights_only=True)
    b = torch.load(tmp_path / "moved" / "enc.pth", weights_only=True)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    # resume = false discards the state and trains from the first step
    with monkeypatch.context() as mp:
        _killed_at(mp, 3)
        with pytest.raises(KeyboardInterrupt):
            train_encoder(cfg("over"))
    assert (tmp_path / "over" / ".enc.pth.resume" / "align.pt").is_file()
    over = train_encoder(cfg("over", resume=False))
    assert "resumed_after_step" not in over and not (tmp_path / "over" / ".enc.pth.resume").exists()
    assert over["final_loss"] == straight["final_loss"]


# ----------------------------------------------------------------------------- stage 3: LLM
def test_llm_stage_builds_a_codi2_model_from_the_pretrained_dir(tmp_path):
    from train.mini.llm_pretrain import LLMArchitecture, LLMPretrainConfig, pretrain_llm, world_conversations
    from codi2.model import CoDi2Model

    convs = world_conversations(16, world_seed=0)
    text = " ".join(m["content"] for c in convs for m in c)
    assert "[image: " in text and "[audio: " in text and {m["role"] for c in convs for m in c} == {"user", "assistant"}

    out = tmp_path / "llm"
    cfg = LLMPretrainConfig(out=str(out), arch=LLMArchitecture(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                               num_attention_heads=4, num_key_value_heads=4,
                                                               max_position_embeddings=128),
                            vocab_size=400, n_records=48, n_val_records=16, n_captions=16, block_size=32, batch_size=2,
                            steps=2, warmup_steps=1, eval_batches=1)
    report = pretrain_llm(cfg)
    assert (out / "tokenizer.model").is_file() and (out / "config.json").is_file() and report["val_loss"] > 0
    mcfg = load_model_config("mini", [f"llm.path={out}", f"llm.tokenizer={out / 'tokenizer.model'}", "encoder.weights=null"])
    model = CoDi2Model(mcfg)
    assert model.tokenizer.vocab_size == report["vocab_size"] and model.llm.hidden_size == 32
    # the chat markers are single pieces of the new tokenizer
    assert len(model.tokenizer.encode("[INST]", add_special_tokens=False)) == 1


def test_llm_stage_killed_mid_run_goes_on_with_its_tokenizer_and_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    """Killed in its 4th step, started again under another ``out`` (its state moved with it): the tokenizer is the
    one the checkpoint was trained with (not trained again), and the model is the same, bit for bit, as that of a
    run never stopped."""
    import dataclasses
    import shutil

    import sentencepiece as spm

    import codi2.llm
    from train.mini.llm_pretrain import LLMArchitecture, LLMPretrainConfig, pretrain_llm
    from safetensors.torch import load_file

    arch = LLMArchitecture(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=4, max_position_embeddings=128)
    base = LLMPretrainConfig(arch=arch, vocab_size=400, n_records=48, n_val_records=16, n_captions=16, block_size=32,
                             batch_size=2, steps=4, warmup_steps=1, eval_batches=1, log_every=0, checkpoint_every=2)
    straight = pretrain_llm(dataclasses.replace(base, out=str(tmp_path / "straight")))
    cfg = dataclasses.replace(base, out=str(tmp_path / "killed"))
    state = tmp_path / ".killed.resume"
    with monkeypatch.context() as mp:
        _killed_at(mp, 4)
        with pytest.raises(KeyboardInterrupt):
            pretrain_llm(cfg)
    assert torch.load(state / "llm.pt", weights_only=True)["step"] == 2
    kept = (state / "tokenizer.model").read_bytes()
    assert not (tmp_path / "killed").exists() and not list(tmp_path.glob(".killed.tmp-*"))
    with pytest.raises(ValueError, match=r"differs in: run\.arch\.hidden_size"):
        pretrain_llm(dataclasses.replace(cfg, arch=dataclasses.replace(arch, hidden_size=64)))
    (tmp_path / "elsewhere").mkdir()
    shutil.move(state, tmp_path / "elsewhere" / ".killed.resume")
    with monkeypatch.context() as mp:  # the kept tokenizer is used: training another would fail here
        mp.setattr(codi2.llm, "train_sentencepiece", lambda *a, **k: pytest.fail("tokenizer trained again"))
        killed = pretrain_llm(dataclasses.replace(cfg, out=str(tmp_path / "elsewhere" / "killed")))
    assert not (tmp_path / "elsewhere" / ".killed.resume").exists()
    assert killed["resumed_after_step"] == 2 and "resumed_after_step" not in straight
    assert killed["final_loss"] == straight["final_loss"] and killed["val_loss"] == straight["val_loss"]
    s, k = tmp_path / "straight", tmp_path / "elsewhere" / "killed"
    assert (k / "tokenizer.model").read_bytes() == kept  # the file itself (it names its build folder) ...
    pieces = [[(p.id_to_piece(i), p.get_score(i)) for i in range(p.get_piece_size())]
              for p in (spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")) for d in (s, k))]
    assert pieces[0] == pieces[1] and len(pieces[0]) > 300  # ... and the same pieces as the straight run's
    a, b = load_file(s / "model.safetensors"), load_file(k / "model.safetensors")
    assert a.keys() == b.keys() and [n for n in a if not torch.equal(a[n], b[n])] == []


# ----------------------------------------------------------------------------- stage 2: decoders
def _decoder_cfg(tmp_path: Path, modalities: list[str]):
    from codi2.encoders import ImageBindModel
    from train.mini.decoder_train import DecoderArch, DecoderTrainConfig

    enc = tmp_path / "enc.pth"
    torch.manual_seed(0)
    torch.save(ImageBindModel(load_model_config("tiny").encoder).state_dict(), enc)
    arch = {m: DecoderArch(**TINY_ARCH) for m in ("image", "audio", "video")}
    return DecoderTrainConfig(model="tiny", encoder_weights=str(enc), out=str(tmp_path / "dec"), modalities=modalities,
                              eval_n=0, log_every=0, **arch)


def test_decoder_stage_image_and_video_pipelines_decode(tmp_path):
    from codi2.decoders import build_decoder
    from train.mini.decoder_train import build_pipeline, train_decoders
    from codi2.media import Video

    cfg = _decoder_cfg(tmp_path, ["image", "video"])
    reports = train_decoders(cfg)
    assert reports["image"]["unet"]["steps"] == 2 and "vae" not in reports["video"]  # video reuses the image VAE
    out = Path(cfg.out)
    image = build_decoder("image", DecoderConfig(path=str(out / "image"), steps=2, guidance=2.0))
    imgs = image.decode({"image_embeds": torch.randn(1, 16)}, seed=0)
    assert imgs[0].size == (64, 64) and not image.pipe.scheduler.config.clip_sample  # DDIM must not clip latents
    untrained = build_pipeline("image", cfg.image, load_model_config("tiny"), seed=cfg.seed)
    trained = image.pipe.unet.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in untrained.unet.state_dict().items())
    assert image.pipe.vae.config.scaling_factor != untrained.vae.config.scaling_factor
    video = build_decoder("video", DecoderConfig(path=str(out / "video"), steps=2, guidance=2.0, num_frames=2))
    vid = video.decode(video.targets(["a red circle moving up"]), seed=0)[0]
    assert isinstance(vid, Video) and vid.frames.shape == (2, 64, 64, 3)
    for k, v in image.pipe.vae.state_dict().items():
        assert torch.equal(v, video.pipe.vae.state_dict()[k])
    # continue the image UNet from the trained pipeline (init = out): the VAE stays, the UNet moves on
    import dataclasses

    vae_before = {k: v.clone() for k, v in image.pipe.vae.state_dict().items()}
    more = dataclasses.replace(cfg, modalities=["image"], init=cfg.out,
                               image=dataclasses.replace(cfg.image, vae_steps=0, unet_steps=3))
    rep = train_decoders(more)["image"]
    assert rep["unet"]["steps"] == 3 and "vae" not in rep and rep["previous"]["unet"]["steps"] == 2
    again = build_decoder("image", DecoderConfig(path=str(out / "image"), steps=2)).load()
    assert all(torch.equal(v, again.pipe.vae.state_dict()[k]) for k, v in vae_before.items())
    assert any(not torch.equal(v, again.pipe.unet.state_dict()[k]) for k, v in trained.items())
    # the VAE's decoder half alone: the encoder, and so the latents every UNet was trained on, stay as they are
    unet_before = {k: v.clone() for k, v in again.pipe.unet.state_dict().items()}
    sharpen = dataclasses.replace(cfg, modalities=["image"], init=cfg.out, image=dataclasses.replace(
        cfg.image, vae_steps=3, vae_decoder_only=True, unet_steps=0))
    rep = train_decoders(sharpen)["image"]
    assert rep["vae"]["decoder_only"] and rep["vae"]["scaling_factor"] == again.pipe.vae.config.scaling_factor
    sharp = build_decoder("image", DecoderConfig(path=str(out / "image"), steps=2)).load()
    after = sharp.pipe.vae.state_dict()
    halves = {"encoder": [k for k in after if k.startswith(("encoder.", "quant_conv."))],
              "decoder": [k for k in after if k.startswith(("decoder.", "post_quant_conv."))]}
    assert halves["encoder"] and all(torch.equal(after[k], vae_before[k]) for k in halves["encoder"])
    assert any(not torch.equal(after[k], vae_before[k]) for k in halves["decoder"])
    assert sharp.pipe.vae.config.scaling_factor == again.pipe.vae.config.scaling_factor
    assert all(torch.equal(v, sharp.pipe.unet.state_dict()[k]) for k, v in unet_before.items())
    with pytest.raises(ValueError, match="image.vae_decoder_only trains the VAE's decoder half during image.vae_steps"):
        train_decoders(dataclasses.replace(sharpen, image=dataclasses.replace(sharpen.image, vae_steps=0)))
    # video: clip steps with every 2nd a frame batch, switching to a
    # zero-terminal-SNR v-prediction schedule that training (DDPM) and both samplers then use
    video_before = {k: v.clone() for k, v in video.pipe.unet.state_dict().items()}
    assert video.pipe.scheduler.config.prediction_type == "epsilon"
    frames = dataclasses.replace(cfg, modalities=["video"], init=cfg.out, video=dataclasses.replace(
        cfg.video, frame_every=2, frame_batch_size=3, unet_steps=2, prediction_type="v_prediction",
        zero_snr=True, high_noise_fraction=0.5, high_noise_from=900))
    rep = train_decoders(frames)["video"]
    assert rep["unet"]["high_noise_fraction"] == 0.5 and rep["unet"]["high_noise_from"] == 900
    assert rep["unet"]["steps"] == 2 and rep["unet"]["frame_batch_size"] == 3
    assert rep["unet"]["frame_every"] == 2 and rep["unet"]["final_frame_loss"] > 0
    assert rep["schedule_changed"] == {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                       "timestep_spacing": "trailing"}
    assert "schedule_changed" not in train_decoders(dataclasses.replace(  # already set: nothing to change
        frames, video=dataclasses.replace(frames.video, unet_steps=1)))["video"]
    moved = build_decoder("video", DecoderConfig(path=str(out / "video"), steps=2, guidance=2.0, num_frames=2)).load()
    assert any(not torch.equal(v, moved.pipe.unet.state_dict()[k]) for k, v in video_before.items())
    for name in ("dpm++", "ddim"):
        sched = moved.make_scheduler(name)
        assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) < 1e-6
        sched.set_timesteps(2)
        assert int(sched.timesteps[0]) == 999  # sampling starts from pure noise, where training's last step is
        vid = moved.decode(moved.targets(["a red circle moving up"]), seed=0, scheduler=name)[0]
        assert vid.frames.shape == (2, 64, 64, 3) and np.isfinite(vid.frames).all()
    # benchmarks/terminal_leak.py on it: zero terminal SNR leaves nothing of the clip in x_999
    from data_builders.world.judges import JudgeConfig, Judges

    leak = load_benchmark("terminal_leak")
    res = leak.probe(str(out / "video"), Judges(JudgeConfig(width=4, hidden=8, modalities=("video",))), 2, [999, 500])
    assert res["prediction_type"] == "v_prediction" and res["rescale_betas_zero_snr"]
    assert [r["t"] for r in res["rows"]] == [999, 500] and res["rows"][0]["sqrt_alpha_bar"] < 1e-3
    captioned = leak.probe(str(out / "video"), Judges(JudgeConfig(width=4, hidden=8, modalities=("video",))), 2,
                           [999], conditioning="caption")
    assert captioned["conditioning"] == "caption" and captioned["rows"][0]["conditioning"] == "caption"
    with pytest.raises(ValueError, match="conditioning 'none'; allowed: empty, caption"):
        leak.probe(str(out / "video"), None, 2, [999], conditioning="none")
    x0, eps = torch.randn(2, 4), torch.randn(2, 4)
    for ab in (torch.tensor(0.3), torch.tensor(0.9)):
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        assert torch.allclose(leak.x0_estimate(eps, x_t, ab, "epsilon"), x0, atol=1e-5)
        assert torch.allclose(leak.x0_estimate(v, x_t, ab, "v_prediction"), x0, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        leak.x0_estimate(eps, x0, torch.tensor(0.5), "sample")
    with pytest.raises(ValueError, match="image.frame_every"):
        train_decoders(dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, frame_every=1)))
    with pytest.raises(ValueError, match="video.frame_batch_size"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, frame_batch_size=0)))
    with pytest.raises(ValueError, match=r"video.high_noise_fraction = 1.5; must be in \[0, 1\]"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, high_noise_fraction=1.5)))
    with pytest.raises(ValueError, match="audio.vocoder_level_weight = -1"):
        train_decoders(dataclasses.replace(cfg, modalities=["audio"],
                                           audio=dataclasses.replace(cfg.audio, vocoder_level_weight=-1.0)))
    with pytest.raises(ValueError, match="video.high_noise_from = 1000"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, high_noise_from=1000)))
    with pytest.raises(ValueError, match="video.zero_snr needs video.prediction_type: v_prediction"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, zero_snr=True)))
    with pytest.raises(ValueError, match="video.prediction_type"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, prediction_type="x0")))


def test_decoder_stage_audio_pipeline_decodes(tmp_path):
    from codi2.decoders import build_decoder
    from train.mini.decoder_train import stft_loss, train_decoders
    from codi2.media import Audio

    cfg = _decoder_cfg(tmp_path, ["audio"])
    report = train_decoders(cfg)["audio"]
    assert report["vocoder"]["steps"] == 1 and report["unet"]["cpu_seconds_per_step"] > 0
    dec = build_decoder("audio", DecoderConfig(path=str(Path(cfg.out) / "audio"), steps=2, guidance=2.0,
                                               audio_seconds=0.5, prompt_len=8))
    (audio,) = dec.decode(dec.targets(["the sound of a small red circle"]), seed=0)
    assert isinstance(audio, Audio) and audio.sample_rate == 16000 and audio.samples.shape[-1] == 8000
    x = torch.randn(2, 4000)
    assert float(stft_loss(x, x)) == pytest.approx(0.0, abs=1e-5) and float(stft_loss(x, -0.5 * x)) > 0.1
    # log_mel: normalise=False keeps the level (the vocoder's mel loss on segments), True does not
    w = torch.sin(torch.arange(4000) / 5.0)[None]
    assert torch.allclose(dec.log_mel(w), dec.log_mel(3 * w), atol=1e-2)
    assert float((dec.log_mel(3 * w, normalise=False) - dec.log_mel(w, normalise=False)).mean()) > 0.5


def test_vocoder_continues_or_is_rebuilt_when_its_architecture_changes(tmp_path, caplog):
    import dataclasses

    from codi2.decoders import build_decoder
    from train.mini.decoder_train import train_decoders, vocoder_matches
    from data_builders.world.judges import JudgeConfig, Judges

    cfg = _decoder_cfg(tmp_path, ["audio"])  # tiny: hop 125, the coarse pitch grid
    with caplog.at_level(logging.WARNING, logger="train.mini.decoder_train"):
        rep = train_decoders(cfg)["audio"]
    assert rep["vocoder_pitch_error_cents"]["red"] > 100
    assert any("multiples of 128.0 Hz" in r.getMessage() for r in caplog.records)
    first = build_decoder("audio", DecoderConfig(path=str(Path(cfg.out) / "audio"))).load()
    assert vocoder_matches(first.pipe.vocoder, cfg.audio)
    # same architecture: the vocoder continues; a wider one is trained anew (and probed with the judges)
    Judges(JudgeConfig(width=4, hidden=8, modalities=("audio",))).save(tmp_path / "judges")
    wider = dataclasses.replace(cfg.audio, vae_steps=0, unet_steps=0, vocoder_steps=2, vocoder_channels=16,
                                vocoder_segment_frames=8, vocoder_level_weight=20.0)
    more = dataclasses.replace(cfg, init=cfg.out, out=str(tmp_path / "more"), audio=wider,
                               judges=str(tmp_path / "judges"), eval_n=2)
    rep = train_decoders(more)["audio"]
    assert rep["vocoder_rebuilt"] and rep["vocoder"]["segment_frames"] == 8
    assert "unet" not in rep and "precompute_seconds" not in rep  # no UNet steps: no latents precomputed
    assert [p["step"] for p in rep["vocoder"]["probes"]] == [1, 2] and "all" in rep["vocoder"]["probes"][0]
    probe = rep["vocoder"]["probes"][-1]  # the level kept, overall and per timbre
    assert probe["rms_ratio"] > 0 and {f"rms_ratio_{s}" for s in ("circle", "square", "triangle", "star")} & set(probe)
    assert rep["vocoder"]["level_weight"] == 20.0
    second = build_decoder("audio", DecoderConfig(path=str(tmp_path / "more" / "audio"))).load()
    assert second.pipe.vocoder.config.upsample_initial_channel == 16 and vocoder_matches(second.pipe.vocoder, wider)
    same = dataclasses.replace(cfg, init=cfg.out, out=str(tmp_path / "same"),
                               audio=dataclasses.replace(cfg.audio, vae_steps=0, unet_steps=0))
    assert "vocoder_rebuilt" not in train_decoders(same)["audio"]
    bad = dataclasses.replace(more, out=str(tmp_path / "bad"), audio=dataclasses.replace(wider, mel_bins=32))
    with pytest.raises(ValueError, match="mel_bins"):
        train_decoders(bad)


def _pipeline_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{f.parent.name}/{k}": v for f in sorted(folder.glob("*/*.safetensors")) for k, v in load_file(f).items()}


def _killed_at(monkeypatch, n: int) -> None:
    """Every training step of every loop clips its gradients once: the n-th such call (1-based) raises."""
    clip, calls = torch.nn.utils.clip_grad_norm_, [0]

    def clip_or_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt("killed")
        return clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_or_die)


@pytest.mark.parametrize("case", ["audio", "video_init"])
def test_decoder_stage_killed_mid_run_goes_on_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch, case):
    """A run killed in a loop and started again restores the loops it finished, continues the one it was in from
    its last checkpoint, and writes the same weights as a run never stopped. ``video_init`` is the recipe's
    ``VID_MORE`` step: more UNet steps on a trained pipeline, ``init`` = ``out``. The killed run's folder is moved
    before it starts again: paths are not part of the run, what they hold is."""
    import dataclasses
    import shutil

    from train.mini.decoder_train import train_decoders

    if case == "audio":  # every loop: VAE (3 steps), vocoder (3), UNet (4)
        base = _decoder_cfg(tmp_path, ["audio"])
        base = dataclasses.replace(base, checkpoint_every=2, audio=dataclasses.replace(
            base.audio, vae_steps=3, vocoder_steps=3, unet_steps=4))
        kill, m = 3 + 3 + 4, "audio"  # in the UNet's 4th step: its checkpoint after step 2 is the last
        prepare = lambda out: None  # noqa: E731
    else:
        first = _decoder_cfg(tmp_path, ["image", "video"])
        train_decoders(dataclasses.replace(first, out=str(tmp_path / "trained")))
        base = dataclasses.replace(first, modalities=["video"], checkpoint_every=2, video=dataclasses.replace(
            first.video, unet_steps=4, frame_every=0, high_noise_fraction=0.5, high_noise_from=850))
        kill, m = 4, "video"

        def prepare(out):
            import shutil
            shutil.copytree(tmp_path / "trained", out)
    runs = {}
    for name in ("straight", "killed"):
        out = tmp_path / name
        prepare(out)
        cfg = dataclasses.replace(base, out=str(out), init=str(out) if case == "video_init" else None)
        if name == "killed":
            before = _pipeline_tensors(out / m) if case == "video_init" else None
            with monkeypatch.context() as mp:
                _killed_at(mp, kill)
                with pytest.raises(KeyboardInterrupt):
                    train_decoders(cfg)
            state = out / f".{m}.resume"
            assert (state / "unet.pt").is_file() and torch.load(state / "unet.pt", weights_only=True)["step"] == 2
            assert not list(out.glob(f".{m}.tmp-*"))  # the build folder went with the crash; the state did not
            if before is not None:  # init = out: the pipeline is untouched until the run is done
                after = _pipeline_tensors(out / m)
                assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)
            # a different run is refused, naming what differs; it neither uses nor removes the state
            with pytest.raises(ValueError, match=r"different run \(differs in: arch\.unet_steps\)"):
                train_decoders(dataclasses.replace(cfg, **{m: dataclasses.replace(getattr(cfg, m), unet_steps=6)}))
            assert (state / "unet.pt").is_file()
            shutil.move(out, tmp_path / "moved")
            out = tmp_path / "moved"
            cfg = dataclasses.replace(cfg, out=str(out), init=str(out) if case == "video_init" else None)
        runs[name] = train_decoders(cfg)[m]
        assert not (out / f".{m}.resume").exists()  # written: the checkpoints are gone
    straight, killed = runs["straight"], runs["killed"]
    assert "resumed_after_step" not in straight["unet"] and killed["unet"]["resumed_after_step"] == 2
    if case == "audio":
        assert killed["vae"]["resumed_after_step"] == 3 and killed["vocoder"]["resumed_after_step"] == 3
    assert killed["unet"]["final_loss"] == straight["unet"]["final_loss"]
    a, b = _pipeline_tensors(tmp_path / "straight" / m), _pipeline_tensors(tmp_path / "moved" / m)
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_decoder_stage_resume_false_starts_over(tmp_path, monkeypatch):
    import dataclasses

    from train.mini.decoder_train import train_decoders

    cfg = _decoder_cfg(tmp_path, ["audio"])
    cfg = dataclasses.replace(cfg, checkpoint_every=1)
    with monkeypatch.context() as mp:
        _killed_at(mp, 3)  # the vocoder's first step: the VAE's (1 step) is saved
        with pytest.raises(KeyboardInterrupt):
            train_decoders(cfg)
    assert (Path(cfg.out) / ".audio.resume" / "vae.pt").is_file()
    rep = train_decoders(dataclasses.replace(cfg, resume=False))["audio"]
    assert "resumed_after_step" not in rep["vae"] and not (Path(cfg.out) / ".audio.resume").exists()
    with pytest.raises(ValueError, match="checkpoint_every = -1"):
        train_decoders(dataclasses.replace(cfg, checkpoint_every=-1))


def test_decoder_stage_rejects_mismatched_head_targets(tmp_path):
    from train.mini.decoder_train import DecoderArch, build_pipeline

    mcfg = load_model_config("tiny", ["modalities.image.head.targets.image_embeds=[24]"])
    with pytest.raises(ValueError, match="out_embed_dim"):
        build_pipeline("image", DecoderArch(**TINY_ARCH), mcfg)


# ----------------------------------------------------------------------------- the bundle
def test_bundle_ships_the_judges_and_eval_finds_them(tmp_path, tiny_pipeline_dir, monkeypatch):
    from codi2.eval import EvalConfig
    from codi2.eval import runner as R
    from train.mini.bundle import bundle
    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world import build_world
    from data_builders.world.judges import JudgeConfig, Judges

    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    run = tmp_path / "run"
    run.mkdir()
    (run / "encoder.pth.json").write_text(json.dumps({"retrieval": {"image": {"top1": 0.5}}}))
    for stage in ("stage10", "stage2", "stage5b", "stage1"):  # numeric order; a probe folder (stage5b) is no stage
        (run / stage).mkdir()
        (run / stage / "train_config.json").write_text(json.dumps({"max_steps": len(stage)}))
    with pytest.raises(FileNotFoundError, match="judges.json"):
        bundle(tiny_pipeline_dir, tmp_path / "b", tmp_path / "no-judges", run_dir=run)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        bundle(tmp_path, tmp_path / "b", tmp_path / "judges", run_dir=run)
    # a trainer export names its components by absolute path (as the mini recipe's runs/mini/... are)
    src = tmp_path / "export"
    shutil.copytree(tiny_pipeline_dir, src, ignore=shutil.ignore_patterns("llm", "encoder", "decoders"))
    text = (src / "config.yaml").read_text()
    for rel in ("encoder/imagebind.pth", "llm", "decoders/image", "decoders/audio", "decoders/video"):
        text = re.sub(rf"(weights|path): {rel}\n", rf"\1: {tiny_pipeline_dir / rel}\n", text)
    (src / "config.yaml").write_text(text)
    assert str(tiny_pipeline_dir / "decoders" / "video") in text
    out = tmp_path / "codi2-mini"
    out.mkdir()
    (out / "stale.txt").write_text("an older bundle")  # replaced whole, not merged
    monkeypatch.chdir(tmp_path)  # given relative, the source is recorded absolute (reproduce tells a run's own bundle by it)
    recipe = bundle(Path("export"), out, tmp_path / "judges", run_dir=run)
    assert recipe["source"] == str(src.resolve())
    assert not (out / "stale.txt").exists() and not (tmp_path / "codi2-mini.tmp").exists()
    assert (out / "judges" / "judges.safetensors").is_file()
    assert recipe["components"] == {"encoder": {"retrieval": {"image": {"top1": 0.5}}}}
    assert list(recipe["stages"]) == ["stage1", "stage2", "stage10"] and recipe["stages"]["stage10"]["max_steps"] == 7
    on_disk = json.loads((out / "recipe.json").read_text())
    assert on_disk["total_mb"] == recipe["total_mb"] > 0 and "judges" in on_disk["bytes"]
    assert str(tmp_path) not in (out / "config.yaml").read_text()  # self-contained: every path relative
    moved = tmp_path / "moved"
    out.rename(moved)
    pipe = CoDi2Pipeline.from_pretrained(moved)  # still a strict codi2 model directory, wherever it is
    assert pipe.model.decoder(Modality.VIDEO).cfg.path.startswith(str(moved))
    # float16 on disk, float32 in memory, and the same model up to float16 rounding
    from safetensors import safe_open

    with safe_open(str(moved / "projectors_heads.safetensors"), "pt") as h:
        assert {h.get_tensor(k).dtype for k in h.keys()} == {torch.float16}
    ref = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)
    x = torch.randn(2, 3, ref.model.encoder.out_dim)
    for m in ("image", "audio"):
        got, want = pipe.model.projectors[m](x), ref.model.projectors[m](x)
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=2e-2, rtol=1e-2)
    assert all(p.dtype == torch.float32 for p in pipe.model.encoder.parameters())
    # the encoder's text tower is left out; vision and audio are those of the source
    assert pipe.model.cfg.encoder.towers == ["vision", "audio"]
    assert not any(".text." in k for k in torch.load(moved / "encoder" / "imagebind.pth", weights_only=True))
    with pytest.raises(ValueError, match="no text tower"):
        pipe.model.encoder.encode_text(torch.zeros(1, pipe.model.cfg.encoder.text_context_length, dtype=torch.long))
    img = torch.rand(1, 3, ref.model.cfg.encoder.image_size, ref.model.cfg.encoder.image_size)
    assert torch.allclose(pipe.model.encoder.encode_image(img).embed, ref.model.encoder.encode_image(img).embed,
                          atol=2e-2, rtol=1e-2)
    assert {p.dtype for p in pipe.model.llm.base.parameters()} == {torch.float32}
    dec = pipe.model.decoder(Modality.IMAGE).load()
    assert dec.pipe.unet.dtype == torch.float32 and dec.pipe.vae.dtype == torch.float32
    moved.rename(out)
    world = build_world(tmp_path / "world", n=1, seed=0, tasks=["caption_image"], split="test")
    suite = R.build_suite(EvalConfig(suite="world", model=str(out), data=str(world)), model=object())
    assert suite.judges_dir == out / "judges"  # --judges defaults to the model's own



def test_bundle_continued_from_a_bundle_keeps_its_recipe(tmp_path, tiny_pipeline_dir):
    """Stages run from a bundle (a folder with only those stages) add to the base bundle's stages and components."""
    from data_builders.world.judges import JudgeConfig, Judges
    from train.mini.bundle import bundle

    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    run = tmp_path / "run"
    (run / "stage11").mkdir(parents=True)
    (run / "stage11" / "train_config.json").write_text(json.dumps({"max_steps": 11}))
    base = tmp_path / "base_recipe.json"
    base.write_text(json.dumps({"components": {"llm": {"ppl": 1.3}}, "total_mb": 55.0,
                                "stages": {"stage1": {"max_steps": 1}, "stage10": {"max_steps": 10}}}))
    with pytest.raises(ValueError, match="recipe.json"):
        bundle(tiny_pipeline_dir, tmp_path / "b", tmp_path / "judges", run_dir=run, base_recipe=tmp_path / "judges" / "judges.json")
    recipe = bundle(tiny_pipeline_dir, tmp_path / "b", tmp_path / "judges", run_dir=run, base_recipe=base,
                    made_by="stage 11 from the stage-10 bundle")
    assert list(recipe["stages"]) == ["stage1", "stage10", "stage11"] and recipe["stages"]["stage11"]["max_steps"] == 11
    assert recipe["components"] == {"llm": {"ppl": 1.3}} and recipe["base"] == {"total_mb": 55.0}
    assert json.loads((tmp_path / "b" / "recipe.json").read_text())["made_by"] == "stage 11 from the stage-10 bundle"

def test_mel_level_loss_weighs_bins_by_energy():
    """A pure tone is one loud bin among quiet ones: the log-mel L1 charges a loud bin 2 nats too quiet the
    same as two quiet bins 1 nat too loud; the level term charges the quiet loud bin and barely the leak."""
    import torch.nn.functional as F

    from train.mini.decoder_train import mel_level_loss

    target = torch.full((1, 4, 8), -9.0)
    target[..., 3] = 0.0  # the tone's bin, every frame
    quiet = target.clone()
    quiet[..., 3] -= 2.0  # the tone at e^-2 of its level
    leaky = target.clone()
    leaky[..., [1, 5]] += 1.0  # leakage into two quiet bins
    assert float(F.l1_loss(quiet, target)) == pytest.approx(float(F.l1_loss(leaky, target)))
    assert float(mel_level_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(mel_level_loss(quiet, target)) == pytest.approx(1 - np.exp(-2.0), rel=1e-3)
    assert float(mel_level_loss(leaky, target)) < 1e-3
    assert float(mel_level_loss(torch.full_like(target, -11.5), target)) == pytest.approx(1.0, abs=1e-3)


def test_vocoder_pitch_grid_flags_the_hop_that_cost_the_colours():
    """A HiFi-GAN generator holds a steady tone only at multiples of its frame rate (sr / hop); the old hop 125
    (128 Hz) moved every world pitch by more than a semitone, the recipe's hop 500 (32 Hz) by under 70 cents."""
    from train.mini.decoder_train import DecoderTrainConfig, PITCH_ERROR_WARN_CENTS, vocoder_pitch_errors

    old = vocoder_pitch_errors([5, 5, 5], 16000)
    assert old["red"] == pytest.approx(1200 * np.log2(256 / 220), abs=0.1)  # 220 Hz -> 256 Hz, orange's pitch
    assert old["green"] < -PITCH_ERROR_WARN_CENTS  # 440 Hz -> 384 Hz, heard as yellow
    assert all(abs(e) > PITCH_ERROR_WARN_CENTS for e in old.values())
    recipe = load_stage_config("decoder", str(REPO / "configs" / "train" / "mini-decoders.yaml")).audio
    assert recipe.vocoder_upsample_rates == DecoderTrainConfig().audio.vocoder_upsample_rates  # default = recipe
    assert int(np.prod(recipe.vocoder_upsample_rates)) == 500
    new = vocoder_pitch_errors(recipe.vocoder_upsample_rates, 16000)
    assert set(new) == set(old) and max(abs(e) for e in new.values()) < 70


def test_video_text_encoder_learns_the_direction_the_unet_must_read(tmp_path, caplog):
    """video.text_encoder_steps teaches the video decoder's CLIP text encoder the world's attributes at every
    position from the end of the caption on: the four directions of one caption stop looking alike."""
    import dataclasses
    import logging

    from transformers import AutoTokenizer, CLIPTextModel

    from codi2.decoders import build_decoder
    from train.mini.decoder_train import build_pipeline, direction_cosine, train_decoders

    cfg = _decoder_cfg(tmp_path, ["image", "video"])
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, text_encoder_steps=60, text_encoder_lr=3e-3),
                              # the tiny model's 16 byte tokens would cut the direction off the caption
                              model_overrides=["modalities.video.head.targets.prompt_embeds=[48,16]"])
    rep = train_decoders(cfg)["video"]["text_encoder"]
    assert rep["steps"] == 60 and set(rep["held_out_accuracy"]) == {"shape", "colour", "size", "direction"}
    assert rep["direction_cosine_after"] < rep["direction_cosine_before"] - 0.05, rep
    assert rep["held_out_accuracy"]["direction"] > 0.5, rep  # chance is 0.25
    path = Path(cfg.out) / "video"
    te = CLIPTextModel.from_pretrained(str(path / "text_encoder"))
    assert direction_cosine(te, AutoTokenizer.from_pretrained(str(path / "tokenizer"))) == rep["direction_cosine_after"]
    untrained = build_pipeline("video", cfg.video, load_model_config("tiny", cfg.model_overrides),
                               seed=cfg.seed).text_encoder
    assert any(not torch.equal(v, te.state_dict()[k]) for k, v in untrained.state_dict().items())
    # the decoder's targets and its unconditional conditioning come from the trained one
    dec = build_decoder("video", DecoderConfig(path=str(path), steps=2, num_frames=2)).load()
    tok = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    ids = tok(["a red circle moving up"], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(dec.targets(["a red circle moving up"])["prompt_embeds"], te(ids).last_hidden_state,
                              atol=1e-5)
    # continuing it without UNet steps warns that the UNet was trained on the old conditioning
    with caplog.at_level(logging.WARNING, logger="train.mini.decoder_train"):
        train_decoders(dataclasses.replace(cfg, modalities=["video"], init=cfg.out, video=dataclasses.replace(
            cfg.video, text_encoder_steps=2, unet_steps=0)))
    assert "no UNet step runs" in caplog.text
    with pytest.raises(ValueError, match="image.text_encoder_steps is for video only"):
        train_decoders(dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, text_encoder_steps=5)))
    with pytest.raises(ValueError, match="video.text_encoder_steps = -1"):
        train_decoders(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, text_encoder_steps=-1)))


def test_bundle_takes_decoder_sampling_settings_from_the_model_config(tmp_path, tiny_pipeline_dir):
    """A run folder begun before a sampling default changed exports the old value; the bundle sets the model
    config's (configs/model/mini.yaml for the recipe) and records what it changed. No weight is touched."""
    import dataclasses

    from train.mini.bundle import bundle
    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.judges import JudgeConfig, Judges

    Judges(JudgeConfig(width=4, hidden=8)).save(tmp_path / "judges")
    (tmp_path / "run").mkdir()
    text = (REPO / "configs" / "model" / "tiny.yaml").read_text()
    line = "    decoder: {steps: 2, guidance: 2.0}\n"  # the image decoder's
    assert text.count(line) == 1
    newer = tmp_path / "newer.yaml"
    newer.write_text(text.replace(line, "    decoder: {steps: 3, guidance: 1.25, scheduler: dpm++}\n"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        bundle(tiny_pipeline_dir, tmp_path / "b", tmp_path / "judges", run_dir=tmp_path / "run",
               sampling_from=tmp_path / "nope.yaml")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.tmp").exists()
    recipe = bundle(tiny_pipeline_dir, tmp_path / "b", tmp_path / "judges", run_dir=tmp_path / "run",
                    sampling_from=newer, fp16=False)
    assert recipe["decoder_sampling"] == {
        "from": str(newer),
        "changed": {"image": {"steps": [2, 3], "guidance": [2.0, 1.25], "scheduler": ["ddim", "dpm++"]}}}
    cfg = CoDi2Pipeline.from_pretrained(tmp_path / "b").model.cfg
    src = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir).model.cfg
    img = cfg.modalities["image"].decoder
    assert (img.steps, img.guidance, img.scheduler) == (3, 1.25, "dpm++")
    assert img.loss_noise_level == src.modalities["image"].decoder.loss_noise_level
    assert cfg.modalities["audio"].decoder == dataclasses.replace(
        src.modalities["audio"].decoder, path=cfg.modalities["audio"].decoder.path)  # only what differs is set
    assert cfg.modalities["image"].head == src.modalities["image"].head
    # the same source config again changes nothing; keeping the export's settings records None
    assert bundle(tmp_path / "b", tmp_path / "c", tmp_path / "judges", run_dir=tmp_path / "run",
                  sampling_from=newer, fp16=False)["decoder_sampling"]["changed"] == {}
    assert bundle(tiny_pipeline_dir, tmp_path / "d", tmp_path / "judges", run_dir=tmp_path / "run",
                  fp16=False)["decoder_sampling"] is None


# ----------------------------------------------------------------------------- does a re-run reproduce the bundle?
def test_reproduce_compares_a_run_folder_with_the_bundle_record_and_weights(tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from train.mini.reproduce import compare_run, main

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    for d in (run / "llm", run / "decoders" / "image", run / "decoders" / "audio", bundle / "encoder", bundle / "llm"):
        d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    enc = {"vision.w": torch.randn(3, 2, generator=g), "text.w": torch.randn(2, generator=g)}
    torch.save(enc, run / "encoder.pth")
    torch.save({"vision.w": enc["vision.w"].half()}, bundle / "encoder" / "imagebind.pth")  # no text tower
    llm = {"embed": torch.randn(4, 2, generator=g), "w": torch.randn(2, 2, generator=g)}
    save_file(llm, run / "llm" / "model.safetensors")
    grown = torch.cat([llm["embed"], torch.randn(2, 2, generator=g)])  # + media-token rows of the trainer stages
    save_file({"embed": grown.half(), "w": llm["w"].half()}, bundle / "llm" / "model.safetensors")
    reports = {"encoder": {"steps": 2, "final_loss": {"image": 0.5}, "retrieval": {"image": {"top1": 0.9}}, "evals": []},
               "llm": {"steps": 2, "vocab_size": 4, "final_loss": 0.3, "val_loss": 0.25, "sample": "a red circle"}}
    (run / "encoder.pth.json").write_text(json.dumps(reports["encoder"]))
    (run / "llm" / "pretrain.json").write_text(json.dumps(reports["llm"]))
    fresh = {"vae": {"steps": 3, "final_mse": 0.01}, "unet": {"steps": 4, "final_loss": 0.7}}
    (run / "decoders" / "image" / "train.json").write_text(json.dumps(fresh))
    (run / "decoders" / "audio" / "train.json").write_text(json.dumps({"vocoder": {"steps": 3, "final_loss": 13.25}}))
    recipe = {"components": {**reports, "decoder_image": {"unet": {"steps": 9, "final_loss": 0.6}, "previous": fresh},
                             "decoder_audio": {"vocoder": {"steps": 3, "final_loss": 13.5}},
                             "decoder_video": {"unet": {"steps": 1, "final_loss": 0.7}}}}
    (bundle / "recipe.json").write_text(json.dumps(recipe))

    res = compare_run(run, bundle)
    c = res["components"]
    assert c["encoder"]["equal"] and c["encoder"]["weights"]["files"]["encoder/imagebind.pth"]["compared"] == 1
    assert c["llm"]["equal"] and c["llm"]["weights"]["files"]["llm/model.safetensors"]["first_rows_only"] == 1
    # the run's fresh image decoder against the bundle's fresh one; its weights wait for the bundle's 2nd step
    assert c["decoder_image"]["equal"] and c["decoder_image"]["steps"] == 1 and "skipped" in c["decoder_image"]["weights"]
    assert set(c["decoder_image"]["fields"]) == {"step1.vae.steps", "step1.vae.final_mse", "step1.unet.steps",
                                                 "step1.unet.final_loss"}
    audio = c["decoder_audio"]  # a loss that differs is named, with by how much; so are its missing weights
    assert not audio["equal"] and audio["fields"]["step1.vocoder.final_loss"]["abs_diff"] == pytest.approx(0.25)
    assert res["reproduced"] == ["encoder", "llm", "decoder_image"] and res["differ"] == ["decoder_audio"]
    assert res["not_in_run"] == ["decoder_video"]
    assert main([str(run), "--bundle", str(bundle), "--out", str(tmp_path / "r.json")]) == 1
    printed = capsys.readouterr().out
    assert "llm: 5 reported figures exactly; 2 tensors equal" in printed
    assert "decoder_audio (1 of the bundle's 1 steps): 2 reported figures NOT: step1.vocoder.final_loss 13.25 vs 13.5" in printed
    assert json.loads((tmp_path / "r.json").read_text())["differ"] == ["decoder_audio"]

    # one weight off by a float16 step is found, and how far
    llm["w"][0, 0] += 0.01
    save_file(llm, run / "llm" / "model.safetensors")
    w = compare_run(run, bundle)["components"]["llm"]["weights"]["files"]["llm/model.safetensors"]
    assert w["differ"] == ["w"] and 0.005 < w["max_abs_diff"] < 0.02
    assert main([str(run), "--bundle", str(bundle)]) == 1  # the line says how many tensors differ, and where
    printed = capsys.readouterr().out
    assert "llm: 5 reported figures exactly; 1 of 2 compared tensors equal, NOT: llm/model.safetensors: 1 of 2, " \
           "max |diff| 0.0" in printed and "weights NOT compared: the bundle holds none for it" in printed
    shutil.rmtree(run / "decoders" / "audio")
    (run / "llm" / "model.safetensors").unlink()
    assert not compare_run(run, bundle)["components"]["llm"]["equal"]  # a weight file the run lacks
    assert main([str(run), "--bundle", str(bundle)]) == 1
    assert "llm/model.safetensors: the run has no such file" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # not a bundle: a clear error, exit status 2
        main([str(run), "--bundle", str(run)])
    assert "recipe.json not found" in capsys.readouterr().err

    # a bundle made from this run's own export (the script re-run after its bundle step): nothing compared, the
    # comparison written before the bundle was replaced is kept
    out = tmp_path / "r.json"
    before = out.read_text()
    recipe["source"] = str(run / "stage10" / "final")
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    assert main([str(run), "--bundle", str(bundle), "--out", str(out)]) == 0
    assert "was made from this run folder" in capsys.readouterr().out and out.read_text() == before
    recipe["source"] = str(tmp_path / "elsewhere" / "stage10" / "final")  # another run's: compared as before
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    assert main([str(run), "--bundle", str(bundle), "--out", str(out)]) == 1
    monkeypatch.chdir(run)  # a relative source is not placed against the working folder: compared as before
    recipe["source"] = "stage10/final"
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    assert main([str(run), "--bundle", str(bundle), "--out", str(out)]) == 1
