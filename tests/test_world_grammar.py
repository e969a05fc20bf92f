"""The request grammar (data_builders/world/grammar.py): train and held-out frames apart, records deterministic and
the same objects at every --frames, out-of-scope prompts and their judge, two-attribute edits and their scoring."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from data_builders.world import build as wb
from data_builders.world import grammar as G


def _records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def _user_texts(records: list[dict]) -> list[str]:
    return [p["text"] for r in records for m in r["messages"] if m["role"] == "user" for p in m["content"]
            if p["type"] == "text"]


def _all_frames(side: str, oos: bool = True) -> list[str]:
    out = [f for fr in G.FRAMES.values() for f in fr[side]]
    out += [f for by_attr in G.EDIT_FRAMES.values() for fr in by_attr.values() for f in fr[side]]
    out += [f.strip() for fr in G.POLITE.values() for f in fr[side]]
    if oos:
        out += [f for fr in G.OOS_FRAMES.values() for f in fr[side]]
    return out


def _fragment(frame: str) -> str:
    """The longest literal run of a frame between its slots, lower case, without end punctuation."""
    parts = [p.strip(" .,?!:;").lower() for p in re.split(r"\{[a-z]\}", frame)]
    return max(parts, key=len)


def test_train_and_heldout_frames_are_disjoint():
    """Every table has both train sides and the held-out side, and no held-out entry is on either train side
    (train2, the first held-out set, trains since stage 15)."""
    for name, table in [("frames", G.FRAMES), ("politeness", G.POLITE), ("out of scope", G.OOS_FRAMES)]:
        for kind, fr in table.items():
            for side in ("train", "train2"):
                assert not set(fr[side]) & set(fr["heldout"]), f"{name} {kind}: a frame on {side} and held out"
            assert fr["train"] and fr["train2"] and fr["heldout"], f"{name} {kind}: each side needs frames"
    for modality, by_attr in G.EDIT_FRAMES.items():
        for attr, fr in by_attr.items():
            for side in ("train", "train2"):
                assert not set(fr[side]) & set(fr["heldout"]) and fr["heldout"], f"edit {modality} {attr}"
    for side in ("train", "train2"):
        assert not set(G.OOS_NOUNS[side]) & set(G.OOS_NOUNS["heldout"])
        assert not set(G.OOS_TOPICS[side]) & set(G.OOS_TOPICS["heldout"])
    # the second train set adds frames: the first train side is the one stages 11-14 trained on
    assert all(set(G.FRAMES[k]["train2"]) - set(G.FRAMES[k]["train"]) for k in G.TRAIN2_MORE)


def test_no_heldout_frame_in_train_output(tmp_path):
    """Built with --frames train, no record's words hold a held-out frame (its longest literal part, where that
    part is distinctive: not inside any train frame) or a held-out out-of-scope object or topic; built with
    --frames heldout, they do."""
    train_frames = [f.lower() for f in _all_frames("train") + _all_frames("train2")]
    marks = {_fragment(f) for f in _all_frames("heldout", oos=False)}
    marks = {m for m in marks if len(m) >= 10 and not any(m in f for f in train_frames)}
    marks |= {f" {w}" for w in G.OOS_NOUNS["heldout"] + G.OOS_TOPICS["heldout"]}
    assert len(marks) > 40
    tasks = list(wb.TASKS) + list(wb.TWO_EDIT_TASKS) + list(wb.SCOPE_TASKS) * 6
    train = " \n ".join(_user_texts(_records(wb.build_world(tmp_path / "tr", n=12 * len(tasks), seed=5, tasks=tasks,
                                                             frames="train")))).lower()
    leaked = sorted(m for m in marks if m in train)
    assert not leaked, f"held-out frames in train output: {leaked}"
    train2 = " \n ".join(_user_texts(_records(wb.build_world(tmp_path / "tr2", n=12 * len(tasks), seed=5, tasks=tasks,
                                                              frames="train2")))).lower()
    leaked = sorted(m for m in marks if m in train2)
    assert not leaked, f"held-out frames in train2 output: {leaked}"
    held = " \n ".join(_user_texts(_records(wb.build_world(tmp_path / "ho", n=12 * len(tasks), seed=5, tasks=tasks,
                                                            split="test", frames="heldout")))).lower()
    assert sum(m in held for m in marks) > 20


def test_grammar_records_are_deterministic_and_keep_the_template_objects(tmp_path):
    tasks = list(wb.TASKS) + ["edit_image_two"]
    n = 2 * len(tasks)
    a = wb.build_world(tmp_path / "a", n=n, seed=3, tasks=tasks, split="test", frames="heldout")
    b = wb.build_world(tmp_path / "b", n=n, seed=3, tasks=tasks, split="test", frames="heldout")
    assert a.read_bytes() == b.read_bytes()
    t = _records(wb.build_world(tmp_path / "t", n=n, seed=3, tasks=tasks, split="test"))
    h = _records(a)
    tr = _records(wb.build_world(tmp_path / "tr", n=n, seed=3, tasks=tasks, split="test", frames="train"))
    assert [r["id"] for r in t] != [r["id"] for r in h]  # the ids name their frames (one eval can read both)
    for x, y, z in zip(t, h, tr):
        assert x["meta"]["targets"] == y["meta"]["targets"] == z["meta"]["targets"]  # same objects and media
        assert x["messages"][-1] == y["messages"][-1]  # the same reply
        assert [p.get("path") for m in x["messages"] for p in m["content"] if p["type"] != "text"] == \
            [p.get("path") for m in y["messages"] for p in m["content"] if p["type"] != "text"]  # media in order
        assert _user_texts([x]) != _user_texts([y]) or x["meta"]["task"] in wb.OPEN_TASKS
        assert y["meta"]["frames"] == "heldout" and "frames" not in x["meta"]


def test_template_records_are_unchanged_by_the_grammar(tmp_path):
    """--frames template (the default) writes the world's templates: the recipe's earlier data stays byte-identical."""
    m = wb.build_world(tmp_path / "d", n=len(wb.TASKS), seed=0)
    text = m.read_text()
    assert '"frames"' not in text and "world-train-0-000000" in text
    assert _user_texts(_records(m))[:2] == ["What is in this picture?", "Describe this sound."] or \
        all(t[:1].isupper() for t in _user_texts(_records(m)))


def test_layouts_include_the_apps_in_context_card():
    """The app's in-context card: every image first, then one sentence (intro + query)."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        parts = G.icl_parts([{"type": "image"}] * 2, {"type": "image"}, "train", rng, lambda s: {"type": "text", "text": s})
        seen.add(tuple(p["type"] for p in parts))
    assert ("image", "image", "image", "text") in seen and ("text", "image", "image", "image") in seen
    assert G.FRAMES["icl_intro"]["train"][0] + " " + G.FRAMES["icl_query"]["train"][0] == \
        "Look at these examples. Now do the same to this one:"  # the card's own words are train words


def test_out_of_scope_judge():
    rng = np.random.default_rng(1)
    for cat in G.OOS_CATEGORIES:
        reply = G.scope_reply(cat, rng)
        assert G.is_scope_reply(reply) and "Do this: " in reply
    for text in ("Here it is:", "A big green star humming.", "There is a small red circle on the left.", "",
                 "The change makes it green. Here you go:", "Here is a small blue square in the center:",
                 "I make a picture of a circle.", "Draw a small red circle."):
        assert not G.is_scope_reply(text), text


def test_out_of_scope_heldout_set_is_big_and_unseen():
    held, train = set(G.oos_prompts("heldout")), set(G.oos_prompts("train")) | set(G.oos_prompts("train2"))
    assert len(held) >= 100 and not held & train
    rng = np.random.default_rng(0)
    cats = {G.oos_prompt("heldout", rng)[0] for _ in range(200)}
    assert cats == set(G.OOS_CATEGORIES)


def test_typos_never_touch_an_attribute_word():
    rng = np.random.default_rng(0)
    for _ in range(300):
        t = G.typo("Please draw a small purple triangle on the left side quickly", rng)
        assert all(w in t.split() for w in ("small", "purple", "triangle", "left"))



def test_filler_noise_keeps_every_carrying_word_and_never_reaches_heldout():
    """Train-side requests get filler words; the words that name attributes, media or the task all stay, and a
    held-out request is the same whatever the noise rate (the held-out side never draws it)."""
    rng = np.random.default_rng(0)
    text = "Can you describe this small purple triangle on the left side for me"
    keep = [w for w in text.split() if w.lower() in G.PROTECTED]
    changed = 0
    for _ in range(300):
        t = G.noise(text, rng)
        changed += t != text
        words = t.split()
        assert all(words.count(w) >= keep.count(w) for w in keep), t
    assert changed == 300
    assert not set(G.NOISE_WORDS) & G.ATTRIBUTE_WORDS
    heldout = lambda: [G.surface("Would you mind drawing a tiny red star?", np.random.default_rng(i), "heldout")
                       for i in range(50)]
    before = heldout()
    rate, G.NOISE_RATE = G.NOISE_RATE, 1.0
    try:
        assert heldout() == before
        longer = lambda: sum(len(G.surface("Draw a tiny red star.", np.random.default_rng(i), "train").split()) > 5
                             for i in range(100))
        noisy = longer()
        G.NOISE_RATE = 0.0
        assert noisy >= longer() + 30
    finally:
        G.NOISE_RATE = rate

def _suite_with_stub_judges(found: dict):
    from data_builders.world import suite as S

    class StubJudges:
        def score_image(self, media):
            return dict(found)

        score_audio = score_video = score_image

    s = object.__new__(S.WorldSuite)
    s.J, s.parse_caption, s.judges = S.J, S.parse_caption, StubJudges()
    return s


def _two_sample(tmp_path):
    from codi2.conversation import Message, Part
    from codi2.eval.suites import Run, Sample

    target = {"shape": "circle", "colour": "blue", "size": "large", "position": "left"}
    ref = {"targets": [{"modality": "image", "turn": 1, "attrs": target}],
           "edits": [{"attr": "colour", "value": "blue"}, {"attr": "size", "value": "large"}]}
    return Sample(id="two", task="edit_image_two", shots=0, user=Message("user", [Part.from_text("x")]),
                  runs=[Run("main", ("image",))], ref=ref), target


def test_two_attribute_edit_scoring(tmp_path):
    from codi2.eval.suites import Generated
    from codi2.media import save_image
    from data_builders.world.world import WorldObject, render_image

    sample, target = _two_sample(tmp_path)
    png = save_image(render_image(WorldObject("circle", "blue", "large", "left"), 0), tmp_path / "o.png")
    gen = {"main": Generated("Here is a large blue circle on the left:", [("image", png)])}
    right = _suite_with_stub_judges(target).score(sample, gen)
    assert right["exact"] == 1.0 and right["edit_acc"] == 1.0 and right["preserve_acc"] == 1.0
    assert right["answered"] == 1.0
    half = _suite_with_stub_judges({**target, "size": "small"}).score(sample, gen)  # one change lost
    assert half["exact"] == 0.0 and half["edit_acc"] == 0.0 and half["preserve_acc"] == 1.0
    moved = _suite_with_stub_judges({**target, "position": "top"}).score(sample, gen)  # the rest not kept
    assert moved["exact"] == 0.0 and moved["edit_acc"] == 1.0 and moved["preserve_acc"] == 0.5  # shape kept, place not


def test_out_of_scope_scoring(tmp_path):
    from codi2.conversation import Message, Part
    from codi2.eval.suites import Generated, Run, Sample
    from codi2.media import save_image
    from data_builders.world.world import WorldObject, render_image

    s = _suite_with_stub_judges({})
    sample = Sample(id="o", task="out_of_scope", shots=0, user=Message("user", [Part.from_text("Hello!")]),
                    runs=[Run("main", ())], ref={"targets": [], "edits": []})
    reply = G.scope_reply("greeting", np.random.default_rng(0))
    assert s.score(sample, {"main": Generated(reply, [])})["exact"] == 1.0
    png = save_image(render_image(WorldObject("circle", "blue", "large", "left"), 0), tmp_path / "o.png")
    with_media = s.score(sample, {"main": Generated(reply, [("image", png)])})
    assert with_media["exact"] == 0.0 and with_media["scope"] == 1.0 and with_media["no_media"] == 0.0
    assert s.score(sample, {"main": Generated("A big green star humming.", [])})["exact"] == 0.0


def test_a_scope_reply_to_any_run_of_an_in_world_record_is_a_refusal(tmp_path):
    """joint_open asks for a picture and a sound in one reply and in two separate ones ("Show me a star."): a scope
    reply to a separate request is a wrongly refused in-world request too, not only one to the main request."""
    from codi2.conversation import Message, Part
    from codi2.eval.suites import Generated, Run, Sample
    from codi2.media import save_image
    from data_builders.world.world import WorldObject, render_image

    found = {"shape": "star", "colour": "red", "size": "large", "position": "left"}
    s = _suite_with_stub_judges(found)
    png = save_image(render_image(WorldObject("star", "red", "large", "left"), 0), tmp_path / "s.png")
    sample = Sample(id="j", task="gen_image", shots=0, user=Message("user", [Part.from_text("Draw a red star.")]),
                    runs=[Run("main", ("image",)), Run("image", ("image",))],
                    ref={"targets": [{"modality": "image", "turn": 1, "attrs": {"shape": "star", "colour": "red"}}]})
    ok = {"main": Generated("Here it is:", [("image", png)]), "image": Generated("Here you go:", [("image", png)])}
    assert s.score(sample, ok)["answered"] == 1.0
    refused = {**ok, "image": Generated(G.scope_reply(None, np.random.default_rng(0)), [])}
    scored = s.score(sample, refused)
    assert scored["answered"] == 0.0 and scored["exact"] == 1.0  # the main reply is right; a separate one refused


def test_extra_targets_report_refusals_and_the_new_tasks():
    from data_builders.world.suite import world_targets

    recs = [{"task": "gen_image", "shots": 0, "metrics": {"key": 1.0, "exact": 1.0, "answered": 1.0}},
            {"task": "gen_image", "shots": 0, "metrics": {"key": 1.0, "exact": 1.0, "answered": 0.0}},
            {"task": "out_of_scope", "shots": 0, "metrics": {"exact": 1.0}},
            {"task": "edit_image_two", "shots": 0, "metrics": {"exact": 1.0, "answered": 1.0}}]
    rows = {r["task"]: r for r in world_targets(recs) if r["task"] in ("*", "out_of_scope", "edit_image_two")}
    assert rows["*"]["value"] == pytest.approx(2 / 3) and not rows["*"]["pass"]
    assert rows["out_of_scope"]["pass"] and rows["edit_image_two"]["pass"]
    old = [{"task": "gen_image", "shots": 0, "metrics": {"key": 1.0, "exact": 1.0}}]  # an older run: no new rows
    assert not [r for r in world_targets(old) if r["task"] in ("*", "out_of_scope", "edit_image_two")]


def test_under_specified_requests_name_only_what_is_scored(tmp_path):
    """Open tasks in the grammar's words name one to three attributes (never a picture's all four); the words hold
    each named value and none of the others, and the targets are scored on the named ones only. The templates keep
    their one named attribute."""
    tasks = list(wb.OPEN_TASKS)
    values = {"size": {v: G.SIZE_WORDS[v] for v in G.SIZE_WORDS},
              "shape": {v: G.SHAPE_WORDS[v] for v in G.SHAPE_WORDS}, "colour": G.COLOUR_WORDS,
              "position": {v: tuple(w.split()[-1] for w in ws) for v, ws in G.WHERE.items()}}
    counts = set()
    for frames in ("train", "train2", "heldout"):
        for r in _records(wb.build_world(tmp_path / frames, n=60, seed=2, tasks=tasks, split="test", frames=frames)):
            asked, text = r["meta"]["asked"], " ".join(_user_texts([r])).lower()
            counts.add(len(asked))
            assert 1 <= len(asked) <= 3, r["id"]
            if r["meta"]["task"] != "gen_open_image":
                assert "position" not in asked, r["id"]
            for attr, value in asked.items():
                words = values[attr][value]
                assert any(re.search(rf"\b{re.escape(w.lower())}", text) for w in words), (r["id"], attr, text)
            for t in r["meta"]["targets"]:
                assert set(t["attrs"]) <= set(asked), r["id"]
            if "size" not in asked:
                assert not re.search(r"\b(small|little|tiny|wee|large|big|huge|giant)\b", text), (r["id"], text)
    assert counts == {1, 2, 3}
    for r in _records(wb.build_world(tmp_path / "t", n=12, seed=2, tasks=tasks, split="test")):
        assert len(r["meta"]["asked"]) == 1 and "frames" not in r["meta"]


def test_open_requests_are_checked():
    with pytest.raises(ValueError, match="allowed: image, audio, joint"):
        G.open_asked("video", np.random.default_rng(0))
