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
Stop, undo, clear and export are not queued behind generation.

API endpoints (``gradio_client``): ``/chat`` (message, refs, settings…) streams the chat;
``/regenerate``, ``/undo``, ``/clear``, ``/stop``, ``/export``. Every endpoint returns the chat as
Gradio messages; media are files.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import gradio as gr

from codi2.chat_state import ChatInputError, ChatSettings, ChatState, ServeConfig, SessionManager, TurnFailed
from codi2.generation import TextDelta
from codi2.conversation import Message
from codi2.io import setup_logging

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
footer { display: none !important; }
"""

MODALITY_ICONS = {"image": "🎨", "audio": "🔊", "video": "🎬"}


# ----------------------------------------------------------------------------- rendering
def _content(msg: Message, numbers: dict[str, int]) -> list:
    """A message as Gradio content items: text, and files (images, audio players, videos inline)."""
    out: list = []
    for p in msg.content:
        if p.type == "text":
            if p.text and p.text.strip():
                out.append(p.text)
        elif p.path:
            n = numbers.get(p.path)
            out.append({"path": p.path, "alt_text": f"@{n} {p.type}" if n else p.type})
            if n:
                out.append(f"`@{n}`")
    return out


def render(state: Optional[ChatState]) -> list[dict]:
    """The chat as Gradio messages: the log, notices (refused inputs, errors), and the live turn."""
    if state is None:
        return []
    numbers = {str(it.path): it.number for it in state.media}
    msgs: list[dict] = []

    def add(role: str, msg: Optional[Message]) -> None:
        # One Gradio message per item (consecutive ones share a bubble): streamed updates then change
        # only the top-level list, which Gradio 6.31's output diff handles; it mis-indexes deletions
        # inside several nested lists of one update (gradio.utils.diff adjusts nested deletes again).
        for item in _content(msg, numbers) if msg is not None else []:
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
        self.manager = SessionManager(pipeline, self.cfg, workdir)
        self.title = title or pipeline.config.name
        self.examples = []
        if with_examples:
            from .examples import load_examples

            self.examples = load_examples(getattr(pipeline, "directory", None))
        model = pipeline.model
        self.out_modalities = [m.value for m in model.n_out if model.n_out[m] > 0]
        self.in_modalities = [m.value for m in model.n_in if model.n_in[m] > 0]
        self.blocks = self._build()

    # ------------------------------------------------------------------ helpers
    def _state(self, request: gr.Request) -> ChatState:
        try:
            return self.manager.get(getattr(request, "session_hash", None) or "")
        except ChatInputError as e:
            raise gr.Error(str(e)) from None

    def _refs(self, state: ChatState) -> Any:
        return gr.Dropdown(choices=[(it.label, it.number) for it in state.media], value=[])

    def _drive(self, state: ChatState, events: Iterator[Any]) -> Iterator[tuple]:
        """Streams a turn: (chatbot, textbox, refs) updates, throttled for text."""
        busy_box = gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True)
        yield render(state), busy_box, gr.skip()
        last = 0.0
        for ev in events:
            now = time.monotonic()
            if not isinstance(ev, TextDelta) or now - last >= STREAM_INTERVAL:
                last = now
                yield render(state), gr.skip(), gr.skip()
        yield render(state), gr.MultimodalTextbox(value=None, interactive=True, submit_btn=True, stop_btn=False), \
            self._refs(state)

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
        state = self._state(request)
        try:
            state.undo()
        except ChatInputError as e:
            gr.Warning(str(e))
        return render(state), self._refs(state)

    def clear(self, request: gr.Request) -> tuple:
        state = self._state(request)
        try:
            state.clear()
        except ChatInputError as e:
            gr.Warning(str(e))
        return render(state), self._refs(state)

    def stop(self, request: gr.Request) -> None:
        key = getattr(request, "session_hash", None) or ""
        if key in self.manager:
            self.manager.get(key).cancel()

    def export(self, request: gr.Request) -> Any:
        state = self._state(request)
        try:
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
        key = getattr(request, "session_hash", None)
        if key:
            self.manager.drop(key)

    # ------------------------------------------------------------------ layout
    def _build(self) -> gr.Blocks:
        gen = self.pipeline.config.generation
        accept = ", ".join(self.in_modalities) or "no media"
        # delete_cache: Gradio's copies of served files older than an hour are removed every hour
        with gr.Blocks(title=f"codi2 · {self.title}", fill_height=True, delete_cache=(3600, 3600)) as demo:
            with gr.Sidebar(label="Settings", open=True, position="left", width=300):
                gr.Markdown("### Settings")
                temperature = gr.Slider(0.0, 2.0, value=float(gen.temperature), step=0.05, label="Temperature",
                                        info="0 = greedy")
                top_p = gr.Slider(0.05, 1.0, value=float(gen.top_p), step=0.05, label="Top-p")
                max_new_tokens = gr.Slider(1, self.cfg.max_new_tokens, value=min(gen.max_new_tokens, self.cfg.max_new_tokens),
                                           step=1, label="Max new tokens")
                seed = gr.Number(value=-1, precision=0, label="Seed", info="-1 = random")
                outputs = gr.CheckboxGroup(self.out_modalities, value=list(self.out_modalities),
                                           label="Output modalities allowed")
                with gr.Accordion("Diffusion", open=False):
                    steps = gr.Slider(0, self.cfg.max_steps, value=0, step=1, label="Steps", info="0 = decoder default")
                    guidance = gr.Slider(0.0, 20.0, value=0.0, step=0.5, label="Guidance", info="0 = decoder default")
                    scheduler = gr.Dropdown(["default", "ddim", "dpm++"], value="default", label="Scheduler")
                with gr.Accordion("Advanced", open=False, elem_id="codi2-advanced"):
                    prefix = gr.Textbox(value="", label="Reply starts with", elem_id="codi2-prefix", placeholder="e.g. Here it is: <img>",
                                        info="Forces the start of the reply; <img>, <aud> or <vid> in it makes the "
                                             "model produce that media there.")
                with gr.Accordion("Camera", open=False):
                    webcam_photo = gr.Image(sources=["webcam"], type="filepath", label="Photo",
                                            show_label=True, height=180)
                    webcam_clip = gr.Video(sources=["webcam"], label="Clip", height=180)
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
                chatbot = gr.Chatbot(
                    elem_id="codi2-chat", label="Chat", show_label=False, layout="bubble", height="68vh", scale=1,
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

            settings = [temperature, top_p, max_new_tokens, seed, steps, guidance, scheduler, outputs, prefix]
            stream_out = [chatbot, textbox, refs]
            textbox.submit(self.chat, [textbox, refs] + settings, stream_out, api_name="chat", show_progress="hidden")
            regen_btn.click(self.regenerate, settings, stream_out, api_name="regenerate", show_progress="hidden")
            chatbot.retry(self.regenerate, settings, stream_out, api_visibility="undocumented", show_progress="hidden")
            chatbot.example_select(self.example, settings, stream_out, api_visibility="undocumented",
                                   show_progress="hidden")
            for trigger, api in ((undo_btn.click, "undo"), (chatbot.undo, None)):
                trigger(self.undo, None, [chatbot, refs], api_name=api, concurrency_limit=None,
                        **({} if api else {"api_visibility": "undocumented"}))
            for trigger, api in ((clear_btn.click, "clear"), (chatbot.clear, None)):
                trigger(self.clear, None, [chatbot, refs], api_name=api, concurrency_limit=None,
                        **({} if api else {"api_visibility": "undocumented"}))
            stop_btn.click(self.stop, None, None, api_name="stop", concurrency_limit=None)
            textbox.stop(self.stop, None, None, api_visibility="undocumented", concurrency_limit=None)
            export_btn.click(self.export, None, export_file, api_name="export", concurrency_limit=None).then(
                lambda f: gr.File(visible=f is not None), export_file, export_file, api_visibility="undocumented",
                queue=False)
            for cam in (webcam_photo, webcam_clip):  # a capture is attached to the message being written
                cam.change(self.attach, [cam, textbox], [textbox, cam], api_visibility="undocumented",
                           queue=False, show_progress="hidden")
            demo.unload(self.unload)
        demo.queue(default_concurrency_limit=self.cfg.concurrency_limit, max_size=self.cfg.max_queue_size)
        return demo

    # ------------------------------------------------------------------ run
    def launch(self, host: str = "127.0.0.1", port: int = 7860, auth: Optional[tuple[str, str]] = None,
               share: bool = False, block: bool = True, quiet: bool = False) -> Any:
        """Starts the server (``block=False`` returns at once; call :meth:`close` to stop it)."""
        theme = app_theme()
        return self.blocks.launch(server_name=host, server_port=port, auth=auth, share=share,
                                  prevent_thread_lock=not block, quiet=quiet, show_error=True,
                                  allowed_paths=[str(self.manager.workdir)],
                                  max_file_size=self.cfg.media.max_file_bytes, theme=theme, css=CSS,
                                  footer_links=["api"])

    def close(self) -> None:
        self.blocks.close()
        self.manager.close()


def build_app(pipeline: Any, cfg: Optional[ServeConfig] = None, workdir: "str | Path | None" = None,
              with_examples: bool = True) -> ChatApp:
    """The chat app for a loaded pipeline (not started)."""
    return ChatApp(pipeline, cfg, workdir, with_examples=with_examples)


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=f"a codi2 model directory (default: {DEFAULT_MODEL})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--config", default=None, help="serve settings YAML (codi2.chat_state.ServeConfig fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="serve setting override, e.g. --set max_sessions=8 --set media.max_audio_seconds=10")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--device", default=None)
    p.add_argument("--api", action="store_true",
                   help="also serve the OpenAI-compatible API at /v1 on the same port (serve/api.py)")
    from .api import add_api_options

    add_api_options(p)


def create_app_with_chat(pipeline: Any, cfg: ServeConfig, api: Optional["ApiConfig"] = None,
                         auth: Optional[tuple[str, str]] = None, workdir: "str | Path | None" = None) -> tuple[Any, Any]:
    """The API at /v1 and the Gradio chat at / in one FastAPI app, sharing the model lock; returns (app, chat app)."""
    import gradio as gr

    from .api import create_app

    chat = build_app(pipeline, cfg, workdir=workdir)
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


def run(args: argparse.Namespace) -> int:
    """Loads the model and serves until interrupted. Returns the exit status."""
    from codi2.config import load_config

    auth = parse_auth(args.auth)
    if getattr(args, "api", False):
        from .api import run as run_with_api

        return run_with_api(args, with_chat=lambda pipeline, cfg, api: create_app_with_chat(pipeline, cfg, api,
                                                                                             auth=auth))
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
    app = build_app(pipeline, cfg)
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
