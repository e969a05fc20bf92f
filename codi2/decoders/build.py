"""Small diffusers pipelines built from sizes: the tiny test decoders (:mod:`codi2.decoders.tiny`) and the
mini model's trainable decoders are both made here.

Each builder makes the real pipeline class (``StableUnCLIPImg2ImgPipeline``, ``AudioLDM2Pipeline``,
``TextToVideoSDPipeline``, after diffusers' own pipeline fast tests) from random components seeded with
``seed``, with tokenizers built in-process (no hub downloads). The UNet and the VAE come from a
:class:`DiffusionSize`; the other arguments are the conditioning shapes the pipeline must take.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

_WORDS = ("a the of and with in on at to is it this that red green blue yellow black white small big large "
          "circle square triangle star dog cat bird car sound music voice drum piano moving left right up down "
          "top bottom video image audio").split()


# ----------------------------------------------------------------------------- tokenizers
def _byte_chars() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A byte-level CLIP BPE tokenizer with no merges (every byte is a token): 514 tokens."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def tiny_roberta_tokenizer(model_max_length: int = 77):
    """A byte-level RoBERTa BPE tokenizer with no merges: 261 tokens."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in _byte_chars():
        vocab[c] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def tiny_t5_tokenizer(model_max_length: int = 77):
    """A unigram T5 tokenizer over lowercase characters and a few whole words: 68 tokens."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ".,'!?-"]
    pieces += [("\u2581" + w, -1.0) for w in _WORDS[:22]]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


# ----------------------------------------------------------------------------- sizes and pipelines
@dataclass
class DiffusionSize:
    """The UNet and VAE of a pipeline.

    Attributes:
        block_out_channels / layers_per_block / attention_head_dim / norm_num_groups: the UNet (one
            attention head size, or one per block).
        latent_channels: VAE latent channels (= UNet in/out channels).
        vae_block_out_channels / vae_norm_num_groups: the VAE; it downsamples by ``2 ** (len - 1)``.
        reseed: seed every component with ``seed`` (True), or draw them one after another from one seeding.
    """

    block_out_channels: Sequence[int] = (16, 32)
    layers_per_block: int = 1
    attention_head_dim: Union[int, Sequence[int]] = 4
    norm_num_groups: int = 8
    latent_channels: int = 4
    vae_block_out_channels: Sequence[int] = (8, 16)
    vae_norm_num_groups: int = 4
    reseed: bool = False

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    def head_dim(self) -> Union[int, tuple[int, ...]]:
        d = self.attention_head_dim
        return int(d) if isinstance(d, int) else tuple(int(x) for x in d)


@dataclass
class VocoderSize:
    """The HiFi-GAN generator (``SpeechT5HifiGan``) of an audio pipeline: ``channels`` halve at every upsampling
    stage; the mel hop is ``prod(upsample_rates)``; one residual block per kernel size, each with ``dilations``."""

    channels: int = 8
    upsample_rates: Sequence[int] = (2, 2)
    resblock_kernel_sizes: Sequence[int] = (3,)
    resblock_dilations: Sequence[int] = (1, 3)
    mel_bins: int = 8

    def config(self, sampling_rate: int) -> dict:
        """The ``SpeechT5HifiGanConfig`` fields."""
        rates = [int(r) for r in self.upsample_rates]
        return {"model_in_dim": self.mel_bins, "sampling_rate": sampling_rate,
                "upsample_initial_channel": self.channels, "upsample_rates": rates,
                "upsample_kernel_sizes": [2 * r for r in rates],
                "resblock_kernel_sizes": [int(k) for k in self.resblock_kernel_sizes],
                "resblock_dilation_sizes": [[int(d) for d in self.resblock_dilations]] * len(self.resblock_kernel_sizes),
                "normalize_before": False}


class _Seeds:
    """Seeds torch once, then again before every component when ``size.reseed``."""

    def __init__(self, seed: int, size: DiffusionSize):
        self.seed, self.each = seed, size.reseed
        torch.manual_seed(seed)

    def next(self) -> None:
        if self.each:
            torch.manual_seed(self.seed)


def _blocks(kind: str, n: int, cross_attention_first: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down and up block types: cross-attention in every block but the lowest-resolution one
    (``cross_attention_first``) or but the highest-resolution one."""
    cross_down, plain_down = f"CrossAttnDownBlock{kind}", f"DownBlock{kind}"
    cross_up, plain_up = f"CrossAttnUpBlock{kind}", f"UpBlock{kind}"
    if cross_attention_first:
        return (cross_down,) * (n - 1) + (plain_down,), (plain_up,) + (cross_up,) * (n - 1)
    return (plain_down,) + (cross_down,) * (n - 1), (cross_up,) * (n - 1) + (plain_up,)


def build_vae(in_channels: int, size: DiffusionSize, sample_size: int):
    """An ``AutoencoderKL`` for ``in_channels`` channels (3: pictures and frames, 1: mels)."""
    from diffusers import AutoencoderKL

    n = len(size.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=size.latent_channels,
        block_out_channels=tuple(size.vae_block_out_channels), down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n, layers_per_block=1, norm_num_groups=size.vae_norm_num_groups,
        sample_size=sample_size)


def build_vocoder(size: VocoderSize, sampling_rate: int = 16000):
    """The HiFi-GAN generator AudioLDM2 uses (``SpeechT5HifiGan``)."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    return SpeechT5HifiGan(SpeechT5HifiGanConfig(**size.config(sampling_rate)))


def build_unclip(size: DiffusionSize, image_embed_dim: int, text_dim: int, image_size: int, text_layers: int = 1,
                 cross_attention_first: bool = False, seed: int = 0) -> Any:
    """A ``StableUnCLIPImg2ImgPipeline`` (v-prediction) for ``image_size`` px images.

    Conditioning: ``image_embeds`` (B, image_embed_dim) via the UNet's projection class embedding; the
    (empty) prompt through a small CLIP text encoder of width ``text_dim`` (= UNet cross-attention dim).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    tokenizer = tiny_clip_tokenizer()
    seeds = _Seeds(seed, size)
    # never run by codi2 (image_embeds replace it), but part of the pipeline layout
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, projection_dim=image_embed_dim, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, intermediate_size=16, patch_size=4))
    seeds.next()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        hidden_size=text_dim, projection_dim=text_dim, intermediate_size=2 * text_dim, num_attention_heads=2,
        num_hidden_layers=text_layers, vocab_size=len(tokenizer), max_position_embeddings=77))
    seeds.next()
    down, up = _blocks("2D", len(size.block_out_channels), cross_attention_first)
    unet = UNet2DConditionModel(
        sample_size=image_size // size.vae_factor, in_channels=size.latent_channels,
        out_channels=size.latent_channels, layers_per_block=size.layers_per_block, down_block_types=down,
        up_block_types=up, block_out_channels=tuple(size.block_out_channels), attention_head_dim=size.head_dim(),
        norm_num_groups=size.norm_num_groups, class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * image_embed_dim, cross_attention_dim=text_dim,
        upcast_attention=True, use_linear_projection=True)
    seeds.next()
    vae = build_vae(3, size, image_size)
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=16, size=16), image_encoder=image_encoder.eval(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=image_embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer, text_encoder=text_encoder.eval(), unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                                clip_sample=False),  # as SD-2.1 unCLIP: clipping x0 to [-1, 1] ruins latents
        vae=vae)


def build_audioldm2(size: DiffusionSize, vocoder: VocoderSize, gen_len: int, gen_dim: int, t5_dim: int,
                    t5_tokenizer: Any, t5_layers: int = 1, t5_heads: int = 2, t5_d_kv: int = 8, clap_dim: int = 16,
                    clap_hidden: int = 16, vae_sample_size: int = 32, sampling_rate: int = 16000,
                    seed: int = 0) -> Any:
    """An ``AudioLDM2Pipeline``; its mel hop is ``prod(vocoder.upsample_rates)`` (AudioLDM2 uses 160).

    Conditioning: ``generated_prompt_embeds`` (B, gen_len, gen_dim) and ``prompt_embeds`` (B, T, t5_dim) from a
    T5 encoder over ``t5_tokenizer``; the CLAP text model (width ``clap_hidden``, projection ``clap_dim``) is
    part of the layout only.
    """
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, DDIMScheduler
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig,
                              GPT2Config, GPT2Model, T5Config, T5EncoderModel)

    n = len(size.block_out_channels)
    tokenizer = tiny_roberta_tokenizer()
    seeds = _Seeds(seed, size)
    down, up = _blocks("2D", n, cross_attention_first=False)
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=32, in_channels=size.latent_channels, out_channels=size.latent_channels,
        layers_per_block=size.layers_per_block, block_out_channels=tuple(size.block_out_channels),
        norm_num_groups=size.norm_num_groups, attention_head_dim=size.head_dim(), down_block_types=down,
        up_block_types=up, cross_attention_dim=tuple([None, gen_dim, t5_dim] for _ in range(n)))
    seeds.next()
    vae = build_vae(1, size, vae_sample_size)
    seeds.next()
    text_config = ClapTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=clap_hidden,
                                 intermediate_size=2 * clap_hidden, num_attention_heads=2, num_hidden_layers=1,
                                 vocab_size=len(tokenizer), max_position_embeddings=80, projection_dim=clap_dim)
    audio_config = ClapAudioConfig(spec_size=16, window_size=2, num_mel_bins=16, intermediate_size=16, depths=[1, 1],
                                   num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=16,
                                   patch_embeds_hidden_size=8, projection_dim=clap_dim, patch_size=2, patch_stride=2,
                                   patch_embed_input_channels=4)
    text_encoder = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                        projection_dim=clap_dim))
    seeds.next()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=t5_dim, d_ff=2 * t5_dim,
                                             d_kv=t5_d_kv, num_heads=t5_heads, num_layers=t5_layers))
    seeds.next()
    language_model = GPT2Model(GPT2Config(n_embd=gen_dim, n_head=2, n_layer=1, vocab_size=16, n_ctx=128,
                                          n_positions=128, bos_token_id=0, eos_token_id=0))
    language_model.config.max_new_tokens = gen_len
    seeds.next()
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim,
                                                langauge_model_dim=gen_dim)
    seeds.next()
    hifigan = build_vocoder(vocoder, sampling_rate)
    return AudioLDM2Pipeline(
        vae=vae, text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
        projection_model=projection_model.eval(), language_model=language_model.eval(), tokenizer=tokenizer,
        tokenizer_2=t5_tokenizer, feature_extractor=ClapFeatureExtractor(), unet=unet,
        scheduler=DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False),
        vocoder=hifigan)


def build_text_to_video(size: DiffusionSize, text_dim: int, text_len: int, image_size: int, seed: int = 0) -> Any:
    """A ``TextToVideoSDPipeline`` (Zeroscope layout) for ``image_size`` px frames.

    Conditioning: ``prompt_embeds`` (B, text_len, text_dim) from a byte-level CLIP text encoder.
    """
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(model_max_length=text_len)
    seeds = _Seeds(seed, size)
    down, up = _blocks("3D", len(size.block_out_channels), cross_attention_first=True)
    unet = UNet3DConditionModel(
        sample_size=image_size // size.vae_factor, in_channels=size.latent_channels,
        out_channels=size.latent_channels, layers_per_block=size.layers_per_block,
        block_out_channels=tuple(size.block_out_channels), down_block_types=down, up_block_types=up,
        cross_attention_dim=text_dim, attention_head_dim=size.head_dim(), norm_num_groups=size.norm_num_groups)
    seeds.next()
    vae = build_vae(3, size, image_size)
    seeds.next()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        hidden_size=text_dim, intermediate_size=2 * text_dim, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=text_len, hidden_act="gelu", projection_dim=text_dim))
    return TextToVideoSDPipeline(
        vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False))
