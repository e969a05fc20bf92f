"""``codi2 build-data SOURCE …``: build training manifests from local corpora.

    codi2 build-data webdataset      --input shards/ --out data/cc3m --name cc3m --workers 8 --shard-size 100000
    codi2 build-data table           --input meta.parquet --media-root media/ --column caption=TEXT image=path --out DIR
    codi2 build-data audiocaps       --input audiocaps/train.csv --media-root audiocaps/wav --out data/audiocaps
    codi2 build-data instructpix2pix --input ip2p/ --out data/ip2p
    codi2 build-data audit           --input audit/edits.csv --media-root audit/ --out data/audit
    codi2 build-data conversations   --input data/ip2p/manifest.jsonl data/cc3m/manifest-*.jsonl \\
                                     --mixture configs/data/mixture.yaml --set n=100000 --out data/mix
    codi2 build-data world           --out data/world --n 1000          (the mini world, data_builders.world)

Held-out evaluation split (``--eval-fraction F``, readers and conversations): a fraction F of the edit groups
(an InstructPix2Pix folder, an AUDIT instruction; a subject; else each sample) goes to ``test.jsonl``, the rest
to ``manifest.jsonl``, decided by a hash of the group key (deterministic, no group on both sides); each record
gets ``meta.split`` and summary.json lists the files under ``splits``. ``codi2 eval --suite image-edit|audio-edit
--data OUT`` evaluates the test split and takes k-shot exemplars from the train split.

    codi2 build-data instructpix2pix --input ip2p/ --out data/ip2p --eval-fraction 0.1
    codi2 build-data conversations   --input data/ip2p/manifest.jsonl data/ip2p/test.jsonl --out data/mix \
                                     --set n=100000 --eval-n 500

Common options of the readers: ``--seed`` (phrasing), ``--workers``, ``--shard-size``, ``--resume``,
``--filter key=value …`` (:class:`data_builders.core.Filters`), ``--copy-media``, ``--relative-paths``,
``--license``, ``--mix caption=1 generate=1 joint=0`` (the task of each captioned pair).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
from typing import Any, Optional, Sequence

from codi2.io import setup_logging

from .core import SKIP_REASONS, BuildOptions, Filters, build, parse_filters
from .sources import SOURCES, AudioCapsSource, AuditSource, InstructPix2PixSource, TableSource, WebDatasetSource

log = logging.getLogger(__name__)

# Modules whose ``register(subparsers)`` adds more sources to ``codi2 build-data`` (each adds one sub-parser).
PLUGINS: list[str] = ["data_builders.world"]


def _pairs(items: Optional[Sequence[str]], what: str) -> dict[str, str]:
    out = {}
    for it in items or ():
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise ValueError(f"{what} {it!r}: expected KEY=VALUE")
        out[k] = v
    return out


def _mix(items: Optional[Sequence[str]]) -> dict[str, float]:
    mix = {"caption": 1.0, "generate": 1.0, "joint": 0.0}
    for k, v in _pairs(items, "--mix").items():
        if k not in mix:
            raise ValueError(f"--mix {k}=…: unknown task; allowed: {', '.join(mix)}")
        try:
            mix[k] = float(v)
        except ValueError:
            raise ValueError(f"--mix {k}={v}: the weight must be a number") from None
    return mix


def make_source(args: argparse.Namespace):
    """The :class:`data_builders.core.Source` that parsed arguments describe."""
    if args.source == "webdataset":
        return WebDatasetSource(inputs=list(args.input), mp4_kind=args.mp4_kind)
    if args.source == "table":
        return TableSource(inputs=list(args.input), media_root=args.media_root, rows_per_unit=args.rows_per_unit,
                           columns=_pairs(args.column, "--column"))
    if args.source == "audiocaps":
        return AudioCapsSource(inputs=list(args.input), media_root=args.media_root, rows_per_unit=args.rows_per_unit,
                               pattern=args.pattern)
    if args.source == "instructpix2pix":
        return InstructPix2PixSource(inputs=list(args.input), folders_per_unit=args.folders_per_unit)
    if args.source == "audit":
        return AuditSource(inputs=list(args.input), media_root=args.media_root, rows_per_unit=args.rows_per_unit)
    raise ValueError(f"unknown source {args.source!r}; allowed: {', '.join(SOURCES)}")


def _run_build(args: argparse.Namespace) -> int:
    opts = BuildOptions(out=args.out, name=args.name, seed=args.seed, workers=args.workers,
                        shard_size=args.shard_size, resume=args.resume, filters=parse_filters(args.filter or []),
                        copy_media=args.copy_media, relative_paths=args.relative_paths, license=args.license,
                        mix=_mix(args.mix), progress=not args.no_progress, eval_fraction=args.eval_fraction)
    summary = build(make_source(args), opts)
    keys = ("name", "records", "samples", "skipped", "tasks", "manifests", "splits")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0


def _run_compose(args: argparse.Namespace) -> int:
    from .conversations import compose, load_mixture

    overrides = list(args.set or [])
    if args.eval_fraction is not None:
        overrides.append(f"eval_fraction={args.eval_fraction}")
    if args.eval_n is not None:
        overrides.append(f"eval_n={args.eval_n}")
    mix = load_mixture(args.mixture, overrides)
    summary = compose(args.input, args.out, mix, progress=not args.no_progress)
    keys = ("name", "records", "tasks", "unavailable", "skipped", "manifests", "splits")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0


def _common(p: argparse.ArgumentParser, input_help: str) -> None:
    p.add_argument("--input", nargs="+", required=True, help=input_help)
    p.add_argument("--out", required=True, help="output folder (manifest(s), media/ for extracted files, summary.json)")
    p.add_argument("--name", default=None, help="the records' 'source' field and id prefix (default: the source name)")
    p.add_argument("--seed", type=int, default=0, help="seeds task choice and phrasing (same seed -> same manifest)")
    p.add_argument("--workers", type=int, default=1, help="processes reading and checking input units")
    p.add_argument("--shard-size", type=int, default=0, help="records per output shard (0: one manifest.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted build in --out")
    fields = ", ".join(f.name for f in dataclasses.fields(Filters))
    p.add_argument("--filter", nargs="+", action="extend", metavar="KEY=VALUE", help=f"sample filters ({fields})")
    p.add_argument("--copy-media", action="store_true", help="copy original media into --out/media")
    p.add_argument("--relative-paths", action="store_true",
                   help="write original media paths relative to --out (default: absolute)")
    p.add_argument("--license", default="unknown", help="licence for records whose input names none")
    p.add_argument("--mix", nargs="+", action="extend", metavar="TASK=WEIGHT",
                   help="task weights for captioned pairs: caption, generate, joint (default 1, 1, 0)")
    p.add_argument("--eval-fraction", type=float, default=0.0, metavar="F",
                   help="hold out this fraction of edit groups (else subjects, else samples) as test.jsonl, "
                        "by a hash of the group key (default 0: no test split)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_build)


def add_sources(sources: Any) -> None:
    """Adds the readers and ``conversations`` to a ``build-data`` sub-parser set (then the :data:`PLUGINS`)."""
    fmt = argparse.RawDescriptionHelpFormatter
    reasons = "skip reasons in summary.json: " + "; ".join(f"{k}: {v}" for k, v in SKIP_REASONS.items())
    w = sources.add_parser("webdataset", help="WebDataset tar shards ({key}.jpg/.wav/.mp4 + {key}.txt/.json)",
                           description=WebDatasetSource.__doc__ + "\n" + reasons, formatter_class=fmt)
    _common(w, "tar files or folders of *.tar")
    w.add_argument("--mp4-kind", choices=["video", "audio"], default="video", help="what a .mp4 member is")

    t = sources.add_parser("table", help="CSV/TSV/JSON/JSONL/Parquet metadata + local media",
                           description=TableSource.__doc__, formatter_class=fmt)
    _common(t, "table files (.csv .tsv .json .jsonl .parquet) or folders of them")
    t.add_argument("--media-root", default=None, help="folder relative media paths are under (default: the table's)")
    t.add_argument("--column", nargs="+", action="extend", metavar="FIELD=COLUMN",
                   help="column names, fields: id caption image audio video license subject")
    t.add_argument("--rows-per-unit", type=int, default=1000)

    a = sources.add_parser("audiocaps", help="AudioCaps CSV (audiocap_id,youtube_id,start_time,caption) + clips",
                           description=AudioCapsSource.__doc__, formatter_class=fmt)
    _common(a, "AudioCaps CSV files")
    a.add_argument("--media-root", default=None, help="folder of the clips (default: the CSV's folder)")
    a.add_argument("--pattern", default="{youtube_id}_{start}.wav",
                   help="clip file name from the row's columns and start=int(start_time)")
    a.add_argument("--rows-per-unit", type=int, default=1000)

    i = sources.add_parser("instructpix2pix", help="InstructPix2Pix folders (prompt.json + {seed}_0/_1.jpg)",
                           description=InstructPix2PixSource.__doc__, formatter_class=fmt)
    _common(i, "dataset root folders")
    i.add_argument("--folders-per-unit", type=int, default=256)

    e = sources.add_parser("audit", help="AUDIT-style audio edits (input_audio, edit_instruction, output_audio)",
                           description=AuditSource.__doc__, formatter_class=fmt)
    _common(e, "edit tables (.csv .tsv .json .jsonl .parquet)")
    e.add_argument("--media-root", default=None, help="folder the audio paths are under (default: the table's)")
    e.add_argument("--rows-per-unit", type=int, default=1000)

    from . import conversations

    c = sources.add_parser("conversations", help="compose in-context / subject / multi-round / joint conversations "
                           "from reader manifests", description=conversations.__doc__, formatter_class=fmt)
    c.add_argument("--input", nargs="+", required=True, help="manifests written by the readers (records with meta.pair)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--mixture", default=None, help="a mixture YAML (data_builders.conversations.Mixture)")
    c.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="mixture overrides, e.g. n=10000 seed=1 weights.icl_edit=2")
    c.add_argument("--eval-fraction", type=float, default=None, metavar="F",
                   help="hold out this fraction of groups of the pairs that have no meta.split yet (test.jsonl)")
    c.add_argument("--eval-n", type=int, default=None, metavar="N",
                   help="test conversations to write (default: --set n x the test pairs' share)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_run_compose)

    for mod in PLUGINS:
        importlib.import_module(mod).register(sources)


def register(subparsers: Any) -> None:
    """Adds ``codi2 build-data SOURCE …`` (sources: the readers, ``conversations``, and the :data:`PLUGINS`)."""
    p = subparsers.add_parser("build-data", help="build training manifests from local corpora",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sources(p.add_subparsers(dest="source", metavar="SOURCE", required=True))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_builders SOURCE …`` (the same as ``codi2 build-data SOURCE …``)."""
    p = argparse.ArgumentParser(prog="python -m data_builders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sources(p.add_subparsers(dest="source", metavar="SOURCE", required=True))
    args = p.parse_args(argv)
    setup_logging(timestamps=False)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # BuildError is a ValueError
        print(f"python -m data_builders {args.source}: error: {e}", file=sys.stderr)
        return 2
