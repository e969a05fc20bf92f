import pytest
import torch
import torch.nn.functional as F

from codi2.config import InputProjectorConfig, OutputHeadConfig
from codi2.losses import IGNORE_INDEX, feature_loss, text_loss
from codi2.projectors import InputProjector, OutputHead, pool_tokens


def test_input_projector_shapes_and_error():
    p = InputProjector(16, 32, InputProjectorConfig())
    assert p(torch.randn(3, 17, 16)).shape == (3, 17, 32)
    with pytest.raises(ValueError, match="last dim 16"):
        p(torch.randn(3, 17, 8))


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_output_head_produces_every_target_shape(kind):
    cfg = OutputHeadConfig(kind=kind, hidden=32, num_layers=1, num_heads=2,
                           targets={"image_embeds": [16], "prompt_embeds": [8, 12]})
    head = OutputHead(24, 4, cfg)
    out = head(torch.randn(5, 4, 24))
    assert out["image_embeds"].shape == (5, 16)
    assert out["prompt_embeds"].shape == (5, 8, 12)
    with pytest.raises(ValueError, match=r"\(N, 4, 24\)"):
        head(torch.randn(5, 3, 24))


def test_output_head_rejects_bad_config():
    with pytest.raises(ValueError, match="kind"):
        OutputHead(8, 2, OutputHeadConfig(kind="rnn", targets={"x": [4]}))
    with pytest.raises(ValueError, match="targets is empty"):
        OutputHead(8, 2, OutputHeadConfig())
    with pytest.raises(ValueError, match="shape"):
        OutputHead(8, 2, OutputHeadConfig(targets={"x": [2, 3, 4]}))


def test_output_head_slots_matter():
    head = OutputHead(8, 2, OutputHeadConfig(kind="transformer", hidden=8, num_heads=2, targets={"x": [3, 4]}))
    h = torch.randn(1, 2, 8)
    assert not torch.allclose(head(h)["x"], head(h.flip(1) * 2)["x"])


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_cosine_head_takes_the_norm_of_its_training_targets(kind):
    torch.manual_seed(0)
    cfg = OutputHeadConfig(kind=kind, hidden=16, num_layers=1, num_heads=2, targets={"e": [8], "seq": [3, 8]})
    head, h = OutputHead(12, 2, cfg), torch.randn(4, 2, 12)
    raw = head(h)
    assert head.target_norm.tolist() == [0.0, 0.0]  # nothing seen yet: outputs as they are
    head.observe_targets({"e": torch.full((6, 8), 2.0), "seq": torch.full((6, 3, 8), 0.5)})  # norms 5.657, 1.414
    assert head.target_norm.tolist() == pytest.approx([8 ** 0.5 * 2, 8 ** 0.5 * 0.5], rel=1e-5)
    out = head(h)
    assert out["e"].norm(dim=-1).tolist() == pytest.approx([8 ** 0.5 * 2] * 4, rel=1e-5)
    assert out["seq"].norm(dim=-1).flatten().tolist() == pytest.approx([8 ** 0.5 * 0.5] * 12, rel=1e-5)
    for k in out:  # the direction, all the cosine loss trains, is unchanged
        assert torch.allclose(F.cosine_similarity(out[k], raw[k], dim=-1), torch.ones(()), atol=1e-5)
        assert float(feature_loss(out[k], raw[k])) == pytest.approx(0.0, abs=1e-6)
    # later batches move it slowly (a moving average), never to zero
    head.observe_targets({"e": torch.zeros(6, 8), "seq": torch.zeros(6, 3, 8)})
    assert head.target_norm[0] == pytest.approx(0.99 * 8 ** 0.5 * 2, rel=1e-5)
    # an mse head, or match_target_norm: false, leaves outputs as they are (the statistic is still kept)
    for other in (OutputHeadConfig(**{**cfg.__dict__, "loss": "mse"}),
                  OutputHeadConfig(**{**cfg.__dict__, "match_target_norm": False})):
        torch.manual_seed(0)
        plain = OutputHead(12, 2, other)
        before = plain(h)["e"]
        plain.observe_targets({"e": torch.full((6, 8), 2.0), "seq": torch.full((6, 3, 8), 0.5)})
        assert plain.target_norm[0] > 0 and torch.equal(plain(h)["e"], before)


def test_pool_tokens():
    x = torch.arange(12.0).view(1, 6, 2)
    assert torch.equal(pool_tokens(x, 6), x)
    y = pool_tokens(x, 3)
    assert y.shape == (1, 3, 2)
    assert torch.allclose(y[0, 0], x[0, :2].mean(0))


def test_feature_losses_known_values():
    a = torch.tensor([[1.0, 0.0]])
    assert feature_loss(a, a, "cosine").item() == pytest.approx(0.0, abs=1e-7)
    assert feature_loss(a, -a, "cosine").item() == pytest.approx(0.2)  # 0.1 * (1 - (-1))
    assert feature_loss(a, torch.tensor([[0.0, 1.0]]), "cosine").item() == pytest.approx(0.1)
    assert feature_loss(a, torch.tensor([[3.0, 0.0]]), "mse").item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not one of"):
        feature_loss(a, a, "l1")
    with pytest.raises(ValueError, match="differ"):
        feature_loss(a, torch.zeros(1, 3))


def test_text_loss_ignores_unsupervised_tokens():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 3] = 10.0  # predicts token 3 at position 1
    labels = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX]])
    assert text_loss(logits, labels).item() < 1e-3
    labels_wrong = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]])
    assert text_loss(logits, labels_wrong).item() > 5
    none = torch.full((1, 4), IGNORE_INDEX)
    assert text_loss(logits.requires_grad_(), none).item() == 0.0
