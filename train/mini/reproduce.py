"""Does a re-run of the mini recipe reproduce the bundle's components?

Compares what a run folder's component steps report (``runs/mini``: ``encoder.pth.json``, ``llm/pretrain.json``,
``decoders/<m>/train.json``) with the reports the bundle recorded in ``recipe.json`` (``components``), field by field
(losses, held-out retrieval and perplexity, the LLM's sample reply), and their weights with the bundle's:

* a decoder's report holds the steps it went through as a chain (``previous``: the fresh run, then each
  continuation such as the script's ``VID_MORE``); the run's chain is compared with the start of the bundle's, so a
  re-run stopped after its fresh decoder is checked against the bundle's fresh decoder. Its weights are compared only
  when the run went through every step the bundle's did;
* weights are cast to the bundle's storage dtype (float16) before comparing; the bundle leaves out what chat never
  runs (the encoder's text tower), and its LLM carries the media-token rows the trainer stages added, so the run's
  embedding rows are compared with the bundle's first rows.

    python -m train.mini.reproduce runs/mini [--bundle checkpoints/codi2-mini] [--out FILE.json]

Exit status 0 when everything found in the run matches exactly, 1 otherwise (the report says what differs and by how
much), 2 on bad arguments. A bundle made from this run folder's own stage export (``recipe.json`` → ``source`` lies
inside it, as after ``scripts/train_mini.sh`` finished) holds the run's own components: nothing is compared, ``--out``
is left as it is (the comparison made before the bundle was replaced stays), and the exit status is 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from train.mini.bundle import component_reports

DECODER_PHASES: tuple[str, ...] = ("vae", "vocoder", "unet", "text_encoder")
PHASE_FIELDS: tuple[str, ...] = ("steps", "final_mse", "final_loss")
REPORT_FIELDS: dict[str, tuple[str, ...]] = {
    "encoder": ("steps", "final_loss", "retrieval", "evals"),
    "llm": ("steps", "vocab_size", "train_tokens", "final_loss", "val_loss", "val_ppl", "sample"),
}


def _field(run: Any, bundle: Any) -> dict:
    out = {"run": run, "bundle": bundle, "equal": run == bundle}
    if isinstance(run, (int, float)) and isinstance(bundle, (int, float)) and not out["equal"]:
        out["abs_diff"] = abs(float(run) - float(bundle))
    return out


def _chain(report: dict) -> list[dict]:
    """A decoder report's steps, the first (fresh) run first."""
    chain = []
    while isinstance(report, dict):
        chain.insert(0, report)
        report = report.get("previous")
    return chain


def compare_reports(name: str, run: dict, bundle: dict) -> dict:
    """Field-by-field comparison of one component's reports. Returns ``{fields, equal}`` (+ decoders: ``steps``,
    the number of chained steps compared, ``run_steps`` / ``bundle_steps``)."""
    fields: dict[str, dict] = {}
    if name in REPORT_FIELDS:
        for f in REPORT_FIELDS[name]:
            if f in run or f in bundle:
                fields[f] = _field(run.get(f), bundle.get(f))
        return {"fields": fields, "equal": all(v["equal"] for v in fields.values())}
    rc, bc = _chain(run), _chain(bundle)
    for i, (r, b) in enumerate(zip(rc, bc)):
        for phase in DECODER_PHASES:
            if phase not in r and phase not in b:
                continue
            rp, bp = r.get(phase) or {}, b.get(phase) or {}
            for f in PHASE_FIELDS:
                if f in rp or f in bp:
                    fields[f"step{i + 1}.{phase}.{f}"] = _field(rp.get(f), bp.get(f))
    return {"fields": fields, "equal": bool(fields) and all(v["equal"] for v in fields.values()),
            "steps": min(len(rc), len(bc)), "run_steps": len(rc), "bundle_steps": len(bc)}


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def compare_weights(run: dict[str, torch.Tensor], bundle: dict[str, torch.Tensor]) -> dict:
    """Every bundle tensor against the run's of the same name, cast to the bundle's dtype; a run tensor with fewer
    rows (embeddings before tokens were added) is compared with the bundle's first rows."""
    missing = sorted(k for k in bundle if k not in run)
    differ, shapes, prefix_rows, max_diff = [], [], 0, 0.0
    for k, b in bundle.items():
        if k not in run:
            continue
        r = run[k].to(b.dtype)
        if r.shape != b.shape and r.ndim == b.ndim and r.shape[1:] == b.shape[1:] and r.shape[0] < b.shape[0]:
            b, prefix_rows = b[:r.shape[0]], prefix_rows + 1
        if r.shape != b.shape:
            differ.append(k)
            shapes.append(f"{k}: {tuple(r.shape)} vs {tuple(b.shape)}")
        elif not torch.equal(r, b):
            differ.append(k)
            max_diff = max(max_diff, float((r.float() - b.float()).abs().max()))
    return {"tensors": len(bundle), "compared": len(bundle) - len(missing), "differ": differ, "missing_in_run": missing,
            "shape_differs": shapes, "first_rows_only": prefix_rows, "max_abs_diff": max_diff,
            "equal": not differ and not missing}


def _weight_files(run_dir: Path, bundle: Path, name: str) -> list[tuple[Path, Path]]:
    """(run file, bundle file) pairs holding one component's weights."""
    if name == "encoder":
        return [(run_dir / "encoder.pth", f) for f in sorted((bundle / "encoder").glob("*.pth"))]
    if name == "llm":
        return [(run_dir / "llm" / "model.safetensors", bundle / "llm" / "model.safetensors")]
    m = name.removeprefix("decoder_")
    return [(run_dir / "decoders" / m / f.relative_to(bundle / "decoders" / m), f)
            for f in sorted((bundle / "decoders" / m).rglob("*.safetensors"))]


def compare_run(run_dir: "str | Path", bundle: "str | Path" = "checkpoints/codi2-mini", weights: bool = True) -> dict:
    """Compares every component the run folder holds with the bundle's. Returns ``{components: {name: {fields,
    equal, weights}}, reproduced: [names], differ: [names], not_in_run: [names]}``."""
    run_dir, bundle = Path(run_dir), Path(bundle)
    recipe_path = bundle / "recipe.json"
    if not recipe_path.is_file():
        raise FileNotFoundError(f"{recipe_path} not found: --bundle must be a folder written by train.mini.bundle")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found (the recipe's RUN, e.g. runs/mini)")
    recorded = json.loads(recipe_path.read_text()).get("components", {})
    found = component_reports(run_dir)
    out: dict[str, Any] = {"run": str(run_dir), "bundle": str(bundle), "components": {}}
    for name, rep in found.items():
        if name not in recorded:
            continue
        res = compare_reports(name, rep, recorded[name])
        complete = res.get("run_steps", 1) == res.get("bundle_steps", 1)
        if weights and complete:
            pairs = _weight_files(run_dir, bundle, name)
            per_file = {}
            for r, b in pairs:
                rel = str(b.relative_to(bundle))
                per_file[rel] = (compare_weights(_load(r), _load(b)) if r.is_file()
                                 else {"equal": False, "missing_in_run": [str(r)]})
            res["weights"] = {"files": per_file, "equal": bool(per_file) and all(v["equal"] for v in per_file.values())}
            res["equal"] = res["equal"] and res["weights"]["equal"]
        elif weights:
            res["weights"] = {"skipped": f"the run's decoder went through {res['run_steps']} steps, the bundle's "
                                         f"through {res['bundle_steps']}"}
        out["components"][name] = res
    out["reproduced"] = [n for n, r in out["components"].items() if r["equal"]]
    out["differ"] = [n for n, r in out["components"].items() if not r["equal"]]
    out["not_in_run"] = [n for n in recorded if n not in found]
    return out


def _summary(name: str, res: dict) -> str:
    bad = [f"{k} {v['run']} vs {v['bundle']}" for k, v in res["fields"].items() if not v["equal"]]
    w = res.get("weights", {})
    if "files" in w:
        n = sum(f.get("compared", 0) for f in w["files"].values())
        if w["equal"]:
            wtext = f"{n} tensors equal"
        elif not w["files"]:
            wtext = "weights NOT compared: the bundle holds none for it"
        else:  # how many, and where: e.g. only one sub-model's tensors
            off = {f: v for f, v in w["files"].items() if not v["equal"]}
            n_bad = sum(len(v.get("differ", [])) for v in off.values())
            where = []
            for f, v in off.items():
                if "compared" not in v:
                    where.append(f"{f}: the run has no such file")
                    continue
                if v["differ"]:
                    where.append(f"{f}: {len(v['differ'])} of {v['compared']}, max |diff| {v['max_abs_diff']:.3g}")
                if v["missing_in_run"]:
                    where.append(f"{f}: {len(v['missing_in_run'])} tensors missing in the run")
            wtext = f"{n - n_bad} of {n} compared tensors equal, NOT: {'; '.join(where)}"[:600]
    else:
        wtext = f"weights not compared ({w['skipped']})" if "skipped" in w else "weights not compared"
    steps = f" ({res['steps']} of the bundle's {res['bundle_steps']} steps)" if "steps" in res else ""
    verdict = "NOT: " + ", ".join(bad)[:400] if bad else "exactly"
    return f"{name}{steps}: {len(res['fields'])} reported figures {verdict}; {wtext}"


def made_from(run_dir: "str | Path", bundle: "str | Path") -> Optional[str]:
    """The bundle's ``recipe.json`` source when it lies inside ``run_dir`` (the bundle is this run's), else None."""
    recipe = Path(bundle) / "recipe.json"
    try:
        source = json.loads(recipe.read_text()).get("source")
    except (OSError, ValueError):
        return None
    if not source or not Path(source).is_absolute():  # a relative one would resolve against wherever this runs
        return None
    return str(source) if Path(source).resolve().is_relative_to(Path(run_dir).resolve()) else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.mini.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the recipe's run folder (RUN of scripts/train_mini.sh, e.g. runs/mini)")
    p.add_argument("--bundle", default="checkpoints/codi2-mini", help="a bundle written by train.mini.bundle")
    p.add_argument("--out", help="also write the full comparison here (JSON)")
    p.add_argument("--no-weights", action="store_true", help="compare the reports only")
    args = p.parse_args(argv)
    own = made_from(args.run, args.bundle)
    if own is not None:
        print(f"{args.bundle} was made from this run folder ({own}): its components are the run's own, nothing to "
              f"compare{'; ' + args.out + ' left as it is' if args.out else ''}")
        return 0
    try:
        res = compare_run(args.run, args.bundle, weights=not args.no_weights)
    except FileNotFoundError as e:
        p.error(str(e))
    for name, r in res["components"].items():
        print(_summary(name, r))
    if res["not_in_run"]:
        print("not in the run folder (yet):", ", ".join(res["not_in_run"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0 if res["components"] and not res["differ"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
