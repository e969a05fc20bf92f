"""The training step shared by the plain PyTorch engine and the DeepSpeed engine.

:func:`training_forward` is :meth:`codi2.model.CoDi2Model.forward` with one difference that data
parallelism needs: *every* input projector and output head runs on every rank, in a fixed order
(the model's modality order), whether or not this rank's batch holds that modality. ZeRO-3 gathers
a module's partitioned weights with a collective call when the module runs, so ranks whose batches
differ in their input media must still run the same modules in the same order; a modality absent
from this rank's batch runs on one zero row and adds ``0 × output`` to the loss (same loss value,
zero gradient). The losses are those of ``CoDi2Model.forward`` (the text loss computed on the supervised
positions only: :func:`supervised_text_loss`; a test checks the two forwards agree).

:class:`TrainModule` is what the engines wrap: the LLM, projectors and heads, *not* the frozen
encoder (so DeepSpeed neither partitions nor casts it, and encoding input media in the data path
needs no collective call).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from codi2.losses import IGNORE_INDEX
from codi2.model import Batch, CoDi2Model, CoDi2Output, span_positions


def supervised_text_loss(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`codi2.losses.text_loss` computed with the LM head applied only where the next token is supervised.

    Equal to ``text_loss(lm_head(hidden), labels)`` but the (B, T, V) logits are never built: only (N, V) for the
    N supervised positions (assistant tokens), which saves most of the LM head's time and memory in training
    (at Llama-2's V = 32000, fp32 logits of a 16 × 2048 batch are 4 GiB).

    Args:
        lm_head: the LLM's output layer.
        hidden: (B, T, D) final hidden states.
        labels: (B, T) with -100 where unsupervised.
    Returns:
        The mean cross-entropy over supervised tokens (a zero that still ran the head when there are none).
    """
    target = labels[:, 1:].to(hidden.device)  # (B, T-1): position t predicts token t+1
    sel = target != IGNORE_INDEX
    if not bool(sel.any()):  # still run the head (ZeRO-3: every rank runs the same modules)
        return lm_head(hidden[:1, :1]).float().sum() * 0.0
    logits = lm_head(hidden[:, :-1][sel])  # (N, V)
    return F.cross_entropy(logits.float(), target[sel])


def training_forward(model: CoDi2Model, batch: Batch, all_modules: bool = True) -> CoDi2Output:
    """Text CE + feature losses (+ diffusion losses), running every projector and head once.

    Args:
        model: the CoDi-2 model.
        batch: from :meth:`CoDi2Model.collate`, on the model's device.
        all_modules: run the projectors and heads of modalities absent from the batch on a zero row (needed
            with several processes; one process skips them, which changes no loss and no gradient).
    Returns:
        :class:`CoDi2Output` with ``loss`` and ``parts`` (``text``, ``feature/<m>``, ``diffusion/<m>``, ``total``).
    """
    emb = model.llm.embed(batch.input_ids)  # (B, T, D)
    zero = emb.new_zeros(())
    for m in model.modalities:
        if m.value not in model.projectors:
            continue
        proj_mod = model.projectors[m.value]
        dtype = proj_mod.net[0].weight.dtype
        s = batch.inputs.get(m)
        if s is None:  # not in this rank's batch: run on one zero row so every rank runs the same modules
            if not all_modules:
                continue
            zero = zero + 0.0 * proj_mod(torch.zeros(1, 1, proj_mod.d_in, device=emb.device, dtype=dtype)).sum()
            continue
        proj = proj_mod(s.features.to(device=emb.device, dtype=dtype))  # (N, n_in, D)
        rows, cols = span_positions(s, model.n_in[m])
        emb = emb.index_put((rows, cols), proj.to(emb.dtype))
    # Only the last position's logits here (1 row per sequence); the LM head runs again below on the supervised
    # positions alone, which is where the text loss needs it.
    _, hidden, _ = model.llm.forward(inputs_embeds=emb, attention_mask=batch.attention_mask, logits_to_keep=1)
    loss = supervised_text_loss(model.llm.base.lm_head, hidden, batch.labels)
    parts = {"text": float(loss.detach())}
    for m in model.modalities:
        if m.value not in model.heads:
            continue
        head = model.heads[m.value]
        dtype = head.trunk[0].weight.dtype
        s = batch.outputs.get(m)
        if s is None:
            if not all_modules:
                continue
            dummy = head(torch.zeros(1, model.n_out[m], model.llm.hidden_size, device=hidden.device, dtype=dtype))
            zero = zero + 0.0 * sum(v.float().sum() for v in dummy.values())
            continue
        loss = loss + model.head_loss(m, s, hidden, parts)
    loss = loss + zero.to(loss.dtype)
    parts["total"] = float(loss.detach())
    return CoDi2Output(loss, parts)


class TrainModule(nn.Module):
    """The trainable part of a :class:`CoDi2Model` as one module: ``llm``, ``projectors``, ``heads``.

    The encoder is deliberately not a submodule (see the module docstring). ``forward(batch)`` runs
    :func:`training_forward` on the full model (``all_modules``: True with several processes).
    """

    def __init__(self, model: CoDi2Model, all_modules: bool = True):
        super().__init__()
        self.all_modules = all_modules  # see training_forward
        self.llm = model.llm
        self.projectors = model.projectors
        self.heads = model.heads
        self.__dict__["codi2"] = model  # a plain reference: not registered, so the encoder stays outside

    def forward(self, batch: Batch) -> CoDi2Output:
        return training_forward(self.__dict__["codi2"], batch, self.all_modules)


def set_stage(model: CoDi2Model, stage: str, freeze: Sequence[str] = ()) -> dict[str, list[nn.Parameter]]:
    """Freezes everything the stage does not train; returns the trainable parameters by group.

    ``projector_alignment``: new token rows, projectors, heads (LoRA frozen).
    ``instruction_tuning``: LoRA, new token rows, projectors, heads.
    The encoder and the base LLM weights are frozen in both; ``freeze`` names groups to freeze as well.
    """
    groups = model.trainable_parameters()
    if stage not in ("projector_alignment", "instruction_tuning"):
        raise ValueError(f"stage = {stage!r}; allowed: projector_alignment, instruction_tuning")
    unknown = [g for g in freeze if g not in groups]
    if unknown:
        raise ValueError(f"freeze: unknown parameter groups {unknown}; allowed: {', '.join(groups)}")
    for name in (["lora"] if stage == "projector_alignment" else []) + list(freeze):
        for p in groups[name]:
            p.requires_grad_(False)
        groups[name] = []
    if not any(groups.values()):
        raise ValueError(f"stage {stage!r} with freeze = {list(freeze)} leaves nothing to train")
    keep = {id(p) for g in groups.values() for p in g}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
    return groups


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters: decay on matrices, none on biases, norms and token rows."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "trainable_tokens_delta" in name else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
