"""An OpenAI-compatible HTTP API for codi2 (FastAPI + uvicorn), alone or beside the Gradio chat.

    python -m serve.api [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--media-root DIR]
                        [--output-dir DIR] [--model-name NAME] [--config serve.yaml] [--set KEY=VALUE]…
    codi2 serve --api …      the Gradio chat at / and this API at /v1 on one port, one model, one lock

Endpoints: ``POST /v1/chat/completions`` (streamed as SSE with ``stream: true``), ``POST /v1/images/generations``,
``POST /v1/images/edits`` (multipart), ``GET /v1/models``. The wire format (requests -> codi2 messages,
events -> replies) is :mod:`serve.openai_format`; the README's "OpenAI-compatible API" section shows it in use.

The API is stateless: each request brings its whole history, which is replayed into a fresh
:class:`~codi2.generation.ChatSession` under the model lock (shared with the Gradio app when both run), then
the new turn streams. Every request is checked against the :class:`~codi2.chat_state.ServeConfig` limits before
anything runs; at most ``max_queue_size`` requests wait beyond the one generating (more get 429); a client that
disconnects cancels its turn. With an API key (``--api-key`` or ``$CODI2_API_KEY``) every ``/v1`` request needs
``Authorization: Bearer KEY``, compared in constant time.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from codi2.chat_state import ServeConfig
from codi2.conversation import Message, Part
from codi2.generation import Cancelled, MediaDone, SamplingOptions, TextDelta, TurnDone
from codi2.io import setup_logging
from codi2.modality import Modality

from .openai_format import (ApiError, MediaReader, OutputMedia, ReplyText, all_inputs, all_outputs, audio_object,
                            chat_message, check_model, encode_media, parse_messages, parse_options, parse_stream, usage)

log = logging.getLogger("codi2.api")

API_KEY_ENV = "CODI2_API_KEY"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "codi2-mini"  # as serve.app's
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ApiConfig:
    """Settings of the HTTP API (the limits on media, text and the queue are the :class:`ServeConfig`'s)."""

    api_key: Optional[str] = None  # every /v1 request must send "Authorization: Bearer <key>"
    media_root: Optional[str] = None  # file:// URLs may read files under this folder only (None: no file://)
    output_dir: Optional[str] = None  # images answered as response_format="url" are written and served here
    model_name: Optional[str] = None  # the model id clients name (default: the model config's name)
    media_parts: bool = True  # images / videos of a reply also as content parts (False: content is text only)
    max_images: int = 4  # n of /v1/images/*
    max_request_bytes: int = 64 * 2**20  # one request body
    keepalive_seconds: float = 5.0  # an SSE comment while a stream has nothing to send (e.g. during diffusion)


# ----------------------------------------------------------------------------- the generation engine
_END = object()


@dataclass
class _Started:
    prompt_tokens: int


@dataclass
class _Finished:
    done: TurnDone
    fed: int  # tokens fed after the prompt (reply text, media spans)


class Job:
    """One turn running in its own thread; its events arrive on an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self.cancelled = threading.Event()
        self.session: Any = None

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the server's event loop is gone (shutdown): nobody is listening
            pass

    def cancel(self) -> None:
        """Stops the turn from any thread (also while it waits for the model)."""
        self.cancelled.set()
        if self.session is not None:
            self.session.cancel()


class Engine:
    """Runs turns on one pipeline, one at a time (``model_lock``), with a bounded number in flight.

    Args:
        pipeline: the loaded :class:`~codi2.pipeline.CoDi2Pipeline`.
        cfg: the serve limits.
        model_lock: the lock shared with every other front end of this model (the Gradio app's).
    """

    def __init__(self, pipeline: Any, cfg: ServeConfig, model_lock: Optional[threading.Lock] = None):
        self.pipeline, self.cfg = pipeline, cfg
        self.model_lock = model_lock or threading.Lock()
        self.in_flight = 0
        self.cancelled_turns = 0  # turns stopped before their end (client gone, stop sequence)
        self._count = threading.Lock()
        model = pipeline.model
        gen = model.cfg.generation
        self.max_context = gen.max_context or model.cfg.llm.max_position_embeddings
        self.default_max_tokens = min(gen.max_new_tokens, cfg.max_new_tokens)
        self.n_out = {m.value: n for m, n in model.n_out.items() if n > 0}

    @property
    def limit(self) -> int:
        return self.cfg.max_queue_size + 1  # waiting + the one generating

    def check_capacity(self) -> None:
        """Refuses with 429 when the queue is full (:meth:`start` checks again and counts the turn in)."""
        if self.in_flight >= self.limit:
            raise ApiError(f"the server is busy: {self.in_flight} requests are generating or waiting, the limit is "
                           f"{self.limit} (max_queue_size={self.cfg.max_queue_size} waiting + 1 generating); "
                           "retry later", None, "queue_full", status=429, type="rate_limit_error")

    def start(self, history: list[Message], user: Message, options: SamplingOptions,
              cleanup: Optional[Path] = None) -> Job:
        """Runs a turn in its own thread. The thread counts itself out and removes ``cleanup`` (the request's
        folder) when the turn ends, whatever the HTTP side does meanwhile."""
        with self._count:
            self.check_capacity()
            self.in_flight += 1
        job = Job(asyncio.get_running_loop())
        try:
            threading.Thread(target=self._work, args=(job, history, user, options, cleanup), name="codi2-api-turn",
                             daemon=True).start()
        except BaseException:
            with self._count:
                self.in_flight -= 1
            raise
        return job

    def _fit(self, history: list[Message], user: Message, options: SamplingOptions) -> list[Message]:
        """Drops the oldest turns until the history, the message and the reply fit the context."""
        builder = self.pipeline.model.builder
        reserve = (options.max_new_tokens or self.default_max_tokens) + sum(n + 2 for n in self.n_out.values()) + 16
        while True:
            need = len(builder.encode(history + [user])) + reserve
            if need <= self.max_context:
                return history
            if not history:
                raise ApiError(f"the last message needs about {need - reserve} tokens (+{reserve} for the reply), more "
                               f"than the context of {self.max_context} tokens allows; shorten it, send fewer media or "
                               "lower max_tokens", "messages", "context_length_exceeded")
            history = history[2:]

    def _work(self, job: Job, history: list[Message], user: Message, options: SamplingOptions,
              cleanup: Optional[Path]) -> None:
        locked = False
        try:
            deadline = time.monotonic() + self.cfg.lock_timeout_seconds
            while not self.model_lock.acquire(timeout=0.1):
                if job.cancelled.is_set():
                    return
                if time.monotonic() > deadline:
                    raise ApiError(f"the server is busy (waited {self.cfg.lock_timeout_seconds:g} s for the model); "
                                   "retry later", None, "server_busy", status=503, type="server_error")
            locked = True
            if job.cancelled.is_set():
                return
            history = self._fit(history, user, options)
            session = self.pipeline.session(history)
            job.session = session
            prompt = session.num_tokens + len(self.pipeline.model.builder.encode_turn(session.history, user).ids)
            job.put(_Started(prompt))
            for ev in session.stream(user, options):
                if job.cancelled.is_set():
                    session.cancel()  # again: a session clears the flag when its turn starts
                if isinstance(ev, Cancelled):
                    with self._count:
                        self.cancelled_turns += 1
                job.put(_Finished(ev, session.num_tokens - prompt) if isinstance(ev, TurnDone) else ev)
        except ApiError as e:
            job.put(e)
        except ValueError as e:  # refused by the model (e.g. a disabled modality); codi2 errors name the problem
            job.put(ApiError(str(e), "messages", "invalid_request"))
        except Exception as e:  # a bug or a resource problem: reported, the server keeps serving
            log.exception("generation failed")
            job.put(ApiError(f"generation failed ({type(e).__name__}: {e})", None, "generation_failed", status=500,
                             type="server_error"))
        finally:
            if locked:
                self.model_lock.release()
            with self._count:
                self.in_flight -= 1
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            job.put(_END)


class Turn:
    """Follows one job's events: the reply text (:class:`ReplyText`), its media, tokens and finish reason."""

    def __init__(self, engine: Engine, job: Job, options: SamplingOptions, stop: Sequence[str] = ()):
        self.engine, self.job, self.options = engine, job, options
        self.text = ReplyText(stop)
        self.media: list[OutputMedia] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.started = False

    async def feed(self, item: Any) -> list[Any]:
        """One event in; what a stream shows out: text pieces (str) and finished media (:class:`OutputMedia`)."""
        if isinstance(item, ApiError):
            raise item
        if isinstance(item, _Started):
            self.started = True
            self.prompt_tokens = item.prompt_tokens
            return []
        if self.text.stopped:
            return []
        out: list[Any] = []
        if isinstance(item, TextDelta):
            out.append(self.text.add(item.text))
        elif isinstance(item, MediaDone) and item.media is not None:
            kind = item.modality.value
            number = 1 + sum(m.kind == kind for m in self.media)
            media = await asyncio.to_thread(encode_media, kind, item.media, number)
            self.media.append(media)
            out += [self.text.media(kind, number), media]
        elif isinstance(item, _Finished):
            n_media = [p.type for p in item.done.message.content if p.type != "text"]
            spans = sum(self.engine.n_out.get(k, 0) + 1 for k in n_media)  # slots + closing token per media
            steps = item.fed - spans  # sampled tokens that were fed (an end-of-reply token is not)
            max_new = self.options.max_new_tokens or self.engine.default_max_tokens
            self.finish_reason = "length" if steps >= max_new else "stop"
            self.completion_tokens = item.fed + (self.finish_reason == "stop")
        elif isinstance(item, Cancelled) and not self.text.stopped:
            self.finish_reason = "stop"
        if self.text.stopped:  # a stop sequence: the rest of the turn is not needed
            self.job.cancel()
            tok = self.engine.pipeline.model.tokenizer
            self.completion_tokens = len(tok(self.text.text, add_special_tokens=False)["input_ids"]) + \
                sum(self.engine.n_out.get(m.kind, 0) + 2 for m in self.media)
        return [x for x in out if x != ""]


async def _events(job: Job, request: Any, keepalive: float) -> AsyncIterator[Any]:
    """The job's events; ``None`` after ``keepalive`` seconds without one. A gone client cancels the job."""
    while True:
        try:
            item = await asyncio.wait_for(job.queue.get(), timeout=min(keepalive, 0.5))
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                log.info("the client disconnected; cancelling its turn")
                job.cancel()
                return
            yield None
            continue
        if item is _END:
            return
        yield item


# ----------------------------------------------------------------------------- the app
def create_app(pipeline: Any, cfg: Optional[ServeConfig] = None, api: Optional[ApiConfig] = None,
               model_lock: Optional[threading.Lock] = None, workdir: "str | Path | None" = None) -> Any:
    """The FastAPI app of the API (not started). ``model_lock``: share the Gradio app's to serve both at once."""
    cfg = cfg or ServeConfig()
    api = api or ApiConfig()
    engine = Engine(pipeline, cfg, model_lock)
    model = pipeline.model
    name = api.model_name or pipeline.config.name
    inputs, outputs = all_inputs(model), all_outputs(model)
    own_root = workdir is None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="codi2-api-"))
    root.mkdir(parents=True, exist_ok=True)
    media_root = Path(api.media_root) if api.media_root else None
    out_dir = Path(api.output_dir) if api.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    created = int((Path(pipeline.directory) / "config.yaml").stat().st_mtime) if pipeline.directory else int(time.time())
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_root:  # the request folders' parent, made here
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="codi2 OpenAI-compatible API", docs_url="/v1/docs", openapi_url="/v1/openapi.json",
                  redoc_url=None, lifespan=lifespan)
    app.state.engine, app.state.api, app.state.model_name = engine, api, name

    def error(e: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 429 else None
        if e.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(e.to_dict(), status_code=e.status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error(ApiError(str(e.detail), None, "not_found" if e.status_code == 404 else None, status=e.status_code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error(ApiError(f"invalid request: {e.errors()}", None, "invalid_request"))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return error(ApiError(f"internal error ({type(e).__name__})", None, "internal_error", status=500,
                              type="server_error"))

    def authorize(request: Request) -> None:
        if not api.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError("missing API key: send the header 'Authorization: Bearer <key>' (this server was started "
                           "with --api-key)", None, "invalid_api_key", status=401)
        if not hmac.compare_digest(token.strip().encode(), api.api_key.encode()):
            raise ApiError("invalid API key", None, "invalid_api_key", status=401)

    async def body_bytes(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > api.max_request_bytes:
            raise ApiError(f"the request body is {int(length) / 2**20:.1f} MiB, over the limit of "
                           f"{api.max_request_bytes / 2**20:.0f} MiB", None, "request_too_large", status=413)
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > api.max_request_bytes:
                raise ApiError(f"the request body is over the limit of {api.max_request_bytes / 2**20:.0f} MiB", None,
                               "request_too_large", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(request: Request) -> dict:
        raw = await body_bytes(request)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(f"the request body is not valid JSON ({e})", None, "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError("the request body must be a JSON object", None, "invalid_json")
        return body

    def model_card() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "codi2",
                "codi2": {"input_modalities": ["text", *inputs], "output_modalities": ["text", *outputs]}}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict:
        authorize(request)
        check_model(model_id, name)
        return model_card()

    def request_dir() -> Path:
        return Path(tempfile.mkdtemp(prefix="req-", dir=root))

    # ------------------------------------------------------------------ chat completions
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        authorize(request)
        body = await json_body(request)
        check_model(body.get("model"), name)
        stream, include_usage = parse_stream(body)
        options, stop, audio_out, ext = parse_options(body, cfg, outputs, engine.default_max_tokens, api.media_parts)
        engine.check_capacity()  # before decoding any media
        wd = request_dir()
        job = None
        try:
            reader = MediaReader(cfg, wd, media_root, inputs)
            history, user = await asyncio.to_thread(parse_messages, body.get("messages"), reader, cfg, outputs)
            job = engine.start(history, user, options, cleanup=wd)
            turn = Turn(engine, job, options, stop)
            events = _events(job, request, api.keepalive_seconds)
            cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            # wait until the turn has the model (or failed): refusals are still plain HTTP errors
            async for item in events:
                if isinstance(item, ApiError):
                    raise item
                if isinstance(item, _Started):
                    await turn.feed(item)
                    break
            if not turn.started:
                raise ApiError("the request was cancelled", None, "cancelled", status=499)
            if not stream:
                result = await _collect(turn, events)
                return {"id": cid, "object": "chat.completion", "created": now, "model": name,
                        "system_fingerprint": None,
                        "choices": [{"index": 0, "logprobs": None, "finish_reason": turn.finish_reason,
                                     "message": chat_message(result, turn.media, audio_out, ext.media_parts)}],
                        "usage": usage(turn.prompt_tokens, turn.completion_tokens)}
            return StreamingResponse(_sse(turn, events, cid, now, name, audio_out, include_usage, api.keepalive_seconds),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        finally:
            if job is None:  # refused before the turn started; otherwise its thread cleans up
                shutil.rmtree(wd, ignore_errors=True)

    # ------------------------------------------------------------------ images
    sizes: list[str] = []

    async def image_size() -> str:
        """The image decoder's WxH (read once, under the model lock: it may load the decoder)."""
        if not sizes:
            def read() -> tuple[int, int]:
                with engine.model_lock:
                    return model.decoder(Modality.IMAGE).image_size()

            h, w = await asyncio.to_thread(read)
            sizes.append(f"{w}x{h}")
        return sizes[0]

    def image_fields(get: Any, allowed: str) -> tuple[int, Optional[int], str, dict]:
        """n, seed, response_format and diffusion settings of an images request (JSON or form fields)."""
        def num(key: str, lo: float, hi: float, integer: bool = True) -> Any:
            v = get(key)
            if v is None or v == "":
                return None
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise ApiError(f"{key} must be a number, got {v!r}", key, "invalid_type") from None
            if isinstance(v, bool) or (integer and not x.is_integer()):
                raise ApiError(f"{key} must be an integer, got {v!r}", key, "invalid_type")
            if not lo <= x <= hi:
                span = f"{int(lo)}..{int(hi)}" if integer else f"{lo:g}..{hi:g}"
                raise ApiError(f"{key}={v} is out of range; allowed: {span}", key, "out_of_range")
            return int(x) if integer else x

        n = num("n", 1, api.max_images) or 1
        seed = num("seed", 0, 2**63 - 1)
        size = get("size")
        if size not in (None, "", "auto", allowed):
            raise ApiError(f"size={size!r} is not available: this model's image decoder makes {allowed} pictures; "
                           f"allowed: {allowed}, auto", "size", "invalid_value")
        fmt = get("response_format") or "b64_json"
        if fmt not in ("b64_json", "url"):
            raise ApiError(f"response_format={fmt!r}; allowed: b64_json, url", "response_format", "invalid_value")
        if fmt == "url" and out_dir is None:
            raise ApiError("response_format=url needs a served output folder (start the server with --output-dir DIR); "
                           "use b64_json", "response_format", "invalid_value")
        output_format = get("output_format")
        if output_format not in (None, "", "png"):
            raise ApiError(f"output_format={output_format!r}; allowed: png", "output_format", "invalid_value")
        diffusion = {"steps": num("steps", 1, cfg.max_steps), "guidance": num("guidance", 0, 30, integer=False)}
        return n, seed, fmt, diffusion

    async def make_images(request: Request, user: Message, n: int, seed: Optional[int], fmt: str,
                          diffusion: dict) -> dict:
        data = []
        for i in range(n):
            image = None
            for prefix in ("", "<img>"):  # if the reply has no picture, once more with the picture forced
                opts = SamplingOptions(seed=None if seed is None else seed + i, allowed_outputs=[Modality.IMAGE],
                                       max_media=1, prefix=prefix, max_new_tokens=engine.default_max_tokens,
                                       **diffusion)
                job = engine.start([], Message("user", [Part(type=p.type, text=p.text, media=p.media, path=p.path)
                                                        for p in user.content]), opts)
                turn = Turn(engine, job, opts)
                await _collect(turn, _events(job, request, api.keepalive_seconds))
                image = next((m for m in turn.media if m.kind == "image"), None)
                if image is not None:
                    break
            if image is None:
                raise ApiError("the model made no picture for this prompt", "prompt", "no_image", status=500,
                               type="server_error")
            if fmt == "url":
                fname = f"{uuid.uuid4().hex}.png"
                (out_dir / fname).write_bytes(image.data)
                data.append({"url": f"{str(request.base_url).rstrip('/')}/v1/outputs/{fname}", "revised_prompt": None})
            else:
                data.append({"b64_json": image.b64, "revised_prompt": None})
        return {"created": int(time.time()), "data": data, "output_format": "png", "size": await image_size()}

    def prompt_text(prompt: Any) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError("prompt is required: a non-empty string", "prompt", "missing_required_parameter")
        if len(prompt) > cfg.max_prompt_chars:
            raise ApiError(f"prompt is {len(prompt)} characters long, over the limit of {cfg.max_prompt_chars} "
                           "(max_prompt_chars)", "prompt", "too_long")
        return prompt.strip()

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> Any:
        authorize(request)
        body = await json_body(request)
        check_model(body.get("model"), name, required=False)
        prompt = prompt_text(body.get("prompt"))
        if "image" not in outputs:
            raise ApiError("this model does not make images", None, "unsupported_modality")
        ext = body.get("codi2") if isinstance(body.get("codi2"), dict) else {}  # seed, steps, guidance: here or top level
        n, seed, fmt, diffusion = image_fields(lambda k: body.get(k) if k in body else ext.get(k), await image_size())
        engine.check_capacity()
        return await make_images(request, Message("user", [Part.from_text(prompt)]), n, seed, fmt, diffusion)

    @app.post("/v1/images/edits")
    async def images_edits(request: Request) -> Any:
        authorize(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > api.max_request_bytes:
            raise ApiError(f"the request body is {int(length) / 2**20:.1f} MiB, over the limit of "
                           f"{api.max_request_bytes / 2**20:.0f} MiB", None, "request_too_large", status=413)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError("images/edits takes multipart/form-data with 'image' file(s) and a 'prompt'", None,
                           "invalid_content_type")
        try:
            form = await request.form(max_files=cfg.max_files_per_message + 1, max_fields=64)
        except Exception as e:  # malformed multipart, too many files
            raise ApiError(f"could not read the multipart form: {e}", None, "invalid_form") from None
        files = [f for key in ("image", "image[]") for f in form.getlist(key) if not isinstance(f, str)]
        if form.get("mask") is not None:
            raise ApiError("mask is not supported: codi2 edits the whole picture as the prompt says", "mask",
                           "unsupported_parameter")
        check_model(form.get("model"), name, required=False)
        prompt = prompt_text(form.get("prompt"))
        if not files:
            raise ApiError("image is required: the picture to edit, as a file", "image", "missing_required_parameter")
        if len(files) > cfg.max_files_per_message:
            raise ApiError(f"{len(files)} images, over the limit of {cfg.max_files_per_message} (max_files_per_message)",
                           "image", "too_many_media")
        if "image" not in outputs:
            raise ApiError("this model does not make images", None, "unsupported_modality")
        n, seed, fmt, diffusion = image_fields(form.get, await image_size())
        engine.check_capacity()
        wd = request_dir()
        try:
            reader = MediaReader(cfg, wd, media_root, inputs)
            parts = []
            for i, f in enumerate(files):
                raw = await f.read(cfg.media.max_file_bytes + 1)
                param = "image" if len(files) == 1 else f"image[{i}]"
                parts.append(await asyncio.to_thread(reader.from_bytes, raw, "image", param))
            user = Message("user", parts + [Part.from_text(prompt)])
            return await make_images(request, user, n, seed, fmt, diffusion)
        finally:
            shutil.rmtree(wd, ignore_errors=True)  # the pictures are decoded: the turns do not need the files

    if out_dir is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/v1/outputs", StaticFiles(directory=str(out_dir)), name="outputs")
    return app


async def _collect(turn: Turn, events: AsyncIterator[Any]) -> str:
    """Runs a turn to its end; returns its text."""
    async for item in events:
        if item is not None:
            await turn.feed(item)
    turn.text.finish()
    if turn.job.cancelled.is_set() and not turn.text.stopped:
        raise ApiError("the request was cancelled", None, "cancelled", status=499)
    return turn.text.text


def _chunk(cid: str, now: int, name: str, delta: dict, finish: Optional[str] = None) -> str:
    return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": now, "model": name,
                                  "system_fingerprint": None,
                                  "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                               "finish_reason": finish}]}) + "\n\n"


async def _sse(turn: Turn, events: AsyncIterator[Any], cid: str, now: int, name: str, audio_out: bool,
               include_usage: bool, keepalive: float) -> AsyncIterator[str]:
    """The streamed reply: text deltas, media (``delta.codi2`` / ``delta.audio``), the finish, usage, [DONE]."""
    finished = False
    audio_id = None
    last = time.monotonic()
    try:
        yield _chunk(cid, now, name, {"role": "assistant", "content": ""})
        async for item in events:
            if item is None:
                if time.monotonic() - last >= keepalive:
                    last = time.monotonic()
                    yield ": keep-alive\n\n"  # SSE comment: keeps proxies open, and finds a gone client
                continue
            last = time.monotonic()
            try:
                shown = await turn.feed(item)
            except ApiError as e:
                yield "data: " + json.dumps(e.to_dict()) + "\n\n"
                return
            for x in shown:
                if isinstance(x, str):
                    yield _chunk(cid, now, name, {"content": x})
                else:
                    delta: dict = {"codi2": {"media": [x.listing()]}}
                    if x.kind == "audio" and audio_out and audio_id is None:
                        a = audio_object(x, "")
                        audio_id = a["id"]
                        delta["audio"] = a
                    yield _chunk(cid, now, name, delta)
        rest = turn.text.finish()
        if rest:
            yield _chunk(cid, now, name, {"content": rest})
        if audio_id is not None:
            yield _chunk(cid, now, name, {"audio": {"id": audio_id, "transcript": turn.text.text}})
        yield _chunk(cid, now, name, {}, turn.finish_reason)
        if include_usage:
            yield "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": now, "model": name,
                                         "choices": [], "usage": usage(turn.prompt_tokens, turn.completion_tokens)}) + "\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            turn.job.cancel()  # the client went away (or the stream failed): stop the turn


# ----------------------------------------------------------------------------- running it
class ApiServer:
    """A uvicorn server in a background thread (tests, benchmarks): ``.url``, ``.stop()``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="codi2-api-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def add_api_options(p: argparse.ArgumentParser) -> None:
    """The API's own options (``codi2 serve --api`` and ``python -m serve.api``)."""
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on every /v1 request (default: ${API_KEY_ENV} if set)")
    p.add_argument("--media-root", default=None, metavar="DIR",
                   help="allow file:// media URLs under DIR (and nowhere else; default: no file:// at all)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="serve images asked for as response_format=url from DIR (at /v1/outputs/)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the model config's name)")
    p.add_argument("--text-content", action="store_true",
                   help="reply content is always a string (media only in message.codi2 / message.audio), for "
                        "clients that cannot take content parts")


def api_config(args: argparse.Namespace) -> ApiConfig:
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    return ApiConfig(api_key=key, media_root=args.media_root, output_dir=args.output_dir, model_name=args.model_name,
                     media_parts=not args.text_content)


def run(args: argparse.Namespace, with_chat: Optional[Callable[[Any, ServeConfig, ApiConfig], tuple[Any, Any]]] = None
        ) -> int:
    """Loads the model and serves the API until interrupted. ``with_chat(pipeline, cfg, api) -> (app, chat)`` builds
    the FastAPI app with the Gradio chat mounted too (``serve.app.create_app_with_chat``, for ``codi2 serve --api``)."""
    import uvicorn

    from codi2.config import load_config

    explicit = args.model is not None
    model_dir = Path(args.model) if explicit else DEFAULT_MODEL
    if not (model_dir / "config.yaml").is_file():
        print(f"codi2 serve: no codi2 model at {model_dir}. Pass --model DIR with a model directory, or create a small "
              f"random one:\n    codi2 init configs/model/tiny.yaml --out DIR", file=sys.stderr)
        return 2 if explicit else 0
    api = api_config(args)
    if getattr(args, "share", False):
        raise ValueError("--share cannot be combined with --api (a public link would expose the API too)")
    if args.host not in LOOPBACK and not api.api_key:
        log.warning("binding %s without --api-key: anyone who can reach this address can use the model", args.host)
    cfg = load_config(ServeConfig, args.config, args.set)
    from codi2.pipeline import CoDi2Pipeline

    log.info("loading %s", model_dir)
    pipeline = CoDi2Pipeline.from_pretrained(model_dir, device=args.device, overrides=args.override)
    if with_chat is not None:
        app, chat = with_chat(pipeline, cfg, api)
    else:
        app, chat = create_app(pipeline, cfg, api), None
    where = f"http://{args.host}:{args.port}"
    log.info("OpenAI-compatible API at %s/v1 (model %r)%s", where, app.state.model_name,
             f"; the chat at {where}/" if chat is not None else "")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        if chat is not None:
            chat.manager.close()
    return 0


def add_server_arguments(p: argparse.ArgumentParser, port: int) -> None:
    """The options every codi2 server takes (``python -m serve.api``, ``codi2 serve``): model, address, settings."""
    p.add_argument("--model", default=None, help="a codi2 model directory (default: checkpoints/codi2-mini)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--config", default=None, help="serve settings YAML (codi2.chat_state.ServeConfig fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="serve setting override, e.g. --set max_sessions=8 --set media.max_audio_seconds=10")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--device", default=None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.api", description="codi2 OpenAI-compatible API")
    p.add_argument("-v", "--verbose", action="store_true")
    add_server_arguments(p, port=8000)
    add_api_options(p)
    args = p.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, timestamps=False)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"codi2 serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
