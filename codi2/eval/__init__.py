"""Evaluation: model-free metrics, local-weight feature extractors, few-shot suites and the ``codi2 eval`` CLI.

    metrics   pure functions (L1/L2, cosines, CLIP directional, LSD, KL, Fréchet distance, bootstrap CI)
    features  CLIP / DINO / audio backbones loaded from local directories
    suites    dreambench, image-edit, audio-edit: samples and scoring from files
    registry  register_suite / get_suite: every suite, the plugins' too (the world suite is the world's)
    runner    run_eval (generate, score, resume, results.json), score_folder (any system's outputs)
    report    report.md and PNG plots
    cli       ``register(subparsers)`` for ``codi2 eval``
"""
from .cli import register
from .registry import get_suite, register_suite, suite_names
from .runner import EvalConfig, run_eval, score_folder

__all__ = ["EvalConfig", "get_suite", "register", "register_suite", "run_eval", "score_folder", "suite_names"]
