"""ImageBind input preprocessing without torchvision / torchaudio / pytorchvideo.

Behaviour of the reference ``imagebind/data.py``:

- image: Resize(S, bicubic) of the shorter side + CenterCrop(S) + CLIP mean/std. torchvision
  resizes PIL images with Pillow itself (``Image.resize((w, h), BICUBIC)``, long side
  ``int(S * long / short)``) and centres the crop with ``round``; both are reproduced here, so
  the result equals torchvision's PIL path. numpy input goes through the same PIL path.
- audio: resample to 16 kHz (torchaudio's default windowed-sinc resampler re-implemented in
  torch), 3 clips of 2 s placed by pytorchvideo's ``ConstantClipsPerVideoSampler``, Kaldi fbank
  (128 bins, 25 ms / 10 ms, hanning, dither 0, pre-emphasis 0.97, per-frame DC removal, power
  spectrum, log) of the first channel, padded/cropped to the target length, (x + 4.268) / 9.138.
  Like the reference, each clip's mean is subtracted in place, so overlapping clips see that
  subtraction (kept for parity; the per-frame DC removal makes its effect tiny).
- video: 5 clips of 2 s (same sampler), frames ``ceil(fps*start) .. ceil(fps*end)-1``,
  ``video_frames`` frames uniformly subsampled (the reference uses ``clip_duration`` = 2, equal to
  ``video_frames`` in every reference preset), short side scaled to S (bilinear, as
  pytorchvideo's ShortSideScale), CLIP mean/std, then ``video_spatial_crops`` crops of S x S
  (3: left/centre/right or top/centre/bottom as the reference; 1: centre) per clip.
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from codi2.config import ImageBindConfig
from codi2.media import Audio, Video
from codi2.encoders.tokenizer import BPETokenizer

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0


# ----------------------------------------------------------------------------- clip sampling
def clip_timepoints(duration: float, clip_duration: float, num_clips: int) -> list[tuple[Fraction, Fraction]]:
    """(start, end) seconds of pytorchvideo's ``ConstantClipsPerVideoSampler`` read to its last clip.

    Starts are spread evenly over ``[0, duration - clip_duration]``; a shorter input gives
    ``num_clips`` clips all starting at 0.
    """
    if num_clips < 1 or clip_duration <= 0:
        raise ValueError(f"need num_clips >= 1 and clip_duration > 0, got {num_clips}, {clip_duration}")
    clip = Fraction(clip_duration)
    max_start = Fraction(max(duration - clip, 0))
    step = Fraction(max_start, max(num_clips - 1, 1))
    points, index = [], 0
    while True:
        start = step * index
        points.append((start, start + clip))
        index += 1
        if index >= num_clips or step * index > max_start:
            return points


# ----------------------------------------------------------------------------- audio
def resample(wave: torch.Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited resampling (..., n) -> (..., ceil(n * new / orig)).

    Adapted from ``torchaudio.functional.resample`` (``sinc_interp_hann`` defaults); rewritten
    without torchaudio, same kernel and padding.
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return wave
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    dtype = wave.dtype
    idx = torch.arange(-width, width + orig, dtype=dtype, device=wave.device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype, device=wave.device)[:, None, None] / new + idx
    t = (t * base).clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / orig)  # (new, 1, K)
    shape = wave.shape
    flat = F.pad(wave.reshape(-1, shape[-1]), (width, width + orig))
    out = F.conv1d(flat[:, None], kernel, stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[:, : math.ceil(new * shape[-1] / orig)]
    return out.reshape(*shape[:-1], out.shape[-1])


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi triangular mel filters on the FFT bins: (num_bins, padded_window // 2) float32."""
    if num_bins <= 3:
        raise ValueError(f"Kaldi fbank needs more than 3 mel bins, got {num_bins}")
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, centre, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = _mel(sample_rate / padded_window * torch.arange(padded_window / 2)).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    return torch.clamp(torch.min(up, down), min=0.0)


def kaldi_fbank(wave: torch.Tensor, sample_rate: float, num_mel_bins: int,
                frame_length_ms: float = FRAME_LENGTH_MS, frame_shift_ms: float = FRAME_SHIFT_MS) -> torch.Tensor:
    """Log mel filterbank energies as ``torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True,
    use_energy=False, window_type='hanning', dither=0.0, ...)``: snip_edges, DC removal, pre-emphasis
    0.97, power spectrum of a power-of-two FFT, floor at float32 eps, natural log.

    Args:
        wave: (n,) float samples.
    Returns:
        (frames, num_mel_bins), frames = 1 + (n - window) // shift.
    """
    if wave.ndim != 1:
        raise ValueError(f"kaldi_fbank takes one channel (n,), got shape {tuple(wave.shape)}")
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if wave.shape[0] < window:
        raise ValueError(f"audio clip of {wave.shape[0]} samples is shorter than one {frame_length_ms} ms "
                         f"analysis window ({window} samples at {sample_rate} Hz)")
    padded = 1 << (window - 1).bit_length()
    frames = wave.unfold(0, window, shift)  # (m, window)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames * torch.hann_window(window, periodic=False, dtype=wave.dtype, device=wave.device)
    frames = F.pad(frames, (0, padded - window))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (m, padded // 2 + 1)
    banks = F.pad(kaldi_mel_banks(num_mel_bins, padded, sample_rate), (0, 1)).to(wave)
    energies = power @ banks.T
    return energies.clamp_min(torch.finfo(wave.dtype).eps).log()


# ----------------------------------------------------------------------------- vision helpers
def _uniform_crop(frames: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """pytorchvideo/ImageBind ``uniform_crop`` of (..., H, W): index 0/1/2 = start/centre/end of the long side."""
    h, w = frames.shape[-2:]
    y, x = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    if h > w:
        y = {0: 0, 1: y, 2: h - size}[index]
    else:
        x = {0: 0, 1: x, 2: w - size}[index]
    return frames[..., y:y + size, x:x + size]


def _short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo ``short_side_scale``: (C, T, H, W) -> short side ``size``, bilinear, no antialias."""
    h, w = x.shape[-2:]
    new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


class ImageBindPreprocessor:
    """Turns images, audio, video and text into the tensors :class:`ImageBindEncoder` takes.

    Args:
        cfg: image_size, audio/video clip settings and text context length come from here.
    """

    def __init__(self, cfg: ImageBindConfig) -> None:
        self.cfg = cfg
        self._tokenizer: BPETokenizer | None = None
        self._mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self._std = torch.tensor(CLIP_STD).view(3, 1, 1)

    # -- images
    def image(self, image: Union[Image.Image, np.ndarray]) -> torch.Tensor:
        """PIL image or uint8 (H, W, 3) / (H, W) array -> (3, S, S) float32."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
                raise ValueError(f"image array must be uint8 (H, W), (H, W, 3) or (H, W, 4), "
                                 f"got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL.Image or numpy array, got {type(image).__name__}")
        image = image.convert("RGB")
        size = self.cfg.image_size
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.BICUBIC)
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        return (x - self._mean) / self._std

    def images(self, images: Sequence[Union[Image.Image, np.ndarray]]) -> torch.Tensor:
        """A list of images -> (B, 3, S, S)."""
        if len(images) == 0:
            raise ValueError("images: got an empty list")
        return torch.stack([self.image(im) for im in images])

    # -- audio
    def audio(self, audio: Audio) -> torch.Tensor:
        """Waveform -> (clips, 1, mel_bins, target_len) normalised log-mel fbank clips."""
        cfg = self.cfg
        samples = np.asarray(audio.samples)
        if samples.ndim == 1:
            samples = samples[None]
        if samples.ndim != 2 or samples.shape[1] == 0:
            raise ValueError(f"audio samples must be (channels, n) with n > 0, got shape {samples.shape}")
        wave = torch.from_numpy(samples.astype(np.float32, copy=True))
        if not torch.isfinite(wave).all():
            raise ValueError("audio samples contain NaN or inf")
        sr = cfg.audio_sample_rate
        wave = resample(wave, int(audio.sample_rate), sr)
        clips = []
        for start, end in clip_timepoints(wave.shape[1] / sr, cfg.audio_clip_duration, cfg.audio_clips_per_sample):
            clip = wave[:, int(start * sr): int(end * sr)]
            clip -= clip.mean()  # in place on a view, as the reference (see module docstring)
            fbank = kaldi_fbank(clip[0], sr, cfg.audio_num_mel_bins).T  # (mel, frames)
            n = fbank.shape[1]
            if abs(cfg.audio_target_len - n) / n > 0.2:
                logger.warning("audio clip has %d fbank frames but audio_target_len is %d", n, cfg.audio_target_len)
            fbank = F.pad(fbank, (0, cfg.audio_target_len - n)) if n < cfg.audio_target_len else fbank[:, :cfg.audio_target_len]
            clips.append(((fbank - AUDIO_MEAN) / AUDIO_STD).unsqueeze(0))
        return torch.stack(clips)

    # -- video
    def video(self, video: Video) -> torch.Tensor:
        """Frames -> (clips * crops, 3, video_frames, S, S)."""
        cfg = self.cfg
        frames = np.asarray(video.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"video frames must be uint8 (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}")
        if not video.fps > 0:
            raise ValueError(f"video fps must be positive, got {video.fps}")
        if cfg.video_spatial_crops not in (1, 3):
            raise ValueError(f"encoder.video_spatial_crops must be 1 or 3, got {cfg.video_spatial_crops}")
        crops = [1] if cfg.video_spatial_crops == 1 else [0, 1, 2]
        num = frames.shape[0]
        mean, std = self._mean[:, None], self._std[:, None]  # (3, 1, 1, 1)
        out = []
        for start, end in clip_timepoints(num / video.fps, cfg.video_clip_duration, cfg.video_clips_per_sample):
            first, last = math.ceil(video.fps * start), min(math.ceil(video.fps * end), num)
            if last <= first:
                raise ValueError(f"video clip {float(start):.3f}-{float(end):.3f} s has no frames "
                                 f"({num} frames at {video.fps} fps)")
            pick = torch.linspace(0, last - first - 1, cfg.video_frames).clamp(0, last - first - 1).long() + first
            clip = torch.from_numpy(frames[pick.numpy()]).permute(3, 0, 1, 2).float() / 255.0  # (3, F, H, W)
            clip = (_short_side_scale(clip, cfg.image_size) - mean) / std
            out.extend(_uniform_crop(clip, cfg.image_size, i) for i in crops)
        return torch.stack(out)

    # -- text
    def text(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> (B, text_context_length) long BPE ids."""
        if isinstance(texts, str):
            texts = [texts]
        if self._tokenizer is None:
            self._tokenizer = BPETokenizer(context_length=self.cfg.text_context_length)
        return self._tokenizer(list(texts))
