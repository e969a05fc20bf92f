"""The mini world (docs/design.md#the-mini-world): objects, their renders (image, sound, video) and captions.

An object has four attributes; a video adds a direction of motion. Every render is a pure
function of ``(object, render seed)``: the seed only adds slight variation (exact position,
size, rotation, colour tint, background, detune, onset) so classifiers trained on renders
generalise, never enough to change an attribute.

How each attribute shows in each modality:

| attribute | values                                         | image              | sound                                  | video                  |
|-----------|------------------------------------------------|--------------------|----------------------------------------|------------------------|
| shape     | circle, square, triangle, star                 | outline            | timbre: sine, square wave, 3 partials, saw | outline            |
| colour    | red, orange, yellow, green, blue, purple       | fill colour        | pitch, rising in that (rainbow) order  | fill colour            |
| size      | small, large                                   | radius 8 / 13 px   | quiet + short / loud + long tone       | radius 8 / 13 px       |
| position  | left, right, top, bottom, center               | where it sits      | (not expressed)                        | (not expressed)        |
| direction | left, right, up, down (videos only)            | (not expressed)    | (not expressed)                        | where it moves         |

"Raise the pitch" on a sound is therefore "next colour up" (red -> orange -> … -> purple).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from codi2.media import Audio, Video

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")  # ordered by pitch
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

# Every attribute's vocabulary, in a fixed order (the judges' class indices follow it).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "direction": DIRECTIONS,
}
# Which attributes each modality expresses (the table in the module docstring).
MODALITY_ATTRS: dict[str, tuple[str, ...]] = {
    "image": ("shape", "colour", "size", "position"),
    "audio": ("shape", "colour", "size"),
    "video": ("shape", "colour", "size", "direction"),
}

IMAGE_SIZE = 64
SAMPLE_RATE = 16_000
AUDIO_SECONDS = 1.0
VIDEO_FRAMES = 12
VIDEO_FPS = 8.0

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 225, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "purple": (150, 60, 200),
}
# Fundamental frequency per colour: A3 (220 Hz) up in steps of 4 semitones -> 220 … 698 Hz.
PITCH_HZ: dict[str, float] = {c: 220.0 * 2.0 ** (4 * i / 12) for i, c in enumerate(COLOURS)}
RADIUS_PX: dict[str, float] = {"small": 8.0, "large": 13.0}
CENTRE_PX: dict[str, tuple[float, float]] = {  # (x, y) of the object's centre in a 64x64 image
    "left": (18.0, 32.0),
    "right": (46.0, 32.0),
    "top": (32.0, 18.0),
    "bottom": (32.0, 46.0),
    "center": (32.0, 32.0),
}
TONE_SECONDS: dict[str, float] = {"small": 0.4, "large": 0.8}
TONE_AMPLITUDE: dict[str, float] = {"small": 0.3, "large": 0.75}
MOTION: dict[str, tuple[float, float]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class WorldObject:
    """One object of the world. Every field is one of its vocabulary in ``ATTRIBUTES``."""

    shape: str
    colour: str
    size: str
    position: str = "center"

    def __post_init__(self) -> None:
        for name in ("shape", "colour", "size", "position"):
            value, allowed = getattr(self, name), ATTRIBUTES[name]
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")

    def attrs(self, modality: Optional[str] = None) -> dict[str, str]:
        """The attributes as a dict; with ``modality``, only those that modality expresses."""
        d = asdict(self)
        if modality is None:
            return d
        return {k: d[k] for k in MODALITY_ATTRS[modality] if k in d}

    def with_(self, **changes: str) -> "WorldObject":
        """A copy with some attributes changed (validated)."""
        return replace(self, **changes)


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    return direction


def random_object(rng: np.random.Generator) -> WorldObject:
    """A uniformly random object (every attribute independent)."""
    return WorldObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=COLOURS[rng.integers(len(COLOURS))],
        size=SIZES[rng.integers(len(SIZES))],
        position=POSITIONS[rng.integers(len(POSITIONS))],
    )


def random_direction(rng: np.random.Generator) -> str:
    return DIRECTIONS[rng.integers(len(DIRECTIONS))]


# --------------------------------------------------------------------------- images

_SUPERSAMPLE = 4  # draw at 4x and downsample: clean anti-aliased edges


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square / triangle / star of nominal radius ``r`` (pixels), rotated by ``angle`` rad."""
    if shape == "square":
        rad, k = [r * 0.85 * np.sqrt(2)] * 4, 4
        base = np.pi / 4
    elif shape == "triangle":
        rad, k = [r * 1.15] * 3, 3
        base = -np.pi / 2
    elif shape == "star":
        rad, k = [r * 1.2, r * 0.5] * 5, 10
        base = -np.pi / 2
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    thetas = base + angle + 2 * np.pi * np.arange(k) / k
    return [(cx + ri * np.cos(t), cy + ri * np.sin(t)) for ri, t in zip(rad, thetas)]


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill: tuple[int, int, int]
) -> None:
    s = _SUPERSAMPLE
    if shape == "circle":
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=fill)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(shape, cx, cy, r, angle)], fill=fill)


@dataclass(frozen=True)
class _Look:
    """The seeded variation of one render: everything except the attributes."""

    dx: float
    dy: float
    dr: float
    angle: float
    tint: tuple[int, int, int]
    background: int
    noise_seed: int


def _look(seed: int) -> _Look:
    rng = np.random.default_rng([seed, 1])
    return _Look(
        dx=float(rng.uniform(-2.5, 2.5)),
        dy=float(rng.uniform(-2.5, 2.5)),
        dr=float(rng.uniform(-1.0, 1.0)),
        angle=float(rng.uniform(-0.2, 0.2)),
        tint=tuple(int(v) for v in rng.integers(-12, 13, size=3)),  # type: ignore[arg-type]
        background=int(rng.integers(20, 56)),
        noise_seed=int(rng.integers(2**31)),
    )


def _frame(obj: WorldObject, look: _Look, centre: tuple[float, float], noise_rng: np.random.Generator) -> np.ndarray:
    """One 64x64 RGB frame of ``obj`` drawn at ``centre``. Returns uint8 (64, 64, 3)."""
    s = _SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), (look.background,) * 3)
    fill = tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(RGB[obj.colour], look.tint))
    _draw(ImageDraw.Draw(canvas), obj.shape, centre[0], centre[1], RADIUS_PX[obj.size] + look.dr, look.angle, fill)
    small = np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.float32)
    small = small + noise_rng.normal(0.0, 3.0, size=small.shape)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def render_image(obj: WorldObject, seed: int = 0) -> Image.Image:
    """A 64x64 RGB picture of ``obj`` on a dark noisy background; ``seed`` picks the slight variation."""
    look = _look(seed)
    cx, cy = CENTRE_PX[obj.position]
    frame = _frame(obj, look, (cx + look.dx, cy + look.dy), np.random.default_rng(look.noise_seed))
    return Image.fromarray(frame, mode="RGB")


# --------------------------------------------------------------------------- sounds

# Harmonic amplitude profile per timbre (harmonic k = 1, 2, …), chosen to differ plainly in a spectrogram:
# circle = pure sine, triangle = three partials, square = odd harmonics 1/k (square wave),
# star = all harmonics 1/k (sawtooth).
def _harmonics(shape: str, n: int) -> np.ndarray:
    k = np.arange(1, n + 1, dtype=np.float64)
    if shape == "circle":
        return (k == 1).astype(np.float64)
    if shape == "triangle":
        return np.select([k == 1, k == 2, k == 3], [1.0, 0.7, 0.5], 0.0)
    if shape == "square":
        return np.where(k % 2 == 1, 1.0 / k, 0.0)
    if shape == "star":
        return 1.0 / k
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")


def render_sound(obj: WorldObject, seed: int = 0) -> Audio:
    """One second of mono 16 kHz sound: one tone whose pitch is the colour, timbre the shape and
    loudness/length the size. Position is not expressed. Returns ``Audio`` with samples (1, 16000)."""
    rng = np.random.default_rng([seed, 2])
    n = int(SAMPLE_RATE * AUDIO_SECONDS)
    f0 = PITCH_HZ[obj.colour] * 2.0 ** (rng.uniform(-15, 15) / 1200)  # +-15 cents detune
    onset = rng.uniform(0.03, 0.08)
    length = TONE_SECONDS[obj.size] * rng.uniform(0.93, 1.07)
    amp = TONE_AMPLITUDE[obj.size] * rng.uniform(0.9, 1.1)
    t = np.arange(n) / SAMPLE_RATE  # (n,)
    n_harm = int((SAMPLE_RATE / 2 - 200) // f0)
    profile = _harmonics(obj.shape, n_harm)  # (H,)
    k = np.arange(1, n_harm + 1)
    k, profile = k[profile != 0], profile[profile != 0]  # only the partials that sound
    phase = rng.uniform(0, 2 * np.pi)
    wave = (profile[:, None] * np.sin(2 * np.pi * f0 * k[:, None] * (t[None, :] - onset) + phase * k[:, None])).sum(0)
    wave /= np.abs(wave).max()  # peak 1 for every timbre
    # 15 ms linear attack and release
    tau = t - onset
    env = np.clip(np.minimum(tau / 0.015, (length - tau) / 0.015), 0.0, 1.0)
    samples = amp * env * wave + rng.normal(0.0, 0.002, size=n)
    return Audio(samples=np.clip(samples, -1, 1).astype(np.float32)[None, :], sample_rate=SAMPLE_RATE)


# --------------------------------------------------------------------------- videos


def render_video(obj: WorldObject, direction: str, seed: int = 0) -> Video:
    """12 frames (1.5 s at 8 fps) of ``obj`` crossing the frame in ``direction``; ``obj.position`` is ignored
    (the object starts at the side it leaves from). Returns ``Video`` with frames uint8 (12, 64, 64, 3)."""
    check_direction(direction)
    look = _look(seed)
    r = RADIUS_PX[obj.size] + look.dr
    mx, my = MOTION[direction]
    lo, hi = r + 3.0, IMAGE_SIZE - r - 3.0
    noise_rng = np.random.default_rng(look.noise_seed)
    frames = []
    for i in range(VIDEO_FRAMES):
        a = lo + (hi - lo) * i / (VIDEO_FRAMES - 1)  # coordinate along the motion, low -> high
        along = a if (mx + my) > 0 else IMAGE_SIZE - a
        cx = along if mx != 0 else 32.0 + look.dx
        cy = along if my != 0 else 32.0 + look.dy
        frames.append(_frame(obj, look, (cx, cy), noise_rng))
    return Video(frames=np.stack(frames), fps=VIDEO_FPS)


# --------------------------------------------------------------------------- captions

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_LOUD_WORDS = {"small": ("quiet", "soft"), "large": ("loud",)}
_POSITION_PHRASES = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "at the top of the picture"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom of the picture"),
    "center": ("in the center", "in the middle", "in the centre"),
}
_DIRECTION_PHRASES = {
    "left": ("moving left", "moving to the left", "sliding to the left", "going left"),
    "right": ("moving right", "moving to the right", "sliding to the right", "going right"),
    "up": ("moving up", "moving upwards", "rising up", "going up"),
    "down": ("moving down", "moving downwards", "falling down", "going down"),
}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(options: tuple[str, ...], rng: Optional[np.random.Generator]) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _noun(obj: WorldObject, rng: Optional[np.random.Generator], size_words: dict[str, tuple[str, ...]]) -> str:
    """'a small red circle' (or 'a red circle, small' style variants)."""
    size = _pick(size_words[obj.size], rng)
    phrase = f"{size} {obj.colour} {obj.shape}"
    return f"{article(phrase)} {phrase}"


def object_phrase(
    obj: WorldObject,
    modality: str = "image",
    rng: Optional[np.random.Generator] = None,
    direction: Optional[str] = None,
) -> str:
    """A noun phrase for ``obj`` as ``modality`` shows it: image 'a small red circle at the top',
    audio 'a small red circle', video 'a small red circle moving up' (needs ``direction``).
    ``rng=None`` gives the canonical wording."""
    noun = _noun(obj, rng, _SIZE_WORDS)
    if modality == "image":
        return f"{noun} {_pick(_POSITION_PHRASES[obj.position], rng)}"
    if modality == "audio":
        return noun
    if modality == "video":
        if direction is None:
            raise ValueError("object_phrase(modality='video') needs a direction")
        return f"{noun} {_pick(_DIRECTION_PHRASES[check_direction(direction)], rng)}"
    raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITY_ATTRS)}")


def image_caption(obj: WorldObject, rng: Optional[np.random.Generator] = None) -> str:
    """A caption of a picture of ``obj``; ``rng=None`` gives the canonical phrasing."""
    phrase = object_phrase(obj, "image", rng)
    noun, where = _noun(obj, rng, _SIZE_WORDS), _pick(_POSITION_PHRASES[obj.position], rng)
    templates = (phrase, f"there is {phrase}", f"a picture of {phrase}", f"{where}, {noun}", f"{noun} sits {where}")
    return _pick(templates, rng)


def audio_caption(obj: WorldObject, rng: Optional[np.random.Generator] = None) -> str:
    """A caption of the sound of ``obj`` (no position); ``rng=None`` gives the canonical phrasing."""
    noun = object_phrase(obj, "audio", rng)
    loud = _pick(_LOUD_WORDS[obj.size], rng)
    templates = (
        f"the sound of {noun}",
        f"{article(loud)} {loud} {obj.colour} {obj.shape} sound",
        f"this is what {noun} sounds like",
        f"{noun} humming",
    )
    return _pick(templates, rng)


def video_caption(obj: WorldObject, direction: str, rng: Optional[np.random.Generator] = None) -> str:
    """A caption of a video of ``obj`` moving in ``direction``; ``rng=None`` gives the canonical phrasing."""
    phrase = object_phrase(obj, "video", rng, direction)
    return _pick((phrase, f"a video of {phrase}", f"there is {phrase}"), rng)


def caption(modality: str, obj: WorldObject, direction: Optional[str] = None,
            rng: Optional[np.random.Generator] = None) -> str:
    """The caption of ``obj`` rendered in ``modality`` (image / audio / video)."""
    if modality == "image":
        return image_caption(obj, rng)
    if modality == "audio":
        return audio_caption(obj, rng)
    if modality == "video":
        if direction is None:
            raise ValueError("a video caption needs a direction")
        return video_caption(obj, direction, rng)
    raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITY_ATTRS)}")


_WORD_TO_VALUE: dict[str, tuple[str, str]] = {}
for _attr in ("shape", "colour"):
    for _v in ATTRIBUTES[_attr]:
        _WORD_TO_VALUE[_v] = (_attr, _v)
for _v, _words in list(_SIZE_WORDS.items()) + list(_LOUD_WORDS.items()):
    for _w in _words:
        _WORD_TO_VALUE[_w] = ("size", _v)
_WORD_TO_VALUE.update({"bigger": ("size", "large"), "smaller": ("size", "small"), "huge": ("size", "large")})
_WORD_TO_VALUE.update({"centre": ("position", "center"), "middle": ("position", "center")})
for _v in POSITIONS:
    _WORD_TO_VALUE[_v] = ("position", _v)
for _w in ("colour", "color"):
    _WORD_TO_VALUE.pop(_w, None)
_WORD_TO_VALUE.update({"violet": ("colour", "purple"), "ball": ("shape", "circle"), "box": ("shape", "square")})
_MOTION_VERBS = (r"(?:moving|moves|move|going|goes|sliding|slides|rising|rises|falling|falls|"
                 r"heading|heads|drifting|drifts)")
_MOTION_RE = re.compile(
    _MOTION_VERBS + r"\s+(?:to\s+the\s+|towards\s+the\s+)?(left|right|up|down|upwards?|downwards?)\b"
)
_DIRECTION_WORD = {"upward": "up", "upwards": "up", "downward": "down", "downwards": "down"}


def parse_caption(text: str) -> dict[str, str]:
    """Read the attributes a caption states. Returns only those found, e.g.
    ``parse_caption("there is a big blue star on the left") == {"size": "large", "colour": "blue",
    "shape": "star", "position": "left"}``; a motion phrase ("moving up", "sliding to the left") gives
    ``direction``. Where a caption names one attribute twice, the first mention wins.
    """
    t = text.lower()
    found: dict[str, str] = {}
    for m in _MOTION_RE.finditer(t):
        found.setdefault("direction", _DIRECTION_WORD.get(m.group(1), m.group(1)))
    t = _MOTION_RE.sub(" ", t)  # the motion's 'left' is not a position
    for word in re.findall(r"[a-z]+", t):
        hit = _WORD_TO_VALUE.get(word)
        if hit is not None:
            found.setdefault(hit[0], hit[1])
    return found
