"""Target precomputation and the disk caches (codi2.targets) with the tiny pipeline."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from codi2.conversation import Part
from codi2.data import ManifestDataset
from codi2.modality import Modality
from codi2.targets import (InputFeatureCache, TargetCache, caption_key, default_cache_root, precompute_targets)
from tests.helpers import build_manifest, record, text_msg

# distinct output targets in build_manifest: out.png, out2.png, "a low hum" (twice), "it moves left"
N_TARGETS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_pipeline_dir):
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(tiny_pipeline_dir).model


def _manifest(d: Path) -> Path:
    """build_manifest's records + one whose *output* image is corrupt."""
    path = build_manifest(d)
    bad = record("b-out-corrupt", text_msg("user", "draw"),
               {"role": "assistant", "content": [{"type": "image", "path": "media/corrupt.png"}]})
    with open(path, "a") as f:
        f.write(json.dumps(bad) + "\n")
    return path


@pytest.fixture
def manifest(tmp_path) -> Path:
    return _manifest(tmp_path)


@pytest.fixture(scope="module")
def precomputed(model, tmp_path_factory) -> tuple[Path, dict]:
    """A manifest whose targets were precomputed once (decoders unloaded after)."""
    path = _manifest(tmp_path_factory.mktemp("precomputed"))
    return path, precompute_targets(path, model, batch_size=2, progress=False)


def _outputs(manifest: Path) -> dict[Modality, list[Part]]:
    ds = ManifestDataset(manifest)
    out: dict[Modality, list[Part]] = {}
    for r in ds.records:
        if r.id == "b-out-corrupt":
            continue
        for p in r.media_parts(output=True):
            out.setdefault(Modality(p.type), []).append(p)
    return out


def test_precompute_equals_compute_targets(model, precomputed):
    manifest, stats = precomputed
    assert stats["computed"] == N_TARGETS and stats["cached"] == 0
    assert [f["id"] for f in stats["failed"]] == ["b-out-corrupt"]
    assert {b["id"] for b in stats["bad_records"]} == {"line 9", "b-roles", "b-caption", "t-plain"}
    assert stats["by_modality"]["image"] == {"computed": 2, "cached": 0, "failed": 1}
    assert stats["cache_root"] == str(default_cache_root(manifest))
    assert not model.decoder(Modality.AUDIO).loaded and not model.decoder(Modality.VIDEO).loaded

    cache = TargetCache(default_cache_root(manifest), model.cfg, base_dir=model.base_dir)
    for m, parts in _outputs(manifest).items():
        got = cache.get(m, parts)
        want = model.compute_targets(m, [Part(type=p.type, path=p.path, caption=p.caption) for p in parts])
        assert set(got) == set(want)
        for k in want:
            assert got[k].shape == (len(parts), *model.cfg.modalities[m.value].head.targets[k])
            torch.testing.assert_close(got[k], want[k])
    model.decoder(Modality.AUDIO).unload()
    model.decoder(Modality.VIDEO).unload()

    again = precompute_targets(manifest, model, progress=False)
    assert again["computed"] == 0 and again["cached"] == N_TARGETS


def test_precompute_resumes_after_interrupt(model, manifest, monkeypatch):
    real = model.compute_targets
    calls = []

    def dies_after_two(m, parts):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(m)
        return real(m, parts)

    monkeypatch.setattr(model, "compute_targets", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        precompute_targets(manifest, model, batch_size=1, progress=False)
    monkeypatch.setattr(model, "compute_targets", real)
    root = default_cache_root(manifest)
    assert len(list(root.rglob("*.safetensors"))) == 2 and not list(root.rglob("*.tmp-*"))

    stats = precompute_targets(manifest, model, batch_size=1, progress=False)
    assert stats["cached"] == 2 and stats["computed"] == N_TARGETS - 2
    cache = TargetCache(root, model.cfg, base_dir=model.base_dir)
    for m, parts in _outputs(manifest).items():
        cache.get(m, parts)  # every target present and well-formed
    model.decoder(Modality.AUDIO).unload()


def test_interrupted_write_leaves_no_entry(model, tmp_path, monkeypatch):
    import safetensors.torch

    cache = TargetCache(tmp_path, model.cfg, base_dir=model.base_dir)
    part = Part(type="audio", path="x.wav", caption="a hum")

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        cache.put(Modality.AUDIO, part, {"generated_prompt_embeds": torch.zeros(8, 16), "prompt_embeds": torch.zeros(8, 16)})
    assert not cache.has(Modality.AUDIO, part)
    assert not [f for f in cache.folder(Modality.AUDIO).rglob("*") if f.is_file() and f.suffix != ".json"]


def test_fingerprints(model, tmp_path):
    cfg, base = model.cfg, model.base_dir
    a = TargetCache(tmp_path, cfg, base_dir=base)
    # the same model copied elsewhere reads the same entries
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    b = TargetCache(tmp_path, cfg, base_dir=copy)
    assert all(a.folder(m) == b.folder(m) for m in Modality)
    # another audio decoder dtype / another image head shape: new folders for those modalities only
    mods = dict(cfg.modalities)
    au = mods["audio"]
    mods["audio"] = dataclasses.replace(au, decoder=dataclasses.replace(au.decoder, dtype="bfloat16"))
    c = TargetCache(tmp_path, dataclasses.replace(cfg, modalities=mods), base_dir=base)
    assert c.folder(Modality.AUDIO) != a.folder(Modality.AUDIO) and c.folder(Modality.IMAGE) == a.folder(Modality.IMAGE)
    im = mods["image"]
    mods["image"] = dataclasses.replace(im, head=dataclasses.replace(im.head, targets={"image_embeds": [32]}))
    d = TargetCache(tmp_path, dataclasses.replace(cfg, modalities=mods), base_dir=base)
    assert d.folder(Modality.IMAGE) != a.folder(Modality.IMAGE)
    # other encoder weights: new image folder
    w = copy / "encoder" / "imagebind.pth"
    sd = torch.load(w)
    next(iter(sd.values())).add_(1.0)
    torch.save(sd, w)
    # another audio decoder (its files differ): new audio folder
    index = copy / "decoders" / "audio" / "model_index.json"
    index.write_text(index.read_text() + "\n")
    e = TargetCache(tmp_path, cfg, base_dir=copy)
    assert e.folder(Modality.AUDIO) != a.folder(Modality.AUDIO)
    assert e.folder(Modality.IMAGE) != a.folder(Modality.IMAGE) and e.folder(Modality.VIDEO) == a.folder(Modality.VIDEO)
    with pytest.raises(ValueError, match="base_dir"):
        TargetCache(tmp_path, cfg).folder(Modality.IMAGE)


def test_get_missing_names_key(model, tmp_path):
    cache = TargetCache(tmp_path, model.cfg, base_dir=model.base_dir)
    good = Part(type="audio", path="a.wav", caption="present")
    cache.put(Modality.AUDIO, good, {"generated_prompt_embeds": torch.ones(8, 16), "prompt_embeds": torch.ones(8, 16)})
    assert json.loads((cache.folder(Modality.AUDIO) / "fingerprint.json").read_text())["modality"] == "audio"
    with pytest.raises(KeyError, match=caption_key("absent")) as e:
        cache.get(Modality.AUDIO, [good, Part(type="audio", path="b.wav", caption="absent")])
    assert "'absent'" in str(e.value) and "precompute-targets" in str(e.value)
    out = cache.get(Modality.AUDIO, [good, good])
    assert out["prompt_embeds"].shape == (2, 8, 16)
    with pytest.raises(ValueError, match="head expects"):
        cache.put(Modality.AUDIO, good, {"prompt_embeds": torch.ones(8, 16)})


def test_training_batch_from_caches(model, precomputed, monkeypatch):
    """Dataset -> collate with cached targets and a disk feature cache -> forward: no decoder, no re-encoding."""
    manifest, _ = precomputed
    ds = ManifestDataset(manifest, load_outputs=False)
    recs = [ds[i] for i, r in enumerate(ds.records) if r.id in ("a-gen", "m-joint")]
    targets = TargetCache(default_cache_root(manifest), model.cfg, base_dir=model.base_dir)
    feats = InputFeatureCache(default_cache_root(manifest), model.cfg, base_dir=model.base_dir)
    monkeypatch.setattr(model, "compute_targets", lambda *a: pytest.fail("target computed instead of read"))
    batch = model.collate([r.messages for r in recs], feature_cache=feats, target_fn=targets.target_fn())
    assert set(batch.outputs) == {Modality.IMAGE, Modality.AUDIO} and Modality.IMAGE in batch.inputs
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.loss) and "feature/audio" in out.parts
    assert not model.decoder(Modality.AUDIO).loaded
    key = recs[0].media_parts(output=False)[0].key
    assert (Modality.IMAGE, key) in feats and feats[(Modality.IMAGE, key)].shape[0] == model.n_in[Modality.IMAGE]
    # second time the encoder is not run
    monkeypatch.setattr(model.encoder, "encode_image", lambda *a: pytest.fail("input re-encoded"))
    again = model.collate([r.messages for r in recs], feature_cache=feats, target_fn=targets.target_fn())
    torch.testing.assert_close(again.inputs[Modality.IMAGE].features, batch.inputs[Modality.IMAGE].features)


def test_precompute_cli(tiny_pipeline_dir, precomputed, tmp_path, capsys):
    import argparse

    from codi2.targets import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    manifest, _ = precomputed
    args = parser.parse_args(["precompute-targets", str(manifest), "--model", str(tiny_pipeline_dir), "--json"])
    assert args.func(args) == 1  # b-out-corrupt fails
    stats = json.loads(capsys.readouterr().out)
    assert stats["cached"] == N_TARGETS and stats["computed"] == 0 and [f["id"] for f in stats["failed"]] == ["b-out-corrupt"]
    good = manifest.parent / "good.jsonl"  # the 7 good records, beside the first manifest: same default cache
    good.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()[:7]))
    args = parser.parse_args(["precompute-targets", str(good), "--model", str(tiny_pipeline_dir)])
    assert args.func(args) == 0
    assert f"0 computed, {N_TARGETS} already cached, 0 failed" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record("x", text_msg("user", "a"), {"role": "assistant", "content": [
        {"type": "image", "path": "missing.png"}]})) + "\n")
    args = parser.parse_args(["precompute-targets", str(bad), "--model", str(tiny_pipeline_dir)])
    assert args.func(args) == 1
    assert "FAILED x (image)" in capsys.readouterr().out


def test_target_model_matches_codi2_model(model, tiny_pipeline_dir, precomputed):
    """The LLM-free TargetModel the CLI uses computes the same targets as CoDi2Model."""
    from codi2.targets import TargetModel

    light = TargetModel.from_pretrained(tiny_pipeline_dir)
    for m, parts in _outputs(precomputed[0]).items():
        fresh = lambda: [Part(type=p.type, path=p.path, caption=p.caption) for p in parts]  # noqa: E731
        want, got = model.compute_targets(m, fresh()), light.compute_targets(m, fresh())
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k])
    for m in (Modality.AUDIO, Modality.VIDEO):
        model.decoder(m).unload()
        light.decoder(m).unload()
    assert not hasattr(light, "llm")


def test_precompute_without_decoder_fails_loudly(tiny_model, tmp_path):
    """A model whose config has no audio decoder: one clear error naming the config field, not N failures."""
    path = build_manifest(tmp_path, broken=False)
    with pytest.raises(FileNotFoundError, match="modalities.audio.decoder.path"):
        precompute_targets(path, tiny_model, cache_root=tmp_path / "cache", progress=False)


def test_precompute_sharded_over_ranks(model, manifest, monkeypatch):
    """Two ranks split the targets with no communication: disjoint shards, together all of them; a rank killed
    part-way resumes its own shard only; the launcher's RANK/WORLD_SIZE are read and checked."""
    from codi2.targets import dist_env

    real = model.compute_targets
    seen: dict[int, list] = {0: [], 1: []}
    rank_now = [0]

    def spy(m, parts):
        seen[rank_now[0]].extend((m, p.caption if m is not Modality.IMAGE else p.path) for p in parts)
        return real(m, parts)

    monkeypatch.setattr(model, "compute_targets", spy)
    stats = []
    for r in (0, 1):
        rank_now[0] = r
        stats.append(precompute_targets(manifest, model, batch_size=1, progress=False, rank=r, world_size=2))
    assert not set(seen[0]) & set(seen[1])
    assert sum(s["computed"] for s in stats) == N_TARGETS and all(s["shard"] > 0 for s in stats)
    assert stats[0]["bad_records"] and not stats[1]["bad_records"]  # unparseable lines reported once
    again = precompute_targets(manifest, model, progress=False)  # one rank over everything: all cached
    assert again["computed"] == 0 and again["cached"] == N_TARGETS
    model.decoder(Modality.AUDIO).unload()
    model.decoder(Modality.VIDEO).unload()
    with pytest.raises(ValueError, match="rank"):
        precompute_targets(manifest, model, progress=False, rank=2, world_size=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist_env() == (1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        dist_env()


def test_memory_feature_cache_is_a_byte_capped_lru():
    from codi2.targets import MemoryFeatureCache

    c = MemoryFeatureCache(max_bytes=3 * 4 * 8)  # three (2, 4) float32 entries
    for i in range(3):
        c[(Modality.IMAGE, f"k{i}")] = torch.full((2, 4), float(i))
    assert len(c) == 3 and c.nbytes == 96
    c[(Modality.IMAGE, "k0")]  # k0 used: k1 is now the least recently used
    c[("image", "k3")] = torch.zeros(2, 4)
    assert (Modality.IMAGE, "k1") not in c and (Modality.IMAGE, "k0") in c and c.evictions == 1
    assert c.nbytes <= c.max_bytes
    batch = torch.zeros(100, 2, 4)
    c[(Modality.AUDIO, "row")] = batch[0]  # a row of a batch is copied: the batch is not kept alive
    assert c[(Modality.AUDIO, "row")].untyped_storage().nbytes() == 32
    c[(Modality.AUDIO, "huge")] = torch.zeros(100, 4)  # larger than the cap: not kept
    assert (Modality.AUDIO, "huge") not in c and c.nbytes <= c.max_bytes
    with pytest.raises(KeyError, match="k1"):
        c[(Modality.IMAGE, "k1")]
    with pytest.raises(ValueError, match="positive"):
        MemoryFeatureCache(0)
