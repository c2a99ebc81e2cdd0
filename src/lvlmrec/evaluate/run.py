"""The evaluate stage: every representation, every user, the same candidates and masks.

Validation (history = train) is what selection and early stopping may look at; test
(history = train + valid) is only reported. Outputs, all labelled with the protocol:

results/per_user.parquet   one row per (representation, split, user): every metric
results/metrics.csv        test means per representation (+ n_users)
results/metrics_valid.csv  validation means
results/significance.csv   each representation vs the baseline (see `stats`)
results/slices.csv         history length, item popularity, cold items (see `slices`)
results/run.json           protocol, baseline, strategies and their sources, seeds,
                           versions, timings
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
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import read_active
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import TEXT_SOURCES, embedding_meta
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.evaluate.protocols import Task, describe_protocol, evaluate_task, make_task
from lvlmrec.evaluate.ranking import METRICS, metric_columns
from lvlmrec.evaluate.slices import slice_metrics
from lvlmrec.evaluate.stats import compare_to_baseline
from lvlmrec.represent.fit import load_model
from lvlmrec.workdir import Workdir, write_csv, write_json, write_parquet


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
    meta = embedding_meta(workdir, f"text_{source}") if source in TEXT_SOURCES else None
    info: dict[str, Any] = {}
    for key in ("model", "include_title", "prompt_name", "prompt_hash"):
        if meta and key in meta:
            info[key] = meta[key]
    if source in ("description", "title_description"):
        active = read_active(workdir) or {}
        for key in ("model", "include_title", "prompt_name", "prompt_hash"):
            if key in active:
                info.setdefault(f"describer_{key}" if key == "model" else key, active[key])
    return info


def strategy_records(workdir: Workdir, strategies: list[StrategyConfig]) -> list[dict]:
    out = []
    for s in strategies:
        sources = {src: source_info(workdir, src) for src in (s.text, s.vision) if src}
        out.append({"name": s.name, "kind": s.kind, "text": s.text, "vision": s.vision,
                    "scoring": s.scoring, "sources": sources})
    return out


def evaluate_all(cfg: EvaluateConfig, strategies: RepresentConfig, workdir: Workdir,
                 ds: Dataset, console: Console, show_progress: bool = True) -> list[Path]:
    configured = strategies.strategies
    if not configured:
        raise ConfigError("no representations configured (represent.strategies is empty)")
    baseline = choose_baseline(cfg, configured)
    metrics = main_metrics(cfg)
    covered = covered_items(workdir, ds.n_items) if cfg.protocol == "covered" else None
    tasks: dict[str, Task] = {}
    for split in ("valid", "test"):
        history, target = split_matrices(ds, split)
        tasks[split] = make_task(cfg.protocol, split, history, target, covered,
                                 cfg.n_negatives, cfg.seed)
    if len(tasks["test"].users) == 0:
        raise StageError(f"no user has a test item to find under the {cfg.protocol!r} "
                         "protocol; nothing to evaluate")
    label = describe_protocol(tasks["test"])
    console.print(f"  protocol: {label}; {len(tasks['test'].users)} test users")
    train_popularity = ds.item_popularity(("train",))
    per_user, slices, timings = [], [], {}
    names = tqdm([s.name for s in configured], desc="representations", unit="model",
                 disable=not show_progress)
    for name in names:
        model = load_model(workdir, name)
        t0 = time.perf_counter()
        for split, task in tasks.items():
            ranking = evaluate_task(model, task, cfg.ks, cfg.block_size, show_progress,
                                    desc=f"{name} [{split}]")
            per_user.append(ranking.per_user.assign(representation=name, split=split))
            if split == "test":
                slices.append(slice_metrics(ranking, task.target, train_popularity, metrics)
                              .assign(representation=name))
        timings[name] = round(time.perf_counter() - t0, 3)

    cols = metric_columns(cfg.ks)
    per_user_df = pd.concat(per_user, ignore_index=True)
    per_user_df.insert(0, "protocol", cfg.protocol)
    lead = ["protocol", "representation", "split", "user_id", "n_targets", "n_history"]
    per_user_df = per_user_df[lead + cols]
    grouped = per_user_df.groupby(["representation", "split"], sort=False)
    summary = grouped[cols].mean().join(grouped.size().rename("n_users")).reset_index()
    summary.insert(1, "protocol", cfg.protocol)
    test_users = per_user_df[per_user_df["split"] == "test"]
    t0 = time.perf_counter()
    significance = compare_to_baseline(test_users, baseline, metrics, cfg.n_bootstrap,
                                       cfg.n_permutations, cfg.seed)
    significance.insert(0, "protocol", cfg.protocol)
    stats_seconds = time.perf_counter() - t0
    slices_df = pd.concat(slices, ignore_index=True)
    slices_df.insert(0, "protocol", cfg.protocol)
    slices_df = slices_df[["protocol", "representation", "slice", "bin", "bin_order",
                           "bin_range", "metric", "value", "ci_low", "ci_high", "n_users"]]

    out = workdir.results_dir
    paths = {
        "per_user": out / "per_user.parquet", "metrics": workdir.metrics_path,
        "metrics_valid": out / "metrics_valid.csv", "significance": out / "significance.csv",
        "slices": out / "slices.csv",
    }
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
        "n_bootstrap": cfg.n_bootstrap,
        "n_permutations": cfg.n_permutations,
        "n_users": int(ds.n_users),
        "n_items": int(ds.n_items),
        "n_users_evaluated": {split: int(len(t.users)) for split, t in tasks.items()},
        "representations": strategy_records(workdir, configured),
        "evaluate_seconds": timings,
        "statistics_seconds": round(stats_seconds, 3),
    })
    console.print(f"  baseline {baseline}; significance over {len(test_users) // len(timings)} "
                  f"users in {stats_seconds:.1f}s")
    return [*paths.values(), workdir.run_json]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "scipy", "pandas", "torch", "transformers", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
