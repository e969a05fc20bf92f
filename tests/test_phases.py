"""The alternating-phase sampler: homogeneity, schedules, data parallelism, epochs, exact resume."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from train.phases import PhaseSampler

# 5 phases with different sizes; indices are disjoint per phase.
DATA = {"text": list(range(0, 10)), "image": list(range(10, 22)), "audio": list(range(22, 30)),
        "video": list(range(30, 36)), "multi": list(range(36, 44))}
PHASE_OF = {i: p for p, idx in DATA.items() for i in idx}


def take(s: PhaseSampler, n: int):
    return [s.next_batch() for _ in range(n)]


def test_batches_are_phase_homogeneous_and_round_robin():
    s = PhaseSampler(DATA, batch_size=2, schedule="round_robin", seed=1)
    batches = take(s, 20)
    assert all({PHASE_OF[i] for i in b.indices} == {b.phase} for b in batches)
    assert all(len(b.indices) == 2 for b in batches)
    order = sorted(DATA)
    assert [b.phase for b in batches] == [order[k % 5] for k in range(20)]


def test_per_n_steps_and_zero_weight():
    s = PhaseSampler(DATA, batch_size=1, schedule="per_n_steps", n_steps=3, weights={"multi": 0}, seed=0)
    phases = [b.phase for b in take(s, 12)]
    assert phases == ["audio"] * 3 + ["image"] * 3 + ["text"] * 3 + ["video"] * 3
    assert "multi" not in s.phases


def test_weighted_follows_weights_and_is_seeded():
    w = {"text": 1, "image": 3, "audio": 0, "video": 0, "multi": 0}
    a = [b.phase for b in take(PhaseSampler(DATA, 1, weights=w, schedule="weighted", seed=7), 400)]
    b = [b.phase for b in take(PhaseSampler(DATA, 1, weights=w, schedule="weighted", seed=7), 400)]
    c = [b.phase for b in take(PhaseSampler(DATA, 1, weights=w, schedule="weighted", seed=8), 400)]
    assert a == b and a != c
    n = Counter(a)
    assert set(n) == {"text", "image"}
    assert 0.65 < n["image"] / 400 < 0.85


@pytest.mark.parametrize("schedule", ["round_robin", "weighted", "per_n_steps"])
def test_ranks_agree_on_phase_and_get_disjoint_shards(schedule):
    world = 2
    ranks = [PhaseSampler(DATA, batch_size=2, schedule=schedule, n_steps=2, seed=3, rank=r, world_size=world)
             for r in range(world)]
    for _ in range(40):
        bs = [s.next_batch() for s in ranks]
        assert len({b.phase for b in bs}) == 1
        assert len({b.step for b in bs}) == 1
        a, b = set(bs[0].indices), set(bs[1].indices)
        assert not a & b and len(a) == len(b) == 2
        assert {PHASE_OF[i] for i in a | b} == {bs[0].phase}


def test_epochs_per_phase_cover_each_record_once_then_reshuffle():
    s = PhaseSampler({"image": list(range(8)), "text": list(range(8, 12))}, batch_size=2, seed=0)
    seen = {"image": [], "text": []}
    for _ in range(8):  # alternating: 4 image batches = 1 image epoch, 4 text batches = 2 text epochs
        b = s.next_batch()
        seen[b.phase].append((b.epoch, tuple(b.indices)))
    img = [i for e, ix in seen["image"] if e == 0 for i in ix]
    assert sorted(img) == list(range(8))
    txt = [(e, i) for e, ix in seen["text"] for i in ix]
    assert sorted(i for e, i in txt if e == 0) == sorted(i for e, i in txt if e == 1) == list(range(8, 12))
    assert s.epochs() == {"image": 1.0, "text": 2.0}
    nxt = s.next_batch()
    assert nxt.phase == "image" and nxt.new_epoch and nxt.epoch == 1
    # the next epoch is another order (seeded by epoch)
    assert s._order("image", 0) != s._order("image", 1)


def test_state_dict_resumes_exactly_through_json():
    for schedule in ("weighted", "round_robin"):
        s = PhaseSampler(DATA, batch_size=2, schedule=schedule, seed=5, rank=1, world_size=2)
        take(s, 13)
        state = json.loads(json.dumps(s.state_dict()))
        expected = [(b.phase, b.indices, b.epoch) for b in take(s, 30)]
        r = PhaseSampler(DATA, batch_size=2, schedule=schedule, seed=5, rank=1, world_size=2)
        r.load_state_dict(state)
        assert [(b.phase, b.indices, b.epoch) for b in take(r, 30)] == expected


def test_state_from_other_settings_is_refused():
    s = PhaseSampler(DATA, batch_size=2, seed=5)
    other = PhaseSampler(DATA, batch_size=3, seed=5)
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(s.state_dict())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="fewer records than one global batch"):
        PhaseSampler({"video": [1, 2, 3]}, batch_size=2, world_size=2)
    with pytest.raises(ValueError, match=r"unknown phases \['imgae'\]"):
        PhaseSampler({"text": [1, 2]}, batch_size=1, weights={"imgae": 1.0})
    s = PhaseSampler({"text": [1, 2]}, batch_size=1, weights={"multi": 0.0, "image": 1.0})  # absent: ignored
    assert s.phases == ["text"]
    with pytest.raises(ValueError, match="schedule"):
        PhaseSampler(DATA, batch_size=1, schedule="random")


def test_length_grouping_reduces_padding():
    import random

    rng = random.Random(0)
    idx = {"text": list(range(400))}
    lengths = {i: rng.randint(10, 500) for i in range(400)}

    def padding(s):
        tot = 0
        for b in take(s, 100):
            ls = [lengths[i] for i in b.indices]
            tot += max(ls) * len(ls) - sum(ls)
        return tot

    plain = padding(PhaseSampler(idx, batch_size=4, seed=0))
    grouped = padding(PhaseSampler(idx, batch_size=4, seed=0, lengths=lengths, group_by_length=True))
    assert grouped < 0.3 * plain
