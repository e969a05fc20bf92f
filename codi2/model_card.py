"""What a model folder says about itself: its model card (``MODEL_CARD.md``), for a chat front end's
"About this model".

    # codi2-mini                                   <- the name
    A small CoDi-2 trained on …                     <- the summary (first paragraph)
    ## Trained on                                   <- sections: "Trained on", "Can make", "Try" (…any others)
    …
    ## Try
    - Draw a large red circle on the left.          <- example requests: the list items of "Try"

A folder without a card gets one made from its ``config.yaml``: the name, the ``description`` key when the
YAML has one, and the media it takes and makes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

CARD_FILE = "MODEL_CARD.md"
MAX_CARD_CHARS = 8000  # a card is a short page; longer text is cut


@dataclass
class ModelCard:
    name: str
    summary: str
    sections: dict[str, str] = field(default_factory=dict)  # title -> markdown
    examples: list[str] = field(default_factory=list)  # example requests
    source: str = ""  # the file it came from ("" when made from the config)

    @property
    def trained_on(self) -> str:
        return self.section("trained on")

    @property
    def can_make(self) -> str:
        return self.section("can make")

    def section(self, title: str) -> str:
        return next((v for k, v in self.sections.items() if k.lower() == title), "")

    def to_dict(self) -> dict:
        return {"name": self.name, "summary": self.summary, "trained_on": self.trained_on,
                "can_make": self.can_make, "examples": list(self.examples), "sections": dict(self.sections),
                "source": self.source}

    def markdown(self) -> str:
        """The card as one markdown text (summary, then its sections)."""
        out = [self.summary]
        for title, body in self.sections.items():
            out.append(f"**{title}**\n\n{body}")
        return "\n\n".join(x for x in out if x.strip())


def parse_card(text: str, default_name: str = "model", source: str = "") -> ModelCard:
    """A ``MODEL_CARD.md`` text as a :class:`ModelCard`."""
    text = text[:MAX_CARD_CHARS]
    name, summary_lines, sections, current = default_name, [], {}, None
    for line in text.splitlines():
        if m := re.match(r"^#\s+(.+?)\s*$", line):
            name = m.group(1)
        elif m := re.match(r"^##\s+(.+?)\s*$", line):
            current = m.group(1)
            sections[current] = []
        elif current is None:
            summary_lines.append(line)
        else:
            sections[current].append(line)
    body = {k: "\n".join(v).strip() for k, v in sections.items()}
    summary = "\n".join(summary_lines).strip().split("\n\n")[0].strip()
    try_ = next((v for k, v in body.items() if k.lower() in ("try", "example requests", "examples")), "")
    examples = [m.group(1).strip() for m in re.finditer(r"^\s*[-*]\s+(.+)$", try_, re.M)]
    return ModelCard(name, summary, body, examples, source)


def card_from_config(name: str, description: str, takes: Sequence[str], makes: Sequence[str]) -> ModelCard:
    """The card of a folder without ``MODEL_CARD.md``."""
    summary = description.strip() or f"{name}: a codi2 model."
    sections = {"Takes": ", ".join(takes) or "text only", "Can make": ", ".join(["text", *makes])}
    return ModelCard(name, summary, sections)


def load_model_card(model_dir: "str | Path | None", name: str = "model", takes: Sequence[str] = (),
                    makes: Sequence[str] = ()) -> ModelCard:
    """The card of ``model_dir``: its ``MODEL_CARD.md``, else one made from ``config.yaml`` (``description``) and
    the modalities given."""
    folder = Path(model_dir) if model_dir is not None else None
    if folder is not None and (folder / CARD_FILE).is_file():
        return parse_card((folder / CARD_FILE).read_text(encoding="utf-8"), name, str(folder / CARD_FILE))
    description = ""
    if folder is not None and (folder / "config.yaml").is_file():
        description = _config_description(folder / "config.yaml")
    return card_from_config(name, description, takes, makes)


def _config_description(path: Path) -> str:
    import yaml

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    value: Optional[Any] = data.get("description") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
