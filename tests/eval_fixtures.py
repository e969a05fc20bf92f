"""Tiny evaluation data generated in the tests: a DreamBench-layout folder and edit manifests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from codi2.media import Audio, save_audio, save_image

PROMPTS_AND_CLASSES = """Classes

subject_name,class
red_toy,toy
dog,dog

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} in the snow'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a wet {0} {1}'.format(unique_token, class_token)
]
"""


def _img(seed: int, size: int = 32) -> Image.Image:
    r = np.random.default_rng(seed)
    return Image.fromarray((r.random((size, size, 3)) * 255).astype("uint8"))


def _aud(seed: int, seconds: float = 0.5) -> Audio:
    r = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * r.standard_normal(t.shape)
    return Audio(wave[None].astype("float32"), 16000)


def make_dreambench(root: Path) -> Path:
    """``root/dataset/<subject>/0{0,1,2}.jpg`` + ``root/dataset/prompts_and_classes.txt``."""
    ds = root / "dataset"
    for i, s in enumerate(("red_toy", "dog")):
        (ds / s).mkdir(parents=True, exist_ok=True)
        for j in range(3):
            save_image(_img(10 * i + j), ds / s / f"{j:02d}.jpg")
    (ds / "prompts_and_classes.txt").write_text(PROMPTS_AND_CLASSES)
    return root


def make_edit_manifest(root: Path, modality: str, n: int = 3, pairs: int = 2) -> Path:
    """``n`` exemplar-edit records (``pairs`` pairs each) in the codi2 manifest schema."""
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    tasks = ("add", "drop", "replace")
    lines = []
    for i in range(n):
        def put(name: str, seed: int) -> str:
            if modality == "image":
                save_image(_img(seed), media / f"{name}.png")
                return f"media/{name}.png"
            save_audio(_aud(seed), media / f"{name}.wav")
            return f"media/{name}.wav"

        user = [{"type": "text", "text": "Look at these examples."}]
        for k in range(pairs):
            user += [{"type": modality, "path": put(f"{i}-a{k}", 100 * i + 2 * k)},
                     {"type": modality, "path": put(f"{i}-a{k}e", 100 * i + 2 * k + 1)}]
        user += [{"type": "text", "text": "Now do the same to this one:"},
                 {"type": modality, "path": put(f"{i}-b", 100 * i + 50), "caption": "a red circle"}]
        reply = [{"type": "text", "text": "Here:"},
                 {"type": modality, "path": put(f"{i}-be", 100 * i + 51), "caption": "a blue circle"}]
        lines.append({"schema": 1, "id": f"edit-{i:03d}", "source": "test",
                      "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
                      "meta": {"task": tasks[i % 3] if modality == "audio" else "colour"}})
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path
