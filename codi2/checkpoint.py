"""Checkpoints of codi2's own trainable weights (projectors and heads) in safetensors.

The LoRA adapter and the new token rows are stored by peft in its standard format
(``adapter/``); this module stores the rest and checks keys strictly: a checkpoint that misses
any projector or head weight is an error that names every missing key (NExT-GPT's released
checkpoint silently lacked its projectors; here that cannot happen).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

PROJECTORS_HEADS_FILE = "projectors_heads.safetensors"
# Statistics a head learns while it trains (not weights): a checkpoint saved before they existed may
# lack them; they then keep the model's initial value (``target_norm`` 0: outputs are not rescaled).
OPTIONAL_SUFFIXES = (".target_norm",)


class CheckpointError(RuntimeError):
    """A checkpoint does not match the model: names the file and the offending keys."""


def _prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``projectors.*`` and ``heads.*`` of a CoDi2Model (detached, contiguous, CPU)."""
    sd = {**_prefixed("projectors", model.projectors), **_prefixed("heads", model.heads)}
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_trainable(model: nn.Module, path: "str | Path") -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(trainable_state_dict(model), str(tmp), metadata={"format": "codi2", "kind": "projectors_heads"})
    tmp.replace(path)  # atomic: a crash never leaves a half-written file under the real name
    return path


def check_keys(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], where: str) -> None:
    """Raises :class:`CheckpointError` on missing, unexpected or mis-shaped keys (all named)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shape = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape))
    if missing or unexpected or shape:
        msg = [f"{where} does not match the model:"]
        if missing:
            msg.append(f"  missing {len(missing)} keys: {', '.join(missing)}")
        if unexpected:
            msg.append(f"  unexpected {len(unexpected)} keys: {', '.join(unexpected)}")
        for k in shape:
            msg.append(f"  {k}: checkpoint shape {tuple(found[k].shape)}, model shape {tuple(expected[k].shape)}")
        msg.append("  The checkpoint was saved from a model with a different config, or is incomplete.")
        raise CheckpointError("\n".join(msg))


def load_trainable(model: nn.Module, path: "str | Path") -> None:
    """Loads projectors and heads strictly from ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a codi2 checkpoint must contain the projector and head weights")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    expected = trainable_state_dict(model)
    absent = sorted(k for k in expected if k.endswith(OPTIONAL_SUFFIXES) and k not in sd)
    sd = {**{k: expected[k] for k in absent}, **sd}
    check_keys(expected, sd, str(path))
    if absent:
        logger.info("%s has no %s (saved before codi2 tracked them): kept at their initial values",
                    path, ", ".join(absent))
    proj = {k[len("projectors."):]: v for k, v in sd.items() if k.startswith("projectors.")}
    heads = {k[len("heads."):]: v for k, v in sd.items() if k.startswith("heads.")}
    model.projectors.load_state_dict(proj, strict=True)
    model.heads.load_state_dict(heads, strict=True)
