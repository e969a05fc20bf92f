"""Conversations built on paired data: captioning, generation, edits, in-context exemplars, subject-driven,
multi-round and joint-output turns, with varied phrasing and configurable mixtures, deterministic by seed.

Two entry points:

* :func:`pair_record` (used by every reader's build): one sample -> one record: a captioning turn
  (media -> text), a generation turn (text -> media), a joint-output turn (text -> image + audio …)
  or an edit turn (input media + instruction -> output media). The paired data itself is kept in
  ``meta.pair`` so that :func:`compose` can recombine it.
* :func:`compose` (``codi2 build-data conversations --input PAIRS.jsonl … --out DIR --n N``): reads pair
  manifests written by the readers and draws ``n`` conversations from a :class:`Mixture` of tasks:

  ============== ====================================================================================
  ``caption``     user: media + "Describe this image." -> assistant: the caption
  ``generate``    user: "Draw a cat on a sofa." -> assistant: "Here it is:" + media
  ``edit``        user: media + instruction -> assistant: edited media
  ``icl_edit``    user: k exemplar pairs (A1 -> A1', …, Ak -> Ak') that share one edit (same instruction /
                  edit group), then a query B -> assistant: B'. The edit is never named.
  ``subject``     user: several images of one subject + a request built from another image of it ->
                  assistant: that image
  ``multi_round`` a dialogue chaining edits (B = edit(A), C = edit(B) … where the corpus links them by media
                  hash), else an edit followed by "describe the result" (or a caption followed by an edit)
  ``joint``       user: a description -> assistant: image + audio (or any two modalities of one sample)
  ============== ====================================================================================

  Record ``i`` draws everything from ``random.Random(f"{seed}:{i}")``, so the output depends only on
  the inputs, the mixture and the seed. A task whose pool is empty (e.g. no subjects) is left out and
  counted in the summary (``unavailable``).

  Held-out split: every pair is ``train`` or ``test``: its record's ``meta.split`` (a reader build with
  ``--eval-fraction``), else :func:`codi2.editing.split_of` of its group key with the mixture's
  ``eval_fraction``. Training conversations (``manifest.jsonl``) draw only from train pairs; ``eval_n`` test
  conversations (``test.jsonl``, ids ``{name}-test-NNNNNNNN``, ``Random(f"{seed}:test:{i}")``) draw only from
  test pairs, so no edit group (or subject) is on both sides. Edit and in-context records carry their query's
  edit in ``meta.pair`` (the editing-record schema, :mod:`codi2.editing`). A pair whose media file is missing
  is skipped and counted (``skipped`` in the summary).

Phrasing: every turn's text comes from the template lists below, chosen by the record's RNG.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from codi2.editing import (
    CAPTIONED_KIND,
    EDIT_KIND,
    KIND,
    PAIR,
    SPLIT,
    SPLIT_PREFIX,
    SUMMARY_SPLITS,
    TEST,
    TRAIN,
    check_eval_fraction,
    edit_pair,
    group_key,
    instruction_sentence,
    split_of,
)
from codi2.io import write_json

from .records import BuildError, Sample, ShardWriter, existing_outputs

log = logging.getLogger(__name__)

NOUN = {"image": "image", "audio": "sound", "video": "video"}
ARTICLE_NOUN = {"image": "an image", "audio": "a sound", "video": "a video"}

CAPTION_PROMPTS = {
    "image": ["Describe this image.", "What is in this picture?", "Write a short caption for this image.",
              "What do you see here?", "Give a one-sentence description of the photo.", "Caption this image."],
    "audio": ["Describe this sound.", "What can you hear in this recording?", "Write a short caption for this audio.",
              "What is happening in this audio clip?", "Caption this sound."],
    "video": ["Describe this video.", "What happens in this clip?", "Write a short caption for this video.",
              "What is shown in this video?", "Caption this video clip."],
}
GENERATE_PROMPTS = {
    "image": ["Generate an image of {c}.", "Draw {c}.", "Show me a picture of {c}.", "Create an image: {c}.",
              "Can you make a picture of {c}?", "Paint {c}."],
    "audio": ["Generate the sound of {c}.", "Make a sound of {c}.", "Create audio: {c}.", "Let me hear {c}.",
              "Can you produce a recording of {c}?"],
    "video": ["Generate a video of {c}.", "Make a short clip of {c}.", "Create a video: {c}.", "Show me a video of {c}.",
              "Can you animate {c}?"],
}
REPLY_PREFIXES = ["Here it is:", "Here you go:", "Sure, here is the result:", "Done:", "Here is what you asked for:"]
JOINT_PROMPTS = ["{c} Show me {n0} and {n1} of it.", "Create {n0} and {n1} of {c2}.",
                 "Give me both {n0} and {n1}: {c2}.", "{c} I'd like {n0} with {n1} to match."]
EDIT_JOINERS = ["", "Please: ", "Could you edit this? ", "Edit request: "]
ICL_INTROS = ["Here are some examples of a change:", "Look at these before/after pairs.",
              "Each example shows an original and its changed version.", "Examples:"]
ICL_ARROWS = ["→", "becomes", "turns into", "->"]
ICL_QUERIES = ["Now do the same to this one:", "Apply the same change to this:", "Same thing for this one, please:",
               "What does this become?"]
SUBJECT_INTROS = ["These pictures show the same {s}.", "Here are a few photos of my {s}.",
                  "All of these are the same {s}."]
SUBJECT_REQUESTS = ["Show it like this: {c}.", "Make a new picture of it: {c}.", "Now draw it as {c}.",
                    "Generate an image of this {s}: {c}."]
DESCRIBE_RESULT = ["Describe the result.", "Describe the new {n}.", "What is in the edited {n}?",
                   "Describe the {n} you made."]


def _cap(text: str) -> str:
    """First letter upper case, no trailing full stop (for ``{c}`` inside a template)."""
    t = text.strip().rstrip(".")
    return t[:1].upper() + t[1:] if t else t


def _low(text: str) -> str:
    """A caption to embed mid-sentence: no trailing full stop, first letter lower case unless an acronym."""
    t = text.strip().rstrip(".")
    return t[:1].lower() + t[1:] if len(t) > 1 and not t[1:2].isupper() else t


def _sentence(text: str) -> str:
    t = text.strip()
    return t if t.endswith((".", "!", "?")) else t + "."


def _txt(text: str) -> dict:
    return {"type": "text", "text": text}


def _media(kind: str, path: str, caption: Optional[str] = None) -> dict:
    d = {"type": kind, "path": path}
    if caption:
        d["caption"] = caption
    return d


# ----------------------------------------------------------------------------- single-pair turns
def caption_messages(kind: str, path: str, caption: str, rng: random.Random) -> list[dict]:
    """media -> text."""
    return [{"role": "user", "content": [_media(kind, path), _txt(rng.choice(CAPTION_PROMPTS[kind]))]},
            {"role": "assistant", "content": [_txt(_sentence(_cap(caption)))]}]


def generate_messages(kind: str, path: str, caption: str, rng: random.Random) -> list[dict]:
    """text -> media (the output carries the caption: audio/video head targets are computed from it)."""
    return [{"role": "user", "content": [_txt(rng.choice(GENERATE_PROMPTS[kind]).format(c=_low(caption)))]},
            {"role": "assistant", "content": [_txt(rng.choice(REPLY_PREFIXES)), _media(kind, path, caption)]}]


def joint_messages(media: dict[str, str], caption: str, rng: random.Random) -> list[dict]:
    """text -> several media of one sample (e.g. image + audio) in one reply."""
    kinds = [k for k in ("image", "audio", "video") if k in media]
    n0, n1 = ARTICLE_NOUN[kinds[0]], " and ".join(ARTICLE_NOUN[k] for k in kinds[1:])
    prompt = rng.choice(JOINT_PROMPTS).format(c=_sentence(_cap(caption)), c2=_low(caption), n0=n0, n1=n1)
    reply = [_txt(rng.choice(REPLY_PREFIXES))] + [_media(k, media[k], caption) for k in kinds]
    return [{"role": "user", "content": [_txt(prompt)]}, {"role": "assistant", "content": reply}]


def edit_messages(kind: str, src: str, instruction: str, dst: str, out_caption: Optional[str],
                  rng: random.Random) -> list[dict]:
    """input media + instruction -> output media."""
    return [{"role": "user", "content": [_media(kind, src), _txt(rng.choice(EDIT_JOINERS) + instruction_sentence(instruction))]},
            {"role": "assistant", "content": [_txt(rng.choice(REPLY_PREFIXES)), _media(kind, dst, out_caption)]}]


def pair_of(s: Sample) -> dict:
    """The ``meta.pair`` form of a sample (paths as in the record)."""
    if s.edit is not None:  # the editing-record schema (codi2.editing)
        return edit_pair(s.modality, s.media["input"], s.media["output"],
                         **{k: s.edit.get(k) for k in ("instruction", "type", "group", "input_caption", "output_caption")},
                         output_caption_derived=bool(s.edit.get("output_caption_derived")), sha256=s.sha256)
    d = {KIND: CAPTIONED_KIND, "caption": s.caption, "media": dict(s.media), "sha256": dict(s.sha256)}
    if s.subject:
        d["subject"] = s.subject
    return d


def pair_record(s: Sample, rid: str, name: str, seed: int, mix: dict[str, float], license: str) -> dict:
    """One checked sample -> one manifest record (see the module docstring).

    Args:
        s: the sample (media paths final, sha256 filled).
        rid: the record id.
        name: the ``source`` field.
        seed: with ``s.id`` seeds the task choice and phrasing.
        mix: weights of ``caption``, ``generate`` and ``joint`` for captioned pairs.
        license: used when the sample names no licence.

    Returns:
        The record dict; ``meta`` holds ``task``, ``orig_id``, ``pair`` and the input's extra fields (``orig``).
    """
    rng = random.Random(f"{seed}:{s.id}")
    pair = pair_of(s)
    if s.edit is not None:
        task = "edit"
        out_cap = s.edit.get("output_caption")
        messages = edit_messages(s.modality, s.media["input"], s.edit["instruction"], s.media["output"], out_cap, rng)
    else:
        kinds = [k for k in ("image", "audio", "video") if k in s.media]
        options = [("caption", k) for k in kinds] + [("generate", k) for k in kinds]
        if len(kinds) > 1:
            options.append(("joint", None))
        weights = [float(mix.get(t, 0.0)) / (1 if t == "joint" else len(kinds)) for t, _ in options]
        if sum(weights) <= 0:
            raise BuildError(f"mix {mix} gives weight 0 to every task possible for {sorted(s.media)} samples "
                             "(caption, generate, joint); raise one of them")
        task, kind = rng.choices(options, weights)[0]
        if task == "caption":
            messages = caption_messages(kind, s.media[kind], s.caption, rng)
        elif task == "generate":
            messages = generate_messages(kind, s.media[kind], s.caption, rng)
        else:
            messages = joint_messages(s.media, s.caption, rng)
    meta: dict[str, Any] = {"task": task, "orig_id": s.id, PAIR: pair}
    if s.extra:
        meta["orig"] = s.extra
    return {"schema": 1, "id": rid, "source": name, "messages": messages, "meta": meta,
            "license": s.license or license}


# ----------------------------------------------------------------------------- composing
TASKS = ("caption", "generate", "edit", "icl_edit", "subject", "multi_round", "joint")


@dataclass
class Mixture:
    """What :func:`compose` draws (YAML file and/or ``key=value`` overrides, e.g. ``weights.icl_edit=2``).

    Attributes:
        n: conversations to write.
        seed: the seed (record i uses ``Random(f"{seed}:{i}")``).
        weights: task -> weight (:data:`TASKS`); empty (the default): every task weighs 1; otherwise tasks not
            named weigh 0.
        icl_shots: [min, max] exemplar pairs before the query.
        subject_refs: [min, max] reference images of the subject.
        max_rounds: the most edits chained in one ``multi_round`` dialogue.
        name: the id prefix (records are ``{name}-00000000`` …).
        shard_size: records per output shard (0 = one ``manifest.jsonl``).
        relative_paths: media paths relative to the output folder (default: absolute).
        eval_fraction: the fraction of edit groups / subjects / samples held out as the test split, for pairs
            whose manifest has no ``meta.split`` (0: none; pairs already split keep their side).
        eval_n: test conversations to write (default: ``n`` × the test pairs' share, rounded up; 0 when there
            are no test pairs).
    """

    n: int = 1000
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    icl_shots: list[int] = field(default_factory=lambda: [1, 3])
    subject_refs: list[int] = field(default_factory=lambda: [2, 4])
    max_rounds: int = 3
    name: str = "mix"
    shard_size: int = 0
    relative_paths: bool = False
    eval_fraction: float = 0.0
    eval_n: Optional[int] = None

    def check(self) -> None:
        bad = sorted(set(self.weights) - set(TASKS))
        if bad:
            raise ValueError(f"mixture weights name unknown tasks {bad}; allowed: {', '.join(TASKS)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"mixture weights {dict(self.weights)} must be >= 0")
        for name in ("icl_shots", "subject_refs"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"{name} = {list(lo_hi)}; give [min, max] with 1 <= min <= max")
        if self.n < 0 or self.max_rounds < 2 or self.shard_size < 0:
            raise ValueError(f"n = {self.n} (>= 0), max_rounds = {self.max_rounds} (>= 2), "
                             f"shard_size = {self.shard_size} (>= 0)")
        check_eval_fraction(self.eval_fraction)
        if self.eval_n is not None and self.eval_n < 0:
            raise ValueError(f"eval_n = {self.eval_n}; it must be >= 0 (or unset: n x the test pairs' share)")


def load_mixture(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Mixture:
    """A :class:`Mixture` from a YAML file and ``key=value`` overrides (unknown keys are errors)."""
    from codi2.config import load_config

    m = load_config(Mixture, path, list(overrides))
    m = dataclasses.replace(m, weights=dict(m.weights), icl_shots=list(m.icl_shots), subject_refs=list(m.subject_refs))
    m.check()
    return m


@dataclass
class _Pair:
    """A pair read back from a pair manifest: paths absolute, plus where it came from."""

    pair: dict
    rid: str
    source: str
    license: str
    orig_id: str
    split: str = TRAIN


def _load_pairs(manifests: Sequence[Union[str, Path]], eval_fraction: float = 0.0,
                skipped: Optional[dict[str, list]] = None) -> list[_Pair]:
    """The pairs of reader manifests, paths made absolute, each with its split. A pair whose media file is
    missing goes to ``skipped["missing_file"]`` (a list of ``{"id", "detail"}``) instead."""
    from codi2.data import read_manifest

    pairs = []
    for m in manifests:
        base = Path(m).resolve().parent
        n_before = len(pairs)
        for line, raw in read_manifest(m):
            meta = raw.get("meta") or {}
            pair = meta.get(PAIR)
            if not isinstance(pair, dict):
                continue
            pair = json.loads(json.dumps(pair))  # a private copy

            def absolute(p: str) -> str:
                return p if os.path.isabs(p) else str(base / p)

            if pair[KIND] == EDIT_KIND:
                pair["input"], pair["output"] = absolute(pair["input"]), absolute(pair["output"])
                files = [pair["input"], pair["output"]]
            else:
                pair["media"] = {k: absolute(v) for k, v in pair["media"].items()}
                files = list(pair["media"].values())
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                if skipped is not None:
                    skipped.setdefault("missing_file", []).append(
                        {"id": raw.get("id"), "detail": f"{m}:{line}: media file not found: {missing[0]}"})
                continue
            orig_id = str(meta.get("orig_id", raw["id"]))
            split = meta.get(SPLIT) if meta.get(SPLIT) in (TRAIN, TEST) else split_of(group_key(pair, orig_id),
                                                                                     eval_fraction)
            pairs.append(_Pair(pair, raw["id"], raw.get("source", ""), raw.get("license", "unknown"), orig_id,
                               split))
        if len(pairs) == n_before:
            log.warning("%s has no usable records with meta.pair (is it a reader's output?)", m)
    return pairs


class _Pools:
    """Indexes of the pairs by what each task needs."""

    def __init__(self, pairs: list[_Pair], icl_min: int, subject_min: int):
        self.captioned: dict[str, list[_Pair]] = defaultdict(list)
        self.joint: list[_Pair] = []
        self.edits: list[_Pair] = []
        groups: dict[tuple, list[_Pair]] = defaultdict(list)
        subjects: dict[str, list[_Pair]] = defaultdict(list)
        for p in pairs:
            d = p.pair
            if d["kind"] == "edit":
                self.edits.append(p)
                key = d.get("group") or " ".join((d.get("instruction") or "").lower().split())
                groups[(d["modality"], key)].append(p)
            else:
                for k in d["media"]:
                    self.captioned[k].append(p)
                if len(d["media"]) > 1:
                    self.joint.append(p)
                if d.get("subject") and "image" in d["media"]:
                    subjects[d["subject"]].append(p)
        # icl: groups with at least icl_min exemplars + 1 query; subjects: subject_min references + 1 target.
        self.icl_groups = [g for _, g in sorted(groups.items()) if len(g) >= icl_min + 1]
        self.subjects = [(s, g) for s, g in sorted(subjects.items()) if len(g) >= subject_min + 1]
        # chains: edit B continues edit A when B's input bytes are A's output bytes.
        by_input: dict[str, list[_Pair]] = defaultdict(list)
        for p in self.edits:
            h = p.pair.get("sha256", {}).get("input")
            if h:
                by_input[h].append(p)
        self.next_edit = {id(p): by_input.get(p.pair.get("sha256", {}).get("output"), []) for p in self.edits}
        self.chain_starts = [p for p in self.edits if self.next_edit[id(p)]]
        # edit + "describe the result" needs the corpus' own output caption (not one derived from the instruction)
        self.describable = [p for p in self.edits if _real_out_caption(p.pair) or p.pair.get("input_caption")]

    def available(self, task: str) -> bool:
        return bool({"caption": self.captioned, "generate": self.captioned, "edit": self.edits,
                     "icl_edit": self.icl_groups, "subject": self.subjects,
                     "multi_round": self.chain_starts or self.describable, "joint": self.joint}[task])


def _real_out_caption(pair: dict) -> Optional[str]:
    """An edit's output caption when the corpus gave it (None when it was derived from the instruction)."""
    return None if pair.get("output_caption_derived") else pair.get("output_caption")


def _icl(pools: _Pools, mix: Mixture, rng: random.Random) -> tuple[list[dict], list[_Pair]]:
    group = rng.choice(pools.icl_groups)
    k = rng.randint(mix.icl_shots[0], min(mix.icl_shots[1], len(group) - 1))
    chosen = rng.sample(group, k + 1)
    shots, query = chosen[:k], chosen[k]
    kind = query.pair["modality"]
    arrow = rng.choice(ICL_ARROWS)
    user: list[dict] = [_txt(rng.choice(ICL_INTROS))]
    for s in shots:
        user += [_media(kind, s.pair["input"]), _txt(arrow), _media(kind, s.pair["output"])]
    user += [_txt(rng.choice(ICL_QUERIES)), _media(kind, query.pair["input"])]
    reply = [_txt(rng.choice(REPLY_PREFIXES)), _media(kind, query.pair["output"], query.pair.get("output_caption"))]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], chosen


def _subject(pools: _Pools, mix: Mixture, rng: random.Random) -> tuple[list[dict], list[_Pair]]:
    subject, group = rng.choice(pools.subjects)
    r = rng.randint(mix.subject_refs[0], min(mix.subject_refs[1], len(group) - 1))
    chosen = rng.sample(group, r + 1)
    refs, target = chosen[:r], chosen[r]
    cap = target.pair["caption"]
    user = [_media("image", p.pair["media"]["image"]) for p in refs]
    user.append(_txt(rng.choice(SUBJECT_INTROS).format(s=subject) + " "
                     + rng.choice(SUBJECT_REQUESTS).format(s=subject, c=_low(cap))))
    reply = [_txt(rng.choice(REPLY_PREFIXES)), _media("image", target.pair["media"]["image"], cap)]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], chosen


def _multi_round(pools: _Pools, mix: Mixture, rng: random.Random) -> tuple[list[dict], list[_Pair]]:
    if pools.chain_starts and (not pools.describable or rng.random() < 0.5):
        chain = [rng.choice(pools.chain_starts)]
        while len(chain) < mix.max_rounds and pools.next_edit[id(chain[-1])]:
            nxt = rng.choice(pools.next_edit[id(chain[-1])])
            if nxt in chain:
                break
            chain.append(nxt)
        kind = chain[0].pair["modality"]
        msgs: list[dict] = []
        for i, p in enumerate(chain):
            user = ([_media(kind, p.pair["input"])] if i == 0 else []) + [_txt(instruction_sentence(p.pair["instruction"]))]
            msgs += [{"role": "user", "content": user},
                     {"role": "assistant", "content": [_txt(rng.choice(REPLY_PREFIXES)),
                                                       _media(kind, p.pair["output"], p.pair.get("output_caption"))]}]
        return msgs, chain
    p = rng.choice(pools.describable)
    d, kind = p.pair, p.pair["modality"]
    edit = edit_messages(kind, d["input"], d["instruction"], d["output"], d.get("output_caption"), rng)
    if _real_out_caption(d) and (not d.get("input_caption") or rng.random() < 0.5):
        # edit, then describe the result
        ask = rng.choice(DESCRIBE_RESULT).format(n=NOUN[kind])
        return edit + [{"role": "user", "content": [_txt(ask)]},
                       {"role": "assistant", "content": [_txt(_sentence(_cap(d["output_caption"])))]}], [p]
    # describe the input first, then edit it (the second user turn refers back to it)
    first = caption_messages(kind, d["input"], d["input_caption"], rng)
    second = [{"role": "user", "content": [_txt(instruction_sentence(d["instruction"]))]}, edit[1]]
    return first + second, [p]


def compose_record(i: int, pools: _Pools, mix: Mixture, tasks: list[str], weights: list[float],
                   split: Optional[str] = None) -> dict:
    """Conversation ``i`` of a composed manifest (deterministic in ``(mix.seed, i)``; the test split's
    conversation ``i`` in ``(mix.seed, "test", i)``). ``split``: written to ``meta.split`` when given."""
    rng = random.Random(f"{mix.seed}:test:{i}" if split == TEST else f"{mix.seed}:{i}")
    task = rng.choices(tasks, weights)[0]
    if task in ("caption", "generate"):
        kind = rng.choice(sorted(pools.captioned))
        p = rng.choice(pools.captioned[kind])
        fn = caption_messages if task == "caption" else generate_messages
        msgs, used = fn(kind, p.pair["media"][kind], p.pair["caption"], rng), [p]
    elif task == "joint":
        p = rng.choice(pools.joint)
        msgs, used = joint_messages(p.pair["media"], p.pair["caption"], rng), [p]
    elif task == "edit":
        p = rng.choice(pools.edits)
        d = p.pair
        msgs, used = edit_messages(d["modality"], d["input"], d["instruction"], d["output"], d.get("output_caption"),
                                   rng), [p]
    elif task == "icl_edit":
        msgs, used = _icl(pools, mix, rng)
    elif task == "subject":
        msgs, used = _subject(pools, mix, rng)
    else:
        msgs, used = _multi_round(pools, mix, rng)
    sources = sorted({p.source for p in used})
    licenses = sorted({p.license for p in used})
    meta: dict[str, Any] = {"task": task, "from": [p.rid for p in used], "orig_ids": [p.orig_id for p in used]}
    if task in ("edit", "icl_edit"):  # the query's edit (the last pair used), in the editing-record schema
        meta[PAIR] = json.loads(json.dumps(used[-1].pair))
    if split is not None:
        meta[SPLIT] = split
    rid = f"{mix.name}-test-{i:08d}" if split == TEST else f"{mix.name}-{i:08d}"
    return {"schema": 1, "id": rid, "source": "+".join(sources), "messages": msgs, "meta": meta,
            "license": "; ".join(licenses)}


def _tasks_of(pools: _Pools, mix: Mixture) -> tuple[list[str], list[float], list[str]]:
    """(tasks with weight > 0 and data, their weights, tasks with weight > 0 but no data)."""
    tasks, weights, unavailable = [], [], []
    for t in TASKS:
        w = float(mix.weights.get(t, 0.0)) if mix.weights else 1.0
        if w <= 0:
            continue
        if pools.available(t):
            tasks.append(t)
            weights.append(w)
        else:
            unavailable.append(t)
    return tasks, weights, unavailable


def _write_records(writer: ShardWriter, out: Path, mix: Mixture, n: int, pools: _Pools, tasks: list[str],
                   weights: list[float], split: Optional[str], counts: Counter, progress: bool) -> list[dict]:
    from tqdm import tqdm

    try:
        desc = f"compose {mix.name}" + (" (test)" if split == TEST else "")
        for i in tqdm(range(n), desc=desc, unit="conv", disable=not progress):
            rec = compose_record(i, pools, mix, tasks, weights, split)
            if mix.relative_paths:
                for msg in rec["messages"]:
                    for part in msg["content"]:
                        if "path" in part:
                            part["path"] = os.path.relpath(part["path"], out)
                pair = rec["meta"].get(PAIR)
                if pair is not None:
                    pair["input"], pair["output"] = (os.path.relpath(pair[k], out) for k in ("input", "output"))
            writer.write(rec)
            counts[rec["meta"]["task"]] += 1
        return writer.commit()
    finally:
        writer.close()


def compose(manifests: Sequence[Union[str, Path]], out: Union[str, Path], mix: Mixture, progress: bool = True) -> dict:
    """Draws ``mix.n`` conversations from pair manifests (module docstring) into ``out``.

    Args:
        manifests: manifests written by the readers (their records carry ``meta.pair``).
        out: the output folder (must not hold a manifest yet).
        mix: the :class:`Mixture`.
        progress: show a tqdm bar.

    Returns:
        The summary (also ``out/summary.json``): ``records``, ``tasks`` (task -> count), ``unavailable``
        (tasks with weight > 0 whose pool is empty), ``pairs`` read, ``skipped`` (reason -> count: pairs whose
        media are missing), ``manifests`` written; with a test split also ``splits``
        (``{"train": {"records", "manifests", "pairs"}, "test": {…}}``).

    Raises:
        BuildError: nothing to draw (no task with weight > 0 has data), or ``out`` already holds a manifest.
    """
    mix.check()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    existing = existing_outputs(out)
    if existing:
        raise BuildError(f"{out} already holds a manifest ({', '.join(existing)}); choose an empty folder")
    skipped: dict[str, list] = {}
    pairs = _load_pairs(manifests, mix.eval_fraction, skipped)
    for reason, items in skipped.items():
        log.warning("%d pairs skipped (%s), e.g. %s", len(items), reason, items[0]["detail"])
    train_pairs = [p for p in pairs if p.split == TRAIN]
    test_pairs = [p for p in pairs if p.split == TEST]
    pools = _Pools(train_pairs, mix.icl_shots[0], mix.subject_refs[0])
    tasks, weights, unavailable = _tasks_of(pools, mix)
    if unavailable:
        log.warning("no data for tasks %s in %d train pairs; they are left out of the mixture", unavailable,
                    len(train_pairs))
    if not tasks and mix.n > 0:
        wanted = sorted(t for t, w in (mix.weights or dict.fromkeys(TASKS, 1.0)).items() if w > 0)
        raise BuildError(f"none of the tasks with weight > 0 ({wanted}) "
                         f"has data in {[str(m) for m in manifests]} ({len(train_pairs)} train pairs)")
    eval_n = mix.eval_n
    if eval_n is None:
        eval_n = -(-mix.n * len(test_pairs) // len(pairs)) if test_pairs else 0
    test_pools = _Pools(test_pairs, mix.icl_shots[0], mix.subject_refs[0])
    test_tasks, test_weights, test_unavailable = _tasks_of(test_pools, mix)
    if eval_n > 0 and not test_tasks:
        raise BuildError(f"eval_n = {eval_n} test conversations asked for, but none of the tasks with weight > 0 "
                         f"has data in the {len(test_pairs)} test pairs; raise eval_fraction or set eval_n=0")
    counts: Counter = Counter()
    test_counts: Counter = Counter()
    shards = _write_records(ShardWriter(out, mix.shard_size), out, mix, mix.n, pools, tasks, weights,
                            TRAIN if test_pairs or eval_n else None, counts, progress)
    test_shards: list[dict] = []
    if eval_n > 0:
        test_shards = _write_records(ShardWriter(out, mix.shard_size, prefix=SPLIT_PREFIX[TEST]), out, mix, eval_n,
                                     test_pools, test_tasks, test_weights, TEST, test_counts, progress)
    summary = {"name": mix.name, "source": "conversations", "records": mix.n, "pairs": len(pairs),
               "tasks": dict(sorted(counts.items())), "unavailable": unavailable,
               "skipped": {k: len(v) for k, v in sorted(skipped.items())},
               "examples": {k: v[:5] for k, v in sorted(skipped.items())},
               "inputs": [str(Path(m).resolve()) for m in manifests], "manifests": [s["file"] for s in shards],
               "mixture": dataclasses.asdict(mix)}
    if test_pairs or eval_n:
        summary[SUMMARY_SPLITS] = {
            TRAIN: {"records": mix.n, "pairs": len(train_pairs), "manifests": [s["file"] for s in shards],
                    "tasks": dict(sorted(counts.items()))},
            TEST: {"records": eval_n, "pairs": len(test_pairs), "manifests": [s["file"] for s in test_shards],
                   "tasks": dict(sorted(test_counts.items())), "unavailable": test_unavailable}}
    write_json(out / "summary.json", summary)
    log.info("composed %d conversations %s (+ %d test %s) -> %s", mix.n, dict(counts), eval_n, dict(test_counts), out)
    return summary
