"""Sequential models: order reaches them (and only them), save/load, truncation, short
histories, timestamps required, and the synthetic catalog's order options."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.sparse as sp

from lvlmrec.config import RunConfig, StrategyConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.data.synthetic import synthetic_tables
from lvlmrec.errors import ConfigError
from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.represent.registry import build
from lvlmrec.represent.sequential import GRU4Rec, SASRec, left_pad, training_windows

N_ITEMS, N_USERS = 120, 100
FAST = {"epochs": 2, "patience": 1, "hidden": 16, "n_heads": 2, "max_len": 8,
        "num_threads": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def ds():
    items, inter, users = synthetic_tables(N_ITEMS, N_USERS, 0, sequential_strength=0.8,
                                           split="loo")
    return Dataset(items, inter, users)


@pytest.fixture(scope="module")
def emb():
    return np.random.default_rng(1).normal(size=(N_ITEMS, 8)).astype(np.float32)


def _data(ds, emb, order=True):
    return TrainData(ds.matrix("train"), ds.matrix("valid"), lambda source: emb,
                     show_progress=False,
                     train_order=ds.order_matrix("train") if order else None)


@pytest.fixture(scope="module")
def sasrec(ds, emb):
    return SASRec(input="id+content", text="title", **FAST).fit(_data(ds, emb))


def _one_user(items):
    """A one-row history and its time positions (items given oldest first)."""
    items = np.asarray(items)
    hist = sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), int), items)),
                         shape=(1, N_ITEMS))
    order = sp.csr_matrix((np.arange(1, len(items) + 1, dtype=np.float32),
                           (np.zeros(len(items), int), items)), shape=(1, N_ITEMS))
    return hist, order


def test_shuffling_order_changes_sasrec_but_not_a_content_model(sasrec, ds, emb):
    items = [3, 17, 40, 41, 90]
    hist, order = _one_user(items)
    _, reversed_order = _one_user(items[::-1])
    a = sasrec.score(np.array([0]), hist, history_order=order)
    b = sasrec.score(np.array([0]), hist, history_order=reversed_order)
    assert not np.allclose(a, b)
    content = ContentRecommender("title").fit(_data(ds, emb))
    assert np.array_equal(content.score(np.array([0]), hist), content.score(np.array([0]), hist))
    # the evaluator passes order only to models that declare it
    assert SASRec.needs_order and not ContentRecommender.needs_order
    users = np.flatnonzero(np.diff(ds.matrix("test").indptr) > 0)
    history = ds.matrix(("train", "valid"))
    shuffled = ds.order_matrix(("train", "valid")).copy()
    rng = np.random.default_rng(0)
    for r in range(shuffled.shape[0]):
        lo, hi = shuffled.indptr[r], shuffled.indptr[r + 1]
        shuffled.data[lo:hi] = rng.permutation(shuffled.data[lo:hi])
    kw = {"ks": [20], "show_progress": False}
    assert evaluate_model(content, users, history, ds.matrix("test"), order=shuffled,
                          **kw).equals(evaluate_model(content, users, history,
                                                      ds.matrix("test"), **kw))


def test_save_load_round_trip_gives_identical_scores(sasrec, ds, emb, tmp_path):
    sasrec.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    hist = ds.matrix(("train", "valid"))
    order = ds.order_matrix(("train", "valid"))
    users = np.arange(10)
    np.testing.assert_array_equal(sasrec.score(users, hist[users], order[users]),
                                  loaded.score(users, hist[users], order[users]))
    gru = GRU4Rec(**FAST).fit(_data(ds, emb))
    gru.save(tmp_path / "g")
    np.testing.assert_array_equal(gru.score(users, hist[users], order[users]),
                                  Recommender.load(tmp_path / "g").score(users, hist[users],
                                                                         order[users]))


def test_long_histories_are_truncated_to_the_most_recent_items(sasrec):
    max_len = sasrec.max_len
    assert left_pad([np.arange(20)], 4).tolist() == [[17, 18, 19, 20]]  # tokens = id + 1
    recent = list(range(30, 30 + max_len))
    hist_long, order_long = _one_user(list(range(10)) + recent)
    hist_short, order_short = _one_user(recent)
    np.testing.assert_allclose(sasrec.score(np.array([0]), hist_long, order_long),
                               sasrec.score(np.array([0]), hist_short, order_short),
                               rtol=1e-5, atol=1e-5)
    # training cuts long sequences into windows instead of dropping their start
    inputs, targets = training_windows([np.arange(10)], 4)
    assert len(inputs) == 3 and (targets[targets > 0] - 1).min() == 1


def test_one_and_zero_interaction_users(sasrec):
    one, one_order = _one_user([5])
    scores = sasrec.score(np.array([0]), one, one_order)
    assert np.isfinite(scores).all() and scores.std() > 0
    empty = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)
    assert not sasrec.score(np.array([0]), empty, empty).any()
    assert training_windows([np.array([7]), np.array([], int)], 4)[0].shape == (0, 4)
    ids, _ = sasrec.recommend([5, 6], k=5)
    assert len(ids) == 5 and not {5, 6} & set(ids.tolist())


def test_sequential_kinds_need_timestamps(ds, emb):
    with pytest.raises(ConfigError, match="timestamps"):
        SASRec(**FAST).fit(_data(ds, emb, order=False))
    from lvlmrec.checks import run_problems

    cfg = RunConfig.model_validate({
        "dataset": {"format": "csv", "items": "i.csv", "interactions": "x.csv"},
        "represent": {"strategies": [{"name": "seq", "kind": "sasrec"}]}})
    problems = run_problems(cfg, {"represent"})
    assert any("'seq'" in msg and "sasrec" in msg and "timestamps" in msg
               for _, msg in problems)
    with pytest.raises(ConfigError, match="needs a content source"):
        build(StrategyConfig(name="s", kind="gru4rec", params={"input": "content"}))


def test_sequential_strength_zero_leaves_the_catalog_unchanged():
    items, inter, _ = synthetic_tables(200, 150, 5)
    # digests of the catalog before timestamps existed (same arguments)
    assert hashlib.sha256(inter[["user_id", "item_id", "split"]].to_csv(index=False)
                          .encode()).hexdigest() == \
        "dfc0a40e104fa08ab7dd8a366b395e36c38544d7d5e5ea863e3c789cc55515b5"
    assert hashlib.sha256(items.to_csv(index=False).encode()).hexdigest() == \
        "04b05a683ed3affc0f26c38bc2f010ff4b6420447581b04e71656853448d1306"
    # order only reorders: the same items per user; strong order makes neighbours alike
    _, strong, _ = synthetic_tables(200, 150, 5, sequential_strength=1.0)
    assert strong[["user_id", "item_id"]].equals(inter[["user_id", "item_id"]])

    def alike(df):
        df = df.sort_values(["user_id", "timestamp"])
        cat, col = items["category"].to_numpy(), items["colour"].to_numpy()
        it, us = df["item_id"].to_numpy(), df["user_id"].to_numpy()
        same = us[1:] == us[:-1]
        hit = (cat[it[1:]] == cat[it[:-1]]) | (col[it[1:]] == col[it[:-1]])
        return hit[same].mean()

    assert alike(strong) > alike(inter) + 0.2


def test_synthetic_split_option_uses_the_timestamps():
    _, loo, _ = synthetic_tables(200, 150, 5, sequential_strength=0.5, split="loo")
    last = loo.sort_values(["user_id", "timestamp"]).groupby("user_id").tail(1)
    assert (last["split"] == "test").all() and (loo["split"] == "test").sum() == 150
    _, temporal, _ = synthetic_tables(200, 150, 5, split="temporal")
    assert temporal.groupby("split")["timestamp"].max()["train"] <= \
        temporal.groupby("split")["timestamp"].min()["test"]
    with pytest.raises(ValueError, match="split"):
        synthetic_tables(200, 150, 5, split="by-colour")
