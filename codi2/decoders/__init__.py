"""Decoders: one adapter per modality around an unmodified diffusers pipeline (docs/design.md#architecture).

    dec = build_decoder(Modality.IMAGE, cfg.modalities["image"].decoder)
    dec.target_spec()                          # {'image_embeds': (1024,)}
    images = dec.decode({"image_embeds": e}, seed=0)
"""
from __future__ import annotations


import torch

from codi2.config import DecoderConfig
from codi2.decoders.audio import AudioDecoder
from codi2.decoders.base import Cancelled, Decoder
from codi2.decoders.image import ImageDecoder
from codi2.decoders.video import VideoDecoder
from codi2.modality import Modality

DECODERS: dict[Modality, type[Decoder]] = {
    Modality.IMAGE: ImageDecoder,
    Modality.AUDIO: AudioDecoder,
    Modality.VIDEO: VideoDecoder,
}


def build_decoder(modality: "Modality | str", cfg: DecoderConfig,
                  device: "str | torch.device | None" = None) -> Decoder:
    """The adapter for ``modality``, configured by ``cfg`` (weights load on first use).

    Raises:
        FileNotFoundError: ``cfg.path`` unset or missing (names ``modalities.<m>.decoder.path``).
    """
    return DECODERS[Modality.parse(modality)].from_config(cfg, device=device)


__all__ = ["AudioDecoder", "Cancelled", "DECODERS", "Decoder", "ImageDecoder", "VideoDecoder", "build_decoder"]
