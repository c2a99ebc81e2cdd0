"""Every model scores from the history it is given: at test (history = train + valid) a
change in a user's valid items changes that user's scores, for every kind."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_cf import grouped_data

from lvlmrec.config import StrategyConfig
from lvlmrec.represent.registry import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"epochs": 3, "patience": 3, "learning_rate": 0.01}
KINDS = {
    "bpr": {"kind": "bpr", "params": FAST},
    "bpr_bias": {"kind": "bpr", "params": {**FAST, "item_bias": True}},
    "lightgcn": {"kind": "lightgcn", "params": FAST},
    "smore": {"kind": "smore", "text": "t", "vision": "v", "params": FAST},
    "ials": {"kind": "ials", "params": {"iterations": 3}},
    "ease": {"kind": "ease"},
    "itemknn": {"kind": "itemknn"},
    "hybrid": {"kind": "hybrid", "text": "t", "params": {"weight_grid": [0.5]}},
    "content": {"kind": "text", "text": "t"},
}


@pytest.fixture(scope="module")
def data():
    data = grouped_data()
    rng = np.random.default_rng(0)
    features = {"t": rng.normal(size=(data.n_items, 16)).astype(np.float32),
                "v": rng.normal(size=(data.n_items, 24)).astype(np.float32)}
    data.embedding = features.__getitem__
    return data


def _fit(name, data):
    spec = KINDS[name]
    strategy = StrategyConfig(name=name, kind=spec["kind"], text=spec.get("text"),
                              vision=spec.get("vision"), params=spec.get("params", {}))
    return build(strategy, seed=0).fit(data)


def _with_other_valid(data, user: int) -> sp.csr_matrix:
    """train + valid, with the user's valid items swapped for items they never had."""
    valid = data.valid.tolil(copy=True)
    seen = set(data.train[user].indices) | set(data.valid[user].indices)
    fresh = [i for i in range(data.n_items) if i not in seen][:max(2, data.valid[user].nnz)]
    valid.rows[user], valid.data[user] = fresh, [1.0] * len(fresh)
    return sp.csr_matrix(data.train + valid.tocsr())


@pytest.mark.parametrize("name", list(KINDS))
def test_test_scores_react_to_the_users_valid_items(name, data):
    model = _fit(name, data)
    users = np.flatnonzero(np.diff(data.valid.indptr) > 0)[:5]
    history = sp.csr_matrix(data.train + data.valid)
    before = model.score(users, history[users])
    after = model.score(users, _with_other_valid(data, users[0])[users])
    assert not np.allclose(before[0], after[0]), f"{name} ignores the valid items"
    np.testing.assert_allclose(before[1:], after[1:], rtol=1e-5, atol=1e-6)  # others unmoved
    # train-only history gives different scores from train + valid
    train_only = model.score(users, sp.csr_matrix(data.train)[users])
    assert not np.allclose(before, train_only)


@pytest.mark.parametrize("name", ["lightgcn", "smore"])
def test_training_history_gives_the_trained_user_vectors(name, data):
    """Graph models: validation (history = train) scores are exactly training's."""
    model = _fit(name, data)
    users = np.arange(data.n_users)
    folded = model.user_vectors(users, data.train)
    np.testing.assert_allclose(folded, model.user_vectors_, rtol=1e-4, atol=1e-5)


def _user_bpr_objective(model, user_vecs, history):
    """The per-user expected BPR loss + L2 that `bpr_fold_in` minimises, by plain loops."""
    scores = user_vecs @ model.item_vectors_.T + getattr(model, "item_bias_", 0.0)
    out = []
    for row, s in zip(history.toarray() > 0, scores):
        neg = model.negatives_ & ~row
        diff = s[neg][None, :] - s[row][:, None]
        out.append(np.logaddexp(0, diff).mean())
    reg = 0.5 * model.reg_weight * (user_vecs ** 2).sum(1)
    return np.array(out) + reg


@pytest.mark.parametrize("name", ["bpr", "bpr_bias"])
def test_bpr_fold_in_minimises_the_users_bpr_loss(name, data):
    model = _fit(name, data)
    users = np.arange(30)
    history = sp.csr_matrix(data.train + data.valid)[users]
    folded = model.user_vectors(users, history)
    at_fold = _user_bpr_objective(model, folded, history)
    at_trained = _user_bpr_objective(model, model.user_vectors_[users], history)
    assert (at_fold <= at_trained + 1e-6).all() and at_fold.mean() < at_trained.mean()
    # a local perturbation never does better: the fold-in is the (convex) optimum
    rng = np.random.default_rng(0)
    nudged = folded + 1e-2 * rng.normal(size=folded.shape).astype(np.float32)
    assert (_user_bpr_objective(model, nudged, history) >= at_fold - 1e-6).all()


@pytest.mark.parametrize("name", ["bpr", "lightgcn", "smore", "ials"])
def test_unknown_users_are_scored_from_their_history(name, data):
    model = _fit(name, data)
    hist = sp.csr_matrix(data.train)[[3]]
    anonymous = model.score(np.array([-1]), hist)[0]
    assert np.isfinite(anonymous).all() and anonymous.std() > 0
    ids, _ = model.recommend(hist.indices, k=5)
    assert not set(ids) & set(hist.indices)


@pytest.mark.parametrize("name", ["bpr_bias", "lightgcn", "smore", "ials", "ease"])
def test_save_load_keeps_the_fold_in(name, data, tmp_path):
    from lvlmrec.represent.base import Recommender

    model = _fit(name, data)
    model.save(tmp_path / name)
    loaded = Recommender.load(tmp_path / name)
    history = sp.csr_matrix(data.train + data.valid)[:20]
    np.testing.assert_allclose(loaded.score(np.arange(20), history),
                               model.score(np.arange(20), history), rtol=1e-5, atol=1e-6)
