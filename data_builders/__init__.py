"""Data builders: local corpora -> codi2 training manifests (docs/design.md#manifest-schema).

``core``           the build engine: checks, dedup, sharded output, resume, workers, summary (:func:`build`)
``sources``        readers: WebDataset tars, tables (CSV/JSON/JSONL/Parquet), AudioCaps, InstructPix2Pix, AUDIT
``conversations``  caption / generation / edit turns, in-context, subject-driven, multi-round, joint (:func:`compose`)
``cli``            ``codi2 build-data SOURCE …`` (:func:`register`) and ``python -m data_builders``
``world``          the procedural mini world (registers ``codi2 build-data world`` through ``cli.PLUGINS``)

A new source plugs in either as a :class:`core.Source` subclass added to :data:`BUILDERS` (and a sub-parser in
``cli.add_sources``), or as a module with ``register(subparsers)`` listed in ``cli.PLUGINS``.
"""
from .cli import PLUGINS, main, register
from .conversations import Mixture, compose, load_mixture, pair_record
from .core import BuildError, BuildOptions, Filters, Sample, Skip, Source, Unit, build, parse_filters
from .sources import SOURCES as BUILDERS
from .sources import AudioCapsSource, AuditSource, InstructPix2PixSource, TableSource, WebDatasetSource, read_table

__all__ = [
    "BUILDERS", "PLUGINS", "AudioCapsSource", "AuditSource", "BuildError", "BuildOptions", "Filters",
    "InstructPix2PixSource", "Mixture", "Sample", "Skip", "Source", "TableSource", "Unit", "WebDatasetSource",
    "build", "compose", "load_mixture", "main", "pair_record", "parse_filters", "read_table", "register",
]
