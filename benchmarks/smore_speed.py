"""SMORE, LightGCN and BPR-MF at the study's scale: graph time, seconds per epoch, memory.

Synthetic data of the Amazon Clothing shape: 23,318 users, 38,493 items, ~280k distinct
interactions (>= 5 per user, Zipf-like item popularity, split 60/20/20 per user) and 768-d
text and vision features (200 Gaussian clusters plus noise, so neighbourhoods mean
something). Each phase runs in a fresh process, so its peak memory is its own:

  graphs    the text (k 10) and vision (k 40) kNN graphs, built blockwise with top-k, and
            their max-union fusion graph
  <model>   building the model (SMORE: its three item graphs and the user-item graph) and
            `--epochs` epochs of training, each followed by validation Recall@20 over all
            users (the early-stopping check)

Memory is reported as the process's peak resident set (ru_maxrss), and its rise over the
resident set just before the phase (imports and input data already in memory); for the
graphs also the peak of numpy's allocations (tracemalloc).

    python benchmarks/smore_speed.py [--epochs 1] [--models smore,lightgcn,bpr]
                                     [--threads N] [--device cpu] [--block-size N]

Times on a shared machine grow with its load: each line ends with the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import numpy as np

N_USERS, N_ITEMS, N_INTERACTIONS, DIM = 23_318, 38_493, 280_000, 768


def _rss_mib() -> float:
    """Current resident set of this process (Linux /proc; peak elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mib()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def study_shaped_data(seed: int = 0):
    """(train, valid) users x items CSR matrices of the study's shape."""
    from lvlmrec.data.schema import interaction_matrix, random_split

    rng = np.random.default_rng(seed)
    per_user = 5 + rng.multinomial(N_INTERACTIONS - 5 * N_USERS,
                                   rng.dirichlet(np.full(N_USERS, 2.0)))
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
    popularity = popularity[rng.permutation(N_ITEMS)] / popularity.sum()
    users = np.repeat(np.arange(N_USERS), per_user)
    items = rng.choice(N_ITEMS, size=len(users), p=popularity)
    keys = np.unique(users.astype(np.int64) * N_ITEMS + items)
    users, items = keys // N_ITEMS, keys % N_ITEMS
    split = random_split(users, seed)
    return tuple(interaction_matrix(users[split == s], items[split == s], N_USERS, N_ITEMS)
                 for s in ("train", "valid"))


def clustered_features(seed: int, n_clusters: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(n_clusters, size=N_ITEMS)]
    return x + 0.8 * rng.normal(size=x.shape).astype(np.float32)


def _setup(threads: int | None):
    from lvlmrec.device import set_cpu_threads

    return set_cpu_threads(threads)


def graphs_phase(threads: int | None, device: str, block_size: int | None) -> dict:
    from lvlmrec.represent.graph import knn_graph, max_union

    _setup(threads)
    text, vision = clustered_features(1), clustered_features(2)
    before = _rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    text_adj = knn_graph(text, 10, block_size=block_size, device=device)
    t1 = time.perf_counter()
    vision_adj = knn_graph(vision, 40, block_size=block_size, device=device)
    t2 = time.perf_counter()
    fusion = max_union(text_adj, vision_adj)
    t3 = time.perf_counter()
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"text_knn_s": t1 - t0, "vision_knn_s": t2 - t1, "fusion_s": t3 - t2,
            "total_s": t3 - t0, "fusion_edges": fusion.nnz,
            "rss_before_mib": before, "peak_rss_mib": _peak_mib(),
            "rise_mib": _peak_mib() - before, "numpy_peak_mib": numpy_peak / 2**20}


def model_phase(name: str, epochs: int, threads: int | None, device: str,
                block_size: int | None) -> dict:
    import torch

    from lvlmrec.represent.base import TrainData
    from lvlmrec.represent.cf import BPRMF, LightGCN, train_bpr
    from lvlmrec.represent.smore import SMORE
    from lvlmrec.represent.training import seed_everything

    n_threads = _setup(threads)
    train, valid = study_shaped_data()
    features = {"text": clustered_features(1), "vision": clustered_features(2)}
    data = TrainData(train=train, valid=valid, embedding=features.__getitem__,
                     device=device, show_progress=False)
    model = {"smore": lambda: SMORE(text="text", vision="vision", knn_block_size=block_size),
             "lightgcn": LightGCN, "bpr": BPRMF}[name]()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mib()
    seed_everything(0)
    t0 = time.perf_counter()
    module = model.build_module(data).to(torch.device(device))
    build_s = time.perf_counter() - t0
    settings = {**model.train_settings(), "epochs": epochs, "patience": epochs}
    result = train_bpr(module, data, **settings)
    out = {"threads": n_threads, "train_interactions": train.nnz, "build_s": build_s,
           "epoch_s": float(np.mean(result.train_seconds)),
           "valid_s": float(np.mean(result.valid_seconds)),
           "steps_per_epoch": -(-train.nnz // settings["batch_size"]),
           "loss": result.losses, "recall20": [r for _, r in result.valid],
           "rss_before_mib": before, "peak_rss_mib": _peak_mib(),
           "rise_mib": _peak_mib() - before}
    if device.startswith("cuda"):
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _run(fn, *args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default="smore,lightgcn,bpr")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the CPUs this process may use)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--block-size", type=int, default=None,
                        help="kNN rows per block (default: 128 MiB of scores per block)")
    parser.add_argument("--skip-graphs", action="store_true")
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    results: dict = {"n_users": N_USERS, "n_items": N_ITEMS, "dim": DIM,
                     "device": args.device, "models": {}}
    print(f"shape: {N_USERS} users, {N_ITEMS} items, ~{N_INTERACTIONS} interactions, "
          f"{DIM}-d text and vision features; device {args.device}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_graphs:
        g = _run(graphs_phase, args.threads, args.device, args.block_size)
        results["graphs"] = g
        print(f"graphs: text k10 {g['text_knn_s']:.1f}s, vision k40 {g['vision_knn_s']:.1f}s, "
              f"fusion {g['fusion_s']:.1f}s, total {g['total_s']:.1f}s; "
              f"{g['fusion_edges']} fusion edges; peak RSS {g['peak_rss_mib']:.0f} MiB "
              f"(+{g['rise_mib']:.0f} over {g['rss_before_mib']:.0f} before), "
              f"numpy peak {g['numpy_peak_mib']:.0f} MiB; load {os.getloadavg()[0]:.1f}")
    for name in filter(None, args.models.split(",")):
        r = _run(model_phase, name, args.epochs, args.threads, args.device, args.block_size)
        results["models"][name] = r
        gpu = f", GPU peak {r['gpu_peak_mib']:.0f} MiB" if "gpu_peak_mib" in r else ""
        print(f"{name}: build {r['build_s']:.1f}s, {r['epoch_s']:.1f}s/epoch "
              f"({r['steps_per_epoch']} steps of 2048 over {r['train_interactions']} "
              f"interactions, {r['threads']} threads), validation {r['valid_s']:.1f}s; "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['rise_mib']:.0f}){gpu}; "
              f"loss {['%.4f' % x for x in r['loss']]}, "
              f"recall@20 {['%.4f' % x for x in r['recall20']]}; "
              f"load {os.getloadavg()[0]:.1f}")
    save_results("smore_speed", results, load)


if __name__ == "__main__":
    main()
