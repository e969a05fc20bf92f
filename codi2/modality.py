"""Modalities and the feature-token contract (docs/design.md#feature-tokens).

Input media become ``<img> [IMG_IN]×n_in </img>``; output media are opened by the
model (``<img>``), after which the generator appends the output slots
``[IMG_OUT_0] … [IMG_OUT_{n_out-1}]`` and the closing ``</img>`` itself.
"""
from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"

    @property
    def tag(self) -> str:
        """Short tag used in token names: img / aud / vid."""
        return {"image": "img", "audio": "aud", "video": "vid"}[self.value]

    @property
    def open_token(self) -> str:
        return f"<{self.tag}>"

    @property
    def close_token(self) -> str:
        return f"</{self.tag}>"

    @property
    def in_slot_token(self) -> str:
        return f"[{self.tag.upper()}_IN]"

    def out_slot_tokens(self, n_out: int) -> list[str]:
        return [f"[{self.tag.upper()}_OUT_{i}]" for i in range(n_out)]

    @classmethod
    def parse(cls, value: "str | Modality") -> "Modality":
        """Accepts 'image'/'img', 'audio'/'aud', 'video'/'vid' (any case)."""
        if isinstance(value, Modality):
            return value
        v = str(value).strip().lower()
        for m in cls:
            if v in (m.value, m.tag):
                return m
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown modality {value!r}; allowed: {allowed}")


ALL_MODALITIES: tuple[Modality, ...] = (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO)


def special_tokens(n_out: dict[Modality, int]) -> list[str]:
    """Every special token codi2 adds to the tokenizer, in a fixed order.

    Args:
        n_out: output slot count per modality.
    """
    toks: list[str] = []
    for m in ALL_MODALITIES:
        toks += [m.open_token, m.close_token, m.in_slot_token]
        toks += m.out_slot_tokens(n_out.get(m, 0))
    return toks
