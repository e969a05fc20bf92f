"""The mini world's one-click chat examples, written into a model folder (``<model>/examples/``) where the
chat app finds them (``serve.examples.load_examples``).

The media are world renders (a few KB), so a bundle carries the very objects its model was trained on:

    python -m data_builders.world.examples checkpoints/codi2-mini/examples
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from codi2.media import save_audio, save_image, save_video

from .world import WorldObject, render_image, render_sound, render_video

EXAMPLES_FILE = "examples.json"
EXAMPLES_SCHEMA = 1


def write_examples(out_dir: "str | Path") -> Path:
    """Renders the example media into ``out_dir`` and writes ``examples.json`` beside them (generation,
    captioning, cross-modal, an in-context exemplar prompt A : A′ :: B : ?, a joint image + sound reply, a
    video caption). Returns the JSON file's path; media paths in it are relative to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def image(name: str, obj: WorldObject, seed: int = 0) -> str:
        save_image(render_image(obj, seed), out / f"{name}.png")
        return f"{name}.png"

    square = image("blue-square", WorldObject("square", "blue", "large", "center"))
    save_audio(render_sound(WorldObject("star", "green", "large"), 0), out / "green-star.wav")
    save_video(render_video(WorldObject("circle", "orange", "small"), "up", 0), out / "orange-circle-up.mp4")
    a = image("icl-a", WorldObject("circle", "red", "large", "left"), 1)
    a2 = image("icl-a2", WorldObject("circle", "green", "large", "left"), 1)
    b = image("icl-b", WorldObject("triangle", "red", "small", "top"), 2)
    examples = [
        {"text": "Draw a large red circle on the left.", "display": "🎨 Draw a large red circle"},
        {"text": "What is in this picture?", "files": [square], "display": "🖼️ What is in this picture?",
         "icon": square},
        {"text": "Draw the object that makes this sound.", "files": ["green-star.wav"],
         "display": "🔊 Draw what makes this sound"},
        {"text": "Look at these examples. Now do the same to this one:", "files": [a, a2, b],
         "display": "🧩 In-context edit: A → A′, B → ?", "icon": a2},
        {"text": "Show me a small yellow triangle and let me hear it.", "display": "🎨🔊 Picture and sound in one reply"},
        {"text": "What happens in this clip?", "files": ["orange-circle-up.mp4"], "display": "🎬 Describe a video"},
    ]
    path = out / EXAMPLES_FILE
    path.write_text(json.dumps({"schema": EXAMPLES_SCHEMA, "examples": examples}, indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


# What a right reply to each example card holds, in the cards' order (tests/test_world_examples.py judges the bundle's
# replies with its own world judges, driving the chat state as the app does): per output modality the attributes its
# judge must find, and for ``text`` the attributes the world's caption parser must read in the reply's words.
EXPECTED: tuple[dict[str, dict[str, str]], ...] = (
    {"image": {"shape": "circle", "colour": "red", "size": "large", "position": "left"}},
    {"text": {"shape": "square", "colour": "blue", "size": "large"}},
    {"image": {"shape": "star", "colour": "green", "size": "large"}},
    # A : A' :: B : ?  (red -> green, on a small red triangle at the top); the reply names the change first
    {"text": {"colour": "green"}, "image": {"shape": "triangle", "colour": "green", "size": "small", "position": "top"}},
    {"image": {"shape": "triangle", "colour": "yellow", "size": "small"},
     "audio": {"shape": "triangle", "colour": "yellow", "size": "small"}},
    {"text": {"shape": "circle", "colour": "orange", "direction": "up"}},
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_builders.world.examples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the examples folder, e.g. MODEL_DIR/examples")
    print(write_examples(p.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
