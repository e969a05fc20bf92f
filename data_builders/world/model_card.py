"""The mini model's card (``MODEL_CARD.md`` in the model folder), read by the chat's "About this model"
(:mod:`codi2.model_card`). Written by the bundle step; the words come from the world itself.

    python -m data_builders.world.model_card checkpoints/codi2-mini
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from codi2.model_card import CARD_FILE

from .world import COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, SIZES


def card_text(name: str = "codi2-mini") -> str:
    return f"""# {name}

A small CoDi-2 that knows one made-up world: coloured shapes, the sounds they make and how they move. Ask about that world; it knows nothing else.

## Trained on
A procedural world, trained from scratch on a CPU: {len(SHAPES)} shapes ({", ".join(SHAPES)}) in {len(COLOURS)} colours ({", ".join(COLOURS)}), {" or ".join(SIZES)}, at the {", ".join(POSITIONS)}; each colour has its own pitch and each shape its own tone; clips show one shape moving.

## Can make
Pictures ({IMAGE_SIZE} px), 1-second sounds, 8-frame clips and short text; it describes pictures, sounds and clips of the world, edits what it made, and learns an edit from examples (A → A′, B → ?).

## Limits
Its language model knows only the world's words. It reads everyday wordings, typos and chat layouts, but a request that hinges on a word it never saw may be misread; name the shape, colour, sound or clip you want. Asked about anything outside the world, it says what it can make and gives a request to try.

## Try
- Draw a large red circle on the left.
- Play the sound of a small green star.
- Make a video of a blue square moving up.
- Make it yellow. (after a picture)
"""


def write_model_card(out_dir: "str | Path", name: str = "codi2-mini") -> Path:
    path = Path(out_dir) / CARD_FILE
    path.write_text(card_text(name), encoding="utf-8")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_builders.world.model_card", description=__doc__)
    p.add_argument("out_dir", help="the model folder")
    print(write_model_card(p.parse_args(argv).out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
