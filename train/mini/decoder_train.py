"""Stage 2 of the mini recipe: small unCLIP / AudioLDM2 / text-to-video pipelines trained on the world.

Each decoder is the real diffusers pipeline class at a small size (the ``codi2.decoders.tiny`` builders
scaled up and parameterised), trained on world renders and conditioned exactly on what the output heads
will produce (docs/design.md#feature-tokens):

* image (``StableUnCLIPImg2ImgPipeline``, 64 px): ``image_embeds`` = the aligned mini encoder's vision
  embedding of the image (``ImageBindEncoder.encode_image(...).embed``), noise-augmented as in unCLIP
  training (a random noise level in ``[0, max_noise_level]`` per step, through the pipeline's own
  ``noise_image_embeddings``); the text prompt is the empty string, as at inference.
* audio (``AudioLDM2Pipeline``, 1 s at 16 kHz): the pipeline's own ``generated_prompt_embeds`` +
  ``prompt_embeds`` of the caption (``AudioDecoder.targets``), with an all-ones attention mask as the
  decoder uses for head outputs.
* video (``TextToVideoSDPipeline``, 8 frames at 64 px): its own ``prompt_embeds`` of the caption.

The text encoders inside the pipelines (CLIP, CLAP, T5, GPT-2) are deterministic functions of the caption, so
the heads can regress their outputs and the UNet learns to read them. They stay at their seeded random init,
except the video decoder's CLIP text encoder with ``video.text_encoder_steps`` set: it first learns to state
the world's attributes at every token position (:func:`train_text_encoder`), because a random one barely
tells the directions of motion apart. Trained per modality, in order: the VAE (reconstruction MSE + a small KL; the
latent ``scaling_factor`` is then set to 1 / std of the latents, as SD's 0.18215 was), the vocoder
(audio only: log-mel -> waveform on random ``vocoder_segment_frames``-frame crops, HiFi-GAN's mel L1 + a
multi-resolution STFT loss, no discriminator; its hop sets the pitches it can hold, see
:func:`vocoder_pitch_errors`; a vocoder whose architecture differs from the config is rebuilt when
continuing with ``init=``), then the UNet with the decoder's own denoising objective
(``Decoder.diffusion_loss``: epsilon or v-prediction from the scheduler config) and classifier-free-guidance
dropout to the decoder's own unconditional conditioning.
The video pipeline reuses the image VAE (same frames) unless ``video.share_image_vae`` is false.

Every pipeline is written with ``save_pretrained`` to ``<out>/<modality>`` (atomically) and loads with
``codi2.decoders.build_decoder``. ``<out>/<modality>/train.json`` holds the report: timings, losses,
and, with ``judges`` set, the world judges' accuracy on VAE reconstructions and on decoded held-out
conditions.

    codi2 train-component decoder configs/train/mini-decoders.yaml
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from codi2.config import DecoderConfig, ModelConfig, load_model_config, resolve_path
from codi2.decoders.build import DiffusionSize, VocoderSize, build_audioldm2, build_text_to_video, build_unclip
from codi2.decoders.build import build_vocoder as build_hifigan
from codi2.io import atomic_dir
from train.checkpointing import LoopCheckpoints, LoopClock, resumed_note
from train.mini.common import (WORLD_MODALITIES, WorldSample, check_choice, file_digest, seed_everything, set_threads,
                               world_batch)

logger = logging.getLogger(__name__)

REPORT_FILE = "train.json"


# ----------------------------------------------------------------------------- config
@dataclass
class DecoderArch:
    """Architecture and schedule of one decoder.

    Attributes:
        block_out_channels / layers_per_block / attention_head_dim / norm_num_groups: the UNet.
        vae_block_out_channels: the VAE; its downsampling factor is 2 ** (len - 1).
        latent_channels: VAE latent channels (= UNet in/out channels).
        text_dim: image only: the (unused, empty-prompt) CLIP text width = UNet cross-attention dim.
        vocoder_channels / vocoder_upsample_rates: audio only: HiFi-GAN width and upsampling (hop = product).
        vocoder_resblock_kernel_sizes / vocoder_resblock_dilations: audio only: HiFi-GAN's multi-receptive-field
            residual blocks (one per kernel size, each with these dilations; HiFi-GAN V1/V2: 3, 7, 11 / 1, 3, 5).
        mel_bins: audio only: vocoder mel bins.
        share_image_vae: video only: reuse the image decoder's VAE (trained in this run or read from
            ``<out>/image/vae``) instead of training one.
        vae_steps / vocoder_steps / unet_steps: optimiser steps of each phase (0 skips the phase).
        vocoder_lr / vocoder_mel_weight / vocoder_segment_frames: audio only: the vocoder's AdamW rate, the
            weight of its log-mel L1 term (HiFi-GAN's 45) and the mel frames of each training crop.
        vocoder_level_weight: audio only: weight of a spectral-convergence term on the linear mel magnitudes
            (``‖M − M̂‖ / ‖M‖``). The log-mel L1 weighs every bin alike, so a pure tone (one loud bin a frame
            among 64) that the generator cannot yet hold cleanly is cheapest made quiet; this term weighs bins
            by their energy and keeps the level (0: HiFi-GAN's loss alone).
        batch_size / vae_batch_size: samples per step.
        frame_every / frame_batch_size: video only: every ``frame_every``-th UNet step is a batch of
            ``frame_batch_size`` single frames (one-frame clips) instead of clips (0: none); see :func:`train_unet`.
        prediction_type: the UNet's target, ``epsilon`` or ``v_prediction`` ("" keeps the pipeline's own:
            v-prediction for image, epsilon for audio and video).
        zero_snr: rescale the noise schedule to zero terminal SNR and sample from the last timestep
            (``rescale_betas_zero_snr``, ``timestep_spacing: trailing``; Lin et al. 2024, "Common Diffusion
            Noise Schedules and Sample Steps are Flawed"); needs v-prediction. SD's schedule keeps
            ``sqrt(alpha_bar_T) = 0.068`` of the signal at its last step: summed over 8 × 16 × 16 video
            latents that tells the UNet the clip's colour and motion without the text, which pure-noise
            sampling then cannot give it (see :func:`set_schedule`).
        high_noise_fraction / high_noise_from: the share of UNet training samples whose timestep is drawn from
            ``[high_noise_from, 1000)`` instead of ``[0, 1000)`` (0: uniform). A clip's direction is set in the
            first sampling steps, from noise that holds none: the UNet must learn it there from the text alone,
            and uniform timesteps give those steps a tenth of the loss (``benchmarks/terminal_leak.py`` probes it).
        lr / vae_lr: AdamW learning rates (cosine decay after a short warm-up).
        vae_decoder_only: train only the VAE's decoder half (``decoder`` and ``post_quant_conv``), the encoder
            frozen: the latent space, and so every UNet trained on it (and its ``scaling_factor``), stays valid,
            while the reconstructions sharpen (e.g. a small star the 800-step VAE rounds into a circle).
        pool_size: training renders per modality, rendered once (held in memory).
        text_encoder_steps / text_encoder_lr: video only: first teach the pipeline's CLIP text encoder the
            world's words (0: keep it at its seeded random init), see :func:`train_text_encoder`. A random causal
            text model barely tells "moving left" from "moving right" (the last word: a cosine of 0.993
            between the four directions), so the UNet cannot read the direction from it; Zeroscope's own
            text encoder is a trained OpenCLIP one.
    """

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    vae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    latent_channels: int = 4
    text_dim: int = 32
    vocoder_channels: int = 64
    vocoder_upsample_rates: list[int] = field(default_factory=lambda: [5, 5, 5])
    mel_bins: int = 64
    share_image_vae: bool = True
    vae_steps: int = 1000
    vocoder_steps: int = 0
    vocoder_lr: float = 1e-3
    vocoder_mel_weight: float = 45.0
    vocoder_level_weight: float = 0.0
    vocoder_segment_frames: int = 32
    vocoder_resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    vocoder_resblock_dilations: list[int] = field(default_factory=lambda: [1, 3, 5])
    unet_steps: int = 3000
    batch_size: int = 16
    frame_every: int = 0
    frame_batch_size: int = 32
    prediction_type: str = ""
    zero_snr: bool = False
    high_noise_fraction: float = 0.0
    high_noise_from: int = 800
    vae_batch_size: int = 16
    lr: float = 5e-4
    vae_lr: float = 1e-3
    vae_decoder_only: bool = False
    pool_size: int = 2000
    text_encoder_steps: int = 0
    text_encoder_lr: float = 1e-3


@dataclass
class DecoderTrainConfig:
    """Decoder training run.

    Attributes:
        model: model config (YAML path or preset): the heads' ``targets`` fix each decoder's conditioning
            shapes, the ``decoder`` sections its sampling settings (steps, guidance, audio_seconds,
            prompt_len, num_frames), and ``encoder`` the image conditioning encoder.
        model_overrides: ``key=value`` overrides of that model config.
        encoder_weights: the aligned encoder ``.pth`` (default: the model config's ``encoder.weights``,
            relative to the model config's folder).
        out: output folder; each pipeline goes to ``<out>/<modality>``.
        modalities: which decoders to train (in this order; video after image shares its VAE).
        image / audio / video: per-modality architecture and schedule.
        p_uncond: probability of replacing a sample's conditioning with the unconditional one (CFG dropout).
        max_noise_level: image only: upper bound of the ``image_embeds`` noise augmentation level.
        init: continue from trained pipelines: ``<init>/<modality>`` (e.g. ``runs/mini/decoders``) instead of
            fresh ones; phases with 0 steps are skipped, so ``image.vae_steps=0 image.unet_steps=N`` trains the
            image UNet N more steps (a new warm-up + cosine schedule). ``init`` may equal ``out``.
        judges: a ``data_builders.world.judges.Judges`` folder; when set, the report gives judge accuracy
            on VAE reconstructions and on ``eval_n`` decoded held-out (test-split) conditions.
        eval_n / eval_steps: held-out decodes per modality and their sampling steps (0 = the model config's).
        checkpoint_every: write each training loop's state (weights, optimiser, random generators) to
            ``<out>/.<modality>.resume`` every this many steps, so that a killed run started again with the same
            settings goes on from the last one, bit for bit (0: no checkpoints). The folder goes once
            ``<out>/<modality>`` is written.
        resume: go on from ``<out>/.<modality>.resume`` when it holds this run's state (false: discard it and
            start over). State from a run with different settings is refused, naming what differs.
    """

    model: str = "configs/model/mini.yaml"
    model_overrides: list[str] = field(default_factory=list)
    encoder_weights: Optional[str] = None
    out: str = "runs/mini/decoders"
    modalities: list[str] = field(default_factory=lambda: list(WORLD_MODALITIES))
    image: DecoderArch = field(default_factory=lambda: DecoderArch(vocoder_steps=0))
    audio: DecoderArch = field(default_factory=lambda: DecoderArch(vae_block_out_channels=[32, 64, 64],
                                                                     vocoder_channels=128, vocoder_steps=3000,
                                                                     vocoder_upsample_rates=[10, 10, 5],
                                                                     vocoder_segment_frames=8))
    video: DecoderArch = field(default_factory=lambda: DecoderArch(block_out_channels=[32, 64, 64], batch_size=4,
                                                                     pool_size=1000))
    init: Optional[str] = None
    p_uncond: float = 0.1
    max_noise_level: int = 250
    kl_weight: float = 1e-6
    judges: Optional[str] = None
    eval_n: int = 48
    eval_steps: int = 0
    seed: int = 0
    world_seed: int = 0
    log_every: int = 100
    num_threads: int = 0
    checkpoint_every: int = 200
    resume: bool = True


# ----------------------------------------------------------------------------- tokenizers
def world_t5_tokenizer(model_max_length: int = 64):
    """A unigram T5 tokenizer whose pieces are every word of the world's captions plus single characters
    (so any other text still tokenizes): one token per world word."""
    from transformers import T5Tokenizer

    from train.mini.common import all_objects
    from data_builders.world import world

    words: dict[str, None] = {}
    rng = np.random.default_rng(0)
    for obj, d in all_objects("video"):
        for m in ("image", "audio", "video"):
            for _ in range(4):
                for w in world.caption(m, obj.with_(position=world.POSITIONS[rng.integers(5)]),
                                       d if m == "video" else None, rng).lower().replace(",", " ").split():
                    words[w] = None
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,'!?-"]
    pieces += [("\u2581" + w, -1.0) for w in sorted(words)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


# ----------------------------------------------------------------------------- pipeline builders
def diffusion_size(arch: DecoderArch) -> DiffusionSize:
    """The UNet and VAE sizes ``arch`` asks for."""
    return DiffusionSize(block_out_channels=tuple(arch.block_out_channels), layers_per_block=arch.layers_per_block,
                         attention_head_dim=arch.attention_head_dim, norm_num_groups=arch.norm_num_groups,
                         latent_channels=arch.latent_channels,
                         vae_block_out_channels=tuple(arch.vae_block_out_channels),
                         vae_norm_num_groups=arch.norm_num_groups)


def vocoder_size(arch: DecoderArch) -> VocoderSize:
    """The HiFi-GAN generator ``arch`` asks for."""
    return VocoderSize(channels=arch.vocoder_channels, upsample_rates=tuple(arch.vocoder_upsample_rates),
                       resblock_kernel_sizes=tuple(arch.vocoder_resblock_kernel_sizes),
                       resblock_dilations=tuple(arch.vocoder_resblock_dilations), mel_bins=arch.mel_bins)


def build_vocoder(arch: DecoderArch, sampling_rate: int = 16000):
    """The HiFi-GAN generator AudioLDM2 uses (``SpeechT5HifiGan``), sized by ``arch``."""
    return build_hifigan(vocoder_size(arch), sampling_rate)


def vocoder_matches(vocoder, arch: DecoderArch) -> bool:
    """Whether a loaded vocoder has the architecture ``arch`` asks for."""
    want = vocoder_size(arch).config(int(vocoder.config.sampling_rate))
    return all(_plain(getattr(vocoder.config, k)) == _plain(v) for k, v in want.items())


PITCH_ERROR_WARN_CENTS = 100.0  # adjacent world colours are a major third (400 cents) apart


def vocoder_pitch_errors(upsample_rates: Sequence[int], sampling_rate: int = 16000) -> dict[str, float]:
    """Cents from each world colour's pitch to the nearest tone a HiFi-GAN generator with these upsampling
    rates can hold: a multiple of its frame rate ``sampling_rate / prod(upsample_rates)``.

    The generator is shift-equivariant in whole frames (transposed convolutions with stride = rate, then
    stride-1 residual blocks), so a sustained tone, whose log-mel frames are all alike, comes out periodic
    in the hop: only harmonics of the frame rate. At hop 125 (128 Hz) a red 220 Hz tone can only become 256
    Hz, the orange pitch. Adjacent world colours are a major third (400 cents) apart, so an error past ~100
    cents costs the judges' colour; :func:`train_decoder` warns about it.
    """
    from data_builders.world.world import PITCH_HZ

    grid = sampling_rate / float(np.prod(list(upsample_rates)))
    out = {}
    for colour, f0 in PITCH_HZ.items():
        held = max(grid, round(f0 / grid) * grid)
        out[colour] = round(1200.0 * math.log2(held / f0), 1)
    return out


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def build_pipeline(modality: str, arch: DecoderArch, mcfg: ModelConfig, seed: int = 0):
    """The untrained pipeline of ``modality`` whose conditioning shapes equal the model config's head targets."""
    mc = mcfg.modalities[modality]
    t = {k: tuple(int(x) for x in v) for k, v in mc.head.targets.items()}
    need = {"image": {"image_embeds"}, "audio": {"generated_prompt_embeds", "prompt_embeds"},
            "video": {"prompt_embeds"}}[modality]
    if set(t) != need:
        raise ValueError(f"modalities.{modality}.head.targets has {sorted(t)}; the {modality} decoder takes {sorted(need)}")
    if modality == "image":
        (d,) = t["image_embeds"]
        if d != mcfg.encoder.out_embed_dim:
            raise ValueError(f"modalities.image.head.targets.image_embeds = [{d}] but encoder.out_embed_dim = "
                             f"{mcfg.encoder.out_embed_dim}: the unCLIP decoder is conditioned on the encoder's embedding")
        return build_unclip(diffusion_size(arch), d, arch.text_dim, image_size=64, seed=seed)
    if modality == "audio":
        (gl, gd), (pl, td) = t["generated_prompt_embeds"], t["prompt_embeds"]
        if pl != mc.decoder.prompt_len:
            raise ValueError(f"modalities.audio.head.targets.prompt_embeds has {pl} tokens but "
                             f"modalities.audio.decoder.prompt_len = {mc.decoder.prompt_len}; make them equal")
        # mel hop = prod(vocoder_upsample_rates): the recipe's 500 -> 32 frames a second (see vocoder_pitch_errors
        # for why not AudioLDM's 160); the T5 tokenizer knows every world word (world_t5_tokenizer)
        return build_audioldm2(diffusion_size(arch), vocoder_size(arch), gen_len=gl, gen_dim=gd, t5_dim=td,
                               t5_tokenizer=world_t5_tokenizer(pl),
                               t5_layers=2, t5_heads=max(1, td // 16), t5_d_kv=16, clap_dim=32, clap_hidden=32,
                               vae_sample_size=64, seed=seed)
    (tl, td), = (t["prompt_embeds"],)
    return build_text_to_video(diffusion_size(arch), text_dim=td, text_len=tl, image_size=64, seed=seed)


PREDICTION_TYPES = ("epsilon", "v_prediction")


def set_schedule(pipe_dir: Path, arch: DecoderArch) -> dict[str, Any]:
    """Applies ``arch.prediction_type`` / ``arch.zero_snr`` to the sampling scheduler saved in ``pipe_dir``
    (``scheduler/scheduler_config.json``; training and decoding both read it). Returns the keys it changed."""
    path = pipe_dir / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    want: dict[str, Any] = {}
    if arch.prediction_type:
        want["prediction_type"] = arch.prediction_type
    if arch.zero_snr:
        want.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    changed = {k: v for k, v in want.items() if config.get(k) != v}
    if changed:
        path.write_text(json.dumps({**config, **changed}, indent=2, sort_keys=True) + "\n")
    return changed


# ----------------------------------------------------------------------------- losses / schedules
def _lr(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def stft_loss(pred: torch.Tensor, target: torch.Tensor,
              resolutions: Sequence[tuple[int, int]] = ((256, 64), (512, 128), (1024, 256))) -> torch.Tensor:
    """Multi-resolution STFT loss (spectral convergence + L1 log magnitude; Parallel WaveGAN).

    Args:
        pred, target: waveforms (B, n).
    """
    loss = pred.new_zeros(())
    for n_fft, hop in resolutions:
        win = torch.hann_window(n_fft, device=pred.device)
        p = torch.stft(pred, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-5)
        t = torch.stft(target, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-5)
        loss = loss + torch.linalg.norm(t - p) / torch.linalg.norm(t) + F.l1_loss(p.log(), t.log())
    return loss / len(resolutions)


def mel_level_loss(pred_mel: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """Spectral convergence of two log-mels on their linear magnitudes: ``‖e^mel − e^pred‖ / ‖e^mel‖``
    over the batch. Zero when they match; 1 for a silent prediction of a non-silent target."""
    t, p = mel.exp(), pred_mel.exp()
    return torch.linalg.norm(t - p) / (torch.linalg.norm(t) + 1e-8)


@torch.no_grad()
def vocoder_level(dec, samples: list[WorldSample], judges=None) -> dict[str, float]:
    """One log-mel -> vocoder pass over held-out renders: the RMS of the output over the RMS of the normalised
    waveform its log-mel came from (1: the level kept), over all samples and per shape (timbre), and with
    ``judges`` their accuracy on the same outputs (the vocoder's ceiling). A HiFi-GAN generator trained on
    log-mel L1 alone leaves pure tones far quieter than rich ones."""
    from codi2.media import Audio

    waves = _normalised(_waves(dec, [s.media for s in samples]))
    out = dec.pipe.vocoder(dec.log_mel(waves, normalise=False))[:, :waves.shape[1]]
    ratio = (out.pow(2).mean(1) / waves[:, :out.shape[1]].pow(2).mean(1).clamp(min=1e-12)).sqrt()
    res: dict[str, float] = {}
    if judges is not None:
        scores = [judge_scores(judges, "audio", Audio(samples=w[None].numpy().astype(np.float32),
                                                sample_rate=dec.sample_rate)) for w in out]
        res.update(attribute_accuracy(scores, [s.attrs for s in samples]))
    res["rms_ratio"] = round(float(ratio.mean()), 4)
    for shape in sorted({s.attrs["shape"] for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.attrs["shape"] == shape]
        res[f"rms_ratio_{shape}"] = round(float(ratio[idx].mean()), 4)
    return res


TEXT_ENCODER_ATTRS = ("shape", "colour", "size", "direction")


def _caption_batch(n: int, rng: np.random.Generator) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``n`` varied world video captions and the index of each attribute they state."""
    from data_builders.world import world

    caps, ys = [], {a: [] for a in TEXT_ENCODER_ATTRS}
    for _ in range(n):
        obj, direction = world.random_object(rng), world.random_direction(rng)
        caps.append(world.video_caption(obj, direction, rng))
        for a in TEXT_ENCODER_ATTRS:
            ys[a].append(world.ATTRIBUTES[a].index(direction if a == "direction" else getattr(obj, a)))
    return caps, {a: torch.tensor(v) for a, v in ys.items()}


def direction_cosine(text_encoder, tokenizer) -> float:
    """Mean cosine between the (L, D) conditionings of one canonical video caption in its four directions."""
    from data_builders.world import world

    obj = world.WorldObject(shape="star", colour="red", size="large")
    ids = tokenizer([world.video_caption(obj, d) for d in world.DIRECTIONS], padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        h = F.normalize(text_encoder(ids).last_hidden_state.flatten(1), dim=-1)
    c = h @ h.T
    return round(float(c[~torch.eye(len(c), dtype=torch.bool)].mean()), 4)


def train_text_encoder(path: Path, steps: int, lr: float, seed: int, log_every: int,
                       batch_size: int = 64) -> dict[str, Any]:
    """Teaches the CLIP text encoder of the pipeline at ``path`` the world's words, in place.

    Linear heads read shape, colour, size and direction of motion from *every* token position from the
    caption's end-of-text token on (the padding the UNet also attends to, where the causal model has read the
    whole caption), on random varied captions, and the text encoder learns with them. What the UNet then
    gets differs by direction as much as by colour. The heads are dropped; the pipeline's own
    ``encode_prompt`` (no attention mask, as Zeroscope) is what is trained. Returns the report: the loss,
    held-out accuracy per attribute, and :func:`direction_cosine` before and after.
    """
    from transformers import AutoTokenizer, CLIPTextModel

    from data_builders.world import world

    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    te = CLIPTextModel.from_pretrained(str(path / "text_encoder")).float().train()
    torch.manual_seed(seed)
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(te.config.hidden_size, len(world.ATTRIBUTES[a]))
                                 for a in TEXT_ENCODER_ATTRS})
    report: dict[str, Any] = {"steps": steps, "lr": lr, "direction_cosine_before": direction_cosine(te, tokenizer)}
    opt = torch.optim.AdamW(list(te.parameters()) + list(heads.parameters()), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)

    def loss_acc(caps: list[str], ys: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        t = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
        h = te(t.input_ids).last_hidden_state  # (B, L, D)
        length = h.shape[1]
        eot = t.attention_mask.sum(1) - 1  # position of the end-of-text token
        m = (torch.arange(length)[None, :] >= eot[:, None]).float()
        loss, acc = h.new_zeros(()), {}
        for a in TEXT_ENCODER_ATTRS:
            logits = heads[a](h)  # (B, L, classes)
            y = ys[a][:, None].expand(-1, length)
            ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            loss = loss + (ce * m).sum() / m.sum()
            acc[a] = round(float(((logits.argmax(-1) == y).float() * m).sum() / m.sum()), 4)
        return loss, acc

    t0 = time.time()
    bar = tqdm(range(steps), desc="video text encoder", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr, warmup=min(50, steps // 10 + 1))
        loss, _ = loss_acc(*_caption_batch(batch_size, rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
        if log_every and (step % log_every == 0 or step == steps - 1):
            logger.info("video text encoder step %d/%d: loss %.4f", step + 1, steps, float(loss))
    te.eval()
    with torch.no_grad():
        _, acc = loss_acc(*_caption_batch(512, np.random.default_rng(seed + 1)))
    report.update(final_loss=round(float(loss.detach()), 4), held_out_accuracy=acc, seconds=round(time.time() - t0, 1),
                  direction_cosine_after=direction_cosine(te, tokenizer))
    te.save_pretrained(str(path / "text_encoder"))
    return report


def _vae_loss(vae, x: torch.Tensor, kl_weight: float, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """Reconstruction MSE + kl_weight x KL of a posterior sample. x: (B, C, H, W). Returns (loss, mse)."""
    dist = vae.encode(x).latent_dist
    rec = vae.decode(dist.sample(g)).sample
    mse = F.mse_loss(rec, x)
    return mse + kl_weight * dist.kl().mean(), float(mse.detach())


# ----------------------------------------------------------------------------- data
def _image_pixels(dec, images: list) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1] at the decoder's size (the pipeline's own preprocessing)."""
    h, w = dec.image_size(dec.pipe)
    return dec.pipe.image_processor.preprocess(images, height=h, width=w)


def _video_frames(dec, videos: list) -> torch.Tensor:
    """Videos -> every sampled frame as (B·F, 3, H, W) in [-1, 1] (F = decoder num_frames)."""
    n = int(dec.cfg.num_frames)
    frames = []
    for v in videos:
        pick = np.linspace(0, v.frames.shape[0] - 1, n).round().astype(int)
        frames.append(torch.from_numpy(v.frames[pick]).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    return torch.cat(frames)


def _waves(dec, audios: list) -> torch.Tensor:
    """Audios -> (B, n) at the vocoder rate, cropped/padded to ``audio_seconds`` (as ``encode_target``)."""
    sr = dec.sample_rate
    n = int(round(dec.cfg.audio_seconds * sr))
    out = []
    for a in audios:
        x = torch.from_numpy(np.asarray(a.samples, dtype=np.float32)).mean(0)
        out.append(F.pad(x[:n], (0, max(0, n - x.shape[0]))))
    return torch.stack(out)


def _mels(dec, waves: torch.Tensor) -> torch.Tensor:
    """Waveforms (B, n) -> log-mels (B, 1, frames, mels), frames padded with the log floor to a multiple of
    the VAE factor (the latent length the pipeline generates)."""
    mel = dec.log_mel(waves)  # (B, frames, mels)
    f = dec.pipe.vae_scale_factor
    pad = -mel.shape[1] % f
    return F.pad(mel, (0, 0, 0, pad), value=math.log(1e-5))[:, None]


def _normalised(wave: torch.Tensor) -> torch.Tensor:
    """The waveform the log-mel describes: mean removed, peak 0.5 (``AudioDecoder.log_mel``'s normalisation)."""
    wave = wave - wave.mean(dim=1, keepdim=True)
    return 0.5 * wave / (wave.abs().amax(dim=1, keepdim=True) + 1e-8)


# ----------------------------------------------------------------------------- phases
def train_vae(dec, modality: str, samples: list[WorldSample], arch: DecoderArch, kl_weight: float,
              seed: int, log_every: int, ckpt: Optional[LoopCheckpoints] = None) -> dict:
    """Trains ``dec.pipe.vae`` on the samples' pixels (image / video frames) or log-mels (audio), then sets
    its ``scaling_factor`` to 1 / std of the latents (``arch.vae_decoder_only``: only the decoder half trains and the
    scaling factor is kept). Returns ``{steps, seconds, cpu_seconds_per_step, final_mse, scaling_factor}``."""
    vae = dec.pipe.vae
    with torch.no_grad():
        if modality == "image":
            data = _image_pixels(dec, [s.media for s in samples])
        elif modality == "video":
            data = _video_frames(dec, [s.media for s in samples])
        else:
            data = _mels(dec, _waves(dec, [s.media for s in samples]))  # (N, 1, frames, mels)
    vae.train().requires_grad_(True)
    params = list(vae.parameters())
    if arch.vae_decoder_only:
        vae.encoder.requires_grad_(False)
        if getattr(vae, "quant_conv", None) is not None:
            vae.quant_conv.requires_grad_(False)
        vae.encoder.eval()
        params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=arch.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    state = ({"vae": vae}, opt, {"g": g})
    done, extra = ckpt.restore("vae", *state) if ckpt else (0, {})
    mses: list[float] = extra.get("mses", [])
    clock = LoopClock(extra)
    bar = tqdm(range(done, arch.vae_steps), initial=done, total=arch.vae_steps, desc=f"{modality} vae", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, arch.vae_steps, arch.vae_lr)
        x = data[torch.randint(len(data), (arch.vae_batch_size,), generator=g)]
        loss, mse = _vae_loss(vae, x, kl_weight, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        mses.append(mse)
        bar.set_postfix(mse=f"{mse:.4f}")
        if log_every and (step + 1) % log_every == 0:
            logger.info("%s vae step %d: mse %.5f", modality, step + 1, float(np.mean(mses[-log_every:])))
        if ckpt:
            ckpt.save("vae", step + 1, arch.vae_steps, *state, {"mses": mses, **clock.totals()})
    seconds, cpu = clock.totals().values()
    vae.eval().requires_grad_(False)
    if arch.vae_decoder_only:  # the same latents: the UNets trained on them keep their scale
        scale = float(vae.config.scaling_factor)
    else:
        with torch.no_grad():
            lat = torch.cat([vae.encode(data[i:i + 64]).latent_dist.mean for i in range(0, min(len(data), 512), 64)])
        scale = float(1.0 / lat.std())
        vae.register_to_config(scaling_factor=scale)
    steps = max(1, arch.vae_steps)
    return {"steps": arch.vae_steps, "seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps, 4),
            "cpu_seconds_per_step": round(cpu / steps, 4), "final_mse": float(np.mean(mses[-20:])) if mses else None,
            "scaling_factor": scale, "decoder_only": arch.vae_decoder_only, **resumed_note(done)}


def train_vocoder(dec, samples: list[WorldSample], arch: DecoderArch, seed: int, log_every: int,
                  probe: Optional[Callable[[], dict]] = None, probe_every: int = 0,
                  ckpt: Optional[LoopCheckpoints] = None) -> dict:
    """Trains ``dec.pipe.vocoder`` (HiFi-GAN generator) to invert the decoder's log-mel, as HiFi-GAN's
    generator loss without the discriminator: ``45 · L1(log-mel)`` of the output against the input mel
    plus the multi-resolution STFT loss against the normalised waveform the mel was computed from, plus
    ``vocoder_level_weight`` × :func:`mel_level_loss` when set.
    Each step sees random ``vocoder_segment_frames``-frame crops (HiFi-GAN's segment training).

    Args:
        probe: optional () -> metrics (e.g. judge accuracy of clean sounds through the vocoder), logged
            and kept in the report every ``probe_every`` steps.
    """
    voc = dec.pipe.vocoder
    with torch.no_grad():
        waves = _normalised(_waves(dec, [s.media for s in samples]))
        mels = dec.log_mel(waves, normalise=False)  # (N, frames, mels)
    hop = int(np.prod(voc.config.upsample_rates))
    frames = mels.shape[1]
    seg = min(int(arch.vocoder_segment_frames), frames) if arch.vocoder_segment_frames > 0 else frames
    voc.train().requires_grad_(True)
    opt = torch.optim.AdamW(voc.parameters(), lr=arch.vocoder_lr, betas=(0.8, 0.99))
    g = torch.Generator().manual_seed(seed)
    state = ({"vocoder": voc}, opt, {"g": g})
    done, extra = ckpt.restore("vocoder", *state) if ckpt else (0, {})
    losses: list[float] = extra.get("losses", [])
    probes: list[dict] = extra.get("probes", [])
    clock = LoopClock(extra)
    bar = tqdm(range(done, arch.vocoder_steps), initial=done, total=arch.vocoder_steps, desc="audio vocoder",
               unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, arch.vocoder_steps, arch.vocoder_lr)
        idx = torch.randint(len(mels), (arch.batch_size,), generator=g)
        start = torch.randint(frames - seg + 1, (arch.batch_size,), generator=g)
        mel = torch.stack([mels[i, s:s + seg] for i, s in zip(idx.tolist(), start.tolist())])  # (B, seg, mels)
        target = torch.stack([F.pad(waves[i, s * hop:(s + seg) * hop], (0, max(0, (s + seg) * hop - waves.shape[1])))
                              for i, s in zip(idx.tolist(), start.tolist())])  # (B, seg·hop)
        pred = voc(mel)[:, :seg * hop]  # (B, seg·hop)
        pred_mel = dec.log_mel(pred, normalise=False)  # (B, <= seg, mels): same frame grid as ``mel``
        mel_loss = F.l1_loss(pred_mel, mel[:, :pred_mel.shape[1]])
        loss = stft_loss(pred, target) + arch.vocoder_mel_weight * mel_loss
        if arch.vocoder_level_weight > 0:
            loss = loss + arch.vocoder_level_weight * mel_level_loss(pred_mel, mel[:, :pred_mel.shape[1]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        mel_l1 = float(mel_loss.detach())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", mel=f"{mel_l1:.3f}")
        if log_every and (step + 1) % log_every == 0:
            logger.info("vocoder step %d: loss %.4f (mel L1 %.4f)", step + 1, float(np.mean(losses[-log_every:])),
                        mel_l1)
        if probe is not None and probe_every and (step + 1) % probe_every == 0:
            voc.eval()
            with torch.no_grad():
                probes.append({"step": step + 1, **probe()})
            voc.train()
            logger.info("vocoder step %d: %s", step + 1, probes[-1])
        if ckpt:
            ckpt.save("vocoder", step + 1, arch.vocoder_steps, *state,
                      {"losses": losses, "probes": probes, **clock.totals()})
    seconds, cpu = clock.totals().values()
    voc.eval().requires_grad_(False)
    steps = max(1, arch.vocoder_steps)
    return {"steps": arch.vocoder_steps, "segment_frames": seg, "lr": arch.vocoder_lr,
            "mel_weight": arch.vocoder_mel_weight, "level_weight": arch.vocoder_level_weight,
            "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / steps, 4), "cpu_seconds_per_step": round(cpu / steps, 4),
            "final_loss": float(np.mean(losses[-20:])) if losses else None, "probes": probes, **resumed_note(done)}


def image_condition(encoder, preprocess, images: list) -> torch.Tensor:
    """The unCLIP conditioning the image head is trained to produce: the encoder's vision embedding (B, D)."""
    return encoder.encode_image(preprocess.images(images)).embed.float()


def conditions(dec, modality: str, samples: list[WorldSample], encoder=None, preprocess=None,
               chunk: int = 64) -> dict[str, torch.Tensor]:
    """Per-sample conditioning tensors (the heads' targets) for the samples, float32 on CPU."""
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        if modality == "image":
            c = {"image_embeds": image_condition(encoder, preprocess, [s.media for s in part])}
        else:
            c = dec.targets([s.caption for s in part])
        for k, v in c.items():
            out.setdefault(k, []).append(v)
    dec.free_text_encoders()
    return {k: torch.cat(v) for k, v in out.items()}


def _null_cond(dec, modality: str, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unconditional conditioning for a batch shaped like ``cond``: zeros ``image_embeds`` (unCLIP's
    own negative), else the decoder's cached empty-prompt embeddings (what guidance uses at inference)."""
    b = next(iter(cond.values())).shape[0]
    if modality == "image":
        return {"image_embeds": torch.zeros_like(cond["image_embeds"])}
    null = dec.null_conditioning  # the decoder's empty-prompt conditioning, computed at load (codi2.decoders.base)
    return {k: null[k].expand(b, *null[k].shape[1:]).to(cond[k].dtype).cpu() for k in cond}


def train_timesteps(b: int, arch: DecoderArch, g: torch.Generator, num_train_timesteps: int = 1000) -> torch.Tensor:
    """(b,) training timesteps: uniform, except a ``high_noise_fraction`` share drawn from
    ``[high_noise_from, num_train_timesteps)``."""
    t = torch.randint(num_train_timesteps, (b,), generator=g)
    if arch.high_noise_fraction > 0:
        high = torch.randint(arch.high_noise_from, num_train_timesteps, (b,), generator=g)
        t = torch.where(torch.rand(b, generator=g) < arch.high_noise_fraction, high, t)
    return t


def train_unet(dec, modality: str, latents: torch.Tensor, cond: dict[str, torch.Tensor], arch: DecoderArch,
               cfg: DecoderTrainConfig, log_every: int, ckpt: Optional[LoopCheckpoints] = None) -> dict:
    """Trains ``dec.pipe.unet`` with the decoder's own denoising loss (``Decoder.diffusion_loss``).

    Video has two kinds of step: a clip batch (``batch_size`` clips of all their frames) and a frame batch
    (``frame_batch_size`` single frames, each a one-frame clip: the 3-D UNet's spatial layers and cross-attention
    learn the picture from many more conditions per step; Make-A-Video and Zeroscope start from an image model
    the same way). Every ``frame_every``-th step is a frame batch (0: none).

    Args:
        latents: (N, ...) scaled VAE latents of the training pool; video (N, C, F, h, w).
        cond: name -> (N, ...) conditioning (the heads' targets).
    """
    total = arch.unet_steps
    unet = dec.pipe.unet
    unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=arch.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(cfg.seed)
    state = ({"unet": unet}, opt, {"g": g})
    done, extra = ckpt.restore("unet", *state) if ckpt else (0, {})
    losses: dict[str, list[float]] = extra.get("losses", {"clip": [], "frame": []})
    clock = LoopClock(extra)
    name = f"{modality} unet"
    bar = tqdm(range(done, total), initial=done, total=total, desc=name, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, total, arch.lr)
        frame_batch = modality == "video" and arch.frame_every > 0 and (step + 1) % arch.frame_every == 0
        b = arch.frame_batch_size if frame_batch else arch.batch_size
        idx = torch.randint(len(latents), (b,), generator=g)
        x = latents[idx]
        if frame_batch:  # one random frame of each clip, as a one-frame clip (B, C, 1, h, w)
            x = x[torch.arange(b), :, torch.randint(x.shape[2], (b,), generator=g)][:, :, None]
        c = {k: v[idx] for k, v in cond.items()}
        if modality == "audio":
            c["attention_mask"] = torch.ones(c["prompt_embeds"].shape[:2], dtype=torch.long)
        drop = torch.rand(b, generator=g) < cfg.p_uncond
        if drop.any():
            null = _null_cond(dec, modality, c)
            c = {k: torch.where(drop.view(-1, *([1] * (v.ndim - 1))), null[k].to(v.dtype), v) for k, v in c.items()}
        if modality == "image":  # unCLIP noise augmentation of image_embeds, one level per step
            dec.cfg.loss_noise_level = int(torch.randint(cfg.max_noise_level + 1, (1,), generator=g))
        seed = int(torch.randint(2**31, (1,), generator=g))
        # uniform timesteps are drawn inside the loss from its seed (as before high_noise_fraction existed)
        t = train_timesteps(b, arch, g) if arch.high_noise_fraction > 0 else None
        loss = dec.diffusion_loss(c, x, target_is_latents=True, seed=seed, timesteps=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        losses["frame" if frame_batch else "clip"].append(float(loss.detach()))
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if log_every and (step + 1) % log_every == 0:
            logger.info("%s step %d: %s", name, step + 1, ", ".join(
                f"{k + ' ' if modality == 'video' else ''}loss {np.mean(v[-log_every:]):.5f}"
                for k, v in losses.items() if v))
        if ckpt:
            ckpt.save("unet", step + 1, total, *state, {"losses": losses, **clock.totals()})
    seconds, cpu = clock.totals().values()
    unet.eval().requires_grad_(False)
    steps = max(1, total)
    main = losses["clip"]
    report = {"steps": total, "batch_size": arch.batch_size,
              "seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps, 4),
              "cpu_seconds_per_step": round(cpu / steps, 4),
              "final_loss": float(np.mean(main[-50:])) if main else None,
              "loss_first_50": float(np.mean(main[:50])) if main else None, **resumed_note(done)}
    if arch.high_noise_fraction > 0:
        report.update(high_noise_fraction=arch.high_noise_fraction, high_noise_from=arch.high_noise_from)
    if losses["frame"]:
        report.update(frame_every=arch.frame_every, frame_batch_size=arch.frame_batch_size,
                      final_frame_loss=float(np.mean(losses["frame"][-50:])))
    return report


# ----------------------------------------------------------------------------- evaluation
def judge_scores(judges, modality: str, media: Any) -> dict:
    return {"image": judges.score_image, "audio": judges.score_audio, "video": judges.score_video}[modality](media)


def attribute_accuracy(scores: list[dict], attrs: list[dict]) -> dict[str, float]:
    """Per-attribute accuracy, ``all`` (every attribute right), ``shape+colour`` and, for clips,
    ``colour+direction`` (the text -> video target)."""
    out: dict[str, float] = {}
    for a in attrs[0]:
        out[a] = float(np.mean([s[a][0] == t[a] for s, t in zip(scores, attrs)]))
    out["all"] = float(np.mean([all(s[a][0] == t[a] for a in t) for s, t in zip(scores, attrs)]))
    out["shape+colour"] = float(np.mean([s["shape"][0] == t["shape"] and s["colour"][0] == t["colour"]
                                         for s, t in zip(scores, attrs)]))
    if "direction" in attrs[0]:
        out["colour+direction"] = float(np.mean([s["colour"][0] == t["colour"] and s["direction"][0] == t["direction"]
                                                 for s, t in zip(scores, attrs)]))
    return out


@torch.no_grad()
def image_round_trip(dec, images: list) -> list:
    """PIL images through the image decoder's VAE (encode, mode of the posterior, decode) -> PIL images."""
    from PIL import Image

    vae = dec.pipe.vae
    rec = vae.decode(vae.encode(_image_pixels(dec, images)).latent_dist.mode()).sample
    return [Image.fromarray(x) for x in ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()]


@torch.no_grad()
def judge_reconstructions(dec, modality: str, samples: list[WorldSample], judges) -> dict[str, float]:
    """Judge accuracy of VAE (+ vocoder) round trips of held-out renders: the ceiling the UNet can reach
    (the vocoder's own ceiling, log-mel -> vocoder alone: :func:`vocoder_level` with judges)."""
    from codi2.media import Audio, Video

    vae = dec.pipe.vae
    scores = []
    if modality == "image":
        scores = [judge_scores(judges, modality, im) for im in image_round_trip(dec, [s.media for s in samples])]
    elif modality == "video":
        n = int(dec.cfg.num_frames)
        rec = vae.decode(vae.encode(_video_frames(dec, [s.media for s in samples])).latent_dist.mode()).sample
        frames = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        scores = [judge_scores(judges, modality, Video(frames=frames[i * n:(i + 1) * n], fps=float(dec.cfg.fps)))
                  for i in range(len(samples))]
    else:
        mel = _mels(dec, _waves(dec, [s.media for s in samples]))
        rec = vae.decode(vae.encode(mel).latent_dist.mode()).sample[:, 0]
        waves = dec.pipe.vocoder(rec).numpy()
        scores = [judge_scores(judges, modality, Audio(samples=w[None].astype(np.float32), sample_rate=dec.sample_rate))
                  for w in waves]
    return attribute_accuracy(scores, [s.attrs for s in samples])


@torch.no_grad()
def judge_generations(dec, modality: str, samples: list[WorldSample], judges, cond: dict[str, torch.Tensor],
                      steps: Optional[int], seed: int, batch: int = 16,
                      scheduler: Optional[str] = None, guidance: Optional[float] = None) -> dict[str, Any]:
    """Decodes the held-out conditions (``steps`` / ``scheduler`` / ``guidance``: None = the decoder's own) and
    scores the outputs against the samples' attributes."""
    outputs = []
    t0 = time.time()
    for i in range(0, len(samples), batch):
        c = {k: v[i:i + batch] for k, v in cond.items()}
        outputs += dec.decode(c, seed=seed + i, steps=steps or None, scheduler=scheduler, guidance=guidance)
    seconds = time.time() - t0
    scores = [judge_scores(judges, modality, o) for o in outputs]
    return {**attribute_accuracy(scores, [s.attrs for s in samples]), "n": len(samples),
            "seconds_per_sample": round(seconds / len(samples), 3)}


# ----------------------------------------------------------------------------- driver
def _encoder(cfg: DecoderTrainConfig, mcfg: ModelConfig):
    """The aligned image encoder (frozen) and its preprocessor."""
    from codi2.encoders import ImageBindEncoder, ImageBindPreprocessor

    enc_cfg = dataclasses.replace(mcfg.encoder, weights=str(_encoder_path(cfg, mcfg)), dtype="float32")
    return ImageBindEncoder(enc_cfg), ImageBindPreprocessor(enc_cfg)


def _encoder_path(cfg: DecoderTrainConfig, mcfg: ModelConfig) -> Path:
    weights = cfg.encoder_weights
    base = None
    if weights is None:
        weights = mcfg.encoder.weights
        model_path = Path(cfg.model)
        base = model_path.parent if model_path.suffix else Path(__file__).resolve().parents[2] / "configs" / "model"
    return resolve_path(weights, "encoder_weights" if cfg.encoder_weights else "encoder.weights (model config)",
                        base, expect="the aligned encoder .pth written by `codi2 train-component encoder`")


def resume_fingerprint(cfg: DecoderTrainConfig, modality: str, mcfg: ModelConfig) -> dict:
    """What makes one decoder's training run the same run for resuming (see :class:`LoopCheckpoints`): the
    settings that change its weights, and digests of what it starts from (``init``'s pipeline report, the shared
    image VAE, the image encoder). Logging, evaluation and thread settings are left out, and so are the paths
    (``out``, ``init``, ``encoder_weights``: their contents count, by digest), so a moved run folder still resumes."""
    skip = {"modalities", "judges", "eval_n", "eval_steps", "log_every", "num_threads", "checkpoint_every", "resume",
            "out", "init", "encoder_weights", *WORLD_MODALITIES}
    arch: DecoderArch = getattr(cfg, modality)
    starts: dict[str, Optional[str]] = {}
    if cfg.init is not None:
        starts["init"] = file_digest(Path(cfg.init) / modality / REPORT_FILE)
    elif modality == "video" and arch.share_image_vae:
        starts["image_vae"] = file_digest(Path(cfg.out) / "image" / "vae" / "diffusion_pytorch_model.safetensors")
    if modality == "image" and arch.unet_steps > 0:
        starts["encoder"] = file_digest(_encoder_path(cfg, mcfg))
    return {"modality": modality, "arch": asdict(arch),
            "run": {k: v for k, v in asdict(cfg).items() if k not in skip}, "starts_from": starts}


def decoder_config(mcfg: ModelConfig, modality: str, path: Path) -> DecoderConfig:
    return dataclasses.replace(mcfg.modalities[modality].decoder, path=str(path), device="cpu", dtype="float32",
                               offload="none")


def train_decoder(cfg: DecoderTrainConfig, modality: str, mcfg: ModelConfig, judges=None,
                  image_vae: Optional[Any] = None) -> tuple[dict, Any]:
    """Builds, trains and saves the ``modality`` pipeline to ``<out>/<modality>``. Returns (report, its VAE)."""
    from codi2.decoders import build_decoder

    arch: DecoderArch = getattr(cfg, modality)
    ckpt = LoopCheckpoints(Path(cfg.out) / f".{modality}.resume", resume_fingerprint(cfg, modality, mcfg),
                           cfg.checkpoint_every, cfg.resume)
    seed_everything(cfg.seed)
    report: dict[str, Any] = {"modality": modality, "arch": asdict(arch)}
    t_render = time.time()
    train = world_batch(modality, 0, arch.pool_size, cfg.world_seed, "train")
    held = world_batch(modality, 0, cfg.eval_n, cfg.world_seed, "test", canonical=True) if cfg.eval_n > 0 else []
    report["render_seconds"] = round(time.time() - t_render, 1)
    with atomic_dir(Path(cfg.out) / modality) as tmp:
        if cfg.init is not None:
            import shutil

            src = resolve_path(str(Path(cfg.init) / modality), "init", expect="a pipeline written by this stage")
            shutil.rmtree(tmp)
            shutil.copytree(src, tmp)
            report["init"] = str(src)
            if (src / REPORT_FILE).is_file():
                report["previous"] = json.loads((src / REPORT_FILE).read_text())
            pipe = None
        else:
            pipe = build_pipeline(modality, arch, mcfg, seed=cfg.seed)
        if pipe is not None and modality == "video" and arch.share_image_vae:
            if image_vae is None:
                from diffusers import AutoencoderKL

                src = Path(cfg.out) / "image" / "vae"
                if not (src / "config.json").is_file():
                    raise FileNotFoundError(f"video.share_image_vae is true but {src} does not exist: train the image "
                                            "decoder first (modalities: [image, video]) or set video.share_image_vae=false")
                image_vae = AutoencoderKL.from_pretrained(str(src))
            if list(image_vae.config.block_out_channels) != list(pipe.vae.config.block_out_channels):
                raise ValueError(f"video.share_image_vae: image VAE blocks {image_vae.config.block_out_channels} != "
                                 f"video.vae_block_out_channels {pipe.vae.config.block_out_channels}")
            pipe.vae.load_state_dict(image_vae.state_dict())
            pipe.vae.register_to_config(scaling_factor=image_vae.config.scaling_factor)
        if pipe is not None:
            pipe.save_pretrained(str(tmp))
            del pipe
        if arch.text_encoder_steps > 0:
            report["text_encoder"] = train_text_encoder(tmp, arch.text_encoder_steps, arch.text_encoder_lr,
                                                        cfg.seed, cfg.log_every)
            logger.info("video text encoder: %s", report["text_encoder"])
            if arch.unet_steps == 0:
                logger.warning("video: the text encoder changed but no UNet step runs: the UNet was trained on the "
                               "old one's conditioning")
        changed = set_schedule(tmp, arch)
        if changed:
            report["schedule_changed"] = changed
            if cfg.init is not None and arch.unet_steps == 0:
                logger.warning("%s: the scheduler changed (%s) but no UNet step runs: the UNet was trained for the "
                               "old one", modality, changed)
        dec = build_decoder(modality, decoder_config(mcfg, modality, tmp), device="cpu").load()
        logger.info("%s decoder: unet %s params, vae %s params", modality,
                    f"{sum(p.numel() for p in dec.pipe.unet.parameters()):,}",
                    f"{sum(p.numel() for p in dec.pipe.vae.parameters()):,}")
        # 1. VAE, 2. vocoder
        if not (modality == "video" and arch.share_image_vae) and arch.vae_steps > 0:
            report["vae"] = train_vae(dec, modality, train, arch, cfg.kl_weight, cfg.seed, cfg.log_every, ckpt)
        if modality == "audio" and arch.vocoder_steps > 0:
            if not vocoder_matches(dec.pipe.vocoder, arch):
                if int(dec.pipe.vocoder.config.model_in_dim) != arch.mel_bins:
                    raise ValueError(f"audio.mel_bins = {arch.mel_bins} but the pipeline's VAE works on "
                                     f"{dec.pipe.vocoder.config.model_in_dim} mel bins; keep mel_bins or train from scratch")
                logger.info("audio vocoder architecture differs from the config: training a new one")
                dec.pipe.vocoder = build_vocoder(arch, dec.sample_rate)
                report["vocoder_rebuilt"] = True
            rates = dec.pipe.vocoder.config.upsample_rates
            errors = vocoder_pitch_errors(rates, dec.sample_rate)
            report["vocoder_pitch_error_cents"] = errors
            off = {c: e for c, e in errors.items() if abs(e) > PITCH_ERROR_WARN_CENTS}
            if off:
                hop = int(np.prod(rates))
                logger.warning("audio vocoder: hop %d holds tones only at multiples of %.1f Hz; these world pitches "
                               "move by more than %d cents (a colour is 400): %s. A longer hop (larger "
                               "audio.vocoder_upsample_rates product) gives a finer grid",
                               hop, dec.sample_rate / hop, int(PITCH_ERROR_WARN_CENTS), off)
            probe = (lambda: vocoder_level(dec, held, judges)) if judges is not None and held else None
            report["vocoder"] = train_vocoder(dec, train, arch, cfg.seed, cfg.log_every, probe,
                                              probe_every=max(1, arch.vocoder_steps // 8), ckpt=ckpt)
        if judges is not None and held:
            report["judge_reconstruction"] = judge_reconstructions(dec, modality, held, judges)
            logger.info("%s judge accuracy of VAE reconstructions: %s", modality, report["judge_reconstruction"])
        # 3. UNet on precomputed latents and conditions
        encoder = preprocess = None
        if modality == "image":
            encoder, preprocess = _encoder(cfg, mcfg)
        if arch.unet_steps > 0:
            t_pre = time.time()
            g = torch.Generator().manual_seed(cfg.seed)
            latents = torch.cat([dec.encode_target([s.media for s in train[i:i + 64]], generator=g)
                                 for i in range(0, len(train), 64)])  # (N, C, ...) with the trained VAE
            cond = conditions(dec, modality, train, encoder, preprocess)
            report["precompute_seconds"] = round(time.time() - t_pre, 1)
            report["unet"] = train_unet(dec, modality, latents, cond, arch, cfg, cfg.log_every, ckpt)
            del latents, cond
        dec.cfg.loss_noise_level = mcfg.modalities[modality].decoder.loss_noise_level
        # 4. save the trained components into the pipeline directory
        dec.pipe.unet.save_pretrained(str(tmp / "unet"))
        dec.pipe.vae.save_pretrained(str(tmp / "vae"))
        if modality == "audio":
            dec.pipe.vocoder.save_pretrained(str(tmp / "vocoder"))
        if judges is not None and held:
            held_cond = conditions(dec, modality, held, encoder, preprocess)
            report["judge_generation"] = judge_generations(dec, modality, held, judges, held_cond,
                                                           cfg.eval_steps, cfg.seed)
            logger.info("%s judge accuracy of decoded held-out conditions: %s", modality, report["judge_generation"])
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        vae = dec.pipe.vae
        dec.unload()
    ckpt.clear()  # <out>/<modality> is written: its checkpoints have served
    return report, vae


def train_decoders(cfg: DecoderTrainConfig) -> dict[str, dict]:
    """Trains every decoder in ``cfg.modalities`` (see the module docstring). Returns {modality: report}."""
    for m in cfg.modalities:
        check_choice("modalities[]", m, WORLD_MODALITIES)
    if not cfg.modalities:
        raise ValueError("modalities is empty; allowed: image, audio, video")
    if not 0.0 <= cfg.p_uncond < 1.0:
        raise ValueError(f"p_uncond = {cfg.p_uncond}; must be in [0, 1)")
    if not 0 <= cfg.max_noise_level < 1000:
        raise ValueError(f"max_noise_level = {cfg.max_noise_level}; must be in [0, 999]")
    for m in cfg.modalities:
        arch = getattr(cfg, m)
        for name in ("vae_steps", "vocoder_steps", "unet_steps", "frame_every", "text_encoder_steps"):
            if getattr(arch, name) < 0:
                raise ValueError(f"{m}.{name} = {getattr(arch, name)}; must be >= 0 (0 skips it)")
        for name in ("vocoder_mel_weight", "vocoder_level_weight"):
            if getattr(arch, name) < 0:
                raise ValueError(f"{m}.{name} = {getattr(arch, name)}; must be >= 0 (0 leaves the term out)")
        for name in ("batch_size", "vae_batch_size", "frame_batch_size"):
            if getattr(arch, name) < 1:
                raise ValueError(f"{m}.{name} = {getattr(arch, name)}; must be >= 1")
        if arch.prediction_type:
            check_choice(f"{m}.prediction_type", arch.prediction_type, PREDICTION_TYPES)
        if arch.zero_snr and arch.prediction_type != "v_prediction":
            raise ValueError(f"{m}.zero_snr needs {m}.prediction_type: v_prediction (epsilon is undefined at zero "
                             f"SNR); got {arch.prediction_type or 'the pipeline default'!r}")
        if not 0.0 <= arch.high_noise_fraction <= 1.0:
            raise ValueError(f"{m}.high_noise_fraction = {arch.high_noise_fraction}; must be in [0, 1]")
        if not 0 <= arch.high_noise_from < 1000:
            raise ValueError(f"{m}.high_noise_from = {arch.high_noise_from}; must be in [0, 999]")
        if arch.vae_decoder_only and (arch.vae_steps == 0 or (m == "video" and arch.share_image_vae)):
            raise ValueError(f"{m}.vae_decoder_only trains the VAE's decoder half during {m}.vae_steps, but "
                             + (f"{m}.vae_steps is 0" if arch.vae_steps == 0 else
                                "the video decoder shares the image VAE (train it with image.vae_decoder_only)"))
        if m != "video" and arch.frame_every:
            raise ValueError(f"{m}.frame_every is for video only (single frames of clips); set it to 0")
        if m != "video" and arch.text_encoder_steps:
            raise ValueError(f"{m}.text_encoder_steps is for video only (the image decoder reads no text, the "
                             "sound decoder's text encoders stay at their init); set it to 0")
    set_threads(cfg.num_threads)
    mcfg = load_model_config(cfg.model, cfg.model_overrides)
    judges = None
    if cfg.judges is not None:
        from data_builders.world.judges import Judges

        judges = Judges.load(resolve_path(cfg.judges, "judges", expect="a folder written by Judges.save()"))
    reports: dict[str, dict] = {}
    image_vae = None
    for m in cfg.modalities:
        reports[m], vae = train_decoder(cfg, m, mcfg, judges, image_vae)
        if m == "image":
            image_vae = vae
    logger.info("decoders written to %s", cfg.out)
    return reports


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m train.mini.decoder_train CONFIG [key=value …]``."""
    from train.mini import run_stage

    return run_stage("decoder", argv)


if __name__ == "__main__":
    raise SystemExit(main())
