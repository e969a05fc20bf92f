"""``codi2 train CONFIG [key=value …]``: the ``codi2`` subcommand for ``python -m train`` (imports nothing heavy
until it runs)."""
from __future__ import annotations

from typing import Any


def _train(args: Any) -> int:
    from codi2.io import setup_logging
    from train.loop import DistInfo, Trainer, load_train_config

    setup_logging(rank=DistInfo.from_env().rank)
    out = Trainer(load_train_config(args.config, args.override)).run()
    print(f"trained: {out}")
    return 0


def register(subparsers: Any) -> None:
    """Adds ``codi2 train CONFIG [key=value …]`` (one process, plain PyTorch; for several processes use
    ``deepspeed train/train.py CONFIG``)."""
    p = subparsers.add_parser("train", help="train from a training config (one process; for several: "
                                            "deepspeed train/train.py CONFIG)")
    p.add_argument("config", help="a training config (configs/train/*.yaml)")
    p.add_argument("override", nargs="*", help="key=value overrides, e.g. max_steps=100 optim.lr=1e-4")
    p.set_defaults(func=_train)
