"""Popularity, ItemKNN and the hybrid: exact against references, tuned on validation only."""

import numpy as np
import pytest
import scipy.sparse as sp

from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.baselines import (Hybrid, ItemKNN, Popularity, item_similarity,
                                         normalise_rows, top_k_per_row)


def _csr(rows, n_items):
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


def _data(train):
    """Training interactions only (collaborative models read no embedding)."""
    return TrainData(train=train, valid=sp.csr_matrix(train.shape, dtype=np.float32),
                     embedding=lambda source: {}[source], show_progress=False)


def test_popularity_ranks_by_training_count():
    train = _csr([[0, 1], [1, 2], [1, 3], [3]], 5)
    model = Popularity().fit(_data(train))
    np.testing.assert_array_equal(model.counts_, [1, 3, 1, 2, 0])
    scores = model.score(np.arange(2), train[:2])
    assert scores.shape == (2, 5) and (scores == model.counts_).all()
    ids, _ = model.recommend([], k=5)
    # items 0 and 2 tie; tie_order(5) == [3, 4, 0, 2, 1] puts 2 first (not the lower id)
    assert ids.tolist() == [1, 3, 2, 0, 4]
    ids, _ = model.recommend([1], k=2)
    assert ids.tolist() == [3, 2]


def _dense_itemknn(train, neighbours, shrink):
    x = (train.toarray() > 0).astype(np.float64)
    co = x.T @ x
    n = np.sqrt(np.diag(co))
    sim = co / (np.outer(n, n) + shrink)
    np.fill_diagonal(sim, 0)
    sim[co == 0] = 0
    out = np.zeros_like(sim)
    for i, row in enumerate(sim):
        nz = np.flatnonzero(row)
        keep = nz[np.lexsort((nz, -row[nz]))][:neighbours]
        out[i, keep] = row[keep]
    return out


@pytest.mark.parametrize("neighbours,shrink", [(3, 0.0), (5, 2.0), (100, 0.5)])
def test_itemknn_equals_dense_reference(neighbours, shrink, monkeypatch):
    import lvlmrec.represent.baselines as baselines

    monkeypatch.setattr(baselines, "_KNN_BLOCK", 7)  # several blocks
    train = sp.random(60, 25, density=0.15, format="csr", random_state=3)
    train.data[:] = 1
    model = ItemKNN(neighbours=neighbours, shrink=shrink).fit(_data(train))
    expected = _dense_itemknn(train, neighbours, shrink)
    np.testing.assert_allclose(model.similarity_.toarray(), expected, rtol=1e-6, atol=1e-7)
    hist = train[:9]
    np.testing.assert_allclose(model.score(np.arange(9), hist), hist.toarray() @ expected,
                               rtol=1e-5, atol=1e-6)


def test_top_k_per_row_keeps_largest_and_breaks_ties_by_column():
    m = sp.csr_matrix(np.array([[0, 3, 1, 3, 2], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
                               dtype=np.float32))
    np.testing.assert_array_equal(top_k_per_row(m, 2).toarray(),
                                  [[0, 3, 0, 3, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0]])


def test_item_similarity_rejects_bad_settings():
    train = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ConfigError, match="neighbours"):
        item_similarity(train, 0)
    with pytest.raises(ConfigError, match="shrink"):
        item_similarity(train, 5, shrink=-1)


def test_normalise_rows():
    s = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]], dtype=np.float32)
    z = normalise_rows(s, "zscore")
    np.testing.assert_allclose(z[0], [-1.2247449, 0, 1.2247449], rtol=1e-5)
    np.testing.assert_array_equal(z[1], 0)
    np.testing.assert_allclose(normalise_rows(s, "minmax"), [[0, 0.5, 1], [0, 0, 0]])


def _two_signal_data(valid_follows: str):
    """Items 0..89 in 30 content clusters of 3 (0-2 alike, 3-5 alike, ...); co-occurrence
    pairs items across clusters (i with i+45). Each probe user's training item is i;
    validation holds either i's content twin or its co-occurrence partner."""
    n_items = 90
    emb = np.zeros((n_items, n_items // 3), np.float32)
    emb[np.arange(n_items), np.arange(n_items) // 3] = 1
    emb += np.random.default_rng(0).normal(0, 0.01, emb.shape).astype(np.float32)
    # many users watched i and i+15 together (collaborative signal, invisible in content)
    pair_users = [[i, (i + 45) % n_items] for i in range(n_items) for _ in range(3)]
    probe_users = [[i] for i in range(n_items)]
    train = _csr(pair_users + probe_users, n_items)
    if valid_follows == "content":
        targets = [i - i % 3 + (i + 1) % 3 for i in range(n_items)]  # a cluster twin
    else:
        targets = [(i + 45) % n_items for i in range(n_items)]
    valid = _csr([[] for _ in pair_users] + [[t] for t in targets], n_items)
    return TrainData(train=train, valid=valid, embedding=lambda s: emb, show_progress=False)


@pytest.mark.parametrize("valid_follows,expected_weight", [("content", 1.0), ("cooccur", 0.0)])
def test_hybrid_weight_is_tuned_on_validation(valid_follows, expected_weight):
    data = _two_signal_data(valid_follows)
    model = Hybrid(text="t", neighbours=10, weight_grid=[0.0, 1.0]).fit(data)
    assert model.weight_ == expected_weight
    recalls = model.valid_recall_by_weight_
    assert set(recalls) == {"0.0", "1.0"}
    assert recalls[str(expected_weight)] == 1.0 > recalls[str(1 - expected_weight)]


def test_hybrid_blends_and_round_trips(tmp_path):
    data = _two_signal_data("content")
    model = Hybrid(text="t", neighbours=10, normalise="minmax", scoring="max",
                   weight_grid=[0.25]).fit(data)
    hist = data.train[-4:]
    content = normalise_rows(super(Hybrid, model).score(np.arange(4), hist), "minmax")
    knn = normalise_rows(ItemKNN(10).fit(data).score(np.arange(4), hist), "minmax")
    np.testing.assert_allclose(model.score(np.arange(4), hist), 0.25 * content + 0.75 * knn,
                               rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "h")
    loaded = Recommender.load(tmp_path / "h")
    assert loaded.weight_ == 0.25 and loaded.scoring == "max"
    np.testing.assert_array_equal(loaded.score(np.arange(4), hist),
                                  model.score(np.arange(4), hist))


def test_hybrid_rejects_a_non_content_kind():
    with pytest.raises(ConfigError, match="not a content representation"):
        Hybrid(content="popularity").fit(_two_signal_data("content"))
