"""The mini world: renders, captions, task manifests (data_builders/world)."""
from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from codi2.conversation import message_from_dict
from codi2.media import load_audio, load_image, load_video
from data_builders.world import build as wb
from data_builders.world.world import (
    COLOURS,
    DIRECTIONS,
    MODALITY_ATTRS,
    PITCH_HZ,
    POSITIONS,
    RGB,
    SHAPES,
    SIZES,
    WorldObject,
    audio_caption,
    image_caption,
    parse_caption,
    render_image,
    render_sound,
    render_video,
    video_caption,
)

ALL_OBJECTS = [WorldObject(*a) for a in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS)]


def _records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Every task twice, train split."""
    return wb.build_world(tmp_path_factory.mktemp("world"), n=2 * len(wb.TASKS), seed=3)


def test_same_seed_same_bytes(world, tmp_path):
    again = wb.build_world(tmp_path, n=2 * len(wb.TASKS), seed=3)
    assert again.read_bytes() == world.read_bytes()
    other = wb.build_world(tmp_path / "other", n=2 * len(wb.TASKS), seed=4)
    assert other.read_bytes() != world.read_bytes()



def test_same_seed_same_media_files_videos_included(tmp_path):
    """Two builds write the same files byte for byte, mp4 clips included: with x264's assembly paths about one
    clip in three of two such builds had other bytes (20 of the 60 here), so the trainer stages and the evaluation,
    which read these files, saw other frames on every build."""
    a = wb.build_world(tmp_path / "a", n=60, seed=0, tasks=["caption_video"], split="test").parent
    b = wb.build_world(tmp_path / "b", n=60, seed=0, tasks=["caption_video"], split="test").parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert sum(p.suffix == ".mp4" for p in files) == 60
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert [p for p in files if (a / p).read_bytes() != (b / p).read_bytes()] == []

def test_splits_are_disjoint(world, tmp_path):
    files = {s: set() for s in wb.SPLITS}
    for split in wb.SPLITS:
        out = world if split == "train" else wb.build_world(tmp_path / split, 2 * len(wb.TASKS), seed=3, split=split)
        for r in _records(out):
            assert r["meta"]["split"] == split and r["id"].startswith(f"world-{split}-")
            files[split] |= {p["path"] for m in r["messages"] for p in m["content"] if p["type"] != "text"}
    for a, b in itertools.combinations(wb.SPLITS, 2):
        assert files[a] and not files[a] & files[b], (a, b)
    # render seeds carry their stream
    assert {wb.render_seed(3, v, s) % wb.N_STREAMS for v in range(20) for s in range(4)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        wb.build_world(tmp_path / "x", 1, 0, split="dev")


def test_every_task_valid_schema(world):
    records = _records(world)
    assert {r["meta"]["task"] for r in records} == set(wb.TASKS)
    for r in records:
        assert r["schema"] == 1 and r["source"] == "world" and set(r) == {"schema", "id", "source", "messages", "meta"}
        msgs = [message_from_dict(m, where=r["id"]) for m in r["messages"]]
        assert [m.role for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        outputs = [(i, p) for i, m in enumerate(r["messages"]) if m["role"] == "assistant"
                   for p in m["content"] if p["type"] != "text"]
        media_targets = [t for t in r["meta"]["targets"] if t["modality"] != "text"]
        assert [(i, p["path"]) for i, p in outputs] == [(t["turn"], t["path"]) for t in media_targets]
        assert r["meta"]["targets"], r["id"]
        for _, p in outputs:
            assert p["caption"] and parse_caption(p["caption"]) == next(
                t["attrs"] for t in media_targets if t["path"] == p["path"])
        for t in r["meta"]["targets"] + r["meta"]["inputs"]:
            want = set(MODALITY_ATTRS.get(t["modality"], t["attrs"]))
            assert set(t["attrs"]) == want, (r["id"], t)
            if "path" in t:
                assert not Path(t["path"]).is_absolute() and (world.parent / t["path"]).is_file()
        assert (r["meta"]["shots"] > 0) == r["meta"]["task"].startswith("icl_")


def test_media_decode(world):
    paths = {p["path"] for r in _records(world) for m in r["messages"] for p in m["content"] if p["type"] != "text"}
    kinds = {Path(p).suffix for p in paths}
    assert kinds == {".png", ".wav", ".mp4"}
    for p in sorted(paths):
        f = world.parent / p
        if f.suffix == ".png":
            assert load_image(f).size == (64, 64)
        elif f.suffix == ".wav":
            a = load_audio(f)
            assert a.sample_rate == 16000 and a.samples.shape[-1] == 16000
        else:
            v = load_video(f)
            assert v.frames.shape == (12, 64, 64, 3) and v.fps == pytest.approx(8.0)


def test_media_deduplicated_by_content(tmp_path):
    store = wb.MediaStore(tmp_path)
    obj = WorldObject("star", "blue", "large", "left")
    a = store.image(obj, seed=5)
    assert store.image(obj, seed=5) == a and store.image(obj, seed=6) != a
    assert store.audio(obj, 5) == store.audio(obj.with_(position="top"), 5)  # position is not heard
    assert store.n_written == 3
    fresh = wb.MediaStore(tmp_path)  # a second build into the same folder reuses the file
    assert fresh.image(obj, 5) == a and fresh.n_written == 0


def test_captions_parse_back_exactly():
    rng = np.random.default_rng(0)
    for obj in ALL_OBJECTS:
        for r in (None, rng, rng):
            assert parse_caption(image_caption(obj, r)) == obj.attrs("image")
            assert parse_caption(audio_caption(obj, r)) == obj.attrs("audio")
        for d in DIRECTIONS:
            assert parse_caption(video_caption(obj, d, rng)) == obj.attrs("video") | {"direction": d}
    assert parse_caption("There is a big blue star on the left") == {
        "size": "large", "colour": "blue", "shape": "star", "position": "left"}
    assert parse_caption("a tiny square sliding to the left") == {"size": "small", "shape": "square", "direction": "left"}
    assert parse_caption("nothing to see here") == {}


def test_sound_pitch_encodes_colour():
    peaks = []
    for c in COLOURS:
        for shape in ("circle", "square"):
            a = render_sound(WorldObject(shape, c, "large"), seed=1)
            x = a.samples[0]
            spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
            peak = np.fft.rfftfreq(len(x), 1 / a.sample_rate)[spec.argmax()]
            assert peak == pytest.approx(PITCH_HZ[c], rel=0.02), (c, shape, peak)
        peaks.append(peak)
    assert peaks == sorted(peaks)  # colour order = pitch order
    # size: the large tone is louder and longer than the small one
    small, large = (render_sound(WorldObject("circle", "red", s), 1).samples[0] for s in ("small", "large"))
    assert np.abs(large).max() > 1.8 * np.abs(small).max()
    assert (np.abs(large) > 0.05).sum() > 1.5 * (np.abs(small) > 0.05).sum()
    assert np.array_equal(render_sound(WorldObject("star", "red", "small"), 9).samples,
                          render_sound(WorldObject("star", "red", "small"), 9).samples)


def _centroid(frame: np.ndarray) -> np.ndarray:
    mask = frame.astype(np.int32).max(-1) - frame.astype(np.int32).min(-1) > 60  # coloured pixels
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_video_moves_in_its_direction():
    step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for d in DIRECTIONS:
        v = render_video(WorldObject("circle", "yellow", "small"), d, seed=2)
        assert v.frames.shape == (12, 64, 64, 3) and v.frames.dtype == np.uint8
        path = np.stack([_centroid(f) for f in v.frames])  # (T, 2) x, y
        moves = np.diff(path, axis=0) @ np.array(step[d], dtype=float)
        assert (moves > 0).all() and path[-1] @ step[d] - path[0] @ step[d] > 25, d


def test_image_shows_colour_size_position():
    for c in COLOURS:
        for pos in POSITIONS:
            img = np.asarray(render_image(WorldObject("square", c, "large", pos), seed=4)).astype(int)
            cx, cy = _centroid(img.astype(np.uint8))
            ex, ey = {"left": (18, 32), "right": (46, 32), "top": (32, 18), "bottom": (32, 46), "center": (32, 32)}[pos]
            assert abs(cx - ex) < 4 and abs(cy - ey) < 4
            assert np.abs(img[int(cy), int(cx)] - np.array(RGB[c])).max() < 30
    area = {s: (np.asarray(render_image(WorldObject("circle", "red", s), 0)).astype(int)[..., 0] > 120).sum()
            for s in SIZES}
    assert area["large"] > 2 * area["small"]


_EDIT_WORDS = re.compile(r"\b(pitch|higher|lower|louder|quieter|softer|bigger|smaller|move|colou?r|shape|size|"
                         r"timbre|sound|left|right|top|bottom|middle)\b", re.I)


def test_in_context_edits_never_name_the_edit(tmp_path):
    m = wb.build_world(tmp_path, n=24, seed=5, tasks=["icl_edit_image", "icl_edit_audio"])
    shots = set()
    for r in _records(m):
        shots.add(r["meta"]["shots"])
        user, assistant = r["messages"]
        for p in user["content"]:
            if p["type"] == "text":
                assert parse_caption(p["text"]) == {} and not _EDIT_WORDS.search(p["text"]), p["text"]
        assert all("caption" not in p for p in user["content"])
        # the assistant states the change it read off the exemplars, then shows it
        edit = r["meta"]["edits"][0]
        said = " ".join(p["text"] for p in assistant["content"] if p["type"] == "text")
        assert said.startswith(wb.change_words(edit["attr"], edit["value"])), said
        media = [p for p in user["content"] if p["type"] != "text"]
        assert len(media) == 2 * r["meta"]["shots"] + 1
        # each exemplar pair differs exactly in the edited attribute, to the edited value
        edit = r["meta"]["edits"][0]
        ins = r["meta"]["inputs"]
        for a, b in zip(ins[0:-1:2], ins[1:-1:2]):
            assert {k for k in a["attrs"] if a["attrs"][k] != b["attrs"][k]} == {edit["attr"]}
            assert b["attrs"][edit["attr"]] == edit["value"]
        assert r["meta"]["targets"][0]["attrs"] == ins[-1]["attrs"] | {edit["attr"]: edit["value"]}
    assert shots <= {1, 2, 3, 4} and len(shots) > 1


def test_icl_shots_fixes_the_exemplar_count_and_nothing_else(tmp_path):
    tasks = ["icl_edit_image", "caption_image", "icl_edit_audio"]
    fixed = _records(wb.build_world(tmp_path / "fixed", n=6, seed=5, tasks=tasks, split="test", icl_shots=4))
    drawn = _records(wb.build_world(tmp_path / "drawn", n=6, seed=5, tasks=tasks, split="test"))
    assert [r["meta"]["shots"] for r in fixed if r["meta"]["task"].startswith("icl_")] == [4, 4, 4, 4]
    for a, b in zip(fixed, drawn):
        if a["meta"]["task"] == "caption_image":  # other tasks draw from their own record's generator
            assert a == b
        else:
            assert len([p for p in a["messages"][0]["content"] if p["type"] != "text"]) == 9
    for bad in (0, 5):
        with pytest.raises(ValueError, match=r"icl_shots must be in \[1, 4\]"):
            wb.build_world(tmp_path / "bad", n=1, seed=0, icl_shots=bad)


def test_edits_keep_other_attributes(tmp_path):
    m = wb.build_world(tmp_path, n=30, seed=6, tasks=["edit_image", "edit_audio", "multi_round_edit"])
    for r in _records(m):
        edits, targets = r["meta"]["edits"], r["meta"]["targets"]
        prev = r["meta"]["inputs"][0]["attrs"]
        assert len(edits) == len(targets) == (3 if r["meta"]["task"] == "multi_round_edit" else 1)
        for e, t in zip(edits, targets):
            assert t["attrs"] == prev | {e["attr"]: e["value"]} and prev[e["attr"]] != e["value"]
            prev = t["attrs"]
            if t["modality"] == "audio" and e["attr"] == "colour":
                low = e["instruction"].lower()
                assert e["value"] in low or ("raise" in low or "higher" in low or "lower" in low)


def test_cli(tmp_path):
    assert wb.main(["--out", str(tmp_path / "a"), "--n", "3", "--seed", "1", "--tasks", "gen_video", "joint_image_audio"]) == 0
    recs = _records(tmp_path / "a" / "manifest.jsonl")
    assert [r["meta"]["task"] for r in recs] == ["gen_video", "joint_image_audio", "gen_video"]
    parser = argparse.ArgumentParser()
    wb.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["world", "--out", str(tmp_path / "b"), "--n", "2", "--split", "test"])
    assert args.func(args) == 0 and (tmp_path / "b" / "manifest.jsonl").is_file()
    with pytest.raises(ValueError, match="unknown or no tasks"):
        wb.build_world(tmp_path / "c", 2, 0, tasks=["paint"])
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        WorldObject("star", "pink", "small")


def test_spot_the_change_shows_two_renders_one_attribute_apart_and_names_the_change(tmp_path):
    """spot_change_image / spot_change_audio: the in-context tasks' first step alone. Two uncaptioned renders of
    one object with the same look, exactly one attribute apart (the one in meta.edits), and a reply that is the
    in-context replies' first sentence; not in the default mix."""
    assert not set(wb.SPOT_TASKS) & set(wb.TASKS + wb.OPEN_TASKS)
    recs = _records(wb.build_world(tmp_path / "s", n=40, seed=5, tasks=list(wb.SPOT_TASKS)))
    changed = set()
    for r in recs:
        modality = r["meta"]["task"].rsplit("_", 1)[1]
        (edit,) = r["meta"]["edits"]
        user, reply = r["messages"]
        media = [p for p in user["content"] if p["type"] != "text"]
        assert [p["type"] for p in media] == [modality, modality] and not any("caption" in p for p in media)
        before, after = (x["attrs"] for x in r["meta"]["inputs"])
        assert {a for a in before if before[a] != after[a]} == {edit["attr"]} and after[edit["attr"]] == edit["value"]
        assert reply["content"] == [{"type": "text", "text": wb.change_words(edit["attr"], edit["value"])}]
        assert r["meta"]["targets"] == [] and r["meta"]["shots"] == 0
        for j, msg in enumerate(r["messages"]):
            message_from_dict(msg, f"{r['id']}.messages[{j}]")  # the training schema reads it
        changed.add((modality, edit["attr"]))
    assert changed == {("image", a) for a in ("shape", "colour", "size", "position")} | \
        {("audio", a) for a in ("shape", "colour", "size")}  # a sound has no position
    a = load_image(tmp_path / "s" / recs[0]["messages"][0]["content"][0]["path"])
    b = load_image(tmp_path / "s" / recs[0]["messages"][0]["content"][1]["path"])
    assert a.size == b.size and a.tobytes() != b.tobytes()
    default = _records(wb.build_world(tmp_path / "d", n=len(wb.TASKS), seed=0))
    assert not {r["meta"]["task"] for r in default} & set(wb.SPOT_TASKS)


def test_open_tasks_name_one_attribute_and_the_reply_names_the_choice(tmp_path):
    """gen_open_image / gen_open_audio / joint_open: the prompt names a colour or a shape, the reply names the whole
    object it shows (whose captions the heads' targets come from), meta.targets keep only the asked attribute;
    they are not in the default mix, so the recipe's data does not change."""
    assert not set(wb.OPEN_TASKS) & set(wb.TASKS) and wb.ALL_TASKS == (wb.TASKS + wb.OPEN_TASKS + wb.SPOT_TASKS
                                                            + wb.TWO_EDIT_TASKS + wb.SCOPE_TASKS)
    m = wb.build_world(tmp_path / "o", n=12, seed=2, tasks=list(wb.OPEN_TASKS))
    recs = _records(m)
    assert {r["meta"]["task"] for r in recs} == set(wb.OPEN_TASKS)
    for r in recs:
        (attr, value), = r["meta"]["asked"].items()
        assert attr in wb.OPEN_ATTRS
        for j, msg in enumerate(r["messages"]):
            message_from_dict(msg, f"{r['id']}.messages[{j}]")  # the training schema reads it
        ask = r["messages"][0]["content"][0]["text"]
        assert (f"something {value}" if attr == "colour" else f"a {value}") in ask
        reply = r["messages"][1]["content"]
        outputs = [p for p in reply if p["type"] != "text"]
        full = parse_caption(reply[0]["text"])  # the reply names every attribute of what it shows
        assert full[attr] == value and all(parse_caption(p["caption"])[a] == v for p in outputs for a, v in full.items()
                                           if a in parse_caption(p["caption"]))
        assert all(t["attrs"] == {attr: value} for t in r["meta"]["targets"])
        if r["meta"]["task"] == "joint_open":
            assert [p["type"] for p in outputs] == ["image", "audio"]
            what = ask.split("see and hear ")[-1].rstrip(".") if "see and hear" in ask else None
            sep = r["meta"]["separate"]
            assert sep["image"].startswith("Show me ") and sep["audio"].startswith("Let me hear ")
            assert what is None or sep["image"] == f"Show me {what}."
        else:
            assert "separate" not in r["meta"] and len(outputs) == 1
    assert wb.main(["--out", str(tmp_path / "cli"), "--n", "1", "--seed", "0", "--tasks", "joint_open"]) == 0
    default = _records(wb.build_world(tmp_path / "d", n=len(wb.TASKS), seed=0))
    assert not {r["meta"]["task"] for r in default} & set(wb.OPEN_TASKS)
    with pytest.raises(ValueError, match="open prompts name one of colour, shape"):
        wb.open_phrase(WorldObject("star", "red", "small"), "size")
