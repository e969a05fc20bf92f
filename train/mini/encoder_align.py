"""Stage 1 of the mini recipe: align the ImageBind-architecture encoder with text as the bridge.

CoDi's bridging alignment, trained the ImageBind way: every non-text modality is pulled towards the
text embedding of its caption with a symmetric InfoNCE loss, so image, video and audio meet in the
text space without ever being paired with each other. The logits are
``text_post(embed_text) @ normalize(embed_m).T`` where ``text_post`` is the model's own text
postprocessor (L2 norm x learnable ``log_logit_scale``, clipped at 100), as in the reference
``ImageBindModel.forward``.

World captions vary in wording, and two samples in a batch often show the same object; such pairs are
both positives (multi-positive InfoNCE: the target row is uniform over every sample with equal
attributes), instead of false negatives.

Data: world (render, caption) pairs rendered on the fly (``train.mini.common.world_sample``), seeded.
Output: a reference-shaped ``state_dict`` ``.pth`` (loads strictly with
``codi2.encoders.load_imagebind_weights``) plus ``<out>.json`` with the architecture and the
held-out retrieval accuracy.

    codi2 train-component encoder configs/train/mini-encoder.yaml steps=200
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from codi2.config import ImageBindConfig, load_config, load_model_config
from codi2.io import atomic_write
from train.checkpointing import LoopCheckpoints, LoopClock, resumed_note
from train.mini.common import (WORLD_MODALITIES, all_objects, attrs_key, check_choice, file_digest, seed_everything,
                               set_threads, world_batch)

logger = logging.getLogger(__name__)


@dataclass
class EncoderAlignConfig:
    """Encoder alignment run.

    Attributes:
        model: model config (YAML path or preset) whose ``encoder`` section is the architecture.
        model_overrides: ``key=value`` overrides of that model config (e.g. ``encoder.vision_num_blocks=2``).
        out: the ``.pth`` written (relative to the current directory); ``<out>.json`` goes beside it.
        init: optional reference-shaped ``.pth`` to start from (resume / fine-tune).
        modalities: which of image, audio, video are aligned to text.
        steps / batch_size: optimiser steps; samples per modality per step.
        lr / weight_decay / warmup_steps / grad_clip: AdamW with linear warm-up then cosine decay.
        world_seed: world seed of the rendered data; ``seed``: torch seed (init, dropout).
        eval_n: held-out (test-split) queries per modality for the retrieval report (0: skip).
        eval_every: also evaluate every N steps (0: only at the end).
        pool_size: 0 renders every batch fresh; N > 0 renders N samples per modality once (preprocessed,
            kept in memory as float16) and draws every batch from that pool (5-10x faster steps on a CPU).
        num_threads: torch intra-op threads (0: torch default).
        checkpoint_every: write the loop's state (weights, optimiser, generators, losses) to
            ``.<out name>.resume`` beside ``out`` every this many steps, so that a killed run started again with the
            same settings goes on from there and writes the same weights (0: no checkpoints).
        resume: go on from that state when it holds this run's (false: discard it and start over).
    """

    model: str = "configs/model/mini.yaml"
    model_overrides: list[str] = field(default_factory=list)
    out: str = "runs/mini/encoder.pth"
    init: Optional[str] = None
    modalities: list[str] = field(default_factory=lambda: list(WORLD_MODALITIES))
    steps: int = 3000
    batch_size: int = 48
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    world_seed: int = 0
    eval_n: int = 200
    eval_every: int = 0
    log_every: int = 50
    pool_size: int = 0
    num_threads: int = 0
    checkpoint_every: int = 200
    resume: bool = True


# ----------------------------------------------------------------------------- batches
def _media_tensor(pre, modality: str, media: list) -> torch.Tensor:
    """Preprocessed inputs: image (B, 3, S, S); audio (B, clips, 1, mel, T); video (B, clips, 3, F, S, S)."""
    if modality == "image":
        return pre.images(media)
    if modality == "audio":
        return torch.stack([pre.audio(a) for a in media])
    return torch.stack([pre.video(v) for v in media])


def embed_media(model, modality: str, x: torch.Tensor) -> torch.Tensor:
    """Raw head output (before the postprocessor): (B, out_dim); clips are averaged as in the reference."""
    name = "vision" if modality in ("image", "video") else "audio"
    if modality == "image":
        return model.embed(name, x)
    b, s = x.shape[:2]
    return model.embed(name, x.flatten(0, 1)).reshape(b, s, -1).mean(dim=1)


def contrastive_loss(model, text_embed: torch.Tensor, media_embed: torch.Tensor, keys: Sequence[tuple]
                     ) -> tuple[torch.Tensor, float]:
    """Symmetric multi-positive InfoNCE between caption and media embeddings.

    Args:
        text_embed: (B, D) raw text head output (the text postprocessor applies norm x logit scale).
        media_embed: (B, D) raw media head output (L2-normalised here).
        keys: per-sample attribute keys; equal keys are positives of each other.

    Returns:
        (loss, media->text top-1 accuracy in the batch, counting any positive as right)
    """
    logits = model.modality_postprocessors["text"](text_embed) @ F.normalize(media_embed, dim=-1).T  # (B_text, B_media)
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    label = torch.tensor([ids[k] for k in keys], device=logits.device)
    pos = (label[:, None] == label[None, :]).float()  # (B, B), symmetric
    target = pos / pos.sum(dim=1, keepdim=True)
    loss_t2m = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_m2t = torch.sum(-target * F.log_softmax(logits.T, dim=1), dim=1).mean()
    acc = float(pos[logits.T.argmax(dim=1), torch.arange(len(keys))].mean()) if len(keys) else 0.0
    return 0.5 * (loss_t2m + loss_m2t), acc


class WorldPool:
    """Preprocessed world samples of one modality, rendered once: inputs (N, ...) float16, captions, keys.

    Every sample keeps its caption wording; batches are drawn uniformly with a seeded generator.
    """

    def __init__(self, pre, modality: str, n: int, world_seed: int, chunk: int = 64):
        self.modality = modality
        xs, self.captions, self.keys = [], [], []
        for start in tqdm(range(0, n, chunk), desc=f"render {modality} pool", unit="chunk", leave=False):
            samples = world_batch(modality, start, min(chunk, n - start), world_seed, "train")
            xs.append(_media_tensor(pre, modality, [s.media for s in samples]).half())
            self.captions += [s.caption for s in samples]
            self.keys += [attrs_key(s.attrs) for s in samples]
        self.x = torch.cat(xs)

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, list[str], list[tuple]]:
        idx = torch.randint(len(self), (n,), generator=g).tolist()
        return self.x[idx].float(), [self.captions[i] for i in idx], [self.keys[i] for i in idx]


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def retrieval_accuracy(model, enc_cfg: ImageBindConfig, modality: str, n: int, world_seed: int,
                       split: str = "test", batch_size: int = 50) -> dict[str, float]:
    """Media -> text retrieval over the canonical caption of every object the modality can express.

    Queries are ``n`` held-out renders (``split``); the candidates are all 240 (image), 48 (audio) or
    192 (video) canonical captions. ``top1`` = the retrieved caption names exactly the query's attributes;
    ``<attr>`` = that attribute of the retrieved caption is right.
    """
    from codi2.encoders import ImageBindPreprocessor
    from data_builders.world import world

    was_training = model.training
    model.eval()
    pre = ImageBindPreprocessor(enc_cfg)
    objs = all_objects(modality)
    captions = [world.caption(modality, o, d) for o, d in objs]
    cand_attrs = [({**o.attrs(modality), "direction": d} if d else o.attrs(modality)) for o, d in objs]
    text = F.normalize(torch.cat([model.embed("text", pre.text(captions[i:i + 256]))
                                  for i in range(0, len(captions), 256)]), dim=-1)  # (C, D)
    hits, per_attr, total = 0, {}, 0
    for start in range(0, n, batch_size):
        samples = world_batch(modality, start, min(batch_size, n - start), world_seed, split, canonical=True)
        x = _media_tensor(pre, modality, [s.media for s in samples])
        pred = (F.normalize(embed_media(model, modality, x), dim=-1) @ text.T).argmax(dim=1)
        for s, p in zip(samples, pred.tolist()):
            got = cand_attrs[p]
            hits += int(attrs_key(got) == attrs_key(s.attrs))
            for a, v in s.attrs.items():
                per_attr[a] = per_attr.get(a, 0) + int(got.get(a) == v)
            total += 1
    model.train(was_training)
    return {"top1": hits / total, **{a: v / total for a, v in per_attr.items()}, "n": total, "candidates": len(objs)}


# ----------------------------------------------------------------------------- training
def _lr_at(step: int, cfg: EncoderAlignConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def encoder_config(cfg: EncoderAlignConfig) -> ImageBindConfig:
    """The architecture to train: the model config's encoder section, without its weights path."""
    import dataclasses

    enc = load_model_config(cfg.model, cfg.model_overrides).encoder
    return dataclasses.replace(enc, weights=None, dtype="float32")


def resume_fingerprint(cfg: EncoderAlignConfig) -> dict:
    """What makes an alignment run the same run for resuming (:class:`~train.checkpointing.LoopCheckpoints`): the
    architecture, the settings that change the weights, and the digest of ``init``. Logging, evaluation, threads and
    the paths (``out``, ``init``: its contents count) are left out, so a moved run folder still resumes."""
    skip = {"eval_n", "eval_every", "log_every", "num_threads", "checkpoint_every", "resume", "out", "init"}
    return {"encoder": asdict(encoder_config(cfg)), "run": {k: v for k, v in asdict(cfg).items() if k not in skip},
            "starts_from": {"init": file_digest(Path(cfg.init))} if cfg.init is not None else {}}


def train_encoder(cfg: EncoderAlignConfig) -> dict:
    """Trains the encoder and writes ``cfg.out`` (+ ``.json``). Returns the report (also in the json).

    Report: ``steps``, ``seconds``, ``seconds_per_step``, ``final_loss`` {modality}, ``retrieval``
    {modality: :func:`retrieval_accuracy`}, ``encoder`` (the architecture), ``params``; ``resumed_after_step``
    when the run went on from a checkpoint (``seconds`` then adds up every run's).
    """
    from codi2.encoders import ImageBindModel, ImageBindPreprocessor, load_imagebind_weights

    for m in cfg.modalities:
        check_choice("modalities[]", m, WORLD_MODALITIES)
    if not cfg.modalities:
        raise ValueError("modalities is empty; allowed: image, audio, video")
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError(f"steps = {cfg.steps}, batch_size = {cfg.batch_size}; need steps >= 1 and batch_size >= 2")
    set_threads(cfg.num_threads)
    out = Path(cfg.out)
    ckpt = LoopCheckpoints(out.with_name(f".{out.name}.resume"), resume_fingerprint(cfg), cfg.checkpoint_every,
                           cfg.resume)
    seed_everything(cfg.seed)
    enc_cfg = encoder_config(cfg)
    model = ImageBindModel(enc_cfg, frozen=False).train()
    if cfg.init is not None:
        load_imagebind_weights(model, cfg.init)
    pre = ImageBindPreprocessor(enc_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    n_params = sum(p.numel() for p in params)
    logger.info("encoder alignment: %s params, modalities %s, %d steps x %d", f"{n_params:,}", cfg.modalities,
                cfg.steps, cfg.batch_size)

    pools: dict[str, WorldPool] = {}
    if cfg.pool_size > 0:
        t_pool = time.time()
        pools = {m: WorldPool(pre, m, cfg.pool_size, cfg.world_seed) for m in cfg.modalities}
        logger.info("rendered pools of %d samples per modality in %.1f s", cfg.pool_size, time.time() - t_pool)
    g = torch.Generator().manual_seed(cfg.seed)
    state = ({"model": model}, opt, {"g": g})
    done, extra = ckpt.restore("align", *state)
    history: dict[str, list[float]] = extra.get("history", {m: [] for m in cfg.modalities})
    evals: list[dict] = extra.get("evals", [])
    clock = LoopClock(extra)
    bar = tqdm(range(done, cfg.steps), initial=done, total=cfg.steps, desc="encoder", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        total = torch.zeros(())
        accs = {}
        for k, m in enumerate(cfg.modalities):
            if pools:
                x, captions, keys = pools[m].batch(cfg.batch_size, g)
            else:  # each (step, modality) renders a disjoint block of sample indices
                start = (step * len(WORLD_MODALITIES) + WORLD_MODALITIES.index(m)) * cfg.batch_size
                samples = world_batch(m, start, cfg.batch_size, cfg.world_seed, "train")
                x = _media_tensor(pre, m, [s.media for s in samples])
                captions, keys = [s.caption for s in samples], [attrs_key(s.attrs) for s in samples]
            text = model.embed("text", pre.text(captions))
            loss, accs[m] = contrastive_loss(model, text, embed_media(model, m, x), keys)
            total = total + loss / len(cfg.modalities)
            history[m].append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        bar.set_postfix(loss=f"{float(total.detach()):.3f}", **{f"acc_{m}": f"{a:.2f}" for m, a in accs.items()})
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            scale = float(model.modality_postprocessors["text"][1].log_logit_scale.exp())
            logger.info("step %d: loss %.4f, batch acc %s, logit scale %.1f", step + 1, float(total.detach()),
                        {m: round(a, 3) for m, a in accs.items()}, scale)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps and cfg.eval_n > 0:
            evals.append({"step": step + 1, **{m: retrieval_accuracy(model, enc_cfg, m, cfg.eval_n, cfg.world_seed)
                                               for m in cfg.modalities}})
            logger.info("eval at step %d: %s", step + 1, evals[-1])
        ckpt.save("align", step + 1, cfg.steps, *state, {"history": history, "evals": evals, **clock.totals()})
    seconds, cpu_seconds = clock.totals().values()
    retrieval = {}
    if cfg.eval_n > 0:
        retrieval = {m: retrieval_accuracy(model, enc_cfg, m, cfg.eval_n, cfg.world_seed) for m in cfg.modalities}
        logger.info("held-out retrieval (media -> text, top-1): %s", {m: r["top1"] for m, r in retrieval.items()})

    model.eval()
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save(weights, tmp))
    report = {"steps": cfg.steps, "batch_size": cfg.batch_size, "seconds": round(seconds, 1),
              "seconds_per_step": round(seconds / cfg.steps, 4),
              "cpu_seconds_per_step": round(cpu_seconds / cfg.steps, 4), "threads": torch.get_num_threads(),
              "params": n_params,
              "final_loss": {m: v[-1] for m, v in history.items()}, "retrieval": retrieval, "evals": evals,
              "encoder": asdict(enc_cfg), "config": asdict(cfg), **resumed_note(done)}
    tmp = out.with_name(f".{out.name}.json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out.with_name(out.name + ".json"))
    ckpt.clear()
    logger.info("saved encoder to %s (%.1f s, %.3f s/step)", out, seconds, seconds / cfg.steps)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m train.mini.encoder_align CONFIG [key=value …]``."""
    from train.mini import run_stage

    return run_stage("encoder", argv)


if __name__ == "__main__":
    raise SystemExit(main())
