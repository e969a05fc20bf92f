"""benchmarks/icl_named_change.py splits an in-context run's wrong outputs by the change the reply named."""
from __future__ import annotations

import json

import pytest

from .conftest import load_benchmark


def _load_benchmark():
    return load_benchmark("icl_named_change")


def _meta(edit_attr: str, value: str, first: dict, query: dict) -> dict:
    after = {**first, edit_attr: value}
    return {"task": "icl_edit_image", "shots": 1, "edits": [{"attr": edit_attr, "value": value}],
            "inputs": [{"modality": "image", "attrs": first}, {"modality": "image", "attrs": after},
                       {"modality": "image", "attrs": query}]}


def test_named_change_table_on_a_hand_made_run(tmp_path):
    bench = _load_benchmark()
    first = {"shape": "circle", "colour": "yellow", "size": "small", "position": "left"}
    query = {"shape": "star", "colour": "red", "size": "large", "position": "top"}
    metas = {"r0": _meta("shape", "square", first, query), "r1": _meta("shape", "square", first, query),
             "r2": _meta("colour", "green", first, query), "r3": _meta("colour", "green", first, query),
             "r4": _meta("size", "small", first, query), "r5": _meta("colour", "green", first, query)}
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps({"id": k, "meta": m}) + "\n" for k, m in metas.items()))
    replies = {"r0": ("The change makes it a square. Here it is:", 1.0),  # named right, drawn right
               "r1": ("The change makes it yellow. Here it is:", 0.0),  # the after picture's colour, not the change
               "r2": ("The change makes it green. Here it is:", 0.0),  # named right, drawn wrong
               "r3": ("The change makes it red. Here it is:", 0.0),  # the query's own colour
               "r4": ("Here it is:", 0.0),  # nothing named
               "r5": ("The change makes it yellow. Here it is:", 0.0)}  # the change read backwards
    samples = [{"id": f"k1/{k}", "task": "icl_edit_image", "shots": 1, "metrics": {"exact": v},
                "runs": {"main": {"text": t}}} for k, (t, v) in replies.items()]
    samples.append({"id": "other", "task": "gen_image", "shots": 0, "metrics": {"exact": 0.0},
                    "runs": {"main": {"text": ""}}})
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"suite": "world", "config": {"model": "m"}, "samples": samples}))
    out = tmp_path / "t.json"
    assert bench.main(["--results", str(res), "--data", str(tmp_path), "--out", str(out)]) == 0
    row = json.loads(out.read_text())["tasks"]["icl_edit_image"]["1"]
    assert row["n"] == 6 and row["output_right"] == 1 / 6 and row["change_named_right"] == 2 / 6
    assert row["output_right_when_named_right"] == 0.5
    assert (row["wrong_outputs"], row["wrong_outputs_with_the_change_named_wrong"]) == (5, 4)
    assert row["named"] == {"the change": {"output_right": 1, "output_wrong": 1},
                            "a value the exemplar pair shares": {"output_right": 0, "output_wrong": 1},
                            "the exemplar's old value": {"output_right": 0, "output_wrong": 1},
                            "a value the query has": {"output_right": 0, "output_wrong": 1},
                            "nothing": {"output_right": 0, "output_wrong": 1}}
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "manifest.jsonl").write_text(json.dumps({"id": "zz", "meta": metas["r0"]}) + "\n")
    with pytest.raises(KeyError, match="r0"):  # records of the run missing from --data
        bench.run(str(res), [str(tmp_path / "m2")])
    with pytest.raises(FileNotFoundError, match="no manifest.jsonl"):
        bench.run(str(res), [str(tmp_path / "nowhere")])
    res.write_text(json.dumps({"suite": "image-edit", "samples": []}))
    with pytest.raises(ValueError, match="suite 'image-edit'"):
        bench.run(str(res), [str(tmp_path)])
