"""Evaluation suites: what to ask the model (samples) and how to score what it made (from files).

A suite turns local data into :class:`Sample` s (a prompt turn, optional history, the outputs expected)
and scores the generated files of one sample (:meth:`Suite.score`) and of a whole group of samples
(:meth:`Suite.score_set`: set-level metrics such as FD / FAD). Scoring reads only files, so the same code
scores any system's outputs (``codi2 eval score``) and a resumed run gives the same numbers as a fresh one.

Suites
    dreambench   DreamBench layout ``dataset/<subject>/*.jpg`` + ``dataset/prompts_and_classes.txt``;
                 k-shot prompts from the subject's first k images; DINO, CLIP-I (mean over all real images
                 of the subject) and CLIP-T (against the prompt with the class noun, e.g. "a dog in the snow").
    image-edit   editing records (:mod:`codi2.editing`, docs/data.md "Editing records"): the first user message
                 holds images A_1, A'_1, …, A_K, A'_K, B and the first assistant message the ground truth B' (text
                 parts are ignored: prompts are rebuilt per shot count). ``--data`` a split build folder (or its
                 test.jsonl): its test split, k-shot exemplars for records with K = 0 drawn from its train split
                 (same edit type, never the record's group). The edit comes from ``meta.pair`` (instruction, type,
                 captions), else the older keys (``meta.instruction``; ``meta.edit`` / ``meta.edits[0].attr`` /
                 ``meta.task`` as the type); results are grouped by the type. Records of another modality or
                 not edits are skipped and counted (results.json ``skipped_records``).
                 L1, L2, CLIP-I, DINO, CLIP-T (caption of B'),
                 CLIP directional similarity (text variant when B and B' have captions; exemplar-image variant
                 for k >= 1).
    audio-edit   the same with audio; the edit type (add / drop / replace …) groups the results;
                 LSD, KL (softmax, sigmoid) and ``audio_t`` (clip vs the caption of B', with a backbone that
                 embeds text: the ImageBind default) per sample; FD and FAD per shot count.

Other suites register themselves (:mod:`codi2.eval.registry`), e.g. the mini world's ``world`` suite.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..conversation import Message, Part, message_from_dict
from ..editing import TEST, TRAIN, edit_info, instruction_sentence, normalise_instruction, split_manifests
from ..media import Audio, load_audio, load_image, load_media
from . import metrics as M
from .registry import register_suite

log = logging.getLogger(__name__)

LSD_SAMPLE_RATE = 16000  # audioldm_eval evaluates at 16 kHz
ICL_INTRO = "Look at these examples."  # the in-context wording of the editing prompts (the mini world's too)
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

    def text_model(self) -> Any:
        """The backbone that embeds text in its audio space (the ImageBind default), or None."""
        return next((m for m in (self.classifier, self.fad_model) if m is not None and hasattr(m, "texts")), None)

    def pair(self, pred: Path, ref: Path, caption: Optional[str] = None) -> dict[str, float]:
        """LSD and KL of a generated clip against its ground truth; with ``caption`` (the ground truth's) and a
        backbone with a text tower, ``audio_t``: the cosine of the generated clip and the caption."""
        from .features import mono

        a, b = _audio(pred), _audio(ref)
        out = {"lsd": M.lsd(mono(a, LSD_SAMPLE_RATE), mono(b, LSD_SAMPLE_RATE), LSD_SAMPLE_RATE, self.lsd_time_offset)}
        tm = self.text_model() if caption else None
        if tm is not None:
            out["audio_t"] = float(M.cosine(self._emb(tm, pred)[0][None], tm.texts([caption]))[0])
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
    targets_title = "Targets"  # report.md's heading over :meth:`targets`
    targets_beside_note = "Reported beside them, not targets:"  # report.md's line over the comparisons

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

    def targets(self, records: Sequence[dict]) -> list[dict]:
        """The suite's pass/fail figures from the per-sample records of a run (results.json ``metrics.targets``):
        dicts with ``label``, ``task``, ``shots``, ``metric``, ``threshold``, ``n``, ``value``, ``pass`` and
        ``target`` (False: a comparison reported beside the targets). None by default."""
        return []

    def skipped_records(self) -> dict[str, int]:
        """Records of the data the suite did not evaluate, by reason (results.json ``skipped_records``)."""
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
    """One editing item: in-record exemplar pairs, the query and its ground truth (absolute paths), and the edit
    (:class:`codi2.editing.EditInfo`: ``task`` is its type, results are grouped by it)."""

    id: str
    task: str
    pairs: list[tuple[Path, Path]]
    query: Path
    target: Path
    query_caption: Optional[str]
    target_caption: Optional[str]
    instruction: Optional[str]
    group: Optional[str] = None
    split: Optional[str] = None


def manifest_path(data: "str | Path") -> Path:
    p = Path(data)
    if p.is_dir():
        p = p / "manifest.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"{data}: no manifest (give a manifest .jsonl file or a folder with manifest.jsonl)")
    return p


def edit_manifests(data: "str | Path") -> tuple[list[Path], Optional[list[Path]]]:
    """(manifests to evaluate, train manifests for k-shot exemplars or None) of ``--data``.

    A folder holding a split build (its ``summary.json`` lists ``splits``, :func:`codi2.editing.split_manifests`)
    gives its test split, with its train split for exemplars; a test manifest of such a build does the same;
    any other folder gives its ``manifest.jsonl`` and any other file itself, with no train split.
    """
    p = Path(data)
    folder = p if p.is_dir() else p.parent
    splits = split_manifests(folder) if folder.is_dir() else None
    if p.is_dir():
        if splits is not None:
            if not splits[TEST]:
                raise ValueError(f"{p}: the split build held out no test records (summary.json lists no test "
                                 f"manifests); rebuild with a larger --eval-fraction, or give a manifest file")
            return splits[TEST], splits[TRAIN]
        return [manifest_path(p)], None
    if not p.is_file():
        raise FileNotFoundError(f"{data}: no manifest (give a manifest .jsonl file or a folder with manifest.jsonl "
                                f"or a split build's test.jsonl)")
    if splits is not None and any(p.resolve() == t.resolve() for t in splits[TEST]):
        return [p], splits[TRAIN]
    return [p], None


def exemplar_manifests(paths: Sequence["str | Path"]) -> list[Path]:
    """``--exemplars``: manifest files, or folders (a split build's train split, else its ``manifest.jsonl``)."""
    out = []
    for x in paths:
        p = Path(x)
        if p.is_dir():
            splits = split_manifests(p)
            out += splits[TRAIN] if splits is not None else [manifest_path(p)]
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"--exemplars {x}: no such manifest file or folder")
    return out


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


SKIP_REASONS = {
    "other_modality": "an editing record of another modality (a mixed picture/sound manifest)",
    "not_edit": "not an editing record (meta.pair is a captioned pair, or meta.task is not edit / icl_edit)",
    "missing_file": "a media file the record names does not exist",
}


def read_edit_records(paths: Sequence[Path], modality: str) -> tuple[list[EditRecord], dict[str, int]]:
    """Editing records of ``modality`` from manifests, and the records skipped by reason (:data:`SKIP_REASONS`).

    The layout (see the module docstring) and the edit (:func:`codi2.editing.edit_info`: ``meta.pair``, or the
    older keys) are checked; a record of the modality that breaks the layout is an error naming the line.
    Captions come from the media parts, else from ``meta.pair`` (``input_caption`` / ``output_caption``).
    """
    out: list[EditRecord] = []
    skipped: dict[str, int] = {}
    examples: dict[str, str] = {}

    def skip(reason: str, where: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        examples.setdefault(reason, where)

    for path in paths:
        root = path.parent
        for i, r in enumerate(read_manifest(path)):
            where = f"{path}:{i + 1}"
            info = edit_info(r.get("meta"))
            if info is None:
                skip("not_edit", where)
                continue
            if info.modality is not None and info.modality != modality:
                skip("other_modality", where)
                continue
            msgs = [message_from_dict(m, f"{where}.messages[{j}]") for j, m in enumerate(r.get("messages", []))]
            user = next((m for m in msgs if m.role == "user"), None)
            reply = next((m for m in msgs if m.role == "assistant"), None)
            if user is None or reply is None:
                raise ValueError(f"{where}: an edit record needs a user message and an assistant message")
            inputs = [p for p in user.content if p.type == modality]
            targets = [p for p in reply.content if p.type == modality]
            if not info.schema and not inputs and not targets:
                skip("other_modality", where)
                continue
            if len(inputs) % 2 != 1 or not targets:
                raise ValueError(f"{where}: expected the user message to hold {modality} parts A_1, A'_1, …, A_K, A'_K, "
                                 f"B (an odd number, got {len(inputs)}) and the assistant message the ground truth B' "
                                 f"(got {len(targets)} {modality} parts)")
            pairs = [(root / inputs[2 * k].path, root / inputs[2 * k + 1].path) for k in range(len(inputs) // 2)]
            rec = EditRecord(id=str(r.get("id", f"item{i:05d}")), task=info.type, pairs=pairs,
                             query=root / inputs[-1].path, target=root / targets[0].path,
                             query_caption=inputs[-1].caption or info.input_caption,
                             target_caption=targets[0].caption or info.output_caption,
                             instruction=info.instruction, group=info.group, split=info.split)
            missing = [f for f in [rec.query, rec.target] + [x for pr in pairs for x in pr] if not f.is_file()]
            if missing:
                skip("missing_file", f"{where}: {missing[0]}")
                continue
            out.append(rec)
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{', '.join(map(str, paths))}: record ids are not unique")
    for reason, n in sorted(skipped.items()):
        log.info("%s: skipped %d records (%s: %s), e.g. %s", ", ".join(p.name for p in paths), n, reason,
                 SKIP_REASONS[reason], examples[reason])
    return out, skipped


def read_edit_manifest(path: Path, modality: str) -> list[EditRecord]:
    """Edit items of ``modality`` from one codi2 manifest (others are skipped; see :func:`read_edit_records`)."""
    return read_edit_records([path], modality)[0]


def edit_user_message(rec: EditRecord, k: int, modality: str,
                      pairs: Optional[Sequence[tuple[Path, Path]]] = None) -> Message:
    """The user turn of ``rec`` at ``k`` shots.

    k = 0: [B, instruction] (as a sentence, :func:`codi2.editing.instruction_sentence`; "Edit this image." when
    the record has none). k >= 1 with the record's own pairs
    (``pairs`` None; an in-context record, whose exemplars share the edit): [intro, A_1, A'_1, …, A_k, A'_k,
    query text, B] (mini-world wording; the edit is not named). k >= 1 with ``pairs`` drawn from the train split
    (same edit type, other groups): [intro, A_1, A'_1, …, A_k, A'_k, B, instruction].
    """
    noun = {"image": "image", "audio": "sound", "video": "video"}[modality]
    instruction = instruction_sentence(rec.instruction) if rec.instruction else f"Edit this {noun}."
    if k == 0:
        return Message("user", [Part(type=modality, path=str(rec.query)), Part.from_text(instruction)])
    named = pairs is not None and rec.instruction is not None
    parts = [Part.from_text(ICL_INTRO)]
    for a, b in (rec.pairs if pairs is None else pairs)[:k]:
        parts += [Part(type=modality, path=str(a)), Part(type=modality, path=str(b))]
    if named:
        parts += [Part(type=modality, path=str(rec.query)), Part.from_text(instruction)]
    else:
        parts += [Part.from_text(ICL_QUERY), Part(type=modality, path=str(rec.query))]
    return Message("user", parts)


class EditSuite(Suite):
    """Editing records of one modality; k-shot exemplars from the record itself (in-context records) or, for
    records without any, k pairs of the same edit type from the train split (``exemplars``), deterministic in
    (seed, record id), the same instruction first, never the record's own group."""

    modality = "image"

    def __init__(self, data: "str | Path", shots: Sequence[int], n: Optional[int], seed: int,
                 exemplars: Optional[Sequence["str | Path"]] = None):
        self.manifests, train = edit_manifests(data)
        self.manifest = self.manifests[0]
        if exemplars:
            train = exemplar_manifests(exemplars)
        self.train_manifests = list(train or [])
        self.records, self.skipped = read_edit_records(self.manifests, self.modality)
        if not self.records:
            raise ValueError(f"{', '.join(map(str, self.manifests))}: no {self.modality} editing records "
                             f"(skipped: {self.skipped or 'none'}); expected records as in docs/data.md "
                             f"'Editing records'")
        self.pool: dict[str, list[EditRecord]] = {}
        if self.train_manifests:
            train_recs, _ = read_edit_records(self.train_manifests, self.modality)
            test_ids = {(str(r.query), str(r.target)) for r in self.records}
            for r in train_recs:
                if (str(r.query), str(r.target)) not in test_ids:
                    self.pool.setdefault(r.task, []).append(r)
        self.shots, self.n, self.seed = list(shots), n, seed
        self._used: set[Path] = set()

    def skipped_records(self) -> dict[str, int]:
        return dict(self.skipped)

    def exemplars(self, rec: EditRecord, k: int) -> list[tuple[Path, Path]]:
        """Up to ``k`` train pairs of ``rec``'s edit type (not of its group), the same instruction first; the
        order is fixed by (seed, record id), so the pairs at k shots are the first k of those at more shots."""
        cands = [c for c in self.pool.get(rec.task, []) if rec.group is None or c.group != rec.group]
        if not cands:
            return []
        h = int.from_bytes(hashlib.sha256(f"{self.seed}:{rec.id}".encode()).digest()[:8], "big")
        order = np.random.default_rng(h).permutation(len(cands))
        want = normalise_instruction(rec.instruction)
        ranked = sorted((int(i) for i in order), key=lambda i: normalise_instruction(cands[i].instruction) != want)
        return [(cands[i].query, cands[i].target) for i in ranked[:k]]

    def samples(self) -> list[Sample]:
        out = []
        short: dict[int, int] = {}
        for k in self.shots:
            for rec in select(self.records, self.n, self.seed):
                pairs: Optional[list[tuple[Path, Path]]] = None
                if k == 0:
                    used: list[tuple[Path, Path]] = []
                elif len(rec.pairs) >= k:
                    used = rec.pairs[:k]
                elif not rec.pairs and self.pool:
                    pairs = used = self.exemplars(rec, k)
                else:
                    used = []
                if k > len(used):
                    short[k] = short.get(k, 0) + 1
                    log.warning("%s: item %s has %d exemplar pairs (in the record: %d; of type %r in the train split: "
                                "%d), fewer than %d shots; skipped", self.name, rec.id, len(used), len(rec.pairs),
                                rec.task, len(self.pool.get(rec.task, [])), k)
                    continue
                self._used.update(x for pr in used for x in pr)
                out.append(Sample(id=f"k{k}/{rec.id}", task=rec.task, shots=k,
                                  user=edit_user_message(rec, k, self.modality, pairs),
                                  runs=[Run("main", (self.modality,))], ref={"record": rec, "pairs": used}))
        for k, n_short in sorted(short.items()):
            self.skipped[f"too_few_exemplars_k{k}"] = n_short
        return out

    def data_files(self) -> list[Path]:
        files = set(self.manifests) | set(self.train_manifests) | self._used
        for r in self.records:
            files.update([r.query, r.target] + [p for pair in r.pairs for p in pair])
        return sorted(files)


class ImageEditSuite(EditSuite):
    name, modality = "image-edit", "image"

    def __init__(self, data: "str | Path", scorer: ImageScorer, shots: Sequence[int], n: Optional[int], seed: int,
                 exemplars: Optional[Sequence["str | Path"]] = None):
        super().__init__(data, shots, n, seed, exemplars)
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
            pairs = sample.ref["pairs"]
            out["clip_dir_image"] = M.directional_similarity_image(
                e_query, e_pred, s._feat("clip", [a for a, _ in pairs]), s._feat("clip", [b for _, b in pairs]))
        return out


class AudioEditSuite(EditSuite):
    name, modality = "audio-edit", "audio"

    def __init__(self, data: "str | Path", scorer: AudioScorer, shots: Sequence[int], n: Optional[int], seed: int,
                 exemplars: Optional[Sequence["str | Path"]] = None):
        super().__init__(data, shots, n, seed, exemplars)
        self.scorer = scorer

    def score(self, sample: Sample, gen: dict[str, Generated]) -> dict[str, float]:
        pred = gen["main"].first("audio")
        rec: EditRecord = sample.ref["record"]
        return {} if pred is None else self.scorer.pair(pred, rec.target, rec.target_caption)

    def score_set(self, items: Sequence[tuple[Sample, dict[str, Generated]]]) -> dict[str, float]:
        pairs = [(g["main"].first("audio"), s.ref["record"].target) for s, g in items]
        pairs = [(p, r) for p, r in pairs if p is not None]
        return self.scorer.sets([p for p, _ in pairs], [r for _, r in pairs]) if pairs else {}


# ----------------------------------------------------------------------------- the library's suites
def _image_scorer(cfg: Any) -> ImageScorer:
    from .features import ClipFeatures, DinoFeatures

    if cfg.clip is None and cfg.dino is None:
        raise ValueError(f"the {cfg.suite} suite needs --clip DIR and/or --dino DIR (local transformers CLIP / "
                         f"DINO ViT directories)")
    return ImageScorer(ClipFeatures.from_pretrained(cfg.clip) if cfg.clip else None,
                       DinoFeatures.from_pretrained(cfg.dino) if cfg.dino else None, cfg.pixel_size)


def _build_dreambench(cfg: Any, model: Any) -> Suite:
    return DreamBenchSuite(cfg.data, _image_scorer(cfg), cfg.shots, cfg.n, cfg.seed)


def _build_image_edit(cfg: Any, model: Any) -> Suite:
    return ImageEditSuite(cfg.data, _image_scorer(cfg), cfg.shots, cfg.n, cfg.seed, cfg.exemplars)


def _build_audio_edit(cfg: Any, model: Any) -> Suite:
    from .features import load_audio_backbone

    clf = load_audio_backbone(cfg.audio_classifier, cfg.model, model)
    fad = clf if cfg.fad_model == cfg.audio_classifier else load_audio_backbone(cfg.fad_model, cfg.model, model)
    return AudioEditSuite(cfg.data, AudioScorer(clf, fad, cfg.lsd_time_offset), cfg.shots, cfg.n, cfg.seed,
                          cfg.exemplars)


register_suite(DreamBenchSuite, _build_dreambench)
register_suite(ImageEditSuite, _build_image_edit)
register_suite(AudioEditSuite, _build_audio_edit)
