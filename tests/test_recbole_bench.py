"""benchmarks/_recbole.py: RecBole's SASRec gets exactly lvlmrec's loo split and is ranked by
lvlmrec's evaluator; benchmarks/sequential.py's goal check (RecBole is a `bench` extra: the
training test is skipped without it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lvlmrec.data.schema import Dataset
from lvlmrec.data.synthetic import synthetic_tables
from lvlmrec.evaluate.ranking import evaluate_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _recbole  # noqa: E402


@pytest.fixture(scope="module")
def ds():
    items, inter, users = synthetic_tables(120, 100, 0, sequential_strength=0.8, split="loo")
    return Dataset(items, inter, users)


def test_ranks_put_train_in_our_order_then_valid_then_test(ds):
    users, items, ranks = _recbole.split_ranks(ds)
    train_order = ds.order_matrix("train").toarray()
    valid, test = ds.matrix("valid").toarray(), ds.matrix("test").toarray()
    for u in range(ds.n_users):
        mine = np.flatnonzero(users == u)
        by_rank = items[mine][np.argsort(ranks[mine])]
        assert sorted(ranks[mine]) == list(range(1, len(mine) + 1))
        train = np.flatnonzero(train_order[u])
        assert list(by_rank[:len(train)]) == list(train[np.argsort(train_order[u, train])])
        assert valid[u, by_rank[-2]] and test[u, by_rank[-1]]


def test_recbole_sasrec_trains_on_our_split_and_is_ranked_by_our_evaluator(ds):
    pytest.importorskip("recbole")
    model = _recbole.RecBoleSASRec(max_len=8, hidden=16, inner_size=16, epochs=2, patience=1,
                                   batch_size=256, verbose=False).fit(ds)  # checks the split
    assert model.best_epoch_ in (0, 1) and 0 <= model.valid_recall_ <= 1
    # its own epochs, read back from RecBole's log
    assert model.log_["epochs_run"] == len(model.log_["epoch_train_seconds"]) in (1, 2)
    assert set(model.recbole_test_) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    history, order = ds.matrix(("train", "valid")), ds.order_matrix(("train", "valid"))
    users = np.arange(ds.n_users)
    per_user = evaluate_model(model, users, history, ds.matrix("test"), ks=[20],
                              show_progress=False, order=order)
    assert len(per_user) == ds.n_users and per_user["recall@20"].between(0, 1).all()
    # order reaches it: the same items reversed score differently
    scores = model.score(users[:5], history[:5], order[:5])
    flipped = order[:5].copy()
    flipped.data = -flipped.data
    assert scores.shape == (5, ds.n_items)
    assert not np.allclose(scores, model.score(users[:5], history[:5], flipped))


def test_a_stopped_runs_checkpoint_scores_like_the_model_it_saved(ds, tmp_path):
    pytest.importorskip("recbole")
    import torch

    model = _recbole.RecBoleSASRec(max_len=8, hidden=16, inner_size=16, epochs=1,
                                   batch_size=256, verbose=False).fit(ds)
    path = tmp_path / "best.pth"
    torch.save({"state_dict": model.model_.state_dict(), "epoch": 0,
                "best_valid_score": 0.25}, path)
    again = _recbole.RecBoleSASRec(max_len=8, hidden=16, inner_size=16, epochs=1,
                                   batch_size=256, verbose=False).fit(ds, checkpoint=path)
    history, order = ds.matrix(("train", "valid")), ds.order_matrix(("train", "valid"))
    users = np.arange(10)
    np.testing.assert_allclose(again.score(users, history[:10], order[:10]),
                               model.score(users, history[:10], order[:10]), rtol=1e-6)
    assert again.valid_recall_ == 0.25 and again.best_epoch_ == 0
    log = tmp_path / "run.log"
    log.write_text("  recbole: epoch 0 training [time: 12.50s, train loss: 3.0]\n"
                   "  recbole: epoch 0 evaluating [time: 0.1s, valid_score: 0.184500]\n"
                   "  recbole: epoch 1 training [time: 13.00s, train loss: 2.0]\n"
                   "  recbole: epoch 1 evaluating [time: 0.1s, valid_score: 0.201000]\n")
    assert _recbole.read_log(log) == {"epochs_run": 2, "epoch_train_seconds": [12.5, 13.0],
                                      "recbole_valid_recall@20_by_epoch": [0.1845, 0.201]}


def test_goal_is_ours_at_least_recbole_minus_one_standard_error():
    import sequential as bench

    rng = np.random.default_rng(0)
    theirs = {"recall@20": rng.random(400)}
    se = theirs["recall@20"].std(ddof=1) / np.sqrt(400)
    close = bench.compare({"recall@20": theirs["recall@20"] - 0.5 * se}, theirs)["recall@20"]
    assert close["at_least_recbole_minus_one_se"] and close["difference"] < 0
    far = bench.compare({"recall@20": theirs["recall@20"] - 2 * se}, theirs)["recall@20"]
    assert not far["at_least_recbole_minus_one_se"]
    assert far["difference_se"] == 0.0  # a constant shift: the paired difference has no spread


def test_a_run_ran_to_the_end_when_all_epochs_ran_or_recbole_stopped_it():
    # patience 3: RecBole stops once 4 validations in a row failed to beat the best
    assert _recbole.ran_to_the_end(20, 17, epochs=20, patience=3)  # every epoch
    assert _recbole.ran_to_the_end(13, 8, epochs=20, patience=3)  # 9..12 no better
    assert not _recbole.ran_to_the_end(12, 8, epochs=20, patience=3)  # stopped by hand
    assert not _recbole.ran_to_the_end(5, 4, epochs=20, patience=3)
