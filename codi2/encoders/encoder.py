"""The frozen ImageBind encoder as the rest of codi2 uses it: preprocessed tensors -> tokens + embedding."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from codi2.config import ImageBindConfig
from codi2.encoders.imagebind import ImageBindModel, build_imagebind


@dataclass
class EncoderOutput:
    """Features of one batch.

    tokens: image (B, 1+N, out_dim) = every vision trunk token through the vision head's LayerNorm +
        Linear (257 tokens at huge scale); video (B, S, 1+N, out_dim) per clip; audio (B, S, out_dim)
        per-clip CLS head output; text (B, out_dim).
    embed: (B, out_dim) head output before the postprocessor (no L2 norm, no logit scale);
        video/audio: mean over clips. For images this is what SD-2.1-unCLIP-H takes as ``image_embeds``.
    """

    tokens: torch.Tensor
    embed: torch.Tensor


class ImageBindEncoder(nn.Module):
    """Frozen ImageBind wrapper: builds :class:`ImageBindModel` from ``cfg`` and loads ``cfg.weights`` if set.

    Inputs are cast to the model's dtype and device; everything runs under ``torch.no_grad()``
    and the module stays in eval mode (``train()`` is a no-op).
    """

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model: ImageBindModel = build_imagebind(cfg, frozen=True)
        self.out_dim: int = cfg.out_embed_dim
        self.num_image_tokens: int = self.model.num_image_tokens

    def train(self, mode: bool = True) -> "ImageBindEncoder":
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.modality_heads["vision"][2].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.modality_heads["vision"][2].weight.device

    def _float(self, x: torch.Tensor, name: str, shape: str, ndim: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != ndim or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float tensor {shape}, got {got}")
        return x.to(device=self.device, dtype=self.dtype)

    def _check_size(self, x: torch.Tensor, name: str, channel_dim: int) -> None:
        s = self.cfg.image_size
        if x.shape[channel_dim] != 3 or x.shape[-2:] != (s, s):
            raise ValueError(f"{name} must have 3 channels and {s}x{s} pixels (encoder.image_size), got {tuple(x.shape)}")

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> EncoderOutput:
        """pixels (B, 3, S, S) -> tokens (B, 1+N, out), embed (B, out)."""
        x = self._float(pixels, "pixels", "(B, 3, S, S)", 4)
        self._check_size(x, "pixels", 1)
        trunk, _ = self.model.forward_trunk("vision", x)  # (B, 1+N, D)
        tokens = self.model.vision_tokens(trunk)  # (B, 1+N, out)
        return EncoderOutput(tokens=tokens, embed=tokens[:, 0])

    @torch.no_grad()
    def encode_video(self, clips: torch.Tensor) -> EncoderOutput:
        """clips (B, S, 3, T, S, S) -> tokens (B, S, 1+N, out), embed (B, out) = mean over clips of the CLS output."""
        x = self._float(clips, "clips", "(B, clips, 3, frames, S, S)", 6)
        self._check_size(x, "clips", 2)
        b, s = x.shape[:2]
        trunk, _ = self.model.forward_trunk("vision", x.flatten(0, 1))
        tokens = self.model.vision_tokens(trunk).reshape(b, s, trunk.shape[1], -1)
        return EncoderOutput(tokens=tokens, embed=tokens[:, :, 0].mean(dim=1))

    @torch.no_grad()
    def encode_audio(self, fbank: torch.Tensor) -> EncoderOutput:
        """fbank (B, S, 1, mel, T) -> tokens (B, S, out) per clip, embed (B, out) = their mean."""
        x = self._float(fbank, "fbank", "(B, clips, 1, mel_bins, target_len)", 5)
        want = (1, self.cfg.audio_num_mel_bins, self.cfg.audio_target_len)
        if tuple(x.shape[2:]) != want:
            raise ValueError(f"fbank clips must be {want} (1, audio_num_mel_bins, audio_target_len), got {tuple(x.shape[2:])}")
        b, s = x.shape[:2]
        per_clip = self.model.embed("audio", x.flatten(0, 1)).reshape(b, s, -1)
        return EncoderOutput(tokens=per_clip, embed=per_clip.mean(dim=1))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> EncoderOutput:
        """tokens (B, context) long -> tokens = embed = (B, out) head output at the EOS token."""
        n = self.cfg.text_context_length
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] != n or tokens.is_floating_point():
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"text tokens must be an integer tensor (B, {n}), got {got}")
        embed = self.model.embed("text", tokens.to(device=self.device, dtype=torch.long))
        return EncoderOutput(tokens=embed, embed=embed)
