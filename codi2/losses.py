"""Losses: text cross-entropy on assistant tokens, feature losses for the output heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
FEATURE_LOSSES = ("cosine", "mse")


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy. ``logits`` (B, T, V), ``labels`` (B, T) with -100 where unsupervised.

    Returns a scalar; 0 (with grad) when no token is supervised.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not (shift_labels != IGNORE_INDEX).any():
        return shift_logits.sum() * 0.0
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Loss between a head's prediction and its target, both (N, ..., D).

    ``cosine``: CoDi-2's ``0.1 × (1 − cos)`` along the last dim, averaged;
    ``mse``: mean squared error.
    """
    if pred.shape != target.shape:
        raise ValueError(f"feature loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.to(pred.dtype)
    if kind == "cosine":
        return 0.1 * (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"feature loss {kind!r} is not one of {FEATURE_LOSSES}")
