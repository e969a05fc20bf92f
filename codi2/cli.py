"""`codi2 …` command line. Each subcommand is a thin wrapper over the library.

    codi2 describe CONFIG [--json]                 parameters and memory, no weights needed
    codi2 init CONFIG --out DIR [--seed N]          build a model from config and save it
    codi2 chat --model DIR [--image P]… "PROMPT" --out DIR [--seed N] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from .io import setup_logging

log = logging.getLogger("codi2")


def _describe(args: argparse.Namespace) -> int:
    from .config import load_model_config
    from .describe import describe

    d = describe(load_model_config(args.config, args.override))
    print(json.dumps(d.to_dict(), indent=2) if args.json else d.to_text())
    return 0


def _init(args: argparse.Namespace) -> int:
    from .config import load_model_config
    from .pipeline import init_pipeline

    cfg = load_model_config(args.config, args.override)
    out = init_pipeline(cfg, args.out, seed=args.seed, config_dir=Path(args.config).parent)
    print(f"saved a new codi2 model to {out}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .conversation import Message, Part
    from .generation import SamplingOptions
    from .pipeline import CoDi2Pipeline, write_reply

    parts = [Part(type=kind, path=p) for kind in ("image", "audio", "video") for p in (getattr(args, kind) or [])]
    if args.prompt:
        parts.append(Part.from_text(args.prompt))
    if not parts:
        print("codi2 chat: give a PROMPT and/or --image/--audio/--video files", file=sys.stderr)
        return 2
    pipe = CoDi2Pipeline.from_pretrained(args.model, device=args.device, overrides=args.override)
    for p in parts:
        if p.type != "text":
            pipe.model.load_part(p)  # fail early with a MediaError naming the file
    opts = SamplingOptions(seed=args.seed, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_p=args.top_p, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
                           prefix=args.prefix)
    reply = pipe.chat(Message("user", parts), opts)
    out = Path(args.out)
    manifest = {"schema": 1, "model": str(args.model), "seed": args.seed,
                "messages": [Message("user", parts).to_dict(), write_reply(reply, out)]}
    (out / "reply.json").write_text(json.dumps(manifest, indent=2))
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        for p in manifest["messages"][1]["content"]:
            print(p["text"] if p["type"] == "text" else f"[{p['type']}: {out / p['path']}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codi2", description="CoDi-2-style any-to-any multimodal chat")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    d = sub.add_parser("describe", help="parameter counts and memory estimates of a config (no weights needed)")
    d.add_argument("config", help="model config YAML or preset name (tiny, mini, codi2-7b)")
    d.add_argument("override", nargs="*", help="key=value overrides")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_describe)

    i = sub.add_parser("init", help="build a model from a config (random tiny parts or local real weights) and save it")
    i.add_argument("config")
    i.add_argument("override", nargs="*", help="key=value overrides")
    i.add_argument("--out", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=_init)

    c = sub.add_parser("chat", help="one non-interactive turn: writes the reply's media and reply.json to --out")
    c.add_argument("prompt", nargs="?", default="")
    c.add_argument("--model", required=True, help="a codi2 model directory")
    c.add_argument("--image", action="append")
    c.add_argument("--audio", action="append")
    c.add_argument("--video", action="append")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-new-tokens", type=int)
    c.add_argument("--temperature", type=float)
    c.add_argument("--top-p", type=float)
    c.add_argument("--steps", type=int, help="diffusion steps")
    c.add_argument("--guidance", type=float)
    c.add_argument("--scheduler", choices=["ddim", "dpm++"])
    c.add_argument("--prefix", default="", help="the reply starts with this text; '<img>' / '<aud>' / '<vid>' in it "
                   "make the model produce that media there (e.g. --prefix 'Here: <img>')")
    c.add_argument("--device", default=None)
    c.add_argument("--override", action="append", default=[], help="key=value config override (repeatable)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_chat)

    import importlib

    from .plugins import load_plugins

    plugins = load_plugins()  # first: they may register suites that `codi2 eval` lists
    for mod in [importlib.import_module(m) for m in LIBRARY_COMMANDS] + plugins:
        if hasattr(mod, "register"):
            mod.register(sub)
    return p


# The library's modules that add subcommands through `register(subparsers)`; the packages above it add theirs
# as plugins (codi2.plugins: the `codi2.plugins` entry points).
LIBRARY_COMMANDS: tuple[str, ...] = ("codi2.media", "codi2.data", "codi2.targets", "codi2.eval")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, timestamps=False)
    if args.cmd is None:
        parser.print_help()
        return 0
    from .media import MediaError

    try:
        return int(args.func(args) or 0)
    except (MediaError, FileNotFoundError, ValueError) as e:
        print(f"codi2 {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
