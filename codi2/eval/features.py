"""Feature extractors for the metrics, loaded from local directories only (nothing downloads).

    ClipFeatures.from_pretrained(dir)    transformers ``CLIPModel`` + its image processor (PIL backend) + tokenizer;
                                         image / text embeddings = the projected pooled outputs (CLIP-I, CLIP-T).
    DinoFeatures.from_pretrained(dir)    transformers ``ViTModel`` (e.g. a DINO ViT-S/16 conversion) or ``Dinov2Model``;
                                         the feature is the CLS token of the last hidden state (after the final norm).
    TransformersAudio.from_pretrained(dir)  any transformers audio model dir (AST / Wav2Vec2 / HuBERT / CLAP …):
                                         classifier logits when it is a ``*ForAudioClassification`` (KL), a pooled
                                         clip embedding (FD) and embeddings of fixed windows (FAD, like VGGish's 0.96 s frames).
    ImageBindAudio.from_pipeline(dir)    the default needing no extra weights: the ImageBind audio encoder of a codi2
                                         model dir; embedding = the encoder's audio embedding, FAD frames = its per-clip
                                         embeddings, logits = zero-shot scores against text labels (for KL).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from ..media import Audio

log = logging.getLogger(__name__)

# Zero-shot label set of the ImageBind KL default (general sound classes, AudioSet-like names).
DEFAULT_SOUND_LABELS: tuple[str, ...] = (
    "speech", "music", "singing", "dog barking", "cat meowing", "bird song", "car engine", "siren", "rain",
    "wind", "water", "footsteps", "door knock", "bell", "piano", "guitar", "drum", "applause", "laughter",
    "silence", "noise", "a beep", "a whistle", "an explosion",
)


def _require_dir(path: "str | Path", what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: {p} is not a directory; give a local transformers model directory "
                                f"(config.json + weights + preprocessor files); nothing is downloaded")
    return p


def _batches(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


# ----------------------------------------------------------------------------- images
class ClipFeatures:
    """CLIP image and text embeddings (projected, not normalised) from a local transformers CLIP directory."""

    def __init__(self, model: Any, processor: Any, tokenizer: Any, device: str = "cpu", batch_size: int = 16):
        self.model, self.processor, self.tokenizer = model.eval().to(device), processor, tokenizer
        self.device, self.batch_size = device, batch_size

    @classmethod
    def from_pretrained(cls, path: "str | Path", device: str = "cpu") -> "ClipFeatures":
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        d = _require_dir(path, "CLIP backbone")
        return cls(CLIPModel.from_pretrained(str(d)), AutoImageProcessor.from_pretrained(str(d), backend="pil"),
                   AutoTokenizer.from_pretrained(str(d)), device)

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N,) PIL images -> (N, projection_dim) float64."""
        out = []
        for b in _batches(list(images), self.batch_size):
            px = self.processor(images=[im.convert("RGB") for im in b], return_tensors="pt")["pixel_values"]
            out.append(self.model.get_image_features(pixel_values=px.to(self.device)).pooler_output.double().cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) strings -> (N, projection_dim) float64 (truncated to the text tower's context)."""
        out = []
        n = self.model.config.text_config.max_position_embeddings
        for b in _batches(list(texts), self.batch_size):
            tok = self.tokenizer(list(b), padding=True, truncation=True, max_length=n, return_tensors="pt")
            o = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                            attention_mask=tok["attention_mask"].to(self.device))
            out.append(o.pooler_output.double().cpu())
        return torch.cat(out).numpy()


class DinoFeatures:
    """DINO CLS features from a local transformers ``ViTModel`` / ``Dinov2Model`` directory."""

    def __init__(self, model: Any, processor: Any, device: str = "cpu", batch_size: int = 16):
        self.model, self.processor, self.device, self.batch_size = model.eval().to(device), processor, device, batch_size

    @classmethod
    def from_pretrained(cls, path: "str | Path", device: str = "cpu") -> "DinoFeatures":
        from transformers import AutoConfig, AutoImageProcessor, Dinov2Model, ViTModel

        d = _require_dir(path, "DINO backbone")
        kind = AutoConfig.from_pretrained(str(d)).model_type
        if kind == "vit":
            model = ViTModel.from_pretrained(str(d), add_pooling_layer=False)
        elif kind == "dinov2":
            model = Dinov2Model.from_pretrained(str(d))
        else:
            raise ValueError(f"DINO backbone {d}: model_type {kind!r} is not supported; allowed: vit (DINO v1, "
                             f"e.g. a dino-vits16 conversion), dinov2")
        return cls(model, AutoImageProcessor.from_pretrained(str(d), backend="pil"), device)

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N,) PIL images -> (N, hidden) float64 CLS tokens."""
        out = []
        for b in _batches(list(images), self.batch_size):
            px = self.processor(images=[im.convert("RGB") for im in b], return_tensors="pt")["pixel_values"]
            out.append(self.model(pixel_values=px.to(self.device)).last_hidden_state[:, 0].double().cpu())
        return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- audio
@dataclass
class AudioEmbedding:
    """Features of N clips: ``clip`` (N, D) pooled embeddings; ``frames`` N arrays (T_i, D) of window
    embeddings (FAD); ``logits`` (N, C) classifier logits or None when the backbone has no classifier."""

    clip: np.ndarray
    frames: list[np.ndarray]
    logits: Optional[np.ndarray]


class AudioBackbone(Protocol):
    name: str
    sample_rate: int

    def embed(self, audios: Sequence[Audio]) -> AudioEmbedding: ...


def mono(audio: Audio, sample_rate: int) -> np.ndarray:
    """An :class:`Audio` -> mono float32 (n,) at ``sample_rate`` (codi2's resampler; no torchaudio)."""
    from ..media import resample

    x = np.asarray(audio.samples, dtype=np.float32)
    x = x.mean(0) if x.ndim == 2 else x
    if audio.sample_rate != sample_rate:
        x = resample(Audio(x[None], audio.sample_rate), sample_rate).samples[0]
    return np.ascontiguousarray(x, dtype=np.float32)


def windows(x: np.ndarray, size: int) -> list[np.ndarray]:
    """Non-overlapping windows of ``size`` samples; a shorter tail is kept if it is at least half a window,
    and a clip shorter than one window is zero-padded to one."""
    if x.shape[0] <= size:
        return [np.pad(x, (0, size - x.shape[0]))]
    out = [x[i:i + size] for i in range(0, x.shape[0] - size + 1, size)]
    tail = x.shape[0] % size
    if tail >= size // 2:
        out.append(np.pad(x[-tail:], (0, size - tail)))
    return out


class TransformersAudio:
    """A local transformers audio model: AST / Wav2Vec2 / HuBERT / Whisper-encoder … or CLAP.

    ``clip`` = mean over positions of the last hidden state (CLAP: ``get_audio_features``); ``logits`` only for
    ``*ForAudioClassification`` checkpoints; ``frames`` = ``clip`` of each ``window_seconds`` window.
    """

    def __init__(self, model: Any, extractor: Any, name: str, window_seconds: float = 0.96, device: str = "cpu"):
        self.model, self.extractor, self.name, self.device = model.eval().to(device), extractor, name, device
        self.sample_rate = int(extractor.sampling_rate)
        self.window = max(1, int(round(window_seconds * self.sample_rate)))

    @classmethod
    def from_pretrained(cls, path: "str | Path", window_seconds: float = 0.96, device: str = "cpu") -> "TransformersAudio":
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

        d = _require_dir(path, "audio backbone")
        cfg = AutoConfig.from_pretrained(str(d))
        archs = cfg.architectures or []
        if any(a.endswith("ForAudioClassification") for a in archs):
            model = AutoModelForAudioClassification.from_pretrained(str(d))
        else:
            model = AutoModel.from_pretrained(str(d))
        return cls(model, AutoFeatureExtractor.from_pretrained(str(d)), f"transformers:{cfg.model_type}",
                   window_seconds, device)

    @torch.no_grad()
    def _forward(self, waves: list[np.ndarray]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        inputs = self.extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if hasattr(self.model, "get_audio_features"):  # CLAP
            return self.model.get_audio_features(**inputs).pooler_output.double().cpu(), None
        out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
        logits = getattr(out, "logits", None)
        return hidden.mean(1).double().cpu(), (logits.double().cpu() if logits is not None else None)

    def embed(self, audios: Sequence[Audio]) -> AudioEmbedding:
        waves = [mono(a, self.sample_rate) for a in audios]
        clip, logits = [], []
        for w in waves:  # one at a time: no padding effects, results independent of batch composition
            c, lg = self._forward([w])
            clip.append(c)
            if lg is not None:
                logits.append(lg)
        frames = [self._forward(windows(w, self.window))[0].numpy() for w in waves]
        return AudioEmbedding(torch.cat(clip).numpy(), frames, torch.cat(logits).numpy() if logits else None)


class ImageBindAudio:
    """The ImageBind audio encoder of a codi2 model (needs no extra weights).

    ``clip`` = the encoder's audio embedding (mean over its clips), ``frames`` = its per-clip embeddings,
    ``logits`` = ``scale`` x cosine similarity with the text embeddings of ``labels`` (zero-shot classifier).
    """

    def __init__(self, encoder: Any, preprocess: Any, labels: Sequence[str] = DEFAULT_SOUND_LABELS,
                 scale: float = 100.0):
        self.encoder, self.preprocess = encoder, preprocess
        self.labels, self.scale = tuple(labels), scale
        self.name = "imagebind"
        self.sample_rate = int(preprocess.cfg.audio_sample_rate)
        self._text: Optional[torch.Tensor] = None

    @classmethod
    def from_pipeline(cls, path: "str | Path", **kwargs: Any) -> "ImageBindAudio":
        """Builds the encoder alone from a codi2 model directory's ``config.yaml`` (no LLM, no decoders)."""
        from ..config import ModelConfig, load_config
        from ..encoders import ImageBindEncoder, ImageBindPreprocessor
        from ..pipeline import CONFIG_FILE

        d = Path(path)
        if not (d / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{d} is not a codi2 model directory ({CONFIG_FILE} missing); the ImageBind audio "
                                    f"backbone is read from one")
        cfg = load_config(ModelConfig, d / CONFIG_FILE).encoder
        if cfg.weights is not None and not Path(cfg.weights).is_absolute():
            import dataclasses

            cfg = dataclasses.replace(cfg, weights=str(d / cfg.weights))
        return cls(ImageBindEncoder(cfg).eval(), ImageBindPreprocessor(cfg), **kwargs)

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> "ImageBindAudio":
        """From a loaded :class:`~codi2.model.CoDi2Model` (its frozen encoder)."""
        return cls(model.encoder, model.preprocess, **kwargs)

    @torch.no_grad()
    def embed(self, audios: Sequence[Audio]) -> AudioEmbedding:
        dev = next(self.encoder.parameters()).device
        clips, frames = [], []
        for a in audios:
            o = self.encoder.encode_audio(self.preprocess.audio(a)[None].to(dev))
            clips.append(o.embed.double().cpu())
            frames.append(o.tokens[0].double().cpu().numpy())
        clip = torch.cat(clips)
        if self._text is None:
            self._text = self.encoder.encode_text(self.preprocess.text(list(self.labels)).to(dev)).embed.double().cpu()
        logits = self.scale * torch.nn.functional.normalize(clip, dim=-1) @ torch.nn.functional.normalize(self._text, dim=-1).T
        return AudioEmbedding(clip.numpy(), frames, logits.numpy())

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) text embeddings in the audio embedding's space (ImageBind's joint space): the audio-text score."""
        dev = next(self.encoder.parameters()).device
        return self.encoder.encode_text(self.preprocess.text(list(texts)).to(dev)).embed.double().cpu().numpy()


def load_audio_backbone(spec: Optional[str], model_dir: "str | Path | None" = None, model: Any = None,
                        window_seconds: float = 0.96) -> AudioBackbone:
    """An audio backbone from a spec: a transformers model directory, or ``None`` / ``"imagebind"`` for the
    ImageBind encoder of ``model`` (a loaded CoDi2Model) or of the codi2 model directory ``model_dir``."""
    if spec is not None and spec != "imagebind":
        return TransformersAudio.from_pretrained(spec, window_seconds)
    if model is not None:
        return ImageBindAudio.from_model(model)
    if model_dir is None:
        raise ValueError("the ImageBind audio backbone needs a codi2 model (--model DIR); or give a transformers "
                         "audio model directory (--audio-classifier / --fad-model)")
    return ImageBindAudio.from_pipeline(model_dir)
