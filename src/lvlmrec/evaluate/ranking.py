"""Full-catalog ranking evaluation in blocks of users.

For each block: the model's scores for all items, history items masked to -inf, top-K by
partial sort, then every metric from the (block, K) hit matrix. Memory is bounded by
block_size x n_items; the users x items score matrix never exists whole.
Ties are broken by lower item id, the same for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

METRICS = ("recall", "ndcg", "precision", "hit", "map")


def topk_block(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k item ids of a (b, n) score block, best first, ties by lower id.

    -inf entries are never returned ahead of finite ones; rows with fewer than k finite
    scores are padded with -1.
    """
    b, n = scores.shape
    k = min(k, n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = part_scores.min(axis=1, keepdims=True)
    # rows whose k-th score is tied with items outside the partition need an exact pass
    n_at_least = (scores >= kth).sum(axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    for row in np.flatnonzero(n_at_least > k):
        s = scores[row]
        cand = np.flatnonzero(s >= kth[row, 0])
        o = np.lexsort((cand, -s[cand]))[:k]
        top[row] = cand[o]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top[~np.isfinite(top_scores) & (top_scores < 0)] = -1
    return top


def metrics_from_hits(hits: np.ndarray, n_targets: np.ndarray, ks: Sequence[int]) -> dict:
    """Per-user metric arrays from a (users, K) 0/1 hit matrix ordered by rank."""
    hits = hits.astype(np.float64)
    n_targets = n_targets.astype(np.float64)
    max_k = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_rank = cum_hits / np.arange(1, max_k + 1)
    ideal = np.cumsum(discounts)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, max_k)
        h = hits[:, :kk]
        n_hit = h.sum(axis=1)
        denom_k = np.minimum(n_targets, k)
        idcg = ideal[np.minimum(n_targets, kk).astype(int) - 1]
        out[f"recall@{k}"] = n_hit / n_targets
        out[f"ndcg@{k}"] = (h * discounts[:kk]).sum(axis=1) / idcg
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"map@{k}"] = (precision_at_rank[:, :kk] * h).sum(axis=1) / denom_k
    return out


def evaluate_model(
    model,
    user_ids: np.ndarray,
    history: sp.csr_matrix,
    target: sp.csr_matrix,
    ks: Sequence[int] = (5, 10, 20, 50),
    block_size: int = 2048,
    candidates: np.ndarray | None = None,
    show_progress: bool = True,
    desc: str = "evaluate",
) -> pd.DataFrame:
    """Per-user metrics of `model` for `user_ids` (rows of users x items matrices).

    history: items masked from the ranking (train for validation, train+valid for test).
    target: the held-out items to find. Users without targets are skipped.
    candidates: optional boolean mask over items; only these are ranked (covered protocol).
    """
    history = sp.csr_matrix(history)
    target = sp.csr_matrix(target)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if candidates is not None:
        target = target.multiply(sp.csr_matrix(candidates.astype(np.float32)[None, :])).tocsr()
        target.eliminate_zeros()
    n_t = np.diff(target.indptr)[user_ids]
    user_ids = user_ids[n_t > 0]
    max_k = max(ks)
    rows: list[pd.DataFrame] = []
    blocks = range(0, len(user_ids), block_size)
    for start in tqdm(blocks, desc=desc, disable=not show_progress, unit="block", leave=False):
        users = user_ids[start:start + block_size]
        hist = history[users]
        scores = np.asarray(model.score(users, hist), dtype=np.float32)
        if scores.shape != (len(users), history.shape[1]):
            raise ValueError(
                f"{type(model).__name__}.score returned shape {scores.shape}; "
                f"expected {(len(users), history.shape[1])}"
            )
        scores = np.where(np.isnan(scores), -np.inf, scores)
        r, c = hist.nonzero()
        scores[r, c] = -np.inf
        if candidates is not None:
            scores[:, ~candidates] = -np.inf
        top = topk_block(scores, max_k)
        tgt = target[users]
        valid = top >= 0
        hits = np.zeros(top.shape, dtype=np.float32)
        rr = np.repeat(np.arange(len(users)), top.shape[1]).reshape(top.shape)
        hits[valid] = np.asarray(tgt[rr[valid], top[valid]]).ravel()
        n_targets = np.diff(tgt.indptr)
        m = metrics_from_hits(hits, n_targets, ks)
        rows.append(pd.DataFrame({"user_id": users, "n_targets": n_targets,
                                  "n_history": np.diff(hist.indptr), **m}))
    if not rows:
        cols = ["user_id", "n_targets", "n_history"] + [f"{m}@{k}" for k in ks for m in METRICS]
        return pd.DataFrame(columns=cols)
    return pd.concat(rows, ignore_index=True)
