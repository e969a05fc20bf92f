"""The codi2 Gradio chat (UI only; the logic lives in :mod:`codi2.chat_state`).

    python -m serve.app [--model DIR] [--host 127.0.0.1] [--port 7860] [--auth USER:PASS] [--share]
                        [--config serve.yaml] [--set KEY=VALUE]… [--override KEY=VALUE]… [--device DEV]
    codi2 serve …        (the same options)

One :class:`~codi2.pipeline.CoDi2Pipeline` is loaded per server and shared; every browser
session (Gradio's session hash, also one per ``gradio_client.Client``) gets its own
:class:`~codi2.chat_state.ChatState` (own KV cache, media cache, files) from a bounded LRU
:class:`~codi2.chat_state.SessionManager`. Generation events run in Gradio's queue with
``concurrency_limit`` workers (default 1) and, whatever that setting, one turn at a time on the
model (a lock in the manager: the weights are shared and the decoders' schedulers are stateful).
Stop, undo, clear and export are not queued behind generation, and never create (or evict) a session.

The page keeps its conversations in the browser (``gr.BrowserState``, :mod:`serve.history`): a reload takes up
the detached server session again, or rebuilds it from the browser's copy; the model card of the model folder
(:mod:`codi2.model_card`) is shown at the top and is in ``GET /config`` (``#codi2-model-card``).

API endpoints (``gradio_client``): ``/chat`` (message, refs, settings…) streams the chat;
``/regenerate``, ``/undo``, ``/clear``, ``/stop``, ``/export``. Every endpoint returns the chat as
Gradio messages; media are files.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import tempfile
import threading
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import gradio as gr

from codi2.chat_state import ChatInputError, ChatSettings, ChatState, ServeConfig, SessionManager, TurnFailed
from codi2.model_card import load_model_card
from codi2.generation import TextDelta
from codi2.conversation import Message
from codi2.io import setup_logging

from . import history

if TYPE_CHECKING:
    from .api import ApiConfig

log = logging.getLogger("codi2.serve")

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "codi2-mini"
STREAM_INTERVAL = 0.05  # seconds between streamed text updates

CSS = """
#codi2-main { max-width: 980px; width: 100%; margin: 0 auto; }
#codi2-header { display: flex; align-items: baseline; gap: .75rem; padding: .25rem .25rem .5rem; }
#codi2-header h1 { font-size: 1.5rem; font-weight: 700; margin: 0; letter-spacing: -.01em; }
#codi2-header .sub { color: var(--body-text-color-subdued); font-size: .9rem; }
#codi2-chat { border-radius: 16px; }
#codi2-input { border-radius: 16px; }
#codi2-actions button { border-radius: 999px; }
#codi2-chat .message code { font-size: .75rem; opacity: .7; }
#codi2-chat .message img { min-width: 96px; image-rendering: auto; }
#codi2-chat [data-testid='bot'] img { min-width: 256px; min-height: 256px; object-fit: contain;
                                      image-rendering: pixelated; }
#codi2-chat button[aria-label='Share'], #codi2-chat button[title='Share'] { display: none !important; }
#codi2-about { font-size: .9rem; padding: 0 .25rem; }
#codi2-about p { margin: .1rem 0; }
footer { display: none !important; }
@media (max-width: 767px) {
  #codi2-chat { height: calc(100dvh - 390px) !important; min-height: 200px; }
  #codi2-chat > .wrapper, #codi2-chat .bubble-wrap { max-height: 100% !important; }
  #codi2-header { padding: 0; }
  #codi2-header h1 { font-size: 1.2rem; }
  #codi2-header .sub { display: none; }
  #codi2-about { font-size: .8rem; line-height: 1.25; }
  #codi2-actions { flex-wrap: nowrap; }
  #codi2-actions button { min-width: 0; padding: .25rem .5rem; }
}
"""
NARROW_PX = 768  # below this width the settings sidebar starts closed


MODALITY_ICONS = {"image": "🎨", "audio": "🔊", "video": "🎬"}


def setting_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A ``gr.Slider`` whose value reaches the handler as sent: ``codi2.chat_state.check_setting`` checks it there and
    names the field and its range (Gradio's own bounds check names neither, and refuses ±inf before we see it).
    An instance attribute, not a subclass: a Gradio component subclass writes a ``.pyi`` stub beside this file."""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider

# ----------------------------------------------------------------------------- rendering
def _caption(msg: Message, part: Any, n: Optional[int]) -> str:
    """A media item's alt text: its caption, else the message's own words (the reply's caption), and its number."""
    words = part.caption or " ".join((q.text or "").strip() for q in msg.content if q.type == "text").strip()
    head = f"@{n} {part.type}" if n else part.type
    return f"{head}: {words[:200]}" if words else head


def _content(msg: Message, numbers: dict[str, int], page: bool = False) -> list:
    """A message as Gradio content items: text, and files (images, audio players, videos inline).
    ``page``: pictures as ``gr.Image`` components, which carry their alt text to the page (Gradio 6.31's chatbot
    drops a file item's ``alt_text``); API clients get file items."""
    out: list = []
    for p in msg.content:
        if p.type == "text":
            if p.text and p.text.strip():
                out.append(p.text)
        elif p.path:
            n = numbers.get(p.path)
            if page and p.type == "image":
                out.append(gr.Image(p.path, alt_text=_caption(msg, p, n), show_label=False, buttons=["fullscreen"],
                                    interactive=False))
            else:
                out.append({"path": p.path, "alt_text": _caption(msg, p, n)})
            if n:
                out.append(f"`@{n}`")
    return out


def render(state: Optional[ChatState], page: bool = False) -> list[dict]:
    """The chat as Gradio messages: the log, notices (refused inputs, errors), and the live turn."""
    if state is None:
        return []
    numbers = {str(it.path): it.number for it in state.media}
    msgs: list[dict] = []

    def add(role: str, msg: Optional[Message]) -> None:
        # One Gradio message per item (consecutive ones share a bubble): streamed updates then change
        # only the top-level list, which Gradio 6.31's output diff handles; it mis-indexes deletions
        # inside several nested lists of one update (gradio.utils.diff adjusts nested deletes again).
        for item in _content(msg, numbers, page) if msg is not None else []:
            msgs.append({"role": role, "content": item})

    def notices(pred: Any) -> None:
        for n in state.notices:
            if pred(n.after_turn):
                add("user", n.user)
                msgs.append({"role": "assistant", "content": f"⚠️ {n.text}"})

    first = state.log[0].number if state.log else state.turns_done + 1
    notices(lambda a: a < first)
    for t in state.log:
        add("user", t.user)
        add("assistant", t.reply)
        notices(lambda a, k=t.number: a == k)
    live = state.live
    if live is not None:
        add("user", live.user)
        add("assistant", Message("assistant", list(live.parts)))
        if live.progress:
            kind = live.progress.split(" ", 1)[0]
            msgs.append({"role": "assistant", "content": live.progress,
                         "metadata": {"title": f"{MODALITY_ICONS.get(kind, '⏳')} generating {kind}", "status": "pending"}})
    return msgs


# ----------------------------------------------------------------------------- the app

def app_theme() -> Any:
    """The app's theme. Font objects, not strings: a blocking ``launch`` compares the theme with gradio's
    built-in ones, and gradio 6's ``Font.__eq__`` fails on a plain string (it crashed ``scripts/chat.sh``)."""
    font = gr.themes.Font
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                          font=[font("Inter"), font("ui-sans-serif"), font("system-ui"), font("sans-serif")],
                          font_mono=[font("ui-monospace"), font("SFMono-Regular"), font("monospace")])

class ChatApp:
    """The Gradio Blocks app around a :class:`SessionManager` (``.blocks`` is the ``gr.Blocks``)."""

    def __init__(self, pipeline: Any, cfg: Optional[ServeConfig] = None, workdir: "str | Path | None" = None,
                 title: Optional[str] = None, with_examples: bool = True):
        self.pipeline = pipeline
        self.cfg = cfg or ServeConfig()
        self.manager = SessionManager(pipeline, self.cfg, workdir, on_end=self._forget_cached)
        self.title = title or pipeline.config.name
        self.examples = []
        if with_examples:
            from .examples import load_examples

            self.examples = load_examples(getattr(pipeline, "directory", None))
        model = pipeline.model
        self.out_modalities = [m.value for m in model.n_out if model.n_out[m] > 0]
        self.in_modalities = [m.value for m in model.n_in if model.n_in[m] > 0]
        self.card = load_model_card(getattr(pipeline, "directory", None), self.title, self.in_modalities,
                                    self.out_modalities)
        self._closed = threading.Event()
        self.blocks = self._build()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _key(request: gr.Request) -> str:
        return getattr(request, "session_hash", None) or ""

    @staticmethod
    def _client(request: gr.Request) -> str:
        client = getattr(request, "client", None)
        return str(getattr(client, "host", "") or "")

    def _state(self, request: gr.Request) -> ChatState:
        """The caller's session, created if it has none (only the events that generate call this)."""
        try:
            return self.manager.get(self._key(request), self._client(request))
        except ChatInputError as e:
            raise gr.Error(str(e)) from None

    def _find(self, request: gr.Request) -> Optional[ChatState]:
        """The caller's session, or None: clear, undo, stop and export never create (nor evict) one."""
        return self.manager.find(self._key(request))

    def _refs(self, state: Optional[ChatState]) -> Any:
        items = state.media if state is not None else []
        return gr.Dropdown(choices=[(it.label, it.number) for it in items], value=[])

    def _forget_cached(self, state: ChatState, paths: Optional[Sequence[Path]] = None) -> None:
        """Deletes Gradio's cached copies of a session's files (the copies Gradio serves; ``paths``: these files,
        default: every file of the session) and the uploads Gradio stored for it."""
        from gradio.processing_utils import hash_file
        from gradio_client.utils import strip_invalid_filename_characters

        cache = Path(self.blocks.GRADIO_CACHE) if hasattr(self, "blocks") else None
        if cache is None:
            return
        files = list(paths) if paths is not None else [f for f in state.workdir.rglob("*") if f.is_file()]
        for f in files:
            try:
                copy = cache / hash_file(f) / strip_invalid_filename_characters(Path(f).name)
            except OSError:
                continue
            copy.unlink(missing_ok=True)
            _rmdir_if_empty(copy.parent)
        for f in list(state.owned_files):
            Path(f).unlink(missing_ok=True)
            _rmdir_if_empty(Path(f).parent)

    def _own_uploads(self, state: ChatState, files: Sequence[Optional[str]]) -> None:
        """Uploads that Gradio stored in its cache are deleted with the session (model example files are not)."""
        cache = Path(self.blocks.GRADIO_CACHE).resolve()
        for f in files:
            if f and Path(f).resolve().is_relative_to(cache):
                state.owned_files.add(str(f))

    def _drive(self, state: ChatState, events: Iterator[Any], page: bool = False) -> Iterator[tuple]:
        """Streams a turn: (chatbot, textbox, refs) updates, throttled for text."""
        busy_box = gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True)
        yield render(state, page), busy_box, gr.skip()
        last = 0.0
        for ev in events:
            now = time.monotonic()
            if not isinstance(ev, TextDelta) or now - last >= STREAM_INTERVAL:
                last = now
                yield render(state, page), gr.skip(), gr.skip()
        yield render(state, page), self._ready_box(), self._refs(state)

    def _ready_box(self) -> Any:
        accept = ", ".join(self.in_modalities) or "no media"
        return gr.MultimodalTextbox(value=None, interactive=True, submit_btn=True, stop_btn=False,
                                    placeholder=f"Message codi2… (attach {accept})")

    # ------------------------------------------------------------------ handlers
    def chat(self, message: Optional[dict], refs: Optional[list], temperature: float, top_p: float,
             max_new_tokens: int, seed: int, steps: int, guidance: float, scheduler: str, outputs: list, prefix: str,
             request: gr.Request) -> Iterator[tuple]:
        """``/chat``: message = {"text": str, "files": [paths]}; refs = media numbers to attach again."""
        settings = ChatSettings(temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler, outputs, prefix)
        yield from self._chat(message, refs, settings, request)

    def _chat(self, message: Optional[dict], refs: Optional[list], settings: ChatSettings,
              request: gr.Request) -> Iterator[tuple]:
        state = self._state(request)
        message = message or {}
        text = message.get("text") or ""
        files = [f if isinstance(f, str) else f.get("path") for f in (message.get("files") or [])]
        self._own_uploads(state, files)
        try:
            opts = settings.options(self.cfg)
        except ChatInputError as e:
            state.add_notice(str(e))
            yield from self._drive(state, iter([TurnFailed(str(e))]))
            return
        try:
            numbers = [int(r) for r in refs or []]
        except (TypeError, ValueError):
            numbers = []
            state.add_notice(f"refs {refs!r}: expected media numbers such as [1, 3]")
            yield from self._drive(state, iter([TurnFailed("bad refs")]))
            return
        yield from self._drive(state, state.submit(text, files, opts, refs=numbers))

    def hold(self, message: Optional[dict], request: gr.Request) -> tuple:
        """The page's first step on Send (not queued): the message is taken, shown in the chat, and the box
        disabled while the turn waits in the queue (the chat shows Gradio's queue position and estimate)."""
        box = gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True,
                                   placeholder="Waiting for the model… (your place in the queue is shown above)")
        msg = message or {}
        shown = [{"role": "user", "content": {"path": f if isinstance(f, str) else f.get("path")}}
                 for f in msg.get("files") or []]
        if (msg.get("text") or "").strip():
            shown.append({"role": "user", "content": msg["text"]})
        return message, box, render(self._find(request), page=True) + shown

    def chat_page(self, message: Optional[dict], refs: Optional[list], store: Any, temperature: float, top_p: float,
                  max_new_tokens: int, seed: int, steps: int, guidance: float, scheduler: str, outputs: list,
                  prefix: str, request: gr.Request) -> Iterator[tuple]:
        """The page's Send: like ``/chat``, and a session the server let go is first rebuilt from the browser's copy."""
        self._ensure(store, request)
        yield from self.chat(message, refs, temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler,
                             outputs, prefix, request)

    def _ensure(self, store: Any, request: gr.Request) -> None:
        """If the page has a conversation the server no longer holds, rebuild it from the browser's copy and say so."""
        if self._find(request) is not None:
            return
        store = history.clean_store(store)
        snap = history.find(store, store["current"])
        if snap is None:
            return
        try:
            state, lost = self.manager.resume(self._key(request), snap, self._client(request))
        except ChatInputError as e:
            gr.Warning(f"Could not restore this conversation: {e}. A new one starts.")
            return
        if lost is not None:
            state.add_notice(_restored_note(lost))

    def regenerate(self, temperature: float, top_p: float, max_new_tokens: int, seed: int, steps: int,
                   guidance: float, scheduler: str, outputs: list, prefix: str, request: gr.Request) -> Iterator[tuple]:
        settings = ChatSettings(temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler, outputs, prefix)
        state = self._state(request)
        try:
            opts = settings.options(self.cfg)
        except ChatInputError as e:
            state.add_notice(str(e))
            yield from self._drive(state, iter([TurnFailed(str(e))]))
            return
        yield from self._drive(state, state.regenerate(opts))

    def example(self, evt: gr.SelectData, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                steps: int, guidance: float, scheduler: str, outputs: list, prefix: str,
                request: gr.Request) -> Iterator[tuple]:
        """A chatbot example card: runs the server's own copy of example ``evt.index`` (client paths are ignored)."""
        settings = ChatSettings(temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler, outputs, prefix)
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(self.examples):
            raise gr.Error(f"there is no example {index}")
        ex = self.examples[index]
        yield from self._chat({"text": ex.text, "files": ex.files}, [], settings, request)

    def undo(self, request: gr.Request) -> tuple:
        state = self._find(request)
        try:
            if state is not None:
                state.undo()
        except ChatInputError as e:
            gr.Warning(str(e))
        return render(state), self._refs(state)

    def clear(self, request: gr.Request) -> tuple:
        state = self._find(request)
        try:
            if state is not None:
                if not state.busy:
                    self._forget_cached(state)  # Gradio's copies of the files clear() deletes
                state.clear()
        except ChatInputError as e:
            gr.Warning(str(e))
        return render(state), self._refs(state)

    def stop(self, request: gr.Request) -> None:
        state = self._find(request)
        if state is not None:
            state.cancel()

    def export(self, request: gr.Request) -> Any:
        state = self._find(request)
        try:
            if state is None:
                raise ChatInputError("nothing to export: the conversation is empty")
            return str(state.export())
        except ChatInputError as e:
            gr.Warning(str(e))
            return None

    @staticmethod
    def attach(path: Optional[str], box: Optional[dict]) -> tuple:
        """Adds a webcam capture to the message box's files (and clears the camera component)."""
        if not path:
            return gr.skip(), gr.skip()
        box = box or {}
        return {"text": box.get("text") or "", "files": list(box.get("files") or []) + [path]}, None

    def unload(self, request: gr.Request) -> None:
        """A closed or reloaded tab lets go of its session; the page that holds its id takes it up again."""
        key = self._key(request)
        if key:
            self.manager.detach(key)

    # ------------------------------------------------------------------ conversations kept in the browser
    def _listing(self, store: dict) -> Any:
        return gr.Dropdown(choices=history.choices(store), value=store.get("current"))

    def load(self, store: Any, request: gr.Request) -> tuple:
        """Page load: the browser's current conversation comes back (the server's session when it still has it,
        else rebuilt from the browser's copy, saying what could not be restored)."""
        store = history.clean_store(store)
        snap = history.find(store, store["current"])
        state = None
        if snap is not None:
            try:
                state, lost = self.manager.resume(self._key(request), snap, self._client(request))
                if lost is not None:
                    state.add_notice(_restored_note(lost))
            except ChatInputError as e:
                gr.Warning(f"Could not restore your last conversation: {e}")
                store["current"] = None
        return render(state, page=True), self._refs(state), store, self._listing(store)

    def save_copy(self, store: Any, request: gr.Request) -> tuple:
        """After every change: the browser's copy of the current conversation is updated (the box is ready again)."""
        store = history.clean_store(store)
        state = self._find(request)
        if state is not None and state.log:
            store = history.put(store, state.snapshot())
        elif state is not None:
            store["current"] = None  # an empty conversation is not listed
        chat = render(state, page=True) if state is not None else gr.skip()
        return store, self._listing(store), self._ready_box(), chat

    def new_conversation(self, store: Any, request: gr.Request) -> tuple:
        store = history.clean_store(store)
        state = self._find(request)
        if state is not None and state.busy:
            gr.Warning("a reply is still being generated; press Stop first")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        self.manager.detach(self._key(request))
        store["current"] = None
        return [], self._refs(None), store, self._listing(store)

    def open_conversation(self, conversation_id: Optional[str], store: Any, request: gr.Request) -> tuple:
        store = history.clean_store(store)
        snap = history.find(store, conversation_id)
        current = self._find(request)
        if snap is None or (current is not None and current.conversation_id == conversation_id):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if current is not None and current.busy:
            gr.Warning("a reply is still being generated; press Stop first")
            return gr.skip(), gr.skip(), gr.skip(), self._listing(store)
        try:
            state, lost = self.manager.resume(self._key(request), snap, self._client(request))
        except ChatInputError as e:
            gr.Warning(f"Could not open that conversation: {e}")
            return gr.skip(), gr.skip(), gr.skip(), self._listing(store)
        if lost is not None:
            state.add_notice(_restored_note(lost))
        store["current"] = state.conversation_id
        return render(state, page=True), self._refs(state), store, self._listing(store)

    def delete_conversation(self, conversation_id: Optional[str], store: Any, request: gr.Request) -> tuple:
        """Deletes a conversation from this browser and (if it is this browser's) its server session."""
        store = history.clean_store(store)
        if not conversation_id or history.find(store, conversation_id) is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        current = self._find(request)
        if current is not None and current.conversation_id == conversation_id and current.busy:
            gr.Warning("a reply is still being generated; press Stop first")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        self.manager.drop_conversation(self._key(request), conversation_id)
        store = history.remove(store, conversation_id)
        state = self._find(request)
        return render(state, page=True), self._refs(state), store, self._listing(store)

    @staticmethod
    def layout_for(width: Any) -> Any:
        """The settings sidebar starts closed on a narrow screen (the page sends its width on load)."""
        try:
            narrow = float(width) < NARROW_PX
        except (TypeError, ValueError):
            narrow = False
        return gr.Sidebar(open=not narrow)

    # ------------------------------------------------------------------ layout
    def _about(self) -> str:
        card = self.card
        tries = "".join(f"\n- {ex}" for ex in card.examples)
        body = card.markdown().replace(f"**Try**\n\n{card.section('try')}", "").strip()
        return body + (f"\n\n**Try:**{tries}" if tries else "")

    def _build(self) -> gr.Blocks:
        gen = self.pipeline.config.generation
        accept = ", ".join(self.in_modalities) or "no media"
        # delete_cache: Gradio's copies of served files older than an hour are removed every hour (and all of them
        # when the server stops); a session's own copies go when it ends (_forget_cached)
        with gr.Blocks(title=f"codi2 · {self.title}", fill_height=True, delete_cache=(3600, 3600)) as demo:
            store = gr.BrowserState(history.empty_store(), storage_key=f"codi2-conversations-{self.title}",
                                    secret=f"codi2-{self.title}")
            with gr.Sidebar(label="Settings", open=True, position="left", width=300) as sidebar:
                gr.Markdown("### Conversations")
                new_btn = gr.Button("+ New conversation", size="sm", elem_id="codi2-new")
                past = gr.Dropdown(choices=[], value=None, label="Past conversations", elem_id="codi2-past",
                                   info="Kept in this browser; pick one to open it.", interactive=True)
                delete_btn = gr.Button("Delete selected", size="sm", variant="secondary", elem_id="codi2-delete")
                gr.Markdown("### Settings")
                temperature = setting_slider(0.0, 2.0, value=float(gen.temperature), step=0.05, label="Temperature",
                                        info="0 = greedy")
                top_p = setting_slider(0.05, 1.0, value=float(gen.top_p), step=0.05, label="Top-p")
                max_new_tokens = setting_slider(1, self.cfg.max_new_tokens, value=min(gen.max_new_tokens, self.cfg.max_new_tokens),
                                           step=1, label="Max new tokens")
                seed = gr.Number(value=-1, label="Seed", info="-1 = random; a whole number up to 4294967295")  # checked by sampling_options
                outputs = gr.CheckboxGroup(self.out_modalities, value=list(self.out_modalities),
                                           label="Output modalities allowed")
                with gr.Accordion("Diffusion", open=False):
                    steps = setting_slider(0, self.cfg.max_steps, value=0, step=1, label="Steps", info="0 = decoder default")
                    guidance = setting_slider(0.0, 20.0, value=0.0, step=0.5, label="Guidance", info="0 = decoder default")
                    scheduler = gr.Dropdown(["default", "ddim", "dpm++"], value="default", label="Scheduler")
                with gr.Accordion("Advanced", open=False, elem_id="codi2-advanced"):
                    prefix = gr.Textbox(value="", label="Reply starts with", elem_id="codi2-prefix", placeholder="e.g. Here it is: <img>",
                                        info="Forces the start of the reply; <img>, <aud> or <vid> in it makes the "
                                             "model produce that media there.")
                with gr.Accordion("Camera", open=False):
                    webcam_photo = gr.Image(sources=["webcam"], type="filepath", label="Photo",
                                            show_label=True, height=180, buttons=[])
                    webcam_clip = gr.Video(sources=["webcam"], label="Clip", height=180, buttons=[])
                gr.Markdown("### Reuse media")
                refs = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                   label="Attach earlier media",
                                   info="…or write @N in your message, e.g. “make @2 blue”.")
                gr.Markdown("### Export")
                export_btn = gr.Button("Export conversation (.zip)", size="sm")
                export_file = gr.File(label="Manifest + media", visible=False, interactive=False)
            with gr.Column(elem_id="codi2-main", scale=1):
                gr.HTML(f'<div id="codi2-header"><h1>codi2</h1><span class="sub">any-to-any multimodal chat · '
                        f'model <b>{self.title}</b></span></div>')
                gr.Markdown(self.card.summary, elem_id="codi2-about")
                with gr.Accordion("About this model", open=False, elem_id="codi2-about-more"):
                    gr.Markdown(self._about())
                # the card as data: GET /config shows it (this component's value), as does the page
                gr.JSON(self.card.to_dict(), visible=False, elem_id="codi2-model-card", label="model card")
                chatbot = gr.Chatbot(
                    elem_id="codi2-chat", label="Chat", show_label=False, layout="bubble", height="58vh", scale=1,
                    buttons=["copy", "copy_all"], feedback_options=None, autoscroll=True,
                    placeholder=("<h3>What shall we make?</h3>Attach images, sounds or videos, ask for pictures, "
                                 "sounds and clips, and refer back to earlier media with @N."),
                    examples=[ex.to_gradio() for ex in self.examples] or None)
                textbox = gr.MultimodalTextbox(
                    elem_id="codi2-input", label="Message", show_label=False, file_count="multiple",
                    sources=["upload", "microphone"],
                    placeholder=f"Message codi2… (attach {accept})", autofocus=True, stop_btn=False, max_lines=8)
                with gr.Row(elem_id="codi2-actions"):
                    stop_btn = gr.Button("Stop", size="sm", variant="stop")
                    regen_btn = gr.Button("Regenerate", size="sm")
                    undo_btn = gr.Button("Undo", size="sm")
                    clear_btn = gr.Button("Clear", size="sm")
            held = gr.State(None)
            width = gr.Number(visible=False)
            api_chat = gr.Button(visible=False)  # /chat for API clients (the page sends through hold -> chat_page)

            settings = [temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler, outputs, prefix]
            stream_out = [chatbot, textbox, refs]
            gen_kw = dict(show_progress="full", show_progress_on=[chatbot], concurrency_id="generate",
                          concurrency_limit=self.cfg.concurrency_limit)
            save = dict(fn=self.save_copy, inputs=[store], outputs=[store, past, textbox, chatbot],
                        api_visibility="undocumented", queue=False, show_progress="hidden")
            api_chat.click(self.chat, [textbox, refs] + settings, stream_out, api_name="chat", **gen_kw)
            textbox.submit(self.hold, [textbox], [held, textbox, chatbot], api_visibility="undocumented", queue=False,
                           show_progress="hidden").then(
                self.chat_page, [held, refs, store] + settings, stream_out, api_visibility="undocumented",
                **gen_kw).then(**save)
            regen_btn.click(self.regenerate, settings, stream_out, api_name="regenerate", **gen_kw).then(**save)
            chatbot.retry(self.regenerate, settings, stream_out, api_visibility="undocumented", **gen_kw).then(**save)
            chatbot.example_select(self.example, settings, stream_out, api_visibility="undocumented",
                                   **gen_kw).then(**save)
            for trigger, api in ((undo_btn.click, "undo"), (chatbot.undo, None)):
                trigger(self.undo, None, [chatbot, refs], api_name=api, concurrency_limit=None,
                        **({} if api else {"api_visibility": "undocumented"})).then(**save)
            for trigger, api in ((clear_btn.click, "clear"), (chatbot.clear, None)):
                trigger(self.clear, None, [chatbot, refs], api_name=api, concurrency_limit=None,
                        **({} if api else {"api_visibility": "undocumented"})).then(**save)
            stop_btn.click(self.stop, None, None, api_name="stop", concurrency_limit=None)
            textbox.stop(self.stop, None, None, api_visibility="undocumented", concurrency_limit=None)
            export_btn.click(self.export, None, export_file, api_name="export", concurrency_limit=None).then(
                lambda f: gr.File(visible=f is not None), export_file, export_file, api_visibility="undocumented",
                queue=False)
            for cam in (webcam_photo, webcam_clip):  # a capture is attached to the message being written
                cam.change(self.attach, [cam, textbox], [textbox, cam], api_visibility="undocumented",
                           queue=False, show_progress="hidden")
            conv_out = [chatbot, refs, store, past]
            new_btn.click(self.new_conversation, [store], conv_out, api_visibility="undocumented",
                          concurrency_limit=None)
            past.input(self.open_conversation, [past, store], conv_out, api_visibility="undocumented",
                       concurrency_limit=None)
            delete_btn.click(self.delete_conversation, [past, store], conv_out, api_visibility="undocumented",
                             concurrency_limit=None)
            demo.load(self.load, [store], conv_out, api_visibility="undocumented", concurrency_limit=None)
            demo.load(self.layout_for, [width], [sidebar], js="() => [window.innerWidth]",
                      api_visibility="undocumented", queue=False, show_progress="hidden")
            demo.unload(self.unload)
        demo.queue(default_concurrency_limit=self.cfg.concurrency_limit, max_size=self.cfg.max_queue_size)
        return demo

    # ------------------------------------------------------------------ run
    def launch(self, host: str = "127.0.0.1", port: int = 7860, auth: Optional[tuple[str, str]] = None,
               share: bool = False, block: bool = True, quiet: bool = False) -> Any:
        """Starts the server (``block=False`` returns at once; call :meth:`close` to stop it)."""
        theme = app_theme()
        self.start_reaper()
        return self.blocks.launch(server_name=host, server_port=port, auth=auth, share=share,
                                  prevent_thread_lock=not block, quiet=quiet, show_error=True,
                                  allowed_paths=[str(self.manager.workdir)],
                                  max_file_size=self.cfg.media.max_file_bytes, theme=theme, css=CSS,
                                  footer_links=["api"])

    def start_reaper(self) -> None:
        """Starts the thread that ends idle sessions (once; :meth:`close` stops it)."""
        if not getattr(self, "_reaper", None):
            self._reaper = threading.Thread(target=self._reap, name="codi2-reaper", daemon=True)
            self._reaper.start()

    def _reap(self, every: float = 60.0) -> None:
        """Ends idle sessions (and deletes their files) even when no one is using the server."""
        while not self._closed.wait(every):
            self.manager.expire()

    def close(self) -> None:
        self._closed.set()
        self.blocks.close()
        self.manager.close()


def _restored_note(lost: Sequence[str]) -> str:
    note = "This conversation was restored from this browser's copy (the server had ended its session)."
    if lost:
        note += f" Not restored: {', '.join(lost)} (no longer on the server and not in the browser's copy)."
    return note


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def build_app(pipeline: Any, cfg: Optional[ServeConfig] = None, workdir: "str | Path | None" = None,
              with_examples: bool = True) -> ChatApp:
    """The chat app for a loaded pipeline (not started)."""
    return ChatApp(pipeline, cfg, workdir, with_examples=with_examples)


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    from .api import add_api_options, add_server_arguments

    add_server_arguments(p, port=7860)
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--api", action="store_true",
                   help="also serve the OpenAI-compatible API at /v1 on the same port (serve/api.py)")
    add_api_options(p)


def create_app_with_chat(pipeline: Any, cfg: ServeConfig, api: Optional["ApiConfig"] = None,
                         auth: Optional[tuple[str, str]] = None, workdir: "str | Path | None" = None) -> tuple[Any, Any]:
    """The API at /v1 and the Gradio chat at / in one FastAPI app, sharing the model lock; returns (app, chat app)."""
    import gradio as gr

    from .api import create_app

    chat = build_app(pipeline, cfg, workdir=workdir)
    chat.start_reaper()
    app = create_app(pipeline, cfg, api, model_lock=chat.manager.model_lock)
    gr.mount_gradio_app(app, chat.blocks, path="/", auth=auth, allowed_paths=[str(chat.manager.workdir)],
                        max_file_size=cfg.media.max_file_bytes, theme=app_theme(), css=CSS, footer_links=["api"])
    return app, chat


def parse_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"--auth {value!r}: expected USER:PASS with both parts non-empty")
    return user, password


def sweep(folder: Path) -> int:
    """Deletes everything in ``folder`` (what a killed server left); returns how many entries went."""
    n = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            n += 1
    return n


def server_folders(port: int, root: "str | Path | None" = None) -> tuple[Path, Path]:
    """The server's own folders, ``<tmp>/codi2-serve-<port>/{gradio,sessions}``, swept at start-up (a server
    killed before it could clean up leaves uploads and outputs there; one port, one server). Gradio's cache
    (uploads and the copies of served files) goes to ``gradio/`` unless ``GRADIO_TEMP_DIR`` is set, which is
    then left alone (it may be shared). Returns (Gradio's cache folder, the sessions' folder)."""
    base = Path(root) if root is not None else Path(tempfile.gettempdir()) / f"codi2-serve-{port}"
    base.mkdir(parents=True, exist_ok=True)
    swept = sweep(base / "sessions")
    sessions = base / "sessions"
    sessions.mkdir(exist_ok=True)
    if os.environ.get("GRADIO_TEMP_DIR"):
        cache = Path(os.environ["GRADIO_TEMP_DIR"])
    else:
        cache = base / "gradio"
        swept += sweep(cache)
        cache.mkdir(exist_ok=True)
        os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read by gradio when the app is built
    if swept:
        log.info("start-up: removed %d leftovers of an earlier server in %s", swept, base)
    return cache, sessions


def run(args: argparse.Namespace) -> int:
    """Loads the model and serves until interrupted. Returns the exit status."""
    from codi2.config import load_config

    auth = parse_auth(args.auth)
    if getattr(args, "api", False):
        from .api import run as run_with_api

        return run_with_api(args, with_chat=lambda pipeline, cfg, api: create_app_with_chat(
            pipeline, cfg, api, auth=auth, workdir=server_folders(args.port)[1]))
    explicit = args.model is not None
    model = Path(args.model) if explicit else DEFAULT_MODEL
    if not (model / "config.yaml").is_file():
        msg = (f"codi2 serve: no codi2 model at {model}. Pass --model DIR with a model directory, or create a small "
               f"random one to try the app:\n    codi2 init configs/model/tiny.yaml --out DIR\n"
               f"then run: python -m serve.app --model DIR")
        print(msg, file=sys.stderr)
        return 2 if explicit else 0
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        log.warning("binding %s without --auth: anyone who can reach this address can use the model", args.host)
    cfg = load_config(ServeConfig, args.config, args.set)
    from codi2.pipeline import CoDi2Pipeline

    log.info("loading %s", model)
    pipeline = CoDi2Pipeline.from_pretrained(model, device=args.device, overrides=args.override)
    cache, sessions = server_folders(args.port)
    app = build_app(pipeline, cfg, workdir=sessions)
    # SIGTERM (e.g. from a process manager) ends the server like Ctrl-C, so session files are removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        app.launch(args.host, args.port, auth=auth, share=args.share, block=True)
    except (KeyboardInterrupt, SystemExit):
        log.info("stopped")
    finally:
        app.manager.close()
    return 0


def register(subparsers: Any) -> None:
    """Adds ``codi2 serve`` (the same options as ``python -m serve.app``)."""
    p = subparsers.add_parser("serve", help="the Gradio chat app (loopback, no share link unless asked)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.app", description="codi2 Gradio chat")
    p.add_argument("-v", "--verbose", action="store_true")
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, timestamps=False)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"codi2 serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
