"""Serving state for chat front ends, independent of any UI toolkit.

The Gradio app (``serve/app.py``) is a thin layer over this module; any other front end can
use it the same way::

    manager = SessionManager(pipeline, ServeConfig())       # one model, many users
    state = manager.get(session_id)                         # one ChatState per user (LRU, bounded)
    for ev in state.submit("make @2 blue", files=[], options=SamplingOptions()):
        ...   # codi2.generation events, plus TurnFailed for a refused input or a failed turn
    zip_path = state.export()                               # manifest.jsonl (docs/design.md#manifest-schema) + media/

What a :class:`ChatState` adds to a :class:`~codi2.generation.ChatSession`:

* every upload is checked (content sniffing, :class:`ServeConfig` limits, a full decode) and copied
  into the session's own folder before anything runs; a bad file becomes a :class:`TurnFailed`
  event with the :class:`~codi2.media.MediaError` message (server paths replaced by the file name);
* a numbered media registry: every uploaded or generated media gets a number, and ``@N`` in a
  later message (or ``refs=[N]``) feeds that media in again as an input;
* generated media are written to the session folder as they finish (``live`` holds the turn
  being generated, for streaming displays);
* the model's context keeps the last ``max_turns`` turns; the display/export log keeps
  ``max_log_turns``; the media feature cache keeps only what the context still uses;
* generation of all sessions is serialised by one model lock: the weights are shared, and the
  diffusers schedulers inside the decoders are stateful, so two turns must not run at once;
* ``cancel()`` works from any thread, also while the turn is still waiting for the lock.
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from .config import MediaLimits
from .conversation import Message, Part
from .generation import (Cancelled, ChatSession, DiffusionProgress, Event, MediaDone, MediaStarted, SamplingOptions,
                         TextDelta, TurnDone)
from .media import MediaError, detect_kind, load_media, save_media, validate
from .modality import Modality

log = logging.getLogger(__name__)

MEDIA_EXT = {"image": "png", "audio": "wav", "video": "mp4"}
_REF = re.compile(r"(?<![\w@])@(\d+)\b")  # "@3" refers to media number 3
SCHEDULERS = ("ddim", "dpm++")
_END = object()  # end of a turn's event stream


def _serve_media_limits() -> MediaLimits:
    """Tighter than the library defaults: uploads come from strangers."""
    return MediaLimits(max_file_bytes=25 * 2**20, max_image_pixels=4096 * 4096, max_audio_seconds=30.0,
                       max_video_seconds=20.0, max_video_frames=600, max_video_pixels=1280 * 720,
                       max_decoded_bytes=512 * 2**20)


@dataclass
class ServeConfig:
    """Limits and queue settings of a chat server (YAML-loadable: ``load_config(ServeConfig, path)``)."""

    media: MediaLimits = field(default_factory=_serve_media_limits)  # per uploaded file
    max_prompt_chars: int = 2000  # text of one message
    max_files_per_message: int = 8  # uploads + @N references in one message
    max_turns: int = 16  # turns kept in the model's context (older turns stay in the log)
    max_log_turns: int = 100  # turns kept for display and export (their media files too)
    max_sessions: int = 32  # live sessions per server; the least recently used idle one is evicted
    session_idle_seconds: float = 3600.0  # sessions idle longer are dropped
    concurrency_limit: int = 1  # Gradio queue workers for generation events
    max_queue_size: int = 16  # requests waiting in the Gradio queue; more are refused
    lock_timeout_seconds: float = 600.0  # a turn waits this long for the model before giving up
    max_new_tokens: int = 512  # upper bound of the per-turn setting
    max_steps: int = 100  # upper bound of diffusion steps
    max_prefix_chars: int = 200


class ChatInputError(ValueError):
    """A request the server refuses (too long, too many files, bad setting, unknown @N, busy)."""


@dataclass
class TurnFailed:
    """The input was refused or the turn failed; ``message`` is shown to the user. History is unchanged."""

    message: str


ChatEvent = Union[Event, TurnFailed]


@dataclass
class MediaItem:
    """A media of the conversation that can be referenced again as ``@number``."""

    number: int
    kind: str  # image | audio | video
    path: Path  # the session's own copy
    role: str  # user | assistant
    turn: int  # turn number (1-based) it appeared in
    name: str  # original file name (uploads) or the generated file's name

    @property
    def label(self) -> str:
        who = "you" if self.role == "user" else "codi2"
        return f"@{self.number} {self.kind} · {who}, turn {self.turn}"


@dataclass
class LogTurn:
    number: int
    user: Message  # parts carry paths only (no decoded media)
    reply: Message


@dataclass
class Notice:
    """A message shown in the chat that is not part of the conversation (refused input, failed turn)."""

    after_turn: int  # shown after this turn number
    user: Optional[Message]
    text: str


@dataclass
class LiveTurn:
    """The turn being generated: what a streaming display shows."""

    user: Message
    parts: list[Part] = field(default_factory=list)  # text parts grow; media parts have paths once saved
    progress: Optional[str] = None  # e.g. "image 1: step 3/50"


def _light(msg: Message) -> Message:
    """A copy with text and media paths only (no decoded media, no tensors)."""
    return Message(msg.role, [Part(type=p.type, text=p.text, path=p.path, caption=p.caption)
                              for p in msg.content if p.type == "text" or p.path is not None])


def _public(err: BaseException, paths: dict[str, str]) -> str:
    """An error message with server-side paths replaced by the names the user knows."""
    text = str(err)
    for path, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    return text


def sampling_options(cfg: ServeConfig, *, temperature: Optional[float] = None, top_p: Optional[float] = None,
                     max_new_tokens: Optional[int] = None, seed: Optional[int] = None, steps: Optional[int] = None,
                     guidance: Optional[float] = None, scheduler: Optional[str] = None,
                     outputs: Optional[Sequence[str]] = None, prefix: str = "") -> SamplingOptions:
    """Checks UI/API settings against their ranges and returns :class:`SamplingOptions`.

    ``seed`` < 0 means random; ``outputs`` lists the modalities the reply may contain (None: all);
    ``prefix`` is text the reply is forced to start with (``"<img>"`` in it forces an image there).
    """
    def check(name: str, v: Any, lo: float, hi: float) -> None:
        if v is not None and not lo <= v <= hi:
            raise ChatInputError(f"{name}={v} is out of range; allowed: {lo}..{hi}")

    check("temperature", temperature, 0.0, 2.0)
    check("top_p", top_p, 0.0, 1.0)
    check("max_new_tokens", max_new_tokens, 1, cfg.max_new_tokens)
    check("steps", steps, 1, cfg.max_steps)
    check("guidance", guidance, 0.0, 30.0)
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ChatInputError(f"scheduler={scheduler!r} is not one of {SCHEDULERS}")
    allowed = None
    if outputs is not None:
        try:
            allowed = [Modality.parse(m) for m in outputs]
        except ValueError as e:
            raise ChatInputError(f"outputs: {e}") from None
    if len(prefix or "") > cfg.max_prefix_chars:
        raise ChatInputError(f"reply prefix is {len(prefix)} characters, over the limit of {cfg.max_prefix_chars}")
    return SamplingOptions(temperature=temperature, top_p=top_p,
                           max_new_tokens=None if max_new_tokens is None else int(max_new_tokens),
                           seed=None if seed is None or seed < 0 else int(seed),
                           steps=None if steps is None else int(steps), guidance=guidance, scheduler=scheduler,
                           allowed_outputs=allowed, prefix=prefix or "")


@dataclass
class ChatSettings:
    """A turn's settings as a chat UI's controls send them: ``None`` (and 0 steps or guidance, scheduler
    ``"default"``) leave the model's defaults; :meth:`options` checks them (see :func:`sampling_options`)."""

    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_new_tokens: Optional[int] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    scheduler: Optional[str] = None
    outputs: Optional[Sequence[str]] = None
    prefix: Optional[str] = ""

    def options(self, cfg: ServeConfig) -> SamplingOptions:
        """The :class:`SamplingOptions` of these settings (raises :class:`ChatInputError` when one is out of range)."""
        return sampling_options(
            cfg, temperature=None if self.temperature is None else float(self.temperature),
            top_p=None if self.top_p is None else float(self.top_p),
            max_new_tokens=None if self.max_new_tokens is None else int(self.max_new_tokens),
            seed=None if self.seed is None else int(self.seed),
            steps=int(self.steps) if self.steps else None, guidance=float(self.guidance) if self.guidance else None,
            scheduler=None if self.scheduler in (None, "", "default") else self.scheduler,
            outputs=list(self.outputs) if self.outputs is not None else None, prefix=self.prefix or "")


class ChatState:
    """One user's conversation: a :class:`ChatSession` plus limits, a media registry, a log and export.

    Args:
        session: the user's own session (own KV cache and feature cache) on the shared model.
        workdir: the folder for this session's files (uploads, generated media, exports).
        cfg: limits.
        model_lock: the lock shared by every session of a model.
        name: an id used in exports and logs.
    """

    def __init__(self, session: ChatSession, workdir: Path, cfg: ServeConfig, model_lock: threading.Lock,
                 name: str = "chat"):
        self.session = session
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.model_lock = model_lock
        self.name = name
        self.media: list[MediaItem] = []
        self.log: list[LogTurn] = []
        self.notices: list[Notice] = []
        self.live: Optional[LiveTurn] = None
        self.turns_done = 0  # number of the last committed turn
        self.last_used = time.monotonic()
        self._seq = 0
        self._busy = False
        self._state_lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ small helpers
    @property
    def busy(self) -> bool:
        return self._busy

    def _file(self, stem: str, ext: str) -> Path:
        self._seq += 1
        return self.workdir / f"{self._seq:05d}-{stem}.{ext}"

    def _begin(self) -> None:
        with self._state_lock:
            if self._busy:
                raise ChatInputError("a reply is still being generated; wait for it or press Stop")
            self._busy = True
            self._stop.clear()
            self.last_used = time.monotonic()

    def _end(self) -> None:
        with self._state_lock:
            self._busy = False
            self.live = None
            self.last_used = time.monotonic()

    def _check_idle(self, what: str) -> None:
        if self._busy:
            raise ChatInputError(f"cannot {what} while a reply is being generated; press Stop first")

    def item(self, number: int) -> MediaItem:
        for it in self.media:
            if it.number == number:
                return it
        known = ", ".join(f"@{it.number}" for it in self.media) or "none yet"
        raise ChatInputError(f"there is no media @{number} in this conversation (known: {known})")

    def add_notice(self, text: str, user: Optional[Message] = None) -> None:
        self.notices.append(Notice(self.turns_done, user, text))
        del self.notices[:-max(1, self.cfg.max_log_turns)]

    # ------------------------------------------------------------------ input
    def prepare(self, text: str, files: Sequence[str] = (), refs: Sequence[int] = ()) -> Message:
        """Checks a request and builds the user message.

        Order of parts: media referenced by ``refs``, then uploads, then the text, in which each
        ``@N`` is replaced by media N (so "make @2 blue" interleaves the media with the words).

        Raises:
            ChatInputError: over a limit or an unknown reference.
            MediaError: an upload is corrupt, unsupported or over a media limit (the message names
                the file by its own name, not the server path).
        """
        text = (text or "").strip()
        files = [str(f) for f in (files or [])]
        cfg = self.cfg
        if len(text) > cfg.max_prompt_chars:
            raise ChatInputError(f"the message is {len(text)} characters long, over the limit of "
                                 f"{cfg.max_prompt_chars}; shorten it")
        inline = [int(n) for n in _REF.findall(text)]
        n_files = len(files) + len(refs) + len(inline)
        if n_files > cfg.max_files_per_message:
            raise ChatInputError(f"the message has {n_files} media (uploads and @N references), over the limit of "
                                 f"{cfg.max_files_per_message}")
        if not text and not files and not refs:
            raise ChatInputError("the message is empty; type something or attach a file")
        parts = [self._ref_part(int(n)) for n in refs]
        for f in files:
            parts.append(self._upload_part(f))
        pos = 0
        for m in _REF.finditer(text):
            before = text[pos:m.start()].strip()
            if before:
                parts.append(Part.from_text(before))
            parts.append(self._ref_part(int(m.group(1))))
            pos = m.end()
        rest = text[pos:].strip()
        if rest:
            parts.append(Part.from_text(rest))
        return Message("user", parts)

    def _ref_part(self, number: int) -> Part:
        it = self.item(number)
        self._check_input_kind(it.kind, f"@{number}")
        return Part(type=it.kind, path=str(it.path))

    def _check_input_kind(self, kind: str, name: str) -> None:
        n_in = self.session.model.n_in.get(Modality(kind), 0)
        if n_in <= 0:
            raise ChatInputError(f"{name}: this model does not take {kind} input")

    def _upload_part(self, path: str) -> Part:
        """Validates one upload (header limits, then a full decode) and copies it into the session folder."""
        name = Path(path).name
        limits = self.cfg.media
        try:
            kind = detect_kind(path)
            validate(path, kind, limits)
            media = load_media(path, kind, limits)
        except MediaError as e:
            raise MediaError(_public(e, {path: name})) from None
        self._check_input_kind(kind, name)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem)[:40] or "upload"
        dst = self._file(f"in-{safe}", Path(name).suffix.lstrip(".").lower() or MEDIA_EXT[kind])
        shutil.copyfile(path, dst)
        return Part(type=kind, path=str(dst), media=media)

    # ------------------------------------------------------------------ turns
    def submit(self, text: str, files: Sequence[str] = (), options: Optional[SamplingOptions] = None,
               refs: Sequence[int] = ()) -> Iterator[ChatEvent]:
        """Checks the request and runs one turn; a refused request yields one :class:`TurnFailed`."""
        try:
            self._check_idle("send a message")
            message = self.prepare(text, files, refs)
        except (ChatInputError, MediaError) as e:
            shown = [Part.from_text(text)] if (text or "").strip() else []
            shown += [Part.from_text(f"📎 {Path(f).name}") for f in files or []]
            self.add_notice(str(e), Message("user", shown) if shown else None)
            log.info("%s: request refused: %s", self.name, e)
            yield TurnFailed(str(e))
            return
        yield from self._run(message, options or SamplingOptions(), regenerate=False)

    def regenerate(self, options: Optional[SamplingOptions] = None) -> Iterator[ChatEvent]:
        """Answers the last user message again (the old reply is kept if this fails or is stopped)."""
        try:
            self._check_idle("regenerate")
            if not self.log or not self.session.turns:
                raise ChatInputError("nothing to regenerate: the conversation is empty")
        except ChatInputError as e:
            self.add_notice(str(e))
            yield TurnFailed(str(e))
            return
        yield from self._run(self.log[-1].user, options or SamplingOptions(), regenerate=True)

    def _acquire_model(self) -> bool:
        """Waits for the model lock; False if stopped while waiting. Raises ChatInputError on timeout."""
        deadline = time.monotonic() + self.cfg.lock_timeout_seconds
        while not self.model_lock.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
            if time.monotonic() > deadline:
                raise ChatInputError(f"the server is busy (waited {self.cfg.lock_timeout_seconds:g} s); try again later")
        return True

    def _run(self, message: Message, options: SamplingOptions, regenerate: bool) -> Iterator[ChatEvent]:
        """Runs the turn in its own thread and relays its events.

        The model lock is taken and released by that thread, so it never depends on the caller
        iterating to the end: a consumer that goes away (a closed tab, a dropped stream) cancels
        the turn, and the thread rolls it back and releases the lock by itself.
        """
        try:
            self._begin()
        except ChatInputError as e:
            yield TurnFailed(str(e))
            return
        q: "queue.Queue[Any]" = queue.Queue()

        def work() -> None:
            try:
                for ev in self._turn_events(message, options, regenerate):
                    q.put(ev)
            finally:
                q.put(_END)

        threading.Thread(target=work, name=f"codi2-turn-{self.name}", daemon=True).start()
        finished = False
        try:
            while (ev := q.get()) is not _END:
                yield ev
            finished = True
        finally:
            if not finished:
                log.info("%s: the caller stopped listening; cancelling the turn", self.name)
                self.cancel()

    def _turn_events(self, message: Message, options: SamplingOptions, regenerate: bool) -> Iterator[ChatEvent]:
        """The turn itself (runs in the turn's thread; ``_begin`` was called by ``_run``)."""
        self.live = LiveTurn(_light(message))
        saved: list[Path] = []
        old_turn = self.session.turns[-1] if regenerate else None
        committed = False
        locked = False
        try:
            locked = self._acquire_model()
            if not locked:
                self.add_notice("Stopped.", self.live.user)
                yield Cancelled("stopped before it started")
                return
            events = self.session.regenerate(options) if regenerate else self.session.stream(message, options)
            for ev in events:
                if self._stop.is_set():
                    self.session.cancel()  # again: the session clears the flag when its turn starts
                if isinstance(ev, MediaStarted):
                    self.live.progress = f"{ev.modality.value} {ev.index + 1}: starting"
                elif isinstance(ev, MediaDone):
                    self.live.progress = None
                    if ev.media is not None:
                        path = self._file(f"out-{ev.modality.value}", MEDIA_EXT[ev.modality.value])
                        save_media(ev.media, path)
                        saved.append(path)
                        self.live.parts.append(Part(type=ev.modality.value, path=str(path)))
                elif isinstance(ev, TurnDone):
                    self._commit(message, ev.message, saved, regenerate)
                    committed = True
                elif isinstance(ev, Cancelled):
                    if regenerate:
                        self._restore(old_turn)
                    self.add_notice("Stopped." + (" The previous reply is kept." if regenerate else ""),
                                    None if regenerate else self.live.user)
                elif isinstance(ev, TextDelta):
                    if self.live.parts and self.live.parts[-1].type == "text":
                        self.live.parts[-1].text += ev.text
                    else:
                        self.live.parts.append(Part.from_text(ev.text))
                elif isinstance(ev, DiffusionProgress):
                    self.live.progress = f"{ev.modality.value} {ev.index + 1}: step {ev.step}/{ev.total}"
                yield ev
        except (ChatInputError, MediaError, ValueError) as e:  # refused by the session (e.g. context too long)
            msg = _public(e, {})
            log.info("%s: turn refused: %s", self.name, msg)
            if regenerate and not committed:
                self._restore(old_turn)
            self.add_notice(msg, None if regenerate else self.live.user)
            yield TurnFailed(msg)
        except Exception as e:  # a bug or a resource problem inside generation: report it, keep serving
            log.exception("%s: generation failed", self.name)
            if regenerate and not committed:
                self._restore(old_turn)
            msg = f"generation failed ({type(e).__name__}: {e}); the conversation so far is kept"
            self.add_notice(msg, None if regenerate else self.live.user)
            yield TurnFailed(msg)
        finally:
            if locked:
                self.model_lock.release()
            if not committed:
                for p in saved:
                    p.unlink(missing_ok=True)
                if not regenerate:
                    for p in message.media_parts:
                        if p.path and Path(p.path).parent == self.workdir and not self._referenced(Path(p.path)):
                            Path(p.path).unlink(missing_ok=True)
            self._end()

    def _restore(self, old_turn: Any) -> None:
        """Puts back the turn a failed regenerate had undone (re-encodes the kept context)."""
        if old_turn is not None and (not self.session.turns or self.session.turns[-1] is not old_turn):
            self.session.restore(self.session.turns + [old_turn])

    def _commit(self, user: Message, reply: Message, saved: list[Path], regenerate: bool) -> None:
        """Records a finished turn: media paths, registry numbers, log; trims the context."""
        outs = iter(saved)
        for p in reply.content:
            if p.type != "text" and p.media is not None:
                p.path = str(next(outs))
                p.media = None  # the file is the copy; the context needs only the slots' conditioning
        for p in user.media_parts:
            if p.key is not None:
                p.media = None  # features are cached under p.key; the file stays for re-encoding
        if regenerate:
            last = self.log.pop()
            self._forget_media(lambda it: it.turn == last.number and it.role == "assistant", keep_paths=())
            number = last.number
        else:
            self.turns_done += 1
            number = self.turns_done
            for p in user.media_parts:
                if p.path and not any(str(it.path) == p.path for it in self.media):
                    self._register(p, "user", number)
        for p in reply.media_parts:
            if p.path:
                self._register(p, "assistant", number)
        self.log.append(LogTurn(number, _light(user), _light(reply)))
        # the model's context: the last max_turns turns
        s = self.session
        s.keep_last(max(1, self.cfg.max_turns))
        keep = {(Modality(p.type), p.key) for t in s.turns for p in t.user.media_parts if p.key}
        for k in [k for k in s.feature_cache if k not in keep]:
            del s.feature_cache[k]
        # the log: the last max_log_turns turns (and the media they show)
        if len(self.log) > self.cfg.max_log_turns:
            dropped = self.log[:len(self.log) - self.cfg.max_log_turns]
            del self.log[:len(dropped)]
            first = self.log[0].number
            self.notices = [n for n in self.notices if n.after_turn >= first - 1]
            self._forget_media(lambda it: it.turn < first)

    def _register(self, part: Part, role: str, turn: int) -> None:
        number = max((it.number for it in self.media), default=0) + 1
        self.media.append(MediaItem(number, part.type, Path(part.path), role, turn, Path(part.path).name))

    def _referenced(self, path: Path) -> bool:
        p = str(path)
        return any(q.path == p for t in self.log for q in t.user.content + t.reply.content) or \
            any(q.path == p for t in self.session.turns for q in t.user.content + t.reply.content)

    def _forget_media(self, drop: Any, keep_paths: Sequence[str] = ()) -> None:
        """Removes registry items for which ``drop(item)`` holds; deletes files nothing shows any more."""
        gone = [it for it in self.media if drop(it)]
        self.media = [it for it in self.media if not drop(it)]
        for it in gone:
            if str(it.path) not in keep_paths and not self._referenced(it.path):
                it.path.unlink(missing_ok=True)

    def cancel(self) -> None:
        """Stops the running turn (thread-safe); the history stays as it was before the turn."""
        self._stop.set()
        self.session.cancel()

    def undo(self) -> bool:
        """Removes the last turn (message and reply) from the context, the log and the registry."""
        self._check_idle("undo")
        if not self.log:
            return False
        last = self.log.pop()
        if self.session.turns:
            self.session.undo()
        self.turns_done = last.number - 1
        self.notices = [n for n in self.notices if n.after_turn < last.number]
        self._forget_media(lambda it: it.turn >= last.number)
        return True

    def clear(self) -> None:
        """Forgets everything of this conversation (context, log, media files)."""
        self._check_idle("clear the chat")
        self.session.reset()
        self.session.feature_cache.clear()
        self.log, self.media, self.notices = [], [], []
        self.turns_done = 0
        for p in self.workdir.iterdir():
            if p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)

    # ------------------------------------------------------------------ export
    def manifest(self, media_dir: Optional[Path] = None) -> dict:
        """The conversation as one training-manifest record (docs/design.md#manifest-schema).

        With ``media_dir``, media files are copied there and paths are ``media/<file>``
        (relative to the manifest next to that folder); without, paths are the session's files.
        """
        digest = hashlib.sha256(json.dumps([[t.user.to_dict(), t.reply.to_dict()] for t in self.log],
                                           sort_keys=True).encode()).hexdigest()[:12]
        messages = []
        for t in self.log:
            for msg in (t.user, t.reply):
                d = msg.to_dict()
                for part in d["content"]:
                    if part["type"] != "text" and part.get("path") and media_dir is not None:
                        src = Path(part["path"])
                        media_dir.mkdir(parents=True, exist_ok=True)
                        if not (media_dir / src.name).exists():
                            shutil.copyfile(src, media_dir / src.name)
                        part["path"] = f"{media_dir.name}/{src.name}"
                messages.append(d)
        return {"schema": 1, "id": f"chat-{time.strftime('%Y%m%d-%H%M%S')}-{digest}", "source": "chat",
                "messages": messages}

    def export(self) -> Path:
        """Writes ``<id>.zip`` with ``manifest.jsonl`` (one record) and ``media/``; returns the zip's path."""
        if not self.log:
            raise ChatInputError("nothing to export: the conversation is empty")
        out = self.workdir / "export"
        if out.exists():
            shutil.rmtree(out)
        folder = out / "conversation"
        record = self.manifest(folder / "media")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.jsonl").write_text(json.dumps(record) + "\n")
        zpath = out / f"{record['id']}.zip"
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(folder).as_posix())
        return zpath


class SessionManager:
    """Per-user :class:`ChatState` objects on one shared pipeline, keyed by a session id.

    At most ``cfg.max_sessions`` live at once: a new user evicts the least recently used idle
    session (and sessions idle for ``session_idle_seconds`` are dropped); when every session is
    busy the new one is refused with :class:`ChatInputError`.

    Args:
        pipeline: a :class:`~codi2.pipeline.CoDi2Pipeline` (loaded once, shared).
        cfg: limits.
        workdir: where session folders go (default: a new temporary folder, removed by ``close``).
    """

    def __init__(self, pipeline: Any, cfg: Optional[ServeConfig] = None, workdir: "str | Path | None" = None):
        self.pipeline = pipeline
        self.cfg = cfg or ServeConfig()
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="codi2-serve-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model_lock = threading.Lock()
        self._sessions: "OrderedDict[str, ChatState]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        return key in self._sessions

    def get(self, key: str) -> ChatState:
        """The session for ``key`` (created on first use)."""
        if not key:
            raise ChatInputError("no session id: reload the page")
        with self._lock:
            self._expire()
            st = self._sessions.get(key)
            if st is not None:
                self._sessions.move_to_end(key)
                st.last_used = time.monotonic()
                return st
            while len(self._sessions) >= self.cfg.max_sessions:
                idle = next((k for k, s in self._sessions.items() if not s.busy), None)
                if idle is None:
                    raise ChatInputError(f"the server is full ({self.cfg.max_sessions} conversations are generating); "
                                         "try again in a minute")
                log.info("evicting the least recently used session %s", self._sessions[idle].name)
                self._remove(idle)
            name = hashlib.sha256(key.encode()).hexdigest()[:16]
            st = ChatState(self.pipeline.session(), self.workdir / name, self.cfg, self.model_lock, name=name)
            self._sessions[key] = st
            return st

    def drop(self, key: str) -> None:
        """Forgets a session and deletes its files (a running turn is stopped first)."""
        with self._lock:
            if key in self._sessions:
                self._remove(key)

    def _remove(self, key: str) -> None:
        st = self._sessions.pop(key)
        st.cancel()
        if not st.busy:
            shutil.rmtree(st.workdir, ignore_errors=True)
        # a busy session's folder goes with close(); its files are still being written and shown

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, s in self._sessions.items()
                  if not s.busy and now - s.last_used > self.cfg.session_idle_seconds]:
            self._remove(k)

    def close(self) -> None:
        """Stops every session and deletes the session folders (the whole workdir if it was created here)."""
        with self._lock:
            for k in list(self._sessions):
                self._remove(k)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
