"""CLIP byte-level BPE tokenizer for the ImageBind text tower (OpenAI CLIP ``SimpleTokenizer`` behaviour).

Reads the shipped vocabulary ``data/bpe_simple_vocab_16e6.txt.gz`` (49,152 merges' worth of ids +
``<|startoftext|>`` 49406 + ``<|endoftext|>`` 49407). Output rows are
``[49406, ids..., 49407, 0, 0, ...]``, truncated so that the end token always fits.

Difference from the reference: the reference runs ``ftfy.fix_text`` before cleaning; here the
cleaning is ftfy-free: NFC normalisation, curly quotes straightened, ``html.unescape`` twice,
whitespace collapsed, lowercased. Text without mojibake, ligatures or full-width characters
tokenizes identically (tested against the reference).
"""
from __future__ import annotations

import gzip
import html
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence, Union

import regex
import torch

SOT_TOKEN = 49406
EOT_TOKEN = 49407
_NUM_MERGES = 49152 - 256 - 2
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})


def default_vocab_path() -> Path:
    """The BPE merges file shipped as package data."""
    return Path(str(resources.files("codi2.encoders") / "data" / "bpe_simple_vocab_16e6.txt.gz"))


@lru_cache()
def byte_to_unicode() -> dict[int, str]:
    """Reversible map of the 256 bytes to printable unicode characters (GPT-2 / CLIP)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def clean_text(text: str) -> str:
    """ftfy-free version of CLIP's ``basic_clean`` + ``whitespace_clean`` + lowercase."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class BPETokenizer:
    """Text -> CLIP BPE ids.

    Args:
        vocab_path: the gzip'd merges file; default: the shipped one.
        context_length: row length of :meth:`__call__` (77 for ImageBind).
    """

    def __init__(self, vocab_path: Union[str, Path, None] = None, context_length: int = 77) -> None:
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        if not path.is_file():
            raise FileNotFoundError(f"BPE vocabulary not found: {path} (expected bpe_simple_vocab_16e6.txt.gz)")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start + end token), got {context_length}")
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
        byte_chars = list(byte_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        if self.encoder["<|startoftext|>"] != SOT_TOKEN or self.encoder["<|endoftext|>"] != EOT_TOKEN:
            raise ValueError(f"{path} is not the CLIP BPE vocabulary (special token ids differ)")
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self._cache: dict[str, list[str]] = {t: [t] for t in ("<|startoftext|>", "<|endoftext|>")}

    def _bpe(self, word: str) -> list[str]:
        """Greedy lowest-rank merging of one pre-token (already byte-mapped)."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, best = min(pairs)
            if rank == float("inf"):
                break
            first, second = parts[best], parts[best + 1]
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: list[int] = []
        for token in _PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(mapped))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> torch.Tensor:
        """Returns (B, context_length) long ids: start, text, end (the end token is kept on truncation), zeros."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__} at index {row}")
            ids = ([SOT_TOKEN] + self.encode(text))[: length - 1] + [EOT_TOKEN]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
