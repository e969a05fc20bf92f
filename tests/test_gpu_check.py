"""benchmarks/gpu_check.py --tiny: every section runs on the CPU through the same code as on a GPU, and the JSON
holds measured figures (positive, finite) where CUDA is not needed and a reason where it is.

The DeepSpeed sections are marked slow: on the CPU, DeepSpeed first compiles its shared-memory communication op
(minutes while other jobs build it too), as in ``tests/test_train.py``."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
FAST = ["peaks", "llm_decode", "lora_train", "qlora_train", "chat_turn", "decoders", "llm_decode_compile"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _run(tmp_path: Path, sections: list[str]) -> dict:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--only", *sections], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    meta = r["meta"]
    assert meta["tiny"] is True and meta["config"] == "tiny"
    assert meta["versions"]["torch"] == torch.__version__ and meta["started_utc"].endswith("+00:00")
    assert meta["device"] and _positive(meta["wall_s"]) and meta["complete"] is True
    assert list(r["sections"]) == sections
    md = out.with_suffix(".md").read_text()
    assert "| figure | value |" in md
    return r


def test_gpu_check_tiny_writes_every_figure(tmp_path):
    r = _run(tmp_path, FAST)
    s, d = r["sections"], r["derived"]
    for name, sec in s.items():
        if name != "qlora_train":
            assert sec["status"] == "ok", (name, sec)
    assert s["qlora_train"]["status"] == "skipped" and "CUDA" in s["qlora_train"]["skipped"]

    assert _positive(s["peaks"]["copy"]["bandwidth_gb_s"]) and _positive(s["peaks"]["matmul"]["tflop_s"])
    decode = (("llm_decode", ("eager", "static_cache")), ("llm_decode_compile", ("static_cache_compiled",)))
    for sec, variants in decode:
        for v in variants:
            run = s[sec][v]
            assert run["tokens"] == run["new_tokens"] > 1, (sec, v, run)
            assert _positive(run["decode_tokens_per_s"]) and 0 < run["ttft_s"] < run["total_s"], (sec, v, run)
            assert _positive(d[f"decode_{v}_fraction_of_hbm_bound"])
    assert _positive(d["decode_hbm_bound_tokens_per_s"])

    lt = s["lora_train"]
    assert lt["micro_batch"] >= 1 and all(t["fits"] for t in lt["search"])
    for k in ("step_s", "tokens_per_s", "model_tflop_s", "loss"):
        assert _positive(lt[k]), (k, lt[k])
    assert lt["flop_count"]["lora_params"] > 0 and _positive(d["lora_train_mfu"])
    assert _positive(lt["memory"]["process_peak_rss_gib"])
    for prof in (lt["profile_one_step"], s["llm_decode"]["profile_eager_16_tokens"]):
        assert _positive(prof["busy_s"]) and prof["top_ops"] and all(o["self_s"] >= 0 for o in prof["top_ops"]), prof

    chat = s["chat_turn"]
    for k in ("cold", "warm"):
        t = chat[k]
        assert t["images"] == 1 and 0 < t["ttft_s"] <= t["time_to_image_s"] <= t["total_s"], t
    for m in ("image", "audio", "video"):
        dec = s["decoders"][m]
        assert _positive(dec["offload_none"]["seconds_per_output"]) and _positive(dec["offload_none"]["load_s"])
        assert "CUDA" in dec["offload_model"]["skipped"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "decode eager" in md and "chat turn (warm" in md


@pytest.mark.slow
def test_gpu_check_tiny_deepspeed_steps(tmp_path):
    r = _run(tmp_path, ["deepspeed_zero2", "deepspeed_zero3"])
    for stage in (2, 3):
        ds = r["sections"][f"deepspeed_zero{stage}"]
        assert ds["status"] == "ok", ds
        assert ds["zero_stage_engine"] == stage and ds["world_size"] == 1
        assert _positive(ds["step_s"]) and _positive(ds["tokens_per_s"]), ds
        assert all(st["stepped"] and not st["skipped"] and math.isfinite(st["loss"]) for st in ds["steps"])
    assert "ZeRO-3" in (tmp_path / "gpu_check.md").read_text()
