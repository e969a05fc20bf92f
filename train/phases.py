"""Alternating-phase batch sampler (CoDi-2's alternating training).

Every batch holds records of one phase only (``text`` / ``image`` / ``audio`` / ``video`` /
``multi``: the modality an assistant turn outputs), so a step needs one kind of target at a time.
Which phase a step trains is decided by a schedule:

* ``round_robin``: phases in a fixed order, one batch each (phases with weight 0 are left out);
* ``weighted``:    a random phase per step, with probability proportional to its weight;
* ``per_n_steps``: ``n`` batches of one phase, then ``n`` of the next (round-robin order).

Data parallelism: every rank builds the same sampler (same seed, same index lists) and calls
:meth:`PhaseSampler.next_batch` once per micro-batch, so every rank is in the same phase at each
step; each step takes one *global* batch of ``batch_size × world_size`` indices from that phase's
shuffled order and rank ``r`` keeps the ``r``-th slice, so ranks see disjoint records.

Epochs are per phase: when a phase's order cannot fill another global batch, the rest is dropped,
the phase is reshuffled (seeded by ``(seed, phase, epoch)``) and its epoch count goes up. The whole
position (step, per-phase cursor and epoch, the schedule's RNG) is in :meth:`state_dict`, so a
resumed run continues with exactly the batches the uninterrupted run would have had.

Optional length grouping (``group_by_length``): within each phase epoch, windows of
``group_window`` global batches are sorted by record length before being cut into batches (then the
batches of a window are shuffled), so batches pad less; this is HF's ``LengthGroupedSampler`` idea
applied per phase.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from codi2.data import PHASES

SCHEDULES = ("round_robin", "weighted", "per_n_steps")

log = logging.getLogger(__name__)


def seed_for(*parts: object) -> int:
    """A stable 64-bit seed from any parts (Python's ``hash`` is salted per process; this is not)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


@dataclass
class PhaseState:
    """Position inside one phase: the epoch number and the next unread index into its order."""

    epoch: int = 0
    cursor: int = 0
    batches: int = 0  # global batches drawn from this phase so far


@dataclass
class Batch:
    """One micro-batch for this rank. ``indices``: dataset indices (this rank's slice)."""

    step: int
    phase: str
    indices: list[int]
    epoch: int
    new_epoch: bool = False  # this batch is the first of a new epoch of its phase (epoch > 0)


@dataclass
class PhaseSamplerState:
    step: int = 0
    phases: dict[str, PhaseState] = field(default_factory=dict)
    rng: Optional[tuple] = None  # random.Random state of the weighted schedule


class PhaseSampler:
    """Phase-homogeneous batches of dataset indices; see the module docstring.

    Args:
        indices_by_phase: phase -> dataset indices of that phase (e.g. ``ManifestDataset.indices_by_phase()``).
        batch_size: records per micro-batch on each rank.
        weights: phase -> weight (≥ 0); phases missing here weigh 1.0; weight 0 disables a phase.
            Phases with no records are left out (with their weight).
        schedule: one of :data:`SCHEDULES`.
        n_steps: batches per phase turn for ``per_n_steps``.
        seed: every order and every random choice derives from it.
        rank, world_size: data-parallel position (defaults: a single process).
        lengths: dataset index -> length (tokens); needed for ``group_by_length``.
        group_by_length: sort windows of ``group_window`` global batches by length (see module docstring).
        group_window: global batches per sorting window.
    """

    def __init__(self, indices_by_phase: Mapping[str, Sequence[int]], batch_size: int,
                 weights: Optional[Mapping[str, float]] = None, schedule: str = "round_robin", n_steps: int = 1,
                 seed: int = 0, rank: int = 0, world_size: int = 1, lengths: Optional[Mapping[int, int]] = None,
                 group_by_length: bool = False, group_window: int = 16):
        if schedule not in SCHEDULES:
            raise ValueError(f"phase schedule {schedule!r} is not one of {SCHEDULES}")
        if batch_size < 1:
            raise ValueError(f"batch_size = {batch_size}; it must be ≥ 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size}: need 0 ≤ rank < world_size")
        if n_steps < 1:
            raise ValueError(f"phases.n_steps = {n_steps}; it must be ≥ 1")
        if group_by_length and lengths is None:
            raise ValueError("group_by_length needs the record lengths (lengths=)")
        weights = dict(weights or {})
        unknown = set(weights) - set(PHASES)
        if unknown:
            raise ValueError(f"phase weights name unknown phases {sorted(unknown)}; allowed: {list(PHASES)}")
        absent = sorted(p for p, w in weights.items() if w > 0 and not len(indices_by_phase.get(p, ())))
        if absent:  # usually a missing manifest: say so, but train on what there is
            log.warning("phase weights name %s but the data has no records of them; phases present: %s",
                        absent, sorted(p for p, i in indices_by_phase.items() if len(i)))
        bad_w = {p: w for p, w in weights.items() if not w >= 0}
        if bad_w:
            raise ValueError(f"phase weights must be ≥ 0; got {bad_w}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        self.schedule, self.n_steps, self.seed = schedule, n_steps, seed
        self.group_by_length, self.group_window = group_by_length, group_window
        self.lengths = dict(lengths) if lengths is not None else None
        # Phase order is sorted by name so every rank (and every resume) agrees on it.
        self.indices = {p: sorted(int(i) for i in idx) for p, idx in sorted(indices_by_phase.items()) if len(idx)}
        self.weights = {p: float(weights.get(p, 1.0)) for p in self.indices}
        self.phases = [p for p in self.indices if self.weights[p] > 0]
        if not self.phases:
            raise ValueError(f"no phase to train: records by phase {{{', '.join(f'{p}: {len(i)}' for p, i in indices_by_phase.items())}}}, "
                             f"weights {weights}")
        small = {p: len(self.indices[p]) for p in self.phases if len(self.indices[p]) < self.global_batch}
        if small:
            raise ValueError(f"phases {small} have fewer records than one global batch ({batch_size} per rank × "
                             f"{world_size} ranks = {self.global_batch}); add records, lower batch_size, or set "
                             f"those phases' weight to 0")
        self._orders: dict[str, list[int]] = {}
        self.state = PhaseSamplerState()
        self.load_state_dict({"step": 0, "phases": {}, "rng": None})

    # ------------------------------------------------------------------ orders
    def _order(self, phase: str, epoch: int) -> list[int]:
        """The shuffled index order of ``phase`` in ``epoch`` (same on every rank)."""
        rng = random.Random(seed_for(self.seed, phase, epoch))
        order = list(self.indices[phase])
        rng.shuffle(order)
        if self.group_by_length:
            w = self.global_batch * self.group_window
            grouped: list[list[int]] = []
            for s in range(0, len(order) - len(order) % self.global_batch, w):
                window = sorted(order[s:s + w], key=lambda i: self.lengths[i])
                grouped += [window[k:k + self.global_batch] for k in range(0, len(window), self.global_batch)]
            rng.shuffle(grouped)
            order = [i for b in grouped for i in b]
        return order

    def _phase_order(self, phase: str) -> list[int]:
        st = self.state.phases[phase]
        key = f"{phase}:{st.epoch}"
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if not k.startswith(f"{phase}:")}
            self._orders[key] = self._order(phase, st.epoch)
        return self._orders[key]

    # ------------------------------------------------------------------ schedule
    def phase_at(self, step: int) -> str:
        """The phase of ``step`` for the deterministic schedules (round_robin, per_n_steps)."""
        if self.schedule == "round_robin":
            return self.phases[step % len(self.phases)]
        if self.schedule == "per_n_steps":
            return self.phases[(step // self.n_steps) % len(self.phases)]
        raise ValueError("phase_at is only defined for round_robin and per_n_steps; weighted draws at random")

    def _next_phase(self) -> str:
        if self.schedule != "weighted":
            return self.phase_at(self.state.step)
        rng = random.Random()
        rng.setstate(self.state.rng)
        phase = rng.choices(self.phases, weights=[self.weights[p] for p in self.phases])[0]
        self.state.rng = rng.getstate()
        return phase

    # ------------------------------------------------------------------ iteration
    def next_batch(self) -> Batch:
        """The next micro-batch for this rank (advances the sampler; same phase on every rank)."""
        phase = self._next_phase()
        st = self.state.phases[phase]
        order = self._phase_order(phase)
        new_epoch = False
        if st.cursor + self.global_batch > len(order):
            st.epoch, st.cursor, new_epoch = st.epoch + 1, 0, True
            order = self._phase_order(phase)
        global_idx = order[st.cursor:st.cursor + self.global_batch]
        st.cursor += self.global_batch
        st.batches += 1
        mine = global_idx[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        b = Batch(self.state.step, phase, mine, st.epoch, new_epoch)
        self.state.step += 1
        return b

    def __iter__(self):
        while True:
            yield self.next_batch()

    def epochs(self) -> dict[str, float]:
        """Epochs completed per phase, fractional (e.g. ``{'image': 1.25}``)."""
        out = {}
        for p in self.phases:
            st = self.state.phases[p]
            usable = len(self.indices[p]) - len(self.indices[p]) % self.global_batch
            out[p] = st.epoch + st.cursor / usable
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this sampler is (JSON-serialisable)."""
        rng = self.state.rng
        return {"step": self.state.step,
                "phases": {p: {"epoch": s.epoch, "cursor": s.cursor, "batches": s.batches}
                           for p, s in self.state.phases.items()},
                "rng": None if rng is None else [rng[0], list(rng[1]), rng[2]],
                "config": self._fingerprint()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restores a :meth:`state_dict`; raises if it came from a sampler over other data or settings."""
        cfg = state.get("config")
        if cfg is not None and cfg != self._fingerprint():
            raise ValueError(f"sampler state does not match this sampler: saved {cfg}, now {self._fingerprint()}; "
                             f"resume with the same data, phases, batch size, world size and seed")
        phases = {p: PhaseState(**state.get("phases", {}).get(p, {})) for p in self.phases}
        rng = state.get("rng")
        if rng is None:
            rng = random.Random(seed_for(self.seed, "schedule")).getstate()
        else:
            rng = (rng[0], tuple(rng[1]), rng[2])
        self.state = PhaseSamplerState(step=int(state.get("step", 0)), phases=phases, rng=rng)

    def _fingerprint(self) -> dict:
        return {"phases": {p: len(self.indices[p]) for p in self.phases}, "batch_size": self.batch_size,
                "world_size": self.world_size, "schedule": self.schedule, "n_steps": self.n_steps,
                "seed": self.seed, "group_by_length": self.group_by_length}
