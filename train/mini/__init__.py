"""The mini model's component pre-training stages (issue 5, item 3), before the LoRA + projector + head
stages that ``train/`` runs:

* ``encoder`` (:func:`train.mini.encoder_align.train_encoder`, ``configs/train/mini-encoder.yaml``): the
  ImageBind-architecture encoder aligned to text (CoDi's bridging alignment) -> ``runs/mini/encoder.pth``.
* ``decoder`` (:func:`train.mini.decoder_train.train_decoders`, ``configs/train/mini-decoders.yaml``): the
  unCLIP / AudioLDM2 / text-to-video pipelines (VAE, vocoder, UNet) on world renders -> ``runs/mini/decoders/*``.
* ``llm`` (:func:`train.mini.llm_pretrain.pretrain_llm`, ``configs/train/mini-llm.yaml``): a small Llama and
  its sentencepiece tokenizer on world text -> ``runs/mini/llm``.

    codi2 train-component {encoder,decoder,llm} CONFIG [key=value …]
    python -m train.mini {encoder,decoder,llm} CONFIG [key=value …]

Each stage is seeded, shows a progress bar, logs, and writes its artifact atomically where
``configs/model/mini.yaml`` expects it (``runs/mini/…``, relative to the current directory). Order:
encoder, then decoder (the image decoder is conditioned on the aligned encoder); llm is independent.

Recipe on 2 cores (``scripts/train_mini.sh``): every stage config sets ``num_threads: 1`` and two chains run
side by side (``decoder`` takes ``modalities=[...]``):

    chain A: encoder  ->  decoder modalities=[image], then [video]   (video reuses the image VAE)
    chain B: llm      ->  decoder modalities=[audio], then the vocoder again with its level term

then the trainer stages, and beside stages 1-5 more image- and video-UNet steps (``init=`` a trained folder).
Step counts and measured times: the README's mini-model section (stage times).
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Optional, Sequence

logger = logging.getLogger(__name__)


_STAGE_ENTRIES: dict[str, tuple[str, str, str]] = {  # stage -> (module, config class, train function)
    "encoder": ("train.mini.encoder_align", "EncoderAlignConfig", "train_encoder"),
    "decoder": ("train.mini.decoder_train", "DecoderTrainConfig", "train_decoders"),
    "llm": ("train.mini.llm_pretrain", "LLMPretrainConfig", "pretrain_llm"),
}


def _stage(stage: str) -> tuple[type, Callable[[Any], Any]]:
    """(config class, train function) of ``stage``, imported on demand."""
    import importlib

    if stage not in _STAGE_ENTRIES:
        raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(_STAGE_ENTRIES)}")
    module, schema, fn = _STAGE_ENTRIES[stage]
    mod = importlib.import_module(module)
    return getattr(mod, schema), getattr(mod, fn)


STAGES: tuple[str, ...] = ("encoder", "decoder", "llm")


def load_stage_config(stage: str, path: Optional[str], overrides: Sequence[str] = ()) -> Any:
    """The typed config of ``stage`` from a YAML file (or defaults when ``path`` is None) plus overrides."""
    from codi2.config import load_config

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
    schema, _ = _stage(stage)
    return load_config(schema, path, overrides)


def run_stage(stage: str, argv: Optional[Sequence[str]] = None) -> int:
    """``main(argv)`` of one stage: ``CONFIG [key=value …]``."""
    from codi2.io import setup_logging

    p = argparse.ArgumentParser(prog=f"codi2 train-component {stage}")
    p.add_argument("config", help="stage config YAML (configs/train/mini-*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = p.parse_args(argv)
    setup_logging()
    cfg = load_stage_config(stage, args.config, args.overrides)
    _stage(stage)[1](cfg)
    return 0


def _run(args: argparse.Namespace) -> int:
    from codi2.io import setup_logging

    setup_logging()
    cfg = load_stage_config(args.stage, args.config, args.overrides)
    _stage(args.stage)[1](cfg)
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``codi2 train-component {encoder,decoder,llm} CONFIG [key=value …]``."""
    p = subparsers.add_parser("train-component", help="pre-train a mini-model component (encoder, decoders, LLM)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=STAGES, help="which component")
    p.add_argument("config", help="stage config YAML (configs/train/mini-*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. steps=100")
    p.set_defaults(func=_run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m train.mini STAGE CONFIG [key=value …]``."""
    p = argparse.ArgumentParser(prog="python -m train.mini")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return _run(p.parse_args(argv))


__all__ = ["STAGES", "load_stage_config", "main", "register", "run_stage"]
