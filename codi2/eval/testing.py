"""Tiny random metric backbones saved in the real on-disk layouts (tests, smoke runs; nothing downloads).

``save_tiny_clip(dir)``, ``save_tiny_dino(dir)`` and ``save_tiny_audio_classifier(dir)`` write directories that
:mod:`codi2.eval.features` loads exactly as it loads real checkpoints (``from_pretrained`` of a local dir).
"""
from __future__ import annotations

from pathlib import Path

import torch


def _byte_vocab() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet (every byte gets a printable character)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


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
