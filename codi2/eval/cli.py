"""``codi2 eval``: run a suite on a model, or score a folder of any system's outputs.

    codi2 eval --suite NAME --model DIR --data PATH --out DIR [--shots 0,1,2,4] [--n N] [--seed S]
               [--exemplars PATH …] [--resume] [--json] [--force-output] [--clip DIR] [--dino DIR] [--audio-classifier DIR]
               [--fad-model DIR] [--judges DIR] [--steps N] [--guidance G] [--max-new-tokens N]
    codi2 eval score --suite image-edit|audio-edit|dreambench --pred DIR --ref DIR --out DIR [backbones] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from ..io import setup_logging
from .registry import suite_names

log = logging.getLogger(__name__)


def parse_shots(text: str) -> list[int]:
    try:
        shots = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots must be comma-separated integers like 0,1,2,4, got {text!r}") from None
    if not shots or any(k < 0 for k in shots):
        raise argparse.ArgumentTypeError(f"--shots needs counts >= 0, got {text!r}")
    return sorted(set(shots))


def _backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", help="local transformers CLIP dir (CLIP-I, CLIP-T, directional)")
    p.add_argument("--dino", help="local transformers ViT (DINO ViT-S/16) or Dinov2 dir")
    p.add_argument("--audio-classifier", help="local transformers audio classifier dir for KL and FD "
                   "(e.g. an AST AudioSet checkpoint); default 'imagebind': the model's encoder, zero-shot labels")
    p.add_argument("--fad-model", help="local transformers audio model dir for FAD; default 'imagebind'")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--pixel-size", type=int, default=256, help="common size for pixel L1/L2")
    p.add_argument("--lsd-time-offset", type=int, default=0,
                   help="samples dropped from the start of each generated clip before LSD (audioldm_eval: 1120)")
    p.add_argument("--json", action="store_true", help="print results.json's metrics as JSON")


def _print(results: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results["metrics"], indent=2, sort_keys=True))
        return
    for k, s in results["metrics"]["overall"].items():
        print(f"{k:16s} {s['mean']:.4f}  [{s['ci_low']:.4f}, {s['ci_high']:.4f}]  n={s['n']}")
    for k, v in (results["metrics"].get("set") or {}).get("overall", {}).items():
        print(f"{k:16s} {v:.4f}")


def _run(args: argparse.Namespace) -> int:
    from .runner import EvalConfig, run_eval

    missing = [f"--{n}" for n in ("suite", "model", "data", "out") if getattr(args, n) is None]
    if missing:
        print(f"codi2 eval: {', '.join(missing)} required (or use `codi2 eval score …`)", file=sys.stderr)
        return 2
    cfg = EvalConfig(suite=args.suite, model=args.model, data=args.data, shots=args.shots, n=args.n, seed=args.seed,
                     force_output=args.force_output, clip=args.clip, dino=args.dino,
                     audio_classifier=args.audio_classifier, fad_model=args.fad_model, judges=args.judges,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature, steps=args.steps,
                     guidance=args.guidance, n_boot=args.n_boot, pixel_size=args.pixel_size,
                     lsd_time_offset=args.lsd_time_offset, exemplars=args.exemplars)
    results = run_eval(cfg, args.out, resume=args.resume, device=args.device)
    _print(results, args.json)
    return 0


def _score(args: argparse.Namespace) -> int:
    from .runner import score_folder

    results = score_folder(args.suite, args.pred, args.ref, args.out, clip=args.clip, dino=args.dino,
                           audio_classifier=args.audio_classifier, fad_model=args.fad_model, model=args.model,
                           n_boot=args.n_boot, seed=args.seed, pixel_size=args.pixel_size,
                           lsd_time_offset=args.lsd_time_offset)
    _print(results, args.json)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=suite_names(), help="a registered suite (plugins add theirs)")
    p.add_argument("--model", help="a codi2 model directory")
    p.add_argument("--data", nargs="+", help="dreambench: the DreamBench root; image-edit/audio-edit: a build folder "
                   "(a split build: its test split, exemplars from its train split; else its manifest.jsonl) or a "
                   "manifest file; world: one or more manifests (or folders), read as one set")
    p.add_argument("--exemplars", nargs="+", metavar="PATH",
                   help="image-edit/audio-edit: train manifests (or build folders) to draw k-shot exemplar pairs of "
                        "the same edit type from, for records that hold none (default: the split build's train split)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--shots", type=parse_shots, default=[0, 1, 2, 4], help="comma-separated shot counts (default 0,1,2,4); world: each "
                   "in-context record runs at every count k >= 1 it has exemplar pairs for, with its first k pairs")
    p.add_argument("--n", type=int, help="items per shot count (world: per task); default all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--force-output", action="store_true",
                   help="start each reply with the expected media's opening token (for untrained test models only: "
                        "it changes what is measured)")
    p.add_argument("--judges", help="world suite: folder with judges.safetensors + judges.json (default: the model's own judges/, "
                        "which the bundled mini model ships)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--steps", type=int, help="diffusion steps")
    p.add_argument("--guidance", type=float)
    p.add_argument("--device", default=None)
    _backbone_args(p)
    sub = p.add_subparsers(dest="eval_cmd", metavar="score")
    s = sub.add_parser("score", help="score a folder of any system's outputs against references (no model)")
    s.add_argument("--suite", required=True, choices=["image-edit", "audio-edit", "dreambench"])
    s.add_argument("--pred", required=True, help="folder of generated files")
    s.add_argument("--ref", required=True, help="folder of references (dreambench: the DreamBench root)")
    s.add_argument("--out", required=True, help="folder for results.json and report.md")
    s.add_argument("--model", help="codi2 model dir whose ImageBind encoder is the default audio backbone")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _backbone_args(s)
    s.set_defaults(func=_score)
    p.set_defaults(func=_run)


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``eval`` to the ``codi2`` command."""
    p = subparsers.add_parser("eval", help=f"few-shot evaluation suites ({', '.join(suite_names())}) "
                              "and `eval score` for any system's outputs", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m codi2.eval …`` (the same as ``codi2 eval …``)."""
    p = argparse.ArgumentParser(prog="codi2 eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging(logging.INFO, timestamps=False)
    from ..media import MediaError

    try:
        return int(args.func(args) or 0)
    except (MediaError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"codi2 eval: error: {e}", file=sys.stderr)
        return 2
