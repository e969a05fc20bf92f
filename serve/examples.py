"""One-click chat examples built from the mini world (docs/design.md#the-mini-world).

The media are rendered on the fly with ``data_builders.world`` (a few KB, milliseconds), so the
examples need no bundled files and show the same objects the mini model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from codi2.media import save_audio, save_image, save_video


@dataclass
class ChatExample:
    text: str
    files: list[str] = field(default_factory=list)
    display: Optional[str] = None  # what the example card shows (default: the text)
    icon: Optional[str] = None  # an image shown on the card

    def to_gradio(self) -> dict:
        """The ``gr.Chatbot(examples=…)`` form."""
        d: dict = {"text": self.text, "display_text": self.display or self.text}
        if self.icon:
            d["icon"] = self.icon
        return d


def build_examples(out_dir: "str | Path") -> list[ChatExample]:
    """Renders the example media into ``out_dir`` and returns the examples (generation, captioning,
    cross-modal, an in-context exemplar prompt A : A′ :: B : ?, a joint image + sound reply)."""
    from data_builders.world.world import WorldObject, render_image, render_sound, render_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def image(name: str, obj: WorldObject, seed: int = 0) -> str:
        return str(save_image(render_image(obj, seed), out / f"{name}.png"))

    square = image("blue-square", WorldObject("square", "blue", "large", "center"))
    sound = str(save_audio(render_sound(WorldObject("star", "green", "large"), 0), out / "green-star.wav"))
    video = str(save_video(render_video(WorldObject("circle", "orange", "small"), "up", 0), out / "orange-circle-up.mp4"))
    a = image("icl-a", WorldObject("circle", "red", "large", "left"), 1)
    a2 = image("icl-a2", WorldObject("circle", "green", "large", "left"), 1)
    b = image("icl-b", WorldObject("triangle", "red", "small", "top"), 2)
    return [
        ChatExample("Draw a large red circle on the left.", display="🎨 Draw a large red circle"),
        ChatExample("What is in this picture?", [square], display="🖼️ What is in this picture?", icon=square),
        ChatExample("Draw the object that makes this sound.", [sound], display="🔊 Draw what makes this sound"),
        ChatExample("Look at these examples. Now do the same to this one:", [a, a2, b],
                    display="🧩 In-context edit: A → A′, B → ?", icon=a2),
        ChatExample("Show me a small yellow triangle and let me hear it.", display="🎨🔊 Picture and sound in one reply"),
        ChatExample("What happens in this clip?", [video], display="🎬 Describe a video"),
    ]
