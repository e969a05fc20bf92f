"""The rehearsal's model is the codi2-7b config with dimension overrides only; its multi-node check sorts files by
the node that wrote them."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what the rehearsal must not change: where weights come from, numeric formats, losses, LoRA targets, samplers
NOT_DIMENSIONS = ("path", "weights", "dtype", "loss", "kind", "target_modules", "scheduler", "guidance", "offload",
                  "dropout", "quantization", "gradient_checkpointing", "towers", "temperature", "top_p", "name")


def _leaves(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def test_tiny_overrides_change_dimensions_only(monkeypatch):
    from codi2.config import load_model_config, to_dict
    from train.full_scale import TINY_MODEL_OVERRIDES

    for k in ("CODI2_LLAMA", "CODI2_IMAGEBIND", "CODI2_UNCLIP", "CODI2_AUDIOLDM2", "CODI2_ZEROSCOPE"):
        monkeypatch.setenv(k, f"/weights/{k.lower()}")
    cfg = ROOT / "configs/model/codi2-7b.yaml"
    full = dict(_leaves(to_dict(load_model_config(str(cfg)))))
    toy = dict(_leaves(to_dict(load_model_config(str(cfg), TINY_MODEL_OVERRIDES))))
    changed = sorted(k for k in set(full) | set(toy) if full.get(k) != toy.get(k))
    assert changed, "the overrides change nothing"
    bad = [k for k in changed if any(w in k.split(".")[-1] for w in NOT_DIMENSIONS)
           and not k.split(".")[-2:-1] == ["targets"]]
    assert bad == [], bad
    assert toy["llm.path"] == "/weights/codi2_llama" and toy["encoder.dtype"] == full["encoder.dtype"]


def test_node_writes_sorts_files_by_node(tmp_path):
    from train.rehearse import node_writes

    out, cache = tmp_path / "stage2", tmp_path / "cache"
    files = {out / "logs" / "rank-0.jsonl": 0o644, out / "logs" / "rank-1.jsonl": 0o640,
             out / "checkpoints" / "step-000002" / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt": 0o640,
             cache / "target-image-x" / "ab" / "ab12.safetensors": 0o640, out / "final" / "config.yaml": 0o644}
    for f, mode in files.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
        os.chmod(f, mode)
        if os.geteuid() == 0 and mode == 0o640:
            os.chown(f, -1, 4242)
    got = node_writes(out, cache)
    assert got["ok"] and got["node0_files"] == 2 and sum(got["node1_files_by_kind"].values()) == 3
    bad = out / "final" / "adapter.safetensors"
    bad.write_text("x")
    os.chmod(bad, 0o640)
    if os.geteuid() == 0:
        os.chown(bad, -1, 4242)
    got = node_writes(out, cache)
    assert not got["ok"] and "final/adapter.safetensors" in got["violations"][0]
