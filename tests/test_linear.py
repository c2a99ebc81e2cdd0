"""EASE, iALS, ItemKNN weighting, BPR-MF's item bias and the kinds' default search spaces."""

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_cf import grouped_data

from lvlmrec.errors import ConfigError
from lvlmrec.represent.baselines import ItemKNN, weight_interactions
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.linear import EASE, IALS, solve_cg, solve_exact
from lvlmrec.represent.registry import REGISTRY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ease_is_the_constrained_least_squares_solution():
    data = grouped_data(60, 40)
    model = EASE(l2=5.0).fit(data)
    x = data.train.toarray().astype(np.float64)
    b = model.weights_.astype(np.float64)
    assert np.allclose(np.diag(b), 0)
    # KKT: the gradient of ||X - XB||^2 + l2 ||B||^2 vanishes off the diagonal
    grad = -x.T @ (x - x @ b) + 5.0 * b
    off = ~np.eye(len(b), dtype=bool)
    assert np.abs(grad[off]).max() < 1e-3 * np.abs(x.T @ x).max()
    hist = data.train[:4]
    np.testing.assert_allclose(model.score(np.arange(4), hist), hist.toarray() @ b,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="l2"):
        EASE(l2=0).fit(data)


def _normal_equations(model, hist):
    """Residual of iALS's user step for the given histories."""
    h = hist.toarray()
    v = model.item_factors_.astype(np.float64)
    u = model.user_factors(hist).astype(np.float64)
    a0, lam, nu = model.unobserved_weight, model.regularization, model.reg_exponent
    res = []
    for row, vec in zip(h, u):
        obs = v[row > 0]
        reg = lam * (row.sum() + a0 * len(v)) ** nu
        lhs = (obs.T @ obs + a0 * v.T @ v + reg * np.eye(len(vec))) @ vec
        res.append(np.abs(lhs - obs.sum(0)).max())
    return max(res)


def test_ials_fold_in_solves_the_user_step_and_training_lowers_the_loss():
    data = grouped_data()
    losses = [IALS(factors=8, iterations=n, seed=1).fit(data).train_loss_ for n in (1, 4)]
    assert losses[1] < losses[0]
    model = IALS(factors=8, iterations=4, seed=1).fit(data)
    assert _normal_equations(model, data.train[:10]) < 1e-3
    again = IALS(factors=8, iterations=4, seed=1).fit(data)
    np.testing.assert_array_equal(model.item_factors_, again.item_factors_)
    exact = IALS(factors=8, iterations=4, seed=1, solver="exact").fit(data)
    assert exact.train_loss_ <= model.train_loss_ * 1.05
    hist = data.train + data.valid
    recall = data.valid_recall(model, 20)
    assert recall > 0.3  # groups are easy; chance is 20 / 80
    with pytest.raises(ConfigError, match="solver"):
        IALS(solver="lu").fit(data)
    assert model.score(np.arange(3), hist[:3]).shape == (3, data.n_items)


def test_cg_converges_to_the_exact_solve():
    rng = np.random.default_rng(0)
    rows = sp.random(30, 40, density=0.2, random_state=1, format="csr")
    rows.data[:] = 1
    other = torch.from_numpy(rng.normal(size=(40, 6)).astype(np.float32))
    gram = 0.1 * other.T @ other
    reg = torch.full((30,), 0.5)
    rhs = torch.from_numpy(np.asarray(rows @ other.numpy(), dtype=np.float32))
    exact = solve_exact(rows, other, gram, reg, rhs)
    cg = solve_cg(rows, other, gram, reg, rhs, torch.zeros(30, 6), steps=6)
    np.testing.assert_allclose(cg.numpy(), exact.numpy(), rtol=1e-3, atol=1e-4)


def _dense_weighted_knn(train, weighting, k1=1.2, b=0.75):
    x = train.toarray().astype(np.float64)
    n_items = x.shape[1]
    idf = np.log(n_items) - np.log1p(x.sum(1))
    w = x * idf[:, None] if weighting != "none" else x
    if weighting == "bm25":
        count = x.sum(0)
        length = (1 - b) + b * count / count[count > 0].mean()
        w = w * ((k1 + 1) / (k1 * length + 1))[None, :]
    co = w.T @ w
    norms = np.sqrt((w * w).sum(0))
    sim = co / (np.outer(norms, norms) + 3.0)
    np.fill_diagonal(sim, 0)
    return sim


@pytest.mark.parametrize("weighting", ["none", "tfidf", "bm25"])
def test_itemknn_weighting_equals_dense_reference(weighting):
    data = grouped_data(50, 40)
    model = ItemKNN(neighbours=40, shrink=3.0, weighting=weighting).fit(data)
    np.testing.assert_allclose(model.similarity_.toarray(),
                               _dense_weighted_knn(data.train, weighting), rtol=1e-4,
                               atol=1e-6)
    with pytest.raises(ConfigError, match="weighting"):
        weight_interactions(data.train, "idf")


def test_bpr_item_bias_is_learned_and_scored():
    data = grouped_data()
    model = BPRMF(item_bias=True, learning_rate=0.01, epochs=3, patience=3).fit(data)
    assert model.item_bias_.shape == (data.n_items,) and np.abs(model.item_bias_).max() > 0
    assert model.item_vectors_.shape[1] == model.user_vectors_.shape[1] == 64
    users = np.arange(5)
    expect = model.user_vectors(users, data.train[users]) @ model.item_vectors_.T \
        + model.item_bias_
    np.testing.assert_allclose(model.score(users, data.train[users]), expect, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_search_spaces_name_accepted_params_with_candidates(kind):
    cls = REGISTRY[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for name, values in cls.search_space.items():
        assert name in accepted, f"{kind}: search_space names unknown param {name!r}"
        assert isinstance(values, list) and len(values) >= 2
    if kind in ("bpr", "lightgcn", "itemknn", "ease", "ials", "smore"):
        assert cls.search_space, f"{kind} needs a default search space"
