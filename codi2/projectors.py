"""Input projectors (encoder features -> LLM embeddings) and output heads
(LLM slot hidden states -> a decoder's own conditioning tensors).

CoDi-2's shapes: input projector ``Linear(1024, d) → GELU → LayerNorm → Linear(d, d)``;
image output head ``Linear(d, 1024) → GELU → LayerNorm → Linear(1024, 1024)``.
The transformer head follows NExT-GPT's output projector: learnable queries that
attend to the slot states and produce sequence conditioning (e.g. 77×1024 for Zeroscope).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import InputProjectorConfig, OutputHeadConfig

HEAD_KINDS = ("mlp", "transformer")


class InputProjector(nn.Module):
    """Projects encoder tokens into the LLM's embedding space.

    Shapes: ``(..., d_in) -> (..., d_llm)``.
    """

    def __init__(self, d_in: int, d_llm: int, cfg: InputProjectorConfig | None = None):
        super().__init__()
        cfg = cfg or InputProjectorConfig()
        hidden = cfg.hidden or d_llm
        self.d_in, self.d_llm = d_in, d_llm
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, d_llm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"InputProjector expects features with last dim {self.d_in}, got shape {tuple(x.shape)}")
        return self.net(x)


class OutputHead(nn.Module):
    """Maps the hidden states of a media span's ``n_out`` slots to conditioning tensors.

    Args:
        d_llm: LLM hidden size.
        n_out: number of output slots.
        cfg: head config; ``cfg.targets`` maps each conditioning tensor's name to its
            per-sample shape, e.g. ``{"image_embeds": [1024]}``.

    ``forward(h)`` with ``h`` of shape ``(N, n_out, d_llm)`` returns
    ``{name: (N, *shape)}``.

    The buffer ``target_norm`` (one entry per target, in ``cfg.targets`` order; 0 = not yet seen) is an
    exponential moving average of the training targets' mean L2 norm along the last dim, updated by
    :meth:`observe_targets` in training. With ``cfg.loss == "cosine"`` and ``cfg.match_target_norm``,
    outputs are rescaled to it: the cosine loss learns only their direction, the decoder needs their scale.
    """

    NORM_MOMENTUM = 0.01

    def __init__(self, d_llm: int, n_out: int, cfg: OutputHeadConfig):
        super().__init__()
        if cfg.kind not in HEAD_KINDS:
            raise ValueError(f"head kind {cfg.kind!r} is not one of {HEAD_KINDS}")
        if not cfg.targets:
            raise ValueError("OutputHeadConfig.targets is empty: name at least one conditioning tensor and its shape")
        self.kind, self.d_llm, self.n_out = cfg.kind, d_llm, n_out
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(int(s) for s in v) for k, v in cfg.targets.items()}
        for name, shape in self.shapes.items():
            if len(shape) not in (1, 2) or min(shape) <= 0:
                raise ValueError(f"head target {name!r} has shape {list(shape)}; allowed: [D] or [L, D] with positive sizes")
        self.match_norm = cfg.loss == "cosine" and cfg.match_target_norm
        self.register_buffer("target_norm", torch.zeros(len(self.shapes)))
        h = cfg.hidden
        # Shared trunk: per-slot MLP (CoDi-2's Linear → GELU → LayerNorm).
        self.trunk = nn.Sequential(nn.Linear(d_llm, h), nn.GELU(), nn.LayerNorm(h))
        if cfg.kind == "transformer":
            if h % cfg.num_heads:
                raise ValueError(f"head hidden {h} is not divisible by num_heads {cfg.num_heads}")
            self.n_queries = {k: (s[0] if len(s) == 2 else 1) for k, s in self.shapes.items()}
            total = sum(self.n_queries.values())
            self.queries = nn.Parameter(torch.randn(total, h) / math.sqrt(h))
            self.slot_pos = nn.Parameter(torch.zeros(n_out, h))
            layer = nn.TransformerDecoderLayer(h, cfg.num_heads, dim_feedforward=4 * h, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.decoder = nn.TransformerDecoder(layer, cfg.num_layers)
            self.norm = nn.LayerNorm(h)
            self.out = nn.ModuleDict({k: nn.Linear(h, s[-1]) for k, s in self.shapes.items()})
        else:
            self.out = nn.ModuleDict({k: nn.Linear(h, math.prod(s)) for k, s in self.shapes.items()})

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        if h.dim() != 3 or h.shape[1:] != (self.n_out, self.d_llm):
            raise ValueError(f"OutputHead expects slot states (N, {self.n_out}, {self.d_llm}), got {tuple(h.shape)}")
        x = self.trunk(h)  # (N, n_out, hidden)
        if self.kind == "mlp":
            pooled = x.mean(dim=1)  # (N, hidden)
            outs = {k: lin(pooled).view(h.shape[0], *self.shapes[k]) for k, lin in self.out.items()}
        else:
            q = self.queries.unsqueeze(0).expand(h.shape[0], -1, -1)  # (N, Q, hidden)
            y = self.norm(self.decoder(q, x + self.slot_pos))  # (N, Q, hidden)
            outs, i = {}, 0
            for k, lin in self.out.items():
                n = self.n_queries[k]
                o = lin(y[:, i:i + n])  # (N, n, D)
                outs[k] = o.view(h.shape[0], *self.shapes[k])
                i += n
        if self.match_norm:
            for j, k in enumerate(self.shapes):
                norm = float(self.target_norm[j])  # a number: observe_targets updates the buffer in place
                if norm > 0:  # the cosine loss is scale-invariant, so this changes no training gradient
                    outs[k] = F.normalize(outs[k], dim=-1) * norm
        return outs

    @torch.no_grad()
    def observe_targets(self, targets: Mapping[str, torch.Tensor]) -> None:
        """Updates ``target_norm`` with a batch of training targets ``{name: (N, *shape)}``."""
        for j, k in enumerate(self.shapes):
            n = targets[k].float().norm(dim=-1).mean().to(self.target_norm.device, self.target_norm.dtype)
            cur = self.target_norm[j]
            self.target_norm[j] = n if cur <= 0 else cur + self.NORM_MOMENTUM * (n - cur)


def pool_tokens(x: torch.Tensor, n: int) -> torch.Tensor:
    """Pools a token sequence to ``n`` tokens by adaptive average pooling.

    ``(N, T, D) -> (N, n, D)``; identity when ``T == n``.
    """
    if x.shape[1] == n:
        return x
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def check_targets(preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], names: Sequence[str]) -> None:
    """Raises when a target is missing or its shape differs from the prediction's."""
    for k in names:
        if k not in targets:
            raise KeyError(f"missing head target {k!r}; have {sorted(targets)}")
        if preds[k].shape != targets[k].shape:
            raise ValueError(f"head target {k!r} has shape {tuple(targets[k].shape)}, prediction has {tuple(preds[k].shape)}")
