import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lvlmrec.represent.graph import (SparseOperator, knn_graph, max_union, sym_normalise,
                                     user_item_adjacency)


def _random_train(n_users=30, n_items=25, density=0.15, seed=0):
    rng = np.random.default_rng(seed)
    m = (rng.random((n_users, n_items)) < density).astype(np.float32)
    m[3] = 0  # a user without interactions
    m[:, 5] = 0  # an item nobody bought
    return sp.csr_matrix(m)


def _dense_knn_reference(x, k):
    """The official recipe on a dense matrix: full cosine, top-k per row, D^-1/2 A D^-1/2."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    adj = np.zeros_like(sims)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(x))[:, None]
    adj[rows, top] = sims[rows, top]
    d = adj.sum(axis=1) ** -0.5
    return d[:, None] * adj * d[None, :]


def test_user_item_adjacency_is_symmetric_normalised_bipartite():
    train = _random_train()
    n_users, n_items = train.shape
    adj = user_item_adjacency(train).toarray().astype(np.float64)
    assert adj.shape == (n_users + n_items,) * 2
    np.testing.assert_allclose(adj, adj.T, atol=1e-7)
    assert not adj[:n_users, :n_users].any() and not adj[n_users:, n_users:].any()
    deg = np.concatenate([np.asarray(train.sum(1)).ravel(), np.asarray(train.sum(0)).ravel()])
    # entry (u, i) is 1 / sqrt(deg(u) deg(i)) for every interaction, 0 elsewhere
    u, i = train.nonzero()
    np.testing.assert_allclose(adj[u, n_users + i], 1 / np.sqrt(deg[u] * deg[n_users + i]),
                               rtol=1e-6)
    assert np.count_nonzero(adj) == 2 * train.nnz
    # D^-1/2 A D^-1/2 sqrt(d) = sqrt(d): the row sums weighted by sqrt(degree)
    np.testing.assert_allclose(adj @ np.sqrt(deg), np.sqrt(deg), rtol=1e-6)
    # isolated nodes stay isolated (no NaN)
    assert np.isfinite(adj).all()
    assert not adj[3].any() and not adj[n_users + 5].any()


@pytest.mark.parametrize("block_size", [1, 7, 64, None])
def test_blockwise_knn_equals_dense_reference(block_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(53, 12))  # has negative cosines too
    k = 6
    got = knn_graph(x, k, block_size=block_size)
    assert np.array_equal(np.diff(got.indptr), np.full(53, k))  # exactly k edges a row
    np.testing.assert_allclose(got.toarray(), _dense_knn_reference(x, k), rtol=1e-5, atol=1e-6)


def test_knn_graph_keeps_self_and_top_neighbours_and_normalises():
    rng = np.random.default_rng(2)
    x = np.abs(rng.normal(size=(40, 5)))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    k = 4
    got = knn_graph(x, k, block_size=9)
    neighbours = got.indices.reshape(40, k)
    for row in range(40):
        assert row in neighbours[row]  # an item is its own nearest neighbour
        assert set(neighbours[row]) == set(np.argsort(-sims[row])[:k])
    # with d the row sums of the raw top-k cosines: A_hat sqrt(d) = sqrt(d)
    raw_deg = np.take_along_axis(sims, neighbours, axis=1).sum(axis=1)
    np.testing.assert_allclose(got @ np.sqrt(raw_deg), np.sqrt(raw_deg), rtol=1e-5)


def test_zero_feature_rows_are_isolated_not_nan():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 4))
    x[7] = 0
    got = knn_graph(x, 3).toarray()
    assert np.isfinite(got).all()
    assert not got[7].any()


def test_knn_k_is_checked():
    with pytest.raises(ValueError, match="knn k"):
        knn_graph(np.ones((5, 2)), 6)


def test_max_union_keeps_every_edge_with_the_larger_weight():
    a = sp.csr_matrix(np.array([[0.5, 0.0, -0.2], [0.0, 0.3, 0.0], [0.1, 0.0, 0.0]]))
    b = sp.csr_matrix(np.array([[0.4, 0.7, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.0]]))
    got = max_union(a, b).toarray()
    expect = np.array([[0.5, 0.7, -0.2], [0.0, 0.9, 0.0], [0.1, 0.0, 0.0]])
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_max_union_equals_dense_max_with_missing_as_minus_infinity():
    rng = np.random.default_rng(4)
    a = knn_graph(rng.normal(size=(30, 6)), 4)
    b = knn_graph(rng.normal(size=(30, 9)), 2)
    fused = max_union(a, b)
    da, db = a.toarray(), b.toarray()
    da[(a != 0).toarray() == 0] = -np.inf
    db[(b != 0).toarray() == 0] = -np.inf
    dense = np.maximum(da, db)
    dense[np.isinf(dense)] = 0
    np.testing.assert_allclose(fused.toarray(), dense, rtol=1e-6)
    pattern = ((a != 0) + (b != 0)).toarray()
    assert np.array_equal(fused.toarray() != 0, pattern)


def test_sparse_operator_products_match_scipy():
    m = sym_normalise(_random_train())
    x = np.random.default_rng(5).normal(size=(m.shape[1], 3)).astype(np.float32)
    got = (SparseOperator(m) @ torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, m @ x, rtol=1e-5, atol=1e-6)


def test_sparse_operator_gradient_is_the_transpose_product():
    """d(sum(w * (A x)))/dx = A^T w, for a non-square, non-symmetric A (the user-item block)."""
    m = sp.random(7, 5, density=0.4, random_state=1, format="csr", dtype=np.float32)
    x = torch.randn(5, 3, dtype=torch.float32, requires_grad=True)
    w = torch.randn(7, 3)
    ((SparseOperator(m) @ x) * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), m.T @ w.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_knn_graphs_for_40k_items_stay_under_2_gb():
    """Both modality graphs and their fusion for 40k x 768-d items, in a fresh process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import lvlmrec

    code = """
import resource, numpy as np
from lvlmrec.represent.graph import knn_graph, max_union
rng = np.random.default_rng(0)
text = rng.normal(size=(40_000, 768)).astype(np.float32)
vision = rng.normal(size=(40_000, 768)).astype(np.float32)
fused = max_union(knn_graph(text, 10), knn_graph(vision, 40))
assert fused.shape == (40_000, 40_000) and fused.nnz >= 40_000 * 40
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(lvlmrec.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 2 * 2**20, f"peak resident memory {peak_kib / 2**20:.2f} GiB"
