"""Typed configuration (no torch import).

Every behaviour of codi2 comes from these dataclasses. YAML files are loaded with
``OmegaConf.structured`` so that unknown keys are errors, values are type-checked,
``key=value`` dotted overrides work, and paths may come from the environment with
OmegaConf's resolver: ``weights: ${oc.env:CODI2_IMAGEBIND,null}``.

Presets: ``configs/model/{tiny,mini,codi2-7b}.yaml`` (see :func:`load_model_config`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence


# ----------------------------------------------------------------------------- encoder
@dataclass
class ImageBindConfig:
    """Architecture of the ImageBind-compatible encoder.

    The first block mirrors the reference ``ImageBindModel.__init__`` arguments for the
    vision, text and audio modalities; the defaults are the reference defaults (not huge;
    see ``configs/model/codi2-7b.yaml`` or :func:`codi2.encoders.imagebind_huge_config`).
    """

    video_frames: int = 2
    kernel_size: list[int] = field(default_factory=lambda: [2, 14, 14])
    audio_kernel_size: int = 16
    audio_stride: int = 10
    out_embed_dim: int = 768
    vision_embed_dim: int = 1024
    vision_num_blocks: int = 24
    vision_num_heads: int = 16
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    audio_drop_path: float = 0.1
    text_embed_dim: int = 768
    text_num_blocks: int = 12
    text_num_heads: int = 12
    # Fixed constants in the reference code, exposed so small encoders can shrink them.
    image_size: int = 224
    text_context_length: int = 77
    text_vocab_size: int = 49408
    # Preprocessing (reference data.py behaviour).
    audio_sample_rate: int = 16000
    audio_clip_duration: float = 2.0
    audio_clips_per_sample: int = 3
    video_clip_duration: float = 2.0
    video_clips_per_sample: int = 5
    # Spatial crops per temporal video clip (reference: 3 = left/centre/right, so 5 x 3 = 15 clips).
    video_spatial_crops: int = 3
    # Towers built (vision serves images and videos). codi2 itself encodes only vision and audio; the text
    # tower is for alignment training and zero-shot scoring, and a model shipped without it is smaller.
    towers: list[str] = field(default_factory=lambda: ["vision", "text", "audio"])
    # Weights: a reference-shaped checkpoint (e.g. imagebind_huge.pth); None = random init. Keys of towers
    # not built are skipped by name, like those of depth/thermal/imu.
    weights: Optional[str] = None
    dtype: str = "float32"


# ----------------------------------------------------------------------------- media
@dataclass
class MediaLimits:
    """Limits applied to every loaded or uploaded media file (see ``codi2.media``).

    Checked from the file header before decoding, and again while decoding.
    """

    max_file_bytes: int = 100 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 60.0
    max_video_seconds: float = 60.0
    max_video_frames: int = 2048  # frames decoded into memory: min(frames in file, max_frames)
    max_video_pixels: int = 1920 * 1080  # per frame
    # Decoded size in memory of one audio or video file (frames × H × W × 3 bytes; samples × 4 bytes).
    max_decoded_bytes: int = 2 * 1024**3


# ----------------------------------------------------------------------------- LLM
@dataclass
class LoRAConfig:
    """LoRA on the LLM (peft). Disabled: the base stays frozen and only the new token rows train."""

    enabled: bool = True
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LLMConfig:
    """The language model. ``path`` = a local Hugging Face Llama directory; when it is
    None the architecture fields build a randomly initialised Llama (tiny/tests)."""

    path: Optional[str] = None
    tokenizer: Optional[str] = None  # sentencepiece .model file or HF dir; default: path
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dtype: str = "float32"  # float32 | bfloat16 | float16
    quantization: Optional[str] = None  # None | 4bit | 8bit (bitsandbytes)
    gradient_checkpointing: bool = False
    system_prompt: str = ""
    lora: LoRAConfig = field(default_factory=LoRAConfig)


# ----------------------------------------------------------------------------- projectors / heads
@dataclass
class InputProjectorConfig:
    """MLP encoder-dim -> d_llm: Linear → GELU → LayerNorm → Linear (CoDi-2)."""

    hidden: Optional[int] = None  # default: d_llm


@dataclass
class OutputHeadConfig:
    """Hidden states of the n_out slots -> the decoder's own conditioning tensors.

    kind: ``mlp`` (per-slot MLP, CoDi-2's image head) or ``transformer`` (learnable queries
    cross-attending to the slot states, NExT-GPT style).
    targets: name -> shape of each conditioning tensor the head must produce, e.g.
    ``{image_embeds: [1024]}`` or ``{generated_prompt_embeds: [8, 768], prompt_embeds: [16, 1024]}``.
    match_target_norm: with the ``cosine`` loss, which fixes only the direction of an output, rescale
    each output vector to the mean L2 norm of the training targets (tracked by the head while it
    trains, stored with its weights). A decoder is trained on its encoder's embeddings at their own
    scale; the mini image head's raw outputs are ~30 % longer, which costs the unCLIP decoder 16 points
    of shape-and-colour accuracy. Heads trained before the statistic existed leave outputs as they are.
    """

    kind: str = "mlp"
    hidden: int = 1024
    num_layers: int = 2
    num_heads: int = 8
    targets: dict[str, list[int]] = field(default_factory=dict)
    loss: str = "cosine"  # cosine (0.1·(1−cos), CoDi-2) | mse
    loss_weight: float = 1.0
    diffusion_loss_weight: float = 0.0
    match_target_norm: bool = True


@dataclass
class DecoderConfig:
    """One diffusers pipeline, loaded from a local directory in the diffusers layout."""

    path: Optional[str] = None
    scheduler: str = "ddim"  # ddim | dpm++
    steps: int = 50
    guidance: float = 7.5
    noise_level: int = 0  # image (unCLIP) only: noise augmentation of image_embeds
    loss_noise_level: int = 500  # image only: image_embeds noise level in diffusion_loss (CoDi-2: 500)
    height: Optional[int] = None  # default: unet.sample_size × VAE scale factor
    width: Optional[int] = None
    num_frames: int = 16  # video only
    fps: float = 8.0  # video only: frame rate written into the decoded Video
    audio_seconds: float = 5.0  # audio only
    prompt_len: int = 32  # audio only: T5 tokens T of prompt_embeds (B, T, D); captions padded/truncated to T
    dtype: str = "float32"
    offload: str = "none"  # none | model | sequential (accelerate CPU offload)
    device: Optional[str] = None  # default: the model's device


@dataclass
class ModalityConfig:
    """Everything one modality needs: slot counts, input projector, output head, decoder."""

    enabled: bool = True
    n_in: int = 1
    n_out: int = 4
    input_projector: InputProjectorConfig = field(default_factory=InputProjectorConfig)
    head: OutputHeadConfig = field(default_factory=OutputHeadConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


def _default_modalities() -> dict[str, ModalityConfig]:
    return {
        "image": ModalityConfig(n_in=257, n_out=4),
        "audio": ModalityConfig(n_in=1, n_out=8),
        "video": ModalityConfig(n_in=32, n_out=24),
    }


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_context: Optional[int] = None  # default: llm.max_position_embeddings
    max_media_per_reply: int = 4
    seed: Optional[int] = None


@dataclass
class ModelConfig:
    name: str = "codi2"
    encoder: ImageBindConfig = field(default_factory=ImageBindConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    modalities: dict[str, ModalityConfig] = field(default_factory=_default_modalities)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    media: MediaLimits = field(default_factory=MediaLimits)


# ----------------------------------------------------------------------------- loading
def _omegaconf():
    from omegaconf import OmegaConf

    return OmegaConf


def load_config(schema: type, path: "str | Path | None" = None, overrides: Sequence[str] = (),
                base_dir: "str | Path | None" = None) -> Any:
    """Loads ``path`` (YAML) over the dataclass ``schema`` and applies ``key=value`` overrides.

    Unknown keys, wrong types and malformed overrides raise ``ValueError`` naming the key.
    Relative paths in the YAML are *not* rewritten; callers resolve them against
    ``base_dir`` with :func:`resolve_path`.

    Returns:
        An instance of ``schema``.
    """
    OmegaConf = _omegaconf()
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.structured(schema)
    try:
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"config file not found: {p}")
            base = OmegaConf.merge(base, OmegaConf.load(p))
        for ov in overrides:
            if "=" not in ov:
                raise ValueError(f"override {ov!r} is not of the form key=value")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist([ov]))
        obj = OmegaConf.to_object(base)
    except OmegaConfBaseException as e:
        where = f" in {path}" if path else ""
        raise ValueError(f"invalid config{where}: {e}") from None
    return obj


def load_model_config(name_or_path: "str | Path", overrides: Sequence[str] = ()) -> ModelConfig:
    """Loads a model config from a YAML path or a preset name (``tiny``, ``mini``, ``codi2-7b``)."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = repo_root() / "configs" / "model" / f"{name_or_path}.yaml"
    return load_config(ModelConfig, p, overrides)


def to_yaml(cfg: Any) -> str:
    OmegaConf = _omegaconf()
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict:
    OmegaConf = _omegaconf()
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def repo_root() -> Path:
    """The source checkout root (where configs/ and checkpoints/ live)."""
    return Path(__file__).resolve().parent.parent


def resolve_path(value: Optional[str], field_name: str, base_dir: "str | Path | None" = None,
                 expect: str = "a file or directory") -> Optional[Path]:
    """Resolves a path-valued config field; a missing path raises naming the field.

    Args:
        value: the configured path (``~`` and ``$VARS`` are expanded); None passes through.
        field_name: dotted config field name, used in the error message.
        base_dir: relative paths are taken relative to this directory.
        expect: words describing the expected layout, for the error message.
    """
    if value is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.exists():
        raise FileNotFoundError(
            f"{field_name} = {value!r}: path does not exist ({p}). Expected {expect}. "
            f"Set it in the config, with an override `{field_name}=/path`, or the environment variable the config names."
        )
    return p
