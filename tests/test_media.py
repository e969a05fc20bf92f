"""codi2.media: every format round-trips, and every bad input raises MediaError naming the file."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from codi2 import media
from codi2.config import MediaLimits
from codi2.media import Audio, MediaError, Video, detect_kind, load_audio, load_image, load_media, load_video
from codi2.media import probe, save_audio, save_image, save_video, validate
from codi2.modality import Modality


# ----------------------------------------------------------------------------- fixtures
def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except av.FFmpegError:
        return False


HAS_MP3 = "MP3" in sf.available_formats() or _has_encoder("libmp3lame")
HAS_H264 = _has_encoder("libx264")
HAS_VPX = _has_encoder("libvpx-vp9") or _has_encoder("libvpx")


def _gradient_image(h: int = 24, w: int = 32) -> np.ndarray:
    """Smooth RGB content (lossy codecs keep it well). uint8 (H, W, 3)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def _tone(seconds: float = 0.5, sr: int = 16000, channels: int = 2) -> Audio:
    """A 440 Hz (left) / 660 Hz (right) tone at half scale: float32 (channels, n)."""
    t = np.arange(int(seconds * sr)) / sr
    waves = [0.5 * np.sin(2 * np.pi * f * t) for f in (440.0, 660.0, 880.0)[:channels]]
    return Audio(np.stack(waves).astype(np.float32), sr)


def _clip(t: int = 8, h: int = 32, w: int = 48, fps: float = 8.0, audio: bool = True) -> Video:
    """A moving gradient: uint8 (T, H, W, 3), with a tone track spanning the clip."""
    base = _gradient_image(h, w)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(t)])
    return Video(frames, fps, _tone(t / fps, 16000) if audio else None)


def _best_lag_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 3000) -> float:
    """Max normalised correlation of two 1-D signals over lags (lossy codecs add delay)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(0, max_lag, 8):
        for x, y in ((a[:n], b[lag:lag + n]), (a[lag:lag + n], b[:n])):
            c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
            best = max(best, c)
    return best


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height RGB, with one tiny IDAT: no large allocation anywhere."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _raises(fn, path: Path, *words: str) -> str:
    """Asserts fn() raises MediaError whose message names the file and contains ``words``."""
    with pytest.raises(MediaError) as info:
        fn()
    msg = str(info.value)
    assert Path(path).name in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("suffix,tol", [(".png", 0), (".bmp", 0), (".tiff", 0), (".jpg", 6), (".webp", 6), (".gif", 12)])
def test_image_round_trip(tmp_path, suffix, tol):
    arr = _gradient_image()
    path = save_image(Image.fromarray(arr), tmp_path / f"a{suffix}")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (32, 24)
    err = np.abs(np.asarray(img).astype(int) - arr).mean()
    assert err <= tol, err
    assert detect_kind(path) == "image"
    info = probe(path)
    assert (info.kind, info.width, info.height) == ("image", 32, 24)


def test_image_modes_to_rgb(tmp_path):
    # grayscale
    save_image(Image.new("L", (4, 3), 77), tmp_path / "l.png")
    assert np.asarray(load_image(tmp_path / "l.png"))[0, 0].tolist() == [77, 77, 77]
    # 16-bit grayscale is scaled, not clipped: 65535 -> 255, 32896 -> 128
    a16 = np.array([[65535, 32896]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "g16.png"))[0, :, 0].tolist() == [255, 128]
    # palette
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    save_image(p, tmp_path / "p.png")
    assert np.asarray(load_image(tmp_path / "p.png"))[0, 0].tolist() == [10, 200, 30]
    # CMYK jpeg
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    px = np.asarray(load_image(tmp_path / "cmyk.jpg"))[4, 4].astype(int)
    assert px[0] > 200 and px[1] < 50 and px[2] < 50  # red
    # alpha is composited on white: transparent -> white, opaque keeps its colour
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)
    save_image(rgba, tmp_path / "rgba.png")
    out = np.asarray(load_image(tmp_path / "rgba.png"))
    assert out[0, 0].tolist() == [0, 0, 255] and out[1, 1].tolist() == [255, 255, 255]
    Image.new("LA", (2, 2), (0, 128)).save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0, 0].tolist() == [127, 127, 127]
    # palette with a transparent index
    pt = Image.new("P", (2, 2), 0)
    pt.putpalette([255, 0, 0] * 256)
    pt.info["transparency"] = 0
    pt.save(tmp_path / "pt.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "pt.png"))[0, 0].tolist() == [255, 255, 255]


def test_image_first_frame_of_animation_and_exif_rotation(tmp_path):
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    px = np.asarray(load_image(tmp_path / "anim.gif"))[0, 0]
    assert px[0] > 200 and px[2] < 50
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (6, 4)).save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (4, 6)


def test_image_bad_inputs(tmp_path):
    missing = tmp_path / "nope.png"
    _raises(lambda: load_image(missing), missing, "not found")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _raises(lambda: load_image(empty), empty, "empty")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    _raises(lambda: load_image(text), text, "not an image file", "text")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    _raises(lambda: load_image(corrupt), corrupt, "corrupt")
    good = save_image(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
                      tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises(lambda: load_image(truncated), truncated, "truncated")
    wav_as_png = tmp_path / "sound.png"
    save_audio(_tone(0.1), tmp_path / "s.wav")
    wav_as_png.write_bytes((tmp_path / "s.wav").read_bytes())
    _raises(lambda: load_image(wav_as_png), wav_as_png, "not an image file", "wav audio")
    weird = tmp_path / "a.xyz"
    weird.write_bytes(good.read_bytes())
    _raises(lambda: load_image(weird), weird, "unsupported image file type '.xyz'", ".png")
    _raises(lambda: save_image(np.zeros((2, 2, 3), np.uint8), weird), weird, "unsupported")
    _raises(lambda: load_image(tmp_path), tmp_path, "not a regular file")


def test_image_bomb_refused_from_header(tmp_path, monkeypatch):
    # 5000×5000 = 25 MP: over our 16.8 MP default, under Pillow's own guard -> our message with the dims
    big = tmp_path / "photo.png"
    big.write_bytes(_png_header(5000, 5000))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))  # must never be reached
    msg = _raises(lambda: load_image(big), big, "5000×5000 = 25.0 MP", "16.8 MP", "media.max_image_pixels")
    assert "raise the limit" in msg
    # 20000×20000 = 400 MP: Pillow's DecompressionBombError is mapped to MediaError
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    _raises(lambda: load_image(bomb), bomb, "400.0 MP", "media.max_image_pixels")
    _raises(lambda: validate(bomb), bomb, "media.max_image_pixels")
    assert decoded == []
    assert probe(big).width == 5000  # probe reports, validate refuses
    _raises(lambda: validate(big), big, "25.0 MP")


def test_file_size_limit(tmp_path):
    path = save_image(_gradient_image(), tmp_path / "a.png")
    _raises(lambda: load_image(path, MediaLimits(max_file_bytes=100)), path, "media.max_file_bytes")


# ----------------------------------------------------------------------------- audio
def test_audio_wav_exact_and_any_rate(tmp_path):
    for sr, ch in ((16000, 2), (11025, 1), (44100, 1)):
        a = _tone(0.25, sr, ch)
        path = save_audio(a, tmp_path / f"a{sr}.wav")
        b = load_audio(path)
        assert b.sample_rate == sr and b.samples.shape == a.samples.shape and b.samples.dtype == np.float32
        assert np.abs(b.samples - a.samples).max() < 1.0 / 16384  # 16-bit PCM
    info = probe(tmp_path / "a16000.wav")
    assert (info.kind, info.format, info.sample_rate, info.channels) == ("audio", "wav", 16000, 2)
    assert info.duration == pytest.approx(0.25)


def test_audio_flac_lossless_and_ogg_mp3_lossy(tmp_path):
    a = _tone(0.5)
    b = load_audio(save_audio(a, tmp_path / "a.flac"))
    assert b.samples.shape == (2, 8000) and np.abs(b.samples - a.samples).max() < 1.0 / 16384
    lossy = [".ogg", ".m4a"] + ([".mp3"] if HAS_MP3 else [])
    for suffix in lossy:
        path = save_audio(a, tmp_path / f"a{suffix}")
        assert detect_kind(path) == "audio"
        b = load_audio(path)
        assert b.sample_rate == 16000 and b.samples.shape[0] == 2
        assert abs(b.samples.shape[1] - 8000) < 2500, (suffix, b.samples.shape)  # codec padding
        for c in range(2):
            assert _best_lag_corr(a.samples[c], b.samples[c]) > 0.9, suffix


def test_audio_mono_and_resample(tmp_path):
    a = _tone(0.5, 16000, 2)
    path = save_audio(a, tmp_path / "a.wav")
    m = load_audio(path, mono=True, sample_rate=8000)
    assert m.samples.shape == (1, 4000) and m.sample_rate == 8000
    spectrum = np.abs(np.fft.rfft(m.samples[0]))
    freqs = np.fft.rfftfreq(4000, 1 / 8000)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([440, 660], abs=3)


def test_audio_bad_inputs(tmp_path):
    good = save_audio(_tone(0.5), tmp_path / "good.wav")
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:2000])
    _raises(lambda: load_audio(truncated), truncated, "truncated WAV")
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(good.read_bytes()[:30])
    _raises(lambda: load_audio(header_only), header_only, "WAV")
    text = tmp_path / "speech.wav"
    text.write_text("hello, I am text\n")
    _raises(lambda: load_audio(text), text, "not an audio file", "text")
    empty = tmp_path / "e.flac"
    empty.write_bytes(b"")
    _raises(lambda: load_audio(empty), empty, "empty")
    corrupt = tmp_path / "c.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    _raises(lambda: load_audio(corrupt), corrupt, "corrupt")
    png = save_image(_gradient_image(), tmp_path / "x.png")
    renamed = tmp_path / "x.mp3"
    renamed.write_bytes(png.read_bytes())
    _raises(lambda: load_audio(renamed), renamed, "not an audio file", "png image")
    _raises(lambda: load_audio(tmp_path / "none.wav"), tmp_path / "none.wav", "not found")
    _raises(lambda: save_audio(_tone(0.1), tmp_path / "a.txt"), tmp_path / "a.txt", "unsupported audio file type")
    with pytest.raises(MediaError, match=r"\(channels, n\)"):
        save_audio(Audio(np.zeros(10, np.float32), 16000), tmp_path / "flat.wav")


def test_audio_too_long(tmp_path):
    path = save_audio(_tone(10.0, 8000, 1), tmp_path / "long.wav")
    limits = MediaLimits(max_audio_seconds=5.0)
    _raises(lambda: load_audio(path, limits), path, "10.0 s", "5 s", "media.max_audio_seconds")
    assert load_audio(path, MediaLimits(max_audio_seconds=10.0)).duration == pytest.approx(10.0)


def test_audio_limit_enforced_while_decoding_when_header_states_no_length(tmp_path):
    path = save_audio(_tone(10.0, 8000, 1), tmp_path / "stream.flac")
    raw = bytearray(path.read_bytes())
    raw[21] &= 0xF0  # STREAMINFO total_samples = 0, as written by streaming encoders
    raw[22:26] = b"\0\0\0\0"
    path.write_bytes(bytes(raw))
    assert probe(path).duration is None
    _raises(lambda: load_audio(path, MediaLimits(max_audio_seconds=5.0)), path, "found while decoding")
    assert load_audio(path).samples.shape == (1, 80000)


# ----------------------------------------------------------------------------- video
VIDEO_CASES = [(".mp4", HAS_H264 or _has_encoder("mpeg4")), (".webm", HAS_VPX), (".mov", HAS_H264), (".avi", True)]


@pytest.mark.parametrize("suffix,available", VIDEO_CASES)
def test_video_round_trip_with_audio(tmp_path, suffix, available):
    if not available:
        pytest.skip(f"no encoder for {suffix} in this PyAV build")
    clip = _clip()
    path = save_video(clip, tmp_path / f"v{suffix}")
    assert detect_kind(path) == "video"
    info = probe(path)
    assert (info.kind, info.width, info.height, info.has_audio) == ("video", 48, 32, True)
    assert info.fps == pytest.approx(8.0)
    v = load_video(path)
    assert v.frames.shape == clip.frames.shape and v.frames.dtype == np.uint8
    assert np.abs(v.frames.astype(int) - clip.frames).mean() < 8
    assert v.fps == pytest.approx(8.0)
    assert v.audio is not None and v.audio.samples.shape[0] == 2
    assert abs(v.audio.duration - 1.0) < 0.15
    a = media.resample(v.audio, 16000)
    assert _best_lag_corr(clip.audio.samples[0], a.samples[0]) > 0.9


def test_video_without_audio_max_frames_and_gif(tmp_path):
    clip = _clip(audio=False)
    path = save_video(clip, tmp_path / "silent.mp4")
    assert probe(path).has_audio is False
    v = load_video(path, max_frames=3)
    assert v.frames.shape == (3, 32, 48, 3) and v.audio is None
    with_audio = save_video(_clip(), tmp_path / "loud.mp4")
    assert load_video(with_audio, with_audio=False).audio is None
    cut = load_video(with_audio, max_frames=4)  # audio cut to the frames' span: 4 / 8 fps
    assert cut.audio.duration == pytest.approx(0.5, abs=0.01)

    gif = save_video(Video(clip.frames, 10.0, None), tmp_path / "anim.gif")
    g = load_video(gif)
    assert g.frames.shape == clip.frames.shape and g.fps == pytest.approx(10.0)
    assert np.abs(g.frames.astype(int) - clip.frames).mean() < 12
    assert detect_kind(gif) == "image"
    assert isinstance(load_media(gif, kind="video"), Video)
    assert probe(gif, "video").frames == 8


def test_video_odd_size_is_padded(tmp_path):
    odd = Video(np.full((2, 15, 21, 3), 128, np.uint8), 5.0)
    v = load_video(save_video(odd, tmp_path / "odd.mp4"))
    assert v.frames.shape == (2, 16, 22, 3)


def test_video_limits(tmp_path):
    path = save_video(_clip(t=16, fps=8.0), tmp_path / "two_seconds.mp4")
    _raises(lambda: load_video(path, MediaLimits(max_video_seconds=1.0)), path, "2.0 s", "media.max_video_seconds")
    _raises(lambda: load_video(path, MediaLimits(max_video_frames=10)), path, "16 frames", "media.max_video_frames")
    assert load_video(path, MediaLimits(max_video_frames=10), max_frames=10).frames.shape[0] == 10
    _raises(lambda: load_video(path, MediaLimits(max_video_pixels=1000)), path, "48×32", "media.max_video_pixels")


def test_video_limit_enforced_while_decoding_when_metadata_lies(tmp_path, monkeypatch):
    path = save_video(_clip(t=16, audio=False), tmp_path / "liar.mp4")
    real = media._probe_av

    def lying_probe(p, info):  # a header that states no duration or frame count
        real(p, info)
        info.duration = info.frames = None

    monkeypatch.setattr(media, "_probe_av", lying_probe)
    _raises(lambda: load_video(path, MediaLimits(max_video_seconds=1.0)), path, "found while decoding",
            "media.max_video_seconds")
    _raises(lambda: load_video(path, MediaLimits(max_video_frames=5)), path, "found while decoding",
            "media.max_video_frames")


def test_video_bad_inputs(tmp_path):
    text = tmp_path / "movie.mp4"
    text.write_text("definitely not a video\n" * 10)
    _raises(lambda: load_video(text), text, "not a video file", "text")
    _raises(lambda: load_media(text), text, "text")
    good = save_video(_clip(), tmp_path / "good.mp4")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises(lambda: load_video(truncated), truncated, "corrupt")
    corrupt = tmp_path / "bad.webm"
    corrupt.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8)
    _raises(lambda: load_video(corrupt), corrupt, "corrupt")
    wav = save_audio(_tone(0.2), tmp_path / "s.wav")
    renamed = tmp_path / "s.mp4"
    renamed.write_bytes(wav.read_bytes())
    _raises(lambda: load_video(renamed), renamed, "not a video file", "wav audio")
    audio_only = save_audio(_tone(0.2), tmp_path / "only.m4a")
    renamed_m4a = tmp_path / "only.mp4"
    renamed_m4a.write_bytes(audio_only.read_bytes())
    _raises(lambda: load_video(renamed_m4a), renamed_m4a, "not a video file")
    _raises(lambda: load_video(good, max_frames=0), good, "max_frames")
    _raises(lambda: save_video(_clip(), tmp_path / "v.flv"), tmp_path / "v.flv", "unsupported video file type")
    with pytest.raises(MediaError, match="uint8"):
        save_video(Video(np.zeros((2, 4, 4, 3), np.float32), 5.0), tmp_path / "f.mp4")


# ----------------------------------------------------------------------------- dispatch
def test_load_media_dispatch_and_detect_kind(tmp_path):
    img = save_image(_gradient_image(), tmp_path / "a.png")
    aud = save_audio(_tone(0.2), tmp_path / "a.wav")
    vid = save_video(_clip(t=2), tmp_path / "a.mp4")
    assert isinstance(load_media(img), Image.Image)
    assert isinstance(load_media(aud), Audio)
    assert isinstance(load_media(vid), Video)
    assert isinstance(load_media(aud, kind=Modality.AUDIO), Audio)
    # content wins over a wrong-but-same-kind suffix: a JPEG saved as .png still loads
    jpg = save_image(_gradient_image(), tmp_path / "b.jpg")
    mislabeled = tmp_path / "b.png"
    mislabeled.write_bytes(jpg.read_bytes())
    assert load_media(mislabeled).size == (32, 24) and probe(mislabeled).format == "jpeg"
    _raises(lambda: load_media(img, kind="video"), img, "not a video file")
    with pytest.raises(MediaError, match="unknown media kind"):
        load_media(img, kind="smell")
    text = tmp_path / "t.bin"
    text.write_text("plain text")
    _raises(lambda: detect_kind(text), text, "not a media file", "text")
    # detect_kind and probe read content only; validate and the loaders also require a known suffix
    odd_name = tmp_path / "upload.bin"
    odd_name.write_bytes(img.read_bytes())
    assert detect_kind(odd_name) == "image" and probe(odd_name).width == 32
    _raises(lambda: validate(odd_name), odd_name, "unsupported image file type '.bin'")
    _raises(lambda: load_media(odd_name), odd_name, "unsupported image file type '.bin'")


def test_opus_and_webm_audio_round_trip(tmp_path):
    a = _tone(0.5)
    for suffix in (".opus", ".weba"):
        path = save_audio(a, tmp_path / f"a{suffix}")
        assert detect_kind(path) == "audio"
        b = load_audio(path, sample_rate=16000)
        assert b.samples.shape[0] == 2 and abs(b.samples.shape[1] - 8000) < 1500
        assert _best_lag_corr(a.samples[0], b.samples[0]) > 0.9, suffix


def test_mp3_through_pyav_when_libsndfile_lacks_it(tmp_path, monkeypatch):
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    a = _tone(0.5)
    path = save_audio(a, tmp_path / "a.mp3")
    assert path.read_bytes()[:3] in (b"ID3",) or path.read_bytes()[0] == 0xFF
    b = load_audio(path)
    assert b.sample_rate == 16000 and b.samples.shape[0] == 2
    assert _best_lag_corr(a.samples[0], b.samples[0]) > 0.9


def test_damaged_files_raise_only_media_error(tmp_path):
    """Truncations and byte flips of valid files either load or raise MediaError; nothing else escapes."""
    rng = np.random.default_rng(0)
    files = [
        (save_image(_gradient_image(), tmp_path / "a.png"), "image"),
        (save_image(_gradient_image(), tmp_path / "a.jpg"), "image"),
        (save_image(_gradient_image(), tmp_path / "a.webp"), "image"),
        (save_audio(_tone(0.3), tmp_path / "a.wav"), "audio"),
        (save_audio(_tone(0.3), tmp_path / "a.flac"), "audio"),
        (save_audio(_tone(0.3), tmp_path / "a.ogg"), "audio"),
        (save_audio(_tone(0.3), tmp_path / "a.m4a"), "audio"),
        (save_video(_clip(t=4), tmp_path / "a.mp4"), "video"),
        (save_video(_clip(t=4, audio=False), tmp_path / "a.gif"), "video"),
    ]
    if HAS_MP3:
        files.append((save_audio(_tone(0.3), tmp_path / "a.mp3"), "audio"))
    if HAS_VPX:
        files.append((save_video(_clip(t=4), tmp_path / "a.webm"), "video"))
    refused = 0
    for path, kind in files:
        raw = path.read_bytes()
        for i in range(6):
            damaged = np.frombuffer(raw, np.uint8).copy()
            if i < 3:
                damaged = damaged[: int(len(raw) * (0.2 + 0.3 * i))]
            else:
                damaged[rng.integers(16, len(raw), size=8)] = rng.integers(0, 256, size=8)
            bad = tmp_path / f"bad{i}{path.suffix}"
            bad.write_bytes(damaged.tobytes())
            try:
                load_media(bad, kind=kind)
            except MediaError as e:
                assert bad.name in str(e)
                refused += 1
    assert refused >= len(files) * 3  # at least every truncation is caught


def test_decoded_size_limit(tmp_path):
    vid = save_video(_clip(t=8, audio=False), tmp_path / "v.mp4")
    tiny = MediaLimits(max_decoded_bytes=8 * 32 * 48 * 3 - 1)
    _raises(lambda: load_video(vid, tiny), vid, "8 frames × 48×32 RGB", "media.max_decoded_bytes")
    assert load_video(vid, tiny, max_frames=7).frames.shape[0] == 7
    aud = save_audio(_tone(1.0, 8000, 2), tmp_path / "a.wav")
    _raises(lambda: load_audio(aud, MediaLimits(max_decoded_bytes=1000)), aud, "media.max_decoded_bytes")


def test_media_info_command(tmp_path, capsys):
    import argparse
    import json

    parser = argparse.ArgumentParser()
    media.register(parser.add_subparsers())
    good = save_image(_gradient_image(), tmp_path / "a.png")
    text = tmp_path / "b.wav"
    text.write_text("text")
    args = parser.parse_args(["media-info", str(good), str(text), "--json"])
    assert args.func(args) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["ok"] and rows[0]["width"] == 32 and rows[0]["kind"] == "image"
    assert not rows[1]["ok"] and "b.wav" in rows[1]["error"]


def test_mp4_falls_back_to_mpeg4_when_h264_cannot_open(tmp_path, monkeypatch):
    real = media._write_av_video

    def no_h264(path, frames, rate, vcodec, audio, acodecs):
        if vcodec in ("libx264", "h264"):
            raise av.error.ExternalError(542398533, "Generic error in an external library")
        return real(path, frames, rate, vcodec, audio, acodecs)

    monkeypatch.setattr(media, "_write_av_video", no_h264)
    clip = _clip()
    path = save_video(clip, tmp_path / "v.mp4")
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    v = load_video(path)
    assert v.frames.shape == clip.frames.shape and np.abs(v.frames.astype(int) - clip.frames).mean() < 8


def test_audio_only_webm_and_mp4_are_audio(tmp_path):
    """Browser microphone recordings come as audio-only .webm (Opus) or .mp4 (AAC): the content decides."""
    for suffix in (".webm", ".mp4"):
        path = save_audio(_tone(0.3), tmp_path / f"mic{suffix}")
        assert detect_kind(path) == "audio"
        assert isinstance(load_media(path), Audio)
        _raises(lambda: load_video(path), path, "not a video file")
    _raises(lambda: save_video(_clip(), tmp_path / "v.ogv"), tmp_path / "v.ogv", "cannot write .ogv video")
