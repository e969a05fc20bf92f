"""benchmarks/heldout_by_frame.py splits a held-out-frames world run by the frame each request came from."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import load_benchmark


def _sample(sid: str, task: str, prompt: str, value: float, metric: str = "acc") -> dict:
    return {"id": sid, "task": task, "shots": 0, "metrics": {metric: value},
            "runs": {"main": {"prompt": prompt, "text": "", "media": []}}}


def test_requests_are_told_by_frame_and_paired_with_their_template_records(tmp_path):
    bench = load_benchmark("heldout_by_frame")
    from data_builders.world import grammar as G

    # every held-out frame of every task, through the grammar's surface noise, is found again (bar a typo)
    rng = np.random.default_rng(0)
    found = total = 0
    for task, sides in G.FRAMES.items():
        if task in ("icl_intro", "icl_query", "round", "two", "two_values"):
            continue
        for frame in sides["heldout"]:
            for _ in range(5):
                text = G.surface(frame.format(x="a small red circle", m="moving up", c="blue", w="on the left"),
                                 rng, "heldout")
                total += 1
                found += bench.match_frame(task, text) == frame
    assert found >= 0.85 * total
    assert bench.match_frame("caption_image", "Caption this image.") == bench.UNMATCHED  # a train frame
    held = {"world-test-0-heldout-000001": _sample("world-test-0-heldout-000001", "caption_audio",
                                                   "Describe the noise.", 0.0),
            "world-test-0-heldout-000002": _sample("world-test-0-heldout-000002", "caption_audio",
                                                   "okay so, describe the noise. thx", 1.0),
            "world-test-0-heldout-000003": _sample("world-test-0-heldout-000003", "caption_audio",
                                                   "What's making that sound?", 1.0),
            "world-test-0-heldout-000004": _sample("world-test-0-heldout-000004", "edit_audio", "boost it", 0.0,
                                                   "exact")}
    tmpl = {f"world-test-0-00000{i}": _sample(f"world-test-0-00000{i}", "caption_audio", "What makes this sound?",
                                              v) for i, v in ((1, 1.0), (2, 0.5), (3, 1.0))}
    for name, obj in (("h.json", {"samples": list(held.values())}), ("t.json", {"samples": list(tmpl.values())})):
        (tmp_path / name).write_text(json.dumps(obj))
    assert bench.main(["--heldout", str(tmp_path / "h.json"), "--template", str(tmp_path / "t.json"),
                       "--out", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["by_task"]
    assert list(rows) == ["caption_audio"]  # edit tasks have no request frames of their own
    worst, best = rows["caption_audio"]
    assert worst == {"frame": "Describe the noise.", "n": 2, "metric": "acc", "heldout": 0.5,
                     "template_same_records": 0.75}
    assert best["frame"] == "What's making that sound?" and best["heldout"] == 1.0
    with pytest.raises(ValueError, match="samples"):
        bench.main(["--heldout", str(tmp_path / "out.json")])
