"""Filters and splits for raw interaction logs (Amazon review dumps, CSV event tables).

A `RawLog` holds parallel arrays: user and item *codes* (row numbers into `user_keys` and
`item_keys`, the original ids), a rating (NaN when there is none) and a unix timestamp in
seconds (-1 when there is none). `process_log` runs the whole chain every raw source
shares and records what each step removed:

1. duplicates: one row per (user, item), the latest (by timestamp, then by position);
2. `min_rating`: rows rated below it go; rows without a rating go too (they cannot be judged);
3. k-core: users and items with fewer than k rows go, repeated until nothing changes;
4. split: `random` (per user 60/20/20, seeded, like the study's data), `loo` (per user: last
   row by time -> test, second last -> valid; users with fewer than 3 rows are train only),
   `temporal` (one global cut: rows before the 80% timestamp quantile -> train, up to the
   90% quantile -> valid, the rest -> test; rows on a cut time go to the later split),
   or an item cold-start split (`cold.py`): `cold_items` (a seeded random `cold_fraction`
   of the items) or `cold_items_temporal` (the items first seen last) lose every
   interaction to valid (half of them) or test (the other half);
5. `temporal` and cold splits: valid/test rows of users with no train row are dropped, since
   there is no history to recommend from (the count is recorded); users left with no row
   disappear;
6. users are renumbered 0..n-1 in code order (first appearance); items too, unless the log
   has a catalog (`catalog=True`: item codes are rows of an items table), whose every item
   keeps its row, with or without interactions (cold items).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.data.schema import random_split
from lvlmrec.errors import DataError

SPLIT_METHODS = ("random", "loo", "temporal", "cold_items", "cold_items_temporal")
TEMPORAL_FRACTIONS = (0.8, 0.1, 0.1)


@dataclasses.dataclass
class RawLog:
    user: np.ndarray
    item: np.ndarray
    user_keys: np.ndarray
    item_keys: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> RawLog:
        """The log restricted to `rows` (a boolean mask or indices)."""
        return dataclasses.replace(
            self, user=self.user[rows], item=self.item[rows],
            rating=None if self.rating is None else self.rating[rows],
            timestamp=None if self.timestamp is None else self.timestamp[rows],
        )

    def counts(self) -> dict[str, int]:
        return {"n_interactions": len(self), "n_users": int(len(np.unique(self.user))),
                "n_items": int(len(np.unique(self.item)))}


@dataclasses.dataclass
class ProcessedLog:
    """Interactions with new ids, plus which original codes those ids stand for."""

    interactions: pd.DataFrame
    user_codes: np.ndarray  # new user id -> code into RawLog.user_keys
    item_codes: np.ndarray  # new item id -> code into RawLog.item_keys
    steps: list[dict[str, Any]]


def dedupe_latest(log: RawLog) -> RawLog:
    """One row per (user, item): the one with the latest timestamp, ties to the later row."""
    position = np.arange(len(log))
    ts = log.timestamp if log.timestamp is not None else position
    order = np.lexsort((position, ts, log.item, log.user))
    u, i = log.user[order], log.item[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return log.take(np.sort(order[last]))


def min_rating_mask(log: RawLog, min_rating: float) -> np.ndarray:
    """Rows rated at least `min_rating` (unrated rows fail)."""
    if log.rating is None:
        raise DataError(f"min_rating={min_rating} was given but the data has no ratings")
    with np.errstate(invalid="ignore"):
        return log.rating >= min_rating


def kcore(user: np.ndarray, item: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Rows kept by the iterated k-core (every kept user and item has >= k kept rows),
    and the number of rounds it took to reach the fixed point."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep, 0
    n_users = int(user.max()) + 1 if len(user) else 0
    n_items = int(item.max()) + 1 if len(item) else 0
    rounds = 0
    while True:
        rounds += 1
        deg_u = np.bincount(user[keep], minlength=n_users)
        deg_i = np.bincount(item[keep], minlength=n_items)
        new_keep = keep & (deg_u[user] >= k) & (deg_i[item] >= k)
        if new_keep.sum() == keep.sum():
            return keep, rounds
        keep = new_keep


def _need_time(log: RawLog, method: str) -> np.ndarray:
    if log.timestamp is None or (log.timestamp < 0).any():
        raise DataError(f"split {method!r} orders interactions by time, but "
                        f"{'some rows have' if log.timestamp is not None else 'the data has'} "
                        f"no timestamp; use split 'random'")
    return log.timestamp


def loo_split(user: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Per user by time: last -> test, second last -> valid, the rest -> train (ties keep
    row order); users with fewer than 3 rows are train only."""
    n = len(user)
    order = np.lexsort((np.arange(n), timestamp, user))
    u = user[order]
    start = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    sizes = np.diff(np.r_[start, n])
    group_end = np.repeat(start + sizes, sizes)
    from_end = group_end - np.arange(n)  # 1 for a user's last row
    big = np.repeat(sizes >= 3, sizes)
    split = np.full(n, "train", dtype=object)
    split[big & (from_end == 1)] = "test"
    split[big & (from_end == 2)] = "valid"
    out = np.empty(n, dtype=object)
    out[order] = split
    return out


def temporal_split(timestamp: np.ndarray,
                   fractions: tuple[float, float, float] = TEMPORAL_FRACTIONS) -> np.ndarray:
    """One global cut by time at the `fractions` quantiles of the timestamps."""
    if not len(timestamp):
        return np.empty(0, dtype=object)
    ts = np.sort(timestamp)
    t_valid = ts[min(int(len(ts) * fractions[0]), len(ts) - 1)]
    t_test = ts[min(int(len(ts) * (fractions[0] + fractions[1])), len(ts) - 1)]
    out = np.full(len(timestamp), "train", dtype=object)
    out[timestamp >= t_valid] = "valid"
    out[timestamp >= t_test] = "test"
    return out


def split_log(log: RawLog, method: str, seed: int, cold_fraction: float = 0.2) -> np.ndarray:
    from lvlmrec.data.cold import cold_item_split, cold_item_temporal_split

    if method == "cold_items":
        return cold_item_split(log.item, cold_fraction, seed)
    if method == "cold_items_temporal":
        return cold_item_temporal_split(log.item, _need_time(log, method), cold_fraction)
    if method == "random":
        return random_split(log.user, seed)
    if method == "loo":
        return loo_split(log.user, _need_time(log, method))
    if method == "temporal":
        return temporal_split(_need_time(log, method))
    raise DataError(f"unknown split {method!r}; expected one of {SPLIT_METHODS}")


def drop_eval_without_train(user: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Mask keeping every row except valid/test rows of users with no train row."""
    has_train = np.zeros(int(user.max()) + 1 if len(user) else 0, dtype=bool)
    has_train[user[split == "train"]] = True
    return (split == "train") | has_train[user]


def reindex(log: RawLog, split: np.ndarray, catalog: bool = False) -> ProcessedLog:
    """Number surviving users and items 0..n-1 in code order; with `catalog`, item ids are
    the item codes themselves (every row of the items table stays an item)."""
    user_codes, user_id = np.unique(log.user, return_inverse=True)
    if catalog:
        item_codes, item_id = np.arange(len(log.item_keys)), log.item
    else:
        item_codes, item_id = np.unique(log.item, return_inverse=True)
    df = pd.DataFrame({"user_id": user_id.astype(np.int64), "item_id": item_id.astype(np.int64),
                       "split": split.astype(str)})
    if log.rating is not None:
        df["rating"] = log.rating.astype(np.float32)
    if log.timestamp is not None:
        df["timestamp"] = log.timestamp.astype(np.int64)
    return ProcessedLog(df, user_codes, item_codes, [])


def process_log(log: RawLog, *, min_rating: float | None = None, k: int = 0,
                split: str = "random", seed: int = 0, cold_fraction: float = 0.2,
                catalog: bool = False) -> ProcessedLog:
    """Dedupe, rating filter, k-core, split and renumber (module docstring), recording the
    counts before and after each step. k-core filters interactions only: with `catalog`,
    an item it leaves without interactions stays in the catalog as a cold item."""
    steps: list[dict[str, Any]] = []

    def record(step: str, before: RawLog, after: RawLog, **extra: Any) -> None:
        steps.append({"step": step, **extra, "before": before.counts(), "after": after.counts()})

    deduped = dedupe_latest(log)
    record("dedupe_latest", log, deduped)
    log = deduped
    if min_rating is not None:
        rated = log.take(min_rating_mask(log, min_rating))
        n_unrated = int(np.isnan(log.rating).sum())
        record("min_rating", log, rated, min_rating=min_rating, n_unrated_dropped=n_unrated)
        log = rated
    if k > 1:
        keep, rounds = kcore(log.user, log.item, k)
        cored = log.take(keep)
        record("kcore", log, cored, k=k, rounds=rounds)
        log = cored
    if not len(log):
        raise DataError("no interactions left after filtering: " + "; ".join(
            f"{s['step']} kept {s['after']['n_interactions']}" for s in steps))
    splits = split_log(log, split, seed, cold_fraction)
    cold = split.startswith("cold_items")
    steps.append({"step": "split", "method": split,
                  "seed": seed if split in ("random", "cold_items") else None,
                  **({"fractions": list(TEMPORAL_FRACTIONS)} if split == "temporal" else {}),
                  **({"cold_fraction": cold_fraction} if cold else {})})
    if split == "temporal" or cold:
        keep = drop_eval_without_train(log.user, splits)
        kept = log.take(keep)
        record("drop_eval_without_train", log, kept,
               n_users_dropped=int(len(np.unique(log.user)) - len(np.unique(kept.user))))
        for name in ("valid", "test"):
            if (splits == name).any() and not (splits[keep] == name).any():
                why = ("all its rows belong to users with no interaction before the cut; "
                       "use split 'loo' or 'random'") if not cold else (
                       "all its rows belong to users with no interaction with a warm item")
                raise DataError(f"the {split} split left the {name!r} split empty: {why}")
        log, splits = kept, splits[keep]
    out = reindex(log, splits, catalog)
    out.steps = steps
    return out
