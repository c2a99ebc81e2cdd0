import numpy as np
import scipy.sparse as sp

from lvlmrec.represent.base import Recommender, TrainData, l2_normalise, top_k
from lvlmrec.represent.content import (ConcatFusion, ContentRecommender, NaiveFusion,
                                       match_dimensions)


def _data(emb: dict, n_users=4):
    n_items = next(iter(emb.values())).shape[0]
    train = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    return TrainData(train=train, valid=train, embedding=lambda s: emb[s])


def _hist(rows, n_items):
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


def test_mean_scoring_is_cosine_to_mean_profile():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(30, 8))
    m = ContentRecommender("t").fit(_data({"t": e}))
    hist = _hist([[1, 2, 3], [4]], 30)
    s = m.score(np.array([0, 1]), hist)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    prof = en[[1, 2, 3]].mean(0)
    np.testing.assert_allclose(s[0], en @ prof, rtol=1e-5, atol=1e-6)
    # ranking equals ranking by cosine to the profile
    cos = en @ prof / np.linalg.norm(prof)
    assert np.array_equal(np.argsort(-s[0]), np.argsort(-cos))


def test_max_scoring_matches_loop():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 6))
    m = ContentRecommender("t", scoring="max").fit(_data({"t": e}))
    rows = [[0, 5, 9], [], [3], list(range(10, 40))]
    s = m.score(np.arange(4), _hist(rows, 50))
    en = l2_normalise(e)
    for u, items in enumerate(rows):
        expect = (en[items] @ en.T).max(0) if items else np.zeros(50)
        np.testing.assert_allclose(s[u], expect, rtol=1e-5, atol=1e-6)


def test_zero_rows_never_match():
    e = np.eye(5)
    e[4] = 0
    m = ContentRecommender("t").fit(_data({"t": e}))
    s = m.score(np.array([0]), _hist([[0]], 5))
    assert s[0, 4] == 0


def test_match_dimensions_pca_and_pad():
    rng = np.random.default_rng(2)
    t, v = rng.normal(size=(40, 4)), rng.normal(size=(40, 10))
    a, b = match_dimensions(t, v, "pca")
    assert a.shape == b.shape == (40, 4)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, rtol=1e-5)
    a, b = match_dimensions(t, v, "pad")
    assert a.shape == b.shape == (40, 10)


def test_naive_and_concat_shapes():
    rng = np.random.default_rng(3)
    emb = {"t": rng.normal(size=(20, 4)), "v": rng.normal(size=(20, 6))}
    naive = NaiveFusion("t", "v").fit(_data(emb))
    assert naive.item_vectors_.shape == (20, 4)
    concat = ConcatFusion("t", "v", weight=0.5).fit(_data(emb))
    assert concat.item_vectors_.shape == (20, 10)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    emb = {"t": rng.normal(size=(20, 4)), "v": rng.normal(size=(20, 6))}
    m = ConcatFusion("t", "v", weight=0.7, scoring="max").fit(_data(emb))
    m.save(tmp_path / "m")
    m2 = Recommender.load(tmp_path / "m")
    assert isinstance(m2, ConcatFusion) and m2.weight == 0.7 and m2.scoring == "max"
    hist = _hist([[1, 2]], 20)
    np.testing.assert_array_equal(m.score(np.array([0]), hist), m2.score(np.array([0]), hist))


def test_recommend_excludes_history_and_similar_items():
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    m = ContentRecommender("t").fit(_data({"t": e}))
    ids, _ = m.recommend([0], k=2)
    assert ids.tolist() == [1, 3]
    sim, _ = m.similar_items(2, k=1)
    assert sim.tolist() == [3]


def test_top_k_breaks_ties_by_the_evaluators_permutation():
    # tie_order(6) == [4, 5, 1, 0, 3, 2]: among equal scores item 2 (rank 1) beats 4 (3) and 1 (5)
    s = np.array([1.0, 3.0, 3.0, -np.inf, 3.0, 2.0])
    ids, vals = top_k(s, 3)
    assert ids.tolist() == [2, 4, 1]
    ids, _ = top_k(s, 10)
    assert ids.tolist() == [2, 4, 1, 5, 0]
