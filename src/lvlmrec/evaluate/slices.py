"""Where a representation wins or loses: metrics on slices of users and of target items.

history_length  users binned by the length of the history they were ranked from
                (train + valid at test time): 1-2, 3-5, 6-10, 11-20, 21-50, 51+ (and 0);
                the usual per-user metrics averaged within each bin.
popularity      target items binned by training popularity (number of training
                interactions): an item is "head" when the items more popular than it hold
                less than a third of all training interactions, "mid" when they hold less
                than two thirds, "tail" otherwise (at least one training interaction). Bins
                are popularity thresholds, so tied items share a bin. Per user, Recall@K
                on the targets of the bin only (hits among them / their number), averaged
                over users with at least one such target.
cold_items      target items with no training interaction ("cold") vs the rest ("warm"):
                Recall@K on those targets only, same way. Content representations can rank
                cold items; purely collaborative ones cannot.
train_interactions  the cold-start view: target items with 0, 1-4 and 5+ training
                interactions, Recall@K on those targets only, with a percentile bootstrap
                95% CI over users (`ci_low`, `ci_high`) and the number of (user, target)
                pairs (`n_targets`).
Empty bins are left out. Every row names its number of users and the 95% CI of its mean
(history_length, popularity and cold_items: normal approximation over the users in the bin). For a model that cannot score
items unseen in training (`scores_unseen_items` False), the bins of items with no training
interaction hold no number but the note "n/a — needs interactions".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lvlmrec.evaluate.cold import NA_NOTE
from lvlmrec.evaluate.ranking import Ranking, hits_matrix, restrict_columns
from lvlmrec.evaluate.stats import _ci, bootstrap_means

HISTORY_BINS = [(0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, None)]
#: training interactions of a target item: cold, rare, warm
TRAIN_BINS = [(0, 0), (1, 4), (5, None)]
COLUMNS = ["slice", "bin", "bin_order", "bin_range", "metric", "value", "ci_low", "ci_high",
           "n_users", "n_targets", "note"]


def history_bin(n_history: np.ndarray) -> np.ndarray:
    """Bin index per user into HISTORY_BINS."""
    lows = np.array([lo for lo, _ in HISTORY_BINS])
    return np.searchsorted(lows, np.asarray(n_history), side="right") - 1


def _bin_label(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def popularity_groups(train_popularity: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Per item: 'head', 'mid', 'tail' or 'cold' (no training interaction), and a label
    per group giving its popularity range."""
    pop = np.asarray(train_popularity, dtype=np.int64)
    groups = np.full(len(pop), "cold", dtype=object)
    warm = pop > 0
    if not warm.any():
        return groups, {"cold": "0 interactions"}
    sorted_pop = np.sort(pop[warm])[::-1]
    share = np.cumsum(sorted_pop) / sorted_pop.sum()
    head_min = sorted_pop[np.searchsorted(share, 1 / 3)]
    mid_min = sorted_pop[np.searchsorted(share, 2 / 3)]
    groups[warm] = "tail"
    groups[pop >= mid_min] = "mid"
    groups[pop >= head_min] = "head"
    labels = {"head": f">= {head_min}", "mid": f"{mid_min}-{head_min - 1}",
              "tail": f"1-{mid_min - 1}", "cold": "0"}
    return groups, labels


def recall_on_subset(ranking: Ranking, target: sp.csr_matrix, keep: np.ndarray,
                     ks: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Recall@K per user on the targets inside boolean item mask `keep`; and which users
    have at least one such target."""
    sub = restrict_columns(target, keep)[ranking.per_user["user_id"].to_numpy()]
    n_sub = np.diff(sub.indptr)
    has = n_sub > 0
    hits = hits_matrix(ranking.top[has], sub[has])
    return {f"recall@{k}": hits[:, :k].sum(axis=1) / n_sub[has] for k in ks}, has


def slice_metrics(ranking: Ranking, target: sp.csr_matrix, train_popularity: np.ndarray,
                  metrics: list[str], scores_unseen: bool = True, n_bootstrap: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Long table of COLUMNS (one model); CIs only on the train_interactions slice."""
    per_user = ranking.per_user
    rows = []
    bins = history_bin(per_user["n_history"].to_numpy())
    for b, (lo, hi) in enumerate(HISTORY_BINS):
        in_bin = bins == b
        if not in_bin.any():
            continue
        for metric in metrics:
            rows.append(("history_length", _bin_label(lo, hi), b, "history length",
                         metric, *mean_ci(per_user.loc[in_bin, metric].to_numpy()),
                         int(in_bin.sum()), np.nan, ""))
    ks = sorted({int(m.split("@")[1]) for m in metrics if m.startswith("recall@")})
    groups, ranges = popularity_groups(train_popularity)
    item_slices = [("popularity", g, i) for i, g in enumerate(("head", "mid", "tail"))]
    item_slices += [("cold_items", "cold", 0), ("cold_items", "warm", 1)]
    for slice_name, group, order in item_slices:
        keep = groups != "cold" if group == "warm" else groups == group
        recalls, has = recall_on_subset(ranking, target, keep, ks)
        if not has.any():
            continue
        bin_range = ">= 1" if group == "warm" else ranges.get(group, "")
        na = group == "cold" and not scores_unseen
        for metric, values in recalls.items():
            rows.append((slice_name, group, order, f"train interactions {bin_range}",
                         metric, *((np.nan,) * 3 if na else mean_ci(values)),
                         int(has.sum()), np.nan, NA_NOTE if na else ""))
    rows += train_interaction_rows(ranking, target, train_popularity, ks, scores_unseen,
                                   n_bootstrap, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def train_interaction_rows(ranking: Ranking, target: sp.csr_matrix,
                           train_popularity: np.ndarray, ks: list[int], scores_unseen: bool,
                           n_bootstrap: int, seed: int) -> list[tuple]:
    """The train_interactions slice: Recall@K on targets with 0, 1-4, 5+ training
    interactions, with bootstrap CIs (the same seed for every model and bin)."""
    if not ks:
        return []
    pop = np.asarray(train_popularity)
    users = ranking.per_user["user_id"].to_numpy()
    rows = []
    for order, (lo, hi) in enumerate(TRAIN_BINS):
        keep = (pop >= lo) & (pop <= hi if hi is not None else True)
        recalls, has = recall_on_subset(ranking, target, keep, ks)
        if not has.any():
            continue
        n_targets = int(restrict_columns(target, keep)[users].nnz)
        values = np.column_stack([recalls[f"recall@{k}"] for k in ks])
        draws = bootstrap_means(values, n_bootstrap, np.random.default_rng(seed))
        low, high = _ci(draws, 0.95)
        na = lo == 0 and not scores_unseen
        for j, k in enumerate(ks):
            rows.append(("train_interactions", _bin_label(lo, hi), order,
                         f"train interactions {_bin_label(lo, hi)}", f"recall@{k}",
                         np.nan if na else float(values[:, j].mean()),
                         np.nan if na else float(low[j]), np.nan if na else float(high[j]),
                         int(has.sum()), n_targets, NA_NOTE if na else ""))
    return rows


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% CI (mean +- 1.96 standard errors); the CI is
    NaN for a single user."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values))
    return mean, mean - half, mean + half
