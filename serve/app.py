"""Gradio chat app (UI only; all logic lives in codi2). Placeholder until the chat UI lands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "codi2-mini"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.app")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args(argv)
    if not Path(args.model).is_dir():
        print(f"codi2 chat: not yet available — the bundled mini model ({args.model}) has not been trained yet, "
              "and the Gradio app is still being built. Pass --model DIR once you have a CoDi2Pipeline directory.",
              file=sys.stderr)
        return 0
    print("codi2 chat: the Gradio app is not yet available in this version.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
