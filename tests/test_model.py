import math

import pytest
import torch

from codi2.conversation import Message, Part
from codi2.model import CoDi2Model
from codi2.modality import Modality

from .conftest import make_audio, make_image, make_video


def _convs():
    return [
        [Message("user", [Part("image", media=make_image(0)), Part("image", media=make_image(1)),
                          Part("audio", media=make_audio(0)), Part("video", media=make_video(0)),
                          Part.from_text("Combine these.")]),
         Message("assistant", [Part.from_text("Here:"), Part("image", media=make_image(2))])],
        [Message("user", "Say hello."), Message("assistant", "Hello there.")],
    ]


def test_collate_places_every_span(tiny_model):
    b = tiny_model.collate(_convs())
    assert b.input_ids.shape[0] == 2
    assert b.inputs[Modality.IMAGE].features.shape == (2, 17, 16)
    assert b.inputs[Modality.AUDIO].features.shape == (1, 1, 16)
    assert b.inputs[Modality.VIDEO].features.shape == (1, 4, 16)
    assert b.outputs[Modality.IMAGE].targets["image_embeds"].shape == (1, 16)
    ids = b.input_ids
    s = b.inputs[Modality.IMAGE]
    for row, start in zip(s.batch_index.tolist(), s.start.tolist()):
        assert ids[row, start:start + 17].eq(tiny_model.builder.ids["[IMG_IN]"]).all()
    # padding is masked and unsupervised
    assert b.attention_mask[1].sum() < b.attention_mask[0].sum()
    assert (b.labels[1][b.attention_mask[1] == 0] == -100).all()


def _three_rounds():
    """Round 1 draws, round 2 answers in words, round 3 draws again."""
    return [Message("user", "Draw a red circle."), Message("assistant", [Part("image", media=make_image(3))]),
            Message("user", "What colour is it?"), Message("assistant", "Red."),
            Message("user", "Now make it blue."), Message("assistant", [Part("image", media=make_image(4))])]


@pytest.mark.parametrize("system_prompt", ["", "You are a helpful assistant."])
def test_feature_loss_is_logged_per_round_of_a_dialogue(tiny_cfg, system_prompt):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, llm=dataclasses.replace(tiny_cfg.llm, system_prompt=system_prompt))
    torch.manual_seed(0)
    model = CoDi2Model(cfg).train()
    batch = model.collate([_convs()[0], _three_rounds()])
    s = batch.outputs[Modality.IMAGE]
    assert s.batch_index.tolist() == [0, 1, 1] and s.reply.tolist() == [1, 1, 3]
    assert batch.to("cpu").outputs[Modality.IMAGE].reply.tolist() == [1, 1, 3]
    out = model(batch)
    assert {"feature/image/reply1", "feature/image/reply3"} <= set(out.parts)
    assert "feature/image/reply2" not in out.parts  # round 2 made no picture
    # the rounds' losses make up the whole: two spans in round 1, one in round 3
    whole = (2 * out.parts["feature/image/reply1"] + out.parts["feature/image/reply3"]) / 3
    assert out.parts["feature/image"] == pytest.approx(whole, rel=1e-5)
    assert out.parts["feature/image/reply1"] != pytest.approx(out.parts["feature/image/reply3"])
    # one round only: no per-round keys (they would repeat feature/image)
    assert not any("/reply" in k for k in model(model.collate(_convs())).parts)


def test_media_features_change_the_embedding(tiny_model):
    b = tiny_model.collate(_convs()[:1])
    e1 = tiny_model.embed(b.input_ids, b.inputs)
    b.inputs[Modality.IMAGE].features = b.inputs[Modality.IMAGE].features + 1.0
    e2 = tiny_model.embed(b.input_ids, b.inputs)
    s = b.inputs[Modality.IMAGE]
    start = int(s.start[0])
    assert not torch.allclose(e1[0, start:start + 17], e2[0, start:start + 17])
    assert torch.equal(e1[0, :start - 1], e2[0, :start - 1])


def test_training_forward_gradients_only_on_trainable_parts(tiny_cfg):
    torch.manual_seed(0)
    model = CoDi2Model(tiny_cfg).train()
    out = model(model.collate(_convs()))
    assert set(out.parts) == {"text", "feature/image", "total"}
    assert all(math.isfinite(v) for v in out.parts.values())
    out.loss.backward()
    trainable = {id(p) for group in model.trainable_parameters().values() for p in group}
    groups = model.trainable_parameters()
    assert all(len(groups[g]) > 0 for g in ("lora", "new_token_rows", "projectors", "heads"))
    for name, p in model.named_parameters():
        if id(p) in trainable:
            continue
        assert p.grad is None, f"{name} is frozen but got a gradient"
    # LoRA B starts at zero, so B gets gradients (A does not yet); new rows, projectors and the image head all do
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["lora"])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["new_token_rows"])
    assert all(p.grad is not None for p in model.projectors.parameters())
    assert all(p.grad is not None for p in model.heads["image"].parameters())
    assert all(p.grad is None for p in model.heads["audio"].parameters())  # no audio output in this batch
    assert not any(p.requires_grad for p in model.encoder.parameters())
    # training keeps the mean norm of the image targets (the cosine loss leaves the outputs' scale free)
    target = model.collate(_convs()).outputs[Modality.IMAGE].targets["image_embeds"]
    assert float(model.heads["image"].target_norm[0]) == pytest.approx(float(target.norm(dim=-1).mean()), rel=1e-4)
    assert float(model.heads["audio"].target_norm[0]) == 0.0  # no audio output seen
    model(model.collate(_convs())).loss.backward()  # with the statistic set: rescaled outputs still train
    model.eval()
    with torch.no_grad():
        model(model.collate([_convs()[0]]))
    assert float(model.heads["image"].target_norm[0]) == pytest.approx(float(target.norm(dim=-1).mean()), rel=1e-4)


def test_encode_media_uses_the_cache(tiny_model):
    cache = {}
    parts = [Part("image", media=make_image(5)), Part("image", media=make_image(5))]
    f = tiny_model.encode_media(Modality.IMAGE, parts, cache)
    assert len(cache) == 1 and torch.equal(f[0], f[1])
    cache[next(iter(cache))] = torch.zeros_like(f[0])  # a cache hit must not re-encode
    assert tiny_model.encode_media(Modality.IMAGE, [Part("image", media=make_image(5))], cache).abs().sum() == 0


def test_output_without_caption_cannot_make_audio_target(tiny_model):
    with pytest.raises(ValueError, match="no caption"):
        tiny_model.compute_targets(Modality.AUDIO, [Part("audio", media=make_audio(0))])
