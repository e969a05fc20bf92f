import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from codi2.checkpoint import CheckpointError
from codi2.cli import main
from codi2.conversation import Message, Part
from codi2.generation import ChatSession, MediaDone, SamplingOptions
from codi2.media import Audio, Video
from codi2.pipeline import CoDi2Pipeline

from .conftest import make_audio, make_image, make_video

ALL_OUT = SamplingOptions(prefix="Here <img> and <aud> and <vid>", max_new_tokens=24, temperature=0.0, seed=0)


def _mixed_turn():
    return Message("user", [Part("image", media=make_image(0)), Part.from_text("this one"),
                            Part("image", media=make_image(1)), Part("audio", media=make_audio(0)),
                            Part("video", media=make_video(0)), Part.from_text("Remix all of them.")])


def _conditioning(pipe, opts):
    events = list(pipe.session().stream(_mixed_turn(), opts))
    return [e.conditioning for e in events if isinstance(e, MediaDone)], events[-1].message


def test_mixed_inputs_to_text_image_audio_video_over_three_turns(tiny_pipeline_dir):
    pipe = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)
    s = pipe.session()
    reply = s.send(_mixed_turn(), ALL_OUT)
    kinds = [p.type for p in reply.content]
    assert kinds[:6] == ["text", "image", "text", "audio", "text", "video"]
    media = {p.type: p.media for p in reply.content if p.type != "text"}
    assert media["image"].size[0] > 0
    assert isinstance(media["audio"], Audio) and media["audio"].samples.size > 0
    assert isinstance(media["video"], Video) and media["video"].frames.ndim == 4
    # turns 2 and 3 reuse the cache, and equal a session that re-encodes everything
    ref = ChatSession(pipe.model, use_cache=False)
    ref.send(_mixed_turn(), dataclasses.replace(ALL_OUT, decode=False))  # same tokens, no diffusion
    for text in ("Make the image blue.", "Now louder."):
        opts = SamplingOptions(max_new_tokens=8, temperature=0.0, seed=1, decode=False)
        assert s.send(text, opts).to_dict() == ref.send(text, opts).to_dict()


def test_save_load_gives_identical_outputs(tiny_pipeline_dir, tmp_path):
    pipe = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)
    opts = SamplingOptions(prefix="Here <img> and <aud>", max_new_tokens=6, temperature=0.0, seed=0, decode=False)
    before, _ = _conditioning(pipe, opts)
    torch.manual_seed(1)
    for group in pipe.model.trainable_parameters().values():
        for p in group:
            torch.nn.init.normal_(p, std=0.2)  # as if trained: LoRA B, new rows, projectors, heads all change
    changed, reply = _conditioning(pipe, opts)
    assert not torch.allclose(before[0]["image_embeds"], changed[0]["image_embeds"])
    pipe.save_pretrained(tmp_path / "saved")
    loaded = CoDi2Pipeline.from_pretrained(tmp_path / "saved")
    again, reply2 = _conditioning(loaded, opts)
    assert reply2.to_dict() == reply.to_dict()
    for a, b in zip(changed, again):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_checkpoint_missing_a_head_weight_fails_naming_it(tiny_pipeline_dir, tmp_path):
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, d)
    sd = load_file(str(d / "projectors_heads.safetensors"))
    victim = next(k for k in sd if k.startswith("heads.audio") and not k.endswith(".target_norm"))  # a weight
    del sd[victim]
    save_file(sd, str(d / "projectors_heads.safetensors"))
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        CoDi2Pipeline.from_pretrained(d)


def test_checkpoint_saved_before_target_norms_loads_without_rescaling(tiny_pipeline_dir, tmp_path):
    import shutil

    d = tmp_path / "old"
    shutil.copytree(tiny_pipeline_dir, d)
    sd = load_file(str(d / "projectors_heads.safetensors"))
    stats = [k for k in sd if k.endswith(".target_norm")]
    assert stats and all(k.startswith("heads.") for k in stats)
    save_file({**sd, **{k: torch.full_like(sd[k], 3.0) for k in stats}}, str(d / "projectors_heads.safetensors"))
    model = CoDi2Pipeline.from_pretrained(d).model  # saved with the statistic: read back
    assert all(h.target_norm.tolist() == [3.0] * len(h.shapes) for h in model.heads.values())
    save_file({k: v for k, v in sd.items() if k not in stats}, str(d / "projectors_heads.safetensors"))
    model = CoDi2Pipeline.from_pretrained(d).model  # saved before it existed: loads, outputs not rescaled
    assert all(float(h.target_norm.abs().sum()) == 0.0 for h in model.heads.values())


def test_checkpoint_missing_adapter_or_lora_key_fails(tiny_pipeline_dir, tmp_path):
    import shutil

    d = tmp_path / "noadapter"
    shutil.copytree(tiny_pipeline_dir, d)
    sd = load_file(str(d / "adapter" / "adapter_model.safetensors"))
    victim = next(k for k in sd if "lora_B" in k)
    del sd[victim]
    save_file(sd, str(d / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="lora_B"):
        CoDi2Pipeline.from_pretrained(d)
    shutil.rmtree(d / "adapter")
    with pytest.raises(CheckpointError, match="adapter"):
        CoDi2Pipeline.from_pretrained(d)


def test_adapter_is_standard_peft(tiny_pipeline_dir):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(tiny_pipeline_dir / "llm"))
    peft_model = PeftModel.from_pretrained(base, str(tiny_pipeline_dir / "adapter"))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())


def test_saved_adapter_names_its_base_relative_to_the_directory(tiny_pipeline_dir, tmp_path):
    # peft records where the base weights were loaded from (an absolute path of this machine); the directory
    # must name its own base instead, so it can be moved and shipped
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    pipe = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)
    out = pipe.save_pretrained(tmp_path / "moved", self_contained=True)
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "llm"
    assert str(tmp_path) not in (out / "adapter" / "adapter_config.json").read_text()
    for f in ("adapter_config.json", "README.md"):  # README.md: peft's model card
        assert str(tiny_pipeline_dir) not in (out / "adapter" / f).read_text(), f
    assert "base_model: llm" in (out / "adapter" / "README.md").read_text()
    base = LlamaForCausalLM.from_pretrained(str(out / saved["base_model_name_or_path"]))
    assert any("lora_A" in n for n, _ in PeftModel.from_pretrained(base, str(out / "adapter")).named_parameters())


def test_diffusion_loss_flows_into_the_head(tiny_pipeline_dir):
    pipe = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir, overrides=["modalities.image.head.diffusion_loss_weight=1.0"])
    model = pipe.model.train()
    conv = [Message("user", "Draw it."), Message("assistant", [Part("image", media=make_image(3))])]
    out = model(model.collate([conv]))
    assert "diffusion/image" in out.parts and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.heads["image"].parameters())


def test_cli_chat_writes_media_and_manifest(tiny_pipeline_dir, tmp_path, capsys):
    from codi2.media import save_audio, save_image, save_video

    save_image(make_image(0), tmp_path / "a.png")
    save_audio(make_audio(0), tmp_path / "b.wav")
    save_video(make_video(0), tmp_path / "c.mp4", fps=4)
    out = tmp_path / "out"
    rc = main(["chat", "--model", str(tiny_pipeline_dir), "--image", str(tmp_path / "a.png"),
               "--audio", str(tmp_path / "b.wav"), "--video", str(tmp_path / "c.mp4"), "Remix these.",
               "--prefix", "Here <img> and <aud>", "--max-new-tokens", "12", "--out", str(out), "--json"])
    assert rc == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest == json.loads((out / "reply.json").read_text())
    written = [p for p in manifest["messages"][1]["content"] if p["type"] != "text"]
    assert [p["type"] for p in written][:2] == ["image", "audio"]
    for p in written:
        assert (out / p["path"]).stat().st_size > 0


def test_cli_chat_bad_media_is_a_clear_error(tiny_pipeline_dir, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    rc = main(["chat", "--model", str(tiny_pipeline_dir), "--image", str(bad), "hi", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "notes.png" in capsys.readouterr().err


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        CoDi2Pipeline.from_pretrained(tmp_path)
