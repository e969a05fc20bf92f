"""Evaluation metrics as plain functions of arrays: no model, no files, no codi2 state.

Every function here scores any system's outputs once the features are computed (see
:mod:`codi2.eval.features` for the backbones). Conventions: embeddings are float arrays
``(N, D)``; images are PIL images; waveforms are 1-D float arrays.

Images
    :func:`pixel_distances`      L1 = mean |x - y|, L2 = mean (x - y)^2 of RGB in [0, 1] after resizing both
                                 images to a common size (MagicBrush's definition: ``mse_loss`` on [0, 1] tensors).
    :func:`cosine` / :func:`mean_pairwise_cosine`   CLIP-I, CLIP-T, DINO: cosine of embeddings. DreamBench
                                 averages a generated image's similarity over all real images of the subject.
    :func:`directional_similarity_text`   cos(E_img(B') - E_img(B), E_txt(T_B') - E_txt(T_B)) (StyleGAN-NADA,
                                 InstructPix2Pix's "CLIP directional similarity").
    :func:`directional_similarity_image`  the exemplar variant: mean over exemplars k of
                                 cos(E_img(B') - E_img(B), E_img(A'_k) - E_img(A_k)).
Audio (the way ``haoheliu/audioldm_eval`` computes them; differences are noted per function)
    :func:`lsd`                  log-spectral distance (``ssr_eval.AudioMetrics.lsd`` after audioldm_eval's
                                 ``calculate_lsd`` preprocessing).
    :func:`kl_softmax` / :func:`kl_sigmoid`   KL(ref || pred) of classifier posteriors (audioldm_eval ``calculate_kl``).
    :func:`frechet_distance` / :func:`frechet_distance_of`  FD / FAD of two embedding sets (pytorch-fid's
                                 numerically stable version, as audioldm_eval's ``fid.py`` / ``fad.py``).
Aggregates
    :func:`bootstrap_ci`         seeded percentile bootstrap of the mean.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

LSD_EPS = 1e-12  # ssr_eval's EPS
KL_EPS = 1e-6  # audioldm_eval's EPS in calculate_kl
FD_EPS = 1e-6  # pytorch-fid / audioldm_eval offset added to the covariance diagonals when sqrtm fails


# ----------------------------------------------------------------------------- images
def image_array(img: Image.Image, size: int) -> np.ndarray:
    """A PIL image -> float64 (size, size, 3) RGB in [0, 1] (bicubic resize)."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255.0


def pixel_distances(pred: Image.Image, ref: Image.Image, size: int = 256) -> dict[str, float]:
    """Pixel L1 and L2 of two images after resizing both to ``size`` x ``size``.

    Returns:
        ``{"l1": mean |pred - ref|, "l2": mean (pred - ref)^2}`` over pixels and channels, values in [0, 1].
    """
    d = image_array(pred, size) - image_array(ref, size)
    return {"l1": float(np.abs(d).mean()), "l2": float((d ** 2).mean())}


def _rows(x: "np.ndarray | torch.Tensor", name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (D,) or (N, D), got shape {a.shape}")
    return a


def _normalize(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.maximum(n, 1e-12)


def cosine(a: "np.ndarray | torch.Tensor", b: "np.ndarray | torch.Tensor") -> np.ndarray:
    """Row-wise cosine similarity of ``a`` (N, D) and ``b`` (N, D) (or (D,) each): (N,)."""
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"cosine needs equal shapes, got {x.shape} and {y.shape}")
    return (_normalize(x) * _normalize(y)).sum(-1)


def mean_pairwise_cosine(a: "np.ndarray | torch.Tensor", b: "np.ndarray | torch.Tensor") -> float:
    """Mean cosine over all pairs of rows of ``a`` (N, D) and ``b`` (M, D) (DreamBench's CLIP-I / DINO)."""
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} and {y.shape[1]}")
    return float((_normalize(x) @ _normalize(y).T).mean())


def directional_similarity_text(src_img: np.ndarray, pred_img: np.ndarray, src_txt: np.ndarray,
                                tgt_txt: np.ndarray) -> float:
    """CLIP directional similarity: cos(E_img(B') - E_img(B), E_txt(T_B') - E_txt(T_B)); each input (D,).

    Embeddings are L2-normalised before the differences are taken (as InstructPix2Pix's metric does).
    """
    d_img = _normalize(_rows(pred_img, "pred_img")) - _normalize(_rows(src_img, "src_img"))
    d_txt = _normalize(_rows(tgt_txt, "tgt_txt")) - _normalize(_rows(src_txt, "src_txt"))
    return float(cosine(d_img, d_txt)[0])


def directional_similarity_image(src_img: np.ndarray, pred_img: np.ndarray, ex_src: np.ndarray,
                                 ex_tgt: np.ndarray) -> float:
    """Exemplar-edit direction: mean_k cos(E(B') - E(B), E(A'_k) - E(A_k)).

    Args:
        src_img, pred_img: (D,) embeddings of the query B and the generated B'.
        ex_src, ex_tgt: (K, D) embeddings of the exemplar pairs A_k, A'_k.
    """
    d = _normalize(_rows(pred_img, "pred_img")) - _normalize(_rows(src_img, "src_img"))  # (1, D)
    ex = _normalize(_rows(ex_tgt, "ex_tgt")) - _normalize(_rows(ex_src, "ex_src"))  # (K, D)
    if ex.shape[0] == 0:
        raise ValueError("directional_similarity_image needs at least one exemplar pair")
    return float(cosine(np.repeat(d, ex.shape[0], 0), ex).mean())


# ----------------------------------------------------------------------------- audio: LSD
def stft_magnitude(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| like ``librosa.stft(wave, n_fft, hop)`` (>= 0.10 defaults: periodic Hann window of n_fft,
    ``center=True`` with zero padding of n_fft // 2): (frames, n_fft // 2 + 1)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    x = np.pad(x, n_fft // 2, mode="constant")
    if x.shape[0] < n_fft:
        raise ValueError(f"waveform of {wave.shape[0]} samples is too short for n_fft={n_fft}")
    n_frames = 1 + (x.shape[0] - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann (scipy fftbins=True)
    idx = np.arange(n_fft)[None] + hop * np.arange(n_frames)[:, None]  # (frames, n_fft)
    return np.abs(np.fft.rfft(x[idx] * window, axis=-1))


def lsd(pred: np.ndarray, ref: np.ndarray, sample_rate: int, time_offset: int = 0) -> float:
    """Log-spectral distance between a generated and a reference waveform (lower is better, 0 = identical).

    Follows audioldm_eval ``EvaluationHelper.calculate_lsd`` + ``ssr_eval.AudioMetrics``: drop ``time_offset``
    samples from the start of ``pred`` (audioldm_eval uses 160 * 7 for its HiFi-GAN vocoder; we default to 0),
    remove the mean, peak-normalise, truncate both to the shorter length, take |STFT| with
    ``n_fft = int(2048 / (44100 / sr))`` and ``hop = int(sr / 100)``, then
    ``mean_t sqrt(mean_f log10(ref^2 / (pred + eps)^2 + eps)^2)`` with eps = 1e-12.

    Differences: a silent (all-zero) signal is not divided by its zero peak (audioldm_eval would produce NaN);
    the STFT is our numpy port of librosa's (same window, centring and padding).

    Args:
        pred, ref: 1-D waveforms at ``sample_rate`` (both must already share it).
    """
    a = np.asarray(pred, dtype=np.float64)[time_offset:]
    b = np.asarray(ref, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"lsd expects 1-D waveforms, got shapes {np.shape(pred)} and {np.shape(ref)}")
    out = []
    for x in (a, b):
        x = x - x.mean()
        peak = np.abs(x).max() if x.size else 0.0
        out.append(x / peak if peak > 0 else x)
    a, b = out
    n = min(a.shape[0], b.shape[0])
    n_fft, hop = int(2048 / (44100 / sample_rate)), int(sample_rate / 100)
    if n < n_fft // 2 + 1:
        raise ValueError(f"lsd needs at least {n_fft // 2 + 1} samples at {sample_rate} Hz, got {n}")
    est, target = stft_magnitude(a[:n], n_fft, hop), stft_magnitude(b[:n], n_fft, hop)
    d = np.log10(target ** 2 / (est + LSD_EPS) ** 2 + LSD_EPS) ** 2  # (frames, freqs)
    return float(np.mean(np.sqrt(np.mean(d, axis=1))))


# ----------------------------------------------------------------------------- audio: KL of posteriors
def _logits(x: "np.ndarray | torch.Tensor", name: str) -> torch.Tensor:
    t = x.detach().cpu().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise ValueError(f"{name} must be logits (C,) or (N, C), got shape {tuple(t.shape)}")
    return t


def kl_softmax(pred_logits: "np.ndarray | torch.Tensor", ref_logits: "np.ndarray | torch.Tensor") -> np.ndarray:
    """Per-pair KL(softmax(ref) || softmax(pred)) summed over classes: (N,).

    The mean over pairs equals audioldm_eval's ``kullback_leibler_divergence_softmax``
    (``kl_div(log(softmax(pred) + 1e-6), softmax(ref), reduction="sum") / N``).
    """
    p, r = _logits(pred_logits, "pred_logits"), _logits(ref_logits, "ref_logits")
    if p.shape != r.shape:
        raise ValueError(f"logit shapes differ: {tuple(p.shape)} and {tuple(r.shape)}")
    return F.kl_div((p.softmax(-1) + KL_EPS).log(), r.softmax(-1), reduction="none").sum(-1).numpy()


def kl_sigmoid(pred_logits: "np.ndarray | torch.Tensor", ref_logits: "np.ndarray | torch.Tensor") -> np.ndarray:
    """Per-pair audioldm_eval ``kullback_leibler_divergence_sigmoid`` term: (N,).

    ``sum_c sigmoid(ref)_c * (log sigmoid(ref)_c - log(sigmoid(pred)_c + 1e-6))`` — as audioldm_eval computes
    it (``kl_div`` on sigmoid probabilities), i.e. without the (1 - p) terms of a Bernoulli KL; kept for comparability.
    """
    p, r = _logits(pred_logits, "pred_logits"), _logits(ref_logits, "ref_logits")
    if p.shape != r.shape:
        raise ValueError(f"logit shapes differ: {tuple(p.shape)} and {tuple(r.shape)}")
    return F.kl_div((p.sigmoid() + KL_EPS).log(), r.sigmoid(), reduction="none").sum(-1).numpy()


# ----------------------------------------------------------------------------- Fréchet distance
def embedding_statistics(x: "np.ndarray | torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of embeddings (N, D) (``np.cov(rowvar=False)``, N - 1 normalisation)."""
    a = _rows(x, "embeddings")
    if a.shape[0] < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 embeddings per set, got {a.shape[0]}")
    return a.mean(0), np.atleast_2d(np.cov(a, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FD_EPS) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``.

    pytorch-fid's stable version (as audioldm_eval): if ``sqrtm`` of the product is not finite, ``eps`` is
    added to both diagonals; an imaginary part above 1e-3 on the diagonal raises. Difference: a result in
    [-1e-6 * (1 + tr sigma1 + tr sigma2), 0) — sqrtm round-off on (near-)identical sets — is returned as 0.0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular product; adding %g to the covariance diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    if -1e-6 * (1 + np.trace(s1) + np.trace(s2)) <= fd < 0:
        fd = 0.0
    return fd


def frechet_distance_of(x: "np.ndarray | torch.Tensor", y: "np.ndarray | torch.Tensor") -> float:
    """Fréchet distance of two embedding sets (N, D) and (M, D)."""
    return frechet_distance(*embedding_statistics(x), *embedding_statistics(y))


# ----------------------------------------------------------------------------- aggregates
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap ``1 - alpha`` confidence interval of the mean.

    Deterministic given ``seed`` (numpy ``default_rng``). One value gives (v, v, v). The interval is widened to
    include the sample mean in the rare skewed case where the percentiles exclude it.

    Returns:
        (mean, low, high).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.isfinite(v).all():
        raise ValueError(f"bootstrap_ci got non-finite values: {v[~np.isfinite(v)][:5].tolist()}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(min(lo, mean)), float(max(hi, mean))
