"""Load test of the Gradio chat: N concurrent ``gradio_client`` sessions against one server.

Starts ``python -m serve.app`` in a child process on a free loopback port (the tiny random model
unless ``--model`` is given), runs ``--clients`` sessions in threads until ``--turns`` turns are
done or ``--seconds`` have passed, and prints (or writes) JSON with requests/s, p50/p95 latency,
errors and the server's resident memory (RSS, from /proc) sampled after every turn.

Every ``--media-every``-th turn of a client uploads an image and, through the app's "Reply starts
with" setting (``prefix``), makes the random model draw an image; the others are text turns.

    python benchmarks/serve_load.py --clients 4 --turns 200 --out serve_load.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise TimeoutError(f"the server did not listen on port {port} within {timeout:g} s")


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[k]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a codi2 model directory (default: a new tiny random one)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--turns", type=int, default=200, help="stop after this many turns in total")
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long in any case")
    p.add_argument("--media-every", type=int, default=4, help="every k-th turn of a client uploads and draws an image")
    p.add_argument("--set", action="append", default=["max_turns=4", "max_log_turns=16"],
                   help="serve settings for the server (ServeConfig KEY=VALUE)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--out", default=None, help="write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (model, server log)")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="codi2-serve-load-"))
    model = args.model
    if model is None:
        from codi2.config import load_model_config
        from codi2.pipeline import init_pipeline

        model = str(init_pipeline(load_model_config("tiny"), tmp / "tiny", seed=0))
    img = tmp / "upload.png"
    Image.fromarray((np.random.default_rng(0).random((48, 48, 3)) * 255).astype("uint8")).save(img)

    port = _free_port()
    cmd = [sys.executable, "-m", "serve.app", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    for s in args.set:
        cmd += ["--set", s]
    log_file = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    curve: list[tuple[int, float, float]] = []  # (turns done, seconds since start, server RSS MiB)
    done = 0
    try:
        _wait_for_port(port, proc, args.startup_timeout)
        url = f"http://127.0.0.1:{port}/"
        rss_start = _rss_mb(proc.pid)
        t0 = time.monotonic()
        stop_at = t0 + args.seconds

        def client_loop(k: int) -> None:
            nonlocal done
            c = Client(url, verbose=False)
            i = 0
            while time.monotonic() < stop_at:
                with lock:
                    if done >= args.turns:
                        return
                    done += 1  # reserve the turn
                media = args.media_every > 0 and i % args.media_every == args.media_every - 1
                msg = {"text": f"client {k} turn {i}: " + ("make it blue" if media else "describe a red circle"),
                       "files": [handle_file(str(img))] if media else []}
                t = time.perf_counter()
                try:
                    chat = c.predict(message=msg, prefix="Here <img>" if media else "", seed=i,
                                     api_name="/chat")[0]
                    reply: list = []  # the trailing assistant messages (one Gradio message per item)
                    for m in reversed(chat):
                        if m["role"] != "assistant":
                            break
                        reply = m["content"] + reply
                    texts = " ".join(x.get("text", "") for x in reply if x.get("type") == "text")
                    if not reply or texts.startswith("⚠️"):
                        raise RuntimeError(f"error reply: {texts[:200]}")
                    if media and not any(x.get("type") == "file" for x in reply):
                        raise RuntimeError("a media turn returned no file")
                    dt = time.perf_counter() - t
                    with lock:
                        latencies.append(dt)
                except Exception as e:  # counted and reported; the load goes on
                    with lock:
                        errors.append(f"client {k} turn {i}: {type(e).__name__}: {e}"[:300])
                with lock:
                    curve.append((len(latencies) + len(errors), round(time.monotonic() - t0, 2),
                                  round(_rss_mb(proc.pid), 1)))
                i += 1

        threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=args.seconds + 120)
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    n = len(latencies) + len(errors)
    rss = [r for _, _, r in curve]
    half = len(rss) // 2
    # growth check: the second half of the run should not keep adding memory like the first
    second_half_growth = (max(rss[half:]) - rss[half]) if rss[half:] else float("nan")
    points = sorted({0, len(curve) // 4, len(curve) // 2, 3 * len(curve) // 4, len(curve) - 1}) if curve else []
    result = {
        "clients": args.clients, "turns": n, "seconds": round(wall, 2),
        "requests_per_s": round(n / wall, 3) if wall > 0 else None,
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(_percentile(latencies, 0.95), 3) if latencies else None,
        "errors": len(errors), "error_samples": errors[:5],
        "server_rss_start_mb": round(rss_start, 1), "server_rss_peak_mb": max(rss) if rss else None,
        "server_rss_curve": [{"turn": curve[i][0], "t_s": curve[i][1], "rss_mb": curve[i][2]} for i in points],
        "server_rss_second_half_growth_mb": round(second_half_growth, 1),
        "settings": {"media_every": args.media_every, "serve": args.set, "model": model},
        "ok": len(errors) == 0 and n > 0 and second_half_growth < max(64.0, 0.1 * (max(rss) if rss else 0)),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
