"""Raw-log filters and splits: k-core reaches its fixed point, each split keeps its promises."""

import numpy as np
import pandas as pd
import pytest

from lvlmrec.data.filters import (
    RawLog,
    dedupe_latest,
    kcore,
    loo_split,
    process_log,
    temporal_split,
)
from lvlmrec.errors import DataError


def _log(users, items, ratings=None, times=None):
    users, items = np.asarray(users), np.asarray(items)
    return RawLog(user=users, item=items,
                  user_keys=np.array([f"u{i}" for i in range(users.max() + 1)], dtype=object),
                  item_keys=np.array([f"i{i}" for i in range(items.max() + 1)], dtype=object),
                  rating=None if ratings is None else np.asarray(ratings, dtype=float),
                  timestamp=None if times is None else np.asarray(times, dtype=np.int64))


def _random_log(seed, n=3000, n_users=300, n_items=200, times=True):
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.6, n) % n_users
    items = rng.zipf(1.4, n) % n_items
    pairs = pd.DataFrame({"u": users, "i": items}).drop_duplicates()
    ts = rng.integers(1_000, 100_000, len(pairs)) if times else None
    return _log(pairs["u"].to_numpy(), pairs["i"].to_numpy(), times=ts)


def _naive_kcore(users, items, k):
    """One user or item removed at a time: slow, obviously right."""
    rows = set(range(len(users)))
    changed = True
    while changed:
        changed = False
        du = pd.Series([users[r] for r in rows]).value_counts()
        di = pd.Series([items[r] for r in rows]).value_counts()
        for r in list(rows):
            if du[users[r]] < k or di[items[r]] < k:
                rows.discard(r)
                changed = True
                break
    return rows


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kcore_reaches_the_fixed_point(k):
    log = _random_log(k)
    keep, rounds = kcore(log.user, log.item, k)
    assert rounds >= 2  # the data needed more than one pass
    u, i = log.user[keep], log.item[keep]
    assert keep.any()
    assert np.bincount(u)[np.unique(u)].min() >= k
    assert np.bincount(i)[np.unique(i)].min() >= k
    again, _ = kcore(u, i, k)
    assert again.all()  # idempotent: a fixed point


def test_kcore_is_the_largest_core():
    log = _random_log(7, n=400, n_users=60, n_items=40)
    keep, _ = kcore(log.user, log.item, 3)
    assert set(np.flatnonzero(keep)) == _naive_kcore(log.user, log.item, 3)


def test_dedupe_keeps_the_latest_row():
    log = _log([0, 0, 1, 0], [5, 5, 5, 5], ratings=[1, 4, 3, 2], times=[10, 30, 5, 20])
    out = dedupe_latest(log)
    assert sorted(zip(out.user, out.item, out.rating)) == [(0, 5, 4.0), (1, 5, 3.0)]
    # without timestamps, the later row wins
    out = dedupe_latest(_log([0, 0], [1, 1], ratings=[5, 2]))
    assert out.rating.tolist() == [2.0]


def test_random_split_gives_every_user_all_three_and_is_seeded():
    log = _random_log(1)
    a = process_log(log, k=3, split="random", seed=4).interactions
    b = process_log(log, k=3, split="random", seed=4).interactions
    c = process_log(log, k=3, split="random", seed=5).interactions
    assert a.equals(b) and not a["split"].equals(c["split"])
    per_user = a.groupby("user_id")["split"].agg(set)
    assert (per_user == {"train", "valid", "test"}).all()
    share = a["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.08


def test_loo_puts_the_last_two_by_time_in_test_and_valid():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    times = np.array([4, 1, 3, 2, 7, 8, 5, 5, 6])
    split = loo_split(users, times)
    assert split.tolist() == ["test", "train", "valid", "train", "train", "train",
                              "train", "valid", "test"]  # user 1 has < 3 rows; ties by row


def test_loo_needs_timestamps():
    with pytest.raises(DataError, match="orders interactions by time.*no timestamp"):
        process_log(_random_log(2, times=False), split="loo")


def test_temporal_split_is_a_global_time_cut():
    times = np.arange(100)
    split = temporal_split(times)
    assert (split[:80] == "train").all() and (split[80:90] == "valid").all()
    assert (split[90:] == "test").all()
    # rows sharing a cut time land together, in the later split: here both cuts are t=2
    assert temporal_split(np.array([1, 2, 2, 2, 2, 2, 2, 2, 2, 2])).tolist() == ["train"] + [
        "test"] * 9


def test_temporal_drops_eval_rows_of_users_without_history():
    log = _random_log(3)
    done = process_log(log, k=2, split="temporal")
    inter = done.interactions
    train_users = set(inter.loc[inter["split"] == "train", "user_id"])
    assert set(inter["user_id"]) <= train_users
    cut = inter.loc[inter["split"] == "train", "timestamp"].max()
    assert (inter.loc[inter["split"] != "train", "timestamp"] > cut).all()
    step = next(s for s in done.steps if s["step"] == "drop_eval_without_train")
    assert step["after"]["n_interactions"] < step["before"]["n_interactions"]
    assert len(inter) == step["after"]["n_interactions"]


def test_process_log_records_each_step_and_renumbers():
    log = _log([0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 1, 0, 1, 2, 2],
               ratings=[5, 4, np.nan, 2, 5, 5, 4, 3, 5], times=range(9))
    done = process_log(log, min_rating=4, k=2, split="random")
    steps = {s["step"]: s for s in done.steps}
    assert steps["dedupe_latest"]["after"]["n_interactions"] == 8
    assert steps["min_rating"]["n_unrated_dropped"] == 1
    assert steps["min_rating"]["after"]["n_interactions"] == 6
    assert steps["kcore"]["after"] == {"n_interactions": 4, "n_users": 2, "n_items": 2}
    assert log.item_keys[done.item_codes].tolist() == ["i0", "i1"]
    assert sorted(done.interactions["item_id"].unique()) == [0, 1]


def test_everything_filtered_away_is_an_error():
    with pytest.raises(DataError, match="no interactions left after filtering.*kcore kept 0"):
        process_log(_log([0, 1], [0, 1]), k=5)
