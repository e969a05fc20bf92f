"""Mini-world tasks -> conversations in the manifest schema (docs/design.md#manifest-schema).

``build_world(out_dir, n, seed, tasks, split)`` writes ``out_dir/manifest.jsonl`` and ``out_dir/media/…``.
Record ``i`` uses task ``tasks[i % len(tasks)]`` (so every task appears once ``n >= len(tasks)``) and its
own generator ``default_rng([seed, split_index, i])``: records do not depend on each other, and the same
``(seed, split, n, tasks)`` gives a byte-identical manifest.

Held-out splits by seed: every render seed (the slight variation of a picture, sound or clip) is
``4 * k + split_index`` with split_index 0 = train, 1 = val, 2 = test (3 is the judges' own stream), so no
rendered file of one split can appear in another. Within a split the render seeds come from a pool of
``variations`` values per world seed, so files repeat and are written once: media are named by the hash of
their raw content (pixels / samples / frames), i.e. deduplicated by content.

Every record carries ``meta``: ``task``, ``split``, ``shots`` (in-context examples, else 0), ``inputs`` and
``targets`` (one entry per input / output medium or scored text: ``modality``, ``turn`` (message index),
``path`` (media), ``attrs`` (what a judge should find)), and ``edits`` for editing tasks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from codi2.io import setup_logging
from codi2.media import save_audio, save_image, save_video

from . import grammar as G
from .world import (
    ATTRIBUTES,
    COLOURS,
    POSITIONS,
    WorldObject,
    article,
    caption,
    object_phrase,
    random_direction,
    random_object,
    render_image,
    render_sound,
    render_video,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
JUDGE_STREAM = 3  # render seeds with seed % 4 == 3 are the judges' (never in a manifest)
N_STREAMS = 4

TASKS: tuple[str, ...] = (
    "caption_image",
    "caption_audio",
    "caption_video",
    "gen_image",
    "gen_audio",
    "gen_video",
    "image_to_audio",
    "audio_to_image",
    "image_audio_to_video",
    "edit_image",
    "edit_audio",
    "icl_edit_image",
    "icl_edit_audio",
    "subject_image",
    "multi_round_edit",
    "joint_image_audio",
)
# Tasks whose prompt leaves the object open (one attribute named, the reply names the object it chose): CoDi's
# joint-generation setting, where one reply that makes a picture and a sound must choose once and two separate
# replies choose twice. Not in the default mix (``--tasks`` names them), so the recipe's data is unchanged.
OPEN_TASKS: tuple[str, ...] = ("gen_open_image", "gen_open_audio", "joint_open")
# Two renders of one object, one attribute changed; the reply names the change in the words an in-context reply
# starts with (``change_words``), and nothing else. The in-context tasks' first step on its own: a training aid
# (two inputs, a one-sentence text reply, no output media) and a quick diagnostic (text only, scored by
# ``edit_named``). Not in the default mix either.
SPOT_TASKS: tuple[str, ...] = ("spot_change_image", "spot_change_audio")
# Edits of two attributes at once ("Make it blue and large."), and prompts outside the world (greetings, other
# objects, poems, other languages, sums), answered with a short text reply that says what the model can make
# (grammar.scope_reply). Not in the default mix either.
TWO_EDIT_TASKS: tuple[str, ...] = ("edit_image_two",)
SCOPE_TASKS: tuple[str, ...] = ("out_of_scope",)
ALL_TASKS: tuple[str, ...] = TASKS + OPEN_TASKS + SPOT_TASKS + TWO_EDIT_TASKS + SCOPE_TASKS
OPEN_ATTRS = ("colour", "shape")  # what an open prompt names: the rest is the model's choice


def render_seed(world_seed: int, variation: int, stream: int) -> int:
    """The render seed of variation ``variation`` in seed stream ``stream`` (0-2 = split, 3 = judges)."""
    base = int(np.random.default_rng([world_seed, variation, 7]).integers(2**40))
    return base * N_STREAMS + stream


def split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return SPLITS.index(split)


# --------------------------------------------------------------------------- media store


class MediaStore:
    """Renders media into ``root/media/{image,audio,video}/<content hash>.{png,wav,mp4}``, once per content.

    Returns paths relative to ``root`` (the manifest's folder).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._paths: dict[tuple, str] = {}
        self.n_written = 0
        self.n_reused = 0

    def _cached(self, key: tuple) -> Optional[str]:
        rel = self._paths.get(key)
        if rel is not None:
            self.n_reused += 1
        return rel

    def _put(self, key: tuple, kind: str, raw: bytes, write: Callable[[Path], object], suffix: str) -> str:
        digest = hashlib.sha1(kind.encode() + raw).hexdigest()[:20]
        rel = f"media/{kind}/{digest}{suffix}"
        path = self.root / rel
        if path.exists():
            self.n_reused += 1
        else:
            tmp = path.with_name(f".tmp-{path.name}")  # same suffix; never a half-written file under the real name
            write(tmp)
            tmp.replace(path)
            self.n_written += 1
        self._paths[key] = rel
        return rel

    def image(self, obj: WorldObject, seed: int) -> str:
        key = ("image", obj, seed)
        if (rel := self._cached(key)) is not None:
            return rel
        img = render_image(obj, seed)
        return self._put(key, "image", img.tobytes(), lambda p: save_image(img, p), ".png")

    def audio(self, obj: WorldObject, seed: int) -> str:
        key = ("audio", obj.with_(position="center"), seed)  # position is not heard
        if (rel := self._cached(key)) is not None:
            return rel
        snd = render_sound(obj, seed)
        return self._put(key, "audio", snd.samples.tobytes(), lambda p: save_audio(snd, p), ".wav")

    def video(self, obj: WorldObject, direction: str, seed: int) -> str:
        key = ("video", obj.with_(position="center"), direction, seed)  # a clip ignores position
        if (rel := self._cached(key)) is not None:
            return rel
        vid = render_video(obj, direction, seed)
        return self._put(key, "video", vid.frames.tobytes(), lambda p: save_video(vid, p), ".mp4")


# --------------------------------------------------------------------------- conversations


class _Conv:
    """Collects messages; media / scored-text parts carry ``_attrs`` that go to meta and not to the message."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.inputs: list[dict] = []
        self.targets: list[dict] = []

    def say(self, role: str, *parts: dict) -> None:
        turn = len(self.messages)
        clean = []
        for part in parts:
            part = dict(part)
            attrs = part.pop("_attrs", None)
            if attrs is not None:
                entry = {"modality": part["type"], "turn": turn}
                if "path" in part:
                    entry["path"] = part["path"]
                entry["attrs"] = attrs
                (self.targets if role == "assistant" else self.inputs).append(entry)
            clean.append(part)
        self.messages.append({"role": role, "content": clean})


def _text(text: str, attrs: Optional[dict] = None) -> dict:
    part = {"type": "text", "text": text}
    if attrs is not None:
        part["_attrs"] = attrs
    return part


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


class _Task:
    """What one record's generator can use: its rng, render seeds of its split, the media store."""

    def __init__(self, rng: np.random.Generator, store: MediaStore, world_seed: int, stream: int, variations: int,
                 icl_shots: Optional[int] = None, frames: str = "template", prng: Optional[np.random.Generator] = None):
        self.rng, self.store, self.icl_shots = rng, store, icl_shots
        self.frames, self.prng = frames, prng  # the request grammar's side and its own generator (see rephrase)
        self.specs: list[Optional[dict]] = []  # per user turn: what it asks, for the grammar to word it anew
        self.world_seed, self.stream, self.variations = world_seed, stream, variations
        self.conv = _Conv()
        self.shots = 0
        self.edits: list[dict] = []
        self.asked: Optional[dict[str, str]] = None  # open tasks: the attributes the prompt named
        self.separate: Optional[dict[str, str]] = None  # joint_open: the prompts of the two separate replies

    def seed(self) -> int:
        return render_seed(self.world_seed, int(self.rng.integers(self.variations)), self.stream)

    def obj(self) -> WorldObject:
        return random_object(self.rng)

    def media(self, modality: str, obj: WorldObject, seed: int, direction: Optional[str] = None,
              with_caption: bool = True) -> dict:
        """A media part for ``obj`` rendered in ``modality`` (``_attrs``: what that modality expresses)."""
        if modality == "image":
            path = self.store.image(obj, seed)
        elif modality == "audio":
            path = self.store.audio(obj, seed)
        elif modality == "video":
            path = self.store.video(obj, direction, seed)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown modality {modality!r}; allowed: image, audio, video")
        part = {"type": modality, "path": path}
        if with_caption:
            part["caption"] = caption(modality, obj, direction)
        part["_attrs"] = _attrs(modality, obj, direction)
        return part

    def reply(self) -> dict:
        return _text(_choice(self.rng, ("Here it is:", "Here you go:", "Sure, here it is:", "Done:")))


def _attrs(modality: str, obj: WorldObject, direction: Optional[str] = None) -> dict[str, str]:
    """The attributes a judge of ``modality`` should find in ``obj`` (a video adds its direction)."""
    attrs = obj.attrs(modality)
    if modality == "video":
        attrs["direction"] = direction  # type: ignore[assignment]
    return attrs


# ---- edits: (attribute, new value) -> instruction wording


def _pick_edit(t: _Task, obj: WorldObject, modality: str) -> tuple[str, str]:
    """A random edit of ``obj`` that modality can show: (attribute, new value != current)."""
    attrs = ("shape", "colour", "size", "position") if modality == "image" else ("shape", "colour", "size")
    attr = _choice(t.rng, attrs)
    values = [v for v in ATTRIBUTES[attr] if v != getattr(obj, attr)]
    return attr, _choice(t.rng, values)


def _edit_words(t: _Task, obj: WorldObject, attr: str, value: str, modality: str) -> str:
    """The instruction that asks for ``attr = value`` on ``obj`` (image or audio wording)."""
    rng = t.rng
    if attr == "colour":
        step = COLOURS.index(value) - COLOURS.index(obj.colour)
        if modality == "audio" and abs(step) == 1 and rng.random() < 0.7:
            return _choice(rng, ("Raise the pitch.", "Make it a bit higher.", "Make the pitch higher.")) if step > 0 \
                else _choice(rng, ("Lower the pitch.", "Make it a bit lower.", "Make the pitch lower."))
        if modality == "audio":
            return _choice(rng, (f"Make it sound {value}.", f"Make it {value}.", f"Change the pitch to {value}."))
        return _choice(rng, (f"Make it {value}.", f"Change its colour to {value}.", f"Paint it {value}.",
                             f"Turn it {value}."))
    if attr == "shape":
        a = article(value)
        if modality == "audio":
            return _choice(rng, (f"Make it sound like {a} {value}.", f"Give it the timbre of {a} {value}."))
        return _choice(rng, (f"Make it {a} {value}.", f"Turn it into {a} {value}.",
                             f"Change the shape to {a} {value}."))
    if attr == "size":
        if modality == "audio":
            return _choice(rng, ("Make it louder.", "Make it louder and longer.")) if value == "large" \
                else _choice(rng, ("Make it quieter.", "Make it softer and shorter."))
        return _choice(rng, ("Make it bigger.", "Make it large.")) if value == "large" \
            else _choice(rng, ("Make it smaller.", "Shrink it.", "Make it small."))
    if attr == "position":
        to = {"left": "to the left", "right": "to the right", "top": "to the top", "bottom": "to the bottom",
              "center": "to the middle"}[value]
        at = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
              "center": "in the middle"}[value]
        return _choice(rng, (f"Move it {to}.", f"Put it {at}."))
    raise ValueError(f"cannot edit attribute {attr!r}")


# ---- the tasks. Each fills t.conv (and t.shots / t.edits).


def _caption_task(modality: str) -> Callable[[_Task], None]:
    questions = {
        "image": ("What is in this picture?", "Describe the image.", "What do you see?", "Caption this image."),
        "audio": ("What makes this sound?", "Describe this sound.", "What object does this sound come from?"),
        "video": ("Describe this video.", "What happens in this clip?", "What is moving here, and where to?"),
    }[modality]

    def run(t: _Task) -> None:
        obj = t.obj()
        direction = random_direction(t.rng) if modality == "video" else None
        t.conv.say("user", t.media(modality, obj, t.seed(), direction), _text(_choice(t.rng, questions)))
        t.specs.append({"kind": f"caption_{modality}", "modality": modality})
        answer = _cap(caption(modality, obj, direction, t.rng)) + "."
        t.conv.say("assistant", _text(answer, _attrs(modality, obj, direction)))

    return run


def _gen_task(modality: str) -> Callable[[_Task], None]:
    def run(t: _Task) -> None:
        obj = t.obj()
        direction = random_direction(t.rng) if modality == "video" else None
        phrase = object_phrase(obj, modality, t.rng, direction)
        ask = {
            "image": (f"Draw {phrase}.", f"Show me {phrase}.", f"Make a picture of {phrase}."),
            "audio": (f"Play the sound of {phrase}.", f"What does {phrase} sound like?",
                      f"Make the sound of {phrase}."),
            "video": (f"Make a video of {phrase}.", f"Show me a clip of {phrase}.", f"Animate {phrase}."),
        }[modality]
        t.conv.say("user", _text(_choice(t.rng, ask)))
        t.specs.append({"kind": f"gen_{modality}", "obj": obj, "direction": direction})
        t.conv.say("assistant", t.reply(), t.media(modality, obj, t.seed(), direction))

    return run


def _image_to_audio(t: _Task) -> None:
    obj = t.obj()
    ask = ("What does this sound like?", "Play the sound of this object.", "Let me hear this object.")
    t.conv.say("user", t.media("image", obj, t.seed()), _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "image_to_audio", "modality": "image"})
    t.conv.say("assistant", t.reply(), t.media("audio", obj, t.seed()))


def _audio_to_image(t: _Task) -> None:
    """The sound fixes shape, colour and size; the drawn object sits in the center."""
    obj = t.obj()
    ask = ("Draw the object that makes this sound.", "What does this sound look like? Draw it.",
           "Show me what makes this sound.")
    t.conv.say("user", t.media("audio", obj, t.seed()), _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "audio_to_image", "modality": "audio"})
    t.conv.say("assistant", t.reply(), t.media("image", obj.with_(position="center"), t.seed()))


def _image_audio_to_video(t: _Task) -> None:
    """Shape and size from the picture, colour from the sound's pitch, direction from the words."""
    a, b, direction = t.obj(), t.obj(), random_direction(t.rng)
    motion = object_phrase(a, "video", t.rng, direction).split(f" {a.shape} ", 1)[1]  # 'moving up'
    ask = (f"Make a video of this shape, in the colour this sound has, {motion}.",
           f"Animate this object {motion}, coloured like this sound.")
    target = a.with_(colour=b.colour)
    t.conv.say("user", t.media("image", a, t.seed()), t.media("audio", b, t.seed()), _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "image_audio_to_video", "modality": "image", "direction": direction})
    t.conv.say("assistant", t.reply(), t.media("video", target, t.seed(), direction))


def _edit_task(modality: str) -> Callable[[_Task], None]:
    def run(t: _Task) -> None:
        obj, seed = t.obj(), t.seed()
        attr, value = _pick_edit(t, obj, modality)
        words = _edit_words(t, obj, attr, value, modality)
        t.edits.append({"attr": attr, "value": value, "instruction": words})
        t.conv.say("user", t.media(modality, obj, seed), _text(words))
        t.specs.append({"kind": "edit", "modality": modality, "obj": obj, "edits": [(attr, value)], "round": 0})
        t.conv.say("assistant", t.reply(), t.media(modality, obj.with_(**{attr: value}), seed))  # same look

    return run


MAX_SHOTS = 4  # exemplar pairs of an in-context record: 1 … MAX_SHOTS
ICL_INTROS = ("Look at these examples.", "Here are some examples.", "Study these pairs.", "Each pair shows a change.")
ICL_QUERIES = ("Now do the same to this one:", "Apply the same change to this:", "Do the same here:", "And this one?")


def _icl_task(modality: str) -> Callable[[_Task], None]:
    """A : A' :: B : ?, 1-4 shots (or ``icl_shots``). The user's words are neutral and inputs carry no captions (they would name
    the edit); the assistant first states the change it read off the exemplars (:func:`change_words`), then
    shows B edited, so the inference gets a text loss of its own and the image follows from it."""

    def run(t: _Task) -> None:
        t.shots = t.icl_shots if t.icl_shots else int(t.rng.integers(1, MAX_SHOTS + 1))
        query = t.obj()
        attr, value = _pick_edit(t, query, modality)
        t.edits.append({"attr": attr, "value": value})
        parts = [_text(_choice(t.rng, ICL_INTROS))]
        for _ in range(t.shots):
            ex = t.obj()
            while getattr(ex, attr) == value:  # every exemplar shows the change
                ex = t.obj()
            seed = t.seed()
            parts += [t.media(modality, ex, seed, with_caption=False),
                      t.media(modality, ex.with_(**{attr: value}), seed, with_caption=False)]
        seed = t.seed()
        parts += [_text(_choice(t.rng, ICL_QUERIES)), t.media(modality, query, seed, with_caption=False)]
        t.conv.say("user", *parts)
        t.specs.append({"kind": "icl"})
        reply = t.reply()
        reply["text"] = f"{change_words(attr, value)} {reply['text']}"  # says the change it inferred
        t.conv.say("assistant", reply, t.media(modality, query.with_(**{attr: value}), seed))

    return run


SPOT_QUESTIONS = ("What changed?", "What is the change from the first to the second?", "How does the second differ?",
                  "What was changed here?")


def _spot_change_task(modality: str) -> Callable[[_Task], None]:
    """A, then A' (one attribute changed, same render seed): "What changed?" -> "The change makes it green."
    The inputs carry no captions (they would name the change)."""

    def run(t: _Task) -> None:
        obj, seed = t.obj(), t.seed()
        attr, value = _pick_edit(t, obj, modality)
        t.edits.append({"attr": attr, "value": value})
        t.conv.say("user", t.media(modality, obj, seed, with_caption=False),
                   t.media(modality, obj.with_(**{attr: value}), seed, with_caption=False),
                   _text(_choice(t.rng, SPOT_QUESTIONS)))
        t.conv.say("assistant", _text(change_words(attr, value)))

    return run


def change_words(attr: str, value: str) -> str:
    """How the assistant states the change it read off in-context exemplars (one fixed wording per edit, so
    the words are a plain readout of the inferred edit), e.g. ``The change makes it green.``"""
    if attr == "shape":
        return f"The change makes it {article(value)} {value}."
    if attr == "position":
        to = {"left": "to the left", "right": "to the right", "top": "to the top", "bottom": "to the bottom",
              "center": "to the middle"}[value]
        return f"The change moves it {to}."
    if attr in ("colour", "size"):
        return f"The change makes it {value}."
    raise ValueError(f"cannot name a change of {attr!r}; allowed: shape, colour, size, position")


def _subject_image(t: _Task) -> None:
    """'this object, green, at the top': keep the subject (shape, size), set colour and place."""
    obj, seed = t.obj(), t.seed()
    colour = _choice(t.rng, [c for c in COLOURS if c != obj.colour])
    position = _choice(t.rng, [p for p in POSITIONS if p != obj.position])
    target = obj.with_(colour=colour, position=position)
    where = object_phrase(target, "image", t.rng).split(f" {target.shape} ", 1)[1]  # 'at the top'
    ask = (f"This object, {colour}, {where}.", f"Draw this object in {colour}, {where}.",
           f"Show the same object, but {colour} and {where}.")
    t.edits += [{"attr": "colour", "value": colour}, {"attr": "position", "value": position}]
    t.conv.say("user", t.media("image", obj, seed), _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "subject_image", "modality": "image", "colour": colour, "position": position})
    t.conv.say("assistant", t.reply(), t.media("image", target, seed))


def _multi_round_edit(t: _Task) -> None:
    """Three rounds; each edits the previous output (image, or sound one time in three)."""
    modality = "audio" if t.rng.random() < 1 / 3 else "image"
    obj, seed = t.obj(), t.seed()
    first = t.media(modality, obj, seed)
    for round_ in range(3):
        attr, value = _pick_edit(t, obj, modality)
        words = _edit_words(t, obj, attr, value, modality)
        if round_ > 0:
            words = "Now " + words[0].lower() + words[1:]
        t.edits.append({"attr": attr, "value": value, "instruction": words})
        t.specs.append({"kind": "edit", "modality": modality, "obj": obj, "edits": [(attr, value)], "round": round_})
        obj = obj.with_(**{attr: value})
        t.conv.say("user", *([first] if round_ == 0 else []), _text(words))
        t.conv.say("assistant", t.reply(), t.media(modality, obj, seed))


def _joint_image_audio(t: _Task) -> None:
    """One reply with a picture and a sound of the same object (scored for coherence)."""
    obj = t.obj()
    phrase = object_phrase(obj, "image", t.rng)
    ask = (f"Show me {phrase} and let me hear it.", f"Draw {phrase}, and play its sound too.",
           f"I want to see and hear {phrase}.")
    t.conv.say("user", _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "joint_image_audio", "obj": obj})
    t.conv.say("assistant", _text("Here is the picture:"), t.media("image", obj, t.seed()),
               _text("and here is its sound:"), t.media("audio", obj, t.seed()))


def open_phrase(obj: WorldObject, attr: str) -> str:
    """What an open prompt asks for: ``something red`` (colour named) or ``a star`` (shape named)."""
    if attr == "colour":
        return f"something {obj.colour}"
    if attr == "shape":
        return f"a {obj.shape}"
    raise ValueError(f"open prompts name one of {', '.join(OPEN_ATTRS)}, not {attr!r}")


def _open(t: _Task) -> tuple[WorldObject, str]:
    obj = t.obj()
    attr = OPEN_ATTRS[int(t.rng.integers(len(OPEN_ATTRS)))]
    t.asked = {attr: getattr(obj, attr)}
    return obj, open_phrase(obj, attr)


def _gen_open_task(modality: str) -> Callable[[_Task], None]:
    """Text -> picture or sound with the object left open: the reply first names the object it makes."""

    def run(t: _Task) -> None:
        obj, what = _open(t)
        ask = f"Show me {what}." if modality == "image" else f"Let me hear {what}."
        says = (f"Here is {object_phrase(obj, 'image', t.rng)}:" if modality == "image"
                else f"Here is the sound of {object_phrase(obj, 'audio', t.rng)}:")
        t.conv.say("user", _text(ask))
        t.specs.append({"kind": "open", "modality": modality, "obj": obj})
        t.conv.say("assistant", _text(says), t.media(modality, obj, t.seed()))

    return run


def _joint_open(t: _Task) -> None:
    """One reply with a picture and a sound of an object the prompt leaves open: the reply names the object it
    chose, then shows and sounds it. ``meta.separate`` holds the prompts of the two separate replies it is
    compared with (``gen_open_image`` / ``gen_open_audio`` wording), which choose on their own."""
    obj, what = _open(t)
    ask = (f"Show me {what} and let me hear it.", f"Draw {what}, and play its sound too.",
           f"I want to see and hear {what}.")
    t.conv.say("user", _text(_choice(t.rng, ask)))
    t.specs.append({"kind": "open", "modality": "joint", "obj": obj})
    t.conv.say("assistant", _text(f"Here is {object_phrase(obj, 'image', t.rng)}:"), t.media("image", obj, t.seed()),
               _text("and here is its sound:"), t.media("audio", obj, t.seed()))
    t.separate = {"image": f"Show me {what}.", "audio": f"Let me hear {what}."}


def _pick_two_edits(t: _Task, obj: WorldObject) -> list[tuple[str, str]]:
    """Two edits of different attributes of a picture's object, each to a new value."""
    attrs = ("shape", "colour", "size", "position")
    i, j = (int(x) for x in t.rng.choice(len(attrs), size=2, replace=False))
    out = []
    for a in (attrs[i], attrs[j]):
        out.append((a, _choice(t.rng, [v for v in ATTRIBUTES[a] if v != getattr(obj, a)])))
    return out


def _edit_image_two(t: _Task) -> None:
    """A picture and two edits in one request ("Make it blue and large."); the reply says what the object
    becomes, in the world's canonical words, then shows it (the picture follows words that describe it)."""
    obj, seed = t.obj(), t.seed()
    edits = _pick_two_edits(t, obj)
    first, second = (_edit_words(t, obj, a, v, "image") for a, v in edits)
    words = f"{first[:-1]} and {second[0].lower()}{second[1:]}"
    target = obj.with_(**dict(edits))
    for a, v in edits:
        t.edits.append({"attr": a, "value": v, "instruction": words})
    t.conv.say("user", t.media("image", obj, seed), _text(words))
    t.specs.append({"kind": "edit", "modality": "image", "obj": obj, "edits": edits, "round": 0})
    t.conv.say("assistant", _text(f"Here is {object_phrase(target, 'image')}:"), t.media("image", target, seed))


OOS_TEMPLATES = ("Hello!", "Who are you?", "What can you do?", "Draw a cat.", "Write a poem about the sea.",
                 "Wie geht's?", "What is 2 + 2?")
OOS_TEMPLATE_CATEGORY = ("greeting", "self", "self", "object", "creative", "language", "arithmetic")


def _out_of_scope(t: _Task) -> None:
    """A prompt outside the world, answered in text alone with what the model is and can make, and an example
    request (grammar.scope_reply); scored by grammar.is_scope_reply and the absence of media."""
    if t.frames == "template":
        k = int(t.rng.integers(len(OOS_TEMPLATES)))
        category, text = OOS_TEMPLATE_CATEGORY[k], OOS_TEMPLATES[k]
        rng = t.rng
    else:
        category, text = G.oos_prompt(t.frames, t.prng)
        rng = t.prng
    t.conv.say("user", _text(text))
    t.specs.append(None)
    t.conv.say("assistant", _text(G.scope_reply(category, rng), {"scope": "out_of_scope"}))


OPEN_FRAMES = {"image": "gen_image", "audio": "gen_audio", "joint": "joint_image_audio"}  # open requests' frames


def rephrase(t: _Task) -> None:
    """Re-words every user turn that has a spec with the request grammar (``t.frames`` = train, train2 or heldout), with
    the phrasing generator ``t.prng``: the objects, media and replies stay those of the template record."""
    rng, frames = t.prng, t.frames
    user_turns = [m for m in t.conv.messages if m["role"] == "user"]
    for msg, spec in zip(user_turns, t.specs):
        if spec is None:
            continue
        media = [p for p in msg["content"] if p["type"] != "text"]
        kind = spec["kind"]
        if kind == "icl":
            msg["content"] = G.icl_parts(media[:-1], media[-1], frames, rng, _text)
            continue
        if kind in ("gen_image", "joint_image_audio"):
            text = G.request(kind, frames, rng, x=G.image_phrase(spec["obj"], rng))
        elif kind == "gen_audio":
            text = G.request(kind, frames, rng, x=G.audio_phrase(spec["obj"], rng))
        elif kind == "gen_video":
            text = G.request(kind, frames, rng, x=G.video_phrase(spec["obj"], spec["direction"], rng))
        elif kind == "image_audio_to_video":
            text = G.request(kind, frames, rng, m=G.pick(rng, G.MOTION[spec["direction"]]))
        elif kind == "open":  # an under-specified request: the words name one to three attributes, scored on those
            asked = G.open_asked(spec["modality"], rng)
            t.asked = {a: getattr(spec["obj"], a) for a in asked}
            x = G.open_phrase(spec["obj"], asked, rng)
            text = G.request(OPEN_FRAMES[spec["modality"]], frames, rng, x=x)
            if t.separate is not None:
                t.separate = {"image": f"Show me {x}.", "audio": f"Let me hear {x}."}
        elif kind == "subject_image":
            text = G.request(kind, frames, rng, c=G.pick(rng, G.COLOUR_WORDS[spec["colour"]]),
                             w=G.pick(rng, G.WHERE[spec["position"]]))
        elif kind == "edit":
            text = G.edit_request(spec["obj"], spec["edits"], spec["modality"], frames, rng, spec["round"])
            if len(t.specs) > 1:  # three rounds: one edit per round, in order
                t.edits[spec["round"]]["instruction"] = text
            else:
                for e in t.edits:
                    e["instruction"] = text
        else:
            text = G.request(kind, frames, rng)
        msg["content"] = G.arrange(media, text, spec.get("modality") or "image", rng, _text) if media else [_text(text)]


TASK_FNS: dict[str, Callable[[_Task], None]] = {
    "caption_image": _caption_task("image"),
    "caption_audio": _caption_task("audio"),
    "caption_video": _caption_task("video"),
    "gen_image": _gen_task("image"),
    "gen_audio": _gen_task("audio"),
    "gen_video": _gen_task("video"),
    "image_to_audio": _image_to_audio,
    "audio_to_image": _audio_to_image,
    "image_audio_to_video": _image_audio_to_video,
    "edit_image": _edit_task("image"),
    "edit_audio": _edit_task("audio"),
    "icl_edit_image": _icl_task("image"),
    "icl_edit_audio": _icl_task("audio"),
    "subject_image": _subject_image,
    "multi_round_edit": _multi_round_edit,
    "joint_image_audio": _joint_image_audio,
    "gen_open_image": _gen_open_task("image"),
    "gen_open_audio": _gen_open_task("audio"),
    "joint_open": _joint_open,
    "spot_change_image": _spot_change_task("image"),
    "spot_change_audio": _spot_change_task("audio"),
    "edit_image_two": _edit_image_two,
    "out_of_scope": _out_of_scope,
}
assert tuple(TASK_FNS) == ALL_TASKS


def make_record(i: int, task: str, store: MediaStore, seed: int, split: str, variations: int = 16,
                icl_shots: Optional[int] = None, frames: str = "template") -> dict:
    """Record ``i`` of the split: a conversation for ``task`` with its ``meta`` (``icl_shots``, ``frames``: see
    :func:`build_world`)."""
    if task not in TASK_FNS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(ALL_TASKS)}")
    if frames not in G.FRAME_SETS:
        raise ValueError(f"frames {frames!r}; allowed: {', '.join(G.FRAME_SETS)}")
    stream = split_index(split)
    prng = None if frames == "template" else np.random.default_rng([seed, stream, i, 1 + G.GRAMMAR_SPLITS.index(frames)])
    t = _Task(np.random.default_rng([seed, stream, i]), store, seed, stream, variations, icl_shots, frames, prng)
    TASK_FNS[task](t)
    if frames != "template":
        rephrase(t)
    meta = {"task": task, "split": split, "shots": t.shots, "inputs": t.conv.inputs, "targets": t.conv.targets}
    if frames != "template":
        meta["frames"] = frames
    if t.edits:
        meta["edits"] = t.edits
    if t.asked is not None:  # open prompts: the targets are scored on what was asked; the rest was the model's choice
        meta["asked"] = t.asked
        meta["targets"] = [{**x, "attrs": {a: v for a, v in x["attrs"].items() if a in t.asked}} for x in meta["targets"]]
    if t.separate is not None:
        meta["separate"] = t.separate
    rid = f"world-{split}-{seed}-{i:06d}" if frames == "template" else f"world-{split}-{seed}-{frames}-{i:06d}"
    return {"schema": SCHEMA_VERSION, "id": rid, "source": "world",
            "messages": t.conv.messages, "meta": meta}


def build_world(out_dir: "str | Path", n: int, seed: int, tasks: Optional[Sequence[str]] = None,
                split: str = "train", variations: int = 16, icl_shots: Optional[int] = None,
                frames: str = "template") -> Path:
    """Writes ``n`` mini-world conversations to ``out_dir/manifest.jsonl`` (+ ``out_dir/media/``).

    Args:
        out_dir: output folder (created).
        n: number of records; record i has task ``tasks[i % len(tasks)]``.
        seed: world seed; the same (seed, split, n, tasks, variations) gives a byte-identical manifest.
        tasks: task names (default: all of ``TASKS``; ``OPEN_TASKS`` and ``SPOT_TASKS`` only when named).
        split: train / val / test; each renders from its own disjoint seed stream.
        variations: render variations per world seed and split (more = more distinct files).
        icl_shots: exemplar pairs of every in-context record (1-4; default: drawn from 1-4 per record).
            ``--icl-shots 4`` test data lets ``codi2 eval --suite world --shots 1,2,4`` compare the same
            queries at 1, 2 and 4 shots (the suite keeps the first k pairs).
        frames: the user's words: ``template`` (the world's few fixed sentences per task), or the request grammar
            (:mod:`.grammar`: many frames, synonyms, politeness, typos, chat layouts) with its ``train``, ``train2``
            or ``heldout`` frames only; the open tasks then name one to three attributes in free words. The
            objects, media and replies of record i are the same at every setting (the grammar draws from a
            generator of its own); ids of grammar records name their frames.

    Returns:
        The manifest path.
    """
    tasks = list(TASKS if tasks is None else tasks)
    unknown = [x for x in tasks if x not in TASK_FNS]
    if unknown or not tasks:
        raise ValueError(f"unknown or no tasks {unknown or tasks}; allowed: {', '.join(ALL_TASKS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if variations < 1:
        raise ValueError(f"variations must be >= 1, got {variations}")
    if icl_shots is not None and not 1 <= icl_shots <= MAX_SHOTS:
        raise ValueError(f"icl_shots must be in [1, {MAX_SHOTS}], got {icl_shots}")
    if frames not in G.FRAME_SETS:
        raise ValueError(f"frames {frames!r}; allowed: {', '.join(G.FRAME_SETS)}")
    split_index(split)
    out = Path(out_dir)
    for kind in ("image", "audio", "video"):
        (out / "media" / kind).mkdir(parents=True, exist_ok=True)
    store = MediaStore(out)
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_name(".manifest.jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in tqdm(range(n), desc=f"world {split}", unit="rec", disable=n < 50):
            record = make_record(i, tasks[i % len(tasks)], store, seed, split, variations, icl_shots, frames)
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    tmp.replace(manifest)
    log.info("wrote %d records to %s (%d media files written, %d reused)", n, manifest, store.n_written, store.n_reused)
    return manifest


# --------------------------------------------------------------------------- command line


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (manifest.jsonl + media/)")
    p.add_argument("--n", type=int, required=True, help="number of conversations")
    p.add_argument("--seed", type=int, default=0, help="world seed")
    p.add_argument("--tasks", nargs="+", choices=ALL_TASKS, default=None, metavar="TASK",
                   help=f"tasks to include (default: all but the open, spot-the-change, two-edit and out-of-scope ones): {', '.join(ALL_TASKS)}")
    p.add_argument("--split", choices=SPLITS, default="train", help="seed stream: train / val / test")
    p.add_argument("--variations", type=int, default=16, help="render variations per split")
    p.add_argument("--icl-shots", type=int, default=None, metavar="K",
                   help=f"exemplar pairs of every in-context record, 1-{MAX_SHOTS} (default: drawn per record)")
    p.add_argument("--frames", choices=G.FRAME_SETS, default="template",
                   help="the user's words: the world's templates (default), or the request grammar's train, "
                        "second train (train2) or held-out frames (many wordings, synonyms, typos, chat layouts, "
                        "under-specified requests; data_builders/world/grammar.py)")


def _run(args: argparse.Namespace) -> int:
    path = build_world(args.out, args.n, args.seed, args.tasks, args.split, args.variations, args.icl_shots,
                       args.frames)
    log.info("manifest: %s", path)
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``world`` to a ``codi2 build-data`` subparser set: ``codi2 build-data world --out DIR --n N …``."""
    p = subparsers.add_parser("world", help="procedural mini-world conversations (docs/design.md#the-mini-world)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=_run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_builders.world --out DIR --n N --seed S [--tasks …] [--split …]``."""
    p = argparse.ArgumentParser(prog="python -m data_builders.world", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    setup_logging(timestamps=False)
    return _run(p.parse_args(argv))
