"""Which held-out wordings fail: a finished ``codi2 eval --suite world`` run on records built with ``--frames
heldout``, split by the request grammar's held-out frame each request came from, with the template-wording run of
the same records beside it. No model is run; it reads the two runs' ``results.json``.

A request is matched to a frame by the frame's words of three or more letters (its slots left out): the first
frame of the task whose words all occur in the request, the frame with most such words first. A request whose
frame cannot be told (a typo in one of those words) is counted as ``unmatched``.

    python benchmarks/heldout_by_frame.py --heldout runs/mini/eval100h/results.json \\
        --template runs/mini/eval100/results.json --out mini_world_heldout_by_frame.json

(the README's two 100-record commands write those folders; the committed copy of the held-out run keeps its
samples, the template run's copy does not)
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from data_builders.world import grammar as G

# the world suite's headline metric per task (the README table's), "exact" for the rest
METRIC = {"caption_image": "acc", "caption_audio": "acc", "caption_video": "acc", "gen_image": "key",
          "gen_video": "key", "image_audio_to_video": "key", "joint_image_audio": "coherence"}
UNMATCHED = "unmatched"


def frame_words(frame: str) -> list[str]:
    """The words of three or more letters of a frame, its slots left out, lower case."""
    return [w for w in re.findall(r"[a-z']+", re.sub(r"\{\w\}", " ", frame.lower())) if len(w) >= 3]


def match_frame(task: str, prompt: str) -> str:
    """The held-out frame of ``task`` that ``prompt`` was written from, or ``UNMATCHED``."""
    words = set(re.findall(r"[a-z']+", prompt.lower()))
    for frame in sorted(G.FRAMES[task]["heldout"], key=lambda f: -len(frame_words(f))):
        need = frame_words(frame)
        if need and all(w in words for w in need):
            return frame
    return UNMATCHED


def _samples(path: "str | Path") -> dict[str, dict]:
    results = json.loads(Path(path).read_text())
    if "samples" not in results:
        raise ValueError(f"{path}: no 'samples' (a world suite results.json has them)")
    return {s["id"]: s for s in results["samples"]}


def _prompt(sample: dict) -> str:
    p = sample["runs"]["main"]["prompt"]
    return p if isinstance(p, str) else p["text"]


def by_frame(heldout: dict[str, dict], template: Optional[dict[str, dict]] = None) -> dict[str, list[dict]]:
    """Per task with grammar frames: one row per held-out frame, its request count, mean metric, and the same
    records' mean in the template run (records are paired by the record index in their ids)."""
    def index(sid: str) -> str:
        return sid.rsplit("-", 1)[-1]

    tmpl = {(s["task"], index(i)): s for i, s in (template or {}).items()}
    groups: dict[str, dict[str, list[tuple[float, Optional[float]]]]] = defaultdict(lambda: defaultdict(list))
    for sid, s in heldout.items():
        task = s["task"]
        if task not in G.FRAMES or "heldout" not in G.FRAMES[task]:
            continue
        metric = METRIC.get(task, "exact")
        value = s["metrics"].get(metric)
        if value is None:
            continue
        twin = tmpl.get((task, index(sid)))
        groups[task][match_frame(task, _prompt(s))].append(
            (value, None if twin is None else twin["metrics"].get(metric)))
    out = {}
    for task in sorted(groups):
        rows = []
        for frame, vals in sorted(groups[task].items(), key=lambda kv: sum(v for v, _ in kv[1]) / len(kv[1])):
            paired = [t for _, t in vals if t is not None]
            rows.append({"frame": frame, "n": len(vals), "metric": METRIC.get(task, "exact"),
                         "heldout": round(sum(v for v, _ in vals) / len(vals), 4),
                         "template_same_records": round(sum(paired) / len(paired), 4) if paired else None})
        out[task] = rows
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heldout", required=True, help="results.json of the run on --frames heldout records")
    p.add_argument("--template", help="results.json of the same records in the templates (optional)")
    p.add_argument("--out", help="write the JSON here (default: print it)")
    args = p.parse_args(argv)
    result = {"benchmark": "heldout_by_frame", "heldout": args.heldout, "template": args.template,
              "by_task": by_frame(_samples(args.heldout), _samples(args.template) if args.template else None)}
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    for task, rows in result["by_task"].items():
        worst = rows[0]
        print(f"{task:22s} worst frame {worst['heldout']:.2f} (n {worst['n']}): {worst['frame']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
