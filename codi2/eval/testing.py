"""Tiny fixtures for tests and smoke runs (nothing downloads).

Backbones: ``save_tiny_clip(dir)``, ``save_tiny_dino(dir)`` and ``save_tiny_audio_classifier(dir)`` write random
models in the real on-disk layouts, which :mod:`codi2.eval.features` loads exactly as it loads real checkpoints.
Data: ``make_dreambench(root)`` (DreamBench's layout) and ``make_edit_manifest(root, modality)`` (exemplar edits in
the codi2 manifest schema).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..media import Audio, save_audio, save_image


def _byte_vocab() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet (every byte gets a printable character)."""
    from codi2.encoders.tokenizer import byte_to_unicode

    return list(byte_to_unicode().values())


def save_tiny_clip(out_dir: "str | Path", seed: int = 0) -> Path:
    """A random CLIP (hidden 16, 1 layer, 32 px, projection 8) with a character-level CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    chars = _byte_vocab()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])  # character-level: no merges
    tok.save_pretrained(str(d))
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=vocab["<|endoftext|>"],
                         bos_token_id=vocab["<|startoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    CLIPModel(cfg).save_pretrained(str(d))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


def save_tiny_dino(out_dir: "str | Path", seed: int = 0) -> Path:
    """A random ViT (hidden 16, 1 layer, 32 px, patch 8) in the layout of a DINO ViT-S/16 conversion."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    d = Path(out_dir)
    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                    patch_size=8)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(str(d))
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


def save_tiny_audio_classifier(out_dir: "str | Path", seed: int = 0, num_labels: int = 5) -> Path:
    """A random Audio Spectrogram Transformer classifier (16 mel bins, 32 frames, hidden 16, 5 labels)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    d = Path(out_dir)
    torch.manual_seed(seed)
    cfg = ASTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8,
                    frequency_stride=8, time_stride=8, num_mel_bins=16, max_length=32, num_labels=num_labels,
                    id2label={i: f"class{i}" for i in range(num_labels)},
                    label2id={f"class{i}": i for i in range(num_labels)})
    ASTForAudioClassification(cfg).save_pretrained(str(d))
    ASTFeatureExtractor(num_mel_bins=16, max_length=32, sampling_rate=16000).save_pretrained(str(d))
    return d


# ----------------------------------------------------------------------------- data
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
