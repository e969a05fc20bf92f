"""The last step of the mini recipe: the bundled checkpoint (``checkpoints/codi2-mini``).

A self-contained ``CoDi2Pipeline`` directory (the last trainer stage's export with the component artifacts it
references — the mini LLM, the aligned encoder, the decoders — written in, so the folder can move) plus

* ``judges/``: the world judges (``data_builders.world.judges``), so ``codi2 eval --suite world`` and the tests can
  score what the model makes without another download or training run;
* ``examples/``: the chat app's one-click examples (world renders, ``data_builders.world.examples``);
* ``MODEL_CARD.md``: what the model knows and makes, for the chat's "About this model" (``data_builders.world.model_card``);
* ``recipe.json``: where every part came from: the component reports (encoder retrieval, LLM validation loss,
  decoder losses), the trainer stages' configs, the decoder sampling settings it set, and the byte size of each part.

    python -m train.mini.bundle runs/mini/stage10/final checkpoints/codi2-mini --judges runs/mini/judges

The decoders' sampling settings (scheduler, steps, guidance, noise level) are not learned: they are chosen by the
benchmarks (``benchmarks/sampler_steps.py``, ``benchmarks/guidance_scale.py``) and kept in
``configs/model/mini.yaml``. Every trainer stage exports the values of the model config it started from, so a run
folder begun before a default changed would carry the old value into the bundle; the bundle therefore takes them
from the model config (``--sampling-from``, default ``mini``) and records what it changed.

Written to ``OUT.tmp`` and renamed, so an interrupted bundle never leaves a half model where the chat looks.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from data_builders.world.examples import write_examples
from data_builders.world.model_card import write_model_card

SIZE_BUDGET_MB = 60  # the "at most ~60 MB"
SAMPLING_FIELDS = ("scheduler", "steps", "guidance", "noise_level")  # decode-time only: no weight depends on them


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def component_reports(run_dir: Path) -> dict[str, Any]:
    """The component stages' own reports found under a recipe run folder (``runs/mini``)."""
    out: dict[str, Any] = {}
    for name, rel in (("encoder", "encoder.pth.json"), ("llm", "llm/pretrain.json")):
        rep = _read_json(run_dir / rel)
        if rep is not None:
            out[name] = rep
    for m in ("image", "audio", "video"):
        rep = _read_json(run_dir / "decoders" / m / "train.json")
        if rep is not None:
            out[f"decoder_{m}"] = rep
    return out


def trainer_stages(run_dir: Path) -> dict[str, Any]:
    """The trainer stages' configs (``stage1``, ``stage2``, … ``/train_config.json``) under a recipe run folder, in
    stage order."""
    found = [d for d in run_dir.glob("stage*")
             if re.fullmatch(r"stage\d+", d.name) and (d / "train_config.json").is_file()]
    return {d.name: _read_json(d / "train_config.json") for d in sorted(found, key=lambda d: int(d.name[5:]))}


def to_fp16_storage(directory: Path, skip: Sequence[str] = ("judges",)) -> int:
    """Rewrites every float32 tensor in ``*.safetensors`` and ``*.pth`` files under ``directory`` (except the
    ``skip`` subfolders) as float16, halving the bundle. Loading is unchanged: every codi2 loader asks for its
    compute dtype (the config's ``dtype`` fields, float32 on CPU) and casts. Returns the bytes saved."""
    import torch
    from safetensors.torch import load_file, save_file

    def half(sd: dict) -> dict:
        return {k: v.half() if torch.is_tensor(v) and v.dtype == torch.float32 else v for k, v in sd.items()}

    saved = 0
    for f in sorted(directory.rglob("*")):
        if not f.is_file() or any(part in skip for part in f.relative_to(directory).parts):
            continue
        before = f.stat().st_size
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), "pt") as h:
                meta = h.metadata()
            save_file(half(load_file(str(f))), str(f), metadata=meta)
        elif f.suffix == ".pth":
            torch.save(half(torch.load(f, map_location="cpu", weights_only=True)), f)
        else:
            continue
        saved += before - f.stat().st_size
    return saved


def drop_encoder_towers(model_dir: Path, towers: Sequence[str]) -> None:
    """Removes encoder ``towers`` from a self-contained model directory: their keys leave the encoder ``.pth``
    and ``encoder.towers`` in ``config.yaml`` no longer lists them."""
    import dataclasses

    import torch

    from codi2.config import ModelConfig, load_config, to_yaml
    from codi2.encoders.imagebind import modality_of

    cfg = load_config(ModelConfig, str(model_dir / "config.yaml"))
    keep = [t for t in cfg.encoder.towers if t not in towers]
    weights = model_dir / cfg.encoder.weights
    state = torch.load(weights, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in state.items() if modality_of(k) not in towers}, weights)
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, towers=keep))
    (model_dir / "config.yaml").write_text(to_yaml(cfg))


def set_decoder_sampling(model_dir: Path, want: Any) -> dict[str, dict[str, list]]:
    """Sets the decoders' sampling settings (:data:`SAMPLING_FIELDS`) in ``model_dir/config.yaml`` to those of the
    ``ModelConfig`` ``want`` (e.g. ``load_model_config("mini")``), for every modality both have.
    Returns what changed, ``{modality: {field: [old, new]}}``."""
    import dataclasses

    from codi2.config import ModelConfig, load_config, to_yaml

    cfg = load_config(ModelConfig, str(model_dir / "config.yaml"))
    changed: dict[str, dict[str, list]] = {}
    modalities = dict(cfg.modalities)
    for name, mod in cfg.modalities.items():
        if name not in want.modalities:
            continue
        new = {f: getattr(want.modalities[name].decoder, f) for f in SAMPLING_FIELDS}
        diff = {f: [getattr(mod.decoder, f), v] for f, v in new.items() if getattr(mod.decoder, f) != v}
        if diff:
            changed[name] = diff
            modalities[name] = dataclasses.replace(mod, decoder=dataclasses.replace(mod.decoder, **new))
    if changed:
        (model_dir / "config.yaml").write_text(to_yaml(dataclasses.replace(cfg, modalities=modalities)))
    return changed


def bundle(pipeline_dir: "str | Path", out: "str | Path", judges: "str | Path",
           run_dir: "str | Path | None" = None, fp16: bool = True, drop_text_tower: bool = True,
           sampling_from: "str | Path | None" = None, base_recipe: "str | Path | None" = None,
           made_by: Optional[str] = None) -> dict[str, Any]:
    """Copies ``pipeline_dir`` + ``judges`` to ``out`` (atomically) and writes ``recipe.json``; returns it.
    ``fp16``: store the weights as float16 (:func:`to_fp16_storage`; they still load and run in float32).
    ``drop_text_tower``: leave out the encoder's text tower (:func:`drop_encoder_towers`), which chat and the
    world suite never run (the alignment stage used it).
    ``sampling_from``: a model config (path or preset name) whose decoder sampling settings replace the export's
    (:func:`set_decoder_sampling`); None keeps the export's.
    ``base_recipe``: the ``recipe.json`` of the bundle these stages started from (a run that continued the recipe
    from a bundle, e.g. stages 11-14 from the stage-10 bundle, has no component reports or earlier stages of its
    own): its components and stages are kept, this run's stages added after them, and its record kept under
    ``base``. ``made_by``: a line saying how this bundle was made, stored as is.

    Raises ``FileNotFoundError`` naming what is missing (the pipeline's ``config.yaml``, the judges' files, the
    sampling config).
    """
    src, out, judges = Path(pipeline_dir), Path(out), Path(judges)
    if not (src / "config.yaml").is_file():
        raise FileNotFoundError(f"{src} is not a codi2 model directory (no config.yaml); give the trainer's "
                                f"export, e.g. runs/mini/stage10/final")
    for f in ("judges.json", "judges.safetensors"):
        if not (judges / f).is_file():
            raise FileNotFoundError(f"{judges / f} missing; train the judges with "
                                    f"`python -m data_builders.world.judges --out {judges}`")
    base = None
    if base_recipe is not None:
        base = json.loads(Path(base_recipe).read_text())
        if not isinstance(base, dict) or "stages" not in base:
            raise ValueError(f"{base_recipe} is not a bundle's recipe.json (no 'stages')")
    want_sampling = None
    if sampling_from is not None:  # read before any work, so a wrong name fails at once
        from codi2.config import load_model_config

        want_sampling = load_model_config(sampling_from)
    run_dir = Path(run_dir) if run_dir is not None else src.parent.parent  # runs/mini/stage10/final -> runs/mini
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    from codi2.pipeline import CoDi2Pipeline

    # the trainer's export references the component artifacts (runs/mini/...) by absolute path: write them in
    CoDi2Pipeline.from_pretrained(src, device="cpu").save_pretrained(tmp, self_contained=True)
    sampling = None
    if want_sampling is not None:
        sampling = {"from": str(sampling_from), "changed": set_decoder_sampling(tmp, want_sampling)}
    if drop_text_tower:
        drop_encoder_towers(tmp, ["text"])
    if fp16:
        to_fp16_storage(tmp)
    shutil.copytree(judges, tmp / "judges")
    write_examples(tmp / "examples")  # the chat app's one-click examples (serve.examples)
    write_model_card(tmp, out.name)  # the chat's "About this model" (codi2.model_card)
    sizes = {p.name: _dir_bytes(p) if p.is_dir() else p.stat().st_size for p in sorted(tmp.iterdir())}
    total = sum(sizes.values())
    recipe = {
        "recipe": "bash scripts/train_mini.sh",
        "source": str(Path(src).resolve()),  # absolute: reproduce tells a run's own bundle by it
        "components": component_reports(run_dir) if base is None else base.get("components", {}),
        "stages": trainer_stages(run_dir) if base is None else {**base["stages"], **trainer_stages(run_dir)},
        "decoder_sampling": sampling,
        "storage_dtype": "float16" if fp16 else "float32",
        "bytes": sizes,
        "total_mb": round(total / 2**20, 2),
    }
    if base is not None:
        recipe["base"] = {k: v for k, v in base.items() if k not in ("components", "stages")}
    if made_by:
        recipe["made_by"] = made_by
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return recipe


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.mini.bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="the trainer's exported model directory (runs/mini/stage10/final)")
    p.add_argument("out", help="bundle folder (checkpoints/codi2-mini)")
    p.add_argument("--judges", required=True, help="world judges folder (runs/mini/judges)")
    p.add_argument("--run-dir", help="the recipe's run folder with the component reports (default: two levels "
                                     "above the pipeline)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16 storage)")
    p.add_argument("--keep-text-tower", action="store_true", help="keep the encoder's text tower (default: left out)")
    p.add_argument("--sampling-from", default="mini",
                   help="model config (YAML path or preset name) whose decoder sampling settings (scheduler, steps, "
                        "guidance, noise level) the bundle takes (default: mini, i.e. configs/model/mini.yaml)")
    p.add_argument("--keep-sampling", action="store_true",
                   help="keep the export's decoder sampling settings instead")
    p.add_argument("--base-recipe", help="recipe.json of the bundle this run's stages started from: its components "
                                         "and stages are kept, this run's stages added (a recipe continued from a bundle)")
    p.add_argument("--made-by", help="how this bundle was made, in words (stored in recipe.json)")
    args = p.parse_args(argv)
    recipe = bundle(args.pipeline, args.out, args.judges, args.run_dir, fp16=not args.fp32,
                    drop_text_tower=not args.keep_text_tower,
                    sampling_from=None if args.keep_sampling else args.sampling_from,
                    base_recipe=args.base_recipe, made_by=args.made_by)
    for m, diff in ((recipe["decoder_sampling"] or {}).get("changed") or {}).items():
        print(f"{m} decoder sampling from {args.sampling_from}: "
              + ", ".join(f"{f} {old} -> {new}" for f, (old, new) in diff.items()))
    mb = recipe["total_mb"]
    print(f"bundled {args.out}: {mb} MB ({', '.join(f'{k} {v / 2**20:.1f}' for k, v in recipe['bytes'].items())})")
    if mb > SIZE_BUDGET_MB:
        print(f"warning: {mb} MB is over the {SIZE_BUDGET_MB} MB budget of the bundled model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
