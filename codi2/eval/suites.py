"""Evaluation suites: what to ask the model (samples) and how to score what it made (from files).

A suite turns local data into :class:`Sample` s (a prompt turn, optional history, the outputs expected)
and scores the generated files of one sample (:meth:`Suite.score`) and of a whole group of samples
(:meth:`Suite.score_set`: set-level metrics such as FD / FAD). Scoring reads only files, so the same code
scores any system's outputs (``codi2 eval score``) and a resumed run gives the same numbers as a fresh one.

Suites
    dreambench   DreamBench layout ``dataset/<subject>/*.jpg`` + ``dataset/prompts_and_classes.txt``;
                 k-shot prompts from the subject's first k images; DINO, CLIP-I (mean over all real images
                 of the subject) and CLIP-T (against the prompt with the class noun, e.g. "a dog in the snow").
    image-edit   a codi2 manifest whose first user message holds images A_1, A'_1, …, A_K, A'_K, B and whose
                 first assistant message holds the ground truth B' (text parts are ignored: prompts are rebuilt
                 per shot count); results are grouped by ``meta.edit``, else ``meta.edits[0].attr`` (the mini
                 world's in-context records work as they are), else ``meta.task``;
                 L1, L2, CLIP-I, DINO, CLIP-T (caption of B'),
                 CLIP directional similarity (text variant when B and B' have captions; exemplar-image variant
                 for k >= 1).
    audio-edit   the same layout with audio; ``meta.task`` (add / drop / replace) groups the results;
                 LSD, KL (softmax, sigmoid) per sample; FD and FAD per shot count.
    world        the mini world (``data_builders.world``): every task's targets judged by the attribute judges,
                 joint-output coherence and SIM (encoder cosine of the co-generated image and sound) for joint
                 generation vs separate generation (a target on open prompts, reported on named ones:
                 ``JOINT_COMPARISON_IS_TARGET``).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..conversation import Message, Part, message_from_dict
from ..media import Audio, load_audio, load_image, load_media
from . import metrics as M

log = logging.getLogger(__name__)

SUITES = ("dreambench", "image-edit", "audio-edit", "world")
LSD_SAMPLE_RATE = 16000  # audioldm_eval evaluates at 16 kHz
ICL_INTRO = "Look at these examples."  # the mini world's in-context wording (data_builders.world.build)
ICL_QUERY = "Now do the same to this one:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EXT = {"image": "png", "audio": "wav", "video": "mp4"}


# ----------------------------------------------------------------------------- samples and outputs
@dataclass
class Run:
    """One generation of a sample: ``outputs`` the media expected in order, ``allowed`` restricts what the
    model may output (None: anything; the world suite's separate generation uses one modality), ``force``
    starts the reply with the opening tokens of ``outputs`` (the separate generations: each must produce its one
    modality, as CoDi's independent generations do, or there would be nothing to compare). ``prompt`` replaces the
    user turn with this text alone (the open joint task's separate replies ask for one modality in their own words);
    ``temperature`` overrides the evaluation's for this run (open prompts: each reply chooses the object, so the
    choice is sampled, or every reply to the same words would choose alike)."""

    name: str
    outputs: tuple[str, ...]
    allowed: Optional[tuple[str, ...]] = None
    force: bool = False
    prompt: Optional[str] = None
    temperature: Optional[float] = None


@dataclass
class Sample:
    """One prompt to evaluate. ``id`` is stable and unique (output file stem, JSONL key)."""

    id: str
    task: str
    shots: int
    user: Message
    runs: list[Run]
    history: list[Message] = field(default_factory=list)
    ref: dict = field(default_factory=dict)  # suite-specific reference info (paths, captions, attributes)


@dataclass
class Generated:
    """What one run produced: the reply text and its media files in reply order ((modality, path) pairs)."""

    text: str
    media: list[tuple[str, Path]]

    def first(self, modality: str, index: int = 0) -> Optional[Path]:
        paths = [p for m, p in self.media if m == modality]
        return paths[index] if index < len(paths) else None


def select(items: Sequence[Any], n: Optional[int], seed: int) -> list[Any]:
    """The first ``n`` items of a seeded permutation (all of them, in order, when ``n`` is None)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    order = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(order)]


def _image(path: "str | Path") -> Image.Image:
    return load_image(path)


def _audio(path: "str | Path") -> Audio:
    return load_audio(path)


# ----------------------------------------------------------------------------- scorers (model-free)
class ImageScorer:
    """Pairwise image metrics with cached features: pixel L1/L2 and CLIP / DINO cosines."""

    def __init__(self, clip: Any, dino: Any, pixel_size: int = 256):
        self.clip, self.dino, self.pixel_size = clip, dino, pixel_size
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _feat(self, kind: str, paths: Sequence["str | Path"]) -> np.ndarray:
        """(N, D) features of image files (``kind``: clip | dino), cached per path."""
        todo = [str(p) for p in paths if (kind, str(p)) not in self._cache]
        if todo:
            model = self.clip if kind == "clip" else self.dino
            if model is None:
                raise ValueError(f"this metric needs a {kind.upper()} backbone; pass --{kind} DIR (a local "
                                 f"transformers {'CLIPModel' if kind == 'clip' else 'ViTModel/Dinov2Model'} directory)")
            for p, f in zip(todo, model.images([_image(p) for p in todo])):
                self._cache[(kind, p)] = f
        return np.stack([self._cache[(kind, str(p))] for p in paths])

    def text(self, texts: Sequence[str]) -> np.ndarray:
        if self.clip is None:
            raise ValueError("CLIP-T needs a CLIP backbone; pass --clip DIR")
        return self.clip.texts(list(texts))

    def pair(self, pred: Path, ref: Path) -> dict[str, float]:
        """L1, L2, CLIP-I, DINO of a generated image against its ground truth."""
        out = M.pixel_distances(_image(pred), _image(ref), self.pixel_size)
        if self.clip is not None:
            out["clip_i"] = float(M.cosine(self._feat("clip", [pred]), self._feat("clip", [ref]))[0])
        if self.dino is not None:
            out["dino"] = float(M.cosine(self._feat("dino", [pred]), self._feat("dino", [ref]))[0])
        return out

    def subject(self, pred: Path, real: Sequence[Path], prompt: str) -> dict[str, float]:
        """DreamBench: DINO and CLIP-I averaged over the subject's real images, CLIP-T against the prompt."""
        out = {}
        if self.dino is not None:
            out["dino"] = M.mean_pairwise_cosine(self._feat("dino", [pred]), self._feat("dino", real))
        if self.clip is not None:
            img = self._feat("clip", [pred])
            out["clip_i"] = M.mean_pairwise_cosine(img, self._feat("clip", real))
            out["clip_t"] = float(M.cosine(img, self.text([prompt]))[0])
        return out


class AudioScorer:
    """Audio metrics: LSD per pair; KL per pair (classifier posteriors); FD (classifier embeddings) and FAD
    (FAD-model window embeddings) per set. Features are cached per path."""

    def __init__(self, classifier: Any, fad_model: Any, lsd_time_offset: int = 0):
        self.classifier, self.fad_model, self.lsd_time_offset = classifier, fad_model, lsd_time_offset
        self._cache: dict[tuple[int, str], Any] = {}

    def _emb(self, model: Any, path: Path) -> Any:
        key = (id(model), str(path))
        if key not in self._cache:
            e = model.embed([_audio(path)])
            self._cache[key] = (e.clip[0], e.frames[0], None if e.logits is None else e.logits[0])
        return self._cache[key]

    def pair(self, pred: Path, ref: Path) -> dict[str, float]:
        from .features import mono

        a, b = _audio(pred), _audio(ref)
        out = {"lsd": M.lsd(mono(a, LSD_SAMPLE_RATE), mono(b, LSD_SAMPLE_RATE), LSD_SAMPLE_RATE, self.lsd_time_offset)}
        if self.classifier is not None:
            lp, lr = self._emb(self.classifier, pred)[2], self._emb(self.classifier, ref)[2]
            if lp is None:
                raise ValueError(f"KL needs classifier logits but the audio backbone {self.classifier.name} has no "
                                 f"classification head; pass --audio-classifier DIR (an *ForAudioClassification model) "
                                 f"or 'imagebind' (zero-shot)")
            out["kl_softmax"] = float(M.kl_softmax(lp, lr)[0])
            out["kl_sigmoid"] = float(M.kl_sigmoid(lp, lr)[0])
        return out

    def sets(self, preds: Sequence[Path], refs: Sequence[Path]) -> dict[str, float]:
        """FD (classifier clip embeddings) and FAD (FAD-model window embeddings) of generated vs reference sets;
        omitted when a set has fewer than 2 embeddings."""
        out = {}
        if self.classifier is not None and len(preds) >= 2 and len(refs) >= 2:
            x = np.stack([self._emb(self.classifier, p)[0] for p in preds])
            y = np.stack([self._emb(self.classifier, p)[0] for p in refs])
            out["fd"] = M.frechet_distance_of(x, y)
        if self.fad_model is not None and preds and refs:
            x = np.concatenate([self._emb(self.fad_model, p)[1] for p in preds])
            y = np.concatenate([self._emb(self.fad_model, p)[1] for p in refs])
            if len(x) >= 2 and len(y) >= 2:
                out["fad"] = M.frechet_distance_of(x, y)
        return out


# ----------------------------------------------------------------------------- suites
class Suite:
    """Base class: subclasses fill :meth:`samples`, :meth:`score` and optionally :meth:`score_set`."""

    name = ""
    by_shots_in_context_only = False  # see runner.aggregate

    def samples(self) -> list[Sample]:
        raise NotImplementedError

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        raise NotImplementedError

    def score_set(self, items: Sequence[tuple[Sample, dict[str, Generated]]]) -> dict[str, float]:
        """Set-level metrics of a group of samples (e.g. all samples with the same shot count)."""
        return {}

    def breakdown(self, sample: Sample) -> dict[str, str]:
        """What a sample varies by beyond its task and shots, e.g. ``{"changed": "position"}``: the report
        splits each task's metrics by it (``metrics.by_breakdown``, see ``runner.by_breakdown``)."""
        return {}

    def data_files(self) -> list[Path]:
        """Files whose content defines the data (fingerprinted into results.json). Data only: a scorer's weights
        belong in :meth:`backbone_dirs`, or the data's fingerprint would depend on where the two are kept."""
        raise NotImplementedError

    def backbone_dirs(self) -> dict[str, Path]:
        """Scoring backbones the suite resolved itself (not named in the config, e.g. the world suite's judges
        taken from the model's ``judges/``): fingerprinted into results.json beside the configured ones."""
        return {}


# ---- DreamBench
def parse_prompts_and_classes(path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """DreamBench's ``prompts_and_classes.txt`` -> ({subject: class}, object prompts, live-subject prompts).

    Prompts keep DreamBench's ``{0}`` (unique token) and ``{1}`` (class) placeholders.
    """
    classes: dict[str, str] = {}
    prompts: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line in ("Classes", "Prompts") or not line or line.startswith("prompt_list") or line == "]":
            section = "classes" if line == "Classes" else (None if line == "Prompts" else section)
            continue
        if line == "Object Prompts":
            section = "object"
        elif line == "Live Subject Prompts":
            section = "live"
        elif section == "classes" and "," in line and line != "subject_name,class":
            name, cls = line.split(",", 1)
            classes[name.strip()] = cls.strip()
        elif section in prompts:
            m = re.match(r"""^['"](.*)['"]\s*\.format""", line)
            if m:
                prompts[section].append(m.group(1))
    if not classes or not prompts["object"] or not prompts["live"]:
        raise ValueError(f"{path}: expected DreamBench's prompts_and_classes.txt with a 'Classes' section "
                         f"(subject_name,class lines) and 'Object Prompts' / 'Live Subject Prompts' lists; found "
                         f"{len(classes)} classes, {len(prompts['object'])} object and {len(prompts['live'])} live prompts")
    return classes, prompts["object"], prompts["live"]


LIVE_CLASSES = ("cat", "dog")  # DreamBench's live subjects use the live prompt list


def dreambench_prompt(template: str, cls: str) -> str:
    """``'a {0} {1} in the snow'`` -> ``'a dog in the snow'`` (no unique token: the subject comes from the images)."""
    return " ".join(template.format("", cls).split())


def dreambench_user_text(prompt: str, cls: str, k: int) -> str:
    """The instruction of a k-shot DreamBench prompt (after the k subject images)."""
    if k == 0:
        return f"Generate an image of {prompt}."
    intro = f"This image shows a {cls}." if k == 1 else f"These images show a {cls}."
    return f"{intro} Generate an image of this {cls}: {prompt}."


class DreamBenchSuite(Suite):
    name = "dreambench"

    def __init__(self, root: "str | Path", scorer: ImageScorer, shots: Sequence[int], n: Optional[int], seed: int):
        r = Path(root)
        self.dataset = r / "dataset" if (r / "dataset" / "prompts_and_classes.txt").is_file() else r
        txt = self.dataset / "prompts_and_classes.txt"
        if not txt.is_file():
            raise FileNotFoundError(f"{r}: no prompts_and_classes.txt (looked in {r} and {r / 'dataset'}); expected "
                                    f"DreamBench's layout dataset/<subject>/*.jpg + dataset/prompts_and_classes.txt")
        self.classes, self.object_prompts, self.live_prompts = parse_prompts_and_classes(txt)
        self.images: dict[str, list[Path]] = {}
        for s in sorted(self.classes):
            d = self.dataset / s
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
            if not files:
                raise FileNotFoundError(f"{d}: no subject images ({', '.join(IMAGE_SUFFIXES)}) for subject {s!r} "
                                        f"listed in {txt}")
            self.images[s] = files
        self.scorer, self.shots, self.n, self.seed = scorer, list(shots), n, seed

    def prompts(self, subject: str) -> list[str]:
        return self.live_prompts if self.classes[subject] in LIVE_CLASSES else self.object_prompts

    def samples(self) -> list[Sample]:
        items = [(s, i) for s in sorted(self.classes) for i in range(len(self.prompts(s)))]
        out = []
        for k in self.shots:
            for s, i in select(items, self.n, self.seed):
                cls, imgs = self.classes[s], self.images[s]
                if k > len(imgs):
                    log.warning("dreambench: subject %s has %d images, fewer than %d shots; skipped", s, len(imgs), k)
                    continue
                prompt = dreambench_prompt(self.prompts(s)[i], cls)
                parts = [Part(type="image", path=str(p)) for p in imgs[:k]]
                parts.append(Part.from_text(dreambench_user_text(prompt, cls, k)))
                out.append(Sample(id=f"k{k}/{s}/{i:02d}", task=s, shots=k, user=Message("user", parts),
                                  runs=[Run("main", ("image",))], ref={"subject": s, "prompt": prompt}))
        return out

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        pred = gen["main"].first("image")
        if pred is None:
            return {}
        return self.scorer.subject(pred, self.images[sample.ref["subject"]], sample.ref["prompt"])

    def data_files(self) -> list[Path]:
        return [self.dataset / "prompts_and_classes.txt"] + [p for s in sorted(self.images) for p in self.images[s]]


# ---- exemplar editing (image and audio)
@dataclass
class EditRecord:
    """One editing item: exemplar pairs, the query and its ground truth (absolute paths)."""

    id: str
    task: str
    pairs: list[tuple[Path, Path]]
    query: Path
    target: Path
    query_caption: Optional[str]
    target_caption: Optional[str]
    instruction: Optional[str]


def manifest_path(data: "str | Path") -> Path:
    p = Path(data)
    if p.is_dir():
        p = p / "manifest.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"{data}: no manifest (give a manifest .jsonl file or a folder with manifest.jsonl)")
    return p


def read_manifest(path: Path) -> list[dict]:
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
    if not records:
        raise ValueError(f"{path}: the manifest is empty")
    return records


def read_edit_manifest(path: Path, modality: str) -> list[EditRecord]:
    """Edit items from a codi2 manifest (see the module docstring for the layout)."""
    root = path.parent
    out = []
    for i, r in enumerate(read_manifest(path)):
        where = f"{path}:{i + 1}"
        msgs = [message_from_dict(m, f"{where}.messages[{j}]") for j, m in enumerate(r.get("messages", []))]
        user = next((m for m in msgs if m.role == "user"), None)
        reply = next((m for m in msgs if m.role == "assistant"), None)
        if user is None or reply is None:
            raise ValueError(f"{where}: an edit record needs a user message and an assistant message")
        inputs = [p for p in user.content if p.type == modality]
        targets = [p for p in reply.content if p.type == modality]
        if len(inputs) % 2 != 1 or not targets:
            raise ValueError(f"{where}: expected the user message to hold {modality} parts A_1, A'_1, …, A_K, A'_K, B "
                             f"(an odd number, got {len(inputs)}) and the assistant message the ground truth B' "
                             f"(got {len(targets)} {modality} parts)")
        meta = r.get("meta") or {}
        edits = meta.get("edits") or [{}]
        task = meta.get("edit") if isinstance(meta.get("edit"), str) else edits[0].get("attr") or meta.get("task") or "edit"
        pairs = [(root / inputs[2 * k].path, root / inputs[2 * k + 1].path) for k in range(len(inputs) // 2)]
        out.append(EditRecord(id=str(r.get("id", f"item{i:05d}")), task=str(task),
                              pairs=pairs, query=root / inputs[-1].path, target=root / targets[0].path,
                              query_caption=inputs[-1].caption, target_caption=targets[0].caption,
                              instruction=meta.get("instruction")))
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: record ids are not unique")
    return out


def edit_user_message(rec: EditRecord, k: int, modality: str) -> Message:
    """k = 0: [B, instruction]; k >= 1: [intro, A_1, A'_1, …, A_k, A'_k, query text, B] (mini-world wording)."""
    if k == 0:
        noun = {"image": "image", "audio": "sound", "video": "video"}[modality]
        return Message("user", [Part(type=modality, path=str(rec.query)), Part.from_text(rec.instruction or f"Edit this {noun}.")])
    parts = [Part.from_text(ICL_INTRO)]
    for a, b in rec.pairs[:k]:
        parts += [Part(type=modality, path=str(a)), Part(type=modality, path=str(b))]
    parts += [Part.from_text(ICL_QUERY), Part(type=modality, path=str(rec.query))]
    return Message("user", parts)


class EditSuite(Suite):
    modality = "image"

    def __init__(self, data: "str | Path", shots: Sequence[int], n: Optional[int], seed: int):
        self.manifest = manifest_path(data)
        self.records = read_edit_manifest(self.manifest, self.modality)
        self.shots, self.n, self.seed = list(shots), n, seed

    def samples(self) -> list[Sample]:
        out = []
        for k in self.shots:
            for rec in select(self.records, self.n, self.seed):
                if k > len(rec.pairs):
                    log.warning("%s: item %s has %d exemplar pairs, fewer than %d shots; skipped", self.name, rec.id,
                                len(rec.pairs), k)
                    continue
                out.append(Sample(id=f"k{k}/{rec.id}", task=rec.task, shots=k, user=edit_user_message(rec, k, self.modality),
                                  runs=[Run("main", (self.modality,))], ref={"record": rec}))
        return out

    def data_files(self) -> list[Path]:
        files = {self.manifest}
        for r in self.records:
            files.update([r.query, r.target] + [p for pair in r.pairs for p in pair])
        return sorted(files)


class ImageEditSuite(EditSuite):
    name, modality = "image-edit", "image"

    def __init__(self, data: "str | Path", scorer: ImageScorer, shots: Sequence[int], n: Optional[int], seed: int):
        super().__init__(data, shots, n, seed)
        self.scorer = scorer

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        pred = gen["main"].first("image")
        if pred is None:
            return {}
        rec: EditRecord = sample.ref["record"]
        s = self.scorer
        out = s.pair(pred, rec.target)
        if s.clip is None:
            return out
        e_pred, e_query = s._feat("clip", [pred])[0], s._feat("clip", [rec.query])[0]
        if rec.target_caption:
            t = s.text([rec.target_caption] + ([rec.query_caption] if rec.query_caption else []))
            out["clip_t"] = float(M.cosine(e_pred, t[0])[0])
            if rec.query_caption:
                out["clip_dir_text"] = M.directional_similarity_text(e_query, e_pred, t[1], t[0])
        if sample.shots >= 1:
            pairs = rec.pairs[:sample.shots]
            out["clip_dir_image"] = M.directional_similarity_image(
                e_query, e_pred, s._feat("clip", [a for a, _ in pairs]), s._feat("clip", [b for _, b in pairs]))
        return out


class AudioEditSuite(EditSuite):
    name, modality = "audio-edit", "audio"

    def __init__(self, data: "str | Path", scorer: AudioScorer, shots: Sequence[int], n: Optional[int], seed: int):
        super().__init__(data, shots, n, seed)
        self.scorer = scorer

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        pred = gen["main"].first("audio")
        return {} if pred is None else self.scorer.pair(pred, sample.ref["record"].target)

    def score_set(self, items: Sequence[tuple[Sample, dict[str, Generated]]]) -> dict[str, float]:
        pairs = [(g["main"].first("audio"), s.ref["record"].target) for s, g in items]
        pairs = [(p, r) for p, r in pairs if p is not None]
        return self.scorer.sets([p for p, _ in pairs], [r for _, r in pairs]) if pairs else {}


# ---- the mini world
# The attributes a generation prompt is about (the mini-world issue's "shape and colour both right"); other
# tasks' ``key`` is every target attribute.
KEY_ATTRS: dict[str, tuple[str, ...]] = {"gen_image": ("shape", "colour"), "gen_video": ("colour", "direction")}

# The mini-world issue's figures: (label, task, shots or None for all, metric, threshold).
WORLD_TARGETS: tuple[tuple[str, str, Optional[int], str, float], ...] = (
    ("text -> image: shape and colour right", "gen_image", None, "key", 0.90),
    ("text -> sound: all attributes right", "gen_audio", None, "exact", 0.90),
    ("text -> video: colour and direction right", "gen_video", None, "key", 0.80),
    ("image captioning", "caption_image", None, "acc", 0.95),
    ("sound captioning", "caption_audio", None, "acc", 0.95),
    ("video captioning", "caption_video", None, "acc", 0.95),
    ("image instruction editing (edit right, rest preserved)", "edit_image", None, "exact", 0.85),
    ("sound instruction editing (edit right, rest preserved)", "edit_audio", None, "exact", 0.85),
    ("1-shot exemplar image editing", "icl_edit_image", 1, "exact", 0.70),
    ("1-shot exemplar sound editing", "icl_edit_audio", 1, "exact", 0.70),
    ("three-round editing: final output right", "multi_round_edit", None, "exact", 0.70),
    ("joint image + sound coherent", "joint_image_audio", None, "coherence", 0.85),
)
JOINT_TASKS = ("joint_image_audio", "joint_open")  # scored for coherence, joint reply vs two separate replies
# Joint vs separate replies (coherence and SIM), and whether the comparison is one of the targets. CoDi's comparison
# is made where the prompt leaves the object open (its captions name a dog, not which dog): `joint_open`, where one
# reply must choose once and two replies choose apart. `joint_image_audio` prompts name the whole object, which fixes
# every attribute a sound has, so two replies agree whenever each is right; there the comparison only says which
# of two ways of asking is the more accurate, and it is reported, not counted: between models trained by this
# recipe it ranged from -3.3 to +26.7 points on 30 records, while the open comparison stayed at +76.7 to +86.7.
JOINT_COMPARISON_IS_TARGET = {"joint_image_audio": False, "joint_open": True}
IN_CONTEXT_EDIT_TASKS = ("icl_edit_image", "icl_edit_audio")  # the change shown by exemplar pairs, never named
SPOT_TASKS = ("spot_change_image", "spot_change_audio")  # two inputs, the reply names the change: text only


def edit_named(text: str, edits: Sequence[dict], parse: Callable[[str], dict], alone: bool = False) -> float:
    """1.0 when the reply's words (read by the world's caption parser ``parse``) give every edited attribute its
    new value, e.g. "The change makes it green. Here it is:" for ``[{"attr": "colour", "value": "green"}]``; else 0.
    ``alone``: and they name no other attribute (spot-the-change replies, where a caption of the second render
    names the new value too, without any comparison).

    On in-context records it tells reading the change off the exemplars from drawing it: the world's replies say the
    change before the output, so a model trained on them that names it wrong has inferred the wrong edit. (A model
    that does not state the change scores 0 whatever it draws.)
    """
    said = parse(text or "")
    right = bool(edits) and all(said.get(e["attr"]) == e["value"] for e in edits)
    return float(right and (not alone or set(said) == {e["attr"] for e in edits}))


OPEN_TEMPERATURE = 1.0  # the open joint task's replies sample the object they choose (Run.temperature)


def world_targets(records: Sequence[dict]) -> list[dict]:
    """The mini-world issue's figures from per-sample records: value, threshold, pass, and ``target`` (counted
    among the targets, or a comparison reported beside them); plus joint vs separate coherence and SIM for each
    joint task present (see ``JOINT_COMPARISON_IS_TARGET``)."""
    out = []
    for label, task, shots, metric, threshold in WORLD_TARGETS:
        vals = [r["metrics"][metric] for r in records if r["task"] == task and metric in r["metrics"]
                and (shots is None or r["shots"] == shots)]
        value = float(np.mean(vals)) if vals else None
        out.append({"label": label, "task": task, "shots": shots, "metric": metric, "threshold": threshold,
                    "n": len(vals), "value": value, "pass": value is not None and value >= threshold,
                    "target": True})
    for task in JOINT_TASKS:
        joint = [r["metrics"] for r in records if r["task"] == task]
        prefix = "joint" if task == "joint_image_audio" else "open joint"
        for metric in ("coherence", "sim"):
            a = [m[metric] for m in joint if metric in m]
            b = [m[f"{metric}_separate"] for m in joint if f"{metric}_separate" in m]
            if a and b:
                out.append({"label": f"{prefix} {metric} > separate {metric}", "task": task, "shots": None,
                            "metric": f"{metric} - {metric}_separate", "threshold": 0.0, "n": len(a),
                            "value": float(np.mean(a) - np.mean(b)), "pass": float(np.mean(a)) > float(np.mean(b)),
                            "target": JOINT_COMPARISON_IS_TARGET[task]})
    return out


class WorldSuite(Suite):
    """Every mini-world task, scored by the attribute judges (``data_builders.world.judges``).

    Per sample: ``acc`` (fraction of target attributes the judges / the caption parser find), ``exact`` (all
    right), ``acc_<attribute>``, ``key`` (the prompt's key attributes all right, see ``KEY_ATTRS``) and, for
    editing tasks, ``edit_acc`` (the edited attributes right) and ``preserve_acc`` (the others kept); in-context
    editing tasks add ``edit_named`` (the reply's words name the change right, see :func:`edit_named`).
    Joint image + sound records add ``coherence`` (the judged image and sound agree on shape, colour
    and size) and ``sim`` (cosine of the encoder embeddings of the two outputs) for the joint reply, and
    ``coherence_separate`` / ``sim_separate`` for two separate generations from the same prompt (one allowed
    only an image, the other only a sound, each reply started with its modality's opening token: a model asked
    for both that insists on the picture first would otherwise make no sound at all in the sound-only reply,
    and the comparison would count that as incoherence).

    Spot-the-change records (``SPOT_TASKS``: two renders, one attribute changed) have no output to judge: their
    ``edit_named`` (= ``exact``) says whether the reply names the change and nothing else (a caption of the
    second render would name the new value without comparing), the in-context tasks' first step alone.
    Every editing sample is also split by the attribute it changes (:meth:`breakdown`).

    In-context records (``meta.shots`` > 0 exemplar pairs) are evaluated at every ``--shots`` count k with
    1 <= k <= their pairs, keeping the first k pairs of the user turn (the same query and target at each k;
    sample id ``k<k>/<record id>``): on records built with ``--icl-shots 4`` the shots curve compares the same
    queries at 1, 2 and 4 shots. Other records are evaluated once, as they are.
    """

    name = "world"
    by_shots_in_context_only = True  # the shots curve = the in-context tasks

    def __init__(self, data: "str | Path", judges_dir: "str | Path", model: Any, n: Optional[int], seed: int,
                 shots: Sequence[int] = (1, 2, 4)):
        try:
            from data_builders.world import judges as J
            from data_builders.world.world import parse_caption
        except ImportError as e:
            raise RuntimeError(f"the world suite needs data_builders.world (the mini world and its judges): {e}") from e
        if judges_dir is None:
            raise ValueError("the world suite needs --judges DIR (judges.safetensors + judges.json from "
                             "`python -m data_builders.world.judges --out DIR`)")
        self.J, self.parse_caption = J, parse_caption
        self.judges = J.Judges.load(judges_dir)
        self.judges_dir = Path(judges_dir)
        # one manifest, or several (e.g. the default test split and a joint_open set): every record keeps its
        # own folder for its media paths, and ids must not repeat across them
        self.manifests = [manifest_path(d) for d in ([data] if isinstance(data, (str, Path)) else data)]
        if not self.manifests:
            raise ValueError("the world suite needs at least one manifest (--data)")
        if len({m.resolve() for m in self.manifests}) < len(self.manifests):
            raise ValueError(f"--data names the same manifest twice: {[str(m) for m in self.manifests]}")
        self.records, self._sources, where = [], [], {}
        for mp in self.manifests:
            for r in read_manifest(mp):
                rid = r.get("id")
                if rid in where and where[rid] == mp:
                    raise ValueError(f"{mp}: record id {rid!r} appears twice; every record needs its own id")
                if rid in where:
                    raise ValueError(f"record id {rid!r} is in both {where[rid]} and {mp}: the world suite reads "
                                     "several manifests only when their ids differ (build them with different "
                                     "--seed or --split)")
                where[rid] = mp
                self.records.append(r)
                self._sources.append(mp)
        self.model, self.n, self.seed = model, n, seed
        self.shots = sorted({int(k) for k in shots if int(k) >= 1})
        if not self.shots and any(int(r.get("meta", {}).get("shots", 0)) > 0 for r in self.records):
            raise ValueError(f"{', '.join(map(str, self.manifests))} has in-context records but --shots {list(shots)} "
                             "has no count >= 1; give e.g. --shots 1,2,4")

    @staticmethod
    def _first_pairs(user: Message, own: int, k: int, rid: str) -> Message:
        """The user turn of an in-context record with only its first ``k`` of ``own`` exemplar pairs (the
        first ``2 * own`` media parts; the query is the last media part)."""
        media = [i for i, p in enumerate(user.content) if p.type != "text"]
        if len(media) != 2 * own + 1:
            raise ValueError(f"{rid}: meta.shots = {own} but its user turn has {len(media)} media parts "
                             f"(an in-context record has 2 per exemplar pair + the query)")
        drop = set(media[2 * k:2 * own])
        return Message(user.role, [p for i, p in enumerate(user.content) if i not in drop])

    def samples(self) -> list[Sample]:
        by_task: dict[str, list[dict]] = {}
        root_of = {}
        for r, mp in zip(self.records, self._sources):
            if "meta" not in r or "task" not in r["meta"]:
                raise ValueError(f"{mp}: record {r.get('id')!r} has no meta.task; the world "
                                 f"suite reads manifests written by data_builders.world")
            by_task.setdefault(r["meta"]["task"], []).append(r)
            root_of[id(r)] = mp.parent
        out = []
        for task in sorted(by_task):
            for r in select(by_task[task], self.n, self.seed):
                root = root_of[id(r)]
                msgs = [message_from_dict(m, f"{r['id']}.messages[{j}]") for j, m in enumerate(r["messages"])]
                for m in msgs:
                    for p in m.content:
                        if p.path is not None:
                            p.path = str(root / p.path)
                last = len(msgs) - 1
                if msgs[last].role != "assistant" or msgs[last - 1].role != "user":
                    raise ValueError(f"{r['id']}: a world record must end with a user turn and an assistant turn")
                targets = [t for t in r["meta"]["targets"] if t["turn"] == last]
                outputs = tuple(t["modality"] for t in targets if t["modality"] != "text")
                runs = [Run("main", outputs)]
                if task == "joint_image_audio":
                    runs += [Run("image", ("image",), ("image",), force=True),
                             Run("audio", ("audio",), ("audio",), force=True)]
                elif task == "joint_open":  # the model chooses the object: sampled, the separate replies in their words
                    sep = r["meta"].get("separate") or {}
                    if set(sep) != {"image", "audio"}:
                        raise ValueError(f"{r['id']}: a joint_open record needs meta.separate with an image and an "
                                         f"audio prompt, got {sorted(sep)}")
                    runs = [Run("main", outputs, temperature=OPEN_TEMPERATURE),
                            Run("image", ("image",), ("image",), prompt=sep["image"], temperature=OPEN_TEMPERATURE),
                            Run("audio", ("audio",), ("audio",), prompt=sep["audio"], temperature=OPEN_TEMPERATURE)]
                ref = {"targets": targets, "edits": r["meta"].get("edits", [])}
                own = int(r["meta"].get("shots", 0))
                if own == 0:
                    out.append(Sample(id=r["id"], task=task, shots=0, user=msgs[last - 1], history=msgs[:last - 1],
                                      runs=runs, ref=ref))
                    continue
                for k in (k for k in self.shots if k <= own):
                    out.append(Sample(id=f"k{k}/{r['id']}", task=task, shots=k,
                                      user=self._first_pairs(msgs[last - 1], own, k, r["id"]),
                                      history=msgs[:last - 1], runs=runs, ref=ref))
        return out

    def _judge(self, modality: str, path: Path) -> dict:
        media = load_media(path, kind=modality)
        return {"image": self.judges.score_image, "audio": self.judges.score_audio,
                "video": self.judges.score_video}[modality](media)

    def _embed(self, modality: str, path: Path) -> np.ndarray:
        import torch

        m = self.model
        dev = next(m.encoder.parameters()).device
        with torch.no_grad():
            if modality == "image":
                e = m.encoder.encode_image(m.preprocess.images([load_image(path)]).to(dev)).embed
            else:
                e = m.encoder.encode_audio(m.preprocess.audio(load_audio(path))[None].to(dev)).embed
        return e[0].double().cpu().numpy()

    def breakdown(self, sample: Sample) -> dict[str, str]:
        """``{"changed": attribute}`` of an editing sample (a three-round dialogue: its last round's edit)."""
        edits = sample.ref.get("edits") or []
        return {"changed": edits[-1]["attr"]} if edits else {}

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        if sample.task in SPOT_TASKS:
            named = edit_named(gen["main"].text, sample.ref.get("edits") or [], self.parse_caption, alone=True)
            return {"edit_named": named, "exact": named}
        checks: list[tuple[str, bool]] = []  # (attribute, judged right) over every target of the last turn
        seen: dict[str, int] = {}
        for t in sample.ref["targets"]:
            m = t["modality"]
            if m == "text":
                pred = self.parse_caption(gen["main"].text)
            else:
                path = gen["main"].first(m, seen.get(m, 0))
                seen[m] = seen.get(m, 0) + 1
                pred = self._judge(m, path) if path is not None else {}
            for a, want in t["attrs"].items():
                v = pred.get(a)
                checks.append((a, (v[0] if isinstance(v, tuple) else v) == want))
        if not checks:
            raise ValueError(f"world record {sample.id}: no targets for its last turn in meta.targets")
        out = {"acc": sum(ok for _, ok in checks) / len(checks), "exact": float(all(ok for _, ok in checks))}
        for a in sorted({a for a, _ in checks}):
            out[f"acc_{a}"] = float(np.mean([ok for b, ok in checks if b == a]))
        key = KEY_ATTRS.get(sample.task)
        out["key"] = float(all(ok for a, ok in checks if key is None or a in key))
        edits = sample.ref.get("edits") or []
        if edits:
            edited = {edits[-1]["attr"]} if sample.task == "multi_round_edit" else {e["attr"] for e in edits}
            out["edit_acc"] = float(all(ok for a, ok in checks if a in edited))
            kept = [ok for a, ok in checks if a not in edited]
            if kept:
                out["preserve_acc"] = float(np.mean(kept))
            if sample.task in IN_CONTEXT_EDIT_TASKS:
                out["edit_named"] = edit_named(gen["main"].text, edits, self.parse_caption)
        if sample.task in JOINT_TASKS:
            for key, (gi, ga) in {"": (gen["main"], gen["main"]), "_separate": (gen["image"], gen["audio"])}.items():
                pi, pa = gi.first("image"), ga.first("audio")
                if pi is None or pa is None:
                    out["coherence" + key] = 0.0
                    continue
                out["coherence" + key] = float(self.J.coherent(self._judge("image", pi), self._judge("audio", pa)))
                out["sim" + key] = float(M.cosine(self._embed("image", pi), self._embed("audio", pa))[0])
        return out

    def backbone_dirs(self) -> dict[str, Path]:
        return {"judges": self.judges_dir}

    def data_files(self) -> list[Path]:
        files = set(self.manifests)
        for r, mp in zip(self.records, self._sources):
            root = mp.parent
            for m in r["messages"]:
                for p in m["content"]:
                    if p.get("path"):
                        files.add(root / p["path"])
        return sorted(files)
