"""Tiny diffusers pipelines with dummy-size random components, for tests and the tiny scale.

Each ``save_tiny_*`` builds the real pipeline class at dummy size (:mod:`codi2.decoders.build`, after
diffusers' own pipeline fast tests: tests/pipelines/{stable_unclip,audioldm2,text_to_video_synthesis}),
seeds every component and writes the pipeline with ``save_pretrained`` in the real diffusers layout. The key
dimensions are parameters so a tiny CoDi-2 model can match them.
"""
from __future__ import annotations

from pathlib import Path

from .build import (DiffusionSize, VocoderSize, build_audioldm2, build_text_to_video, build_unclip,
                    tiny_t5_tokenizer)

def save_tiny_unclip(path: "str | Path", image_embed_dim: int = 32, text_dim: int = 32, sample_size: int = 8,
                     seed: int = 0) -> Path:
    """Writes a tiny ``StableUnCLIPImg2ImgPipeline`` (v-prediction, 16×16 images at the default size).

    Args:
        image_embed_dim: D of ``image_embeds`` (B, D) (1024 for SD-2.1-unCLIP-H).
        text_dim: CLIP text hidden size = UNet cross-attention dim.
        sample_size: UNet latent size; images are ``2 × sample_size`` pixels (VAE factor 2).
    """
    size = DiffusionSize(attention_head_dim=(2, 4), reseed=True)
    return _save(build_unclip(size, image_embed_dim, text_dim, 2 * sample_size, text_layers=2,
                              cross_attention_first=True, seed=seed), path)


def save_tiny_audioldm2(path: "str | Path", gen_dim: int = 16, gen_len: int = 8, t5_dim: int = 32,
                        clap_dim: int = 16, mel_bins: int = 8, sampling_rate: int = 16000,
                        upsample_rates: tuple[int, ...] = (2, 2), seed: int = 0) -> Path:
    """Writes a tiny ``AudioLDM2Pipeline`` (mel hop = prod(upsample_rates): 4 by default, so 0.016 s at
    16 kHz = 64 mel frames; AudioLDM2 uses hop 160).

    Args:
        gen_dim / gen_len: ``generated_prompt_embeds`` (B, gen_len, gen_dim) (8 × 768 for AudioLDM2).
        t5_dim: D of ``prompt_embeds`` (B, T, D) (1024 for AudioLDM2's Flan-T5-large).
        clap_dim: CLAP text projection dim.
        mel_bins: vocoder mel bins (64 for AudioLDM2).
        upsample_rates: the vocoder's upsampling per stage; a larger hop makes long clips cheaper.
    """
    vocoder = VocoderSize(upsample_rates=tuple(upsample_rates), mel_bins=mel_bins)
    return _save(build_audioldm2(DiffusionSize(reseed=True), vocoder, gen_len, gen_dim, t5_dim, tiny_t5_tokenizer(),
                                 clap_dim=clap_dim, sampling_rate=sampling_rate, seed=seed), path)


def save_tiny_text_to_video(path: "str | Path", text_dim: int = 16, text_len: int = 77, sample_size: int = 16,
                            seed: int = 0) -> Path:
    """Writes a tiny ``TextToVideoSDPipeline`` (Zeroscope layout; frames are ``sample_size`` pixels).

    Args:
        text_dim: D of ``prompt_embeds`` (B, text_len, D) (1024 for Zeroscope).
        text_len: CLIP context length (77 for Zeroscope).
    """
    size = DiffusionSize(block_out_channels=(8, 16), norm_num_groups=4, vae_block_out_channels=(8,), reseed=True)
    return _save(build_text_to_video(size, text_dim, text_len, sample_size, seed=seed), path)


def _save(pipe, path: "str | Path") -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(path))
    return path
