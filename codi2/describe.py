"""Parameter counts and memory estimates of a config, built on the meta device (no weights needed)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import ModelConfig
from .modality import ALL_MODALITIES, special_tokens

# Bytes per parameter of a quantized Linear weight, including bitsandbytes' block constants:
# 8-bit LLM.int8 keeps one fp32 scale per row (negligible); NF4 with double quantization
# costs ~0.127 extra bits per parameter (QLoRA paper, §3).
_BYTES = {"bf16": 2.0, "8bit": 1.0, "4bit": (4 + 0.127) / 8}


@dataclass
class Description:
    counts: dict[str, int]  # component -> parameters
    trainable: dict[str, int]  # trainable group -> parameters
    memory_gib: dict[str, float]  # weights-only inference memory per precision
    training_gib: dict[str, float]  # + grads and AdamW states (fp32) of the trainable parameters

    def to_dict(self) -> dict[str, Any]:
        return {"parameters": self.counts, "trainable": self.trainable, "memory_gib": self.memory_gib,
                "training_memory_gib": self.training_gib}

    def to_text(self) -> str:
        w = max(len(k) for k in list(self.counts) + list(self.trainable)) + 2
        lines = ["parameters"]
        lines += [f"  {k:<{w}} {v:>16,}" for k, v in self.counts.items()]
        lines.append("trainable")
        lines += [f"  {k:<{w}} {v:>16,}" for k, v in self.trainable.items()]
        lines.append("memory (weights only, GiB; the encoder and heads stay 16-bit, decoders load one at a time)")
        lines += [f"  {k:<{w}} {v:>16.2f}" for k, v in self.memory_gib.items()]
        lines.append("training memory (weights + fp32 grads and AdamW states of trainable parameters, GiB, before activations)")
        lines += [f"  {k:<{w}} {v:>16.2f}" for k, v in self.training_gib.items()]
        return "\n".join(lines)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: ModelConfig) -> Description:
    """Counts every component of ``cfg`` without allocating memory (meta device)."""
    from .encoders import ImageBindModel
    from .llm import llama_param_count
    from .projectors import InputProjector, OutputHead

    mods = [m for m in ALL_MODALITIES if m.value in cfg.modalities and cfg.modalities[m.value].enabled]
    n_out = {m: cfg.modalities[m.value].n_out for m in mods}
    n_new = len(special_tokens(n_out))
    llm = llama_param_count(cfg.llm, n_new_tokens=n_new)
    with torch.device("meta"):
        enc = ImageBindModel(cfg.encoder)
        d_enc = cfg.encoder.out_embed_dim
        d = cfg.llm.hidden_size
        proj = sum(_numel(InputProjector(d_enc, d, cfg.modalities[m.value].input_projector))
                   for m in mods if cfg.modalities[m.value].n_in > 0)
        heads = sum(_numel(OutputHead(d, n_out[m], cfg.modalities[m.value].head)) for m in mods if n_out[m] > 0)
    counts = {
        "encoder (ImageBind, frozen)": _numel(enc),
        "llm base (frozen)": llm["base"],
        "llm new token rows": llm["new_token_rows"],
        "lora": llm["lora"],
        "input projectors": proj,
        "output heads": heads,
    }
    counts["total"] = sum(counts.values())
    trainable = {"lora": llm["lora"], "new token rows": llm["new_token_rows"], "input projectors": proj,
                 "output heads": heads}
    trainable["total"] = sum(trainable.values())
    gib = 1024 ** 3
    # Quantization applies to the LLM's Linear layers (not embeddings, lm_head or norms).
    c = cfg.llm
    rest_llm = 2 * c.vocab_size * c.hidden_size + (2 * c.num_hidden_layers + 1) * c.hidden_size  # embeddings, lm_head, norms
    quantizable = llm["base"] - rest_llm
    small = counts["encoder (ImageBind, frozen)"] + proj + heads + llm["lora"] + llm["new_token_rows"]
    memory = {}
    for name, b in _BYTES.items():
        memory[f"llm {name} + rest bf16"] = (quantizable * b + (rest_llm + small) * 2) / gib
    training = {k: v + trainable["total"] * 16 / gib for k, v in memory.items()}
    return Description(counts, trainable, memory, training)
