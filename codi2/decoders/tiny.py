"""Tiny diffusers pipelines with dummy-size random components, for tests and the tiny scale.

Each ``save_tiny_*`` builds the real pipeline class from dummy-size components (after diffusers'
own pipeline fast tests: tests/pipelines/{stable_unclip,audioldm2,text_to_video_synthesis}),
seeds every component, builds tokenizers in-process (no hub downloads) and writes the pipeline
with ``save_pretrained`` in the real diffusers layout. The key dimensions are parameters so a tiny
CoDi-2 model can match them.
"""
from __future__ import annotations

import string
from pathlib import Path

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


# ----------------------------------------------------------------------------- pipelines
def _tiny_vae(in_channels: int, latent_channels: int, blocks: tuple[int, ...], sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        block_out_channels=blocks, down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks), layers_per_block=1, norm_num_groups=4,
        sample_size=sample_size,
    )


def save_tiny_unclip(path: "str | Path", image_embed_dim: int = 32, text_dim: int = 32, sample_size: int = 8,
                     seed: int = 0) -> Path:
    """Writes a tiny ``StableUnCLIPImg2ImgPipeline`` (v-prediction, 16×16 images at the default size).

    Args:
        image_embed_dim: D of ``image_embeds`` (B, D) (1024 for SD-2.1-unCLIP-H).
        text_dim: CLIP text hidden size = UNet cross-attention dim.
        sample_size: UNet latent size; images are ``2 × sample_size`` pixels (VAE factor 2).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, projection_dim=image_embed_dim, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, intermediate_size=16, patch_size=4))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        hidden_size=text_dim, projection_dim=text_dim, intermediate_size=2 * text_dim, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), attention_head_dim=(2, 4), norm_num_groups=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * image_embed_dim,
        cross_attention_dim=text_dim, upcast_attention=True, use_linear_projection=True)
    torch.manual_seed(seed)
    vae = _tiny_vae(3, 4, (8, 16), 2 * sample_size)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=16, size=16),
        image_encoder=image_encoder.eval(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=image_embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer, text_encoder=text_encoder.eval(), unet=unet.eval(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                                clip_sample=False),  # as SD-2.1 unCLIP: clipping x0 to [-1, 1] ruins latents
        vae=vae.eval(),
    )
    return _save(pipe, path)


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
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, DDIMScheduler
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig,
                              GPT2Config, GPT2Model, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config,
                              T5EncoderModel)

    tokenizer = tiny_roberta_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, gen_dim, t5_dim], [None, gen_dim, t5_dim]))
    torch.manual_seed(seed)
    vae = _tiny_vae(1, 4, (8, 16), 32)
    torch.manual_seed(seed)
    text_config = ClapTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=32,
                                 num_attention_heads=2, num_hidden_layers=1, vocab_size=len(tokenizer),
                                 max_position_embeddings=80, projection_dim=clap_dim)
    audio_config = ClapAudioConfig(spec_size=16, window_size=2, num_mel_bins=16, intermediate_size=16, depths=[1, 1],
                                   num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=16,
                                   patch_embeds_hidden_size=8,
                                   projection_dim=clap_dim, patch_size=2, patch_stride=2, patch_embed_input_channels=4)
    text_encoder = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                        projection_dim=clap_dim))
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=t5_dim, d_ff=2 * t5_dim, d_kv=8,
                                             num_heads=2, num_layers=1))
    torch.manual_seed(seed)
    language_model = GPT2Model(GPT2Config(n_embd=gen_dim, n_head=2, n_layer=1, vocab_size=16, n_ctx=128,
                                          n_positions=128, bos_token_id=0, eos_token_id=0))
    language_model.config.max_new_tokens = gen_len
    torch.manual_seed(seed)
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim,
                                                langauge_model_dim=gen_dim)
    torch.manual_seed(seed)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=mel_bins, sampling_rate=sampling_rate, upsample_initial_channel=8,
        upsample_rates=list(upsample_rates), upsample_kernel_sizes=[2 * r for r in upsample_rates],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False))
    pipe = AudioLDM2Pipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
        projection_model=projection_model.eval(), language_model=language_model.eval(), tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(),
        unet=unet.eval(),
        scheduler=DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False),
        vocoder=vocoder.eval(),
    )
    return _save(pipe, path)


def save_tiny_text_to_video(path: "str | Path", text_dim: int = 16, text_len: int = 77, sample_size: int = 16,
                            seed: int = 0) -> Path:
    """Writes a tiny ``TextToVideoSDPipeline`` (Zeroscope layout; frames are ``sample_size`` pixels).

    Args:
        text_dim: D of ``prompt_embeds`` (B, text_len, D) (1024 for Zeroscope).
        text_len: CLIP context length (77 for Zeroscope).
    """
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(model_max_length=text_len)
    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=text_dim, attention_head_dim=4, norm_num_groups=4)
    torch.manual_seed(seed)
    vae = _tiny_vae(3, 4, (8,), sample_size)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        hidden_size=text_dim, intermediate_size=2 * text_dim, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=text_len, hidden_act="gelu", projection_dim=text_dim))
    pipe = TextToVideoSDPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False),
    )
    return _save(pipe, path)


def _save(pipe, path: "str | Path") -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(path))
    return path
