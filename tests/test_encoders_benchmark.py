"""benchmarks/encode.py runs on the tiny encoder and writes its JSON."""
from __future__ import annotations

import json

from .conftest import load_benchmark


def _load_benchmark():
    return load_benchmark("encode")


def test_encode_benchmark_tiny(tmp_path):
    out = tmp_path / "encode.json"
    result = _load_benchmark().main(["--encoders", "tiny", "--batch", "4", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["encoders"].keys() == {"tiny"} == result["encoders"].keys()
    for kind in ("image", "audio_clip"):
        r = saved["encoders"]["tiny"][kind]
        assert r["batched_per_s"] > 0 and r["one_at_a_time_per_s"] > 0
        assert abs(r["speedup"] - r["batched_per_s"] / r["one_at_a_time_per_s"]) < 1e-6
