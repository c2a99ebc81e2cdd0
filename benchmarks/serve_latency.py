"""Latency of `lvlmrec serve` at the study's scale, over real HTTP on loopback.

Writes a finished run of the Amazon Clothing shape (38,493 items, 23,318 users, about 280k
interactions split 60/20/20 per user, popularity-skewed; a clustered 384-d content
representation fitted as a ContentRecommender with mean and with max scoring), starts
`python -m lvlmrec serve` on 127.0.0.1 in a subprocess, and drives it with concurrent
clients (threads, one keep-alive httpx client each) for a bounded time per scenario:

  user-mean   GET /users/{random user}/recommendations?k=10   (mean profile, explanations)
  user-max    the same with max-similarity scoring
  similar     GET /items/{random item}/similar?k=10
  anonymous   POST /recommendations with 10 random items

Latency is measured by the client, request to full response, so it includes HTTP, JSON
and the client's own time on the shared cores. The server runs with its access log off;
`server_cpu_ms` is the server process's CPU time per answered request (what the service
costs) and `client_cpu_ms` the clients' (which share the same cores).

    python benchmarks/serve_latency.py [--seconds 15] [--clients 1 4] [--index exact]
                                       [--workdir DIR] [--scenarios user-mean ...]

Target (issue 9): p99 under 20 ms for /users/{id}/recommendations at 38,493 items on
2 cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml

from lvlmrec.config import RepresentConfig, RunConfig, StrategyConfig
from lvlmrec.data.schema import Dataset, random_split
from lvlmrec.represent.base import TrainData
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.workdir import Workdir, to_jsonable, write_text

N_ITEMS, N_USERS, DIM, MEAN_INTERACTIONS = 38_493, 23_318, 384, 12
SRC = Path(__file__).resolve().parents[1] / "src"


def build_run(root: Path, seed: int = 0) -> Workdir:
    """A finished run of the study's size, written directly (no pipeline, no images)."""
    rng = np.random.default_rng(seed)
    wd = Workdir(root)
    popularity = rng.lognormal(0, 1.2, N_ITEMS)
    popularity /= popularity.sum()
    per_user = 5 + rng.poisson(MEAN_INTERACTIONS - 5, N_USERS)
    users = np.repeat(np.arange(N_USERS), per_user)
    inter = pd.DataFrame({"user_id": users,
                          "item_id": rng.choice(N_ITEMS, size=len(users), p=popularity)})
    inter = inter.drop_duplicates(ignore_index=True)
    inter["split"] = random_split(inter["user_id"].to_numpy(), seed)
    items = pd.DataFrame({"item_id": np.arange(N_ITEMS),
                          "source_id": [f"B{i:09d}" for i in range(N_ITEMS)],
                          "title": [f"Product {i}" for i in range(N_ITEMS)],
                          "text": "", "image_path": ""})
    users_df = pd.DataFrame({"user_id": np.arange(N_USERS),
                             "source_id": [f"A{u:012d}" for u in range(N_USERS)]})
    ds = Dataset(items, inter, users_df)
    ds.save(wd, {"source": "benchmarks/serve_latency.py (synthetic)"})
    # embeddings with structure: 300 clusters plus noise, like real product embeddings
    centres = rng.standard_normal((300, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 300, N_ITEMS)] \
        + 0.6 * rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    data = TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"),
                     embedding=lambda source: vectors, seed=seed)
    strategies = []
    for name, scoring in (("content_mean", "mean"), ("content_max", "max")):
        ContentRecommender(source="title", scoring=scoring).fit(data).save(wd.model_dir(name))
        strategies.append(StrategyConfig(name=name, kind="content", text="title",
                                         scoring=scoring))
    cfg = RunConfig(represent=RepresentConfig(strategies=strategies))
    write_text(wd.config_path, yaml.safe_dump(to_jsonable(cfg), sort_keys=False))
    return wd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(wd: Workdir, port: int, index: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "lvlmrec", "serve", "--workdir", str(wd.root),
           "--host", "127.0.0.1", "--port", str(port), "--index", index, "--no-access-log"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not answer /health within 600 s")


def scenario_request(name: str, rng: np.random.Generator) -> tuple[str, str, dict | None]:
    if name == "user-mean":
        return "GET", f"/users/{rng.integers(N_USERS)}/recommendations?k=10", None
    if name == "user-max":
        return ("GET", f"/users/{rng.integers(N_USERS)}/recommendations?k=10"
                "&representation=content_max", None)
    if name == "similar":
        return "GET", f"/items/{rng.integers(N_ITEMS)}/similar?k=10", None
    if name == "anonymous":
        return "POST", "/recommendations", {"items": rng.integers(N_ITEMS, size=10).tolist()}
    raise ValueError(f"unknown scenario {name!r}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(base: str, scenario: str, clients: int, seconds: float, server_pid: int,
          warmup: float = 2.0) -> dict:
    """Closed-loop clients: each sends its next request when the last one answered."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.perf_counter()
    t_measure, t_end = start + warmup, start + warmup + seconds

    def client(i: int) -> None:
        rng = np.random.default_rng(1000 + i)
        with httpx.Client(base_url=base, timeout=30) as http:
            while True:
                method, url, body = scenario_request(scenario, rng)
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                response = http.request(method, url, json=body)
                t1 = time.perf_counter()
                if response.status_code != 200:
                    errors[i] += 1
                elif t0 >= t_measure:
                    latencies[i].append(t1 - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu, own = [], []
    for when in (t_measure, t_end):  # CPU time of the server and of the clients
        time.sleep(max(0.0, when - time.perf_counter()))
        cpu.append(cpu_seconds(server_pid))
        own.append(time.process_time())
    for t in threads:
        t.join()
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1000
    return {"scenario": scenario, "clients": clients, "requests": len(lat),
            "errors": sum(errors), "req_per_s": len(lat) / seconds,
            "p50_ms": np.percentile(lat, 50), "p90_ms": np.percentile(lat, 90),
            "p99_ms": np.percentile(lat, 99), "max_ms": lat.max(),
            "server_cpu_ms": (cpu[1] - cpu[0]) * 1000 / max(len(lat), 1),
            "client_cpu_ms": (own[1] - own[0]) * 1000 / max(len(lat), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--scenarios", nargs="+",
                        default=["user-mean", "user-max", "similar", "anonymous"])
    parser.add_argument("--index", default="exact", choices=["exact", "hnsw"])
    parser.add_argument("--workdir", type=Path, help="where to write the synthetic run "
                        "(default: a temporary folder, removed afterwards)")
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as tmp:
        root = args.workdir or Path(tmp) / "run"
        t0 = time.perf_counter()
        wd = build_run(root) if not (root / "config.yaml").is_file() else Workdir(root)
        print(f"run: {root} ({N_ITEMS} items, {N_USERS} users, {DIM}-d) "
              f"in {time.perf_counter() - t0:.1f}s")
        port = free_port()
        t0 = time.perf_counter()
        server = start_server(wd, port, args.index)
        print(f"server up in {time.perf_counter() - t0:.1f}s on 127.0.0.1:{port} "
              f"(index {args.index}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} before the clients start)")
        try:
            rows = [drive(f"http://127.0.0.1:{port}", scenario, clients, args.seconds,
                          server.pid)
                    for scenario in args.scenarios for clients in args.clients]
        finally:
            server.terminate()
            server.wait(30)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    users = table[table["scenario"] == "user-mean"]
    if len(users):
        worst = users["p99_ms"].max()
        print(f"user recommendations p99 = {worst:.1f} ms (target < 20 ms): "
              f"{'met' if worst < 20 else 'NOT met'}")
    save_results(f"serve_latency_{args.index}", {
        "n_items": N_ITEMS, "n_users": N_USERS, "dim": DIM, "seconds_per_run": args.seconds,
        "rows": table.round(2).to_dict(orient="records")}, load)


if __name__ == "__main__":
    main()
