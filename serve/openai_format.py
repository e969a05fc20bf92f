"""The OpenAI wire format for codi2, without HTTP: requests become codi2 messages and sampling options,
a turn's events become OpenAI reply objects. The server is :mod:`serve.api`.

Every problem with a request raises :class:`ApiError`, which carries the OpenAI error fields
(``message``, ``type``, ``param``, ``code``) and an HTTP status; messages name the field and the limit.

Conventions (the README's "OpenAI-compatible API" section documents them for users):

* user content parts: ``text``, ``image_url`` (``data:`` URLs, or ``file://`` paths under the server's
  media root), ``input_audio`` (base64 ``wav`` / ``mp3``) and ``video_url`` (as vLLM); every media is
  checked against the :class:`~codi2.chat_state.ServeConfig` limits and fully decoded before the turn runs;
* a reply's media are numbered per kind and stand in its text as ``[image 1]``, ``[audio 1]``, ``[video 1]``;
  in an assistant message of the history such a placeholder (or a media part, or ``audio: {id}``) becomes
  that media's output span again, so the model sees its earlier replies as it wrote them (output spans need
  no pixels: their slots are tokens);
* ``system`` / ``developer`` messages are accepted and not used (the model keeps its own system prompt).
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from codi2.chat_state import ServeConfig, sampling_options
from codi2.conversation import Message, Part
from codi2.generation import SamplingOptions
from codi2.media import MediaError, detect_kind, load_media, probe, save_audio, save_video, validate
from codi2.modality import ALL_MODALITIES

MAX_STOP = 4  # stop sequences, as OpenAI
MAX_STOP_CHARS = 100
MAX_MESSAGES = 256  # messages in one request (older turns beyond ServeConfig.max_turns are dropped anyway)
# content formats (codi2.media names) -> the suffix the loaders accept
SUFFIX = {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff",
          "wav": ".wav", "flac": ".flac", "ogg": ".ogg", "mp3": ".mp3", "aiff": ".aiff", "m4a": ".m4a",
          "aac": ".aac", "webm": ".webm", "mp4": ".mp4", "mov": ".mov", "avi": ".avi"}
AUDIO_INPUT_FORMATS = ("wav", "mp3")  # input_audio.format, as OpenAI
MIME = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}
PART_FOR_KIND = {"image": "image_url", "audio": "input_audio", "video": "video_url"}
_PLACEHOLDER = re.compile(r"\[(image|audio|video) (\d+)\]")
_ARTICLE = {"image": "an image", "audio": "an audio", "video": "a video"}


class ApiError(Exception):
    """A refused request: an OpenAI-shaped error (``to_dict``) and its HTTP status."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None, status: int = 400,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def placeholder(kind: str, number: int) -> str:
    """How media ``number`` (1-based, per kind) of a reply stands in its text: ``[image 1]``."""
    return f"[{kind} {number}]"


# ----------------------------------------------------------------------------- field checks
def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False, limit_note: str = "") -> Any:
    v = body.get(name)
    if v is None:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise ApiError(f"{name} must be {kind}, got {v!r}", name, "invalid_type")
    if not lo <= v <= hi:
        span = f"{int(lo)}..{int(hi)}" if integer else f"{lo:g}..{hi:g}"
        raise ApiError(f"{name}={v} is out of range; allowed: {span}{limit_note}", name, "out_of_range")
    return int(v) if integer else float(v)


def _string(body: dict, name: str, param: Optional[str] = None) -> Optional[str]:
    v = body.get(name)
    if v is not None and not isinstance(v, str):
        raise ApiError(f"{param or name} must be a string, got {type(v).__name__}", param or name, "invalid_type")
    return v


def check_model(name: Any, served: str, required: bool = True) -> None:
    """The request's ``model`` must name the served model (404 ``model_not_found`` otherwise, as OpenAI)."""
    if name is None and not required:
        return
    if not isinstance(name, str) or not name:
        raise ApiError("model is required: the name of the served model, "
                       f"{served!r} (GET /v1/models lists it)", "model", "missing_required_parameter")
    if name != served:
        raise ApiError(f"the model {name!r} does not exist here; this server serves {served!r}", "model",
                       "model_not_found", status=404)


@dataclass
class Extension:
    """The optional ``codi2`` object of a request: diffusion settings and output shape."""

    steps: Optional[int] = None
    guidance: Optional[float] = None
    scheduler: Optional[str] = None
    prefix: str = ""  # the reply starts with this text; "<img>" in it makes the model draw there
    media_parts: bool = True  # images / videos also as assistant content parts (not only in message.codi2)

    KEYS = ("steps", "guidance", "scheduler", "prefix", "media_parts")


def parse_extension(raw: Any, cfg: ServeConfig, media_parts: bool = True) -> Extension:
    if raw is None:
        return Extension(media_parts=media_parts)
    if not isinstance(raw, dict):
        raise ApiError("codi2 must be an object such as {\"steps\": 20}", "codi2", "invalid_type")
    unknown = sorted(set(raw) - set(Extension.KEYS))
    if unknown:
        raise ApiError(f"codi2 has unknown keys {unknown}; allowed: {', '.join(Extension.KEYS)}", "codi2",
                       "unknown_parameter")
    steps = _number(raw, "steps", 1, cfg.max_steps, integer=True, limit_note=" (max_steps)")
    guidance = _number(raw, "guidance", 0.0, 30.0)
    scheduler = _string(raw, "scheduler", "codi2.scheduler")
    if scheduler is not None and scheduler not in ("ddim", "dpm++"):
        raise ApiError(f"codi2.scheduler={scheduler!r} is not one of ddim, dpm++", "codi2.scheduler", "invalid_value")
    prefix = _string(raw, "prefix", "codi2.prefix") or ""
    if len(prefix) > cfg.max_prefix_chars:
        raise ApiError(f"codi2.prefix is {len(prefix)} characters, over the limit of {cfg.max_prefix_chars} "
                       "(max_prefix_chars)", "codi2.prefix", "too_long")
    media_parts = raw.get("media_parts", media_parts)
    if not isinstance(media_parts, bool):
        raise ApiError("codi2.media_parts must be true or false", "codi2.media_parts", "invalid_type")
    return Extension(steps, guidance, scheduler, prefix, media_parts)


# ----------------------------------------------------------------------------- media in requests
class MediaReader:
    """Turns request media (data URLs, ``file://`` paths, base64, uploaded bytes) into checked, decoded parts.

    Args:
        cfg: the serve limits (``cfg.media`` for every file).
        workdir: this request's folder; decoded bytes are written there (the caller removes it).
        media_root: the only folder ``file://`` URLs may point into (None: ``file://`` is refused).
        inputs: the modalities the model takes as input.
    """

    def __init__(self, cfg: ServeConfig, workdir: Path, media_root: Optional[Path], inputs: Sequence[str]):
        self.cfg, self.workdir, self.inputs = cfg, Path(workdir), set(inputs)
        self.root = Path(os.path.realpath(media_root)) if media_root is not None else None
        self._n = 0

    def _size_check(self, n_bytes: int, param: str) -> None:
        limit = self.cfg.media.max_file_bytes
        if n_bytes > limit:
            raise ApiError(f"{param}: the media is {n_bytes / 2**20:.1f} MiB, over the limit of {limit / 2**20:.1f} MiB "
                           "(media.max_file_bytes)", param, "media_too_large")

    def decode_base64(self, data: str, param: str) -> bytes:
        """Base64 text -> bytes, its size checked against media.max_file_bytes before decoding."""
        self._size_check(len(data) * 3 // 4, param)  # before decoding anything
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(f"{param}: not valid base64", param, "invalid_base64") from None

    def from_bytes(self, raw: bytes, kind: str, param: str) -> Part:
        """Checks and decodes one media of ``kind``; errors name ``param``, never a server path."""
        self._size_check(len(raw), param)
        if kind not in self.inputs:
            raise ApiError(f"{param}: this model does not take {kind} input; it takes: {', '.join(sorted(self.inputs))}",
                           param, "unsupported_modality")
        self._n += 1
        tmp = self.workdir / f"in-{self._n:03d}"
        tmp.write_bytes(raw)
        try:
            found = detect_kind(tmp)
            if found != kind and not (kind == "video" and probe(tmp).format == "gif"):
                raise ApiError(f"{param}: expected {_ARTICLE[kind]}, but the content is {found}; send it in a "
                               f"'{PART_FOR_KIND[found]}' part", param, "invalid_media")
            fmt = probe(tmp, kind).format
            if fmt not in SUFFIX:
                raise ApiError(f"{param}: {fmt} is not a supported {kind} format", param, "invalid_media")
            path = tmp.with_suffix(".ogv" if (kind, fmt) == ("video", "ogg") else SUFFIX[fmt])
            tmp.rename(path)
            validate(path, kind, self.cfg.media)
            media = load_media(path, kind, self.cfg.media)
        except MediaError as e:
            text = str(e)
            for p in sorted({str(tmp), str(tmp.with_suffix("")), *(str(tmp) + s for s in SUFFIX.values())}, key=len,
                            reverse=True):
                text = text.replace(p, param)
            text = re.sub(re.escape(str(self.workdir)) + r"/\S+", param, text)
            raise ApiError(text, param, "invalid_media") from None
        return Part(type=kind, media=media, path=str(path))

    def from_url(self, url: Any, kind: str, param: str) -> Part:
        """``data:<mime>;base64,<data>`` or ``file:///path`` (under the media root only)."""
        if not isinstance(url, str) or not url:
            raise ApiError(f"{param} must be a URL string (data: or file://)", param, "invalid_type")
        if url.startswith("data:"):
            head, sep, data = url.partition(",")
            if not sep or not head.endswith(";base64"):
                raise ApiError(f"{param}: a data URL must be base64, as data:<mime type>;base64,<data>", param,
                               "invalid_url")
            return self.from_bytes(self.decode_base64(data, param), kind, param)
        if url.startswith("file:"):
            return self.from_bytes(self._file(url, param), kind, param)
        scheme = url.split(":", 1)[0] if ":" in url else "(none)"
        raise ApiError(f"{param}: URL scheme {scheme!r} is not allowed; send the media inline as a data: URL "
                       "(base64), or a file:// path under the server's media root. The server fetches nothing "
                       "from the network.", param, "invalid_url")

    def _file(self, url: str, param: str) -> bytes:
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ApiError(f"{param}: file:// URLs must name a local path (file:///path), not host "
                           f"{parsed.netloc!r}", param, "invalid_url")
        if self.root is None:
            raise ApiError(f"{param}: file:// URLs are disabled on this server (start it with --media-root DIR to "
                           "allow files under DIR); send the media as a data: URL", param, "file_access_denied")
        path = os.path.realpath(urllib.parse.unquote(parsed.path))  # symlinks and .. resolved before the check
        if os.path.commonpath([path, str(self.root)]) != str(self.root):
            raise ApiError(f"{param}: {urllib.parse.unquote(parsed.path)!r} is outside the media root; only files under "
                           "the server's --media-root may be read", param, "file_access_denied")
        if not os.path.isfile(path):
            raise ApiError(f"{param}: no such file under the media root", param, "file_not_found")
        size = os.path.getsize(path)
        self._size_check(size, param)
        with open(path, "rb") as f:
            return f.read()


# ----------------------------------------------------------------------------- messages
def _reply_part(kind: str, outputs: set[str]) -> Optional[Part]:
    """An assistant history media: an output span (its slots are tokens; no pixels needed)."""
    if kind not in outputs:
        return None
    return Part(type=kind, key=f"reply-{kind}-{uuid.uuid4().hex[:8]}")


def _assistant_message(msg: dict, where: str, cfg: ServeConfig, outputs: set[str]) -> Message:
    content = msg.get("content")
    texts: list[str] = []
    media_kinds: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            p = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ApiError(f"{p} must be an object with a 'type'", p, "invalid_type")
            t = part["type"]
            if t in ("text", "refusal"):
                v = part.get(t)
                if not isinstance(v, str):
                    raise ApiError(f"{p}.{t} must be a string", f"{p}.{t}", "invalid_type")
                texts.append(v)
            elif t in ("image_url", "video_url", "input_audio"):
                media_kinds.append({"image_url": "image", "video_url": "video", "input_audio": "audio"}[t])
            else:
                raise ApiError(f"{p}: unknown assistant content part type {t!r}; allowed: text, refusal, image_url, "
                               "video_url, input_audio", f"{p}.type", "invalid_value")
    elif content is not None:
        raise ApiError(f"{where}.content must be a string, a list of parts or null", f"{where}.content", "invalid_type")
    if isinstance(msg.get("audio"), dict):
        media_kinds.append("audio")
    text = " ".join(t for t in texts if t)
    if len(text) > 4 * cfg.max_prompt_chars:
        raise ApiError(f"{where}: the assistant text is {len(text)} characters, over the limit of "
                       f"{4 * cfg.max_prompt_chars} (4 × max_prompt_chars)", f"{where}.content", "too_long")
    parts: list[Part] = []
    seen: set[str] = set()
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        span = _reply_part(m.group(1), outputs)
        if span is None:
            continue
        before = text[pos:m.start()].strip()
        if before:
            parts.append(Part.from_text(before))
        parts.append(span)
        seen.add(m.group(1))
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        parts.append(Part.from_text(rest))
    for kind in media_kinds:  # media without a placeholder in the text: their spans go after it
        if kind not in seen:
            span = _reply_part(kind, outputs)
            if span is not None:
                parts.append(span)
    return Message("assistant", parts)


def _user_message(msg: dict, where: str, reader: MediaReader, cfg: ServeConfig) -> Message:
    content = msg.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise ApiError(f"{where}.content must be a non-empty string or list of content parts", f"{where}.content",
                       "invalid_type")
    n_media = sum(isinstance(p, dict) and p.get("type") in ("image_url", "input_audio", "video_url") for p in content)
    if n_media > cfg.max_files_per_message:
        raise ApiError(f"{where} has {n_media} media, over the limit of {cfg.max_files_per_message} "
                       "(max_files_per_message)", f"{where}.content", "too_many_media")
    parts: list[Part] = []
    chars = 0
    for j, part in enumerate(content):
        p = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(f"{p} must be an object with a 'type'", p, "invalid_type")
        t = part["type"]
        if t == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(f"{p}.text must be a string", f"{p}.text", "invalid_type")
            chars += len(text)
            if text.strip():
                parts.append(Part.from_text(text.strip()))
        elif t in ("image_url", "video_url"):
            obj = part.get(t)
            url = obj.get("url") if isinstance(obj, dict) else obj  # {"url": ...} as OpenAI; a bare string too
            parts.append(reader.from_url(url, "image" if t == "image_url" else "video", f"{p}.{t}.url"))
        elif t == "input_audio":
            obj = part.get("input_audio")
            if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
                raise ApiError(f"{p}.input_audio must be an object with base64 'data' and a 'format'",
                               f"{p}.input_audio", "invalid_type")
            fmt = obj.get("format")
            if fmt not in AUDIO_INPUT_FORMATS:
                raise ApiError(f"{p}.input_audio.format={fmt!r}; allowed: {', '.join(AUDIO_INPUT_FORMATS)}",
                               f"{p}.input_audio.format", "invalid_value")
            parts.append(reader.from_bytes(reader.decode_base64(obj["data"], f"{p}.input_audio.data"), "audio",
                                           f"{p}.input_audio.data"))
        else:
            raise ApiError(f"{p}: unknown content part type {t!r}; allowed: text, image_url, input_audio, video_url",
                           f"{p}.type", "invalid_value")
    if chars > cfg.max_prompt_chars:
        raise ApiError(f"{where}: the text is {chars} characters long, over the limit of {cfg.max_prompt_chars} "
                       "(max_prompt_chars)", f"{where}.content", "too_long")
    if not parts:
        raise ApiError(f"{where} is empty: give some text or media", f"{where}.content", "empty_message")
    return Message("user", parts)


def parse_messages(raw: Any, reader: MediaReader, cfg: ServeConfig, outputs: Sequence[str]) -> tuple[list[Message], Message]:
    """OpenAI ``messages`` -> (history as user/assistant pairs, the new user message).

    Consecutive messages of one role are merged; system/developer messages are skipped; leading
    assistant messages (a greeting) are dropped; the history keeps its last ``cfg.max_turns`` turns.
    """
    if not isinstance(raw, list) or not raw:
        raise ApiError("messages must be a non-empty list", "messages", "invalid_type")
    if len(raw) > MAX_MESSAGES:
        raise ApiError(f"messages has {len(raw)} entries, over the limit of {MAX_MESSAGES}", "messages", "too_many")
    out_set = set(outputs)
    msgs: list[Message] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(f"{where} must be an object with 'role' and 'content'", where, "invalid_type")
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            m = _user_message(msg, where, reader, cfg)
        elif role == "assistant":
            m = _assistant_message(msg, where, cfg, out_set)
        elif role in ("tool", "function"):
            raise ApiError(f"{where}: role {role!r} is not supported (this model has no tools)", f"{where}.role",
                           "unsupported_role")
        else:
            raise ApiError(f"{where}.role={role!r}; allowed: system, developer, user, assistant", f"{where}.role",
                           "invalid_value")
        if msgs and msgs[-1].role == m.role:
            msgs[-1].content.extend(m.content)
        else:
            msgs.append(m)
    while msgs and msgs[0].role == "assistant":
        msgs.pop(0)
    if not msgs or msgs[-1].role != "user":
        raise ApiError("the last message must be a user message (the one to answer)", "messages", "invalid_value")
    for m in msgs:
        if m.role == "assistant" and not m.content:
            m.content.append(Part.from_text(""))
    history, user = msgs[:-1], msgs[-1]
    history = history[max(0, len(history) - 2 * max(1, cfg.max_turns)):]
    return history, user


# ----------------------------------------------------------------------------- options
@dataclass
class ChatRequest:
    """A checked ``/v1/chat/completions`` request."""

    history: list[Message]
    user: Message
    options: SamplingOptions
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    audio_out: bool = False  # modalities asked for audio
    ext: Extension = field(default_factory=Extension)


def parse_options(body: dict, cfg: ServeConfig, outputs: Sequence[str], default_max_tokens: int,
                  media_parts: bool = True) -> tuple[SamplingOptions, list[str], bool, Extension]:
    """Sampling fields of a chat request -> (options, stop sequences, audio asked for, extension);
    ``media_parts`` is the server's default for ``codi2.media_parts``."""
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, 1, cfg.max_new_tokens, integer=True,
                         limit_note=" (this server's max_new_tokens)")
    seed = _number(body, "seed", 0, 2**63 - 1, integer=True)
    n = _number(body, "n", 1, 1, integer=True, limit_note="; only one choice per request")
    del n
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise ApiError("stop must be a string or a list of strings", "stop", "invalid_type")
    if len(stops) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(f"stop: at most {MAX_STOP} sequences of 1..{MAX_STOP_CHARS} characters", "stop", "invalid_value")
    if body.get("logprobs"):
        raise ApiError("logprobs are not supported by this server", "logprobs", "unsupported_parameter")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise ApiError("response_format: only {\"type\": \"text\"} is supported (no JSON mode)", "response_format",
                       "unsupported_parameter")
    # modalities: OpenAI's "text" and "audio", and codi2's "image" and "video"; absent = all the model makes
    mods = body.get("modalities")
    if mods is None:
        allowed = list(outputs)
    else:
        if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
            raise ApiError("modalities must be a list of strings such as [\"text\", \"audio\"]", "modalities",
                           "invalid_type")
        known = ["text", *outputs]
        bad = [m for m in mods if m not in known]
        if bad:
            raise ApiError(f"modalities {bad} are not produced by this model; allowed: {', '.join(known)}",
                           "modalities", "invalid_value")
        allowed = [m for m in outputs if m in mods]
    audio_out = "audio" in allowed
    audio = body.get("audio")
    if audio is not None:
        fmt = audio.get("format") if isinstance(audio, dict) else None
        if not isinstance(audio, dict) or fmt not in (None, "wav"):
            raise ApiError(f"audio.format={fmt!r}: this server returns wav audio only; allowed: wav", "audio.format",
                           "invalid_value")
    ext = parse_extension(body.get("codi2"), cfg, media_parts)
    opts = sampling_options(cfg, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_tokens if max_tokens is not None else default_max_tokens,
                            seed=seed, steps=ext.steps, guidance=ext.guidance, scheduler=ext.scheduler,
                            outputs=allowed, prefix=ext.prefix)
    return opts, stops, audio_out, ext


def parse_stream(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError("stream must be true or false", "stream", "invalid_type")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict):
        raise ApiError("stream_options must be an object", "stream_options", "invalid_type")
    return stream, bool(so.get("include_usage", False))


# ----------------------------------------------------------------------------- replies
class ReplyText:
    """The reply's text as a client sees it, built from the turn's events.

    Media become placeholders (``[image 1]``) where they appear; leading and trailing whitespace is
    held back, and so is any tail that could begin a stop sequence, so the pieces :meth:`add`,
    :meth:`media` and :meth:`finish` return concatenate to exactly :attr:`text`, streamed or not.
    A stop sequence ends the text before it (``stopped`` is then True).
    """

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self.raw = ""
        self.emitted = 0
        self.stopped = False
        self._space = False  # a placeholder was just added: text right after it gets a space

    def _safe_end(self) -> int:
        end = len(self.raw.rstrip())
        for s in self.stop:  # a tail that is a proper prefix of a stop sequence may still become one
            for k in range(min(len(s) - 1, len(self.raw)), 0, -1):
                if self.raw.endswith(s[:k]):
                    end = min(end, len(self.raw) - k)
                    break
        return max(len(self.raw[:end].rstrip()), self.emitted)

    def _append(self, piece: str) -> str:
        self.raw += piece
        hits = [i for i in (self.raw.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            self.raw = self.raw[:min(hits)].rstrip()
            end = max(len(self.raw), self.emitted)
        else:
            end = self._safe_end()
        out = self.raw[self.emitted:end]
        self.emitted = end
        return out

    def add(self, delta: str) -> str:
        """Adds generated text; returns what may be shown now."""
        if self.stopped:
            return ""
        if not self.raw:
            delta = delta.lstrip()
        if not delta:
            return ""
        if self._space and not delta[0].isspace():
            delta = " " + delta
        self._space = False
        return self._append(delta)

    def media(self, kind: str, number: int) -> str:
        """Adds a media's placeholder; returns what may be shown now."""
        if self.stopped:
            return ""
        sep = " " if self.raw and not self.raw[-1].isspace() else ""
        out = self._append(sep + placeholder(kind, number))
        self._space = True
        return out

    def finish(self) -> str:
        """The rest of the text (trailing whitespace dropped)."""
        self.raw = self.raw.rstrip()
        out = self.raw[self.emitted:]
        self.emitted = max(self.emitted, len(self.raw))
        return out

    @property
    def text(self) -> str:
        """Everything shown so far (the whole text after :meth:`finish`)."""
        return self.raw[:self.emitted]


@dataclass
class OutputMedia:
    """One medium of a reply, encoded for the wire."""

    kind: str
    number: int  # 1-based, per kind
    data: bytes
    mime: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.data).decode()

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64}"

    def listing(self) -> dict:
        """Its entry in the ``codi2.media`` extension field."""
        return {"type": self.kind, "index": self.number, "placeholder": placeholder(self.kind, self.number),
                "mime_type": self.mime, "data": self.b64}


def encode_media(kind: str, media: Any, number: int) -> OutputMedia:
    """PNG for pictures, WAV for sounds, MP4 for clips."""
    if kind == "image":
        buf = io.BytesIO()
        media.save(buf, format="PNG")
        return OutputMedia(kind, number, buf.getvalue(), MIME[kind])
    with tempfile.TemporaryDirectory(prefix="codi2-api-out-") as d:
        path = Path(d) / f"{kind}.{'wav' if kind == 'audio' else 'mp4'}"
        (save_audio if kind == "audio" else save_video)(media, path)
        return OutputMedia(kind, number, path.read_bytes(), MIME[kind])


def audio_object(media: OutputMedia, transcript: str) -> dict:
    """OpenAI's ``message.audio``: base64 wav with the reply's text as its transcript."""
    return {"id": f"audio_{uuid.uuid4().hex}", "data": media.b64, "expires_at": int(time.time()) + 3600,
            "transcript": transcript}


def chat_message(text: str, media: Sequence[OutputMedia], audio_out: bool, media_parts: bool) -> dict:
    """The assistant message of a non-streamed reply (see the module docstring)."""
    visual = [m for m in media if m.kind in ("image", "video")]
    content: Any = text
    if visual and media_parts:
        content = [{"type": "text", "text": text}] + [
            {"type": f"{m.kind}_url", f"{m.kind}_url": {"url": m.data_url}} for m in visual]
    msg: dict = {"role": "assistant", "content": content, "refusal": None}
    first_audio = next((m for m in media if m.kind == "audio"), None)
    msg["audio"] = audio_object(first_audio, text) if first_audio is not None and audio_out else None
    if media:
        msg["codi2"] = {"media": [m.listing() for m in media]}
    return msg


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def all_outputs(model: Any) -> list[str]:
    """The modalities a model can produce, in the fixed order image, audio, video."""
    return [m.value for m in ALL_MODALITIES if model.n_out.get(m, 0) > 0]


def all_inputs(model: Any) -> list[str]:
    return [m.value for m in ALL_MODALITIES if model.n_in.get(m, 0) > 0]
