"""The training config: typed dataclasses loaded with ``codi2.config.load_config``.

    python -m train configs/train/tiny-smoke.yaml max_steps=10 optim.lr=1e-3

Relative paths in a training config (``model.pipeline``, ``model.config``, ``data.manifests``,
``deepspeed``, ``output_dir``) are resolved against the current directory by the entry points,
never against the config file (so overrides on the command line mean what they say).

Stages (CoDi-2 / NExT-GPT):

* ``projector_alignment`` (stage 1): the LLM is frozen, LoRA included; the input projectors, the
  output heads *and the new token rows* (``<img>``, ``[IMG_OUT_k]`` … in the input and output
  embeddings) train. The new rows must train here: without them the model cannot learn to emit
  ``<img>`` (its output row would stay the mean of the old rows) nor give the output slots a
  distinct input embedding, and the feature loss would have nothing to read.
* ``instruction_tuning`` (stage 2): LoRA + new token rows + projectors + heads.

The frozen encoder and base LLM weights never train in either stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

STAGES = ("projector_alignment", "instruction_tuning")
PARAM_GROUPS = ("lora", "new_token_rows", "projectors", "heads")  # CoDi2Model.trainable_parameters()
LR_SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class ModelSource:
    """Where the model comes from: a pipeline directory, or a model config built fresh.

    Attributes:
        pipeline: a ``CoDi2Pipeline`` directory to start from (e.g. ``codi2 init`` output or an earlier stage's
            ``final/``).
        config: a model config (YAML path or preset name: ``tiny``, ``codi2-7b``) built with
            ``codi2.pipeline.init_pipeline`` into ``{output_dir}/init`` (random tiny parts, or local real weights
            named in the config).
        overrides: ``key=value`` overrides of the model config, e.g. ``llm.quantization=4bit`` (QLoRA).
        seed: seed of the random parts when building from ``config``.
    """

    pipeline: Optional[str] = None
    config: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class DataConfig:
    """Attributes:
        manifests: JSONL manifests (docs/design.md#manifest-schema); several are concatenated.
        target_cache: feature cache of the head targets; default: beside the first manifest.
        precompute: compute missing targets at start, every rank its own shard of them
            (``codi2.targets.precompute_targets``); a rank waits only for the others' shards.
        max_length: a conversation longer than this many tokens is a bad record (skipped, counted).
        max_bad_fraction: stop when more than this fraction of the records read so far failed to load.
        bad_min_seen: the bad fraction is judged only once this many records were read (summed over ranks).
        feature_cache: encoder features of input media: ``memory`` (an LRU capped at ``feature_cache_max_mb``),
            ``disk`` (beside the targets, reused across runs; what the full-scale configs use) or ``none``
            (encoded every time). Each media is encoded on its own, so the features do not depend on which batch
            it came in.
        feature_cache_max_mb: the byte cap of the ``memory`` cache per rank, in MiB (least recently used entries
            are dropped first). At 7B an image's features are about 1 MiB (257 × 1024 float32).
        workers: threads loading (decoding) the records of a batch in parallel; 0 = in the training thread.
    """

    manifests: list[str] = field(default_factory=list)
    target_cache: Optional[str] = None
    precompute: bool = True
    max_length: Optional[int] = None
    max_bad_fraction: float = 0.05
    bad_min_seen: int = 100
    feature_cache: str = "memory"
    feature_cache_max_mb: float = 1024.0
    workers: int = 4


@dataclass
class PhaseConfig:
    """The alternating-phase schedule (see ``train.phases``).

    Attributes:
        schedule: ``round_robin`` | ``weighted`` | ``per_n_steps``.
        weights: phase -> weight (text, image, audio, video, multi); missing phases weigh 1, 0 disables.
        n_steps: batches per phase turn for ``per_n_steps``.
        group_by_length: length-grouped batches within each phase (less padding).
    """

    schedule: str = "round_robin"
    weights: dict[str, float] = field(default_factory=dict)
    n_steps: int = 1
    group_by_length: bool = False


@dataclass
class OptimConfig:
    """AdamW and the LR schedule: linear warm-up over ``warmup_steps``, then ``schedule`` down to
    ``min_lr_ratio × lr`` at ``max_steps``."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 = off


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        output_dir: checkpoints, logs, TensorBoard and the exported ``final/`` pipeline go here.
        stage: ``projector_alignment`` | ``instruction_tuning`` (module docstring).
        freeze: parameter groups to keep frozen on top of what the stage freezes: any of ``lora``,
            ``new_token_rows``, ``projectors``, ``heads``. E.g. re-fitting one output head to a new decoder's
            conditioning (``configs/train/mini-video-head.yaml``) freezes the new token rows, whose input rows
            (``<vid>`` …) also mark the inputs of other tasks.
        batch_size: records per micro-batch on each rank.
        grad_accum: micro-batches per optimizer step.
        max_steps: optimizer steps.
        bf16: bfloat16 compute (autocast in one process; DeepSpeed's bf16 mode under DeepSpeed).
        gradient_checkpointing: recompute LLM activations in backward (sets ``llm.gradient_checkpointing``).
        qlora: 4-bit base LLM (sets ``llm.quantization=4bit``; needs a CUDA device and bitsandbytes).
        deepspeed: a DeepSpeed JSON config (ZeRO stage, offload); batch sizes, accumulation, clipping, bf16 and
            the optimizer are filled in from this config. Used by ``train/train.py``; ignored by ``python -m train``.
        resume: ``auto`` (latest complete checkpoint in ``output_dir``, else start fresh), ``none``, or a
            checkpoint directory.
        log_every: console/TensorBoard interval in steps.
        save_every: checkpoint interval in steps (0 = only at the end).
        keep_last: complete checkpoints kept (older ones are deleted).
        max_nonfinite_in_a_row: stop after this many consecutive non-finite losses (each is skipped).
        export: write the ``final/`` pipeline directory at the end.
        device: ``cpu``, ``cuda`` …; default: CUDA (this rank's local device) when available.
        dist_timeout_minutes: how long a collective (a barrier, an all-reduce) waits for the other ranks before
            the run fails (the process-group timeout given to ``deepspeed.init_distributed``).
    """

    output_dir: str = "runs/codi2"
    model: ModelSource = field(default_factory=ModelSource)
    data: DataConfig = field(default_factory=DataConfig)
    phases: PhaseConfig = field(default_factory=PhaseConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage: str = "instruction_tuning"
    freeze: list[str] = field(default_factory=list)
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 1000
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    qlora: bool = False
    deepspeed: Optional[str] = None
    resume: str = "auto"
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 2
    max_nonfinite_in_a_row: int = 5
    export: bool = True
    tensorboard: bool = True
    device: Optional[str] = None
    dist_timeout_minutes: float = 60.0

    def check(self) -> None:
        """Raises ``ValueError`` naming the bad field and what is allowed."""
        if self.stage not in STAGES:
            raise ValueError(f"stage = {self.stage!r}; allowed: {', '.join(STAGES)}")
        bad = [g for g in self.freeze if g not in PARAM_GROUPS]
        if bad:
            raise ValueError(f"freeze = {self.freeze}: unknown {bad}; allowed: {', '.join(PARAM_GROUPS)}")
        if self.optim.schedule not in LR_SCHEDULES:
            raise ValueError(f"optim.schedule = {self.optim.schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
        if (self.model.pipeline is None) == (self.model.config is None):
            raise ValueError("set exactly one of model.pipeline (a codi2 model directory) and model.config "
                             "(a model config to build, e.g. tiny)")
        if not self.data.manifests:
            raise ValueError("data.manifests is empty; give at least one JSONL manifest")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "keep_last", "max_nonfinite_in_a_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}; it must be ≥ 1")
        if not self.dist_timeout_minutes > 0:
            raise ValueError(f"dist_timeout_minutes = {self.dist_timeout_minutes}; it must be > 0 (minutes a "
                             f"collective waits for the other ranks)")
        if self.save_every < 0:
            raise ValueError(f"save_every = {self.save_every}; it must be ≥ 0 (0 = only at the end)")
        if not 0.0 <= self.data.max_bad_fraction <= 1.0:
            raise ValueError(f"data.max_bad_fraction = {self.data.max_bad_fraction}; it must be in [0, 1]")
        if self.data.workers < 0:
            raise ValueError(f"data.workers = {self.data.workers}; it must be ≥ 0")
        if self.data.feature_cache not in ("none", "memory", "disk"):
            raise ValueError(f"data.feature_cache = {self.data.feature_cache!r}; allowed: none, memory, disk")
        if not self.data.feature_cache_max_mb > 0:
            raise ValueError(f"data.feature_cache_max_mb = {self.data.feature_cache_max_mb}; it must be > 0 (MiB "
                             f"held by the memory feature cache; use feature_cache=none for no cache)")
        if self.optim.warmup_steps < 0 or not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.warmup_steps = {self.optim.warmup_steps} (≥ 0) / optim.min_lr_ratio = "
                             f"{self.optim.min_lr_ratio} (in [0, 1])")

    def model_overrides(self) -> list[str]:
        """The model-config overrides this run implies (explicit ones last, so they win)."""
        ov = []
        if self.gradient_checkpointing:
            ov.append("llm.gradient_checkpointing=true")
        if self.qlora:
            ov.append("llm.quantization=4bit")
        return ov + list(self.model.overrides)
