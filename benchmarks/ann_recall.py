"""Recall@10 and speed of the HNSW index (`lvlmrec serve --index hnsw`) against exact search.

Item vectors: a fitted representation of a finished run (`--workdir D --representation R`),
or by default a synthetic catalog of the study's size (38,493 items x 384 dims, 300
clusters plus noise, L2-normalised, like sentence embeddings of product texts). Queries
are catalog items (the similar-items request): for each, the 10 nearest other items by
exact cosine are the truth, and recall@10 is the share of them the index returns (an item
tied with the 10th true neighbour counts as found).

    python benchmarks/ann_recall.py [--queries 2000] [--ef 32 64 128 256] [--m 16]
    python benchmarks/ann_recall.py --workdir runs/demo --representation lvlm_text
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from lvlmrec.serve.index import ExactIndex, HnswIndex, unit_rows

N_ITEMS, DIM = 38_493, 384


def synthetic_vectors(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((300, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 300, N_ITEMS)] \
        + 0.6 * rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    return unit_rows(vectors)


def run_vectors(workdir: str, representation: str) -> np.ndarray:
    from lvlmrec.represent.fit import load_model
    from lvlmrec.workdir import Workdir

    vectors = load_model(Workdir(workdir), representation).item_vectors()
    if vectors is None:
        raise SystemExit(f"representation {representation!r} has no item vectors to index")
    return unit_rows(vectors)


def tie_aware_recall(vectors: np.ndarray, query: int, found: np.ndarray,
                     truth: np.ndarray) -> float:
    """Share of the true top-k found, where an item as similar as the k-th true neighbour
    counts too: catalogs hold identical vectors (same description), and which of several
    tied items is returned is not an error of the index."""
    kth = vectors[truth[-1]] @ vectors[query]
    sims = vectors[found] @ vectors[query]
    return min(int((sims >= kth - 1e-6).sum()), len(truth)) / len(truth)


def timed_search(index, vectors: np.ndarray, queries: np.ndarray, k: int):
    found, seconds = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = index.search(vectors[q], k, exclude=(int(q),))
        seconds.append(time.perf_counter() - t0)
        found.append(ids)
    return found, np.asarray(seconds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--workdir")
    parser.add_argument("--representation")
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    threadpool_limits(1)  # as in `lvlmrec serve`: one BLAS thread per request

    vectors = (run_vectors(args.workdir, args.representation) if args.workdir
               else synthetic_vectors())
    rng = np.random.default_rng(0)
    present = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    queries = rng.choice(present, size=min(args.queries, len(present)), replace=False)
    print(f"{len(vectors)} items x {vectors.shape[1]} dims, {len(queries)} queries, k={args.k}")

    exact = ExactIndex(vectors)
    truth, exact_ms = timed_search(exact, vectors, queries, args.k)
    rows = [{"index": "exact", "build_s": 0.0, "recall@10": 1.0,
             "p50_ms": np.percentile(exact_ms, 50), "p99_ms": np.percentile(exact_ms, 99)}]
    t0 = time.perf_counter()
    ann = HnswIndex(vectors, m=args.m)
    build = time.perf_counter() - t0
    for ef in args.ef:
        ann.set_ef(ef)
        found, ann_ms = timed_search(ann, vectors, queries, args.k)
        recall = np.mean([tie_aware_recall(vectors, q, f, t)
                          for q, f, t in zip(queries, found, truth)])
        rows.append({"index": f"hnsw M={args.m} ef={ef}", "build_s": build,
                     "recall@10": recall, "p50_ms": np.percentile(ann_ms, 50),
                     "p99_ms": np.percentile(ann_ms, 99)})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    save_results("ann_recall", {"n_items": len(vectors), "dim": int(vectors.shape[1]),
                                "queries": len(queries), "k": args.k,
                                "rows": pd.DataFrame(rows).to_dict(orient="records")}, load)


if __name__ == "__main__":
    main()
