"""Load test of the OpenAI-compatible API next to the Gradio endpoint, on one server, one model, one run.

Starts ``python -m serve.app --api`` (the Gradio chat at / and the API at /v1 on one port, sharing the model
and its lock) in a child process on a free loopback port, then runs the same workload through both endpoints:
``--clients`` threads × ``--requests`` requests each, through the ``openai`` SDK (``/v1/chat/completions``) and
through ``gradio_client`` (``/chat``). The endpoints take turns in ``--rounds`` rounds (each client goes on with
its conversation), so on a shared machine both meet the same background load; the model is warmed up first.

Each client holds one conversation of mini-world turns: it uploads a rendered picture and asks what is in it
(text out); every ``--draw-every``-th turn it asks for a picture instead (image out, the model's own
diffusion settings). The Gradio session keeps the last ``max_turns`` (4) turns in its context; an API client,
stateless, sends the same last 3 turns as history with each request. A request counts as an error if it
fails, a caption turn gets no text, or a draw turn gets no picture; captions are also read with
``parse_caption`` and counted right when they name the picture's shape and colour.

    python benchmarks/api_load.py --clients 4 --requests 50 --out benchmarks/results/api_load.json
"""
from __future__ import annotations

import argparse
import base64
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
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def turn_plan(client: int, i: int, draw_every: int, pictures: Path) -> dict:
    """What turn ``i`` of ``client`` asks: the same for both endpoints."""
    from data_builders.world.world import POSITIONS, WorldObject, render_image

    k = client * 1000 + i
    shape, colour = SHAPES[k % len(SHAPES)], COLOURS[(k // len(SHAPES)) % len(COLOURS)]
    size, position = ("small", "large")[k % 2], POSITIONS[k % len(POSITIONS)]
    if draw_every > 0 and i % draw_every == draw_every - 1:
        return {"kind": "draw", "text": f"Draw a {size} {colour} {shape}.", "image": None, "want": None}
    path = pictures / f"c{client}-t{i}.png"
    render_image(WorldObject(shape, colour, "large", position), k).save(path)  # large: readable at 64x64
    return {"kind": "caption", "text": "What is in this picture?", "image": path, "want": (shape, colour)}


def caption_right(text: str, want: Optional[tuple]) -> Optional[bool]:
    from data_builders.world.world import parse_caption

    if want is None:
        return None
    got = parse_caption(text)
    return (got.get("shape"), got.get("colour")) == want


def api_client(url: str, model: str) -> Callable[[dict], tuple[str, bool]]:
    """One stateless OpenAI client holding its conversation (the last 3 turns go along with each request)."""
    import openai

    c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    history: list[dict] = []

    def send(plan: dict) -> tuple[str, bool]:
        content: list[dict] = []
        if plan["image"] is not None:
            b64 = base64.b64encode(Path(plan["image"]).read_bytes()).decode()
            content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}})
        content.append({"type": "text", "text": plan["text"]})
        user = {"role": "user", "content": content}
        r = c.chat.completions.create(model=model, messages=history[-6:] + [user], seed=0)
        msg = r.choices[0].message
        parts = msg.content if isinstance(msg.content, list) else [{"type": "text", "text": msg.content}]
        text = parts[0]["text"] if parts and parts[0]["type"] == "text" else ""
        has_image = any(p["type"] == "image_url" for p in parts)
        history.extend([user, {"role": "assistant", "content": text}])  # placeholders stand for the media
        return text, has_image

    return send


def gradio_client(url: str) -> Callable[[dict], tuple[str, bool]]:
    from gradio_client import Client, handle_file

    # download_files=False: the client would otherwise fetch every file of the whole chat again at each streamed
    # update (the endpoint returns the chat); the replies' files stay on the server as URLs
    c = Client(url + "/", verbose=False, download_files=False)

    def send(plan: dict) -> tuple[str, bool]:
        files = [handle_file(str(plan["image"]))] if plan["image"] is not None else []
        chat = c.predict(message={"text": plan["text"], "files": files}, seed=0, api_name="/chat")[0]
        reply: list = []
        for m in reversed(chat):  # the trailing assistant messages (one Gradio message per item)
            if m["role"] != "assistant":
                break
            reply = m["content"] + reply
        text = " ".join(x.get("text", "") for x in reply if x.get("type") == "text")
        if text.startswith("⚠️"):
            raise RuntimeError(f"error reply: {text[:200]}")
        return text, any(x.get("type") == "file" for x in reply)

    return send


class Phase:
    """One endpoint's clients (each keeps its conversation) and what their requests measured."""

    def __init__(self, name: str, make_client: Callable[[], Callable[[dict], tuple[str, bool]]], clients: int):
        self.name, self.make_client, self.clients = name, make_client, clients
        self.senders: list[Optional[Callable[[dict], tuple[str, bool]]]] = [None] * clients
        self.done = [0] * clients
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.right: list[bool] = []
        self.seconds = 0.0
        self.lock = threading.Lock()

    def run(self, requests: int, draw_every: int, pictures: Path) -> None:
        """``requests`` more requests per client, all clients at once."""
        def loop(k: int) -> None:
            if self.senders[k] is None:
                self.senders[k] = self.make_client()
            send = self.senders[k]
            for _ in range(requests):
                i = self.done[k]
                self.done[k] += 1
                plan = turn_plan(k, i, draw_every, pictures)
                t = time.perf_counter()
                try:
                    text, has_image = send(plan)
                    dt = time.perf_counter() - t
                    if not text and plan["kind"] == "caption":
                        raise RuntimeError("a caption turn returned no text")
                    if plan["kind"] == "draw" and not has_image:
                        raise RuntimeError(f"a draw turn returned no picture: {text[:100]!r}")
                    with self.lock:
                        self.latencies.append(dt)
                        ok = caption_right(text, plan["want"])
                        if ok is not None:
                            self.right.append(ok)
                except Exception as e:  # counted and reported; the load goes on
                    with self.lock:
                        self.errors.append(f"{self.name} client {k} request {i}: {type(e).__name__}: {e}"[:300])

        t0 = time.monotonic()
        threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(self.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.seconds += time.monotonic() - t0

    def result(self) -> dict:
        lat = self.latencies
        n = len(lat) + len(self.errors)
        return {"endpoint": self.name, "clients": self.clients, "requests": n, "seconds": round(self.seconds, 2),
                "requests_per_s": round(n / self.seconds, 3) if self.seconds else None,
                "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
                "latency_p95_s": round(percentile(lat, 0.95), 3) if lat else None,
                "latency_mean_s": round(statistics.mean(lat), 3) if lat else None,
                "errors": len(self.errors), "error_samples": self.errors[:5],
                "captions_right": f"{sum(self.right)}/{len(self.right)}"}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "checkpoints" / "codi2-mini"), help="a codi2 model directory")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=50, help="requests per client and endpoint")
    p.add_argument("--draw-every", type=int, default=4, help="every k-th turn of a client asks for a picture")
    p.add_argument("--endpoints", default="api,gradio", help="which to drive, in this order")
    p.add_argument("--rounds", type=int, default=5, help="the endpoints take turns this many times")
    p.add_argument("--set", action="append", default=["max_turns=4", "max_log_turns=16"],
                   help="serve settings (ServeConfig KEY=VALUE)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--out", default=None, help="write the JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(REPO))

    tmp = Path(tempfile.mkdtemp(prefix="codi2-api-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "serve.app", "--api", "--model", args.model, "--host", "127.0.0.1", "--port", str(port)]
    for s in args.set:
        cmd += ["--set", s]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    log_file = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    phases: list[Phase] = []
    rss: list[float] = []
    try:
        wait_for(url + "/v1/models", proc, args.startup_timeout)
        import httpx

        model = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
        pictures = tmp / "pictures"
        pictures.mkdir()
        makers = {"api": lambda: api_client(url, model), "gradio": lambda: gradio_client(url)}
        warm = api_client(url, model)  # loads the decoders and fills caches before anything is timed
        for i in (0, args.draw_every - 1):
            warm(turn_plan(99, i, args.draw_every, pictures))
        phases = [Phase(name, makers[name], args.clients) for name in args.endpoints.split(",")]
        per_round = [args.requests // args.rounds + (r < args.requests % args.rounds) for r in range(args.rounds)]
        rss = [round(rss_mb(proc.pid), 1)]
        for r, n in enumerate(per_round):  # endpoints take turns, so both meet the same background load
            for ph in phases:
                ph.run(n, args.draw_every, pictures)
                print(f"round {r + 1}/{args.rounds} {ph.name}: {json.dumps(ph.result())}", flush=True)
                rss.append(round(rss_mb(proc.pid), 1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
        shutil.rmtree(tmp, ignore_errors=True)
    import platform

    result: dict[str, Any] = {
        "what": "the same workload through the OpenAI-compatible API and the Gradio endpoint, one server "
                "(python -m serve.app --api), one model, one run",
        "model": os.path.relpath(args.model, REPO) if Path(args.model).is_relative_to(REPO) else args.model,
        "settings": {"clients": args.clients, "requests_per_client": args.requests, "draw_every": args.draw_every,
                     "serve": args.set, "seed": 0},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "rounds": args.rounds,
        "endpoints": [ph.result() for ph in phases],
        "server_rss_mb_after_each_phase": rss,
        "ok": bool(phases) and all(ph.result()["errors"] == 0 and ph.result()["requests"] == args.clients * args.requests
                                   for ph in phases),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
