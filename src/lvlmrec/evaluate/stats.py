"""Paired comparisons over users: each representation against one baseline.

Every representation is evaluated on the same users, so the per-user metric values pair
up. For each representation and metric:

- mean and a percentile bootstrap 95% CI of the mean (users resampled with replacement;
  the same resamples for every representation, so the CI of the difference and of the
  relative improvement come from the same draws);
- the paired t-test (scipy.stats.ttest_rel) on the per-user differences;
- the paired randomisation test: the sign of each user's difference is flipped at random
  (under H0 the two labels are exchangeable within a user); p = (1 + #{|mean*| >= |mean|})
  / (1 + n_permutations), so it is never 0 and is 1 for identical inputs;
- Benjamini-Hochberg adjustment of each test's p-values across the representations
  compared with the baseline (per metric);
- relative improvement mean / baseline mean - 1 and Cohen's d for paired samples
  (d_z = mean difference / standard deviation of the differences).

All of it is vectorised over (users x representations x metrics): a few seconds for
23k users x 12 representations.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

#: draws per chunk, so the (chunk, n_users) resampling matrices stay small
_CHUNK = 100


def benjamini_hochberg(pvalues) -> np.ndarray:
    """BH-adjusted p-values (step-up, monotone, capped at 1); NaN entries stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adjusted, 1.0)
    out[ok] = res
    return out


def paired_ttest(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, p) per column of a (n_users, m) difference matrix; two-sided.

    All-zero differences give t = 0, p = 1 (scipy would say NaN: there is no evidence of
    a difference); constant non-zero differences give p = 0.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate columns, handled below
        res = stats.ttest_1samp(diffs, 0.0, axis=0)
    t, p = np.asarray(res.statistic, dtype=np.float64), np.asarray(res.pvalue, np.float64)
    mean, sd = diffs.mean(axis=0), diffs.std(axis=0, ddof=1)
    zero = (sd == 0) & (mean == 0)
    const = (sd == 0) & (mean != 0)
    t[zero], p[zero] = 0.0, 1.0
    t[const], p[const] = np.sign(mean[const]) * np.inf, 0.0
    return t, p


def sign_flip_pvalues(diffs: np.ndarray, n_permutations: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Two-sided paired randomisation test per column of (n_users, m) differences."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n, m = diffs.shape
    if n_permutations <= 0 or n == 0:
        return np.full(m, np.nan)
    observed = np.abs(diffs.mean(axis=0))
    # tolerance: a permutation equal to the observed statistic up to rounding counts
    tol = 1e-12 * np.maximum(np.abs(diffs).mean(axis=0), 1e-300)
    extreme = np.zeros(m, dtype=np.int64)
    for start in range(0, n_permutations, _CHUNK):
        size = min(_CHUNK, n_permutations - start)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8).astype(np.float64) * 2 - 1
        permuted = np.abs(signs @ diffs) / n
        extreme += (permuted >= observed - tol).sum(axis=0)
    return (1 + extreme) / (1 + n_permutations)


def bootstrap_means(values: np.ndarray, n_bootstrap: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_bootstrap, m) means of (n_users, m) values over users resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    out = np.empty((n_bootstrap, values.shape[1]))
    for start in range(0, n_bootstrap, _CHUNK):
        size = min(_CHUNK, n_bootstrap - start)
        picks = rng.integers(0, n, size=(size, n))
        counts = np.bincount((picks + np.arange(size)[:, None] * n).ravel(),
                             minlength=size * n).reshape(size, n)
        out[start:start + size] = counts @ values / n
    return out


def _ci(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    if draws.shape[0] == 0:
        nan = np.full(draws.shape[1:], np.nan)
        return nan, nan
    alpha = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        low, high = np.nanquantile(draws, [alpha, 1 - alpha], axis=0)
    return low, high


def paired_matrix(per_user: pd.DataFrame, metric: str, names: list[str]) -> np.ndarray:
    """(n_users, len(names)) values of `metric`; every representation must have the same
    users (the evaluator guarantees it)."""
    wide = per_user.pivot(index="user_id", columns="representation", values=metric)
    missing = [n for n in names if n not in wide.columns]
    if missing:
        raise ValueError(f"no per-user values for {missing}")
    wide = wide[names]
    if wide.isna().any().any():
        bad = wide.columns[wide.isna().any()].tolist()
        raise ValueError(f"representations {bad} were not evaluated on the same users as the "
                         "others; paired tests need identical user sets")
    return wide.to_numpy(dtype=np.float64)


def compare_to_baseline(per_user: pd.DataFrame, baseline: str, metrics: list[str],
                        n_bootstrap: int = 1000, n_permutations: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> pd.DataFrame:
    """One row per (metric, representation), the baseline included (its tests are empty).

    per_user: columns user_id, representation and the metrics (one split, one protocol).
    """
    names = list(dict.fromkeys(per_user["representation"]))
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the evaluated representations "
                         f"{names}")
    names.remove(baseline)
    names.insert(0, baseline)
    values = np.stack([paired_matrix(per_user, m, names) for m in metrics], axis=2)
    n_users, n_reps, n_metrics = values.shape
    flat = values.reshape(n_users, n_reps * n_metrics)
    diffs = (values - values[:, :1, :]).reshape(n_users, -1)
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(flat, n_bootstrap, rng).reshape(-1, n_reps, n_metrics)
    boot_base = boot[:, :1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        boot_rel = np.where(boot_base > 0, boot / boot_base - 1, np.nan)
    t, p_t = paired_ttest(diffs)
    p_rand = sign_flip_pvalues(diffs, n_permutations, rng)
    means = values.mean(axis=0)
    base_mean = means[0]
    sd = diffs.std(axis=0, ddof=1).reshape(n_reps, n_metrics) if n_users > 1 else \
        np.full((n_reps, n_metrics), np.nan)
    diff_mean = means - base_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(base_mean > 0, means / base_mean - 1, np.nan)
        cohen = np.where(sd > 0, diff_mean / sd, np.where(diff_mean == 0, np.nan,
                                                         np.sign(diff_mean) * np.inf))
    lo, hi = _ci(boot, confidence)
    dlo, dhi = _ci(boot - boot_base, confidence)
    rlo, rhi = _ci(boot_rel, confidence)
    t, p_t, p_rand = (a.reshape(n_reps, n_metrics) for a in (t, p_t, p_rand))
    rows = []
    for j, metric in enumerate(metrics):
        bh_t = np.r_[np.nan, benjamini_hochberg(p_t[1:, j])]
        bh_rand = np.r_[np.nan, benjamini_hochberg(p_rand[1:, j])]
        for i, name in enumerate(names):
            is_base = i == 0
            rows.append({
                "metric": metric,
                "representation": name,
                "baseline": baseline,
                "n_users": n_users,
                "mean": means[i, j],
                "ci_low": lo[i, j],
                "ci_high": hi[i, j],
                "baseline_mean": base_mean[j],
                "diff": diff_mean[i, j],
                "diff_ci_low": np.nan if is_base else dlo[i, j],
                "diff_ci_high": np.nan if is_base else dhi[i, j],
                "rel_improvement": np.nan if is_base else rel[i, j],
                "rel_ci_low": np.nan if is_base else rlo[i, j],
                "rel_ci_high": np.nan if is_base else rhi[i, j],
                "cohens_d": np.nan if is_base else cohen[i, j],
                "t_stat": np.nan if is_base else t[i, j],
                "p_ttest": np.nan if is_base else p_t[i, j],
                "p_ttest_bh": bh_t[i],
                "p_randomisation": np.nan if is_base else p_rand[i, j],
                "p_randomisation_bh": bh_rand[i],
            })
    return pd.DataFrame(rows)


def significance_mark(p: float) -> str:
    """'***' p < 0.001, '**' p < 0.01, '*' p < 0.05, '' otherwise (or NaN)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
