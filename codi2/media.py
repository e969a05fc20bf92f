"""Media I/O: load, save and validate images, audio and video with Pillow, soundfile and PyAV.

Every public function here raises exactly one exception type, :class:`MediaError`, for any
problem with a file (missing, empty, corrupt, truncated, too big, too long, wrong type,
unsupported format). Its message names the file, what was wrong and what is allowed::

    photo.png: image is 20000×20000 = 400.0 MP, over the limit of 16.8 MP
    (media.max_image_pixels); resize it or raise the limit

Checks run cheapest first, so hostile files are refused before anything is decoded:

1. the file exists, is not empty and is at most ``max_file_bytes``;
2. the suffix is a supported one and the content (magic bytes, :func:`detect_kind`) is of
   the requested kind;
3. :func:`probe` reads the header only (Pillow's lazy open, ``soundfile.info``, the PyAV
   container and stream metadata) and :func:`validate` compares it with :class:`MediaLimits`;
4. decoding keeps counting samples and frames and stops with an error as soon as a limit is
   crossed, in case the header lied.

Conventions: images are RGB ``PIL.Image.Image`` (alpha is composited on white, 16-bit is
scaled to 8-bit, EXIF orientation is applied, ICC profiles are ignored, GIF/WebP give
their first frame); :class:`Audio` holds float32 ``(channels, n)`` samples in [-1, 1];
:class:`Video` holds uint8 ``(T, H, W, 3)`` RGB frames, the frame rate and an optional
:class:`Audio` track.
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from codi2.config import MediaLimits

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

IMAGE, AUDIO, VIDEO = "image", "audio", "video"
KINDS = (IMAGE, AUDIO, VIDEO)

# Suffixes each loader accepts. ``.gif`` is both: an image (first frame) or a video (all frames).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# Audio-only .webm/.mp4 (e.g. browser microphone recordings) are audio: the content decides.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".m4a", ".aac", ".weba",
                  ".webm", ".mka", ".mp4")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ogv", ".gif")
SUFFIXES = {IMAGE: IMAGE_SUFFIXES, AUDIO: AUDIO_SUFFIXES, VIDEO: VIDEO_SUFFIXES}

# Content formats (from magic bytes) each loader accepts.
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp", "bmp", "tiff")
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3", "aiff", "m4a", "aac", "webm", "mp4")
VIDEO_FORMATS = ("mp4", "mov", "webm", "avi", "ogg", "gif")
_FORMATS = {IMAGE: IMAGE_FORMATS, AUDIO: AUDIO_FORMATS, VIDEO: VIDEO_FORMATS}

_SF_UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX frames when a header states no length
_SOUNDFILE_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3", "aiff": "AIFF"}
_ARTICLE = {IMAGE: "an image", AUDIO: "an audio", VIDEO: "a video"}


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


@dataclass
class MediaInfo:
    """Header metadata of a media file, read by :func:`probe` without decoding the content.

    Fields that do not apply to the kind (or that the header does not state) are None.
    ``frames`` is the video frame count (stated, or estimated from duration × fps).
    """

    path: str
    kind: str  # image | audio | video
    format: str  # content format from magic bytes: png, jpeg, wav, mp3, mp4, webm, ...
    file_bytes: int
    width: Optional[int] = None
    height: Optional[int] = None
    duration: Optional[float] = None  # seconds
    frames: Optional[int] = None
    fps: Optional[float] = None
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    has_audio: bool = False  # video only: there is an audio stream

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- errors and checks
def _error(path: PathLike, what: str) -> MediaError:
    return MediaError(f"{os.fspath(path)}: {what}")


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _check_file(path: PathLike, limits: MediaLimits) -> int:
    """Checks that ``path`` is a non-empty regular file within ``max_file_bytes``; returns its size."""
    p = Path(path)
    if not p.exists():
        raise _error(path, "file not found")
    if not p.is_file():
        raise _error(path, "not a regular file (a directory or special file); give the path of a media file")
    size = p.stat().st_size
    if size == 0:
        raise _error(path, "file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise _error(path, f"file is {size / 2**20:.1f} MiB, over the limit of {limits.max_file_bytes / 2**20:.1f} MiB "
                           "(media.max_file_bytes); use a smaller file or raise the limit")
    return size


def _check_suffix(path: PathLike, kind: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES[kind]:
        raise _error(path, f"unsupported {kind} file type {suffix or '(no suffix)'!r}; "
                           f"allowed: {', '.join(SUFFIXES[kind])}")


def _parse_kind(kind: object) -> str:
    """Accepts 'image'/'audio'/'video' (or a ``Modality``); returns the plain string."""
    value = str(getattr(kind, "value", kind)).strip().lower()
    if value not in KINDS:
        raise MediaError(f"unknown media kind {kind!r}; allowed: {', '.join(KINDS)}")
    return value


# ----------------------------------------------------------------------------- content sniffing
def _sniff(head: bytes) -> Optional[tuple[str, str]]:
    """(kind, format) from the first bytes of a file, or None if the magic is not recognised."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE, "png"
    if head[:3] == b"\xff\xd8\xff":
        return IMAGE, "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return IMAGE, "gif"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WEBP":
        return IMAGE, "webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return AUDIO, "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return VIDEO, "avi"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return IMAGE, "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return IMAGE, "tiff"
    if head[:4] == b"fLaC":
        return AUDIO, "flac"
    if head[:4] == b"OggS":
        return AUDIO, "ogg"  # refined by stream inspection (Theora = video)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return AUDIO, "aiff"
    if head[:3] == b"ID3":
        return AUDIO, "mp3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        layer = (head[1] >> 1) & 0x3
        return (AUDIO, "mp3") if layer else (AUDIO, "aac")  # MPEG audio frame / ADTS AAC
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P ", b"F4A "):
            return AUDIO, "m4a"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"):
            return IMAGE, "heif"  # recognised, but not supported by the loaders
        return VIDEO, ("mov" if brand == b"qt  " else "mp4")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return VIDEO, "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return VIDEO, "webm"  # Matroska/WebM; refined by stream inspection (audio-only = audio)
    return None


def _describe_unknown(head: bytes) -> str:
    """Words for content that is no known media format (used in error messages)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "its content is no recognised media format"
    if text and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
        return "its content is text"
    return "its content is no recognised media format"


def _read_head(path: PathLike, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise _error(path, f"cannot read file ({e.strerror or e})") from e


def _container_kind(path: PathLike, fmt: str) -> Optional[str]:
    """For containers that may hold video or audio only (mp4, webm, ogg): which one, from stream headers.

    Returns None when PyAV cannot read the header; the loader then reports the file as corrupt.
    """
    import av

    try:
        with av.open(os.fspath(path)) as c:
            if any(s.type == "video" and not _is_cover_art(s) for s in c.streams):
                return VIDEO
            if c.streams.audio:
                return AUDIO
            return None
    except (av.FFmpegError, OSError, ValueError) as e:
        log.debug("%s: PyAV could not read the %s header: %s", path, fmt, e)
        return None


def _is_cover_art(stream) -> bool:
    """An attached picture (album art in m4a/mp3) is a video stream that is not a video."""
    disposition = getattr(stream, "disposition", None)
    try:
        return bool(disposition is not None and int(disposition) & 0x400)  # AV_DISPOSITION_ATTACHED_PIC
    except (TypeError, ValueError):
        return False


def _sniff_file(path: PathLike) -> tuple[Optional[tuple[str, str]], bytes]:
    """((kind, format) or None if the content is no known media, first bytes) of a file."""
    head = _read_head(path)
    found = _sniff(head)
    if found is not None and found[1] in ("mp4", "mov", "webm", "ogg"):
        found = (_container_kind(path, found[1]) or found[0], found[1])
    return found, head


def _unknown_content(path: PathLike, head: bytes, kind: Optional[str] = None) -> MediaError:
    if kind is None:
        return _error(path, f"not a media file ({_describe_unknown(head)}); allowed formats: "
                            f"images ({', '.join(IMAGE_FORMATS)}), audio ({', '.join(AUDIO_FORMATS)}), video ({', '.join(VIDEO_FORMATS)})")
    return _error(path, f"not {_ARTICLE[kind]} file ({_describe_unknown(head)}); "
                        f"allowed {kind} formats: {', '.join(_FORMATS[kind])}")


def detect_kind(path: PathLike) -> str:
    """The kind of media in a file, from its content (magic bytes), not from its suffix.

    Containers that may hold either video or only audio (mp4, webm, ogg) are told apart by
    their stream headers. A GIF is reported as ``"image"``; load it with ``load_video`` (or
    ``load_media(path, kind="video")``) to get all frames.

    Returns:
        ``"image"``, ``"audio"`` or ``"video"``.

    Raises:
        MediaError: the file is missing, empty or not a recognised media format.
    """
    return _identify(path, None, MediaLimits(max_file_bytes=2**63), check_suffix=False)[0]


def _identify(path: PathLike, kind: Optional[str], limits: MediaLimits,
              check_suffix: bool = True) -> tuple[str, str, int]:
    """File, content and (optionally) suffix checks; returns (kind, content format, file size).

    ``kind`` None means "whatever the content is" (a GIF is then an image).
    """
    size = _check_file(path, limits)
    found, head = _sniff_file(path)
    if found is None:
        raise _unknown_content(path, head, kind)
    found_kind, fmt = found
    kind = found_kind if kind is None else kind
    if found_kind != kind and not (kind == VIDEO and fmt == "gif"):
        raise _error(path, f"not {_ARTICLE[kind]} file (its content is {fmt} {found_kind}); "
                           f"allowed {kind} formats: {', '.join(_FORMATS[kind])}")
    if check_suffix:
        _check_suffix(path, kind)
    if fmt not in _FORMATS[kind]:
        raise _error(path, f"unsupported {kind} format {fmt!r}; allowed: {', '.join(_FORMATS[kind])}")
    return kind, fmt, size


# ----------------------------------------------------------------------------- probe and validate
def _reason(e: BaseException) -> str:
    """The library's own words for an error, without the path it repeats (FFmpeg and OS errors)."""
    for attr in ("strerror", "error_string"):  # OSError/av.FFmpegError; soundfile.LibsndfileError
        words = getattr(e, attr, None)
        if isinstance(words, str) and words:
            return words
    return str(e)


def _pil_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # Pillow plugins also raise IndexError/KeyError/struct.error on some truncated or malformed headers
    return (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error,
            Image.DecompressionBombError)


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, EOFError)


def _open_image(path: PathLike, limits: MediaLimits):
    """Pillow's lazy open (header only). Pillow's own decompression-bomb guard is mapped to MediaError."""
    from PIL import Image

    try:
        return Image.open(os.fspath(path))
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"has {_mp(int(m.group(1)))}" if m else "is over Pillow's decompression-bomb guard"
        raise _error(path, f"image {size}, over the limit of {_mp(limits.max_image_pixels)} "
                           "(media.max_image_pixels); resize it or raise the limit") from e
    except _pil_errors() as e:
        raise _error(path, f"corrupt or unreadable image ({_reason(e)})") from e


def _probe_image(path: PathLike, info: MediaInfo, limits: MediaLimits, as_video: bool) -> None:
    with _open_image(path, limits) as im:
        info.width, info.height = im.size
        if as_video:
            try:
                n = int(getattr(im, "n_frames", 1))
            except _pil_errors() as e:
                raise _error(path, f"corrupt or truncated animation ({_reason(e)})") from e
            ms = float(im.info.get("duration") or 100.0)  # GIF default: 10 fps
            info.frames, info.fps = n, 1000.0 / ms
            info.duration = n * ms / 1000.0


def _probe_audio_soundfile(path: PathLike, info: MediaInfo) -> bool:
    """Fills ``info`` from ``soundfile.info``; returns False when libsndfile cannot read the format."""
    import soundfile as sf

    if _SOUNDFILE_FORMATS.get(info.format) not in sf.available_formats():
        return False
    try:
        si = sf.info(os.fspath(path))
    except (sf.SoundFileError, RuntimeError) as e:
        if info.format in ("mp3", "ogg"):  # libsndfile may lack this codec (e.g. Ogg Opus): try PyAV
            log.debug("%s: soundfile cannot read it (%s); trying PyAV", path, e)
            return False
        raise _error(path, f"corrupt or unreadable {info.format} audio ({_reason(e)})") from e
    info.sample_rate, info.channels = int(si.samplerate), int(si.channels)
    known = 0 < si.frames < _SF_UNKNOWN_FRAMES and si.samplerate > 0  # streamed files state no length
    info.duration = si.frames / si.samplerate if known else None
    return True


def _stream_fps(stream) -> Optional[float]:
    for rate in (getattr(stream, "average_rate", None), getattr(stream, "guessed_rate", None),
                 getattr(stream, "base_rate", None)):
        if rate:
            fps = float(rate)
            if 0 < fps < 1000:
                return fps
    return None


def _stream_duration(stream, container) -> Optional[float]:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _audio_stream_format(stream) -> tuple[Optional[int], Optional[int]]:
    """(sample rate, channels) of a PyAV audio stream; None where the header does not say."""
    cc = stream.codec_context
    if cc is None:
        return None, None
    return int(cc.sample_rate or 0) or None, int(cc.channels or 0) or None


def _probe_av(path: PathLike, info: MediaInfo) -> None:
    """Fills ``info`` from PyAV container and stream headers (no decoding)."""
    import av

    try:
        with av.open(os.fspath(path)) as c:
            videos = [s for s in c.streams.video if not _is_cover_art(s)]
            if info.kind == VIDEO:
                if not videos:
                    raise _error(path, f"{info.format} file has no video stream; it is not a video")
                v = videos[0]
                cc = v.codec_context
                if cc is None or not cc.width or not cc.height:
                    raise _error(path, f"{info.format} video stream has an unknown codec or no frame size "
                                       "(corrupt, or a codec this PyAV build cannot decode)")
                info.width, info.height = cc.width, cc.height
                info.fps = _stream_fps(v)
                info.duration = _stream_duration(v, c)
                if v.frames:
                    info.frames = int(v.frames)
                elif info.duration and info.fps:
                    info.frames = math.ceil(info.duration * info.fps - 1e-6)
                info.has_audio = bool(c.streams.audio)
            if c.streams.audio:
                a = c.streams.audio[0]
                sample_rate, channels = _audio_stream_format(a)
                if info.kind == AUDIO and (not sample_rate or not channels):
                    raise _error(path, f"{info.format} audio stream has an unknown codec, sample rate or channel "
                                       "count (corrupt, or a codec this PyAV build cannot decode)")
                info.sample_rate, info.channels = sample_rate, channels
                if info.kind == AUDIO:
                    info.duration = _stream_duration(a, c)
            elif info.kind == AUDIO:
                raise _error(path, f"{info.format} file has no audio stream")
    except MediaError:
        raise
    except _av_errors() as e:
        raise _error(path, f"corrupt or unreadable {info.format} {info.kind} ({_reason(e)})") from e


def probe(path: PathLike, kind: Optional[str] = None) -> MediaInfo:
    """Reads a media file's metadata from its header, without decoding the content.

    Args:
        path: the file.
        kind: ``"image"``, ``"audio"`` or ``"video"``; default: :func:`detect_kind`. Pass
            ``"video"`` for a GIF to get its frame count and duration.

    The suffix is not checked here (:func:`validate` and the loaders check it) and no limit
    is applied, except that an image beyond Pillow's own decompression-bomb guard
    (2 × ``PIL.Image.MAX_IMAGE_PIXELS``) cannot be opened even lazily and raises.

    Returns:
        A :class:`MediaInfo` (kind, format, file size, width/height, duration, frames, fps,
        sample rate, channels, has_audio).

    Raises:
        MediaError: missing, empty, unreadable or not of the requested kind.
    """
    return _probe(path, kind, MediaLimits(max_file_bytes=2**63), check_suffix=False)


def _probe(path: PathLike, kind: Optional[str], limits: MediaLimits, check_suffix: bool = True) -> MediaInfo:
    kind, fmt, size = _identify(path, None if kind is None else _parse_kind(kind), limits, check_suffix)
    info = MediaInfo(path=os.fspath(path), kind=kind, format=fmt, file_bytes=size)
    if kind == IMAGE or fmt == "gif":
        _probe_image(path, info, limits, as_video=kind == VIDEO)
    elif kind == AUDIO and _probe_audio_soundfile(path, info):
        pass
    else:
        _probe_av(path, info)
    return info


def _check_limits(info: MediaInfo, limits: MediaLimits, max_frames: Optional[int] = None) -> None:
    """Compares header metadata with the limits; raises MediaError naming the limit."""
    p = info.path
    if info.kind == IMAGE:
        pixels = (info.width or 0) * (info.height or 0)
        if pixels > limits.max_image_pixels:
            raise _error(p, f"image is {info.width}×{info.height} = {_mp(pixels)}, over the limit of "
                            f"{_mp(limits.max_image_pixels)} (media.max_image_pixels); resize it or raise the limit")
    elif info.kind == AUDIO:
        if info.duration is not None and info.duration > limits.max_audio_seconds:
            raise _error(p, f"audio is {info.duration:.1f} s long, over the limit of {limits.max_audio_seconds:g} s "
                            "(media.max_audio_seconds); trim it or raise the limit")
        if info.duration is not None and info.sample_rate and info.channels:
            n_bytes = info.duration * info.sample_rate * info.channels * 4  # float32
            _check_decoded_bytes(p, n_bytes, f"{info.channels} channels × {info.duration:.1f} s × "
                                             f"{info.sample_rate} Hz float32", limits)
    else:
        pixels = (info.width or 0) * (info.height or 0)
        if pixels > limits.max_video_pixels:
            raise _error(p, f"video frames are {info.width}×{info.height} = {_mp(pixels)}, over the limit of "
                            f"{_mp(limits.max_video_pixels)} per frame (media.max_video_pixels); "
                            "downscale it or raise the limit")
        if info.duration is not None and info.duration > limits.max_video_seconds:
            raise _error(p, f"video is {info.duration:.1f} s long, over the limit of {limits.max_video_seconds:g} s "
                            "(media.max_video_seconds); trim it or raise the limit")
        frames = info.frames
        if frames is not None and max_frames is not None:
            frames = min(frames, max_frames)
        if frames is not None and frames > limits.max_video_frames:
            raise _error(p, f"video has {frames} frames, over the limit of {limits.max_video_frames} "
                            "(media.max_video_frames); pass max_frames, shorten it, or raise the limit")
        if frames is not None and info.width and info.height:
            _check_decoded_bytes(p, frames * info.width * info.height * 3,
                                 f"{frames} frames × {info.width}×{info.height} RGB", limits)


def _check_decoded_bytes(path: PathLike, n_bytes: float, what: str, limits: MediaLimits) -> None:
    if n_bytes > limits.max_decoded_bytes:
        raise _error(path, f"decoding would take {n_bytes / 2**30:.2f} GiB ({what}), over the limit of "
                           f"{limits.max_decoded_bytes / 2**30:.2f} GiB (media.max_decoded_bytes); "
                           "use a shorter or smaller file (or max_frames), or raise the limit")


def validate(path: PathLike, kind: Optional[str] = None, limits: MediaLimits = MediaLimits()) -> MediaInfo:
    """Checks a file against the limits from its header alone (no decoding); returns its :class:`MediaInfo`.

    This is what the loaders run before decoding, and what data validators should call.
    ``max_video_frames`` is checked against the file's whole frame count here.

    Raises:
        MediaError: any problem, with a message naming the file, the problem and the limit.
    """
    info = _probe(path, kind, limits)
    _check_limits(info, limits)
    return info


# ----------------------------------------------------------------------------- images
def _to_rgb(im) -> "Image.Image":
    """Any Pillow mode -> RGB: alpha composited on white, 16/32-bit and float scaled to 8-bit."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(path: PathLike, limits: MediaLimits = MediaLimits()) -> "Image.Image":
    """Loads an image as RGB.

    Handles png, jpeg, webp, gif and bmp/tiff; grayscale, palette, CMYK and 16-bit images
    are converted to 8-bit RGB; transparent pixels are composited on white; EXIF orientation
    is applied; an animated GIF/WebP gives its first frame. The size is checked from the header
    before any pixel is decoded. Pillow's global ``PIL.Image.MAX_IMAGE_PIXELS`` guard is left
    as it is: an image over twice that (~179 MP) is refused even if ``max_image_pixels`` is higher.

    Returns:
        A fully loaded ``PIL.Image.Image`` in mode ``"RGB"`` (the file is closed).

    Raises:
        MediaError: missing/empty/corrupt/truncated file, not an image, or over ``limits``.
    """
    from PIL import ImageOps

    _, fmt, size = _identify(path, IMAGE, limits)
    im = _open_image(path, limits)
    with im:
        info = MediaInfo(path=os.fspath(path), kind=IMAGE, format=fmt, file_bytes=size,
                         width=im.size[0], height=im.size[1])
        _check_limits(info, limits)
        try:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            out = _to_rgb(im)
            out.load()
        except _pil_errors() as e:
            raise _error(path, f"corrupt or truncated {fmt} image ({_reason(e)})") from e
    return out if out is not im else out.copy()


def save_image(img: "Image.Image | np.ndarray", path: PathLike, quality: int = 95) -> Path:
    """Saves an image; the format comes from the suffix (png, jpg/jpeg, webp, gif, bmp, tif/tiff).

    Args:
        img: a PIL image, or a uint8 array (H, W, 3) RGB / (H, W) grayscale.
        path: output file; its parent directory is created if needed.
        quality: jpeg/webp quality.

    Returns:
        The path written.
    """
    from PIL import Image

    _check_suffix(path, IMAGE)
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
            raise MediaError(f"{os.fspath(path)}: cannot save array of shape {img.shape} and dtype {img.dtype}; "
                             "expected uint8 (H, W, 3), (H, W, 4) or (H, W)")
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise MediaError(f"{os.fspath(path)}: cannot save {type(img).__name__}; expected a PIL image or numpy array")
    suffix = Path(path).suffix.lower()
    if suffix in (".jpg", ".jpeg") and img.mode not in ("RGB", "L", "CMYK"):
        img = _to_rgb(img)  # jpeg has no alpha
    kwargs = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else {}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        img.save(os.fspath(path), **kwargs)
    except _pil_errors() as e:
        Path(path).unlink(missing_ok=True)
        raise _error(path, f"cannot write image ({_reason(e)})") from e
    return Path(path)


# ----------------------------------------------------------------------------- audio
def _check_wav_complete(path: PathLike) -> None:
    """Refuses a WAV whose data chunk is shorter than its header says (libsndfile reads such files silently)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF":  # RF64 keeps the real sizes in a ds64 chunk; leave it to libsndfile
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise _error(path, f"truncated WAV: header says {chunk_size} bytes of audio, the file has "
                                       f"{available}; re-export or re-download it")
                return
            pos += 8 + chunk_size + (chunk_size & 1)
        raise _error(path, "truncated or corrupt WAV: no audio data chunk")


def _read_soundfile(path: PathLike, info: MediaInfo, max_seconds: float, limit_name: str) -> np.ndarray:
    """Decodes with soundfile in blocks, stopping once ``max_seconds`` is crossed. Returns (C, n) float32."""
    import soundfile as sf

    if info.format == "wav":
        _check_wav_complete(path)
    sr = info.sample_rate or 1
    limit = int(max_seconds * sr) + 1
    blocks, n = [], 0
    try:
        with sf.SoundFile(os.fspath(path)) as f:
            stated = f.frames
            stated = stated if 0 < stated < _SF_UNKNOWN_FRAMES else 0
            while True:
                block = f.read(65536, dtype="float32", always_2d=True)  # (n, C)
                if block.shape[0] == 0:
                    break
                blocks.append(block)
                n += block.shape[0]
                if n > limit:
                    raise _error(path, f"audio is longer than the limit of {max_seconds:g} s ({limit_name}; "
                                       "found while decoding, the header did not say so); trim it or raise the limit")
    except MediaError:
        raise
    except (sf.SoundFileError, RuntimeError) as e:
        raise _error(path, f"corrupt or truncated {info.format} audio ({_reason(e)})") from e
    if stated > 0 and n < stated and info.format != "mp3":  # mp3 frame counts are estimates
        raise _error(path, f"truncated {info.format} audio: header says {stated} samples, only {n} could be decoded")
    if n == 0:
        raise _error(path, "audio has no samples")
    return np.ascontiguousarray(np.concatenate(blocks, axis=0).T)  # (C, n)


def _decode_av_audio(path: PathLike, max_seconds: float, limit_name: str,
                     stop_after: Optional[float] = None) -> Optional[Audio]:
    """Decodes the first audio stream with PyAV to float32 (C, n); None if there is no audio stream.

    Decoding stops with MediaError once ``max_seconds`` is crossed, and silently at ``stop_after`` seconds.
    """
    import av

    chunks, n = [], 0
    try:
        with av.open(os.fspath(path)) as c:
            if not c.streams.audio:
                return None
            stream = c.streams.audio[0]
            sr, channels = _audio_stream_format(stream)
            if not sr or not channels:
                raise _error(path, "audio stream has an unknown codec, sample rate or channel count")
            # planar float keeps to_ndarray() at (C, n) whatever the codec's own sample format is
            resampler = av.AudioResampler(format="fltp", layout=_layout_name(channels), rate=sr)
            limit = int(max_seconds * sr) + 1
            stop = int(stop_after * sr) if stop_after is not None else None

            def frames() -> Iterator:
                for frame in c.decode(stream):
                    yield from resampler.resample(frame)
                yield from resampler.resample(None)

            for frame in frames():
                chunks.append(frame.to_ndarray().reshape(channels, -1))
                n += chunks[-1].shape[1]
                if stop is not None and n >= stop:
                    break
                if n > limit:
                    raise _error(path, f"audio is longer than the limit of {max_seconds:g} s ({limit_name}; "
                                       "found while decoding, the header did not say so); trim it or raise the limit")
    except MediaError:
        raise
    except _av_errors() as e:
        raise _error(path, f"corrupt or truncated audio stream ({_reason(e)})") from e
    if n == 0:
        raise _error(path, "audio stream has no decodable samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    if stop is not None:
        samples = samples[:, :stop]
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=sr)


def resample(audio: Audio, sample_rate: int) -> Audio:
    """Polyphase resampling (``scipy.signal.resample_poly``) to ``sample_rate``."""
    from scipy.signal import resample_poly

    if sample_rate <= 0:
        raise MediaError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if sample_rate == audio.sample_rate:
        return audio
    g = math.gcd(int(sample_rate), int(audio.sample_rate))
    out = resample_poly(audio.samples, sample_rate // g, audio.sample_rate // g, axis=-1)
    return Audio(samples=np.clip(out, -1.0, 1.0).astype(np.float32), sample_rate=int(sample_rate))


def _finish_audio(audio: Audio, sample_rate: Optional[int], mono: bool) -> Audio:
    samples = np.clip(audio.samples, -1.0, 1.0).astype(np.float32, copy=False)
    if mono and samples.shape[0] > 1:
        samples = samples.mean(axis=0, keepdims=True)
    audio = Audio(samples=np.ascontiguousarray(samples), sample_rate=audio.sample_rate)
    return resample(audio, sample_rate) if sample_rate is not None else audio


def load_audio(path: PathLike, limits: MediaLimits = MediaLimits(), sample_rate: Optional[int] = None,
               mono: bool = False) -> Audio:
    """Loads audio: wav, flac, ogg (Vorbis/Opus), mp3, aiff via soundfile; m4a/aac/webm via PyAV
    (and mp3/ogg via PyAV where libsndfile lacks the codec).

    Args:
        path: the file.
        limits: ``max_file_bytes`` and ``max_audio_seconds`` apply.
        sample_rate: resample to this rate (polyphase); default: keep the file's rate.
        mono: average the channels into one.

    Returns:
        :class:`Audio` with float32 samples (channels, n) clipped to [-1, 1].

    Raises:
        MediaError: missing/empty/corrupt/truncated file, not audio, or over ``limits``.
    """
    info = validate(path, AUDIO, limits)
    # soundfile when libsndfile reads this format and the header states the length; otherwise PyAV
    # (libsndfile cannot read block-wise through a file of unstated length, e.g. a streamed FLAC)
    if _probe_audio_soundfile(path, info) and info.duration is not None:
        audio = Audio(_read_soundfile(path, info, limits.max_audio_seconds, "media.max_audio_seconds"),
                      info.sample_rate)
    else:
        audio = _decode_av_audio(path, limits.max_audio_seconds, "media.max_audio_seconds")
        if audio is None:
            raise _error(path, "file has no audio stream")
    return _finish_audio(audio, sample_rate, mono)


def _check_audio_arg(audio: Audio, path: PathLike) -> np.ndarray:
    if not isinstance(audio, Audio):
        raise MediaError(f"{os.fspath(path)}: expected an Audio, got {type(audio).__name__}")
    x = np.asarray(audio.samples)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise MediaError(f"{os.fspath(path)}: audio samples must be (channels, n) with n > 0, got shape {x.shape}")
    if int(audio.sample_rate) <= 0:
        raise MediaError(f"{os.fspath(path)}: sample_rate must be positive, got {audio.sample_rate}")
    return np.clip(x.astype(np.float32, copy=False), -1.0, 1.0)


def _layout_name(channels: int) -> str:
    """FFmpeg channel-layout name for a channel count (``"3c"`` = FFmpeg's default 3-channel layout)."""
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _encodable_rate(codec_name: str, sr: int) -> int:
    """``sr`` if the encoder takes it, else the closest rate it does take (preferring higher)."""
    import av

    rates = av.codec.Codec(codec_name, "w").audio_rates
    if not rates or sr in rates:
        return sr
    return min(rates, key=lambda r: (abs(r - sr), -r))


def _add_audio_stream(container, codec_names: tuple[str, ...], audio: Audio):
    """Adds the first audio encoder that exists; returns (stream, audio resampled to a rate it takes)."""
    import av

    for name in codec_names:
        try:
            av.codec.Codec(name, "w")
        except av.FFmpegError:
            continue
        rate = _encodable_rate(name, audio.sample_rate)
        if rate != audio.sample_rate:
            log.info("%s encoder does not take %d Hz; resampling to %d Hz", name, audio.sample_rate, rate)
            audio = resample(audio, rate)
        stream = container.add_stream(name, rate=rate)
        stream.layout = _layout_name(audio.samples.shape[0])
        return stream, audio
    raise MediaError(f"no audio encoder available among {', '.join(codec_names)}")


def _encode_audio(container, stream, audio: Audio) -> None:
    import av

    x = np.ascontiguousarray(audio.samples.astype(np.float32))
    frame = av.AudioFrame.from_ndarray(x, format="fltp", layout=_layout_name(x.shape[0]))
    frame.sample_rate = audio.sample_rate
    frame.pts = 0
    for packet in stream.encode(frame):  # PyAV re-frames to the codec's frame size and sample format
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def save_audio(audio: Audio, path: PathLike, subtype: Optional[str] = None) -> Path:
    """Saves audio: wav/flac (16-bit PCM by default)/ogg (Vorbis)/aiff via soundfile; mp3 via soundfile
    (libsndfile >= 1.1) or else PyAV; m4a (AAC) via PyAV. Samples are clipped to [-1, 1].

    Args:
        audio: the waveform.
        path: output file; the format comes from the suffix; the parent directory is created.
        subtype: a soundfile subtype (e.g. ``"FLOAT"`` for lossless float WAV); default: the format's default.

    Returns:
        The path written.
    """
    import soundfile as sf

    _check_suffix(path, AUDIO)
    x = _check_audio_arg(audio, path)
    suffix = Path(path).suffix.lower()
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
           ".aif": "AIFF", ".aiff": "AIFF"}.get(suffix)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt is not None and fmt in sf.available_formats():
        try:
            sf.write(os.fspath(path), x.T, int(audio.sample_rate), format=fmt, subtype=subtype)
        except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
            Path(path).unlink(missing_ok=True)
            raise _error(path, f"cannot write {fmt} audio at {audio.sample_rate} Hz ({_reason(e)})") from e
        return Path(path)
    codecs = {".mp3": ("libmp3lame", "mp3"), ".m4a": ("aac",), ".mp4": ("aac",), ".aac": ("aac",),
              ".opus": ("libopus", "opus"), ".ogg": ("libvorbis", "vorbis", "libopus"),
              ".weba": ("libopus", "opus"), ".webm": ("libopus", "opus"), ".mka": ("libopus", "opus")}.get(suffix)
    if codecs is None:
        raise _error(path, f"cannot write {suffix} audio; writable: {', '.join(AUDIO_SUFFIXES)}")
    import av

    try:
        container_fmt = {".m4a": "ipod", ".aac": "adts", ".weba": "webm"}.get(suffix)
        with av.open(os.fspath(path), "w", format=container_fmt) as c:
            stream, audio = _add_audio_stream(c, codecs, Audio(x, int(audio.sample_rate)))
            _encode_audio(c, stream, audio)
    except MediaError as e:  # no audio encoder
        Path(path).unlink(missing_ok=True)
        raise _error(path, str(e)) from e
    except _av_errors() as e:
        Path(path).unlink(missing_ok=True)
        raise _error(path, f"cannot write {suffix} audio ({_reason(e)})") from e
    return Path(path)


# ----------------------------------------------------------------------------- video
def _video_limit_error(path: PathLike, what: str, limit: str, name: str) -> MediaError:
    return _error(path, f"video {what}, over the limit of {limit} ({name}; found while decoding, the header "
                        "did not say so); shorten it or raise the limit")


def _load_gif_video(path: PathLike, info: MediaInfo, limits: MediaLimits, max_frames: Optional[int]) -> Video:
    from PIL import ImageSequence

    frames, ms_total = [], 0.0
    try:
        with _open_image(path, limits) as im:
            for frame in ImageSequence.Iterator(im):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                ms_total += float(frame.info.get("duration") or 100.0)
                frames.append(np.asarray(_to_rgb(frame.convert("RGBA"))))
                if ms_total / 1000.0 > limits.max_video_seconds + 1e-6:
                    raise _video_limit_error(path, f"is longer than {ms_total / 1000:.1f} s",
                                             f"{limits.max_video_seconds:g} s", "media.max_video_seconds")
    except MediaError:
        raise
    except _pil_errors() as e:
        raise _error(path, f"corrupt or truncated GIF ({_reason(e)})") from e
    fps = 1000.0 * len(frames) / ms_total if ms_total > 0 else (info.fps or 10.0)
    return Video(frames=np.stack(frames), fps=fps, audio=None)


def load_video(path: PathLike, limits: MediaLimits = MediaLimits(), max_frames: Optional[int] = None,
               with_audio: bool = True) -> Video:
    """Loads a video (mp4/mov/m4v, webm/mkv, avi via PyAV; animated gif via Pillow).

    Duration, frame size and frame count are checked from the container header before
    decoding, and again while decoding. ``max_video_frames`` bounds the frames decoded into
    memory, i.e. ``min(frames in file, max_frames)``.

    Args:
        path: the file.
        limits: ``max_file_bytes``, ``max_video_seconds``, ``max_video_frames``, ``max_video_pixels`` apply.
        max_frames: decode only the first ``max_frames`` frames (the audio is cut to the same span).
        with_audio: also decode the first audio track, if any, at its own sample rate.

    Returns:
        :class:`Video` with uint8 frames (T, H, W, 3), fps, and ``audio`` (None when the file
        has no audio track or ``with_audio`` is False).

    Raises:
        MediaError: missing/empty/corrupt/truncated file, not a video, or over ``limits``.
    """
    import av

    if max_frames is not None and max_frames < 1:
        raise MediaError(f"{os.fspath(path)}: max_frames must be >= 1 or None, got {max_frames}")
    info = _probe(path, VIDEO, limits)
    _check_limits(info, limits, max_frames)
    if info.format == "gif":
        return _load_gif_video(path, info, limits, max_frames)

    frame_limit = limits.max_video_frames if max_frames is None else min(max_frames, limits.max_video_frames)
    frames: list[np.ndarray] = []
    n_bytes, t0 = 0, None
    try:
        with av.open(os.fspath(path)) as c:
            stream = [s for s in c.streams.video if not _is_cover_art(s)][0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                if frame.width * frame.height > limits.max_video_pixels:
                    raise _video_limit_error(path, f"frame is {frame.width}×{frame.height}",
                                             _mp(limits.max_video_pixels), "media.max_video_pixels")
                if frame.time is not None:
                    t0 = frame.time if t0 is None else t0
                    if frame.time - t0 > limits.max_video_seconds + 1e-3:
                        raise _video_limit_error(path, f"is longer than {frame.time - t0:.1f} s",
                                                 f"{limits.max_video_seconds:g} s", "media.max_video_seconds")
                if len(frames) >= frame_limit:
                    if max_frames is not None and len(frames) >= max_frames:
                        break
                    raise _video_limit_error(path, f"has more than {len(frames)} frames",
                                             str(limits.max_video_frames), "media.max_video_frames")
                n_bytes += frame.width * frame.height * 3
                if n_bytes > limits.max_decoded_bytes:
                    raise _video_limit_error(path, f"frames take more than {n_bytes / 2**30:.2f} GiB",
                                             f"{limits.max_decoded_bytes / 2**30:.2f} GiB", "media.max_decoded_bytes")
                frames.append(frame.to_ndarray(format="rgb24"))
    except MediaError:
        raise
    except _av_errors() as e:
        raise _error(path, f"corrupt or truncated {info.format} video ({_reason(e)})") from e
    if not frames:
        raise _error(path, "video stream has no decodable frames (corrupt or truncated)")
    if len({f.shape for f in frames}) > 1:
        raise _error(path, "frame size changes within the video; re-encode it at one size")
    fps = info.fps or (len(frames) / info.duration if info.duration else 25.0)

    audio = None
    if with_audio and info.has_audio:
        span = len(frames) / fps if max_frames is not None else None
        audio = _decode_av_audio(path, limits.max_video_seconds, "media.max_video_seconds", stop_after=span)
        if audio is not None:
            audio = _finish_audio(audio, None, False)
    return Video(frames=np.stack(frames), fps=float(fps), audio=audio)


def _check_video_arg(video: Video, path: PathLike) -> np.ndarray:
    if not isinstance(video, Video):
        raise MediaError(f"{os.fspath(path)}: expected a Video, got {type(video).__name__}")
    x = np.asarray(video.frames)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise MediaError(f"{os.fspath(path)}: video frames must be uint8 (T, H, W, 3) with T >= 1, "
                         f"got {x.dtype} {x.shape}")
    return x


# suffix -> (video encoders, audio encoders), first available wins
_VIDEO_ENCODERS = {
    ".mp4": (("libx264", "h264", "mpeg4"), ("aac",)),
    ".m4v": (("libx264", "h264", "mpeg4"), ("aac",)),
    ".mov": (("libx264", "h264", "mpeg4"), ("aac",)),
    ".webm": (("libvpx-vp9", "libvpx"), ("libopus", "opus", "vorbis")),
    ".mkv": (("libx264", "h264", "libvpx-vp9", "mpeg4"), ("libopus", "aac")),
    ".avi": (("mpeg4",), ("mp3", "libmp3lame", "aac")),
}


# save_video's H.264 settings. no-asm: x264's assembly paths now and then encode the same frames to another
# bitstream (119 of 300 world clips and 4 of 4 clips of 24 x 576 x 320, each saved three times in one process), so
# seeded data and outputs differed from one run to the next; its C paths do not (0 of 300, 0 of 4), at 2-4x the
# encoding time, small beside any decoder (benchmarks/video_encode.py).
X264_OPTIONS = {"crf": "18", "preset": "veryfast", "x264-params": "no-asm=1"}


def save_video(video: Video, path: PathLike, fps: Optional[float] = None) -> Path:
    """Saves a video: mp4/m4v/mov (H.264 via libx264, else MPEG-4 Part 2; AAC audio), webm/mkv
    (VP9, else VP8; Opus audio), or gif (Pillow; no audio, colours quantised to 256).

    H.264/VP8/VP9 use 4:2:0 chroma, so odd widths/heights are padded by one pixel (edge copy).
    H.264 files are byte-reproducible: the same frames give the same bytes (x264 without its assembly paths).
    The audio track, when present, is muxed (and resampled if the encoder needs another rate).

    Args:
        video: the clip; ``video.audio`` is written when not None.
        path: output file; the container comes from the suffix; the parent directory is created.
        fps: frame rate; default ``video.fps``.

    Returns:
        The path written.
    """
    import av

    _check_suffix(path, VIDEO)
    frames = _check_video_arg(video, path)
    fps = float(fps if fps is not None else video.fps)
    if not (0 < fps <= 1000):
        raise MediaError(f"{os.fspath(path)}: fps must be in (0, 1000], got {fps}")
    suffix = Path(path).suffix.lower()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        return _save_gif(frames, fps, path, has_audio=video.audio is not None)

    if suffix not in _VIDEO_ENCODERS:
        raise _error(path, f"cannot write {suffix} video; writable: {', '.join(_VIDEO_ENCODERS)}, .gif")
    vcodecs, acodecs = _VIDEO_ENCODERS[suffix]
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # 4:2:0 needs even dimensions
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        log.info("%s: padded %dx%d frames to %dx%d for 4:2:0 encoding", path, w, h, frames.shape[2], frames.shape[1])
    audio = None if video.audio is None else Audio(_check_audio_arg(video.audio, path), int(video.audio.sample_rate))
    rate = Fraction(fps).limit_denominator(1001)
    errors = []
    for vcodec in vcodecs:
        try:
            av.codec.Codec(vcodec, "w")
        except av.FFmpegError:
            continue
        try:
            _write_av_video(path, frames, rate, vcodec, audio, acodecs)
            return Path(path)
        except MediaError as e:  # no audio encoder
            Path(path).unlink(missing_ok=True)
            raise _error(path, str(e)) from e
        except _av_errors() as e:  # encoder exists but cannot open here (e.g. a hardware encoder): try the next
            errors.append(f"{vcodec}: {_reason(e)}")
            log.debug("%s: encoder %s failed (%s)", path, vcodec, e)
    Path(path).unlink(missing_ok=True)  # no half-written file
    raise _error(path, f"no working video encoder for {suffix} (tried {', '.join(vcodecs)}; {'; '.join(errors)})")


def _write_av_video(path: PathLike, frames: np.ndarray, rate: Fraction, vcodec: str, audio: Optional[Audio],
                    acodecs: tuple[str, ...]) -> None:
    import av

    with av.open(os.fspath(path), "w") as c:
        stream = c.add_stream(vcodec, rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        if vcodec.startswith("libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b:v": "0"}
        elif vcodec in ("libx264", "h264"):
            stream.options = dict(X264_OPTIONS)
        else:
            stream.bit_rate = max(2_000_000, int(frames.shape[1] * frames.shape[2] * float(rate) * 0.5))
        astream = None
        if audio is not None:
            astream, audio = _add_audio_stream(c, acodecs, audio)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
        if astream is not None:
            _encode_audio(c, astream, audio)


def _save_gif(frames: np.ndarray, fps: float, path: PathLike, has_audio: bool) -> Path:
    from PIL import Image

    if has_audio:
        log.warning("%s: GIF has no audio track; the audio is not saved", path)
    images = [Image.fromarray(f) for f in frames]
    duration_ms = max(20, int(round(1000.0 / fps / 10.0)) * 10)  # GIF delays are in 1/100 s; browsers clamp < 20 ms
    try:
        images[0].save(os.fspath(path), save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                       optimize=False, disposal=1)
    except _pil_errors() as e:
        Path(path).unlink(missing_ok=True)
        raise _error(path, f"cannot write GIF ({_reason(e)})") from e
    return Path(path)


# ----------------------------------------------------------------------------- dispatch
def load_media(path: PathLike, kind: Optional[str] = None,
               limits: MediaLimits = MediaLimits()) -> "Image.Image | Audio | Video":
    """Loads any supported media file.

    Args:
        path: the file.
        kind: ``"image"``, ``"audio"`` or ``"video"`` (or a ``Modality``); default: sniffed
            from the content (:func:`detect_kind`; a GIF is an image unless ``kind="video"``).
        limits: the limits to apply.

    Returns:
        A ``PIL.Image.Image`` (RGB), an :class:`Audio` or a :class:`Video`.
    """
    kind = detect_kind(path) if kind is None else _parse_kind(kind)
    loader = {IMAGE: load_image, AUDIO: load_audio, VIDEO: load_video}[kind]
    return loader(path, limits=limits)


def save_media(media: "Image.Image | np.ndarray | Audio | Video", path: PathLike) -> Path:
    """Saves an image, :class:`Audio` or :class:`Video` with the matching ``save_*`` function."""
    if isinstance(media, Audio):
        return save_audio(media, path)
    if isinstance(media, Video):
        return save_video(media, path)
    return save_image(media, path)


# ----------------------------------------------------------------------------- command line
def _media_info_command(args) -> int:
    """``codi2 media-info FILE…``: header metadata and limit checks, one line (or JSON object) per file."""
    import json

    limits = MediaLimits()
    bad = 0
    for path in args.files:
        try:
            info = validate(path, args.kind, limits)
            row = {**info.to_dict(), "ok": True}
        except MediaError as e:
            bad += 1
            row = {"path": path, "ok": False, "error": str(e)}
        if args.json:
            print(json.dumps(row))
        elif row["ok"]:
            details = ", ".join(f"{k}={v}" for k, v in row.items()
                                if k not in ("path", "ok", "kind", "format") and v not in (None, False))
            print(f"{path}: {row['kind']} ({row['format']}) {details}")
        else:
            print(f"ERROR {row['error']}")
    return 1 if bad else 0


def register(subparsers) -> None:
    """Adds ``codi2 media-info FILE… [--kind K] [--json]`` (exit status 1 if any file fails its checks)."""
    p = subparsers.add_parser("media-info", help="probe media files (no decoding) and check them against the limits")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--kind", choices=KINDS, default=None, help="expected kind (default: from the content)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_media_info_command)
