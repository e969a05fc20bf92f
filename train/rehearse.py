"""The full-scale path rehearsed end to end on CPU, with the full-scale configs at toy dimensions.

    python -m train.rehearse --smoke --out /tmp/rehearsal        # CI size (a few minutes on 2 cores)
    python -m train.rehearse --out /work/runs/rehearsal-full      # full size (≥ 2,000 records; by hand)

Every step runs the command a person would run (``codi2 …``, ``torchrun``, ``deepspeed``), in a subprocess, and
prints its wall time and memory high-water mark (the largest sum of resident memory over the step's processes,
sampled every 0.2 s):

1. ``weights``: local weights in the real layouts (``train.full_scale.write_weights``: a Llama directory as
   ``transformers`` saves it, safetensors and ``.bin`` variants; ``imagebind_huge.pth`` keys; diffusers folders).
2. ``init``: ``codi2 init configs/model/codi2-7b.yaml`` with dimension overrides only (and the ``.bin`` Llama).
3. ``fixtures``: real-format corpora of every reader (WebDataset image–text and video–text shards,
   InstructPix2Pix folders, AudioCaps CSV + wavs, AUDIT table, Parquet table) with bad records in them: a corrupt
   image in a shard, a row naming a missing wav, an edit pair whose output is missing, a table row naming a
   missing image.
4. ``build-data`` per reader (bad records skipped, counted by reason), 5. ``validate-data`` per manifest.
6. ``precompute-targets`` on 2 ranks (``torchrun --nproc_per_node 2``), one shared cache.
7. stage 1 (``configs/train/codi2-7b-stage1-alignment.yaml``, ZeRO-2) through ``deepspeed --num_gpus 2``
   on one node, killed with ``kill -9`` after its first checkpoint and resumed.
8. stage 2 (``configs/train/codi2-7b-stage2-instruction.yaml``, ZeRO-3 + CPU offload) from stage 1's
   ``final/``, as two "nodes" of one process each on loopback (``torchrun --nnodes 2 --node_rank R``), killed with
   ``kill -9`` after its first checkpoint and resumed; RANK ≠ LOCAL_RANK checked on node 1, and what node 1
   wrote checked against what it should write (node 1's processes run with group id 4242 when the rehearsal runs
   as root, else under umask 027, so that every file tells which node created it).
9. ``export``: stage 2's ``final/`` loads and answers (``codi2 chat``).
10. ``eval``: ``codi2 eval --suite image-edit``, ``audio-edit`` and ``dreambench``.
11. ``report.md`` and ``results.json`` in ``--out``.

The training configs are used as they are, with the run's paths, step counts and batch sizes on the command
line (and ``data.feature_cache`` left at their ``disk``). A step that fails is reported with its output's tail,
and the steps that need it are skipped and reported as such; the exit status is 1 then.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGE1 = "configs/train/codi2-7b-stage1-alignment.yaml"
STAGE2 = "configs/train/codi2-7b-stage2-instruction.yaml"

SIZES = {
    # records per reader (samples before skips): wds image = shards × per shard, wds video likewise,
    # ip2p = folders × seeds, audiocaps rows, audit rows, table rows
    "smoke": dict(wds_image=(2, 5), wds_video=(1, 3), ip2p=(3, 2), audiocaps=5, audit=4, table=5,
                  batch=1, steps1=6, save1=2, steps2=6, save2=2, eval_n=1, shots="0,1", eval_fraction=0.5),
    "full": dict(wds_image=(8, 100), wds_video=(4, 50), ip2p=(100, 3), audiocaps=300, audit=200, table=300,
                 batch=2, steps1=40, save1=20, steps2=30, save2=15, eval_n=4, shots="0,1,2",
                 eval_fraction={"ip2p": 0.1, "audit": 0.25}),
}


# ----------------------------------------------------------------------------- measured steps
def _tree_rss(pid: int) -> tuple[int, list[int]]:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, []
    total, pids = 0, []
    for q in procs:
        try:
            total += q.memory_info().rss
            pids.append(q.pid)
        except psutil.NoSuchProcess:
            pass
    return total, pids


@dataclass
class StepResult:
    name: str
    ok: bool = False
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    processes: int = 0
    note: str = ""
    details: dict = field(default_factory=dict)

    def line(self) -> str:
        return (f"[rehearse] {self.name:<22} {'ok' if self.ok else 'FAILED':<6} wall {self.wall_s:8.1f} s   "
                f"peak RSS {self.peak_rss_mb:8.1f} MiB over {self.processes} process(es)"
                + (f"   {self.note}" if self.note else ""))


class Runner:
    def __init__(self, out: Path, env: dict, log_dir: Path):
        self.out, self.env, self.log_dir = out, env, log_dir
        self.results: list[StepResult] = []

    def launch(self, cmd: Sequence[str], log: Path, env: Optional[dict] = None,
               node: Optional[int] = None) -> subprocess.Popen:
        f = open(log, "ab")
        pre = (lambda: _mark_node(node)) if node is not None else None
        self.launched = getattr(self, "launched", [])
        self.launched.append(p := subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env or self.env, stdout=f, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=pre))
        return p

    def kill_all(self) -> None:
        """Kills what is still running of the launched commands (each its own process group)."""
        for p in getattr(self, "launched", []):
            if p.poll() is None:
                _kill_group(p)

    def watch(self, procs: Sequence[subprocess.Popen], until: Optional[Callable[[], bool]] = None,
              timeout: float = 3600) -> tuple[float, int, bool]:
        """Waits for ``procs`` (or for ``until()`` to hold); returns (peak MiB, processes seen, until fired)."""
        peak, seen, t0 = 0, set(), time.perf_counter()
        while True:
            total = 0
            for p in procs:
                rss, pids = _tree_rss(p.pid)
                total += rss
                seen.update(pids)
            peak = max(peak, total)
            if until is not None and until():
                return peak / 2**20, len(seen), True
            if all(p.poll() is not None for p in procs):
                return peak / 2**20, len(seen), False
            if time.perf_counter() - t0 > timeout:
                for p in procs:
                    _kill_group(p)
                return peak / 2**20, len(seen), False
            time.sleep(0.2)

    def step(self, name: str, cmds: Sequence[Sequence[str]], env: Optional[dict] = None,
             parallel: bool = False) -> StepResult:
        """Runs ``cmds`` (one after the other, or together with ``parallel``) as one measured step."""
        r = StepResult(name)
        log = self.log_dir / f"{name}.log"
        t0 = time.perf_counter()
        groups = [cmds] if parallel else [[c] for c in cmds]
        ok = True
        for g in groups:
            with open(log, "ab") as f:
                for c in g:
                    f.write(("$ " + " ".join(str(x) for x in c) + "\n").encode())
            procs = [self.launch(c, log, env) for c in g]
            peak, n, _ = self.watch(procs)
            r.peak_rss_mb, r.processes = max(r.peak_rss_mb, peak), r.processes + n
            ok = ok and all(p.wait() == 0 for p in procs)
            if not ok:
                break
        r.ok, r.wall_s = ok, time.perf_counter() - t0
        if not ok:
            r.note = f"see {log}"
            r.details["tail"] = _tail(log)
        return self.done(r)

    def done(self, r: StepResult) -> StepResult:
        self.results.append(r)
        print(r.line(), flush=True)
        if not r.ok and r.details.get("tail"):
            print("\n".join("    " + ln for ln in r.details["tail"].splitlines()[-25:]), flush=True)
        return r


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


def _kill_group(p: subprocess.Popen) -> None:
    """SIGKILL to a launched command and every process under it, all at once. Its own process group is not enough:
    torchrun starts each worker in a session of its own, and they would train on after their launcher died."""
    import psutil

    try:
        tree = psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for pid in [p.pid, *(c.pid for c in tree)]:
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
    p.wait()
    psutil.wait_procs(tree, timeout=30)


# ----------------------------------------------------------------------------- fixtures
def make_fixtures(raw: Path, size: dict) -> dict:
    """Real-format corpora of every reader, with bad records; returns what each holds and what is broken."""
    from data_builders import fixtures as fx

    raw.mkdir(parents=True, exist_ok=True)
    made: dict = {}
    s, k = size["wds_image"]
    fx.webdataset_shards(raw / "wds-image", n_shards=s, per_shard=k, seed=1, kinds=("image",), image_size=32)
    made["wds-image"] = {"samples": s * k + 1, "bad": ["corrupt image in shard-00000 (undecodable)",
                                                         "duplicate media in the last shard"]}
    s, k = size["wds_video"]
    fx.webdataset_shards(raw / "wds-video", n_shards=s, per_shard=k, seed=2, kinds=("video",), broken=False,
                         duplicate=False)
    made["wds-video"] = {"samples": s * k, "bad": []}
    f, k = size["ip2p"]
    fx.instructpix2pix_corpus(raw / "ip2p", n_folders=f, seeds_per_folder=k, seed=3)
    victim = sorted((raw / "ip2p").glob("*/*_1.jpg"))[1]
    victim.unlink()
    made["ip2p"] = {"samples": f * k, "bad": [f"edit pair whose output is missing: {victim.name}"]}
    csv, audio = fx.audiocaps_corpus(raw / "audiocaps", n=size["audiocaps"], seed=4)
    made["audiocaps"] = {"samples": size["audiocaps"], "bad": ["last row names a missing wav"]}
    import inspect

    groups = {"groups": 8} if "groups" in inspect.signature(fx.audit_corpus).parameters else {}
    fx.audit_corpus(raw / "audit", n=size["audit"], seed=5, **groups)  # 8 instructions = 8 edit groups
    gone = raw / "audit" / "wav" / f"out{size['audit'] - 1}.wav"
    gone.unlink()
    made["audit"] = {"samples": size["audit"], "bad": [f"row naming a missing output wav: {gone.name}"]}
    fx.table_corpus(raw / "table", fmt="parquet", n=size["table"], seed=6, audio=True)
    made["table"] = {"samples": size["table"] + 1, "bad": ["row naming a missing image"]}
    (raw / "made.json").write_text(json.dumps(made, indent=1))
    return made


def build_commands(raw: Path, data: Path, eval_fraction: "float | dict | None" = None) -> dict[str, list[str]]:
    """``codi2 build-data`` per reader; with ``eval_fraction`` the editing readers hold out that fraction of their
    edit groups as ``test.jsonl`` (``--eval-fraction``, where the builders have it)."""
    c = [str(BIN / "codi2"), "build-data"]
    fr = eval_fraction if isinstance(eval_fraction, dict) else {"ip2p": eval_fraction, "audit": eval_fraction}
    held = ["--eval-fraction", str(fr["ip2p"])] if eval_fraction else []
    held_audit = ["--eval-fraction", str(fr["audit"])] if eval_fraction else []
    return {
        "cc3m": [*c, "webdataset", "--input", raw / "wds-image", "--out", data / "cc3m", "--name", "cc3m"],
        "webvid": [*c, "webdataset", "--input", raw / "wds-video", "--out", data / "webvid", "--name", "webvid"],
        "ip2p": [*c, "instructpix2pix", "--input", raw / "ip2p", "--out", data / "ip2p", *held],
        "audiocaps": [*c, "audiocaps", "--input", raw / "audiocaps" / "train.csv", "--media-root",
                      raw / "audiocaps" / "audio", "--out", data / "audiocaps"],
        "audit": [*c, "audit", "--input", raw / "audit" / "edits.csv", "--media-root", raw / "audit", "--out",
                  data / "audit", *held_audit],
        "laion": [*c, "table", "--input", raw / "table" / "metadata.parquet", "--out", data / "laion", "--name", "laion"],
    }


# ----------------------------------------------------------------------------- the rehearsal
def _progress(out_dir: Path) -> int:
    """Highest step in a run's rank-0 log (0 if none)."""
    log = out_dir / "logs" / "rank-0.jsonl"
    best = 0
    if log.is_file():
        for ln in log.read_text().splitlines():
            try:
                best = max(best, int(json.loads(ln)["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return best


def _complete(out_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (``step-N/COMPLETE``; not ``step-N.tmp/``, which is being finalized)."""
    import re

    return sorted(int(p.parent.name[5:]) for p in (out_dir / "checkpoints").glob("step-*/COMPLETE")
                  if re.fullmatch(r"step-\d+", p.parent.name))


def _final_step(out_dir: Path) -> Optional[int]:
    log = out_dir / "logs" / "rank-0.jsonl"
    if not log.is_file():
        return None
    for ln in reversed(log.read_text().splitlines()):
        try:
            d = json.loads(ln)
        except ValueError:
            continue
        if d.get("final"):
            return int(d["step"])
    return None


def train_stage(run: Runner, name: str, cmds: list[list[str]], out_dir: Path, kill_after: int,
                mark_nodes: bool = False, node_env: Optional[Callable[[int], dict]] = None) -> dict:
    """Runs a stage (one or several launcher commands, e.g. one per node), kills every process with SIGKILL once a
    checkpoint at ``kill_after`` is complete and a later step is logged, then runs the same commands again."""
    info: dict = {"out": str(out_dir)}
    for attempt in ("killed", "resumed"):
        r = StepResult(f"{name}-{attempt}")
        log_paths = [run.log_dir / f"{name}-{attempt}-node{i}.log" for i in range(len(cmds))]
        for c, lp in zip(cmds, log_paths):
            lp.write_bytes(("$ " + " ".join(str(x) for x in c) + "\n").encode())
        t0 = time.perf_counter()
        procs = [run.launch(c, lp, env=node_env(i) if node_env else None,
                            node=i if mark_nodes else None)
                 for i, (c, lp) in enumerate(zip(cmds, log_paths))]
        envs: dict = {}

        def until() -> bool:
            if len(cmds) > 1 and not envs.get("node1"):
                envs["node1"] = _worker_env(procs[1].pid)
            return attempt == "killed" and kill_after in _complete(out_dir)

        peak, n, fired = run.watch(procs, until=until)
        if fired:
            for p in procs:
                _kill_group(p)  # kill -9 of every process of the stage (launcher and workers) at once
            time.sleep(1.0)  # nothing of the stage may live on: a survivor would keep training and checkpointing
            mid = not (out_dir / "final").exists() and _final_step(out_dir) is None
            info["checkpoints_after_kill"] = _complete(out_dir)
            r.note = (f"kill -9 at step {_progress(out_dir)} (checkpoints {_complete(out_dir)}; "
                      f"{'mid-stage' if mid else 'TOO LATE: the stage had finished'})")
            r.ok = mid
            info["killed_at_step"] = _progress(out_dir)
            info["killed_mid_stage"] = mid
        else:
            codes = [p.wait() for p in procs]
            r.ok = all(c == 0 for c in codes)
            if attempt == "killed":
                r.ok = False
                r.note = "finished before it could be killed (raise max_steps)" if all(c == 0 for c in codes) else ""
            text = "".join(_tail(lp, 200_000) for lp in log_paths)
            if attempt == "resumed":
                resumed = [ln for ln in text.splitlines() if "resumed from" in ln]
                info["resumed_from"] = resumed[0].split("resumed from", 1)[1].strip() if resumed else None
                info["final_step"] = _final_step(out_dir)
                last = max(info.get("checkpoints_after_kill") or [0])
                info["resumed_from_the_kill"] = bool(resumed) and f"step-{last:06d}" in resumed[0]
                r.ok = r.ok and info["resumed_from_the_kill"] and info["final_step"] is not None
                r.note = f"resumed {info['resumed_from']}, final step {info['final_step']}"
            if not r.ok:
                r.details["tail"] = "\n".join(_tail(lp, 3000) for lp in log_paths)
        r.wall_s, r.peak_rss_mb, r.processes = time.perf_counter() - t0, peak, n
        if envs.get("node1"):
            info["node1_worker_env"] = envs["node1"]
        run.done(r)
        info[attempt] = {"ok": r.ok, "wall_s": round(r.wall_s, 1), "peak_rss_mb": round(r.peak_rss_mb, 1)}
        if not r.ok:
            break
    return info


def _worker_env(launcher_pid: int) -> Optional[dict]:
    """RANK / LOCAL_RANK / WORLD_SIZE / GROUP_RANK of the training worker under a torchrun launcher."""
    import psutil

    try:
        for c in psutil.Process(launcher_pid).children(recursive=True):
            try:
                e = c.environ()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            if "RANK" in e and "train.py" in " ".join(c.cmdline()):
                return {k: e.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR")}
    except psutil.NoSuchProcess:
        pass
    return None


NODE1_GID = 4242


def _mark_node(node: int) -> None:
    """In a node's launcher process before exec: node 1 creates its files with group NODE1_GID (as root) or under
    umask 027 (otherwise); node 0 keeps its group and umask 022."""
    if node == 1 and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NODE1_GID)
        os.umask(0o022)
    else:
        os.umask(0o027 if node == 1 else 0o022)


def _written_by(st: os.stat_result) -> Optional[int]:
    """0, 1, or None when a file does not tell (made by mkstemp, mode 0600 whatever the umask, without the group
    mark)."""
    if os.geteuid() == 0:  # the group tells, whatever the mode
        return 1 if st.st_gid == NODE1_GID else 0
    if st.st_mode & stat.S_IROTH:
        return 0
    if st.st_mode & stat.S_IRGRP:
        return 1
    return None


def node_writes(out_dir: Path, cache: Path) -> dict:
    """Files created by node 1 vs node 0 (see :func:`_mark_node`), node 1's sorted into kinds; and those a node
    should not have written."""
    mine: dict[str, int] = {}
    wrong: list[str] = []
    unknown: list[str] = []
    n0 = 0
    for root in (out_dir, cache):
        for p in root.rglob("*"):
            if not p.is_file():
                continue
            who = _written_by(p.stat())
            rel = p.relative_to(root.parent).as_posix()
            if who is None:
                unknown.append(rel)
                continue
            if who == 0:
                n0 += 1
                if "rank-1" in p.name or "rank_1_" in p.name:
                    wrong.append(f"node 0 wrote {rel}")
                continue
            if p.name == "rank-1.jsonl":
                kind = "its log (logs/rank-1.jsonl)"
            elif "checkpoints" in rel and ("rank_1_" in p.name or "rank-1" in p.name or "rank1" in p.name):
                kind = "its checkpoint shard and rank state"
            elif "/target-" in rel:
                kind = "head targets of its shard"
            elif "/input-" in rel:
                kind = "input features of its records"
            else:
                kind = "other"
                wrong.append(f"node 1 wrote {rel}")
            mine[kind] = mine.get(kind, 0) + 1
    return {"node1_files_by_kind": mine, "node0_files": n0, "violations": wrong[:20],
            "unattributed_mode_0600": unknown[:20], "ok": not wrong}


def main(argv: Optional[Sequence[str]] = None) -> int:
    runners: list[Runner] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill PID` of the rehearsal cleans up too
    try:
        return _main(argv, runners)
    finally:  # an error in the rehearsal itself leaves no launcher or worker behind
        for r in runners:
            r.kill_all()


def _main(argv: Optional[Sequence[str]], runners: list) -> int:
    p = argparse.ArgumentParser(prog="python -m train.rehearse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CI size (default: full size, ≥ 2,000 records)")
    p.add_argument("--out", default=None, help="run folder (default /tmp/codi2-rehearsal-{smoke,full})")
    p.add_argument("--port", type=int, default=29640, help="first of the loopback ports used")
    p.add_argument("--results", default=None, help="also copy results.json here")
    args = p.parse_args(argv)
    size_name = "smoke" if args.smoke else "full"
    size = SIZES[size_name]
    out = Path(args.out or f"/tmp/codi2-rehearsal-{size_name}").resolve()
    if out.exists():
        shutil.rmtree(out)
    logs = out / "logs"
    logs.mkdir(parents=True)
    t_all = time.perf_counter()
    from train.full_scale import TINY_MODEL_OVERRIDES

    weights = out / "weights"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1", "CODI2_LLAMA": str(weights / "llama"),
           "CODI2_IMAGEBIND": str(weights / "imagebind_huge.pth"), "CODI2_UNCLIP": str(weights / "unclip"),
           "CODI2_AUDIOLDM2": str(weights / "audioldm2"), "CODI2_ZEROSCOPE": str(weights / "zeroscope")}
    run = Runner(out, env, logs)
    runners.append(run)
    py = str(sys.executable)
    results: dict = {"size": size_name, "sizes": size, "out": str(out), "steps": {}, "missing": []}
    model, model_bin = out / "model", out / "model-bin"

    # 1-2. weights and model
    run.step("weights", [[py, "-c", f"from train.full_scale import write_weights; write_weights({str(weights)!r})"]])
    init = [str(BIN / "codi2"), "init", "configs/model/codi2-7b.yaml", *TINY_MODEL_OVERRIDES, "--out"]
    ok_init = run.step("init", [[*init, model]]).ok
    r = run.step("init-llama-bin", [[*init, model_bin]],
                 env={**env, "CODI2_LLAMA": str(weights / "llama-bin")})
    results["llama_bin_loads"] = r.ok
    if not r.ok:
        r.note = "a Llama directory with only pytorch_model.bin is refused (39a adds .bin loading)"
        results["missing"].append("Llama .bin directory: " + (r.details.get("tail", "").strip().splitlines() or [""])[-1][:300])

    # 3-5. data
    raw, data = out / "raw", out / "data"
    run.step("fixtures", [[py, "-c", f"from train.rehearse import make_fixtures; make_fixtures(__import__('pathlib').Path({str(raw)!r}), {size!r})"]])
    split = has_eval_split()
    builds = build_commands(raw, data, size["eval_fraction"] if split else None)
    run.step("build-data", [_cli_many([[*c[1:], "--no-progress"] for c in builds.values()])])
    built = {}
    for name in builds:
        s = data / name / "summary.json"
        if s.is_file():
            d = json.loads(s.read_text())
            built[name] = {"samples": d["samples"], "records": d["records"], "skipped": d["skipped"],
                           "examples": {k: [e["detail"] for e in v][:2] for k, v in d.get("examples", {}).items()}}
    results["data"] = built
    results["records_total"] = sum(b["records"] for b in built.values())
    results["skipped_total"] = {k: sum(b["skipped"].get(k, 0) for b in built.values())
                                for k in sorted({k for b in built.values() for k in b["skipped"]})}
    manifests = {n: data / n / "manifest.jsonl" for n in builds}
    vlogs = []
    tests = [data / n / "test.jsonl" for n in ("ip2p", "audit") if (data / n / "test.jsonl").is_file()]
    results["held_out_splits"] = {t.parent.name: sum(1 for _ in open(t)) for t in tests}
    rv = run.step("validate-data", [_cli_many([["validate-data", m, "--workers", "1"]
                                               for m in [*manifests.values(), *tests]])])
    results["validate_ok"] = rv.ok
    vlogs.append(str(logs / "validate-data.log"))

    # 6. precompute on 2 ranks
    cache = out / "cache"
    pre = run.step("precompute-2-ranks", [[str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                                          "--master_port", str(args.port), "--no-python", str(BIN / "codi2"),
                                          "precompute-targets", *manifests.values(), "--model", model,
                                          "--cache-root", cache, "--stats-dir", out / "precompute"]])
    per_rank = {}
    for rk in (0, 1):
        f = out / "precompute" / f"precompute-rank{rk}.json"
        if f.is_file():
            st = json.loads(f.read_text())
            per_rank[f"rank{rk}"] = {"computed": sum(s["computed"] for s in st), "cached": sum(s["cached"] for s in st),
                                     "failed": sum(len(s["failed"]) for s in st),
                                     "seconds": round(sum(s["seconds"] for s in st), 2)}
    results["precompute"] = {"ok": pre.ok, "per_rank": per_rank}
    if not pre.ok and per_rank and all(v["failed"] == 0 for v in per_rank.values()):
        pre.ok = True

    # 7. stage 1: deepspeed --num_gpus 2, ZeRO-2, killed and resumed
    common = [f"data.target_cache={cache}", f"batch_size={size['batch']}", "grad_accum=1", "log_every=1",
              "optim.warmup_steps=1", "data.bad_min_seen=1000000", "data.workers=1"]
    s1 = out / "stage1"
    stage1_manifests = ",".join(str(manifests[n]) for n in ("cc3m", "audiocaps", "webvid", "laion"))
    cmd1 = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(args.port + 1),
            "train/train.py", STAGE1, f"model.pipeline={model}", f"data.manifests=[{stage1_manifests}]",
            f"output_dir={s1}", f"max_steps={size['steps1']}", f"save_every={size['save1']}",
            "deepspeed=configs/deepspeed/zero2.json", *common]
    if ok_init and pre.ok:
        results["stage1"] = train_stage(run, "stage1", [cmd1], s1, kill_after=size["save1"])
    else:
        results["missing"].append("stage 1 not run (init or precompute failed)")

    # 8. stage 2: two nodes of one process each on loopback (torchrun multi-node), ZeRO-3 + offload
    s2 = out / "stage2"
    stage2_manifests = ",".join(str(manifests[n]) for n in ("ip2p", "audit", "cc3m", "audiocaps", "webvid", "laion"))
    node_cmd = lambda rank: [str(BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",  # noqa: E731
                             "--master_addr", "127.0.0.1", "--master_port", str(args.port + 2),
                             "train/train.py", STAGE2, f"model.pipeline={s1 / 'final'}",
                             f"data.manifests=[{stage2_manifests}]", f"output_dir={s2}", f"max_steps={size['steps2']}",
                             f"save_every={size['save2']}", "deepspeed=configs/deepspeed/zero3-offload.json", *common]
    if (s1 / "final" / "config.yaml").is_file():
        results["stage2"] = train_stage(run, "stage2", [node_cmd(0), node_cmd(1)], s2, kill_after=size["save2"],
                                        mark_nodes=True)
        results["stage2"]["multi_node_command"] = " ".join(str(x) for x in node_cmd(1)).replace(str(ROOT) + "/", "")
        w = results["stage2"].get("node1_worker_env") or {}
        results["stage2"]["rank_differs_from_local_rank_on_node1"] = bool(w) and w.get("RANK") != w.get("LOCAL_RANK")
        results["stage2"]["node_writes"] = node_writes(s2, cache)
    else:
        results["missing"].append("stage 2 not run (no stage-1 final/)")

    # 9. export: stage 2's final/ loads and answers
    final = s2 / "final"
    if (final / "config.yaml").is_file():
        run.step("export-chat", [[str(BIN / "codi2"), "chat", "--model", final, "--image",
                                  sorted((raw / "ip2p").glob("*/*_0.jpg"))[0], "Make it blue.", "--out",
                                  out / "chat", "--max-new-tokens", "8"]])
    # 10. eval
    ev = out / "eval"
    if (final / "config.yaml").is_file():
        run.step("eval-models", [[py, "-c", "import sys; from pathlib import Path; from codi2.eval.testing import "
                                  "save_tiny_clip, save_tiny_dino, make_dreambench; d = Path(sys.argv[1]); "
                                  "save_tiny_clip(d / 'clip'); save_tiny_dino(d / 'dino'); make_dreambench(d / 'dreambench')",
                                  ev / "models"]])
        results["eval_held_out"] = (f"held out: test.jsonl of ip2p and audit ({results['held_out_splits']} records; "
                                    f"--eval-fraction {size['eval_fraction']}, split by edit group)"
                                    if results.get("held_out_splits") else held_out_note())
        base = [str(BIN / "codi2"), "eval", "--model", final, "--n", str(size["eval_n"]), "--shots", size["shots"],
                "--force-output", "--max-new-tokens", "8", "--steps", "2", "--n-boot", "200",
                "--clip", ev / "models" / "clip", "--dino", ev / "models" / "dino", "--seed", "0"]
        held = results.get("held_out_splits", {})
        suites = {"image-edit": data / "ip2p" if "ip2p" in held else manifests["ip2p"],
                  "audio-edit": data / "audit" if "audit" in held else manifests["audit"],
                  "dreambench": ev / "models" / "dreambench"}
        results["eval"] = {}
        for suite, d in suites.items():
            re_ = run.step(f"eval-{suite}", [[base[0], base[1], "--suite", suite, *base[2:], "--data", d, "--out", ev / suite]])
            res = ev / suite / "results.json"
            if res.is_file():
                rj = json.loads(res.read_text())
                overall = rj.get("metrics", {}).get("overall", rj.get("metrics", {}))
                results["eval"][suite] = {"ok": re_.ok, "samples": len(rj.get("samples", [])),
                                          "metrics": {k: (v.get("mean") if isinstance(v, dict) else v)
                                                      for k, v in overall.items()} if isinstance(overall, dict) else overall,
                                          "prompt_check": prompt_check(rj, d / "test.jsonl" if d.is_dir() else d)
                                          if suite != "dreambench" else None}
            else:
                results["eval"][suite] = {"ok": False}

    # 11. report
    results["steps"] = {r.name: {"ok": r.ok, "wall_s": round(r.wall_s, 1), "peak_rss_mb": round(r.peak_rss_mb, 1),
                                 "processes": r.processes, "note": r.note} for r in run.results}
    results["wall_s_total"] = round(time.perf_counter() - t_all, 1)
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # every waited-for process (killed ones included)
    results["cpu_s_children"] = round(ru.ru_utime + ru.ru_stime, 1)
    results["load_average_at_end"] = round(os.getloadavg()[0], 1)
    results["ok"] = all(r.ok or r.name == "init-llama-bin" for r in run.results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(report(results))
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "results.json", args.results)
    print(f"[rehearse] {'OK' if results['ok'] else 'FAILED'} in {results['wall_s_total']:.0f} s; report: "
          f"{out / 'report.md'}", flush=True)
    return 0 if results["ok"] else 1


def _cli_many(argvs: Sequence[Sequence]) -> list[str]:
    """One Python process running ``codi2 ARGV`` for each ARGV in turn (the CLI's own ``main``: the same code path
    as the ``codi2`` command, one interpreter start-up instead of several); exits 1 if any of them failed."""
    code = ("import json, sys\nfrom codi2.cli import main\nbad = 0\n"
            "for a in json.loads(sys.argv[1]):\n    print('$ codi2 ' + ' '.join(a), flush=True)\n"
            "    rc = main(a)\n    print(f'exit {rc}', flush=True)\n    bad += rc != 0\nsys.exit(1 if bad else 0)\n")
    return [sys.executable, "-c", code, json.dumps([[str(x) for x in a] for a in argvs])]


def has_eval_split() -> bool:
    """Whether the editing builders can hold out an evaluation split (``--eval-fraction``)."""
    r = subprocess.run([str(BIN / "codi2"), "build-data", "instructpix2pix", "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    return "--eval-fraction" in r.stdout


def held_out_note() -> str:
    return ("not held out: the builders write no evaluation split yet (issue 39a adds one); the suites read the "
            "training manifests of ip2p and audit")


def prompt_check(rj: dict, manifest: Path) -> dict:
    """Whether each 0-shot sample's recorded prompt carries its record's instruction (``meta.pair.instruction`` as
    the builders write it, or ``meta.instruction``)."""
    def prompt_of(smp: dict):
        return smp.get("prompt", (smp.get("runs", {}).get("main") or {}).get("prompt"))

    samples = [s for s in rj.get("samples", []) if s.get("shots") == 0]
    if not any(prompt_of(s) is not None for s in samples):
        return {"recorded": False, "note": "samples.jsonl records no prompt (the suites do not write it yet)"}
    instr = {}
    for ln in manifest.read_text().splitlines():
        r = json.loads(ln)
        m = r.get("meta", {})
        instr[r["id"]] = (m.get("pair") or {}).get("instruction") or m.get("instruction")
    missing, unknown = [], []
    for smp in samples:
        want = instr.get(smp["id"].split("/", 1)[-1])
        if not want:
            unknown.append(smp["id"])
        elif want.lower() not in json.dumps(prompt_of(smp), ensure_ascii=False).lower():
            missing.append(smp["id"])
    return {"recorded": True, "zero_shot": len(samples), "without_instruction": len(missing),
            "instruction_unknown": len(unknown), "examples": (missing + unknown)[:3]}


def report(res: dict) -> str:
    lines = [f"# Full-scale rehearsal ({res['size']})", "",
             f"Run folder `{res['out']}`; total wall time {res['wall_s_total']:.0f} s, {res['cpu_s_children']:.0f} CPU s "
             f"in the steps' processes (load average {res['load_average_at_end']} at the end); "
             f"{'all steps passed' if res['ok'] else 'SOME STEPS FAILED'}.", "",
             "Model: `configs/model/codi2-7b.yaml` with dimension overrides only (`train.full_scale`), local weights "
             "in the real layouts; training configs `" + STAGE1 + "` and `" + STAGE2 + "` as they are, with paths, "
             "step counts and batch sizes on the command line.", "",
             "| step | ok | wall (s) | peak RSS (MiB, sum over processes) | processes | note |",
             "|---|---|---:|---:|---:|---|"]
    for n, s in res["steps"].items():
        lines.append(f"| {n} | {'yes' if s['ok'] else 'no'} | {s['wall_s']} | {s['peak_rss_mb']} | {s['processes']} | "
                     f"{s['note']} |")
    lines += ["", f"## Data: {res.get('records_total', 0)} records", "",
              "| manifest | samples | records | skipped (reason: count) |", "|---|---:|---:|---|"]
    for n, b in res.get("data", {}).items():
        lines.append(f"| {n} | {b['samples']} | {b['records']} | "
                     f"{', '.join(f'{k}: {v}' for k, v in b['skipped'].items()) or '-'} |")
    lines += ["", f"Skipped in all: {res.get('skipped_total')}. `codi2 validate-data` on every manifest: "
              f"{'no errors' if res.get('validate_ok') else 'errors (see logs/validate-data.log)'}.", ""]
    if "precompute" in res:
        lines += [f"Precompute on 2 ranks: {json.dumps(res['precompute']['per_rank'])}", ""]
    for st in ("stage1", "stage2"):
        if st in res:
            s = res[st]
            lines.append(f"**{st}**: killed at step {s.get('killed_at_step')}, resumed from {s.get('resumed_from')}, "
                         f"final step {s.get('final_step')}.")
    if "stage2" in res:
        s = res["stage2"]
        lines += ["", f"Multi-node (2 nodes × 1 process, loopback): node 1 worker env {s.get('node1_worker_env')}; "
                  f"RANK ≠ LOCAL_RANK: {s.get('rank_differs_from_local_rank_on_node1')}; node 1 wrote "
                  f"{s['node_writes']['node1_files_by_kind']}; violations: {s['node_writes']['violations'] or 'none'}; files "
                  f"that do not tell (mode 0600, made by mkstemp): {s['node_writes'].get('unattributed_mode_0600')}.",
                  "", f"Command (node 1): `{s.get('multi_node_command')}`"]
    if "eval" in res:
        lines += ["", "## Eval", "", f"Held-out: {res.get('eval_held_out')}", ""]
        for suite, e in res["eval"].items():
            lines.append(f"- {suite}: {'ok' if e.get('ok') else 'FAILED'}, {e.get('samples')} samples, metrics "
                         f"{json.dumps(e.get('metrics'))}"
                         + (f"; 0-shot prompts: {json.dumps(e['prompt_check'])}" if e.get("prompt_check") else ""))
    if res.get("missing") or not res.get("llama_bin_loads", True):
        lines += ["", "## Not working yet", ""] + [f"- {m}" for m in res["missing"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
