"""The evaluate stage: every representation, every user, the same candidates and masks.

Validation (history = train) is what selection and early stopping may look at; test
(history = train + valid) is only reported. Per-user values are kept for statistics.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from lvlmrec import __version__
from lvlmrec.config import EvaluateConfig, RepresentConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.evaluate.ranking import METRICS, evaluate_model
from lvlmrec.represent.fit import load_model
from lvlmrec.workdir import Workdir, write_csv, write_json, write_parquet


def split_matrices(ds: Dataset, split: str):
    """(history, target) for a split: validation masks train; test masks train + valid."""
    if split == "valid":
        return ds.matrix(("train",)), ds.matrix(("valid",))
    return ds.matrix(("train", "valid")), ds.matrix(("test",))


def metric_columns(ks) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in METRICS]


def evaluate_all(cfg: EvaluateConfig, strategies: RepresentConfig, workdir: Workdir,
                 ds: Dataset, console: Console, show_progress: bool = True) -> list[Path]:
    names = [s.name for s in strategies.strategies]
    if not names:
        raise ValueError("no representations configured (represent.strategies is empty)")
    users = np.arange(ds.n_users)
    per_user = []
    timings = {}
    matrices = {split: split_matrices(ds, split) for split in ("valid", "test")}
    for name in names:
        model = load_model(workdir, name)
        t0 = time.perf_counter()
        for split, (history, target) in matrices.items():
            frame = evaluate_model(model, users, history, target, ks=cfg.ks,
                                   block_size=cfg.block_size, show_progress=show_progress,
                                   desc=f"{name} [{split}]")
            frame.insert(0, "split", split)
            frame.insert(0, "representation", name)
            per_user.append(frame)
        timings[name] = round(time.perf_counter() - t0, 3)
    per_user_df = pd.concat(per_user, ignore_index=True)
    cols = metric_columns(cfg.ks)
    summary = (per_user_df.groupby(["representation", "split"], sort=False)[cols].mean()
               .join(per_user_df.groupby(["representation", "split"], sort=False).size()
                     .rename("n_users"))
               .reset_index())
    test = summary[summary["split"] == "test"].drop(columns="split")
    valid = summary[summary["split"] == "valid"].drop(columns="split")
    out = workdir.results_dir
    write_parquet(out / "per_user.parquet", per_user_df)
    write_csv(out / "metrics.csv", test)
    write_csv(out / "metrics_valid.csv", valid)
    write_json(workdir.run_json, {
        "lvlmrec": __version__,
        "python": platform.python_version(),
        "versions": _versions(),
        "protocol": cfg.protocol,
        "ks": cfg.ks,
        "seed": cfg.seed,
        "n_users": int(ds.n_users),
        "n_items": int(ds.n_items),
        "evaluate_seconds": timings,
    })
    return [out / "per_user.parquet", out / "metrics.csv", out / "metrics_valid.csv",
            workdir.run_json]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "scipy", "pandas", "torch", "transformers", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
