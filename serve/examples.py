"""One-click chat examples, from the model folder: ``<model>/examples/examples.json`` and its media.

    {"schema": 1, "examples": [{"text": "Draw a large red circle.", "files": ["a.png"],
                                "display": "🎨 Draw a circle", "icon": "a.png"}, …]}

``files`` and ``icon`` are relative to the examples folder. A model folder without one shows no examples.
The mini world writes its own (``python -m data_builders.world.examples MODEL_DIR/examples``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

EXAMPLES_DIR, EXAMPLES_FILE = "examples", "examples.json"


class ExamplesError(ValueError):
    """A model folder's examples.json is malformed or names a file that is not there."""


@dataclass
class ChatExample:
    text: str
    files: list[str] = field(default_factory=list)  # absolute paths
    display: Optional[str] = None  # what the example card shows (default: the text)
    icon: Optional[str] = None  # an image shown on the card

    def to_gradio(self) -> dict:
        """The ``gr.Chatbot(examples=…)`` form."""
        d: dict = {"text": self.text, "display_text": self.display or self.text}
        if self.icon:
            d["icon"] = self.icon
        return d


def load_examples(model_dir: "str | Path | None") -> list[ChatExample]:
    """The examples shipped in ``model_dir/examples/examples.json`` (none if the file is absent).
    Raises :class:`ExamplesError` naming the file and the entry that is wrong."""
    if model_dir is None:
        return []
    folder = Path(model_dir) / EXAMPLES_DIR
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExamplesError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("examples"), list):
        raise ExamplesError(f"{path}: expected {{\"schema\": 1, \"examples\": [...]}}")
    out = []
    for i, ex in enumerate(data["examples"]):
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str) or not ex["text"].strip():
            raise ExamplesError(f"{path}: examples[{i}] needs a non-empty \"text\"")
        files = ex.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ExamplesError(f"{path}: examples[{i}].files must be a list of paths relative to {folder}")
        paths = [folder / f for f in files]
        icon = folder / ex["icon"] if ex.get("icon") else None
        missing = [str(p) for p in paths + ([icon] if icon else []) if not p.is_file()]
        if missing:
            raise ExamplesError(f"{path}: examples[{i}] names files that are not there: {', '.join(missing)}")
        out.append(ChatExample(ex["text"], [str(p) for p in paths], ex.get("display"), str(icon) if icon else None))
    return out
