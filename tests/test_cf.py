import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lvlmrec.config import StrategyConfig
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.cf import (BPRMF, EmbeddingRecommender, LightGCN, NegativeSampler,
                                  bpr_loss, l2_penalty, propagate, recall_at_k)
from lvlmrec.represent.graph import SparseOperator, user_item_adjacency
from lvlmrec.represent.registry import build


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grouped_data(n_users=120, n_items=80, n_groups=4, per_user=8, seed=0) -> TrainData:
    """Users buy mostly inside their group's items: structure a CF model can find."""
    rng = np.random.default_rng(seed)
    user_group = rng.integers(n_groups, size=n_users)
    item_group = np.arange(n_items) % n_groups
    rows, cols, split = [], [], []
    for u in range(n_users):
        own = np.flatnonzero(item_group == user_group[u])
        pool = np.where(rng.random(per_user) < 0.85, 1, 0)
        picks = np.concatenate([rng.choice(own, pool.sum(), replace=False),
                                rng.choice(n_items, per_user - pool.sum(), replace=False)])
        picks = np.unique(picks)
        rows += [u] * len(picks)
        cols += picks.tolist()
        split += rng.permutation(np.arange(len(picks)) % 4 == 0).tolist()  # ~25% valid
    rows, cols, split = np.array(rows), np.array(cols), np.array(split)

    def mat(mask):
        return sp.csr_matrix((np.ones(mask.sum(), np.float32), (rows[mask], cols[mask])),
                             shape=(n_users, n_items))

    return TrainData(train=mat(~split), valid=mat(split), embedding=lambda s: None,
                     show_progress=False)


class _Fixed(EmbeddingRecommender):
    """An embedding model with given vectors, to test scoring and metrics."""

    def __init__(self):
        pass


def test_bpr_loss_and_penalty_formulas():
    u, p, n = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    diff = (u * p).sum(1) - (u * n).sum(1)
    assert torch.allclose(bpr_loss(u, p, n), torch.log1p(torch.exp(-diff)).mean())
    expect = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 5
    assert torch.allclose(l2_penalty(u, p, n), expect)


def test_propagate_is_mean_over_layers():
    data = grouped_data(20, 40)
    adj = user_item_adjacency(data.train)
    ego = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    dense = adj.toarray()
    expect = (ego + dense @ ego + dense @ dense @ ego) / 3
    got = propagate(SparseOperator(adj), torch.from_numpy(ego), 2).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_negative_sampler_avoids_history_and_is_seeded():
    data = grouped_data()
    users = np.repeat(np.arange(data.n_users), 50)
    a = NegativeSampler(data.train, np.random.default_rng(3)).sample(users)
    b = NegativeSampler(data.train, np.random.default_rng(3)).sample(users)
    assert np.array_equal(a, b)
    assert not np.asarray(data.train[users, a]).any()
    seen_items = np.flatnonzero(np.asarray(data.train.sum(0)).ravel() > 0)
    assert np.isin(a, seen_items).all()


def test_fast_recall_equals_evaluator_recall():
    data = grouped_data()
    rng = np.random.default_rng(1)
    model = _Fixed()
    model.user_vectors_ = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    model.item_vectors_ = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    fast = recall_at_k(torch.from_numpy(model.user_vectors_),
                       torch.from_numpy(model.item_vectors_), data.train, data.valid, 20)
    assert fast == pytest.approx(data.valid_recall(model, 20), abs=1e-9)


def test_unknown_users_are_folded_in_from_history():
    model = _Fixed()
    rng = np.random.default_rng(2)
    model.user_vectors_ = rng.normal(size=(4, 3)).astype(np.float32)
    model.item_vectors_ = rng.normal(size=(6, 3)).astype(np.float32)
    hist = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 1],
                                   [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    scores = model.score(np.array([2, -1, 9]), hist)
    v = model.item_vectors_
    np.testing.assert_allclose(scores[0], v @ model.user_vectors_[2], rtol=1e-6)
    np.testing.assert_allclose(scores[1], v @ v[[1, 5]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(scores[2], 0)  # unknown and no history: no preference
    ids, _ = model.recommend([0, 2], k=2)  # the single-user path folds in too
    assert 0 not in ids and 2 not in ids


@pytest.mark.parametrize("cls", [BPRMF, LightGCN])
def test_training_lowers_loss_and_beats_chance(cls):
    data = grouped_data()
    model = cls(learning_rate=0.01, epochs=25, patience=25, seed=0).fit(data)
    losses = model.loss_history_
    assert len(losses) == 25 and losses[-1] < 0.8 * losses[0]
    epochs, recalls = model.valid_history_.T
    assert model.best_epoch_ == int(epochs[np.argmax(recalls)])
    # the kept vectors are the best validation epoch's
    kept = recall_at_k(torch.from_numpy(model.user_vectors_),
                       torch.from_numpy(model.item_vectors_), data.train, data.valid)
    assert kept == pytest.approx(recalls.max(), abs=1e-9)
    assert kept > 2 * 20 / data.n_items  # random ranking finds ~20/80 of the targets


def test_seeded_training_is_deterministic():
    data = grouped_data()
    a = LightGCN(epochs=3, seed=5).fit(data)
    b = LightGCN(epochs=3, seed=5).fit(data)
    c = LightGCN(epochs=3, seed=6).fit(data)
    # bitwise on one CPU thread (several threads may reorder float reductions)
    assert np.array_equal(a.item_vectors_, b.item_vectors_)
    assert np.array_equal(a.loss_history_, b.loss_history_)
    assert not np.allclose(a.item_vectors_, c.item_vectors_, atol=1e-3)


def test_early_stopping_stops_after_patience():
    data = grouped_data()
    model = BPRMF(learning_rate=0.5, epochs=200, patience=2, eval_every=2).fit(data)
    evals = model.valid_history_[:, 0]
    assert len(model.loss_history_) < 200
    assert np.all(np.diff(evals) == 2)
    assert evals[-1] - model.best_epoch_ == 4  # two evaluations without improvement


def test_save_load_roundtrip_keeps_scores_and_weights(tmp_path):
    data = grouped_data()
    model = LightGCN(embedding_dim=8, epochs=2, seed=1).fit(data)
    written = model.save(tmp_path / "lightgcn")
    assert tmp_path / "lightgcn" / "weights.pt" in written
    loaded = Recommender.load(tmp_path / "lightgcn")
    assert isinstance(loaded, LightGCN) and loaded.embedding_dim == 8
    assert loaded.best_epoch_ == model.best_epoch_
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.score(users, data.train[users]),
                                  model.score(users, data.train[users]))
    weights = torch.load(tmp_path / "lightgcn" / "weights.pt")
    assert set(weights) == {"user", "item"}
    assert weights["item"].shape == (data.n_items, 8)


def test_registry_builds_cf_models():
    model = build(StrategyConfig(name="bprmf", kind="bpr", params={"epochs": 3}), seed=4)
    assert isinstance(model, BPRMF) and model.epochs == 3 and model.seed == 4
    model = build(StrategyConfig(name="lightgcn", kind="lightgcn", params={"n_layers": 2}))
    assert isinstance(model, LightGCN) and model.n_layers == 2


def test_nan_loss_stops_with_a_clear_error():
    data = grouped_data()
    with pytest.raises(Exception, match="lower learning_rate"):
        BPRMF(learning_rate=1e30, epochs=5).fit(data)


def test_num_threads_applies_during_fit_only():
    data = grouped_data()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        model = BPRMF(epochs=1, num_threads=1)
        real = model.build_module
        model.build_module = lambda d: seen.append(torch.get_num_threads()) or real(d)
        model.fit(data)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
