"""Feature loss by dialogue round on held-out records: are the later rounds of an editing dialogue learned as
well as the first? Side by side in one run, each round's loss relative to the first round's.

The model reads each held-out conversation with its ground-truth replies (teacher forcing, as in training) and
the feature loss of every output span is grouped by the assistant reply it is in (the trainer logs the same
split as ``loss/feature/<modality>/reply<k>``). No decoding: a few seconds per hundred dialogues on a CPU.

    python benchmarks/round_losses.py --model checkpoints/codi2-mini --data runs/mini/data/test2400 \
        --tasks multi_round_edit edit_image edit_audio --n 150 --threads 1 --out benchmarks/results/round_losses.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import torch


def run(model_dir: str, data: str, tasks: Sequence[str], n: int, batch: int = 10, threads: int = 0) -> dict:
    """Per task (``meta.task``; ``""`` for every record): the first ``n`` records' feature loss by reply."""
    from codi2.pipeline import CoDi2Pipeline

    if threads:
        torch.set_num_threads(threads)
    model = CoDi2Pipeline.from_pretrained(model_dir, device="cpu").model.eval()
    t = time.perf_counter()
    out = {task: task_losses(model, data, task, n, batch) for task in tasks}
    return {"benchmark": "round_losses", "model": model_dir, "data": str(data), "tasks": out,
            "seconds": round(time.perf_counter() - t, 2), "torch_threads": torch.get_num_threads(),
            "machine": platform.platform()}


def task_losses(model, data: str, task: str, n: int, batch: int) -> dict:
    from codi2.data import parse_record, read_manifest

    manifest = Path(data) / "manifest.jsonl" if Path(data).is_dir() else Path(data)
    recs = [parse_record(raw, manifest.parent, line=i) for i, raw in read_manifest(manifest)
            if not task or (raw.get("meta") or {}).get("task") == task][:n]
    if not recs:
        raise ValueError(f"--data {data}: no records{f' of task {task!r}' if task else ''}")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for i in range(0, len(recs), batch):
            b = model.collate([r.messages for r in recs[i:i + batch]])
            parts = model(b).parts
            for m, s in b.outputs.items():
                for r in sorted(set(s.reply.tolist())):
                    k = int((s.reply == r).sum())
                    # one round in this batch: the per-round key is not logged, the modality's loss is that round's
                    v = parts.get(f"feature/{m.value}/reply{r}", parts[f"feature/{m.value}"])
                    key = f"{m.value}/reply{r}"
                    sums[key] = sums.get(key, 0.0) + v * k
                    counts[key] = counts.get(key, 0) + k
    rows: dict[str, dict] = {}
    for key in sorted(sums):
        m, r = key.split("/")
        mean = sums[key] / counts[key]
        first = sums[f"{m}/reply1"] / counts[f"{m}/reply1"] if f"{m}/reply1" in sums else None
        rows[key] = {"loss": round(mean, 6), "spans": counts[key],
                     "vs_reply1": round(mean / first, 3) if first else None}
    return {"records": len(recs), "feature_loss": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/codi2-mini")
    p.add_argument("--data", required=True, help="a manifest or its folder (held-out records)")
    p.add_argument("--tasks", nargs="+", default=["multi_round_edit"],
                   help="meta.task values, each measured on its own ('' for every record)")
    p.add_argument("--n", type=int, default=150, help="records per task")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="round_losses.json")
    a = p.parse_args(argv)
    res = run(a.model, a.data, a.tasks, a.n, a.batch, a.threads)
    for task, r in res["tasks"].items():
        for k, row in r["feature_loss"].items():
            print(f"{task or 'all'} {k}: feature loss {row['loss']:.5f} over {row['spans']} spans, "
                  f"{row['vs_reply1']}x reply 1")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
