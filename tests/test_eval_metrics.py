"""Metrics on known values, and the local-weight feature extractors with tiny random backbones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codi2.eval import metrics as M

from .conftest import make_audio, make_image


# ----------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_closed_form_diagonal():
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) = |dmu|^2 + sum (sqrt s1 - sqrt s2)^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    want = 1.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0  # = 7
    assert M.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, abs=1e-9)
    assert want == 7.0


def test_frechet_distance_full_covariance_matches_1d_formula():
    # 1-D: FD = (m1 - m2)^2 + (sd1 - sd2)^2
    assert M.frechet_distance([2.0], [[9.0]], [0.0], [[1.0]]) == pytest.approx(4.0 + 4.0)


def test_frechet_distance_of_identical_sets_is_zero_and_positive_otherwise(rng):
    x = rng.standard_normal((50, 8))
    assert M.frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-8)
    assert M.frechet_distance_of(x, x + 1.0) == pytest.approx(8.0, rel=1e-6)  # shift by 1 in 8 dims
    # singular covariances (fewer samples than dims) still give a finite number
    y = rng.standard_normal((4, 16))
    assert np.isfinite(M.frechet_distance_of(y, y[::-1] * 2))


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="at least 2"):
        M.embedding_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shapes"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------- LSD
def test_lsd_of_signal_with_itself_is_zero_and_grows_with_distortion(rng):
    x = rng.standard_normal(16000) * 0.1
    assert M.lsd(x, x, 16000) == pytest.approx(0.0, abs=1e-6)
    # scaling and DC offsets are removed by the normalisation (mean removal, peak normalisation)
    assert M.lsd(3 * x + 0.5, x, 16000) == pytest.approx(0.0, abs=1e-6)
    noisy = x + rng.standard_normal(16000) * 0.05
    assert M.lsd(noisy, x, 16000) > 0.1
    assert M.lsd(rng.standard_normal(16000), x, 16000) > M.lsd(noisy, x, 16000)


def test_stft_magnitude_matches_a_direct_dft():
    x = np.sin(2 * np.pi * 440 * np.arange(2000) / 16000)
    mag = M.stft_magnitude(x, 512, 160)  # (frames, 257)
    assert mag.shape == (1 + 2000 // 160, 257)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    frame = np.pad(x, 256)[160 * 3:160 * 3 + 512] * win
    np.testing.assert_allclose(mag[3], np.abs(np.fft.rfft(frame)), rtol=1e-10)


def test_lsd_time_offset_and_length_mismatch(rng):
    x = rng.standard_normal(8000)
    assert M.lsd(np.concatenate([np.zeros(1120), x]), x, 16000, time_offset=1120) == pytest.approx(0.0, abs=1e-6)
    # truncated to the shorter one (after mean removal / peak normalisation, as audioldm_eval: a tiny residue)
    assert 0 < M.lsd(x[:7000], x, 16000) < 0.01


# ----------------------------------------------------------------------------- KL
def test_kl_of_identical_posteriors_is_zero(rng):
    logits = rng.standard_normal((4, 10)) * 3
    np.testing.assert_allclose(M.kl_softmax(logits, logits), 0.0, atol=1e-4)
    np.testing.assert_allclose(M.kl_sigmoid(logits, logits), 0.0, atol=1e-4)


def test_kl_softmax_known_value():
    # p_ref = (0.5, 0.5), p_pred = (0.9, 0.1): KL = 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1) = 0.5108
    pred = np.log([[0.9, 0.1]])
    ref = np.log([[0.5, 0.5]])
    want = 0.5 * np.log(0.5 / (0.9 + 1e-6)) + 0.5 * np.log(0.5 / (0.1 + 1e-6))
    assert M.kl_softmax(pred, ref)[0] == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(0.5108, abs=1e-4)


def test_kl_matches_audioldm_eval_formula(rng):
    """audioldm_eval: kl_div(log(softmax(f1) + 1e-6), softmax(f2), reduction='sum') / N (f1 generated, f2 reference)."""
    f1, f2 = torch.randn(6, 7, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    ref_soft = torch.nn.functional.kl_div((f1.softmax(1) + 1e-6).log(), f2.softmax(1), reduction="sum") / 6
    ref_sig = torch.nn.functional.kl_div((f1.sigmoid() + 1e-6).log(), f2.sigmoid(), reduction="sum") / 6
    assert M.kl_softmax(f1, f2).mean() == pytest.approx(float(ref_soft), rel=1e-10)
    assert M.kl_sigmoid(f1, f2).mean() == pytest.approx(float(ref_sig), rel=1e-10)


# ----------------------------------------------------------------------------- cosines and pixels
def test_cosine_metrics(rng):
    a = rng.standard_normal((3, 5))
    np.testing.assert_allclose(M.cosine(a, a), 1.0)
    np.testing.assert_allclose(M.cosine(a, -a), -1.0)
    assert M.mean_pairwise_cosine(a[:1], a[:1]) == pytest.approx(1.0)
    assert M.cosine([1.0, 0.0], [0.0, 2.0])[0] == pytest.approx(0.0)
    # directional: the edit direction equals the reference direction -> 1; opposite -> -1
    src, tgt = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    assert M.directional_similarity_text(src, tgt, src, tgt) == pytest.approx(1.0)
    assert M.directional_similarity_image(src, tgt, tgt[None], src[None]) == pytest.approx(-1.0)
    assert M.directional_similarity_image(src, tgt, np.stack([src, src]), np.stack([tgt, tgt])) == pytest.approx(1.0)


def test_pixel_distances_known_values():
    black = Image.new("RGB", (10, 20), (0, 0, 0))
    white = Image.new("RGB", (30, 30), (255, 255, 255))
    grey = Image.new("RGB", (8, 8), (51, 51, 51))  # 0.2
    assert M.pixel_distances(black, black) == {"l1": 0.0, "l2": 0.0}
    assert M.pixel_distances(black, white, size=16) == {"l1": 1.0, "l2": 1.0}
    d = M.pixel_distances(grey, black, size=16)
    assert d["l1"] == pytest.approx(0.2) and d["l2"] == pytest.approx(0.04)


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_mean_and_is_seeded(rng):
    v = rng.random(30)
    mean, lo, hi = M.bootstrap_ci(v, seed=3)
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    assert M.bootstrap_ci(v, seed=3) == (mean, lo, hi)
    assert M.bootstrap_ci(v, seed=4) != (mean, lo, hi)
    assert M.bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    narrow = M.bootstrap_ci(np.concatenate([v] * 10), seed=3)
    assert narrow[2] - narrow[1] < hi - lo  # more data -> tighter interval
    with pytest.raises(ValueError, match="at least one"):
        M.bootstrap_ci([])


# ----------------------------------------------------------------------------- backbones from local dirs
@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    from codi2.eval.testing import save_tiny_audio_classifier, save_tiny_clip, save_tiny_dino

    d = tmp_path_factory.mktemp("backbones")
    return {"clip": save_tiny_clip(d / "clip"), "dino": save_tiny_dino(d / "dino"),
            "ast": save_tiny_audio_classifier(d / "ast")}


def test_clip_and_dino_features_from_local_dirs(backbones):
    from codi2.eval.features import ClipFeatures, DinoFeatures

    clip = ClipFeatures.from_pretrained(backbones["clip"])
    imgs = [make_image(0, 40), make_image(1, 24)]
    e = clip.images(imgs)
    assert e.shape == (2, 8)
    np.testing.assert_allclose(clip.images(imgs[:1]), e[:1], atol=1e-6)  # batch-independent
    t = clip.texts(["a dog in the snow", "a red backpack"])
    assert t.shape == (2, 8) and not np.allclose(t[0], t[1])
    dino = DinoFeatures.from_pretrained(backbones["dino"])
    assert dino.images(imgs).shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ClipFeatures.from_pretrained(backbones["clip"] / "missing")


def test_audio_features_from_local_dir(backbones):
    from codi2.eval.features import TransformersAudio, windows

    ast = TransformersAudio.from_pretrained(backbones["ast"], window_seconds=0.25)
    e = ast.embed([make_audio(0, 1.0), make_audio(1, 0.5)])
    assert e.clip.shape == (2, 16) and e.logits.shape == (2, 5)
    assert [f.shape for f in e.frames] == [(4, 16), (2, 16)]
    assert [len(w) for w in windows(np.zeros(10), 4)] == [4, 4, 4]  # tail of 2 >= half a window is kept
    assert len(windows(np.zeros(9), 4)) == 2


def test_imagebind_audio_default_backbone(tiny_model):
    from codi2.eval.features import ImageBindAudio

    ib = ImageBindAudio.from_model(tiny_model, labels=("a", "b", "c"))
    e = ib.embed([make_audio(0, 1.0), make_audio(1, 0.5)])
    assert e.clip.shape == (2, 16) and e.logits.shape == (2, 3)
    assert e.frames[0].shape[1] == 16 and np.all(np.abs(e.logits) <= 100 + 1e-6)
