"""An ImageBind-compatible encoder for the vision (image + video), text and audio modalities.

Written for codi2; the architecture follows Meta's ImageBind (``imagebind/models/*.py``,
CC BY-NC-SA 4.0) so that ``imagebind_huge.pth`` loads into :class:`ImageBindModel` strictly:
every ``state_dict()`` key and shape of these three modalities is identical to the reference
(``modality_preprocessors.vision.rgbt_stem.proj.1.weight``, ``modality_trunks.text.blocks.0.attn.in_proj_weight``,
``modality_heads.vision.2.weight``, ``modality_postprocessors.text.1.log_logit_scale`` ...).
The depth, thermal and IMU towers are not built; their checkpoint keys are listed in
:data:`UNUSED_MODALITIES` and skipped by :func:`load_imagebind_weights`.

Shapes (huge preset): image (B, 3, 224, 224) -> 1 + 16*16 = 257 tokens of width 1280;
audio fbank (B, 1, 128, 204) -> 1 + 12*19 = 229 tokens of width 768; text (B, 77) -> 77 tokens
of width 1024. Every head projects to ``out_embed_dim`` (1024).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from codi2.config import ImageBindConfig

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("vision", "text", "audio")
UNUSED_MODALITIES: tuple[str, ...] = ("depth", "thermal", "imu")
_PARTS: tuple[str, ...] = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")

# Fixed constants of the reference architecture.
_IMAGE_TIME_PAD = 2  # an image is repeated to 2 frames before the 3-D patch conv (PadIm2Video(ntimes=2))
_TEXT_LOGIT_SCALE_INIT = 1 / 0.07  # learnable
_AUDIO_LOGIT_SCALE = 20.0  # fixed buffer
_MAX_LOGIT_SCALE = 100.0
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------- presets
def imagebind_huge_config(weights: Optional[str] = None) -> ImageBindConfig:
    """The reference ``imagebind_huge`` architecture (1.2 B parameters with all six modalities)."""
    return ImageBindConfig(
        vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
        text_embed_dim=1024, text_num_blocks=24, text_num_heads=16,
        out_embed_dim=1024, audio_drop_path=0.1, weights=weights,
    )


def small_imagebind_config() -> ImageBindConfig:
    """A ViT-S-sized encoder on real-size inputs (224 px images, 128x204 fbanks): benchmarks, mini models."""
    return ImageBindConfig(
        out_embed_dim=384,
        vision_embed_dim=384, vision_num_blocks=6, vision_num_heads=6,
        text_embed_dim=384, text_num_blocks=6, text_num_heads=6,
        audio_embed_dim=384, audio_num_blocks=6, audio_num_heads=6,
    )


def tiny_imagebind_config() -> ImageBindConfig:
    """Unit-test scale: 32 px images in 8x8 patches (17 tokens), 16-bin x 48-frame fbanks of 0.5 s clips
    (1 + 2*6 = 13 tokens), dims 16-32. The BPE vocabulary and 77-token context stay real."""
    return ImageBindConfig(
        video_frames=2, kernel_size=[2, 8, 8], image_size=32,
        out_embed_dim=16,
        vision_embed_dim=32, vision_num_blocks=2, vision_num_heads=2,
        text_embed_dim=32, text_num_blocks=2, text_num_heads=2,
        audio_embed_dim=16, audio_num_blocks=1, audio_num_heads=2,
        audio_kernel_size=8, audio_stride=8, audio_num_mel_bins=16, audio_target_len=48,
        audio_clip_duration=0.5,
    )


# ----------------------------------------------------------------------------- building blocks
class DropPath(nn.Module):
    """Stochastic depth: zeroes a sample's residual branch with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((1, x.shape[1]) + (1,) * (x.ndim - 2)).bernoulli_(keep)  # x is (L, B, D)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block on sequence-first tokens (L, B, D), as the reference ``BlockWithMasking``."""

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool, drop_path: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=True, add_bias_kv=add_bias_kv)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        x = x + self.drop_path(self.mlp(self.norm_2(x)))
        return x


class Trunk(nn.Module):
    """A stack of :class:`Block`; optional LayerNorm first (vision). Input and output (B, L, D)."""

    def __init__(self, dim: int, num_blocks: int, num_heads: int, pre_norm: bool, add_bias_kv: bool,
                 drop_path: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        # index 0 keeps the reference key `pre_transformer_layer.0.weight`
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        rates = [drop_path * i / (num_blocks - 1) if num_blocks > 1 else 0.0 for i in range(num_blocks)]  # progressive
        self.blocks = nn.Sequential(*[Block(dim, num_heads, add_bias_kv, r) for r in rates])
        self.apply(_init_jax)

    def forward(self, tokens: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)  # (L, B, D)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x.transpose(0, 1)  # (B, L, D)


def _init_jax(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PatchStem(nn.Module):
    """Patch projection (+ optional LayerNorm): (B, C, [T,] H, W) -> (B, N, D)."""

    def __init__(self, proj: nn.Module, norm_layer: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class ImageToVideo(nn.Module):
    """(B, C, H, W) -> (B, C, 2, H, W) by repetition; (B, C, T, H, W) passes through (T == 1 is repeated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        elif x.ndim != 5:
            raise ValueError(f"vision input must be (B, 3, H, W) or (B, 3, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, _IMAGE_TIME_PAD, 1, 1)
        return x


class PosEmbed(nn.Module):
    """Learnable position embedding (1, 1 + N, D) for a (T', H', W') patch layout."""

    def __init__(self, layout: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + math.prod(layout), dim) * dim ** -0.5)

    def forward(self, num_patches: int) -> torch.Tensor:
        """Returns (1, 1 + num_patches, D); a square 2-D layout is resized bicubically (reference behaviour)."""
        n = self.pos_embed.shape[1] - 1
        if num_patches == n:
            return self.pos_embed
        if self.layout[0] != 1 or self.layout[-1] != self.layout[-2]:
            raise ValueError(f"cannot resize the position embedding of patch layout {self.layout} "
                             f"to {num_patches} patches; use inputs of the configured size")
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side, dim = int(math.sqrt(n)), grid.shape[-1]
        grid = grid.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=math.sqrt(num_patches / n), mode="bicubic")
        grid = grid.to(cls.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([cls, grid], dim=1)


class PatchPreprocessor(nn.Module):
    """Stem + CLS token + position embedding: pixels or fbank -> (B, 1 + N, D)."""

    def __init__(self, stem: PatchStem, layout: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = PosEmbed(layout, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)

    def forward(self, x: torch.Tensor) -> tuple[dict, dict]:
        tokens = self.rgbt_stem(x)  # (B, N, D)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embedding_helper(tokens.shape[1] - 1)
        return {"tokens": tokens}, {}


class TextPreprocessor(nn.Module):
    """Token + position embedding with a causal mask; the head reads the EOS position (argmax token id)."""

    def __init__(self, vocab_size: int, context_length: int, dim: int) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, dim) * 0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.register_buffer("mask", torch.full((context_length, context_length), float("-inf")).triu_(1))

    def forward(self, text: torch.Tensor) -> tuple[dict, dict]:
        if text.ndim != 2 or text.shape[1] != self.context_length or text.is_floating_point():
            raise ValueError(f"text input must be integer token ids (B, {self.context_length}), "
                             f"got {tuple(text.shape)} {text.dtype}")
        tokens = self.token_embedding(text) + self.pos_embed  # (B, L, D)
        return {"tokens": tokens, "attn_mask": self.mask}, {"seq_len": text.argmax(dim=-1)}


class SelectCLS(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, D)
        return x[:, 0]


class TextHead(nn.Module):
    """LayerNorm + Linear on the token at ``seq_len`` (the EOS token, the highest id in each row)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), seq_len])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """Multiplies by ``min(exp(log_logit_scale), 100)``; a Parameter when learnable, else a buffer."""

    def __init__(self, init: float, learnable: bool) -> None:
        super().__init__()
        value = torch.full((), math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=_MAX_LOGIT_SCALE) * x


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


# ----------------------------------------------------------------------------- model
class ImageBindModel(nn.Module):
    """ImageBind for vision, text and audio with the reference module tree (and so its state-dict keys).

    ``forward({'vision': x, 'text': t, 'audio': a})`` returns what the reference ``forward`` returns:
    L2-normalised embeddings, text and audio times their logit scales; inputs with 5 or more dims
    are (B, S, ...) clips, encoded as B*S samples and averaged over S. :meth:`embed` and
    :meth:`vision_tokens` give the raw features before the postprocessor.

    Args:
        cfg: the architecture.
        frozen: no parameter requires grad and the module is put in eval mode.
    """

    def __init__(self, cfg: ImageBindConfig, frozen: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        if len(cfg.kernel_size) != 3:
            raise ValueError(f"encoder.kernel_size must be [T, H, W], got {cfg.kernel_size}")
        kt, kh, kw = cfg.kernel_size
        frames = _IMAGE_TIME_PAD if cfg.video_frames == 1 else cfg.video_frames  # a 1-frame input is repeated
        vision_layout = (_conv_out(frames, kt, kt), _conv_out(cfg.image_size, kh, kh),
                         _conv_out(cfg.image_size, kw, kw))
        audio_layout = (_conv_out(cfg.audio_num_mel_bins, cfg.audio_kernel_size, cfg.audio_stride),
                        _conv_out(cfg.audio_target_len, cfg.audio_kernel_size, cfg.audio_stride))
        if min(vision_layout + audio_layout) < 1:
            raise ValueError(f"encoder input sizes are smaller than their patch kernels: vision patch layout "
                             f"{vision_layout}, audio patch layout {audio_layout}")
        vd, td, ad, out = cfg.vision_embed_dim, cfg.text_embed_dim, cfg.audio_embed_dim, cfg.out_embed_dim

        vision_stem = PatchStem(nn.Sequential(
            ImageToVideo(), nn.Conv3d(3, vd, kernel_size=tuple(cfg.kernel_size), stride=tuple(cfg.kernel_size), bias=False)))
        audio_stem = PatchStem(
            nn.Conv2d(1, ad, kernel_size=cfg.audio_kernel_size, stride=cfg.audio_stride, bias=False),
            norm_layer=nn.LayerNorm(ad))
        bad = [t for t in cfg.towers if t not in MODALITIES]
        if bad or not cfg.towers:
            raise ValueError(f"encoder.towers = {cfg.towers}: allowed (a non-empty subset of) {list(MODALITIES)}")
        self.towers = tuple(t for t in MODALITIES if t in cfg.towers)
        # built part by part in the reference order (all preprocessors, then trunks …), so a seeded random
        # init of all three towers is the reference's
        self.modality_preprocessors = nn.ModuleDict({t: f() for t, f in {
            "vision": lambda: PatchPreprocessor(vision_stem, vision_layout, vd),
            "text": lambda: TextPreprocessor(cfg.text_vocab_size, cfg.text_context_length, td),
            "audio": lambda: PatchPreprocessor(audio_stem, (1,) + audio_layout, ad),
        }.items() if t in self.towers})
        self.modality_trunks = nn.ModuleDict({t: f() for t, f in {
            "vision": lambda: Trunk(vd, cfg.vision_num_blocks, cfg.vision_num_heads, pre_norm=True, add_bias_kv=False,
                                    drop_path=0.0),
            "text": lambda: Trunk(td, cfg.text_num_blocks, cfg.text_num_heads, pre_norm=False, add_bias_kv=False,
                                  drop_path=0.0),
            "audio": lambda: Trunk(ad, cfg.audio_num_blocks, cfg.audio_num_heads, pre_norm=False, add_bias_kv=True,
                                   drop_path=cfg.audio_drop_path),
        }.items() if t in self.towers})
        self.modality_heads = nn.ModuleDict({t: f() for t, f in {
            "vision": lambda: nn.Sequential(nn.LayerNorm(vd, eps=1e-6), SelectCLS(), nn.Linear(vd, out, bias=False)),
            "text": lambda: TextHead(td, out),
            "audio": lambda: nn.Sequential(nn.LayerNorm(ad, eps=1e-6), SelectCLS(), nn.Linear(ad, out, bias=False)),
        }.items() if t in self.towers})
        self.modality_postprocessors = nn.ModuleDict({t: f() for t, f in {
            "vision": lambda: Normalize(),
            "text": lambda: nn.Sequential(Normalize(), LogitScale(_TEXT_LOGIT_SCALE_INIT, learnable=True)),
            "audio": lambda: nn.Sequential(Normalize(), LogitScale(_AUDIO_LOGIT_SCALE, learnable=False)),
        }.items() if t in self.towers})
        self.num_image_tokens = 1 + math.prod(vision_layout)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    # -- features
    def forward_trunk(self, modality: str, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Preprocessor + trunk for one batch of single clips.

        Returns:
            (trunk tokens (B, L, D_modality), keyword arguments the modality's head needs)
        """
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; allowed: {MODALITIES}")
        if modality not in self.towers:
            raise ValueError(f"this encoder has no {modality} tower (encoder.towers = {list(self.towers)}); "
                             f"build it with {modality} in encoder.towers and weights that include it")
        trunk_inputs, head_inputs = self.modality_preprocessors[modality](x)
        return self.modality_trunks[modality](**trunk_inputs), head_inputs

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Head output before the postprocessor (no L2 norm, no logit scale): (B, out_embed_dim)."""
        tokens, head_inputs = self.forward_trunk(modality, x)
        return self.modality_heads[modality](tokens, **head_inputs)

    def vision_tokens(self, trunk_tokens: torch.Tensor) -> torch.Tensor:
        """Every vision trunk token through the vision head's LayerNorm + Linear: (B, L, D) -> (B, L, out)."""
        norm, _, proj = self.modality_heads["vision"]
        return proj(norm(trunk_tokens))

    def forward(self, inputs: Mapping[str, Optional[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Reference ``ImageBindModel.forward``: {modality: (B, out_embed_dim) postprocessed embedding}."""
        outputs = {}
        for modality, x in inputs.items():
            if x is None:
                continue
            clips = x.ndim >= 5  # audio and video inputs are (B, S, ...) clips
            if clips:
                b, s = x.shape[:2]
                x = x.reshape(b * s, *x.shape[2:])
            y = self.modality_postprocessors[modality](self.embed(modality, x))
            if clips:
                y = y.reshape(b, s, -1).mean(dim=1)
            outputs[modality] = y
        return outputs


def build_imagebind(cfg: ImageBindConfig, frozen: bool = True) -> ImageBindModel:
    """Builds the model in ``cfg.dtype`` and loads ``cfg.weights`` (if set) strictly."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"encoder.dtype = {cfg.dtype!r}; allowed: {sorted(_DTYPES)}")
    model = ImageBindModel(cfg, frozen=frozen)
    if cfg.weights is not None:
        from codi2.config import resolve_path

        path = resolve_path(cfg.weights, "encoder.weights",
                            expect="a reference-shaped ImageBind checkpoint such as imagebind_huge.pth")
        load_imagebind_weights(model, path)
    return model.to(_DTYPES[cfg.dtype])


# ----------------------------------------------------------------------------- weights
def modality_of(key: str) -> Optional[str]:
    part, _, rest = key.partition(".")
    return rest.split(".", 1)[0] if part in _PARTS else None


def _names(keys: list[str], limit: int = 20) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_imagebind_weights(model: ImageBindModel,
                           source: Union[str, Path, Mapping[str, torch.Tensor]]) -> list[str]:
    """Loads a reference-shaped ImageBind state dict (e.g. ``imagebind_huge.pth``) strictly.

    Every model key must be present with the same shape; every file key must be a model key or
    belong to one of :data:`UNUSED_MODALITIES` (depth, thermal, imu), which are skipped.

    Args:
        model: the model to fill (values are cast to its dtype).
        source: a ``torch.save`` file (read with ``weights_only=True``) or a state dict.

    Returns:
        The skipped keys of unused modalities.

    Raises:
        ValueError: naming the missing keys, the unexpected keys, or each mismatched key with both shapes.
    """
    where = "state dict"
    if isinstance(source, Mapping):
        state = source
    else:
        where = str(source)
        state = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{where}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    own = model.state_dict()
    unused = tuple(UNUSED_MODALITIES) + tuple(m for m in MODALITIES if m not in model.towers)
    skipped = [k for k in state if k not in own and modality_of(k) in unused]
    unexpected = [k for k in state if k not in own and modality_of(k) not in unused]
    missing = [k for k in own if k not in state]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (not of the towers {list(model.towers)}, not in "
                        f"{unused}): {_names(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_names(mismatched)}")
    if problems:
        raise ValueError(f"{where} does not fit the ImageBind encoder configuration: " + "; ".join(problems)
                         + ". Check that the encoder config (dims, blocks, image_size, kernel sizes) matches the checkpoint.")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    logger.info("loaded %d ImageBind tensors from %s (skipped %d of unused modalities)", len(own), where, len(skipped))
    return skipped
