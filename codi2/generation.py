"""Interleaved multi-round generation with a persistent KV cache.

A :class:`ChatSession` holds one conversation. Each turn feeds only the new user tokens
(their media features spliced in at the input slots) through the cached Llama, then samples
text. When the model emits an opening media token (``<img>``/``<aud>``/``<vid>``) the session
appends that modality's ``n_out`` output slots and the closing token itself, runs them in ONE
forward pass, hands the slot hidden states to the output head and the head's conditioning to
the decoder, and goes on sampling after the closing token.

    session = ChatSession(pipeline.model)
    for ev in session.stream(Message("user", [Part("image", path="cat.png"), Part.from_text("Make it blue.")])):
        ...  # TextDelta / MediaStarted / DiffusionProgress / MediaDone / TurnDone / Cancelled

Events are plain dataclasses so a UI can render them without importing torch.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from .config import GenerationConfig
from .conversation import Message, Part
from .modality import ALL_MODALITIES, Modality
from .model import CoDi2Model, SpanBatch

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- events
@dataclass
class TextDelta:
    text: str


@dataclass
class MediaStarted:
    modality: Modality
    index: int  # index of this media in the reply


@dataclass
class DiffusionProgress:
    modality: Modality
    index: int
    step: int
    total: int


@dataclass
class MediaDone:
    modality: Modality
    index: int
    media: Any  # PIL.Image.Image | codi2.media.Audio | codi2.media.Video | None (decode=False)
    conditioning: dict[str, torch.Tensor]  # the head's outputs, (1, *shape) each


@dataclass
class TurnDone:
    message: Message  # the assistant reply
    new_tokens: int  # tokens fed through the LLM this turn (prompt + reply)
    truncated_turns: int  # oldest turns dropped to fit the context this turn


@dataclass
class Cancelled:
    reason: str = "stopped by user"


Event = Union[TextDelta, MediaStarted, DiffusionProgress, MediaDone, TurnDone, Cancelled]


@dataclass
class SamplingOptions:
    """Per-turn options; ``None`` fields fall back to the model's GenerationConfig / decoder config."""

    max_new_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    decode: bool = True  # run the diffusion decoders (False: MediaDone carries only the conditioning)
    steps: Optional[int] = None
    guidance: Optional[float] = None
    scheduler: Optional[str] = None
    allowed_outputs: Optional[Sequence[Modality]] = None  # None: every enabled modality
    max_media: Optional[int] = None
    prefix: str = ""  # the reply starts with this text (assistant prefill); may open media, e.g. "Sure: <img>"


@dataclass
class Turn:
    """One finished exchange of a :class:`ChatSession` (``start``: tokens fed before it; the session sets it)."""

    user: Message
    reply: Message
    start: int = 0


@dataclass
class _InSpan:
    modality: Modality
    start: int
    features: torch.Tensor  # (n_in, D_enc)


# ----------------------------------------------------------------------------- sampling
def sample_next(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator: torch.Generator,
                previous: Sequence[int] = (), repetition_penalty: float = 1.0) -> int:
    """Samples one token id from ``logits`` (V,). ``temperature == 0`` is greedy."""
    logits = logits.float().clone()
    if repetition_penalty != 1.0 and previous:
        idx = torch.tensor(sorted(set(previous)), device=logits.device)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        cum = torch.cumsum(sp, 0)
        drop = cum - sp > top_p
        sp[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, si, sp)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


# ----------------------------------------------------------------------------- session
class ChatSession:
    """One conversation with a :class:`CoDi2Model`.

    Args:
        model: the model (eval mode is set here).
        config: generation defaults (default: the model config's ``generation``).
        use_cache: keep the KV cache across steps and turns (False recomputes the whole
            sequence at every step — the reference for tests and benchmarks).
        slots_in_one_pass: feed a media span's output slots in one forward pass (False: one
            token per pass, for benchmarks).
    """

    def __init__(self, model: CoDi2Model, config: Optional[GenerationConfig] = None, use_cache: bool = True,
                 slots_in_one_pass: bool = True):
        self.model = model.eval()
        self.config = config or model.cfg.generation
        self.use_cache = use_cache
        self.slots_in_one_pass = slots_in_one_pass
        self.builder = model.builder
        self.max_context = self.config.max_context or model.cfg.llm.max_position_embeddings
        self.feature_cache: dict = {}  # (modality, content key) -> (n_in, D_enc)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forgets the conversation (the media feature cache is kept)."""
        self.turns: list[Turn] = []
        self._ids: list[int] = []  # tokens whose keys/values are in the cache
        self._pending: list[int] = []  # sampled but not yet fed (the last reply's end token)
        self._in_spans: list[_InSpan] = []
        self._cache = None

    @property
    def history(self) -> list[Message]:
        out: list[Message] = []
        for t in self.turns:
            out += [t.user, t.reply]
        return out

    @property
    def num_tokens(self) -> int:
        return len(self._ids)

    def cancel(self) -> None:
        """Stops the running turn (from another thread); the turn is rolled back."""
        self._cancel.set()

    def undo(self) -> Optional[Turn]:
        """Removes the last turn (user message and reply); returns it."""
        if not self.turns:
            return None
        t = self.turns.pop()
        self.rollback(t.start)
        return t

    def regenerate(self, options: Optional[SamplingOptions] = None) -> Iterator[Event]:
        """Undoes the last turn and answers its user message again."""
        t = self.undo()
        if t is None:
            raise ValueError("nothing to regenerate: the conversation is empty")
        return self.stream(t.user, options)

    def keep_last(self, n: int) -> int:
        """Keeps only the last ``n`` turns (re-encoding what is kept when any are dropped); returns how many went."""
        drop = max(0, len(self.turns) - n)
        if drop:
            del self.turns[:drop]
            self._rebuild()
        return drop

    def restore(self, turns: Sequence[Turn]) -> None:
        """Makes ``turns`` the conversation, as if they had been generated (the history is re-encoded)."""
        self.turns = list(turns)
        self._rebuild()

    def rollback(self, n: int) -> None:
        """Forgets every fed token after the first ``n`` (the KV cache is cropped; ``turns`` is the caller's)."""
        remove = len(self._ids) - n
        self._ids = self._ids[:n]
        self._in_spans = [s for s in self._in_spans if s.start < n]
        self._pending = [self.builder.eos_id] if self.turns else []
        if self._cache is not None and remove > 0:
            self._cache.crop(-remove)  # transformers 5: a negative count removes that many tokens
            if self._cache.get_seq_length() != n:
                raise RuntimeError(f"KV cache has {self._cache.get_seq_length()} tokens after rollback, expected {n}")

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def feed(self, ids: list[int], spans: Sequence[_InSpan] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Feeds ``ids`` (spans relative to the session) and returns (logits (n, V), hidden (n, D)) for them."""
        model = self.model
        dev = model.llm.device
        start = len(self._ids)
        self._ids += ids
        self._in_spans += list(spans)
        if self.use_cache:
            feed_ids, feed_spans, offset = ids, [s for s in spans], start
        else:
            feed_ids, feed_spans, offset = self._ids, self._in_spans, 0
        inputs = {}
        for m in {s.modality for s in feed_spans}:
            ss = [s for s in feed_spans if s.modality is m]
            inputs[m] = SpanBatch(torch.zeros(len(ss), dtype=torch.long, device=dev),
                                  torch.tensor([s.start - offset for s in ss], device=dev),
                                  features=torch.stack([s.features for s in ss]))
        emb = model.embed(torch.tensor([feed_ids], device=dev), inputs)
        if self.use_cache:
            if self._cache is None:
                from transformers import DynamicCache

                self._cache = DynamicCache()
            logits, hidden, self._cache = model.llm.forward(inputs_embeds=emb, past_key_values=self._cache, use_cache=True)
        else:
            logits, hidden, _ = model.llm.forward(inputs_embeds=emb)
        return logits[0, -len(ids):], hidden[0, -len(ids):]

    # ------------------------------------------------------------------ turn
    def send(self, message: "Message | str", options: Optional[SamplingOptions] = None) -> Message:
        """Runs a whole turn; returns the assistant reply (raises :class:`GenerationCancelled` if stopped)."""
        reply = None
        for ev in self.stream(message, options):
            if isinstance(ev, TurnDone):
                reply = ev.message
            elif isinstance(ev, Cancelled):
                raise GenerationCancelled(ev.reason)
        assert reply is not None
        return reply

    def stream(self, message: "Message | str", options: Optional[SamplingOptions] = None) -> Iterator[Event]:
        """Runs one turn, yielding events as they happen. See the module docstring."""
        if isinstance(message, str):
            message = Message("user", [Part.from_text(message)])
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this session is already generating; wait for the turn to finish or cancel it")
        self._cancel.clear()
        turn_start = len(self._ids)
        pending_before = list(self._pending)
        try:
            yield from self._turn(message, options or SamplingOptions())
        except _CancelledInternal as e:
            self.rollback(turn_start)
            self._pending = pending_before
            yield Cancelled(str(e) or "stopped by user")
        except BaseException:
            self.rollback(turn_start)
            self._pending = pending_before
            raise
        finally:
            self._lock.release()

    def _opts(self, o: SamplingOptions) -> SamplingOptions:
        c = self.config
        return dataclasses.replace(
            o,
            max_new_tokens=o.max_new_tokens if o.max_new_tokens is not None else c.max_new_tokens,
            temperature=o.temperature if o.temperature is not None else c.temperature,
            top_p=o.top_p if o.top_p is not None else c.top_p,
            top_k=o.top_k if o.top_k is not None else c.top_k,
            repetition_penalty=o.repetition_penalty if o.repetition_penalty is not None else c.repetition_penalty,
            seed=o.seed if o.seed is not None else (c.seed if c.seed is not None else random.randrange(2**31)),
            max_media=o.max_media if o.max_media is not None else c.max_media_per_reply,
        )

    def _turn(self, user: Message, o: SamplingOptions) -> Iterator[Event]:
        model, b = self.model, self.builder
        o = self._opts(o)
        gen = torch.Generator().manual_seed(int(o.seed))
        piece = b.encode_turn(self.history, user)
        # 1. media features of this turn's inputs (encoded once per content, cached per session)
        feats: dict[int, torch.Tensor] = {}
        for m in ALL_MODALITIES:
            idx = [i for i, s in enumerate(piece.spans) if s.modality is m]
            if idx:
                f = model.encode_media(m, [piece.spans[i].part for i in idx], self.feature_cache)
                feats.update({i: f[j] for j, i in enumerate(idx)})
        # 2. make room: drop the oldest turns if this turn cannot fit
        truncated = 0
        need = len(self._pending) + len(piece.ids) + o.max_new_tokens + sum(n + 1 for n in b.n_out.values())
        while self.turns and len(self._ids) + need > self.max_context:
            self.turns.pop(0)
            truncated += 1
            self._rebuild()
            piece = b.encode_turn(self.history, user)
            need = len(self._pending) + len(piece.ids) + o.max_new_tokens + sum(n + 1 for n in b.n_out.values())
        if len(self._ids) + need > self.max_context:
            raise ValueError(f"this message needs {len(piece.ids)} tokens (+{o.max_new_tokens} for the reply), more than "
                             f"the context of {self.max_context} tokens allows; shorten it or send fewer media")
        # 3. prefill the new turn in one pass
        offset = len(self._ids) + len(self._pending)
        spans = [_InSpan(s.modality, offset + s.start, feats[i]) for i, s in enumerate(piece.spans)]
        fed_before = len(self._ids)
        logits, _ = self.feed(self._pending + piece.ids, spans)
        self._pending = []
        next_logits = logits[-1]
        # 4. sample
        blocked = set(b.in_slot_ids) | set(b.out_slot_ids) | {b.ids[m.close_token] for m in ALL_MODALITIES}
        if self.model.tokenizer.pad_token_id is not None and self.model.tokenizer.pad_token_id != b.eos_id:
            blocked.add(self.model.tokenizer.pad_token_id)
        allowed = set(o.allowed_outputs) if o.allowed_outputs is not None else set(model.heads.keys())
        allowed = {Modality.parse(m) for m in allowed} & {m for m in model.n_out if model.n_out[m] > 0}
        reply_ids: list[int] = []
        text_ids: list[int] = []
        parts: list[Part] = []
        text_so_far = ""
        n_media = 0
        forced = self.model.tokenizer(o.prefix, add_special_tokens=False)["input_ids"] if o.prefix else []
        bad = [t for t in forced if t in blocked]
        if bad:
            raise ValueError(f"prefix {o.prefix!r} contains slot or closing tokens "
                             f"{self.model.tokenizer.convert_ids_to_tokens(bad)}; only text and opening media tokens are allowed")
        for _ in range(o.max_new_tokens):
            if self._cancel.is_set():
                raise _CancelledInternal()
            block = set(blocked)
            for m in ALL_MODALITIES:
                if m in b.n_out and (m not in allowed or n_media >= o.max_media):
                    block.add(b.ids[m.open_token])
            lg = next_logits.clone()
            lg[list(block)] = float("-inf")
            if forced:
                tok = forced.pop(0)
            else:
                tok = sample_next(lg, o.temperature, o.top_p, o.top_k, gen, reply_ids, o.repetition_penalty)
            reply_ids.append(tok)
            if tok == b.eos_id:
                self._pending = [tok]
                break
            if tok in b.open_ids:
                m = b.open_ids[tok]
                # flush the text before the media
                if text_ids:
                    parts.append(Part.from_text(b.decode_text(text_ids).strip()))
                    text_ids, text_so_far = [], ""
                yield MediaStarted(m, n_media)
                span = [tok] + b.output_span_ids(m)
                if self.slots_in_one_pass:
                    lg_span, h_span = self.feed(span)
                else:
                    outs = [self.feed([t]) for t in span]
                    lg_span = torch.cat([x[0] for x in outs])
                    h_span = torch.cat([x[1] for x in outs])
                reply_ids += span[1:]
                slots = h_span[1:1 + b.n_out[m]][None]  # (1, n_out, D)
                head = model.heads[m.value]
                with torch.no_grad():
                    cond = head(slots.to(head.trunk[0].weight.dtype))
                media = None
                if o.decode:
                    media = yield from self._decode(m, n_media, cond, o, seed=int(o.seed) + n_media)
                cond = {k: v.detach().cpu() for k, v in cond.items()}
                parts.append(Part(type=m.value, media=media, conditioning=cond))
                yield MediaDone(m, n_media, media, cond)
                n_media += 1
                next_logits = lg_span[-1]
                continue
            text_ids.append(tok)
            new_text = b.decode_text(text_ids)
            if len(new_text) > len(text_so_far) and new_text.startswith(text_so_far):
                yield TextDelta(new_text[len(text_so_far):])
                text_so_far = new_text
            logits, _ = self.feed([tok])
            next_logits = logits[-1]
        else:
            # max_new_tokens reached: close the reply so the next turn starts cleanly
            self._pending = [b.eos_id]
        if text_ids:
            final = b.decode_text(text_ids).strip()
            if final:
                parts.append(Part.from_text(final))
        reply = Message("assistant", parts)
        self.turns.append(Turn(user, reply, fed_before))
        yield TurnDone(reply, len(self._ids) - fed_before, truncated)

    def _decode(self, m: Modality, index: int, cond: dict[str, torch.Tensor], o: SamplingOptions, seed: int) -> Iterator[Event]:
        """Runs the decoder in a worker thread, yielding progress events; returns the media."""
        dec = self.model.decoder(m)
        q: "queue.Queue[tuple[str, Any]]" = queue.Queue()

        def work() -> None:
            try:
                media = dec.decode(cond, steps=o.steps, guidance=o.guidance, scheduler=o.scheduler, seed=seed,
                                   progress=lambda i, n: q.put(("progress", (i, n))),
                                   should_stop=self._cancel.is_set)
                q.put(("done", media[0]))
            except BaseException as e:  # handed to the generating thread and re-raised there
                q.put(("error", e))

        th = threading.Thread(target=work, name=f"codi2-decode-{m.value}", daemon=True)
        th.start()
        while True:
            kind, val = q.get()
            if kind == "progress":
                yield DiffusionProgress(m, index, int(val[0]), int(val[1]))
            elif kind == "done":
                th.join()
                return val
            else:
                th.join()
                from .decoders import Cancelled as DecoderCancelled

                if isinstance(val, DecoderCancelled):
                    raise _CancelledInternal() from val
                raise val

    def _rebuild(self) -> None:
        """Re-encodes the retained history from scratch (after dropping old turns)."""
        turns = self.turns
        self.reset()
        self.turns = turns
        hist = self.history
        if not hist:
            return
        enc = self.builder.encode(hist)
        spans = []
        for m in ALL_MODALITIES:
            idx = [i for i, s in enumerate(enc.spans) if s.modality is m and not s.output]
            if idx:
                f = self.model.encode_media(m, [enc.spans[i].part for i in idx], self.feature_cache)
                spans += [_InSpan(m, enc.spans[i].start, f[j]) for j, i in enumerate(idx)]
        # turn boundaries in the rebuilt sequence
        starts, prev = [], 0
        for k in range(len(turns)):
            starts.append(prev)
            prev = len(self.builder.encode(hist[:2 * k + 2]))
        for t, s in zip(turns, starts):
            t.start = s
        self.feed(enc.ids, spans)
        self._pending = []


class GenerationCancelled(RuntimeError):
    """Raised by :meth:`ChatSession.send` when the turn was cancelled."""


class _CancelledInternal(Exception):
    pass
