"""The evaluator against a plain per-user reference: full sort, masking, metrics by definition."""

import math
import time

import numpy as np
import pytest
import scipy.sparse as sp

from lvlmrec.evaluate.protocols import evaluate_task, make_task, sample_negatives
from lvlmrec.evaluate.ranking import rank_users, tie_order, topk_block
from lvlmrec.represent.base import TrainData
from lvlmrec.represent.content import ContentRecommender

KS = [1, 3, 5, 10, 50]


class MatrixModel:
    """Scores are rows of a fixed users x items matrix."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)

    def score(self, user_ids, history):
        return self.scores[user_ids].copy()


# --------------------------------------------------------------------------- reference
def reference_top(scores, excluded, k, allowed=None):
    """Full sort by (-score, tie-break rank) over the allowed, non-excluded, finite items."""
    rank = tie_order(len(scores))
    items = [i for i in range(len(scores))
             if i not in excluded and (allowed is None or allowed[i])
             and not math.isnan(scores[i]) and scores[i] != -math.inf]
    items.sort(key=lambda i: (-float(scores[i]), rank[i]))
    return items[:k]


def reference_metrics(top, targets, k):
    rel = [1.0 if i in targets else 0.0 for i in top[:k]]
    n = len(targets)
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(n, k)))
    hits = 0
    ap = 0.0
    for i, r in enumerate(rel):
        if r:
            hits += 1
            ap += hits / (i + 1)
    return {"recall": sum(rel) / n, "precision": sum(rel) / k, "hit": float(sum(rel) > 0),
            "ndcg": dcg / idcg, "map": ap / min(n, k)}


def reference_evaluate(scores, history, target, ks, allowed=None):
    out = {}
    for u in range(history.shape[0]):
        targets = set(target[u].indices.tolist())
        if allowed is not None:
            targets = {t for t in targets if allowed[t]}
        if not targets:
            continue
        top = reference_top(scores[u], set(history[u].indices.tolist()), max(ks), allowed)
        out[u] = {f"{m}@{k}": v for k in ks for m, v in reference_metrics(top, targets, k).items()}
    return out


def random_data(seed, n_users=60, n_items=40, levels=4):
    """Integer-valued scores (many ties), random histories (some empty) and targets (some
    users none, some more than K)."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_users, n_items)).astype(np.float32)
    hist = (rng.random((n_users, n_items)) < 0.15)
    hist[:5] = False  # empty histories
    tgt = (rng.random((n_users, n_items)) < 0.2) & ~hist
    tgt[5:8] = False  # users without targets
    tgt[8, :] = ~hist[8]  # more targets than any K
    return scores, sp.csr_matrix(hist.astype(np.float32)), sp.csr_matrix(tgt.astype(np.float32))


def assert_matches(per_user, expected, ks):
    assert sorted(per_user["user_id"]) == sorted(expected)
    got = per_user.set_index("user_id")
    for user, ref in expected.items():
        for col, value in ref.items():
            assert got.loc[user, col] == pytest.approx(value, abs=1e-6), (user, col)


# --------------------------------------------------------------------------- top-k
def test_topk_breaks_ties_by_the_seeded_permutation_and_pads():
    # tie_order(6) == [4, 5, 1, 0, 3, 2]: item 3 wins every tie, then 2, 5, 4, 0, 1
    assert tie_order(6).tolist() == [4, 5, 1, 0, 3, 2]
    s = np.array([[1, 3, 3, 2, np.nan, -np.inf],
                  [0, 0, 0, 0, 0, 0],
                  [5, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf]], dtype=np.float32)
    top = topk_block(s, 4)
    assert top.tolist() == [[2, 1, 3, 0], [3, 2, 5, 4], [0, -1, -1, -1]]
    # another seed, another order: the ranking follows the permutation it is given
    other = tie_order(6, seed=1)
    top = topk_block(np.zeros((1, 6), np.float32), 6, other)
    assert top[0].tolist() == np.argsort(other).tolist()


@pytest.mark.parametrize("seed", range(4))
def test_topk_equals_full_sort(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 5, size=(30, 200)).astype(np.float32)
    s[rng.random(s.shape) < 0.1] = -np.inf
    top = topk_block(s.copy(), 20)
    for u in range(len(s)):
        assert top[u].tolist() == reference_top(s[u], set(), 20)


# --------------------------------------------------------------------------- full ranking
@pytest.mark.parametrize("seed,levels,block", [(0, 4, 7), (1, 2, 1000), (2, 1000, 13)])
def test_full_ranking_equals_reference(seed, levels, block):
    scores, hist, tgt = random_data(seed, levels=levels)
    ranking = rank_users(MatrixModel(scores), np.arange(hist.shape[0]), hist, tgt, ks=KS,
                         block_size=block, show_progress=False)
    assert_matches(ranking.per_user, reference_evaluate(scores, hist, tgt, KS), KS)
    assert ranking.top.shape == (len(ranking.per_user), 40)  # K = 50 > 40 items: padded


def test_nan_scores_rank_last():
    scores, hist, tgt = random_data(3, levels=50)
    scores[np.random.default_rng(0).random(scores.shape) < 0.2] = np.nan
    ranking = rank_users(MatrixModel(scores), np.arange(hist.shape[0]), hist, tgt, ks=KS,
                         block_size=9, show_progress=False)
    assert_matches(ranking.per_user, reference_evaluate(scores, hist, tgt, KS), KS)


def test_content_model_equals_reference():
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    _, hist, tgt = random_data(5, n_users=80, n_items=300)
    model = ContentRecommender("title").fit(TrainData(hist, hist, lambda s: emb))
    ranking = rank_users(model, np.arange(80), hist, tgt, ks=[5, 20], block_size=32,
                         show_progress=False)
    scores = model.score(np.arange(80), hist)
    assert_matches(ranking.per_user, reference_evaluate(scores, hist, tgt, [5, 20]), [5, 20])


def test_candidate_restriction_equals_reference():
    scores, hist, tgt = random_data(6, levels=3)
    allowed = np.random.default_rng(6).random(40) < 0.5
    ranking = rank_users(MatrixModel(scores), np.arange(hist.shape[0]), hist, tgt, ks=KS,
                         block_size=11, candidates=allowed, show_progress=False)
    assert_matches(ranking.per_user, reference_evaluate(scores, hist, tgt, KS, allowed), KS)
    top = ranking.top[ranking.top >= 0]
    assert allowed[top].all()


def test_bad_score_shape_is_a_clear_error():
    class Bad:
        def score(self, users, history):
            return np.zeros((len(users), 3), np.float32)

    _, hist, tgt = random_data(0)
    with pytest.raises(ValueError, match="Bad.score returned shape"):
        rank_users(Bad(), np.arange(10), hist, tgt, show_progress=False)


# --------------------------------------------------------------------------- protocols
def test_covered_protocol_restricts_everything_alike():
    scores, hist, tgt = random_data(7, levels=3)
    covered = np.random.default_rng(7).random(40) < 0.4
    task = make_task("covered", "test", hist, tgt, covered)
    h = hist.toarray().astype(bool) & covered
    t = tgt.toarray().astype(bool) & covered
    expected_users = np.flatnonzero(h.any(1) & t.any(1))
    assert task.users.tolist() == expected_users.tolist()
    assert task.n_candidates == covered.sum()
    seen = []

    class Recorder(MatrixModel):
        def score(self, user_ids, history):
            seen.append(history.toarray())
            return super().score(user_ids, history)

    ranking = evaluate_task(Recorder(scores), task, KS, block_size=8, show_progress=False)
    # the model only ever sees covered history items
    assert not np.concatenate(seen)[:, ~covered].any()
    ref = reference_evaluate(scores, sp.csr_matrix(h.astype(np.float32)),
                             sp.csr_matrix(t.astype(np.float32)), KS, covered)
    ref = {u: v for u, v in ref.items() if u in set(expected_users)}
    assert_matches(ranking.per_user, ref, KS)


def test_covered_protocol_without_descriptions_is_an_error():
    _, hist, tgt = random_data(0)
    from lvlmrec.errors import StageError

    with pytest.raises(StageError, match="describe"):
        make_task("covered", "test", hist, tgt, np.zeros(40, bool))


def test_sample_negatives_are_distinct_allowed_and_seeded():
    _, hist, tgt = random_data(8, n_users=50, n_items=400)
    excluded = hist + tgt
    users = np.arange(50)
    neg = sample_negatives(excluded, users, 30, seed=1)
    assert neg.shape == (50, 30)
    assert np.array_equal(neg, sample_negatives(excluded, users, 30, seed=1))
    assert not np.array_equal(neg, sample_negatives(excluded, users, 30, seed=2))
    assert (neg[8] == -1).all()  # user 8's history and targets cover the whole catalog
    dense = excluded.toarray() > 0
    for u in np.delete(users, 8):
        assert len(set(neg[u])) == 30 and (neg[u] >= 0).all()
        assert not dense[u, neg[u]].any()


def test_sample_negatives_short_catalog_pads():
    _, hist, tgt = random_data(9, n_users=10, n_items=12)
    excluded = hist + tgt
    neg = sample_negatives(excluded, np.arange(10), 20, seed=0)
    dense = excluded.toarray() > 0
    for u in range(10):
        got = neg[u][neg[u] >= 0]
        assert sorted(got) == sorted(np.flatnonzero(~dense[u]))  # every allowed item once


def test_sampled_protocol_equals_reference():
    scores, hist, tgt = random_data(10, n_users=40, n_items=200, levels=6)
    task = make_task("sampled", "test", hist, tgt, n_negatives=25, seed=3)
    ranking = evaluate_task(MatrixModel(scores), task, KS, block_size=6, show_progress=False)
    expected = {}
    for row, u in enumerate(task.users):
        targets = set(tgt[u].indices.tolist())
        pool = set(task.negatives[row].tolist()) | targets
        allowed = np.zeros(200, bool)
        allowed[list(pool)] = True
        top = reference_top(scores[u], set(), max(KS), allowed)
        expected[u] = {f"{m}@{k}": v for k in KS
                       for m, v in reference_metrics(top, targets, k).items()}
    assert_matches(ranking.per_user, expected, KS)


# --------------------------------------------------------------------------- speed
def test_blocked_evaluator_is_much_faster_than_a_per_user_loop():
    """A relative check (robust on a shared machine): ours vs the same work per user."""
    rng = np.random.default_rng(0)
    n_users, n_items = 400, 4000
    emb = rng.standard_normal((n_items, 32)).astype(np.float32)
    hist = sp.random(n_users, n_items, density=0.003, random_state=0, format="csr")
    hist.data[:] = 1
    tgt = sp.random(n_users, n_items, density=0.002, random_state=1, format="csr")
    tgt = (tgt - tgt.multiply(hist)).tocsr()
    tgt.data[:] = 1
    model = ContentRecommender("t").fit(TrainData(hist, hist, lambda s: emb))
    t0 = time.perf_counter()
    rank_users(model, np.arange(n_users), hist, tgt, ks=[10], show_progress=False)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for u in range(n_users):
        s = model.score(np.array([u]), hist[u])[0]
        s[hist[u].indices] = -np.inf
        np.argsort(-s, kind="stable")[:10]
    loop = time.perf_counter() - t0
    assert ours * 3 < loop, (ours, loop)


# --------------------------------------------------------------------------- ties
def test_ties_follow_the_seeded_permutation_and_are_counted():
    from lvlmrec.evaluate.ranking import tie_record

    n_users, n_items = 6, 30
    hist = sp.csr_matrix(np.eye(n_users, n_items, dtype=np.float32))  # user u saw item u
    tgt = sp.csr_matrix(np.roll(np.eye(n_users, n_items, dtype=np.float32), 7, axis=1))
    flat = MatrixModel(np.zeros((n_users, n_items)))
    for seed in (0, 5):
        ranking = rank_users(flat, np.arange(n_users), hist, tgt, ks=[3, 10],
                             show_progress=False, tie_seed=seed)
        order = np.argsort(tie_order(n_items, seed))  # the permutation itself
        for u in range(n_users):
            assert ranking.top[u].tolist() == [i for i in order if i != u][:10]
        assert ranking.tied[3].all() and ranking.tied[10].all()  # every score is equal
    assert tie_order(n_items, 0).tolist() != tie_order(n_items, 5).tolist()
    # distinct scores: no tie at any cut-off, and the permutation plays no part
    distinct = MatrixModel(np.tile(np.arange(n_items, dtype=np.float32), (n_users, 1)))
    ranking = rank_users(distinct, np.arange(n_users), hist, tgt, ks=[3, 10],
                         show_progress=False, tie_seed=5)
    assert not ranking.tied[3].any() and ranking.top[0].tolist() == list(range(29, 19, -1))
    record = tie_record(n_items, 5)
    assert record["seed"] == 5 and len(record["permutation_sha256"]) == 64
    assert record != tie_record(n_items, 0)


def test_tie_free_scores_do_not_depend_on_the_tie_break():
    """Without ties the permutation plays no part: any seed gives the same metrics (so
    the evaluator still matches ranx and other tie-unaware references on such data)."""
    rng = np.random.default_rng(3)
    scores = rng.random((40, 50)).astype(np.float32)
    _, hist, tgt = random_data(3, n_users=40, n_items=50)
    runs = [rank_users(MatrixModel(scores), np.arange(40), hist, tgt, ks=KS,
                       show_progress=False, tie_seed=seed) for seed in (0, 1, 99)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].top, other.top)
        assert not any(flags.any() for flags in other.tied.values())
