"""Running a suite: generate every sample, score it from its files, aggregate with bootstrap CIs, write results.

Output folder::

    outputs/<sample id>.<run>.<i>.<ext>   every generated medium
    samples.jsonl                         one line per finished sample (id, task, shots, and per run the exact
                                          prompt — its parts in order, its text, its media in order — the reply
                                          text and output paths; per-sample metrics), appended as samples
                                          finish; --resume reads it
    results.json                          config, fingerprints, versions, per-sample records, aggregates
    report.md, plot_shots.png, plot_tasks.png
    run.json                              timings (kept out of results.json so that file is reproducible)

Determinism: each sample's generation seed is derived from ``(seed, sample id, run)``, so a sample's outputs do
not depend on which other samples ran before it; metrics are computed from the saved files and rounded to 6
decimals; results.json is written with sorted keys. Same seed, model and data on CPU -> byte-identical
``metrics`` and ``samples`` sections (and a byte-identical file for the same ``--out``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from tqdm import tqdm

from .. import io
from . import metrics as M
from .registry import get_suite, suite_names
from .suites import (
    EXT,
    AudioEditSuite,
    AudioScorer,
    DreamBenchSuite,
    Generated,
    ImageEditSuite,
    ImageScorer,
    Sample,
    Suite,
)

log = logging.getLogger(__name__)

RESULTS_SCHEMA = 1
DECIMALS = 6
SAMPLES_FILE, RESULTS_FILE, RUN_FILE = "samples.jsonl", "results.json", "run.json"
BIG_FILE = 64 * 2**20  # files above this are fingerprinted by size + first and last MiB


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run (stored in results.json; --resume checks it is unchanged)."""

    suite: str
    model: str
    data: "str | list[str]"  # suites registered with many_data (e.g. world) also take several manifests
    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4])
    n: Optional[int] = None  # items per shot count (world: per task); None = all
    seed: int = 0
    force_output: bool = False  # start each reply with the expected media tokens (only for untrained test models)
    clip: Optional[str] = None
    dino: Optional[str] = None
    audio_classifier: Optional[str] = None  # transformers dir, or None / "imagebind" for the model's encoder
    fad_model: Optional[str] = None
    judges: Optional[str] = None
    max_new_tokens: Optional[int] = None
    temperature: Optional[float] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    n_boot: int = 1000
    pixel_size: int = 256
    lsd_time_offset: int = 0
    exemplars: Optional[list[str]] = None  # image-edit / audio-edit: train manifests for k-shot exemplars

    def __post_init__(self) -> None:
        spec = get_suite(self.suite)  # ValueError naming the registered suites
        if not self.shots or any(k < 0 for k in self.shots):
            raise ValueError(f"shots must be a non-empty list of counts >= 0, got {self.shots}")
        if isinstance(self.data, (list, tuple)):
            if not self.data:
                raise ValueError("--data needs at least one path")
            if not spec.many_data and len(self.data) != 1:
                many = [n for n in suite_names() if get_suite(n).many_data]
                which = (f"the {many[0]} suite reads" if len(many) == 1 else f"the suites {', '.join(many)} read")
                raise ValueError(f"the {self.suite} suite reads one --data, got {len(self.data)}; only {which} "
                                 "several manifests")
            self.data = str(self.data[0]) if len(self.data) == 1 else [str(d) for d in self.data]


# ----------------------------------------------------------------------------- small helpers
def rounded(x: float) -> float:
    """Fixed precision for everything written to results (6 decimals; -0.0 -> 0.0)."""
    return round(float(x), DECIMALS) + 0.0


def sample_seed(seed: int, sample_id: str, run: str) -> int:
    return int(hashlib.sha256(f"{seed}:{sample_id}:{run}".encode()).hexdigest()[:8], 16) % 2**31


def _file_digest(p: Path) -> str:
    h = hashlib.sha256()
    size = p.stat().st_size
    with open(p, "rb") as f:
        if size <= BIG_FILE:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            h.update(f"size={size}".encode())
            h.update(f.read(2**20))
            f.seek(size - 2**20)
            h.update(f.read(2**20))
    return h.hexdigest()


def fingerprint(files: Iterable[Path], root: Optional[Path] = None) -> str:
    """sha256 over (name relative to ``root`` or to the files' common folder, content digest) of the files.

    Names are taken before symlinks are followed, so a model folder whose parts are links (to shared weights)
    fingerprints like a copy of it."""
    files = sorted({Path(os.path.abspath(f)) for f in files})
    if not files:
        return "empty"
    base = Path(os.path.abspath(root)) if root is not None else Path(os.path.commonpath([str(f.parent) for f in files]))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(os.path.relpath(f, base)).as_posix()}\0{_file_digest(f)}\n".encode())
    return h.hexdigest()


def dir_fingerprint(d: "str | Path") -> str:
    d = Path(d)
    files = [Path(top) / n for top, _, names in os.walk(d, followlinks=True) for n in names]  # rglob skips linked dirs
    return fingerprint([p for p in files if p.is_file()], d)


def versions() -> dict[str, str]:
    from importlib import metadata

    from .. import __version__

    out = {"python": platform.python_version(), "codi2": __version__}
    for pkg in ("torch", "transformers", "diffusers", "peft", "numpy", "scipy", "pillow", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _safe(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]", "_", sample_id)


def write_json(path: Path, obj: Any) -> None:
    """results.json and run.json: sorted keys, so the same run writes the same bytes (written atomically)."""
    io.write_json(path, obj, sort_keys=True)


# ----------------------------------------------------------------------------- aggregation
def summarize(values: Sequence[float], n_boot: int, seed: int) -> dict[str, float]:
    mean, lo, hi = M.bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": rounded(mean), "ci_low": rounded(lo), "ci_high": rounded(hi), "n": len(values)}


def group_metrics(records: Sequence[dict], n_boot: int, seed: int) -> dict[str, dict]:
    """Mean and 95% bootstrap CI of every per-sample metric over ``records`` (samples lacking a metric skip it)."""
    names = sorted({k for r in records for k in r["metrics"]})
    return {k: summarize([r["metrics"][k] for r in records if k in r["metrics"]], n_boot, seed) for k in names}


_SHOT_ID = re.compile(r"^k(\d+)/(.+)$")


def paired_shots(records: Sequence[dict], n_boot: int, seed: int) -> dict[str, dict]:
    """The same items at more shots against the fewest: ``{"<k0>-><k>": {metric: {mean, ci_low, ci_high, n, better,
    worse}}}`` of the per-item differences (metric at k minus at k0) over the items run at both counts.

    An item is a sample id without its ``k<shots>/`` prefix (every suite that runs one item at several shot counts
    names its samples so). The bootstrap CI is of the mean paired difference; ``better`` / ``worse`` count the items
    whose value rose / fell. Empty when no item ran at two counts.
    """
    by_item: dict[str, dict[int, dict]] = {}
    for r in records:
        m = _SHOT_ID.match(r["id"])
        if m and int(m.group(1)) == r["shots"]:
            by_item.setdefault(m.group(2), {})[r["shots"]] = r["metrics"]
    shots = sorted({k for v in by_item.values() for k in v})
    out: dict[str, dict] = {}
    for k in shots[1:]:
        pairs = [(v[shots[0]], v[k]) for v in by_item.values() if shots[0] in v and k in v]
        if not pairs:
            continue
        group = {}
        for name in sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))):
            diffs = [b[name] - a[name] for a, b in pairs]
            group[name] = {**summarize(diffs, n_boot, seed), "better": sum(d > 0 for d in diffs),
                           "worse": sum(d < 0 for d in diffs)}
        out[f"{shots[0]}->{k}"] = group
    return out


def aggregate(records: Sequence[dict], n_boot: int, seed: int, in_context_only: bool = False) -> dict[str, Any]:
    """``overall``, ``by_shots``, ``paired_shots`` (:func:`paired_shots`) and ``by_task`` aggregates of per-sample
    metrics.

    ``in_context_only``: ``by_shots`` covers only tasks that have in-context samples (shots > 0); the world
    suite uses it so that its shots curve is the in-context editing tasks, not a mix of every task at 0 shots.
    """
    tasks = sorted({r["task"] for r in records})
    icl = {r["task"] for r in records if r["shots"] > 0}
    shot_records = [r for r in records if r["task"] in icl] if in_context_only else list(records)
    shots = sorted({r["shots"] for r in shot_records})
    return {
        "overall": group_metrics(records, n_boot, seed),
        "by_shots": {str(k): group_metrics([r for r in shot_records if r["shots"] == k], n_boot, seed) for k in shots},
        "paired_shots": paired_shots(shot_records, n_boot, seed),
        "by_task": {t: group_metrics([r for r in records if r["task"] == t], n_boot, seed) for t in tasks},
    }


def by_breakdown(records: Sequence[dict], keys: dict[str, dict[str, str]], n_boot: int, seed: int) -> list[dict]:
    """Each task's metrics split by what its samples vary by (``keys``: sample id -> ``Suite.breakdown``, e.g.
    ``{"changed": "position"}``): rows ``{"by", "value", "task", "shots", "metrics"}`` in (by, task, shots, value)
    order. Shot counts stay apart, since a sample at k shots and the same item at 2k are not independent."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        for name, value in keys.get(r["id"], {}).items():
            groups.setdefault((name, r["task"], r["shots"], value), []).append(r)
    return [{"by": name, "task": task, "shots": shots, "value": value,
             "metrics": group_metrics(groups[(name, task, shots, value)], n_boot, seed)}
            for name, task, shots, value in sorted(groups)]


def set_metrics(suite: Suite, samples: Sequence[Sample], gens: Sequence[dict[str, Generated]]) -> dict[str, Any]:
    """Set-level metrics (FD, FAD …) overall and per shot count; no CI (point values)."""
    items = list(zip(samples, gens))
    out: dict[str, Any] = {"overall": {k: rounded(v) for k, v in suite.score_set(items).items()}, "by_shots": {}}
    for k in sorted({s.shots for s in samples}):
        out["by_shots"][str(k)] = {n: rounded(v) for n, v in suite.score_set([x for x in items if x[0].shots == k]).items()}
    if not out["overall"] and not any(out["by_shots"].values()):
        return {}
    return out


# ----------------------------------------------------------------------------- building suites
def build_suite(cfg: EvalConfig, model: Any = None) -> Suite:
    """The suite named by ``cfg`` with its backbones loaded (``model``: the loaded CoDi2Model, for ImageBind
    defaults and suites that use the model's encoder). Suites come from :mod:`codi2.eval.registry`."""
    return get_suite(cfg.suite).build(cfg, model)


def backbone_fingerprints(cfg: EvalConfig) -> dict[str, str]:
    out = {}
    for name in ("clip", "dino", "audio_classifier", "fad_model", "judges"):
        v = getattr(cfg, name)
        if v is not None and v != "imagebind" and Path(v).is_dir():
            out[name] = dir_fingerprint(v)
    return out


# ----------------------------------------------------------------------------- generation
def _generate(pipe: Any, sample: Sample, cfg: EvalConfig, out: Path) -> tuple[dict[str, dict], float]:
    """Runs every run of ``sample``; saves media under ``out/outputs``. Returns ({run: record}, seconds)."""
    from ..conversation import Message, Part
    from ..generation import SamplingOptions
    from ..media import save_audio, save_image, save_video
    from ..modality import Modality

    t0 = time.time()
    runs = {}
    for run in sample.runs:
        prefix = " ".join(Modality(m).open_token for m in run.outputs) if cfg.force_output or run.force else ""
        opts = SamplingOptions(seed=sample_seed(cfg.seed, sample.id, run.name), max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature if run.temperature is None else run.temperature,
                               steps=cfg.steps, guidance=cfg.guidance, prefix=prefix,
                               allowed_outputs=[Modality(m) for m in run.allowed] if run.allowed else None)
        fresh = lambda m: Message(m.role, [dataclasses.replace(p) for p in m.content])  # noqa: E731
        user = fresh(sample.user) if run.prompt is None else Message(sample.user.role, [Part.from_text(run.prompt)])
        history = [fresh(m) for m in sample.history]
        prompt = prompt_record(user, history)
        reply = pipe.chat(user, opts, history)
        media, texts = [], []
        for i, p in enumerate(reply.content):
            if p.type == "text":
                texts.append(p.text)
            elif p.media is not None:
                rel = Path("outputs") / f"{_safe(sample.id)}.{run.name}.{i}.{EXT[p.type]}"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                {"image": save_image, "audio": save_audio, "video": save_video}[p.type](p.media, out / rel)
                media.append([p.type, rel.as_posix()])
        runs[run.name] = {"prompt": prompt, "text": " ".join(texts), "media": media}
    return runs, time.time() - t0


def prompt_record(user: Any, history: Sequence[Any] = ()) -> dict:
    """The exact prompt of a run as samples.jsonl keeps it: the user turn's ``parts`` in order (``{"type":
    "text", "text"}`` / ``{"type": modality, "path"}``), its ``text`` (the text parts joined by a space) and its
    ``media`` in order (``[modality, path]``); ``history``: the earlier turns' parts, when there are any."""
    def parts(m: Any) -> list[dict]:
        return [{"type": "text", "text": p.text} if p.type == "text" else {"type": p.type, "path": str(p.path)}
                for p in m.content]

    out = {"parts": parts(user), "text": " ".join(p.text for p in user.content if p.type == "text"),
           "media": [[p.type, str(p.path)] for p in user.content if p.type != "text"]}
    if history:
        out["history"] = [{"role": m.role, "parts": parts(m)} for m in history]
    return out


def _generated(record: dict, out: Path) -> dict[str, Generated]:
    return {name: Generated(r["text"], [(m, out / p) for m, p in r["media"]]) for name, r in record["runs"].items()}


def _output_rate(sample: Sample, gens: dict[str, Generated]) -> float:
    want = got = 0
    for run in sample.runs:
        produced = [m for m, _ in gens[run.name].media]
        for m in set(run.outputs):
            want += run.outputs.count(m)
            got += min(run.outputs.count(m), produced.count(m))
    return got / want if want else 1.0


def read_jsonl(path: Path) -> dict[str, dict]:
    """Finished samples of an interrupted run (a torn last line from a kill is ignored)."""
    done = {}
    if not path.is_file():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a torn last line (interrupted write)", path)
                continue
            raise ValueError(f"{path}:{i + 1}: not valid JSON; delete the file to start over") from None
        done[r["id"]] = r
    return done


def _config_dict(cfg: EvalConfig) -> dict:
    return dataclasses.asdict(cfg)


def run_eval(cfg: EvalConfig, out_dir: "str | Path", resume: bool = False, device: Optional[str] = None,
             pipeline: Any = None) -> dict:
    """Runs a suite end to end and writes the output folder (see the module docstring). Returns results.json's dict.

    ``pipeline``: an already loaded :class:`~codi2.pipeline.CoDi2Pipeline` of ``cfg.model`` to reuse (several
    suites in one process); by default it is loaded from ``cfg.model``.
    """
    from ..pipeline import CoDi2Pipeline
    from .report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / SAMPLES_FILE
    if jsonl.exists() and not resume:
        raise ValueError(f"{jsonl} exists: pass --resume to continue that run, or choose another --out")
    if resume and (out / RESULTS_FILE).is_file() and jsonl.exists():
        old = json.loads((out / RESULTS_FILE).read_text()).get("config")
        if old is not None and old != _config_dict(cfg):
            diff = sorted(k for k in set(old) | set(_config_dict(cfg)) if old.get(k) != _config_dict(cfg).get(k))
            raise ValueError(f"--resume: the run in {out} used a different config ({', '.join(diff)} differ); "
                             f"use the same options or another --out")
    started = time.time()
    pipe = pipeline if pipeline is not None else CoDi2Pipeline.from_pretrained(cfg.model, device=device)
    suite = build_suite(cfg, pipe.model)
    samples = suite.samples()
    if not samples:
        raise ValueError(f"the {cfg.suite} suite built no samples from {cfg.data} (shots {cfg.shots}, n {cfg.n})")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{cfg.suite}: sample ids are not unique")
    # results.json carries the config early so that --resume can check it
    write_json(out / RESULTS_FILE, {"schema": RESULTS_SCHEMA, "config": _config_dict(cfg), "complete": False})
    done = read_jsonl(jsonl)
    stale = set(done) - set(ids)
    if stale:
        raise ValueError(f"{jsonl} has {len(stale)} samples this config does not make (e.g. {sorted(stale)[0]!r}); "
                         f"use the same options or another --out")
    todo = [s for s in samples if s.id not in done]
    log.info("%s: %d samples, %d already done, %d to generate", cfg.suite, len(samples), len(done), len(todo))
    seconds = []
    with open(jsonl, "a", encoding="utf-8") as f:
        for s in tqdm(todo, desc=f"eval {cfg.suite}", unit="sample", disable=len(todo) < 2):
            runs, dt = _generate(pipe, s, cfg, out)
            seconds.append(dt)
            record = {"id": s.id, "task": s.task, "shots": s.shots, "runs": runs}
            gens = _generated(record, out)
            m = suite.score(s, gens)
            m["output_rate"] = _output_rate(s, gens)
            record["metrics"] = {k: rounded(v) for k, v in sorted(m.items())}
            f.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done[s.id] = record
    records = [done[i] for i in ids]
    gens = [_generated(r, out) for r in records]
    backbones = backbone_fingerprints(cfg)
    for name, folder in suite.backbone_dirs().items():  # those the suite resolved itself (a configured one is done)
        if name not in backbones:
            backbones[name] = dir_fingerprint(folder)
    results = {
        "schema": RESULTS_SCHEMA,
        "suite": cfg.suite,
        "complete": True,
        "config": _config_dict(cfg),
        "fingerprints": {"model": dir_fingerprint(cfg.model), "data": fingerprint(suite.data_files()),
                         "backbones": backbones},
        "versions": versions(),
        "metrics": {**aggregate(records, cfg.n_boot, cfg.seed, suite.by_shots_in_context_only),
                    "by_breakdown": by_breakdown(records, {s.id: suite.breakdown(s) for s in samples}, cfg.n_boot,
                                                 cfg.seed),
                    "set": set_metrics(suite, samples, gens)},
        "samples": records,
    }
    skipped = suite.skipped_records()
    if skipped:
        results["skipped_records"] = dict(sorted(skipped.items()))
        log.info("%s: records of the data not evaluated: %s", cfg.suite, results["skipped_records"])
    targets = suite.targets(records)
    if targets:
        results["metrics"]["targets"] = [{**t, "value": None if t["value"] is None else rounded(t["value"])}
                                         for t in targets]
    write_json(out / RESULTS_FILE, results)
    write_report(results, out)
    write_json(out / RUN_FILE, {"seconds_total": round(time.time() - started, 2), "samples_generated": len(seconds),
                                "seconds_per_sample": round(sum(seconds) / len(seconds), 3) if seconds else None,
                                "device": str(pipe.model.device)})
    return results


# ----------------------------------------------------------------------------- scoring a folder
def _files(d: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    return {p.relative_to(d).with_suffix("").as_posix(): p for p in sorted(d.rglob("*"))
            if p.is_file() and p.suffix.lower() in suffixes}


def score_folder(suite: str, pred: "str | Path", ref: "str | Path", out_dir: "str | Path", *, clip: Optional[str] = None,
                 dino: Optional[str] = None, audio_classifier: Optional[str] = None, fad_model: Optional[str] = None,
                 model: Optional[str] = None, n_boot: int = 1000, seed: int = 0, pixel_size: int = 256,
                 lsd_time_offset: int = 0) -> dict:
    """Scores a folder of any system's outputs against references (no generation).

    image-edit / audio-edit: files are paired by their path relative to ``pred`` / ``ref`` without the suffix
    (``pred/x/001.png`` <-> ``ref/x/001.jpg``). dreambench: ``pred/<subject>/<NN>[anything].png`` where NN is
    the prompt's index in that subject's DreamBench list; ``ref`` is the DreamBench root.
    """
    from .features import ClipFeatures, DinoFeatures, load_audio_backbone
    from .report import write_report
    from .suites import IMAGE_SUFFIXES, dreambench_prompt

    pred, ref, out = Path(pred), Path(ref), Path(out_dir)
    for p, what in ((pred, "--pred"), (ref, "--ref")):
        if not p.is_dir():
            raise FileNotFoundError(f"{what} {p} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    set_level: dict[str, Any] = {}
    audio_suffixes = (".wav", ".flac", ".ogg", ".mp3")
    if suite in ("image-edit", "dreambench"):
        scorer = ImageScorer(ClipFeatures.from_pretrained(clip) if clip else None,
                             DinoFeatures.from_pretrained(dino) if dino else None, pixel_size)
    if suite == "image-edit":
        a, b = _files(pred, IMAGE_SUFFIXES), _files(ref, IMAGE_SUFFIXES)
        names = sorted(set(a) & set(b))
        for n in names:
            records.append({"id": n, "task": Path(n).parent.as_posix() or "all", "shots": 0,
                            "metrics": {k: rounded(v) for k, v in scorer.pair(a[n], b[n]).items()}})
        ref_files = [b[n] for n in names]
    elif suite == "audio-edit":
        clf = load_audio_backbone(audio_classifier, model)
        fad = clf if fad_model == audio_classifier else load_audio_backbone(fad_model, model)
        ascorer = AudioScorer(clf, fad, lsd_time_offset)
        a, b = _files(pred, audio_suffixes), _files(ref, audio_suffixes)
        names = sorted(set(a) & set(b))
        for n in names:
            records.append({"id": n, "task": Path(n).parent.as_posix() or "all", "shots": 0,
                            "metrics": {k: rounded(v) for k, v in ascorer.pair(a[n], b[n]).items()}})
        s = ascorer.sets([a[n] for n in names], [b[n] for n in names])
        set_level = {"overall": {k: rounded(v) for k, v in s.items()}} if s else {}
        ref_files = [b[n] for n in names]
    elif suite == "dreambench":
        db = DreamBenchSuite(ref, scorer, [0], None, seed)
        a = _files(pred, IMAGE_SUFFIXES)
        names = []
        for n, p in a.items():
            m = re.match(r"^([^/]+)/(\d+)", n)
            if m is None or m.group(1) not in db.classes or int(m.group(2)) >= len(db.prompts(m.group(1))):
                log.warning("dreambench score: %s is not <subject>/<prompt index>…; skipped", p)
                continue
            s_, i = m.group(1), int(m.group(2))
            prompt = dreambench_prompt(db.prompts(s_)[i], db.classes[s_])
            records.append({"id": n, "task": s_, "shots": 0,
                            "metrics": {k: rounded(v) for k, v in scorer.subject(p, db.images[s_], prompt).items()}})
            names.append(n)
        ref_files = db.data_files()
    else:
        raise ValueError(f"codi2 eval score supports --suite image-edit, audio-edit or dreambench, got {suite!r}")
    if not records:
        raise ValueError(f"no {suite} outputs in {pred} matched references in {ref}")
    results = {
        "schema": RESULTS_SCHEMA, "suite": suite, "complete": True,
        "config": {"mode": "score", "pred": str(pred), "ref": str(ref), "clip": clip, "dino": dino,
                   "audio_classifier": audio_classifier, "fad_model": fad_model, "n_boot": n_boot, "seed": seed,
                   "pixel_size": pixel_size, "lsd_time_offset": lsd_time_offset},
        "fingerprints": {"pred": fingerprint([p for p in pred.rglob("*") if p.is_file()], pred),
                         "ref": fingerprint(ref_files)},
        "versions": versions(),
        "metrics": {**aggregate(records, n_boot, seed), "set": set_level},
        "samples": records,
    }
    write_json(out / RESULTS_FILE, results)
    write_report(results, out)
    return results
