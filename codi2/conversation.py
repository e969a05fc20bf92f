"""Conversations: the interleaved message schema, prompt building and label masks.

A conversation is a list of :class:`Message`; each message holds interleaved :class:`Part`
objects (text, image, audio, video). The manifest form (docs/design.md#manifest-schema) is the dict form of
the same objects (:func:`message_from_dict` / :meth:`Message.to_dict`).

Token layout (docs/design.md#feature-tokens), produced by :class:`PromptBuilder`:

* input media (user turns):   ``<img> [IMG_IN]×n_in </img>``; the ``[IMG_IN]`` positions later
  receive projected encoder features;
* output media (assistant):   ``<img> [IMG_OUT_0] … [IMG_OUT_{n_out-1}] </img>``; the slot
  hidden states feed the output head.

Text is rendered through the tokenizer's chat template (Llama-2 format). Each message's tokens
are the *difference* between the template rendered over ``messages[:k+1]`` and over
``messages[:k]``, tokenized on its own: so a conversation's tokens are the concatenation of its
turns' tokens, which is what the session's KV cache relies on (a new turn costs only its tokens).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from .losses import IGNORE_INDEX
from .modality import ALL_MODALITIES, Modality

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text",) + tuple(m.value for m in ALL_MODALITIES)


@dataclass
class Part:
    """One piece of a message: text, or one media item.

    Attributes:
        type: ``text`` | ``image`` | ``audio`` | ``video``.
        text: the text (text parts).
        path: the media file (media parts; may be relative to a manifest).
        media: the loaded media (``PIL.Image.Image`` / ``codi2.media.Audio`` / ``codi2.media.Video``).
        caption: what an *output* media shows; the audio/video head targets are computed from it.
        key: a content hash identifying the media (feature caches are keyed by it).
        conditioning: for generated media, the output head's tensors the decoder was given
            (name -> (1, *shape)); lets a UI decode again with other settings.
    """

    type: str
    text: Optional[str] = None
    path: Optional[str] = None
    media: Any = None
    caption: Optional[str] = None
    key: Optional[str] = None
    conditioning: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.type not in PART_TYPES:
            raise ValueError(f"part type {self.type!r} is not one of {PART_TYPES}")
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type != "text" and self.path is None and self.media is None and self.key is None \
                and self.conditioning is None:
            raise ValueError(f"an {self.type} part needs 'path' or loaded 'media'")

    @property
    def modality(self) -> Optional[Modality]:
        return None if self.type == "text" else Modality(self.type)

    @classmethod
    def from_text(cls, text: str) -> "Part":
        return cls(type="text", text=text)

    def to_dict(self) -> dict:
        if self.type == "text":
            return {"type": "text", "text": self.text}
        d: dict = {"type": self.type, "path": self.path}
        if self.caption is not None:
            d["caption"] = self.caption
        return d


@dataclass
class Message:
    role: str
    content: list[Part] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r} is not one of {ROLES}")
        if isinstance(self.content, str):
            self.content = [Part.from_text(self.content)]

    @property
    def media_parts(self) -> list[Part]:
        return [p for p in self.content if p.type != "text"]

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.content if p.type == "text")

    def to_dict(self) -> dict:
        return {"role": self.role, "content": [p.to_dict() for p in self.content]}


def message_from_dict(d: dict, where: str = "message") -> Message:
    """Parses the manifest form of a message; errors name ``where``."""
    if not isinstance(d, dict) or "role" not in d or "content" not in d:
        raise ValueError(f"{where}: expected an object with 'role' and 'content', got {str(d)[:80]!r}")
    content = d["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ValueError(f"{where}.content must be a list of parts or a string")
    parts = []
    for i, p in enumerate(content):
        if not isinstance(p, dict) or "type" not in p:
            raise ValueError(f"{where}.content[{i}]: expected an object with 'type'")
        unknown = set(p) - {"type", "text", "path", "caption"}
        if unknown:
            raise ValueError(f"{where}.content[{i}]: unknown keys {sorted(unknown)}; allowed: type, text, path, caption")
        try:
            parts.append(Part(type=p["type"], text=p.get("text"), path=p.get("path"), caption=p.get("caption")))
        except ValueError as e:
            raise ValueError(f"{where}.content[{i}]: {e}") from None
    try:
        return Message(role=d["role"], content=parts)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass
class MediaSpan:
    """Where a media item sits in a token sequence.

    Attributes:
        modality: the media's modality.
        output: True for an assistant output span (slots feed the head), False for input slots.
        start: index of the first slot token (after the opening token).
        length: number of slot tokens (n_in or n_out).
        message: index of the message in the conversation.
        part: the :class:`Part`.
    """

    modality: Modality
    output: bool
    start: int
    length: int
    message: int
    part: Part


@dataclass
class Encoded:
    """A tokenized conversation (or a turn of one). ``ids``/``labels``: lists of length T."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    spans: list[MediaSpan] = field(default_factory=list)

    def extend(self, other: "Encoded") -> None:
        off = len(self.ids)
        self.ids += other.ids
        self.labels += other.labels
        self.spans += [MediaSpan(s.modality, s.output, s.start + off, s.length, s.message, s.part) for s in other.spans]

    def __len__(self) -> int:
        return len(self.ids)


class PromptBuilder:
    """Turns messages into token ids, labels and media spans.

    Args:
        tokenizer: a tokenizer with the codi2 special tokens and a chat template.
        n_in: input slot count per modality.
        n_out: output slot count per modality.
        system_prompt: prepended as a system message when non-empty.
    """

    def __init__(self, tokenizer: Any, n_in: dict[Modality, int], n_out: dict[Modality, int], system_prompt: str = ""):
        self.tok = tokenizer
        self.n_in, self.n_out = dict(n_in), dict(n_out)
        self.system_prompt = system_prompt
        self.ids: dict[str, int] = {}
        for m in ALL_MODALITIES:
            names = [m.open_token, m.close_token, m.in_slot_token] + m.out_slot_tokens(self.n_out.get(m, 0))
            for name in names:
                tid = tokenizer.convert_tokens_to_ids(name)
                if tid is None or tid == tokenizer.unk_token_id:
                    raise ValueError(f"tokenizer has no special token {name!r}; load it with codi2.llm.load_tokenizer")
                self.ids[name] = tid
        self.open_ids = {self.ids[m.open_token]: m for m in ALL_MODALITIES}
        self.in_slot_ids = {self.ids[m.in_slot_token]: m for m in ALL_MODALITIES}
        self.out_slot_ids = {self.ids[t]: m for m in ALL_MODALITIES for t in m.out_slot_tokens(self.n_out.get(m, 0))}
        self.eos_id = tokenizer.eos_token_id

    # ------------------------------------------------------------------ rendering
    def output_span_ids(self, m: Modality) -> list[int]:
        """Token ids the generator appends after the model opens an ``m`` span: slots + closing token."""
        return [self.ids[t] for t in m.out_slot_tokens(self.n_out[m])] + [self.ids[m.close_token]]

    def _render_content(self, msg: Message) -> str:
        out = []
        for p in msg.content:
            if p.type == "text":
                out.append(p.text.strip())
                continue
            m = Modality(p.type)
            if msg.role == "assistant":
                if self.n_out.get(m, 0) <= 0:
                    raise ValueError(f"{m.value} output is disabled in this model (n_out=0)")
                out.append(m.open_token + "".join(m.out_slot_tokens(self.n_out[m])) + m.close_token)
            else:
                if self.n_in.get(m, 0) <= 0:
                    raise ValueError(f"{m.value} input is disabled in this model (n_in=0)")
                out.append(m.open_token + m.in_slot_token + m.close_token)  # expanded to n_in after tokenizing
        return " ".join(s for s in out if s)

    def _template(self, msgs: Sequence[Message], add_generation_prompt: bool = False) -> str:
        chat = [{"role": m.role, "content": self._render_content(m)} for m in msgs]
        if not chat:
            return ""
        return self.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _with_system(self, messages: Sequence[Message]) -> list[Message]:
        msgs = list(messages)
        if self.system_prompt and (not msgs or msgs[0].role != "system"):
            msgs = [Message("system", [Part.from_text(self.system_prompt)])] + msgs
        return msgs

    def _tokenize_piece(self, text: str, msg_index: int, msg: Optional[Message], supervised: bool) -> Encoded:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        enc = Encoded()
        media = iter(msg.media_parts) if msg is not None else iter(())
        i = 0
        while i < len(ids):
            t = ids[i]
            if t in self.in_slot_ids:
                m = self.in_slot_ids[t]
                part = next(media, None)
                if part is None:
                    raise ValueError(f"message {msg_index}: its text contains {m.in_slot_token} itself; remove it")
                enc.spans.append(MediaSpan(m, False, len(enc.ids), self.n_in[m], msg_index, part))
                enc.ids += [t] * self.n_in[m]
                enc.labels += [IGNORE_INDEX] * self.n_in[m]
                i += 1
                continue
            if t in self.out_slot_ids:
                m = self.out_slot_ids[t]
                n = self.n_out[m]
                if supervised is False or ids[i:i + n] != self.output_span_ids(m)[:-1]:
                    raise ValueError(f"message {msg_index}: unexpected output slot token in its text")
                part = next(media, None)
                enc.spans.append(MediaSpan(m, True, len(enc.ids), n, msg_index, part))
                enc.ids += ids[i:i + n]
                enc.labels += [IGNORE_INDEX] * n
                i += n
                continue
            enc.ids.append(t)
            enc.labels.append(t if supervised else IGNORE_INDEX)
            i += 1
        return enc

    # ------------------------------------------------------------------ public
    def encode(self, messages: Sequence[Message]) -> Encoded:
        """Tokenizes a whole conversation for training: labels on assistant turns only."""
        msgs = self._with_system(messages)
        enc = Encoded()
        prev = ""
        for k, msg in enumerate(msgs):
            cur = self._template(msgs[:k + 1])
            if not cur.startswith(prev):
                raise RuntimeError("chat template is not prefix-stable; codi2 needs a template whose rendering "
                                   "of messages[:k] is a prefix of messages[:k+1]")
            enc.extend(self._tokenize_piece(cur[len(prev):], k, msg, supervised=msg.role == "assistant"))
            prev = cur
        return enc

    def reply_numbers(self, messages: Sequence[Message]) -> list[int]:
        """For each message as :meth:`encode` indexes them (``MediaSpan.message``; a system prompt it adds
        counts), how many assistant replies the conversation has up to and including it: the round a
        reply's output spans belong to."""
        out, n = [], 0
        for msg in self._with_system(messages):
            n += msg.role == "assistant"
            out.append(n)
        return out

    def encode_turn(self, history: Sequence[Message], user: Message) -> Encoded:
        """Tokens to feed for a new user turn after ``history`` (incl. the generation prompt).

        Span ``message`` indices are relative to the returned piece (always 0).
        """
        if user.role != "user":
            raise ValueError(f"a new turn must be a user message, got role {user.role!r}")
        hist = self._with_system(history) if history else []
        msgs = self._with_system(list(history) + [user])
        prev = self._template(hist) if hist else ""
        cur = self._template(msgs, add_generation_prompt=True)
        if not cur.startswith(prev):
            raise RuntimeError("chat template is not prefix-stable")
        # A system prompt that appears only now (first turn) belongs to this piece.
        return self._tokenize_piece(cur[len(prev):], 0, user, supervised=False)

    def decode_text(self, ids: Iterable[int]) -> str:
        """Decodes reply tokens to text, dropping special and slot tokens."""
        return self.tok.decode([i for i in ids if i not in self.out_slot_ids and i not in self.in_slot_ids],
                               skip_special_tokens=True)


def part_key(part: Part) -> str:
    """A content hash for a media part (cached on ``part.key``): sha256 of the file bytes,
    or of the decoded media when the part has no file."""
    import hashlib

    import numpy as np

    if part.key:
        return part.key
    h = hashlib.sha256(part.type.encode())
    if part.path is not None and part.media is None:
        with open(part.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif part.media is not None:
        media = part.media
        if hasattr(media, "tobytes") and hasattr(media, "size"):  # PIL image
            h.update(f"{media.mode}{media.size}".encode())
            h.update(media.tobytes())
        elif hasattr(media, "samples"):
            h.update(str(media.sample_rate).encode())
            h.update(np.ascontiguousarray(media.samples).tobytes())
        elif hasattr(media, "frames"):
            h.update(str(media.fps).encode())
            h.update(np.ascontiguousarray(media.frames).tobytes())
        else:
            raise TypeError(f"cannot hash media of type {type(media).__name__}")
    else:
        raise ValueError(f"{part.type} part has neither a path nor loaded media")
    part.key = h.hexdigest()[:32]
    return part.key
