"""Evaluation protocols: which users, which history, which targets, which candidates.

Every representation is evaluated on the same `Task` (same users, masks and candidates);
only the scores differ.

full     (default) every user with a held-out item; candidates = the whole catalog minus
         the user's history.
covered  the catalog restricted to items that have a description in the active description
         set, as if no other item existed, for every representation alike: histories and
         targets keep only covered items (the model scores from the covered history), only
         covered items are ranked, and users with no covered history item or no covered
         target are dropped. The fair version of the study's 12% coverage.
sampled  each user's targets ranked among `n_negatives` items drawn uniformly (seeded, the
         same draw for every representation) from the items outside the user's history and
         targets; the usual metrics are computed within that pool. Known to overstate and
         reorder models (Krichene & Rendle, 2020): offered only when asked, and labelled.
cold     item cold start: the targets are the held-out items nobody has in the split's
         history (no training interaction for validation; none in train + valid for test);
         only those cold items are ranked, history masked as always. Models that cannot
         score an item unseen in training (`Recommender.scores_unseen_items` False) are not
         ranked but marked "n/a — needs interactions" (evaluate/cold.py).
cold_all the same cold targets, ranked among all items, warm and cold together.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lvlmrec.errors import StageError
from lvlmrec.evaluate.cold import COLD_PROTOCOLS
from lvlmrec.evaluate.ranking import (Ranking, contains, rank_users, ranking_from_top,
                                      restrict_columns, row_keys, score_block, tie_order,
                                      tied_at)

PROTOCOLS = ("full", "covered", "sampled", *COLD_PROTOCOLS)


@dataclasses.dataclass
class Task:
    """One split under one protocol; `history` is what is masked and scored from."""

    protocol: str
    split: str
    users: np.ndarray
    history: sp.csr_matrix
    target: sp.csr_matrix
    candidates: np.ndarray | None = None  # boolean over items (covered)
    negatives: np.ndarray | None = None  # (len(users), n) item ids, -1 padded (sampled)
    order: sp.csr_matrix | None = None  # time positions of `history` (sequential models)

    @property
    def n_candidates(self) -> int:
        n_items = self.history.shape[1]
        return n_items if self.candidates is None else int(self.candidates.sum())


def make_task(protocol: str, split: str, history: sp.csr_matrix, target: sp.csr_matrix,
              covered: np.ndarray | None = None, n_negatives: int = 100,
              seed: int = 0, order: sp.csr_matrix | None = None) -> Task:
    """Users with at least one target (and, for `covered`, one covered history item)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    history, target = sp.csr_matrix(history), sp.csr_matrix(target)
    candidates = None
    if protocol == "covered":
        if covered is None or not np.any(covered):
            raise StageError("the covered protocol needs descriptions, and no item has one "
                             "(run `lvlmrec describe` first)")
        candidates = np.asarray(covered, dtype=bool)
        history = restrict_columns(history, candidates)
        target = restrict_columns(target, candidates)
        if order is not None:
            order = restrict_columns(order, candidates)
    if protocol in COLD_PROTOCOLS:
        cold = np.asarray(history.sum(axis=0)).ravel() == 0  # in nobody's history
        target = restrict_columns(target, cold)
        candidates = cold if protocol == "cold" else None
    has_target = np.diff(target.indptr) > 0
    if protocol == "covered":
        has_target &= np.diff(history.indptr) > 0
    users = np.flatnonzero(has_target)
    negatives = None
    if protocol == "sampled":
        negatives = sample_negatives(history + target, users, n_negatives, seed)
    return Task(protocol, split, users, history, target, candidates, negatives,
                None if order is None else sp.csr_matrix(order))


def evaluate_task(model, task: Task, ks, block_size: int = 2048, show_progress: bool = True,
                  desc: str = "evaluate", tie_seed: int = 0) -> Ranking:
    if task.negatives is not None:
        return rank_sampled(model, task, ks, block_size, show_progress, desc, tie_seed)
    return rank_users(model, task.users, task.history, task.target, ks, block_size,
                      task.candidates, show_progress, desc, tie_seed, task.order)


def describe_protocol(task: Task) -> str:
    """A label for tables and figures; says plainly when metrics are sampled."""
    n_items = task.history.shape[1]
    if task.protocol == "full":
        return f"full ranking over all {n_items:,} items, history masked"
    if task.protocol == "cold":
        return (f"cold items: the test targets no user had interacted with before, ranked "
                f"among the {task.n_candidates:,} such items of {n_items:,}, history masked")
    if task.protocol == "cold_all":
        return (f"cold items among all: the test targets no user had interacted with before, "
                f"ranked among all {n_items:,} items (warm and cold), history masked")
    if task.protocol == "covered":
        return (f"covered subset: ranking over the {task.n_candidates:,} of {n_items:,} items "
                "that have a description, histories and targets restricted to them")
    return (f"SAMPLED metrics: held-out items ranked among {task.negatives.shape[1]} sampled "
            "negatives per user, not the full catalog (optimistic; not comparable with "
            "full-ranking numbers)")


# --------------------------------------------------------------------------- sampled
def sample_negatives(excluded: sp.csr_matrix, users: np.ndarray, n: int,
                     seed: int) -> np.ndarray:
    """(len(users), n) distinct item ids per user drawn uniformly without replacement from
    the items not in the user's row of `excluded`; -1 padded when fewer remain.
    Deterministic given the seed, the users and `excluded`."""
    excluded = sp.csr_matrix(excluded)
    n_items = excluded.shape[1]
    n_users = len(users)
    out = np.full((n_users, n), -1, dtype=np.int64)
    if n_users == 0:
        return out
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_users, 2 * n + 16))
    # drop repeats (keeping the first draw) and excluded items, then keep the first n
    order = np.argsort(draws, axis=1, kind="stable")
    sorted_draws = np.take_along_axis(draws, order, axis=1)
    repeat_sorted = np.zeros(draws.shape, dtype=bool)
    repeat_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + draws
    ok = ~repeat & ~contains(row_keys(excluded[users]), query)
    take = ok & (np.cumsum(ok, axis=1) <= n)
    short = take.sum(axis=1) < n
    out[~short] = draws[~short][take[~short]].reshape(-1, n)
    for row in np.flatnonzero(short):  # rare: small catalogs or huge histories
        user = int(users[row])
        seen = excluded.indices[excluded.indptr[user]:excluded.indptr[user + 1]]
        allowed = np.setdiff1d(np.arange(n_items), seen)
        chosen = np.random.default_rng([seed, user]).choice(
            allowed, size=min(n, len(allowed)), replace=False)
        out[row, :len(chosen)] = chosen
    return out


def rank_sampled(model, task: Task, ks, block_size: int = 2048, show_progress: bool = True,
                 desc: str = "evaluate", tie_seed: int = 0) -> Ranking:
    """Metrics within each user's pool (targets + sampled negatives), ties broken by the
    seeded permutation `tie_order`."""
    users, target = task.users, task.target
    n_items = target.shape[1]
    n_neg = task.negatives.shape[1]
    width = n_neg + int(np.diff(target.indptr)[users].max(initial=0))
    top = np.full((len(users), min(max(ks), width)), -1, dtype=np.int64)
    tied = {k: np.zeros(len(users), dtype=bool) for k in ks}
    # padding (-1) sorts after every real item
    tie_rank = np.append(tie_order(n_items, tie_seed), n_items)
    starts = range(0, len(users), block_size)
    for start in tqdm(starts, desc=desc, disable=not show_progress, unit="block", leave=False):
        block = users[start:start + block_size]
        tgt = target[block]
        pool = np.full((len(block), width), -1, dtype=np.int64)
        pool[:, :n_neg] = task.negatives[start:start + len(block)]
        n_tgt = np.diff(tgt.indptr)
        cols = n_neg + np.arange(len(tgt.indices)) - np.repeat(tgt.indptr[:-1], n_tgt)
        pool[np.repeat(np.arange(len(block)), n_tgt), cols] = tgt.indices
        scores = score_block(model, block, task.history[block], n_items,
                             None if task.order is None else task.order[block])
        pool_scores = torch.gather(scores, 1, torch.from_numpy(np.maximum(pool, 0))).numpy()
        del scores
        pool_scores = np.where(np.isnan(pool_scores) | (pool < 0), -np.inf, pool_scores)
        order = np.lexsort((tie_rank[pool], -pool_scores), axis=1)
        sorted_scores = np.take_along_axis(pool_scores, order, axis=1)
        ranked = np.take_along_axis(pool, order, axis=1)[:, :top.shape[1]]
        ranked_scores = sorted_scores[:, :top.shape[1]]
        ranked[np.isneginf(ranked_scores)] = -1
        top[start:start + len(block)] = ranked
        for k, flags in tied_at(sorted_scores, ks).items():
            tied[k][start:start + len(block)] = flags
    ranking = ranking_from_top(top, users, task.history, target, ks)
    ranking.tied = tied
    return ranking
