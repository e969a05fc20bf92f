"""Precomputed output-head targets (docs/design.md#feature-tokens) and input features, in a content-addressed disk cache.

Training reads each output media's head target from here and never loads a decoder (unless the
diffusion loss is on). ``codi2 precompute-targets MANIFEST --model DIR`` fills the cache once.

Layout (default root: ``<manifest folder>/.codi2-targets``)::

    <root>/<kind>-<modality>-<fingerprint>/      kind = target | input
        fingerprint.json                          what the fingerprint was computed from (for humans)
        <key[:2]>/<key>.safetensors               one entry: name -> tensor, e.g. image_embeds (16,)

* keys: image targets and all input features use the media file's content hash
  (:func:`codi2.conversation.part_key`); audio/video targets use a hash of the caption (their
  targets are the decoder's text conditioning of the caption and depend on nothing else).
* fingerprints are per modality: a hash of what the entries depend on — for image targets and input
  features the encoder config and a sample of its weight file's content; for audio/video targets
  the decoder directory's configs and a sample of each weight file's content, its dtype and the head's
  target shapes. A different model therefore never reads stale entries, and two models that share
  e.g. the audio decoder share its targets. Moving or copying a model keeps its fingerprints.
* writes go to a temporary file renamed into place (atomic): a killed precompute leaves no
  half-written entry and continues where it stopped; concurrent readers see whole entries or none.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from .config import ModelConfig, to_dict
from .conversation import Part, part_key
from .io import atomic_write, atomic_write_text
from .modality import ALL_MODALITIES, Modality

log = logging.getLogger(__name__)

CACHE_DIR = ".codi2-targets"
FORMAT_VERSION = 1
_SAMPLE_BYTES = 1 << 20  # bytes hashed from each end of a weight file
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".model")


def default_cache_root(manifest: "str | Path") -> Path:
    """``<manifest folder>/.codi2-targets``."""
    return Path(manifest).resolve().parent / CACHE_DIR


# ----------------------------------------------------------------------------- fingerprints
def _resolve(value: Optional[str], field_name: str, base_dir: "str | Path | None") -> Optional[Path]:
    if value is None:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    if not p.is_absolute():
        if base_dir is None:
            raise ValueError(f"{field_name} = {value!r} is relative; pass base_dir (the model directory) so the "
                             "target cache can identify the file")
        p = Path(base_dir) / p
    if not p.exists():
        raise FileNotFoundError(f"{field_name} = {value!r}: {p} does not exist; the feature cache identifies the "
                                "model by its files, so they must be present (they are not loaded)")
    return p


def _file_digest(path: Path) -> str:
    """sha256 of a file's size, and of its content for small files or its first and last MiB for large ones."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 2 * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()[:16]


def _path_identity(p: Optional[Path]) -> Any:
    """Location-independent identity of a weights file or a diffusers directory (None passes through)."""
    if p is None:
        return None
    if p.is_file():
        return _file_digest(p)
    out = {}
    for f in sorted(p.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            rel = f.relative_to(p).as_posix()
            out[rel] = _file_digest(f) if f.suffix in _WEIGHT_SUFFIXES or f.suffix == ".json" else f.stat().st_size
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_inputs(cfg: ModelConfig, m: Modality, base_dir: "str | Path | None" = None) -> dict:
    """What the input features of modality ``m`` depend on: the encoder (config + weights) and ``n_in``."""
    enc = to_dict(cfg.encoder)
    enc["weights"] = _path_identity(_resolve(cfg.encoder.weights, "encoder.weights", base_dir))
    if enc["weights"] is None:
        log.warning("encoder.weights is unset (random encoder): cached features cannot tell two random "
                    "encoders apart; use a saved model directory")
    return {"version": FORMAT_VERSION, "kind": "input", "modality": m.value, "encoder": enc,
            "n_in": cfg.modalities[m.value].n_in}


def fingerprint_targets(cfg: ModelConfig, m: Modality, base_dir: "str | Path | None" = None) -> dict:
    """What the head targets of modality ``m`` depend on (see the module docstring)."""
    mc = cfg.modalities.get(m.value)
    if mc is None:
        raise ValueError(f"modality {m.value!r} is not in the model config (modalities: {sorted(cfg.modalities)})")
    d: dict[str, Any] = {"version": FORMAT_VERSION, "kind": "target", "modality": m.value,
                         "targets": {k: list(v) for k, v in mc.head.targets.items()}}
    if m is Modality.IMAGE:
        d["encoder"] = fingerprint_inputs(cfg, m, base_dir)["encoder"]
    else:
        dec = mc.decoder
        d["decoder"] = {"files": _path_identity(_resolve(dec.path, f"modalities.{m.value}.decoder.path", base_dir)),
                        "dtype": dec.dtype}
        if m is Modality.AUDIO:
            d["decoder"]["prompt_len"] = dec.prompt_len
    return d


# ----------------------------------------------------------------------------- storage
class _Store:
    """One folder of ``<key>.safetensors`` entries, written atomically."""

    def __init__(self, folder: Path, description: dict):
        self.folder = folder
        self.description = description

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad cache key {key!r}")
        return self.folder / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path(key)))

    def save(self, key: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
        from safetensors.torch import save_file

        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        desc = self.folder / "fingerprint.json"
        if not desc.exists():
            atomic_write_text(desc, json.dumps(self.description, indent=2, sort_keys=True, default=str))
        flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write(final, lambda tmp: save_file(flat, str(tmp), metadata=metadata))

    def clean_stale_tmp(self, older_than_s: float = 3600.0) -> int:
        """Removes temporary files left by killed writers (older than ``older_than_s``)."""
        if not self.folder.is_dir():
            return 0
        now, n = time.time(), 0
        for f in self.folder.glob("*/*.tmp-*"):
            if now - f.stat().st_mtime > older_than_s:
                f.unlink(missing_ok=True)
                n += 1
        return n


def caption_key(caption: str) -> str:
    """Cache key of a caption-conditioned target."""
    return hashlib.sha256(b"caption\0" + caption.encode("utf-8")).hexdigest()[:32]


def file_key(part: Part) -> str:
    """Content key of a media part: ``part.key`` if set, else the hash of its file (not of loaded media,
    so that a part keyed before and after loading gets the same key)."""
    if part.key:
        return part.key
    if part.path is not None:
        part.key = part_key(Part(type=part.type, path=part.path))
        return part.key
    return part_key(part)


# ----------------------------------------------------------------------------- target cache
class TargetCache:
    """Precomputed head targets on disk.

    Args:
        root: the cache root (e.g. :func:`default_cache_root` of the manifest).
        model_cfg: the model config; entries live in per-modality folders named by its fingerprints.
        base_dir: the model directory, to resolve relative paths in ``model_cfg``.
    """

    def __init__(self, root: "str | Path", model_cfg: ModelConfig, base_dir: "str | Path | None" = None):
        self.root = Path(root)
        self.cfg = model_cfg
        self.base_dir = base_dir
        self._stores: dict[Modality, _Store] = {}
        self.shapes = {m: {k: tuple(v) for k, v in model_cfg.modalities[m.value].head.targets.items()}
                       for m in ALL_MODALITIES if m.value in model_cfg.modalities}

    def store(self, m: Modality) -> _Store:
        """The folder of modality ``m`` (its fingerprint is computed on first use)."""
        if m not in self._stores:
            desc = fingerprint_targets(self.cfg, m, self.base_dir)
            self._stores[m] = _Store(self.root / f"target-{m.value}-{_digest(desc)}", desc)
        return self._stores[m]

    def folder(self, m: Modality) -> Path:
        return self.store(m).folder

    def key(self, m: Modality, part: Part) -> str:
        """image: the file's content hash; audio/video: the caption's hash."""
        if m is Modality.IMAGE:
            return file_key(part)
        if not part.caption:
            raise ValueError(f"{m.value} output part {part.path!r} has no caption; its target is computed from it")
        return caption_key(part.caption)

    def has(self, m: Modality, part: Part) -> bool:
        return self.store(m).has(self.key(m, part))

    def put(self, m: Modality, part: Part, targets: dict[str, torch.Tensor]) -> None:
        """Stores one part's targets: name -> (*shape) (checked against the head's target shapes)."""
        self._check(m, targets, "")
        self.store(m).save(self.key(m, part), targets, metadata={"modality": m.value})

    def get(self, m: Modality, parts: Sequence[Part]) -> dict[str, torch.Tensor]:
        """Targets of ``parts`` stacked: name -> (N, *shape) float32.

        Raises:
            KeyError: naming the parts (path/caption and key) with no entry, and the folder.
            ValueError: an entry whose names or shapes do not match the head's targets.
        """
        store = self.store(m)
        keys = [self.key(m, p) for p in parts]
        missing = [f"{p.path if m is Modality.IMAGE else repr(p.caption)} (key {k})"
                   for p, k in zip(parts, keys) if not store.has(k)]
        if missing:
            raise KeyError(f"no precomputed {m.value} targets in {store.folder} for {len(missing)} part(s): "
                           f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}; run "
                           "`codi2 precompute-targets MANIFEST --model DIR`")
        entries = [store.load(k) for k in keys]
        for k, e in zip(keys, entries):
            self._check(m, e, f" (entry {store.path(k)})")
        return {name: torch.stack([e[name] for e in entries]).float() for name in self.shapes[m]}

    def _check(self, m: Modality, t: dict[str, torch.Tensor], where: str) -> None:
        want = self.shapes[m]
        got = {k: tuple(v.shape) for k, v in t.items()}
        if got != want:
            raise ValueError(f"{m.value} targets{where} have shapes {got}; the head expects {want}")

    def target_fn(self) -> Callable[[Modality, Sequence[Part]], dict[str, torch.Tensor]]:
        """For ``CoDi2Model.collate(..., target_fn=cache.target_fn())``."""
        return self.get


# ----------------------------------------------------------------------------- input feature cache
class InputFeatureCache:
    """Encoder features of input media on disk, usable as ``CoDi2Model.collate(feature_cache=...)``.

    A dict-like object keyed ``(Modality, part_key)`` -> ``(n_in, D_enc)`` tensor. Keys must be
    file content hashes (:class:`~codi2.data.ManifestDataset` sets ``Part.key`` so).

    Args:
        root: the cache root (same as :class:`TargetCache`'s is fine).
        model_cfg, base_dir: as for :class:`TargetCache`; the fingerprint covers the encoder and ``n_in``.
    """

    def __init__(self, root: "str | Path", model_cfg: ModelConfig, base_dir: "str | Path | None" = None):
        self.root = Path(root)
        self.cfg = model_cfg
        self.base_dir = base_dir
        self._stores: dict[Modality, _Store] = {}

    def store(self, m: Modality) -> _Store:
        if m not in self._stores:
            desc = fingerprint_inputs(self.cfg, m, self.base_dir)
            self._stores[m] = _Store(self.root / f"input-{m.value}-{_digest(desc)}", desc)
        return self._stores[m]

    @staticmethod
    def _split(item: tuple[Modality, str]) -> tuple[Modality, str]:
        m, key = item
        return Modality(m), key

    def __contains__(self, item: tuple[Modality, str]) -> bool:
        m, key = self._split(item)
        return self.store(m).has(key)

    def __getitem__(self, item: tuple[Modality, str]) -> torch.Tensor:
        m, key = self._split(item)
        store = self.store(m)
        if not store.has(key):
            raise KeyError(f"no cached {m.value} input features for key {key} in {store.folder}")
        return store.load(key)["features"]

    def __setitem__(self, item: tuple[Modality, str], value: torch.Tensor) -> None:
        m, key = self._split(item)
        n_in = self.cfg.modalities[m.value].n_in
        if value.ndim != 2 or value.shape[0] != n_in:
            raise ValueError(f"{m.value} input features have shape {tuple(value.shape)}; expected ({n_in}, D)")
        self.store(m).save(key, {"features": value.float()}, metadata={"modality": m.value})


class MemoryFeatureCache:
    """Encoder features of input media in memory, capped in bytes: least recently used entries go first.

    The same dict-like interface as :class:`InputFeatureCache` (``(Modality, key) -> (n_in, D_enc)`` tensor), so
    it can be passed as ``CoDi2Model.collate(feature_cache=...)``. A full-scale stage sees millions of distinct
    inputs (about 1 MB each at 7B: 257 × 1024 float32); an uncapped dict would hold them all.

    Args:
        max_bytes: the cap on the bytes of the stored tensors (> 0). An entry larger than the cap is not kept.

    Attributes:
        nbytes: bytes held now. hits, misses, evictions: counters (for logs and benchmarks).
    """

    def __init__(self, max_bytes: int):
        from collections import OrderedDict

        if max_bytes <= 0:
            raise ValueError(f"max_bytes = {max_bytes}; the feature cache needs a positive byte cap")
        self.max_bytes = int(max_bytes)
        self._d: "OrderedDict[tuple[Modality, str], torch.Tensor]" = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    @staticmethod
    def _norm(item: tuple[Modality, str]) -> tuple[Modality, str]:
        m, key = item
        return Modality(m), key

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, item: tuple[Modality, str]) -> bool:
        return self._norm(item) in self._d

    def __getitem__(self, item: tuple[Modality, str]) -> torch.Tensor:
        k = self._norm(item)
        if k not in self._d:
            self.misses += 1
            raise KeyError(f"no cached {k[0].value} input features for key {k[1]}")
        self.hits += 1
        self._d.move_to_end(k)
        return self._d[k]

    def get(self, item: tuple[Modality, str], default: Any = None) -> Any:
        return self[item] if item in self else default

    def __setitem__(self, item: tuple[Modality, str], value: torch.Tensor) -> None:
        k = self._norm(item)
        # a copy: a row of a batch tensor is a view that would keep the whole batch alive
        v = value.detach().contiguous().clone()
        size = v.numel() * v.element_size()
        if k in self._d:
            self.nbytes -= self._d[k].numel() * self._d[k].element_size()
            del self._d[k]
        if size > self.max_bytes:
            return
        self._d[k] = v
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._d.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
            self.evictions += 1

    def __delitem__(self, item: tuple[Modality, str]) -> None:
        v = self._d.pop(self._norm(item))
        self.nbytes -= v.numel() * v.element_size()

    def clear(self) -> None:
        self._d.clear()
        self.nbytes = 0

    def stats(self) -> dict:
        return {"entries": len(self._d), "bytes": self.nbytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}


# ----------------------------------------------------------------------------- a model without its LLM
class TargetModel:
    """What head targets need from a model directory — the encoder and the decoders — without the LLM.

    ``codi2 precompute-targets`` uses it so that a 7B model's Llama is never loaded to compute
    targets. :meth:`compute_targets` mirrors :meth:`codi2.model.CoDi2Model.compute_targets`
    (``tests/test_targets.py`` checks that both give the same tensors).

    Args:
        cfg: the model config.
        base_dir: the model directory (relative paths in ``cfg`` are resolved against it).
        device: where the encoder and decoders run (default CPU).
    """

    def __init__(self, cfg: ModelConfig, base_dir: "str | Path | None" = None, device: "str | torch.device | None" = None):
        self.cfg = cfg
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.device = torch.device(device or "cpu")
        self._encoder: Any = None
        self._preprocess: Any = None
        self._decoders: dict[Modality, Any] = {}

    @classmethod
    def from_pretrained(cls, directory: "str | Path", device: "str | torch.device | None" = None) -> "TargetModel":
        """Reads ``config.yaml`` of a codi2 model directory (no weights are loaded yet)."""
        from .config import load_config
        from .pipeline import CONFIG_FILE

        d = Path(directory)
        if not (d / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{d} is not a codi2 model directory: {CONFIG_FILE} is missing")
        return cls(load_config(ModelConfig, d / CONFIG_FILE), base_dir=d, device=device)

    def _encoder_parts(self) -> tuple[Any, Any]:
        if self._encoder is None:
            from .encoders import ImageBindEncoder, ImageBindPreprocessor

            enc = self.cfg.encoder
            if enc.weights is not None:
                enc = dataclasses.replace(enc, weights=str(_resolve(enc.weights, "encoder.weights", self.base_dir)))
            self._encoder = ImageBindEncoder(enc).to(self.device)
            self._preprocess = ImageBindPreprocessor(self.cfg.encoder)
        return self._encoder, self._preprocess

    def decoder(self, m: Modality) -> Any:
        """The decoder of ``m`` (weights load on first use), checked against the head's target shapes."""
        if m not in self._decoders:
            from .decoders import build_decoder

            dcfg = self.cfg.modalities[m.value].decoder
            field_name = f"modalities.{m.value}.decoder.path"
            if dcfg.path is None:
                raise FileNotFoundError(f"{field_name} is not set; {m.value} targets are computed by the decoder's text encoders")
            dcfg = dataclasses.replace(dcfg, path=str(_resolve(dcfg.path, field_name, self.base_dir)))
            dec = build_decoder(m, dcfg, device=self.device)
            want = {k: tuple(v) for k, v in self.cfg.modalities[m.value].head.targets.items()}
            spec = {k: tuple(v) for k, v in dec.target_spec().items()}
            if any(spec.get(k) != s for k, s in want.items()):
                raise ValueError(f"{m.value} head targets {want} do not match the decoder at {dcfg.path} ({spec}); "
                                 f"fix modalities.{m.value}.head.targets")
            self._decoders[m] = dec
        return self._decoders[m]

    @torch.no_grad()
    def compute_targets(self, m: Modality, parts: Sequence[Part]) -> dict[str, torch.Tensor]:
        """Head targets: name -> (N, *shape) float32 on CPU (image: encoder embedding of the image;
        audio/video: the decoder's conditioning for the caption)."""
        from .media import load_media

        if m is Modality.IMAGE:
            encoder, preprocess = self._encoder_parts()
            media = [p.media if p.media is not None else load_media(p.path, "image", self.cfg.media) for p in parts]
            emb = encoder.encode_image(preprocess.images(media).to(self.device)).embed
            (name,) = self.cfg.modalities[m.value].head.targets
            return {name: emb.float().cpu()}
        missing = [i for i, p in enumerate(parts) if not p.caption]
        if missing:
            raise ValueError(f"{m.value} output parts {missing} have no caption; audio/video head targets are computed from it")
        return {k: v.float().cpu() for k, v in self.decoder(m).targets([p.caption for p in parts]).items()}


# ----------------------------------------------------------------------------- precompute
def _chunks(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _output_enabled(cfg: ModelConfig, m: Modality) -> bool:
    mc = cfg.modalities.get(m.value)
    return mc is not None and mc.enabled and mc.n_out > 0


def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment (``RANK`` / ``WORLD_SIZE``, set by ``torchrun`` and the
    ``deepspeed`` launcher); ``(0, 1)`` outside one.

    Raises:
        ValueError: naming the variables when they do not make a rank in ``[0, world_size)``.
    """
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ValueError(f"RANK = {os.environ.get('RANK')!r} / WORLD_SIZE = {os.environ.get('WORLD_SIZE')!r}: "
                         "expected integers (as torchrun or the deepspeed launcher set them)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK = {rank}, WORLD_SIZE = {world}: a rank must be in [0, WORLD_SIZE) and WORLD_SIZE >= 1")
    return rank, world


def shard_key(m: Modality, part: Part) -> str:
    """What decides which rank computes a part's target, without reading any file: the caption for audio/video
    (whose cache key is the caption's hash), the path for images. Stable across runs and restarts."""
    return caption_key(part.caption or "") if m is not Modality.IMAGE else f"path:{part.path}"


def precompute_targets(manifest: "str | Path", model: Any, cache_root: "str | Path | None" = None,
                       batch_size: int = 16, progress: bool = True, rank: int = 0, world_size: int = 1) -> dict:
    """Computes the head target of every output media in a manifest into a :class:`TargetCache`.

    Entries already in the cache are skipped (so a killed run continues where it stopped); each
    distinct target (by key) is computed once. Audio/video decoders load lazily (their text encoders
    only) and are unloaded after their modality is done.

    Several processes (``rank`` of ``world_size``, e.g. from :func:`dist_env`) split the work with no
    communication: per modality, the distinct :func:`shard_key` s of the manifest are sorted and dealt round-robin,
    so every rank takes its own shard of the content-addressed cache, the same shard after a restart, and
    reads (hashes) only its own files. Run every rank to completion to fill the cache; each returns its own
    counts. (Two image paths with the same content may land on two ranks: both write the same entry atomically.)

    Args:
        manifest: the manifest.
        model: a :class:`~codi2.model.CoDi2Model`, or a :class:`TargetModel` (the same without the LLM);
            uses ``cfg``, ``base_dir``, ``compute_targets`` and ``decoder``.
        cache_root: default :func:`default_cache_root` of the manifest.
        batch_size: parts per ``compute_targets`` call.
        progress: show a tqdm bar.
        rank, world_size: this process's shard (default: all of it).

    Returns:
        ``{"computed", "cached", "failed": [{"id", "modality", "reason"}], "bad_records": [{"id", "reason"}],
        "by_modality": {m: {"computed", "cached", "failed"}}, "cache_root", "seconds", "rank", "world_size",
        "shard"}``; counts are of distinct targets of this rank's shard (``shard``: how many), ``failed`` lists the
        records whose targets could not be computed; ``bad_records`` (unparseable lines) only on rank 0.
    """
    from tqdm import tqdm

    from .data import ManifestDataset

    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}; it must be >= 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank = {rank}, world_size = {world_size}: a rank must be in [0, world_size)")
    t0 = time.perf_counter()
    root = Path(cache_root) if cache_root is not None else default_cache_root(manifest)
    ds = ManifestDataset(manifest)
    cache = TargetCache(root, model.cfg, base_dir=getattr(model, "base_dir", None))
    stats: dict[str, Any] = {"computed": 0, "cached": 0, "failed": [], "cache_root": str(root),
                             "bad_records": [{"id": i, "reason": r} for i, r in ds.bad] if rank == 0 else [],
                             "by_modality": {}, "rank": rank, "world_size": world_size, "shard": 0}

    def fail(ids: Sequence[str], m: Modality, reason: str) -> None:
        for rid in ids:
            stats["failed"].append({"id": rid, "modality": m.value, "reason": reason})
        stats["by_modality"][m.value]["failed"] += 1
        log.warning("%s target for %s failed: %s", m.value, ", ".join(ids), reason)

    # 1. distinct output parts per modality: key -> (part, record ids)
    todo: dict[Modality, dict[str, tuple[Part, list[str]]]] = {}
    for m in ALL_MODALITIES:
        stats["by_modality"][m.value] = {"computed": 0, "cached": 0, "failed": 0}
    mine: Optional[dict[Modality, set[str]]] = None
    if world_size > 1:  # deal the sorted distinct shard keys of each modality round-robin
        every: dict[Modality, set[str]] = {}
        for rec in ds.records:
            for p in rec.media_parts(output=True):
                m = Modality(p.type)
                if m is Modality.IMAGE or p.caption:
                    every.setdefault(m, set()).add(shard_key(m, p))
        mine = {m: set(sorted(keys)[rank::world_size]) for m, keys in every.items()}
    for rec in ds.records:
        for p in rec.media_parts(output=True):
            m = Modality(p.type)
            if mine is not None and shard_key(m, p) not in mine.get(m, ()):
                continue
            if not _output_enabled(model.cfg, m):
                fail([rec.id], m, f"{m.value} output is disabled in this model (modalities.{m.value}.n_out = 0)")
                continue
            try:
                k = cache.key(m, p)
            except OSError as e:
                fail([rec.id], m, f"cannot read {p.path}: {e.strerror or e}")
                continue
            todo.setdefault(m, {}).setdefault(k, (p, []))[1].append(rec.id)

    # 2. skip what is cached
    work: dict[Modality, list[tuple[str, Part, list[str]]]] = {}
    for m, items in todo.items():
        cache.store(m).clean_stale_tmp()
        for k, (p, ids) in items.items():
            if cache.store(m).has(k):
                stats["cached"] += 1
                stats["by_modality"][m.value]["cached"] += 1
            else:
                work.setdefault(m, []).append((k, p, ids))
    total = sum(len(v) for v in work.values())
    stats["shard"] = total + stats["cached"]
    log.info("targets%s: %d to compute, %d already cached in %s",
             f" (rank {rank} of {world_size})" if world_size > 1 else "", total, stats["cached"], root)

    # 3. compute, batch by batch; a failing batch is retried part by part to isolate the bad ones
    desc = f"precompute targets [rank {rank}]" if world_size > 1 else "precompute targets"
    with tqdm(total=total, desc=desc, unit="target", disable=not progress) as bar:
        for m, items in work.items():
            if m is not Modality.IMAGE:
                model.decoder(m).load()  # a missing or broken decoder fails here, once, not once per target
            for batch in _chunks(items, batch_size):
                _compute_batch(model, cache, m, batch, stats, fail)
                bar.update(len(batch))
                bar.set_postfix(modality=m.value, failed=len(stats["failed"]))
            if m is not Modality.IMAGE:
                model.decoder(m).unload()  # training never needs it; free it now
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _compute_batch(model: Any, cache: TargetCache, m: Modality, batch: Sequence[tuple[str, Part, list[str]]],
                   stats: dict, fail: Callable) -> None:
    parts = [p for _, p, _ in batch]
    try:
        out = model.compute_targets(m, parts)
    except (ValueError, OSError) as e:  # MediaError is a ValueError
        if len(batch) == 1:
            fail(batch[0][2], m, str(e))
        else:
            for item in batch:
                _compute_batch(model, cache, m, [item], stats, fail)
        return
    finally:
        for p in parts:
            p.media = None  # the dataset's parsed records keep no media
    for j, (_, p, _) in enumerate(batch):
        cache.put(m, p, {name: t[j] for name, t in out.items()})
        stats["computed"] += 1
        stats["by_modality"][m.value]["computed"] += 1


# ----------------------------------------------------------------------------- command line
def _precompute_command(args: Any) -> int:
    rank, world = dist_env()
    if args.rank is not None or args.world_size is not None:
        rank = args.rank if args.rank is not None else 0
        world = args.world_size if args.world_size is not None else 1
    device = args.device
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = f"cuda:{local % max(1, torch.cuda.device_count())}" if torch.cuda.is_available() else "cpu"
    model = TargetModel.from_pretrained(args.model, device=device)
    failed = 0
    every = []
    for manifest in args.manifest:
        stats = precompute_targets(manifest, model, cache_root=args.cache_root, batch_size=args.batch_size,
                                   progress=not args.json, rank=rank, world_size=world)
        stats["manifest"] = str(manifest)
        every.append(stats)
        failed += len(stats["failed"])
        if args.json:
            continue
        where = f"rank {rank} of {world}: " if world > 1 else ""
        print(f"{where}{manifest}: targets in {stats['cache_root']}: {stats['computed']} computed, {stats['cached']} "
              f"already cached, {len(stats['failed'])} failed ({stats['seconds']:.1f} s)")
        for f in stats["failed"][:20]:
            print(f"  FAILED {f['id']} ({f['modality']}): {f['reason']}")
        if stats["bad_records"]:
            print(f"  {len(stats['bad_records'])} records did not parse; run `codi2 validate-data {manifest}`")
    if args.stats_dir:
        atomic_write_text(Path(args.stats_dir) / f"precompute-rank{rank}.json", json.dumps(every, indent=1))
    if args.json:
        print(json.dumps(every[0] if len(every) == 1 else every, indent=2))
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    """Adds ``codi2 precompute-targets MANIFEST… --model DIR [--batch-size N] [--cache-root DIR] [--json]
    [--rank R --world-size W] [--stats-dir DIR]`` (exit status 1 if any target of this rank's shard failed).

    Under a launcher (``torchrun --nproc_per_node N --no-python codi2 precompute-targets …`` or
    ``deepspeed --num_gpus N $(which codi2) precompute-targets …``) each process takes the shard of its ``RANK`` of
    ``WORLD_SIZE`` and runs on ``cuda:LOCAL_RANK``; the processes do not talk to each other."""
    p = subparsers.add_parser("precompute-targets",
                              help="compute every output media's head target into a cache beside the manifest "
                                   "(several processes under torchrun/deepspeed each take a shard)")
    p.add_argument("manifest", nargs="+", help="one or more manifests (one model load for all)")
    p.add_argument("--model", required=True, help="a codi2 model directory")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-root", default=None, help=f"default: <manifest folder>/{CACHE_DIR}")
    p.add_argument("--device", default=None,
                   help="where the encoder and decoders run (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--rank", type=int, default=None, help="this process's shard (default: $RANK, else 0)")
    p.add_argument("--world-size", type=int, default=None, help="number of shards (default: $WORLD_SIZE, else 1)")
    p.add_argument("--stats-dir", default=None, help="also write this rank's stats to DIR/precompute-rank{R}.json")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    p.add_argument("--json", action="store_true", help="print the stats as JSON (no progress bar)")
    p.set_defaults(func=_precompute_command)
