"""Media I/O: load/save/validate images, audio and video with Pillow, soundfile and PyAV.

(Skeleton: the types below are the contract; loaders are being written.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


class MediaError(ValueError):
    """A media file could not be used. The message names the file, what was wrong, and what is allowed."""


@dataclass
class Audio:
    """A waveform. ``samples``: float32 (channels, n) in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)


@dataclass
class Video:
    """A clip. ``frames``: uint8 (T, H, W, 3) RGB; ``fps``; optional audio track."""

    frames: np.ndarray
    fps: float
    audio: Optional[Audio] = None

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / float(self.fps)
