"""Trained fusions, ItemKNN and the hybrid at the study's scale, on random data.

Builds interactions of the study's shape (23,318 users, 38,493 items, ~12 items per user,
popularity-skewed, split 60/20/20 per user) with random 384-d text and 768-d vision
features, and prints per model: seconds to fit (for a fusion: one epoch of training plus
its validation pass, and the validation pass alone) and the process's peak memory.

    python benchmarks/fusion_speed.py [--scale 1.0] [--epochs 1] [--models attention,...]
                                      [--objective user|cooccur] [--threads N]
                                      [--precision float32|bfloat16]

Writes JSON (date, machine, load, command; wall and CPU seconds per fit) to
benchmarks/results/fusion_speed[_<scale>].json.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lvlmrec.represent.base import TrainData
from lvlmrec.represent.baselines import Hybrid, ItemKNN
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.represent.fusion import AttentionFusion, CrossModalFusion, GatingFusion


def study_shaped(scale: float, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    n_users, n_items = int(23_318 * scale), int(38_493 * scale)
    counts = 5 + rng.negative_binomial(2, 2 / 9, size=n_users)  # mean ~12
    popularity = rng.lognormal(0, 1.2, size=n_items)
    popularity /= popularity.sum()
    rows, cols = [], []
    for user, n in enumerate(counts):
        items = rng.choice(n_items, size=n, replace=False, p=popularity)
        rows.append(np.full(n, user))
        cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    split = rng.random(len(rows))
    shape = (n_users, n_items)

    def matrix(mask):
        return sp.csr_matrix((np.ones(mask.sum(), np.float32), (rows[mask], cols[mask])),
                             shape=shape)

    emb = {"text": rng.normal(size=(n_items, 384)).astype(np.float32),
           "vision": rng.normal(size=(n_items, 768)).astype(np.float32)}
    return TrainData(train=matrix(split < 0.6), valid=matrix((split >= 0.6) & (split < 0.8)),
                     embedding=lambda s: emb[s], show_progress=False)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default="attention,gating,cross,itemknn,hybrid")
    parser.add_argument("--objective", default="user", help="the fusions' training objective")
    parser.add_argument("--threads", type=int, help="torch threads (default: idle cores)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                        help="the fusions' training precision")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    t0 = time.perf_counter()
    data = study_shaped(args.scale)
    print(f"{data.n_users} users, {data.n_items} items, {data.train.nnz} training and "
          f"{data.valid.nnz} validation interactions (built in "
          f"{time.perf_counter() - t0:.1f}s)")
    content = ContentRecommender("text").fit(data)
    t0 = time.perf_counter()
    data.valid_recall(content)
    valid_s = time.perf_counter() - t0
    print(f"validation Recall@20 pass (384-d): {valid_s:.1f}s")
    makers = {"attention": AttentionFusion, "gating": GatingFusion, "cross": CrossModalFusion}
    models = [makers[m]("text", "vision", epochs=args.epochs, objective=args.objective,
                        num_threads=args.threads, precision=args.precision)
              for m in args.models.split(",") if m in makers]
    models += [m for name, m in (("itemknn", ItemKNN()),
                                 ("hybrid", Hybrid("text", weight_grid=[0.5])))
               if name in args.models.split(",")]
    rows = []
    for model in models:
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(data)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{type(model).__name__:<18} fit {seconds:7.1f}s  CPU {cpu:7.1f}s   "
              f"peak {peak_mib():7.0f} MiB", flush=True)
        rows.append({"model": type(model).__name__, "fit_wall_s": round(seconds, 1),
                     "fit_cpu_s": round(cpu, 1), "peak_mib": round(peak_mib())})
    name = "fusion_speed" + ("" if args.scale == 1.0 else f"_{args.scale:g}")
    if args.objective != "user":
        name += f"_{args.objective}"
    if args.precision != "float32":
        name += f"_{args.precision}"
    save_results(name, {"scale": args.scale, "epochs": args.epochs, "objective": args.objective,
                        "precision": args.precision,
                        "threads": args.threads or "idle cores",
                        "n_users": data.n_users, "n_items": data.n_items,
                        "validation_pass_s": round(valid_s, 1), "fits": rows}, load, args.out)


if __name__ == "__main__":
    main()
