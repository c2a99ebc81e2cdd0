"""Evaluation speed at the study's shape: our blocked evaluator vs the study's per-user loop.

Builds a synthetic dataset of the Amazon Clothing shape (23,318 users, 38,493 items, ~280k
interactions split 60/20/20 per user, popularity-skewed) and a 384-d content
representation (mean-profile cosine, as in the study). Then, in the same process:

  ours      `rank_users` on every user's test split: history (train + valid) masked, full
            ranking over the catalog, Recall/NDCG/Precision/Hit/MAP at 5, 10, 20, 50.
  baseline  the study's algorithm, per user: pandas filter of the interactions, cosine of the
            mean profile to every item (sklearn), full argsort, history removed, top-10,
            recall. Timed on a sample of users and extrapolated to all of them.

Peak memory is the resident set's peak during our evaluation minus the resident set just
before it (the inputs), sampled every 2 ms. The bare floor (blocked product into a reused
buffer + top-k, nothing else) is timed too, so a figure taken on a loaded machine can be
read as a ratio.

    python benchmarks/eval_speed.py [--repeats 3] [--baseline-users 300] [--block-size N]

The last line reads `seconds=<ours> baseline_seconds=<extrapolated> speedup=<ratio>
peak_mib=<ours>`; `seconds` is the best wall time of the repeats (the machine may be shared:
the CPU seconds of each run are printed too).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lvlmrec.data.schema import interaction_matrix
from lvlmrec.evaluate.ranking import rank_users
from lvlmrec.represent.base import TrainData
from lvlmrec.represent.content import ContentRecommender

N_USERS, N_ITEMS, N_INTERACTIONS, DIM = 23_318, 38_493, 280_000, 384


def study_shaped_data(seed: int = 0) -> pd.DataFrame:
    """user_id, item_id, split: >= 5 distinct items per user, Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    extra = N_INTERACTIONS - 5 * N_USERS
    per_user = 5 + rng.multinomial(extra, rng.dirichlet(np.full(N_USERS, 2.0)))
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
    popularity = popularity[rng.permutation(N_ITEMS)] / popularity.sum()
    users = np.repeat(np.arange(N_USERS), per_user)
    items = rng.choice(N_ITEMS, size=len(users), p=popularity)
    frame = pd.DataFrame({"user_id": users, "item_id": items}).drop_duplicates()
    # a random 60/20/20 split per user, as in the study's data
    frame = frame.sample(frac=1.0, random_state=seed)
    rank = frame.groupby("user_id").cumcount().to_numpy()
    size = frame.groupby("user_id")["item_id"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(size * 0.2)).astype(int)
    n_valid = np.maximum(1, np.round(size * 0.2)).astype(int)
    split = np.where(rank < n_test, "test", np.where(rank < n_test + n_valid, "valid", "train"))
    frame["split"] = split
    return frame.sort_values(["user_id", "item_id"]).reset_index(drop=True)


def matrix(frame: pd.DataFrame, splits: tuple[str, ...]) -> sp.csr_matrix:
    part = frame[frame["split"].isin(splits)]
    return interaction_matrix(part["user_id"].to_numpy(), part["item_id"].to_numpy(),
                              N_USERS, N_ITEMS)


class PeakRss:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def study_per_user(frame: pd.DataFrame, embeddings: np.ndarray, users: np.ndarray,
                   k: int = 10) -> list[float]:
    """The study's evaluation loop (DESIGN §6), reproduced for timing."""
    from sklearn.metrics.pairwise import cosine_similarity

    train = frame[frame["split"] != "test"]
    test = frame[frame["split"] == "test"]
    recalls = []
    for user in users:
        history = train[train["user_id"] == user]["item_id"].to_numpy()
        targets = set(test[test["user_id"] == user]["item_id"].tolist())
        profile = embeddings[history].mean(axis=0, keepdims=True)
        sims = cosine_similarity(profile, embeddings)[0]
        ranked = np.argsort(-sims)
        seen = set(history.tolist())
        top = [i for i in ranked if i not in seen][:k]
        recalls.append(len(targets.intersection(top)) / len(targets))
    return recalls


def bare_floor(model: ContentRecommender, history: sp.csr_matrix, block_size: int) -> float:
    """Seconds for only the blocked profile x items product and a top-51 per row: the
    floor any exact full-ranking evaluator pays, timed under the same machine load."""
    import torch

    vecs = model.item_vectors_
    out = np.empty((block_size, vecs.shape[0]), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, history.shape[0], block_size):
        hist = history[start:start + block_size]
        counts = np.maximum(np.diff(hist.indptr), 1).astype(np.float32)[:, None]
        block = out[:hist.shape[0]]
        np.matmul((hist @ vecs) / counts, vecs.T, out=block)
        torch.topk(torch.from_numpy(block), 51, dim=1)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-users", type=int, default=300)
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    t0 = time.perf_counter()
    frame = study_shaped_data(args.seed)
    rng = np.random.default_rng(args.seed)
    embeddings = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    history, target = matrix(frame, ("train", "valid")), matrix(frame, ("test",))
    model = ContentRecommender("title").fit(TrainData(
        train=matrix(frame, ("train",)), valid=matrix(frame, ("valid",)),
        embedding=lambda source: embeddings))
    users = np.arange(N_USERS)
    print(f"data: {N_USERS} users, {N_ITEMS} items, {len(frame)} interactions, {DIM}-d "
          f"(built in {time.perf_counter() - t0:.1f}s)")

    times, peaks, cpus = [], [], []
    for repeat in range(args.repeats):
        with PeakRss() as mem:
            t0, cpu0 = time.perf_counter(), time.process_time()
            ranking = rank_users(model, users, history, target, block_size=args.block_size,
                                 show_progress=False)
            times.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
            cpus.append(cpu)
        peaks.append(mem.mib)
        print(f"ours, run {repeat + 1}: {times[-1]:.2f}s wall ({cpu:.2f} CPU-s) for "
              f"{len(ranking.per_user)} users, peak +{mem.mib:.0f} MiB, "
              f"recall@10 {ranking.per_user['recall@10'].mean():.4f}")

    floor = min(bare_floor(model, history, args.block_size) for _ in range(2))
    print(f"floor (bare blocked product + top-k, no masking or metrics): {floor:.2f}s wall; "
          f"ours / floor = {min(times) / floor:.2f}")

    sample = np.random.default_rng(args.seed + 1).choice(N_USERS, args.baseline_users,
                                                         replace=False)
    t0 = time.perf_counter()
    recalls = study_per_user(frame, embeddings, sample)
    per_user = (time.perf_counter() - t0) / len(sample)
    baseline = per_user * N_USERS
    ours = ranking.per_user.set_index("user_id")["recall@10"]
    agree = np.allclose(ours.loc[sample].to_numpy(), recalls, atol=1e-9)
    print(f"study's loop: {per_user * 1e3:.1f} ms/user on {len(sample)} users -> "
          f"{baseline:.0f}s for all {N_USERS}; recall@10 agrees with ours: {agree}")
    best = min(times)
    print(f"seconds={best:.2f} baseline_seconds={baseline:.1f} speedup={baseline / best:.0f} "
          f"peak_mib={max(peaks):.0f}")
    save_results("eval_speed", {
        "n_users": N_USERS, "n_items": N_ITEMS, "dim": DIM, "seconds": min(times),
        "seconds_per_run": times, "cpu_seconds_per_run": cpus, "peak_mib": max(peaks), "floor_seconds": floor,
        "baseline_ms_per_user": per_user * 1e3, "baseline_seconds": baseline,
        "speedup": baseline / best, "recall_agrees": bool(agree)}, load)


if __name__ == "__main__":
    main()
