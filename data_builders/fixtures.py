"""Tiny synthetic corpora in every layout the readers take (for tests, benchmarks and as a layout reference).

Every writer is deterministic in its seed and returns what to pass as ``--input``. Media are small random
images (PNG/JPEG), noise audio (WAV) and, where asked, short videos (MP4 via :func:`codi2.media.save_video`).
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
THINGS = ("cat", "dog", "car", "tree", "house", "boat", "bird", "lamp")
SOUNDS = ("a dog barks", "rain falls on a roof", "a bell rings", "a car passes by", "people talk", "a bird sings")


def caption(i: int) -> str:
    """Distinct captions for i < 64: ``a red cat on a table``, ``an orange cat on a table`` …"""
    colour = COLOURS[i % len(COLOURS)]
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {THINGS[(i // len(COLOURS)) % len(THINGS)]} on a table"


def image_bytes(seed: int, size: int = 24, fmt: str = "PNG") -> bytes:
    """A random RGB image encoded as PNG or JPEG."""
    from PIL import Image

    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def audio_bytes(seed: int, seconds: float = 0.25, sample_rate: int = 16000) -> bytes:
    """Noise as a 16-bit PCM WAV."""
    import soundfile as sf

    x = (np.random.default_rng(seed).standard_normal(int(seconds * sample_rate)) * 0.1).astype("float32")
    buf = io.BytesIO()
    sf.write(buf, x, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def video_bytes(seed: int, frames: int = 4, size: int = 16, tmp_dir: Union[str, Path] = ".") -> bytes:
    """A few random frames as an MP4 (written through :func:`codi2.media.save_video`)."""
    from codi2.media import Video, save_video

    arr = (np.random.default_rng(seed).random((frames, size, size, 3)) * 255).astype("uint8")
    p = Path(tmp_dir) / f".video-{seed}.mp4"
    save_video(Video(arr, 4.0), p)
    data = p.read_bytes()
    p.unlink()
    return data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def webdataset_shards(root: Union[str, Path], n_shards: int = 2, per_shard: int = 4, seed: int = 0,
                      kinds: Sequence[str] = ("image",), duplicate: bool = True, broken: bool = True,
                      image_size: int = 24) -> list[Path]:
    """``root/shard-00000.tar`` …: samples ``{key}.jpg|png`` (+ ``.wav``, ``.mp4`` for those kinds), ``{key}.txt``
    and ``{key}.json`` (``license``, ``url``). With ``duplicate``, the last sample of the last shard repeats the
    first sample's media bytes; with ``broken``, the first shard gets one extra sample whose image is garbage.

    Returns:
        The tar paths.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths, n = [], 0
    first_media: dict[str, bytes] = {}
    for s in range(n_shards):
        path = root / f"shard-{s:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(per_shard):
                key = f"{s:03d}{i:05d}"
                media = {}
                if "image" in kinds:
                    media["jpg" if n % 2 else "png"] = image_bytes(seed * 100003 + n, image_size,
                                                                   "JPEG" if n % 2 else "PNG")
                if "audio" in kinds:
                    media["wav"] = audio_bytes(seed * 100003 + n)
                if "video" in kinds:
                    media["mp4"] = video_bytes(seed * 100003 + n, tmp_dir=root)
                if duplicate and s == n_shards - 1 and i == per_shard - 1 and first_media:
                    media = dict(first_media)
                if not first_media:
                    first_media = dict(media)
                for ext, data in sorted(media.items()):
                    _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.json", json.dumps({"license": "CC-BY-4.0", "url": f"http://example.com/{key}"}).encode())
                _add(tar, f"{key}.txt", caption(n).encode())
                n += 1
            if broken and s == 0:
                key = f"{s:03d}{per_shard:05d}"
                _add(tar, f"{key}.png", b"\x89PNG\r\n\x1a\n this is not an image")
                _add(tar, f"{key}.txt", b"a broken image")
        paths.append(path)
    return paths


def table_corpus(root: Union[str, Path], fmt: str = "csv", n: int = 6, seed: int = 0, audio: bool = True,
                 subjects: int = 0) -> Path:
    """``root/metadata.{csv,jsonl,json,parquet}`` with columns ``key, caption, image_path[, audio_path][, subject],
    license`` and the media in ``root/media/``; one row names a missing file. ``subjects`` > 0: rows cycle
    through that many subject names (``subject`` column) for subject-driven conversations."""
    root = Path(root)
    (root / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (root / "media" / f"{i:04d}.png").write_bytes(image_bytes(seed * 7919 + i))
        row = {"key": f"row{i:04d}", "caption": caption(i), "image_path": f"media/{i:04d}.png", "license": "CC0-1.0"}
        if audio:
            (root / "media" / f"{i:04d}.wav").write_bytes(audio_bytes(seed * 7919 + i))
            row["audio_path"] = f"media/{i:04d}.wav"
        if subjects:
            row["subject"] = f"toy {i % subjects}"
        rows.append(row)
    rows.append({**rows[0], "key": "missing", "image_path": "media/does-not-exist.png", "caption": "a missing picture"})
    path = root / f"metadata.{fmt}"
    _write_rows(path, rows)
    return path


def _write_rows(path: Path, rows: list[dict]) -> None:
    fmt = path.suffix[1:]
    if fmt == "csv":
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, cols)
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(f"unknown table format {fmt!r}; allowed: csv, jsonl, json, parquet")


def audiocaps_corpus(root: Union[str, Path], n: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """``root/train.csv`` (``audiocap_id,youtube_id,start_time,caption``) and ``root/audio/{youtube_id}_{start}.wav``;
    the last row's clip is missing. Returns ``(csv, audio folder)``."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        yt, start = f"yt{i:08d}AB", 10 * i
        if i < n - 1:
            (root / "audio" / f"{yt}_{start}.wav").write_bytes(audio_bytes(seed * 31 + i))
        rows.append({"audiocap_id": str(1000 + i), "youtube_id": yt, "start_time": f"{start}.0",
                     "caption": SOUNDS[i % len(SOUNDS)]})
    path = root / "train.csv"
    _write_rows(path, rows)
    return path, root / "audio"


def instructpix2pix_corpus(root: Union[str, Path], n_folders: int = 3, seeds_per_folder: int = 3,
                           seed: int = 0) -> Path:
    """``root/{prompt_id}/prompt.json`` + ``{seed}_0.jpg`` / ``{seed}_1.jpg`` pairs."""
    root = Path(root)
    edits = ["make it blue", "add snow", "turn it into a painting", "make it night"]
    for f in range(n_folders):
        d = root / f"{f:07d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "prompt.json").write_text(json.dumps({"input": caption(f), "edit": edits[f % len(edits)],
                                                   "output": caption(f) + ", " + edits[f % len(edits)]}))
        for k in range(seeds_per_folder):
            s = 1000 + 17 * k
            (d / f"{s}_0.jpg").write_bytes(image_bytes(seed * 997 + f * 100 + 2 * k, fmt="JPEG"))
            (d / f"{s}_1.jpg").write_bytes(image_bytes(seed * 997 + f * 100 + 2 * k + 1, fmt="JPEG"))
    return root


AUDIT_INSTRUCTIONS = ("Add the sound of a dog barking", "Drop the rain", "Add a bell ringing", "Drop the wind",
                      "Add birds singing", "Drop the traffic noise", "Add a door knock", "Drop the music")


def audit_corpus(root: Union[str, Path], n: int = 4, seed: int = 0, chain: bool = True, groups: int = 2) -> Path:
    """``root/edits.csv`` (``id, input_audio, edit_instruction, output_audio, edit_type``) and ``root/wav/``.
    Rows cycle through the first ``groups`` (<= 8) of :data:`AUDIT_INSTRUCTIONS`, alternately add and drop (so
    in-context groups have members); with ``chain`` the second row's input is the first row's output (a
    multi-round chain)."""
    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    instr = list(AUDIT_INSTRUCTIONS[:groups])
    rows = []
    for i in range(n):
        src, dst = f"wav/in{i}.wav", f"wav/out{i}.wav"
        if chain and i == 1:
            src = rows[0]["output_audio"]
        else:
            (root / src).write_bytes(audio_bytes(seed * 13 + 2 * i))
        (root / dst).write_bytes(audio_bytes(seed * 13 + 2 * i + 1))
        rows.append({"id": f"edit{i}", "input_audio": src, "edit_instruction": instr[i % len(instr)],
                     "output_audio": dst, "edit_type": "add" if i % len(instr) % 2 == 0 else "drop"})
    path = root / "edits.csv"
    _write_rows(path, rows)
    return path
