"""The evaluate stage: every representation, every user, the same candidates and masks.

Validation (history = train) is what selection and early stopping may look at; test
(history = train + valid) is only reported. Outputs, all labelled with the protocol:

results/per_user.parquet   one row per (representation, split, user): every metric
results/metrics.csv        test means per representation (+ n_users, n_seeds, the params it
                           was fitted with as JSON; with several seeds, <metric>_std: the
                           standard deviation of the per-seed means, ddof 1)
results/metrics_valid.csv  validation means
results/seeds.csv          with several seeds: the means of every fit, per seed
results/ties.csv           per representation, split and K: users whose K-th and (K+1)-th
                           scores tie (the seeded tie-break decided what made the top K)
results/significance.csv   each representation vs the baseline (see `stats`)
results/slices.csv         history length, item popularity, cold items (see `slices`)
results/run.json           protocol, baseline, strategies, their sources and params, seeds,
                           the tie-break permutation, versions, timings

With several run seeds, a seeded representation's per-user metrics are the mean over its
fits (what per_user.parquet holds and the paired tests use); slices, ties and case studies
come from the first seed's fit.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from tqdm.auto import tqdm

from lvlmrec import __version__
from lvlmrec.config import EvaluateConfig, RepresentConfig, StrategyConfig
from lvlmrec.evaluate import cold
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import description_sets, read_active
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import (DESCRIBER_SOURCES, embedding_meta, is_text_source,
                                  split_source, text_embedding_name)
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.evaluate.protocols import Task, describe_protocol, evaluate_task, make_task
from lvlmrec.evaluate.ranking import METRICS, Ranking, metric_columns, tie_record
from lvlmrec.evaluate.slices import slice_metrics
from lvlmrec.evaluate.stats import compare_to_baseline
from lvlmrec.represent.fit import fitted_params, load_model, model_folders
from lvlmrec.workdir import Workdir, read_json, write_csv, write_json, write_parquet


#: the splits a split's history is made of (`split_matrices`)
HISTORY_SPLITS = {"valid": ("train",), "test": ("train", "valid")}


def split_matrices(ds: Dataset, split: str):
    """(history, target) for a split: validation masks train; test masks train + valid."""
    if split == "valid":
        return ds.matrix(("train",)), ds.matrix(("valid",))
    return ds.matrix(("train", "valid")), ds.matrix(("test",))


def active_descriptions(workdir: Workdir) -> dict[int, str]:
    """item id -> text of the active description set (the one the encoder used)."""
    active = read_active(workdir)
    if not active or not workdir.descriptions_db.is_file():
        return {}
    with DescriptionStore(workdir.descriptions_db) as store:
        texts = store.texts(active["model"], active["prompt_hash"])
    return {int(i): t for i, t in texts.items() if t and t.strip()}


def covered_items(workdir: Workdir, n_items: int) -> np.ndarray:
    """Boolean mask of the items that have a description in the active set."""
    mask = np.zeros(n_items, dtype=bool)
    ids = np.fromiter(active_descriptions(workdir), dtype=np.int64)
    mask[ids[(ids >= 0) & (ids < n_items)]] = True
    return mask


def choose_baseline(cfg: EvaluateConfig, strategies: list[StrategyConfig]) -> str:
    """`evaluate.baseline`, else the first text-only strategy on titles, else the first."""
    names = [s.name for s in strategies]
    if cfg.baseline is not None:
        if cfg.baseline not in names:
            raise ConfigError(f"evaluate.baseline: {cfg.baseline!r} is not a configured "
                              f"representation; configured: {', '.join(names)}")
        return cfg.baseline
    for s in strategies:
        if s.kind == "text" and s.text == "title" and s.vision is None:
            return s.name
    return names[0]


def main_metrics(cfg: EvaluateConfig) -> list[str]:
    """The metrics tested for significance: those of `cfg.significance_metrics` whose K
    is evaluated (a name that is no metric at all is an error)."""
    for name in cfg.significance_metrics:
        metric, _, k = name.partition("@")
        if metric not in METRICS or not k.isdigit():
            raise ConfigError(f"evaluate.significance_metrics: {name!r} is not a metric; "
                              f"use NAME@K with NAME in {', '.join(METRICS)}")
    available = set(metric_columns(cfg.ks))
    chosen = [m for m in cfg.significance_metrics if m in available]
    if not chosen:
        raise ConfigError(f"evaluate.significance_metrics: none of "
                          f"{cfg.significance_metrics} is computed with ks={cfg.ks}")
    return chosen


def source_info(workdir: Workdir, source: str) -> dict[str, Any]:
    """What a representation's input was made from (the report's ablation reads it)."""
    meta = embedding_meta(workdir, text_embedding_name(source)) \
        if is_text_source(source) else None
    info: dict[str, Any] = {}
    for key in ("model", "include_title", "prompt_name", "prompt_hash"):
        if meta and key in meta:
            info[key] = meta[key]
    base, describer = split_source(source)
    if base in DESCRIBER_SOURCES:
        sets = description_sets(workdir)
        if describer is None:
            describer = next(iter(sets), None)
        active = sets.get(describer) or {}
        if active:
            info["describer"] = describer
        for key in ("model", "include_title", "prompt_name", "prompt_hash"):
            if key in active:
                info.setdefault(f"describer_{key}" if key == "model" else key, active[key])
    return info


def strategy_records(workdir: Workdir, strategies: list[StrategyConfig]) -> list[dict]:
    out = []
    for s in strategies:
        sources = {src: source_info(workdir, src) for src in (s.text, s.vision) if src}
        fit_json = workdir.model_dir(s.name) / "fit.json"
        search = read_json(fit_json).get("search") if fit_json.is_file() else None
        out.append({"name": s.name, "kind": s.kind, "text": s.text, "vision": s.vision,
                    "scoring": s.scoring, "sources": sources,
                    "params": fitted_params(workdir.model_dir(s.name)), "search": search})
    return out


def seed_folders(workdir: Workdir, strategy: StrategyConfig,
                 seeds: list[int]) -> dict[int, int | None]:
    """seed -> the `load_model` seed argument (None: the primary folder) of each fit."""
    if len(seeds) == 1:
        return {seeds[0]: None}
    folders = model_folders(workdir, strategy, seeds)
    return {s: None if i == 0 else s for i, s in enumerate(folders)}


def seed_mean(rankings: list[Ranking], cols: list[str]) -> pd.DataFrame:
    """Per-user metrics averaged over the fits of several seeds (same users, same order)."""
    out = rankings[0].per_user.copy()
    if len(rankings) > 1:
        out[cols] = np.mean([r.per_user[cols].to_numpy() for r in rankings], axis=0)
    return out


def ties_rows(ranking: Ranking) -> list[dict]:
    n = len(ranking.per_user)
    return [{"k": k, "n_users": n, "n_tied": int(flags.sum()),
             "share_tied": float(flags.mean()) if n else 0.0}
            for k, flags in ranking.tied.items()]


def evaluate_all(cfg: EvaluateConfig, strategies: RepresentConfig, workdir: Workdir,
                 ds: Dataset, console: Console, show_progress: bool = True,
                 seeds: list[int] | None = None) -> list[Path]:
    configured = strategies.strategies
    seeds = list(seeds) if seeds else [0]
    if not configured:
        raise ConfigError("no representations configured (represent.strategies is empty)")
    baseline = choose_baseline(cfg, configured)
    metrics = main_metrics(cfg)
    cold.check_protocol(cfg.protocol, ds.interactions, ds.n_items)
    unranked = cold.needs_interactions(workdir, [s.name for s in configured], cfg.protocol)
    if baseline in unranked:
        raise ConfigError(f"evaluate.baseline: {baseline!r} cannot score items it never saw "
                          f"in training ({cold.NA_NOTE}); choose a content representation")
    covered = covered_items(workdir, ds.n_items) if cfg.protocol == "covered" else None
    tasks: dict[str, Task] = {}
    for split in ("valid", "test"):
        history, target = split_matrices(ds, split)
        tasks[split] = make_task(cfg.protocol, split, history, target, covered,
                                 cfg.n_negatives, cfg.seed,
                                 ds.order_matrix(HISTORY_SPLITS[split]))
    if len(tasks["test"].users) == 0:
        raise StageError(f"no user has a test item to find under the {cfg.protocol!r} "
                         "protocol; nothing to evaluate")
    label = describe_protocol(tasks["test"])
    console.print(f"  protocol: {label}; {len(tasks['test'].users)} test users")
    train_popularity = ds.item_popularity(("train",))
    cols = metric_columns(cfg.ks)
    per_user, slices, timings, ties, per_seed = [], [], {}, [], []
    if len(seeds) > 1:
        from lvlmrec.represent.registry import load_plugins

        load_plugins(strategies.plugins)  # which kinds are seeded
    ranked = [s for s in configured if s.name not in unranked]
    for strategy in tqdm(ranked, desc="representations", unit="model",
                         disable=not show_progress):
        name = strategy.name
        t0 = time.perf_counter()
        rankings: dict[str, list[Ranking]] = {split: [] for split in tasks}
        fits = seed_folders(workdir, strategy, seeds)
        for seed, folder_seed in fits.items():
            model = load_model(workdir, name, folder_seed, strategies.plugins)
            for split, task in tasks.items():
                desc = f"{name} [{split}]" + (f" seed {seed}" if len(fits) > 1 else "")
                ranking = evaluate_task(model, task, cfg.ks, cfg.block_size, show_progress,
                                        desc=desc, tie_seed=cfg.seed)
                rankings[split].append(ranking)
                per_seed.append({"representation": name, "split": split, "seed": seed,
                                 **ranking.per_user[cols].mean().to_dict()})
        for split, task in tasks.items():
            first = rankings[split][0]
            per_user.append(seed_mean(rankings[split], cols)
                            .assign(representation=name, split=split))
            ties += [{"representation": name, "split": split, **row}
                     for row in ties_rows(first)]
            if split == "test":
                slices.append(slice_metrics(first, task.target, train_popularity, metrics,
                                            model.scores_unseen_items, cfg.n_bootstrap,
                                            cfg.seed)
                              .assign(representation=name))
        timings[name] = round(time.perf_counter() - t0, 3)

    per_user_df = pd.concat(per_user, ignore_index=True)
    per_user_df.insert(0, "protocol", cfg.protocol)
    lead = ["protocol", "representation", "split", "user_id", "n_targets", "n_history"]
    per_user_df = per_user_df[lead + cols]
    grouped = per_user_df.groupby(["representation", "split"], sort=False)
    summary = grouped[cols].mean().join(grouped.size().rename("n_users")).reset_index()
    summary.insert(1, "protocol", cfg.protocol)
    records = strategy_records(workdir, configured)
    summary = with_seed_columns(summary, pd.DataFrame(per_seed), cols, len(seeds) > 1,
                                records)
    if unranked:  # marked, never given zeros (evaluate/cold.py)
        na = cold.na_rows(unranked, cols, cfg.protocol)
        summary = pd.concat([summary.assign(note=""), na.assign(split="test"),
                             na.assign(split="valid")], ignore_index=True)
    test_users = per_user_df[per_user_df["split"] == "test"]
    t0 = time.perf_counter()
    significance = compare_to_baseline(test_users, baseline, metrics, cfg.n_bootstrap,
                                       cfg.n_permutations, cfg.seed)
    significance.insert(0, "protocol", cfg.protocol)
    stats_seconds = time.perf_counter() - t0
    slices_df = pd.concat(slices, ignore_index=True)
    slices_df.insert(0, "protocol", cfg.protocol)
    slices_df = slices_df[["protocol", "representation", "slice", "bin", "bin_order",
                           "bin_range", "metric", "value", "ci_low", "ci_high", "n_users",
                           "n_targets", "note"]]

    out = workdir.results_dir
    paths = {
        "per_user": out / "per_user.parquet", "metrics": workdir.metrics_path,
        "metrics_valid": out / "metrics_valid.csv", "significance": out / "significance.csv",
        "slices": out / "slices.csv", "ties": out / "ties.csv",
    }
    if len(seeds) > 1:
        paths["seeds"] = out / "seeds.csv"
        write_csv(paths["seeds"], pd.DataFrame(per_seed))
    else:
        (out / "seeds.csv").unlink(missing_ok=True)
    write_csv(paths["ties"], pd.DataFrame(ties))
    write_parquet(paths["per_user"], per_user_df)
    write_csv(paths["metrics"], summary[summary["split"] == "test"].drop(columns="split"))
    write_csv(paths["metrics_valid"], summary[summary["split"] == "valid"].drop(columns="split"))
    write_csv(paths["significance"], significance)
    write_csv(paths["slices"], slices_df)
    write_json(workdir.run_json, {
        "lvlmrec": __version__,
        "python": platform.python_version(),
        "versions": _versions(),
        "protocol": cfg.protocol,
        "protocol_label": label,
        "n_candidates": tasks["test"].n_candidates,
        "n_negatives": cfg.n_negatives if cfg.protocol == "sampled" else None,
        "ks": cfg.ks,
        "significance_metrics": metrics,
        "baseline": baseline,
        "seed": cfg.seed,
        "tie_break": tie_record(ds.n_items, cfg.seed),
        "seeds": seeds,
        "n_bootstrap": cfg.n_bootstrap,
        "n_permutations": cfg.n_permutations,
        "n_users": int(ds.n_users),
        "n_items": int(ds.n_items),
        "n_users_evaluated": {split: int(len(t.users)) for split, t in tasks.items()},
        "representations": records,
        "needs_interactions": unranked,
        "evaluate_seconds": timings,
        "statistics_seconds": round(stats_seconds, 3),
    })
    console.print(f"  baseline {baseline}; significance over {len(test_users) // len(timings)} "
                  f"users in {stats_seconds:.1f}s")
    from lvlmrec.describe.audit import write_describer_results

    described = write_describer_results(workdir, configured, test_users, cfg.n_bootstrap,
                                        cfg.n_permutations, cfg.seed)
    return [*paths.values(), workdir.run_json, *described]


def with_seed_columns(summary: pd.DataFrame, per_seed: pd.DataFrame, cols: list[str],
                      several: bool, records: list[dict]) -> pd.DataFrame:
    """metrics.csv's extra columns: n_seeds, params (JSON) and, with several run seeds,
    <metric>_std over the per-seed means (0 for a deterministic representation, fitted
    once because every seed would give the same model)."""
    import json

    counts = per_seed.groupby(["representation", "split"])["seed"].nunique()
    summary["n_seeds"] = [int(counts[(r, s)]) for r, s in
                          zip(summary["representation"], summary["split"])]
    params = {r["name"]: json.dumps(r["params"] or {}, sort_keys=True, default=str)
              for r in records}
    summary["params"] = summary["representation"].map(params)
    if several:
        std = per_seed.groupby(["representation", "split"])[cols].std(ddof=1)
        std.columns = [f"{c}_std" for c in cols]
        summary = summary.merge(std.reset_index(), on=["representation", "split"],
                                how="left").fillna({c: 0.0 for c in std.columns})
    return summary


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "scipy", "pandas", "torch", "transformers", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
