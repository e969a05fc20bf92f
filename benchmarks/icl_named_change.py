"""Where do in-context edits fail: in reading the change off the exemplar pairs, or in drawing it? Side by side for
every shot count of a finished ``codi2 eval --suite world`` run: the output right or wrong against the change the
reply's words name (the world's replies say it before the output: "The change makes it green. Here it is:"), and
for a change named wrong, what was named instead: a value the first exemplar pair shares (``A`` and ``A'`` of
A : A' :: B : ?, so the "after" picture described rather than the difference), the first exemplar's old value (the
change read backwards), a value the query already has, another value, or nothing. No model is run; it reads the
run's ``results.json`` and the records' ``meta`` from their manifests.

    python benchmarks/icl_named_change.py --results runs/mini/eval100/results.json \
        --data runs/mini/data/test2400 --out icl_named_change.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMED_RIGHT = "the change"
KINDS = (NAMED_RIGHT, "a value the exemplar pair shares", "the exemplar's old value", "a value the query has",
         "another value", "nothing")


def named_kind(text: str, meta: dict) -> str:
    """What the reply's first stated attribute value is, relative to the record (one of ``KINDS``)."""
    from data_builders.world.suite import edit_named
    from data_builders.world.world import parse_caption

    if edit_named(text, meta["edits"], parse_caption):
        return NAMED_RIGHT
    said = parse_caption(text or "")
    if not said:
        return "nothing"
    attr, value = next(iter(said.items()))  # the first value the reply states: the change, in the world's replies
    before, after, query = (meta["inputs"][i]["attrs"] for i in (0, 1, -1))
    if query.get(attr) == value:
        return "a value the query has"
    if before.get(attr) == value:
        return "a value the exemplar pair shares" if after.get(attr) == value else "the exemplar's old value"
    return "another value"


def records(data: Sequence[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for d in data:
        manifest = Path(d) / "manifest.jsonl" if Path(d).is_dir() else Path(d)
        if not manifest.is_file():
            raise FileNotFoundError(f"--data {d}: no manifest.jsonl there (the manifests the eval read)")
        for line in manifest.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[r["id"]] = r["meta"]
    return out


def run(results: str, data: Sequence[str]) -> dict:
    res = json.loads(Path(results).read_text())
    if res.get("suite") != "world":
        raise ValueError(f"{results}: suite {res.get('suite')!r}; this reads `codi2 eval --suite world` results")
    metas = records(data)
    cells: dict[tuple[str, int], Counter] = {}
    for s in res["samples"]:
        if s["task"] not in ("icl_edit_image", "icl_edit_audio"):
            continue
        rid = s["id"].split("/", 1)[1] if "/" in s["id"] else s["id"]
        if rid not in metas:
            raise KeyError(f"record {rid} of {results} is in none of --data {list(data)}")
        kind = named_kind(s["runs"]["main"].get("text", ""), metas[rid])
        right = "right" if s["metrics"]["exact"] == 1.0 else "wrong"
        cells.setdefault((s["task"], s["shots"]), Counter())[(kind, right)] += 1
    table: dict[str, dict] = {}
    for (task, shots), c in sorted(cells.items()):
        n = sum(c.values())
        wrong = sum(v for (k, r), v in c.items() if r == "wrong")
        named_wrong = sum(v for (k, r), v in c.items() if r == "wrong" and k != NAMED_RIGHT)
        table.setdefault(task, {})[str(shots)] = {
            "n": n, "output_right": (n - wrong) / n,
            "change_named_right": sum(v for (k, _), v in c.items() if k == NAMED_RIGHT) / n,
            "output_right_when_named_right": _ratio(c[(NAMED_RIGHT, "right")],
                                                    c[(NAMED_RIGHT, "right")] + c[(NAMED_RIGHT, "wrong")]),
            "wrong_outputs": wrong, "wrong_outputs_with_the_change_named_wrong": named_wrong,
            "named": {k: {"output_right": c[(k, "right")], "output_wrong": c[(k, "wrong")]} for k in KINDS
                      if c[(k, "right")] + c[(k, "wrong")]}}
    return {"benchmark": "icl_named_change", "results": str(results), "data": [str(d) for d in data],
            "model": res.get("config", {}).get("model"), "tasks": table}


def _ratio(a: int, b: int) -> Optional[float]:
    return a / b if b else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="results.json of a `codi2 eval --suite world` run")
    p.add_argument("--data", nargs="+", required=True, help="the manifests (or their folders) that run read")
    p.add_argument("--out", help="write the JSON here")
    a = p.parse_args(argv)
    r = run(a.results, a.data)
    for task, rows in r["tasks"].items():
        for k, row in rows.items():
            print(f"{task} {k}-shot: output right {row['output_right']:.0%}, change named right "
                  f"{row['change_named_right']:.0%}; {row['wrong_outputs_with_the_change_named_wrong']} of "
                  f"{row['wrong_outputs']} wrong outputs named the change wrong; named: {row['named']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
