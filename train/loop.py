"""The CoDi-2 trainer: one code path for ``python -m train`` (plain PyTorch, one process) and
``deepspeed train/train.py`` (DeepSpeed ZeRO-2/3, any number of processes).

Per micro-batch, on every rank:

1. the phase sampler gives this rank's indices of the step's phase (every rank in the same phase);
2. records are loaded; a record that fails (:class:`~codi2.data.RecordError`, a missing target, too
   long) is skipped, counted and logged, and replaced by another record of the same phase chosen
   deterministically from ``(seed, step, rank)``; the counts are summed over ranks and the run stops
   with :class:`~codi2.data.TooManyBadRecords` past ``data.max_bad_fraction``;
3. forward (:func:`train.step.training_forward`); a non-finite loss on any rank makes every rank skip
   the micro-batch (no backward, no optimizer update), counts it, and stops the run with
   :class:`NonFiniteLossError` after ``max_nonfinite_in_a_row``;
4. backward and (every ``grad_accum`` micro-batches) an optimizer step.

Logged per step to ``{output_dir}/logs/rank-{r}.jsonl`` (every rank: its own losses, phase and
tokens), to TensorBoard (rank 0: ``loss/<phase>/<term>``, ``lr``, ``tokens_per_s`` …) and to the
console (tqdm: loss, tokens/s, phase). Checkpoints: :mod:`train.checkpointing`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from codi2.config import load_config, load_model_config
from codi2.data import BadRecordCounter, ManifestDataset, Record, RecordError, TooManyBadRecords, group_by_phase
from codi2.io import setup_logging
from codi2.media import MediaError
from codi2.modality import Modality

from . import checkpointing as ckpt
from .config import TrainConfig
from .phases import PhaseSampler, seed_for
from .step import TrainModule, param_groups, set_stage

log = logging.getLogger("train")

MAX_REPLACEMENT_TRIES = 16


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row."""


# ----------------------------------------------------------------------------- distributed helpers
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _dist_on():
        dist.barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sums a few numbers over ranks (float64 on CPU with gloo, else on the current device)."""
    if not _dist_on():
        return list(values)
    dev = "cpu" if dist.get_backend() == "gloo" else torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor(list(values), dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def lr_lambda(cfg: TrainConfig):
    """LR multiplier per optimizer step: linear warm-up, then cosine/linear/constant to ``min_lr_ratio``."""
    o = cfg.optim

    def fn(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / (o.warmup_steps + 1)
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.max_steps - o.warmup_steps))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if o.schedule == "cosine" else 1.0 - progress
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape

    return fn


# ----------------------------------------------------------------------------- engines
class PlainEngine:
    """Plain PyTorch: AdamW, LambdaLR, gradient accumulation, clipping, bf16 autocast."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, device: torch.device):
        self.module, self.cfg, self.device = module, cfg, device
        o = cfg.optim
        self.params = [p for p in module.parameters() if p.requires_grad]
        # fused AdamW (one kernel for all parameters) where this torch has it for the device
        self.optimizer = torch.optim.AdamW(param_groups(module, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           fused=device.type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.micro = 0

    def forward(self, batch):
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            return self.module(batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.grad_accum).backward()

    def step(self) -> bool:
        """Counts a micro-batch; at an accumulation boundary clips, steps and returns True."""
        self.micro += 1
        if self.micro % self.cfg.grad_accum:
            return False
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def gathered(self, params=None):
        return contextlib.nullcontext()

    def save(self, tmp: Path) -> None:
        named = {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}
        torch.save(named, tmp / "trainable.pt")
        # statistics the heads keep while training (target_norm), so a resumed run continues them exactly
        persistent = set(self.module.state_dict(keep_vars=True))
        torch.save({n: b.detach().cpu().clone() for n, b in self.module.named_buffers() if n in persistent},
                   tmp / "buffers.pt")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"scheduler": self.scheduler.state_dict(), "micro": self.micro}, tmp / "scheduler.pt")

    def load(self, path: Path) -> None:
        named = torch.load(path / "trainable.pt", weights_only=True)
        mine = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(mine) - set(named)), sorted(set(named) - set(mine))
        if missing or unexpected:
            raise ckpt_error(path, f"trainable parameters differ: missing {missing[:5]}, unexpected {unexpected[:5]} "
                                   f"(was it saved with another stage or model config?)")
        with torch.no_grad():
            for n, p in mine.items():
                if p.shape != named[n].shape:
                    raise ckpt_error(path, f"{n}: checkpoint shape {tuple(named[n].shape)}, model {tuple(p.shape)}")
                p.copy_(named[n])
            if (path / "buffers.pt").is_file():  # checkpoints written before it existed have none
                buffers = dict(self.module.named_buffers())
                for n, b in torch.load(path / "buffers.pt", weights_only=True).items():
                    if n not in buffers or buffers[n].shape != b.shape:
                        raise ckpt_error(path, f"buffer {n}: checkpoint shape {tuple(b.shape)}, model "
                                               f"{tuple(buffers[n].shape) if n in buffers else 'has none'}")
                    buffers[n].copy_(b)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
        s = torch.load(path / "scheduler.pt", weights_only=False)
        self.scheduler.load_state_dict(s["scheduler"])
        self.micro = s["micro"]


class DeepSpeedEngine:
    """DeepSpeed: the JSON config's ZeRO settings, with batch sizes, accumulation, clipping, bf16 and
    the optimizer (AdamW; DeepSpeedCPUAdam when the optimizer is offloaded) filled in from the
    training config. Our LR schedule is handed to DeepSpeed, which steps it."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, device: torch.device, info: DistInfo):
        import deepspeed

        self.cfg, self.device, self.info = cfg, device, info
        if cfg.deepspeed is None:
            raise ValueError("train/train.py needs a DeepSpeed config: set deepspeed=configs/deepspeed/zero2.json "
                             "(or zero3-offload.json)")
        ds_path = Path(cfg.deepspeed)
        if not ds_path.is_file():
            raise FileNotFoundError(f"deepspeed = {cfg.deepspeed!r}: no such file; see configs/deepspeed/")
        ds = json.loads(ds_path.read_text())
        o = cfg.optim
        offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") not in ("none", None)
        ds.update({
            "train_micro_batch_size_per_gpu": cfg.batch_size,
            "gradient_accumulation_steps": cfg.grad_accum,
            "train_batch_size": cfg.batch_size * cfg.grad_accum * info.world_size,
            "gradient_clipping": o.grad_clip,
            "bf16": {"enabled": cfg.bf16},
            "fp16": {"enabled": False},
            "optimizer": {"type": "AdamW", "params": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps,
                                                      "weight_decay": o.weight_decay, **({} if offload else {"torch_adam": True})}},
            "steps_per_print": ds.get("steps_per_print", 10**9),
        })
        ds.pop("scheduler", None)
        self.ds_config = ds
        self.module = module
        sched = lr_lambda(cfg)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, model_parameters=param_groups(module, o.weight_decay), config=ds,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, sched))
        self.zero_stage = self.engine.zero_optimization_stage()

    def forward(self, batch):
        return self.engine(batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def gathered(self, params=None):
        """Full parameters inside the context under ZeRO-3 (default: all of the module's)."""
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(params if params is not None else self.module.parameters()),
                                                 modifier_rank=None)

    def save(self, tmp: Path) -> None:
        self.engine.save_checkpoint(str(tmp), tag="ds", exclude_frozen_parameters=True)

    def load(self, path: Path) -> None:
        load_path, _ = self.engine.load_checkpoint(str(path), tag="ds", load_module_strict=False,
                                                   load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise ckpt_error(path, "DeepSpeed found no checkpoint under ds/")


def ckpt_error(path: Path, msg: str) -> RuntimeError:
    from codi2.checkpoint import CheckpointError

    return CheckpointError(f"checkpoint {path}: {msg}")


# ----------------------------------------------------------------------------- data
class Datasets:
    """Several manifests as one index space (records keep their manifest's media paths)."""

    def __init__(self, manifests: Sequence[str], limits, load_outputs: bool):
        self.parts = [ManifestDataset(m, limits=limits, load_outputs=load_outputs) for m in manifests]
        self.offsets = np.cumsum([0] + [len(d) for d in self.parts]).tolist()
        self.records: list[Record] = [r for d in self.parts for r in d.records]
        self.phase_of = [p for d in self.parts for p in d.phase_of]
        self.bad = [b for d in self.parts for b in d.bad]

    def __len__(self) -> int:
        return len(self.records)

    def indices_by_phase(self) -> dict[str, list[int]]:
        return group_by_phase(self.phase_of)

    def __getitem__(self, i: int) -> Record:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - self.offsets[k]]


# ----------------------------------------------------------------------------- trainer
@dataclass
class StepLog:
    step: int
    phase: str
    parts: dict[str, float]
    tokens: int
    skipped: bool = False
    bad: list[str] = field(default_factory=list)


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs it (see the module docstring).

    Args:
        cfg: the training config.
        use_deepspeed: DeepSpeed engine (``train/train.py``) or the plain PyTorch one (``python -m train``).
    """

    def __init__(self, cfg: TrainConfig, use_deepspeed: bool = False):
        cfg.check()
        self.cfg, self.use_deepspeed = cfg, use_deepspeed
        self.info = DistInfo.from_env()
        self.out = Path(cfg.output_dir)
        self.device = self._device()
        self.writer = None

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        if self.cfg.device is not None:
            return torch.device(self.cfg.device)
        if torch.cuda.is_available():
            return torch.device("cuda", self.info.local_rank)
        return torch.device("cpu")

    def _init_distributed(self) -> None:
        if self.use_deepspeed:
            import deepspeed

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            from datetime import timedelta

            deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo",
                                       timeout=timedelta(minutes=self.cfg.dist_timeout_minutes))
        elif self.info.world_size > 1:
            raise ValueError(f"python -m train runs one process but WORLD_SIZE = {self.info.world_size}; use "
                             f"`deepspeed --num_gpus N train/train.py CONFIG` for several")

    def _pipeline_dir(self) -> Path:
        cfg = self.cfg
        if cfg.model.pipeline is not None:
            return Path(cfg.model.pipeline)
        from codi2.pipeline import init_pipeline

        d = self.out / "init"
        if self.info.main and not (d / "config.yaml").is_file():
            src = Path(cfg.model.config)
            mcfg = load_model_config(cfg.model.config, cfg.model.overrides)
            log.info("building a new model from %s into %s (seed %d)", cfg.model.config, d, cfg.model.seed)
            init_pipeline(mcfg, d, seed=cfg.model.seed, config_dir=src.parent if src.suffix else None)
        barrier()
        return d

    def setup(self) -> None:
        from codi2.pipeline import CoDi2Pipeline
        from codi2.targets import (InputFeatureCache, MemoryFeatureCache, TargetCache, default_cache_root,
                                   precompute_targets)

        cfg, info = self.cfg, self.info
        self._init_distributed()
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_tmp(self.out)
            (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        barrier()
        # 1. model
        self.pipeline_dir = self._pipeline_dir()
        torch.manual_seed(cfg.seed)
        self.pipe = CoDi2Pipeline.from_pretrained(self.pipeline_dir, device=self.device, overrides=cfg.model_overrides())
        self.model = self.pipe.model
        self.groups = set_stage(self.model, cfg.stage, cfg.freeze)
        counts = {k: sum(p.numel() for p in v) for k, v in self.groups.items()}
        log.info("stage %s: trainable %s; frozen %s", cfg.stage, counts,
                 f"{sum(p.numel() for p in self.model.parameters() if not p.requires_grad):,}")
        # Output media are decoded only for the diffusion loss; otherwise targets come from the cache.
        diffusion = any(self.model.cfg.modalities[k].head.diffusion_loss_weight > 0 for k in self.model.heads)
        # 2. data + targets
        self.data = Datasets(cfg.data.manifests, self.model.cfg.media, load_outputs=diffusion)
        cache_root = Path(cfg.data.target_cache) if cfg.data.target_cache else default_cache_root(cfg.data.manifests[0])
        if cfg.data.precompute:  # every rank computes its own shard; the barrier waits for the slowest shard only
            for m in cfg.data.manifests:
                stats = precompute_targets(m, self.model, cache_root=cache_root, progress=info.main,
                                           rank=info.rank, world_size=info.world_size)
                total = all_reduce_sum([stats["computed"], stats["cached"], len(stats["failed"]), stats["seconds"]])
                log.info("targets for %s over %d rank(s): %d computed, %d cached, %d failed (rank 0: %d of its %d, "
                         "%.1f s)", m, info.world_size, total[0], total[1], total[2], stats["computed"],
                         stats["shard"], stats["seconds"])
            self.model.unload_decoders()  # training reads targets from the cache; no decoder stays loaded
        barrier()
        self.targets = TargetCache(cache_root, self.model.cfg, base_dir=self.model.base_dir)
        self.feature_cache: Any = None  # encoder features of input media (see DataConfig.feature_cache)
        if cfg.data.feature_cache == "memory":
            self.feature_cache = MemoryFeatureCache(int(cfg.data.feature_cache_max_mb * 2**20))
        elif cfg.data.feature_cache == "disk":
            self.feature_cache = InputFeatureCache(cache_root, self.model.cfg, base_dir=self.model.base_dir)
        # 3. sampler
        lengths = None
        if cfg.phases.group_by_length:
            lengths = {i: len(self.model.builder.encode(r.messages)) for i, r in enumerate(self.data.records)}
        self.sampler = PhaseSampler(self.data.indices_by_phase(), cfg.batch_size, weights=cfg.phases.weights,
                                    schedule=cfg.phases.schedule, n_steps=cfg.phases.n_steps, seed=cfg.seed,
                                    rank=info.rank, world_size=info.world_size, lengths=lengths,
                                    group_by_length=cfg.phases.group_by_length)
        log.info("data: %d records by phase %s, %d unparseable; schedule %s over %s", len(self.data),
                 {p: len(v) for p, v in self.data.indices_by_phase().items()}, len(self.data.bad),
                 cfg.phases.schedule, self.sampler.phases)
        self.bad = BadRecordCounter(cfg.data.max_bad_fraction, min_seen=cfg.data.bad_min_seen)
        if info.main:
            for rid, reason in self.data.bad:
                self.bad.record(rid, reason)
        # 4. engine
        self.module = TrainModule(self.model, all_modules=info.world_size > 1)
        self.module.train()
        self.model.encoder.eval()
        self.engine = DeepSpeedEngine(self.module, cfg, self.device, info) if self.use_deepspeed \
            else PlainEngine(self.module, cfg, self.device)
        self._pool = ThreadPoolExecutor(cfg.data.workers, thread_name_prefix="load") if cfg.data.workers > 0 else None
        self._known_bad: set[int] = set()  # indices that failed on this rank (not picked as replacements)
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0
        # 5. resume
        self.resumed_from = ckpt.resolve_resume(cfg.resume, self.out)
        if self.resumed_from is not None:
            self._load(self.resumed_from)
        self._open_logs()

    # ------------------------------------------------------------------ data path
    def _check_record(self, rec: Record) -> None:
        """Raises RecordError if the record cannot be trained on (targets missing, too long)."""
        for p in rec.media_parts(output=True):
            m = Modality(p.type)
            if m.value not in self.model.heads:
                raise RecordError(rec.id, f"{m.value} output, but this model has no {m.value} head", "schema", rec.line)
            if not self.targets.has(m, p):
                raise RecordError(rec.id, f"no precomputed {m.value} target for {p.path} (precompute failed for it; "
                                  f"see `codi2 precompute-targets`)", "media", rec.line)
        if self.cfg.data.max_length is not None:
            n = len(self.model.builder.encode(rec.messages))
            if n > self.cfg.data.max_length:
                raise RecordError(rec.id, f"{n} tokens, over data.max_length = {self.cfg.data.max_length}", "schema",
                                  rec.line)

    def _fetch(self, i: int) -> "Record | RecordError | MediaError":
        """``data[i]`` or the error it raised (runs in the loader threads: no accounting here)."""
        try:
            return self.data[i]
        except (RecordError, MediaError) as e:
            return e

    def _load_record(self, i: int, fetched: "Record | RecordError | MediaError | None" = None) -> Optional[Record]:
        """The record at ``i`` if it can be trained on, else None (counted and logged as bad)."""
        try:
            rec = self._fetch(i) if fetched is None else fetched
            if not isinstance(rec, Record):
                raise rec
            self._check_record(rec)
        except (RecordError, MediaError) as e:
            rid = getattr(e, "id", self.data.records[i].id)
            self.bad.record(rid, getattr(e, "reason", str(e)))
            self._bad_ids.append(rid)
            self._known_bad.add(i)
            return None
        self.bad.seen()
        return rec

    def _records(self, b) -> list[Record]:
        """This rank's records for sampler batch ``b``, bad ones replaced (see module docstring)."""
        fetched = self._pool.map(self._fetch, b.indices) if self._pool is not None else [None] * len(b.indices)
        recs = [r for r in (self._load_record(i, f) for i, f in zip(b.indices, fetched)) if r is not None]
        pool = [i for i in self.sampler.indices[b.phase] if i not in self._known_bad] or self.sampler.indices[b.phase]
        tries = 0
        while len(recs) < len(b.indices) and tries < MAX_REPLACEMENT_TRIES:
            rng = random.Random(seed_for(self.cfg.seed, "replace", b.step, self.info.rank, tries))
            r = self._load_record(rng.choice(pool))
            if r is not None:
                recs.append(r)
            tries += 1
        return recs

    def _collate(self, recs: list[Record]):
        convs = [r.messages for r in recs]
        if self.feature_cache is not None:  # encode each new input media alone: results do not depend on batching
            for r in recs:
                for p in r.media_parts(output=False):
                    m = Modality(p.type)
                    if (m, p.key) not in self.feature_cache:
                        self.model.encode_media(m, [p], self.feature_cache)
        batch = self.model.collate(convs, feature_cache=self.feature_cache, target_fn=self.targets.target_fn())
        return batch.to(self.device)

    # ------------------------------------------------------------------ logging
    def _open_logs(self) -> None:
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"rank-{self.info.rank}.jsonl"
        if path.exists():  # keep only the steps before the checkpoint we resumed from (drop the killed run's tail)
            keep = []
            for ln in path.read_text().splitlines():
                try:
                    if json.loads(ln)["step"] < self.step:
                        keep.append(ln)
                except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by the kill
                    continue
            path.write_text("".join(k + "\n" for k in keep))
        self.log_file = open(path, "a")
        if self.info.main and self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)

    def _write(self, rec: dict) -> None:
        self.log_file.write(json.dumps(rec) + "\n")
        self.log_file.flush()

    def _log_micro(self, slog: StepLog) -> None:
        """One line per micro-batch in this rank's JSONL log; per-phase losses to TensorBoard (rank 0)."""
        rec = {"step": self.step, "phase": slog.phase, "skipped": slog.skipped, "tokens": slog.tokens,
               "lr": self.engine.lr(), **{f"loss/{k}": v for k, v in slog.parts.items()}}
        if slog.bad:
            rec["bad"] = slog.bad
        self._write(rec)
        if self.writer is not None and not slog.skipped:
            for k, v in slog.parts.items():
                self.writer.add_scalar(f"loss/{slog.phase}/{k}", v, self.step)

    # ------------------------------------------------------------------ checkpoints
    def _client_state(self) -> dict:
        return {"step": self.step, "sampler": self.sampler.state_dict(), "nonfinite_total": self.nonfinite_total,
                "nonfinite_in_a_row": self.nonfinite_in_a_row, "trainable_checksum": self.checksum(),
                "world_size": self.info.world_size, "stage": self.cfg.stage}

    def save(self) -> Path:
        final = ckpt.checkpoint_dir(self.out, self.step)
        tmp = ckpt.tmp_dir(final)
        if self.info.main:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier()
        state = self._client_state()  # collective under ZeRO-3 (checksum): every rank calls it
        self.engine.save(tmp)
        ckpt.save_rank_state(tmp, self.info.rank, {"bad": {"n_ok": self.bad.n_ok, "n_bad": self.bad.n_bad,
                                                           "examples": self.bad.examples}})
        barrier()
        if self.info.main:
            ckpt.finalize(tmp, final, state)
            ckpt.prune(self.out, self.cfg.keep_last)
            log.info("saved checkpoint %s", final)
        barrier()
        return final

    def _load(self, path: Path) -> None:
        state = ckpt.read_state(path)
        if state["world_size"] != self.info.world_size:
            raise ValueError(f"checkpoint {path} was written by {state['world_size']} processes, this run has "
                             f"{self.info.world_size}; resume with the same number (the sampler shards by rank)")
        if state["stage"] != self.cfg.stage:
            raise ValueError(f"checkpoint {path} is of stage {state['stage']!r}, this run is {self.cfg.stage!r}; "
                             f"start the next stage from an exported model (model.pipeline=…/final) instead")
        self.engine.load(path)
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.nonfinite_total, self.nonfinite_in_a_row = state["nonfinite_total"], state["nonfinite_in_a_row"]
        got = self.checksum()
        if not math.isclose(got, state["trainable_checksum"], rel_tol=1e-6, abs_tol=1e-6):
            raise ckpt_error(path, f"trainable weights after loading have checksum {got}, saved {state['trainable_checksum']}")
        rs = ckpt.load_rank_state(path, self.info.rank)
        self.bad.n_ok, self.bad.n_bad, self.bad.examples = rs["bad"]["n_ok"], rs["bad"]["n_bad"], rs["bad"]["examples"]
        ckpt.set_rng_state(rs["rng"])
        log.info("resumed from %s at step %d", path, self.step)

    def checksum(self) -> float:
        """Sum of |w| over the trainable parameters (gathered under ZeRO-3): equal on every rank."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        with self.engine.gathered(params):
            return float(sum(p.detach().double().abs().sum() for p in params))

    def export(self) -> Path:
        """Writes the ``final/`` CoDi2Pipeline directory (atomically: ``final.tmp/`` then rename)."""
        from codi2.pipeline import CoDi2Pipeline

        final = self.out / "final"
        tmp = self.out / "final.tmp"
        with self.engine.gathered():
            if self.info.main:
                import shutil

                if tmp.exists():
                    shutil.rmtree(tmp)
                self.model.eval()
                CoDi2Pipeline(self.model, self.pipeline_dir).save_pretrained(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                log.info("exported %s (chat with: codi2 chat --model %s \"…\")", final, final)
        barrier()
        return final

    # ------------------------------------------------------------------ the loop
    def micro_batch(self) -> StepLog:
        """Loads, forwards and (unless skipped) backwards one micro-batch; see the module docstring."""
        b = self.sampler.next_batch()
        if b.new_epoch:
            log.info("phase %s: epoch %d begins", b.phase, b.epoch)
        self._bad_ids: list[str] = []
        recs = self._records(b)
        n_ok, n_bad, empty = all_reduce_sum([self.bad.n_ok, self.bad.n_bad, float(not recs)])
        glob = BadRecordCounter(self.cfg.data.max_bad_fraction, min_seen=self.cfg.data.bad_min_seen)
        glob.n_ok, glob.n_bad, glob.examples = int(n_ok), int(n_bad), self.bad.examples
        glob.check()
        if empty:
            raise TooManyBadRecords(f"step {self.step}: a rank found no loadable {b.phase} record in "
                                    f"{MAX_REPLACEMENT_TRIES} tries; the {b.phase} data is mostly broken "
                                    f"(run `codi2 validate-data`)")
        batch = self._collate(recs)
        out = self.engine.forward(batch)
        nonfinite, tokens = all_reduce_sum([float(not torch.isfinite(out.loss).item()), batch.num_tokens])
        slog = StepLog(self.step, b.phase, out.parts, int(tokens), bad=self._bad_ids)
        if nonfinite:
            slog.skipped = True
            self.nonfinite_total += 1
            self.nonfinite_in_a_row += 1
            log.warning("step %d (%s): non-finite loss %s on %d rank(s); micro-batch skipped (%d in a row, %d in all)",
                        self.step, b.phase, out.parts, int(nonfinite), self.nonfinite_in_a_row, self.nonfinite_total)
            if self.writer is not None:
                self.writer.add_scalar("nonfinite/total", self.nonfinite_total, self.step)
            if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_in_a_row:
                self._log_micro(slog)
                raise NonFiniteLossError(f"{self.nonfinite_in_a_row} non-finite losses in a row (max_nonfinite_in_a_row "
                                         f"= {self.cfg.max_nonfinite_in_a_row}) at step {self.step}, last {out.parts}; "
                                         f"lower optim.lr, enable optim.grad_clip, or check the data")
            return slog
        self.nonfinite_in_a_row = 0
        self.engine.backward(out.loss)
        return slog

    def run(self) -> Path:
        """Trains to ``max_steps``; returns the export directory (or the last checkpoint without export)."""
        from tqdm import tqdm

        cfg = self.cfg
        self.setup()
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=not self.info.main, dynamic_ncols=True)
        t0, tok0 = time.perf_counter(), 0
        last: Optional[Path] = self.resumed_from
        try:
            while self.step < cfg.max_steps:
                slog = self.micro_batch()
                tok0 += slog.tokens
                stepped = False if slog.skipped else self.engine.step()
                self._log_micro(slog)
                if not stepped:
                    continue
                self.step += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    dt = time.perf_counter() - t0
                    tps = tok0 / dt if dt > 0 else 0.0
                    bar.set_postfix(loss=f"{slog.parts['total']:.4f}", tok_s=f"{tps:.0f}", phase=slog.phase)
                    if self.writer is not None:
                        self.writer.add_scalar("lr", self.engine.lr(), self.step)
                        self.writer.add_scalar("tokens_per_s", tps, self.step)
                        self.writer.add_scalar("bad_records", self.bad.n_bad, self.step)
                        for p, e in self.sampler.epochs().items():
                            self.writer.add_scalar(f"epoch/{p}", e, self.step)
                    t0, tok0 = time.perf_counter(), 0
                bar.update(1)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                    last = self.save()
            last = self.save() if (last is None or ckpt.read_state(last)["step"] != self.step) else last
            self._write({"step": self.step, "final": True, "checksum": self.checksum(),
                         "epochs": self.sampler.epochs(), "bad_records": self.bad.n_bad,
                         "nonfinite": self.nonfinite_total})
            result = self.export() if cfg.export else last
        finally:
            bar.close()
            self.log_file.close()
            if self.writer is not None:
                self.writer.close()
            if getattr(self, "_pool", None) is not None:
                self._pool.shutdown()
        return result


# ----------------------------------------------------------------------------- entry points
def load_train_config(path: str, overrides: Sequence[str] = ()) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)


def main(argv: Optional[Sequence[str]] = None, use_deepspeed: bool = False) -> int:
    """``python -m train CONFIG [key=value …]`` (``use_deepspeed=False``) and ``train/train.py``."""
    import argparse

    prog = "deepspeed train/train.py" if use_deepspeed else "python -m train"
    p = argparse.ArgumentParser(prog=prog, description="Train a codi2 model from a training config.")
    p.add_argument("config", help="a training config (configs/train/*.yaml)")
    p.add_argument("override", nargs="*", help="key=value overrides, e.g. max_steps=100 optim.lr=1e-4")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    args = p.parse_args(argv)
    info = DistInfo.from_env()
    setup_logging(rank=info.rank)
    cfg = load_train_config(args.config, args.override)
    out = Trainer(cfg, use_deepspeed=use_deepspeed).run()
    log.info("done: %s", out)
    return 0
