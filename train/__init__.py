"""Training entry points and recipes (docs/design.md#training): ``python -m train CONFIG`` (one process),
``deepspeed train/train.py CONFIG`` (DeepSpeed), the alternating-phase sampler (:mod:`train.phases`),
the trainer (:mod:`train.loop`), its config (:mod:`train.config`) and checkpoints (:mod:`train.checkpointing`)."""
