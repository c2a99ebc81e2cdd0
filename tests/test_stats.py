"""Paired statistics and slices."""

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from lvlmrec.evaluate.ranking import Ranking
from lvlmrec.evaluate.slices import history_bin, popularity_groups, slice_metrics
from lvlmrec.evaluate.stats import (benjamini_hochberg, bootstrap_means, compare_to_baseline,
                                    paired_ttest, significance_mark, sign_flip_pvalues)


def test_benjamini_hochberg_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> p*m/rank 0.02, 0.02, 0.04, 0.04 (already monotone)
    p = [0.01, 0.04, 0.03, 0.005]
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # step-up: a later, smaller ratio pulls earlier ones down; capped at 1
    assert benjamini_hochberg([0.02, 0.03, 0.9]) == pytest.approx([0.045, 0.045, 0.9])
    assert benjamini_hochberg([0.8, 0.9]) == pytest.approx([0.9, 0.9])
    got = benjamini_hochberg([0.5, np.nan, 0.01])
    assert np.isnan(got[1]) and got[[0, 2]] == pytest.approx([0.5, 0.02])


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(0).random(40) ** 3
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p))


def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.random((500, 3))
    y = x + rng.normal(0.01, 0.1, size=(500, 3))
    t, p = paired_ttest(y - x)
    ref = stats.ttest_rel(y, x, axis=0)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_paired_ttest_degenerate_differences():
    t, p = paired_ttest(np.c_[np.zeros(10), np.full(10, 0.5)])
    assert p.tolist() == [1.0, 0.0] and t[0] == 0 and np.isposinf(t[1])


def test_randomisation_identical_inputs_give_one_and_big_shift_small():
    rng = np.random.default_rng(2)
    x = rng.random(300)
    diffs = np.c_[np.zeros(300), (x + 0.5) - x, rng.normal(0, 1, 300)]
    p = sign_flip_pvalues(diffs, 999, np.random.default_rng(0))
    assert p[0] == 1.0
    assert p[1] == pytest.approx(1 / 1000)  # the minimum: no flip reaches the observed shift
    assert 0.01 < p[2] <= 1.0


def test_randomisation_agrees_with_ttest_on_large_samples():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.05, 1.0, size=(2000, 1))
    p_rand = sign_flip_pvalues(diffs, 4000, rng)[0]
    p_t = paired_ttest(diffs)[1][0]
    assert abs(p_rand - p_t) < 0.03


def test_bootstrap_means_are_resampled_means():
    rng = np.random.default_rng(4)
    values = rng.random((1000, 2))
    draws = bootstrap_means(values, 500, np.random.default_rng(0))
    assert draws.shape == (500, 2)
    assert draws.mean(axis=0) == pytest.approx(values.mean(axis=0), abs=0.005)
    se = values.std(axis=0) / np.sqrt(1000)
    assert draws.std(axis=0) == pytest.approx(se, rel=0.15)
    assert np.array_equal(draws, bootstrap_means(values, 500, np.random.default_rng(0)))


def _per_user(n_users=400, seed=5):
    rng = np.random.default_rng(seed)
    base = rng.random(n_users)
    frames = []
    for name, shift in (("base", 0.0), ("same", 0.0), ("better", 0.2), ("noise", None)):
        v = rng.random(n_users) if shift is None else np.clip(base + shift, 0, None)
        frames.append(pd.DataFrame({"user_id": np.arange(n_users), "representation": name,
                                    "recall@10": v, "ndcg@10": v / 2}))
    return pd.concat(frames, ignore_index=True)


def test_compare_to_baseline():
    per_user = _per_user()
    sig = compare_to_baseline(per_user, "base", ["recall@10", "ndcg@10"], n_bootstrap=300,
                              n_permutations=500, seed=0)
    assert len(sig) == 8
    row = sig.set_index(["metric", "representation"])
    same = row.loc[("recall@10", "same")]
    assert same["p_randomisation"] == 1.0 and same["p_ttest"] == 1.0
    assert same["rel_improvement"] == 0.0 and same["diff"] == 0.0
    better = row.loc[("recall@10", "better")]
    assert better["p_ttest_bh"] < 1e-10 and better["p_randomisation"] == pytest.approx(1 / 501)
    assert better["rel_improvement"] == pytest.approx(
        better["mean"] / row.loc[("recall@10", "base"), "mean"] - 1)
    assert better["rel_ci_low"] < better["rel_improvement"] < better["rel_ci_high"]
    assert better["cohens_d"] > 1
    for _, r in sig.iterrows():
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    base = row.loc[("recall@10", "base")]
    assert np.isnan(base["p_ttest"]) and not np.isnan(base["ci_low"])
    # BH across the three comparisons of one metric
    raw = sig[(sig.metric == "ndcg@10") & (sig.representation != "base")]
    assert raw["p_ttest_bh"].to_numpy() == pytest.approx(benjamini_hochberg(raw["p_ttest"]))
    again = compare_to_baseline(per_user, "base", ["recall@10", "ndcg@10"], n_bootstrap=300,
                                n_permutations=500, seed=0)
    pd.testing.assert_frame_equal(sig, again)


def test_compare_to_baseline_needs_the_same_users():
    per_user = _per_user()
    per_user = per_user[~((per_user.representation == "noise") & (per_user.user_id == 3))]
    with pytest.raises(ValueError, match="same users"):
        compare_to_baseline(per_user, "base", ["recall@10"])
    with pytest.raises(ValueError, match="baseline 'nope'"):
        compare_to_baseline(per_user, "nope", ["recall@10"])


def test_statistics_take_seconds_at_the_study_scale():
    n_users, n_reps = 23_318, 12
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"user_id": np.arange(n_users), "representation": f"r{i}",
                            **{m: rng.random(n_users) for m in
                               ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}})
              for i in range(n_reps)]
    per_user = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    sig = compare_to_baseline(per_user, "r0", ["recall@10", "ndcg@10", "recall@20", "ndcg@20"])
    assert len(sig) == 48
    assert time.perf_counter() - t0 < 30  # a few seconds on 2 idle cores


def test_significance_marks():
    assert [significance_mark(p) for p in (0.0001, 0.005, 0.03, 0.2, np.nan)] == \
        ["***", "**", "*", "", ""]


# --------------------------------------------------------------------------- slices
def test_history_bins():
    assert history_bin(np.array([0, 1, 2, 3, 5, 6, 10, 11, 20, 21, 50, 51, 999])).tolist() == \
        [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


def test_popularity_groups_split_training_interactions_in_thirds():
    # 100 interactions; an item is head when the more popular items hold < 1/3 of them,
    # mid when they hold < 2/3
    pop = np.array([5, 30, 20, 10, 10, 5, 5, 5, 5, 3, 2, 0, 0])
    groups, labels = popularity_groups(pop)
    assert groups.tolist() == ["tail", "head", "head", "mid", "mid", "tail", "tail", "tail",
                               "tail", "tail", "tail", "cold", "cold"]
    assert labels == {"head": ">= 20", "mid": "10-19", "tail": "1-9", "cold": "0"}


def test_slice_metrics_against_reference():
    n_users, n_items = 30, 12
    rng = np.random.default_rng(6)
    tgt = sp.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32))
    users = np.flatnonzero(np.diff(tgt.indptr) > 0)
    top = np.stack([rng.permutation(n_items)[:5] for _ in users])
    n_history = rng.integers(0, 30, len(users))
    per_user = pd.DataFrame({"user_id": users, "n_history": n_history,
                             "recall@5": rng.random(len(users))})
    pop = np.array([30, 20, 10, 10, 5, 5, 5, 5, 3, 2, 0, 0])
    out = slice_metrics(Ranking(per_user, top), tgt, pop, ["recall@5"])
    groups, _ = popularity_groups(pop)
    for group, slice_name in (("head", "popularity"), ("tail", "popularity"),
                              ("cold", "cold_items")):
        recalls = []
        for row, u in enumerate(users):
            t = {i for i in tgt[u].indices if groups[i] == group}
            if t:
                recalls.append(len(t & set(top[row])) / len(t))
        got = out[(out.slice == slice_name) & (out.bin == group)]
        assert got["value"].item() == pytest.approx(np.mean(recalls))
        assert got["n_users"].item() == len(recalls)
    bins = history_bin(n_history)
    hist_rows = out[out.slice == "history_length"]
    assert hist_rows["n_users"].sum() == len(users)
    first = hist_rows.iloc[0]
    in_bin = bins == first["bin_order"]
    assert first["value"] == pytest.approx(per_user.loc[in_bin, "recall@5"].mean())
