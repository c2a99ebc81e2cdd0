"""Full-catalog ranking evaluation in blocks of users.

For each block of users: the model's scores for all items, the user's history masked to
-inf (and, when a candidate set is given, every item outside it), the top-K by torch's
multi-threaded `topk`, then every metric from the (block, K) hit matrix. Memory is bounded
by block_size x n_items floats; the users x items score matrix never exists whole.

Ties are broken by a seeded permutation of the item ids (`tie_order`), the same for every
model, never by the item id itself (ids often follow popularity or insertion order, so a
lower-id rule quietly favours some items and so some models): `topk` takes K + 1 items,
and a row whose K-th and (K+1)-th scores are equal (the only case where the top-K *set*
depends on the tie-break) is re-ranked exactly; within the top K, equal scores are ordered
by their place in the permutation. Such rows are counted (`Ranking.tied`): a model whose
scores tie at the cut-off for many users is partly ranked by the coin, and the report says
so. NaN scores count as -inf. Items at -inf (masked) are never returned;
a row with fewer than K rankable items is padded with -1.

Metric definitions (per user u with target set T, |T| = n >= 1, top-K list r_1..r_K,
rel_i = 1 if r_i in T):
  Recall@K    = sum(rel_i) / n                (divides by n, not by min(n, K): a user
                                               with more than K targets cannot reach 1)
  Precision@K = sum(rel_i) / K
  Hit@K       = 1 if sum(rel_i) > 0 else 0
  NDCG@K      = DCG / IDCG, DCG = sum(rel_i / log2(i + 1)), binary relevance;
                IDCG = sum_{i <= min(n, K)} 1 / log2(i + 1)
  MAP@K       = sum(Precision@i * rel_i) / min(n, K)
Users without targets are skipped (they are not averaged as zeros).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

METRICS = ("recall", "ndcg", "precision", "hit", "map")


def metric_columns(ks: Sequence[int]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in METRICS]


# --------------------------------------------------------------------------- top-k
@functools.lru_cache(maxsize=8)
def tie_order(n_items: int, seed: int = 0) -> np.ndarray:
    """Tie-break rank of every item: among equal scores, lower rank comes first.

    rank[i] is item i's place in `numpy.random.default_rng(seed).permutation(n_items)`;
    the array is read-only and shared (cached per (n_items, seed)).
    """
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n_items)] = np.arange(n_items)
    rank.flags.writeable = False
    return rank


def tie_record(n_items: int, seed: int) -> dict:
    """What run.json says about the tie-break, enough to rebuild it."""
    import hashlib

    perm = np.argsort(tie_order(n_items, seed))
    return {"method": "seeded permutation of item ids", "seed": int(seed),
            "n_items": int(n_items),
            "rule": "among equal scores, the item earlier in "
                    "numpy.random.default_rng(seed).permutation(n_items) ranks higher",
            "permutation_sha256": hashlib.sha256(perm.astype("<i8").tobytes()).hexdigest()}


def tied_at(sorted_vals: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """K -> per row: does the K-th best finite score equal the (K+1)-th (a tie at the
    cut-off, where the tie-break decides which items make the top K)?"""
    out = {}
    for k in ks:
        if k < sorted_vals.shape[1]:
            kth = sorted_vals[:, k - 1]
            out[k] = np.isfinite(kth) & (kth == sorted_vals[:, k])
        else:  # every rankable item is in the top K: nothing is cut
            out[k] = np.zeros(sorted_vals.shape[0], dtype=bool)
    return out


def topk_block(scores: np.ndarray | torch.Tensor, k: int,
               tie_rank: np.ndarray | None = None) -> np.ndarray:
    """Row-wise top-k item ids of a (b, n) score block, best first, ties by `tie_rank`
    (default: `tie_order(n)`).

    -inf and NaN entries are never returned; rows with fewer than k such finite scores are
    padded with -1. The block may be modified in place (NaN replaced by -inf).
    """
    return topk_with_values(scores, k, tie_rank)[0]


def topk_with_values(scores: np.ndarray | torch.Tensor, k: int,
                     tie_rank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`topk_block` plus the (b, min(k + 1, n)) best scores of each row, sorted (for
    `tied_at`)."""
    scores = torch.as_tensor(scores)
    b, n = scores.shape
    k = min(k, n)
    if b == 0 or k == 0:
        return np.full((b, k), -1, dtype=np.int64), np.empty((b, 0), dtype=np.float32)
    if tie_rank is None:
        tie_rank = tie_order(n)
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1, sorted=True)
    nan_rows = torch.isnan(vals).any(dim=1)
    if bool(nan_rows.any()):
        rows = torch.nonzero(nan_rows).ravel()
        fixed = torch.nan_to_num(scores[rows], nan=-torch.inf)
        scores[rows] = fixed
        vals[rows], idx[rows] = torch.topk(fixed, vals.shape[1], dim=1, sorted=True)
    vals_np, idx_np = vals.numpy(), idx.numpy().astype(np.int64)
    top_vals, top = vals_np[:, :k], idx_np[:, :k]
    order = np.lexsort((tie_rank[top], -top_vals), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_vals = np.take_along_axis(top_vals, order, axis=1)
    if k < n:
        # the K-th score ties with an item outside the K taken: the set itself depends on
        # the tie-break, so rank that row exactly
        for row in np.flatnonzero(vals_np[:, k - 1] == vals_np[:, k]):
            s = scores[row].numpy()
            cand = np.flatnonzero(s >= vals_np[row, k - 1])
            best = cand[np.lexsort((tie_rank[cand], -s[cand]))[:k]]
            top[row], top_vals[row] = best, s[best]
    top[np.isneginf(top_vals)] = -1
    return top, vals_np


def mask_block(scores: torch.Tensor, history: sp.csr_matrix,
               excluded: torch.Tensor | None = None) -> None:
    """Set each row's history items, and the `excluded` item ids for all rows, to -inf."""
    n = scores.shape[1]
    rows = np.repeat(np.arange(history.shape[0], dtype=np.int64), np.diff(history.indptr))
    flat = torch.from_numpy(rows * n + history.indices.astype(np.int64))
    scores.view(-1).index_fill_(0, flat, -torch.inf)
    if excluded is not None and len(excluded):
        scores.index_fill_(1, excluded, -torch.inf)


# --------------------------------------------------------------------------- metrics
def row_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys row * n_cols + col of a sparse matrix's nonzeros."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows * matrix.shape[1] + matrix.indices.astype(np.int64)


def contains(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Elementwise: is each query key in the sorted `keys`?"""
    if len(keys) == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def hits_matrix(top: np.ndarray, target: sp.csr_matrix) -> np.ndarray:
    """(b, K) 0/1 matrix: is top[u, i] one of user u's targets (row u of `target`)?

    A sorted-key lookup (row * n_items + item) instead of sparse fancy indexing.
    """
    n = target.shape[1]
    query = np.arange(top.shape[0], dtype=np.int64)[:, None] * n + top
    return (contains(row_keys(target), query) & (top >= 0)).astype(np.float64)


def metrics_from_hits(hits: np.ndarray, n_targets: np.ndarray, ks: Sequence[int]) -> dict:
    """Per-user metric arrays from a (users, K) 0/1 hit matrix ordered by rank.

    `hits` may be narrower than max(ks) when the catalog is smaller than K; positions
    beyond it count as misses. n_targets must be >= 1.
    """
    hits = np.asarray(hits, dtype=np.float64)
    n_targets = np.asarray(n_targets, dtype=np.float64)
    width = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, max(max(ks), width) + 2))
    ideal = np.cumsum(discounts)
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_rank = cum_hits / np.arange(1, width + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, width)
        h = hits[:, :kk]
        n_hit = h.sum(axis=1)
        denom = np.minimum(n_targets, k)
        out[f"recall@{k}"] = n_hit / n_targets
        out[f"ndcg@{k}"] = (h * discounts[:kk]).sum(axis=1) / ideal[denom.astype(int) - 1]
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"map@{k}"] = (precision_at_rank[:, :kk] * h).sum(axis=1) / denom
    return out


# --------------------------------------------------------------------------- evaluation
@dataclasses.dataclass
class Ranking:
    """Per-user metrics plus the top-K lists they were computed from (row-aligned)."""

    per_user: pd.DataFrame
    top: np.ndarray  # (n_users, K) item ids, -1 padded
    #: K -> per user: was the K-th score tied with the (K+1)-th (see `tied_at`)?
    tied: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


def score_block(model, users: np.ndarray, hist: sp.csr_matrix, n_items: int,
                order: sp.csr_matrix | None = None) -> torch.Tensor:
    """A model's scores for a block; a model that `needs_order` also gets the block's
    `order` rows (positions 1..n in time order, same non-zeros as `hist`)."""
    if order is not None and getattr(model, "needs_order", False):
        scores = model.score(users, hist, history_order=order)
    else:
        scores = model.score(users, hist)
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float32).contiguous()
    else:
        scores = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    if tuple(scores.shape) != (len(users), n_items):
        raise ValueError(f"{type(model).__name__}.score returned shape {tuple(scores.shape)}; "
                         f"expected {(len(users), n_items)}")
    return scores


def iter_topk(model, user_ids: np.ndarray, history: sp.csr_matrix, k: int,
              block_size: int = 2048, candidates: np.ndarray | None = None,
              show_progress: bool = True, desc: str = "rank", tie_seed: int = 0,
              order: sp.csr_matrix | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """(positions in user_ids, top-k ids) per block: scores, history masked, top-k."""
    for pos, top, _ in iter_topk_values(model, user_ids, history, k, block_size, candidates,
                                        show_progress, desc, tie_seed, order):
        yield pos, top


def iter_topk_values(model, user_ids: np.ndarray, history: sp.csr_matrix, k: int,
                     block_size: int = 2048, candidates: np.ndarray | None = None,
                     show_progress: bool = True, desc: str = "rank", tie_seed: int = 0,
                     order: sp.csr_matrix | None = None,
                     ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """`iter_topk` plus each block's sorted best k + 1 scores (`topk_with_values`).
    `order`: users x items time positions of `history` (for models that `needs_order`)."""
    history = sp.csr_matrix(history)
    n_items = history.shape[1]
    excluded = None
    if candidates is not None:
        candidates = np.asarray(candidates, dtype=bool)
        if candidates.shape != (n_items,):
            raise ValueError(f"candidates must be a boolean mask of {n_items} items")
        excluded = torch.from_numpy(np.flatnonzero(~candidates))
    tie_rank = tie_order(n_items, tie_seed)
    starts = range(0, len(user_ids), block_size)
    for start in tqdm(starts, desc=desc, disable=not show_progress, unit="block", leave=False):
        users = user_ids[start:start + block_size]
        hist = history[users]
        scores = score_block(model, users, hist, n_items,
                             None if order is None else order[users])
        mask_block(scores, hist, excluded)
        top, vals = topk_with_values(scores, k, tie_rank)
        del scores  # free this block before the next one is scored
        yield slice(start, start + len(users)), top, vals


def rank_users(
    model,
    user_ids: np.ndarray,
    history: sp.csr_matrix,
    target: sp.csr_matrix,
    ks: Sequence[int] = (5, 10, 20, 50),
    block_size: int = 2048,
    candidates: np.ndarray | None = None,
    show_progress: bool = True,
    desc: str = "evaluate",
    tie_seed: int = 0,
    order: sp.csr_matrix | None = None,
) -> Ranking:
    """Metrics of `model` for the users in `user_ids` (rows of users x items matrices).

    history: items masked from the ranking (train for validation, train+valid for test),
    also what the model scores from. target: the held-out items to find; users without
    any are skipped. candidates: optional boolean mask over items; only these are ranked
    (targets outside it are ignored; see `protocols` for the covered subset).
    tie_seed: the seed of the tie-break permutation (`tie_order`).
    order: optional time positions of `history` (same non-zeros), passed to models that
    declare `needs_order`; set-based models never see it.
    """
    target = sp.csr_matrix(target)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if candidates is not None:
        target = restrict_columns(target, candidates)
    user_ids = user_ids[np.diff(target.indptr)[user_ids] > 0]
    max_k = max(ks)
    top = np.full((len(user_ids), min(max_k, target.shape[1])), -1, dtype=np.int64)
    tied = {k: np.zeros(len(user_ids), dtype=bool) for k in ks}
    for pos, block_top, vals in iter_topk_values(model, user_ids, history, max_k, block_size,
                                                 candidates, show_progress, desc, tie_seed,
                                                 order):
        top[pos] = block_top
        for k, flags in tied_at(vals, ks).items():
            tied[k][pos] = flags
    ranking = ranking_from_top(top, user_ids, history, target, ks)
    ranking.tied = tied
    return ranking


def ranking_from_top(top: np.ndarray, user_ids: np.ndarray, history: sp.csr_matrix,
                     target: sp.csr_matrix, ks: Sequence[int]) -> Ranking:
    """Per-user metrics from each user's ranked list (row i of `top` is user_ids[i])."""
    target = sp.csr_matrix(target)
    n_targets = np.diff(target.indptr)[user_ids]
    per_user = pd.DataFrame({
        "user_id": user_ids,
        "n_targets": n_targets,
        "n_history": np.diff(sp.csr_matrix(history).indptr)[user_ids],
        **metrics_from_hits(hits_matrix(top, target[user_ids]), n_targets, ks),
    })
    return Ranking(per_user, top)


def evaluate_model(model, user_ids, history, target, ks: Sequence[int] = (5, 10, 20, 50),
                   block_size: int = 2048, candidates: np.ndarray | None = None,
                   show_progress: bool = True, desc: str = "evaluate",
                   tie_seed: int = 0, order: sp.csr_matrix | None = None) -> pd.DataFrame:
    """Per-user metrics only (see `rank_users`)."""
    return rank_users(model, user_ids, history, target, ks, block_size, candidates,
                      show_progress, desc, tie_seed, order).per_user


def restrict_columns(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The same users x items matrix with every column outside the boolean `keep` dropped
    to zero (shape unchanged)."""
    matrix = sp.csr_matrix(matrix)
    mask = np.asarray(keep, dtype=bool)[matrix.indices]
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[mask]
    return sp.csr_matrix((matrix.data[mask], (rows, matrix.indices[mask])), shape=matrix.shape)
