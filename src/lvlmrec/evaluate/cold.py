"""Item cold start in evaluation: the checks and the "n/a" rows of the cold protocols.

Under `cold` and `cold_all` (evaluate/protocols.py) the targets are items nobody had
interacted with before. A model that cannot score an item it never saw in training
(`Recommender.scores_unseen_items` False: ID-based CF, ItemKNN, popularity) would rank
them on noise or zeros; it is not ranked at all, and every table marks it
`n/a — needs interactions` instead of reporting a number.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.errors import ConfigError
from lvlmrec.workdir import Workdir, read_json

NA_NOTE = "n/a — needs interactions"
COLD_PROTOCOLS = ("cold", "cold_all")


def check_protocol(protocol: str, interactions: pd.DataFrame, n_items: int) -> None:
    """A cold protocol on a dataset without cold test items is an error, raised before
    any ranking (and by `check_config` before any stage)."""
    if protocol not in COLD_PROTOCOLS:
        return
    from lvlmrec.data.cold import cold_counts

    if cold_counts(interactions, n_items)["n_cold_test_items"] == 0:
        _no_cold_items(protocol)


def _no_cold_items(protocol: str) -> None:
    raise ConfigError(f"evaluate.protocol: {protocol!r} needs cold test items (test items "
                      f"with no training or validation interaction) and this dataset has "
                      f"none; prepare it with a cold split (--split cold_items)")


def check_config(config, workdir: Workdir | None = None) -> None:
    """Up-front check of a run config (called before the first stage): a cold protocol
    needs a cold split in the configured source, or, for data that comes already split,
    cold test items in the dataset already prepared in `workdir` (else the evaluate stage
    checks it before ranking)."""
    from lvlmrec.data.cold import COLD_SPLITS

    protocol = config.evaluate.protocol
    if protocol not in COLD_PROTOCOLS:
        return
    split = getattr(config.dataset, "split", None)
    if split is not None:
        if split not in COLD_SPLITS:
            raise ConfigError(f"evaluate.protocol: {protocol!r} needs cold test items, but "
                              f"dataset.split is {split!r}; use split: cold_items (or "
                              f"cold_items_temporal)")
        return
    if config.dataset.format == "prepared" and workdir is not None \
            and workdir.interactions_path.is_file():
        counts = read_json(workdir.dataset_json).get("counts", {}) \
            if workdir.dataset_json.is_file() else {}
        if "n_cold_test_items" in counts:
            if counts["n_cold_test_items"] == 0:
                _no_cold_items(protocol)
            return
        inter = pd.read_parquet(workdir.interactions_path, columns=["item_id", "split"])
        check_protocol(protocol, inter, int(inter["item_id"].max()) + 1)


def model_class(workdir: Workdir, name: str) -> type:
    """The class of a fitted model, from its model.json (as `Recommender.load` resolves it)."""
    meta = json.loads((workdir.model_dir(name) / "model.json").read_text())
    module, _, qual = meta["class"].rpartition(".")
    return getattr(importlib.import_module(module), qual)


def needs_interactions(workdir: Workdir, names: list[str], protocol: str) -> list[str]:
    """The representations left unranked under `protocol` (none outside the cold ones)."""
    if protocol not in COLD_PROTOCOLS:
        return []
    return [n for n in names
            if not getattr(model_class(workdir, n), "scores_unseen_items", False)]


def na_rows(names: list[str], columns: list[str], protocol: str) -> pd.DataFrame:
    """metrics.csv rows for unranked representations: no number, the note says why."""
    rows: list[dict[str, Any]] = [{"representation": n, "protocol": protocol,
                                   **{c: np.nan for c in columns}, "n_users": 0,
                                   "note": NA_NOTE} for n in names]
    return pd.DataFrame(rows)


def mark_na(table: pd.DataFrame, metric_columns: list[str]) -> pd.DataFrame:
    """A display copy of a metrics table: the metric cells of rows with a note read "n/a"
    (the note column says why), never a zero or NaN."""
    if "note" not in table:
        return table
    out = table.astype({c: object for c in metric_columns if c in table})
    out["note"] = out["note"].fillna("").astype(str)
    noted = out["note"] != ""
    for col in metric_columns:
        if col in out:
            out.loc[noted, col] = "n/a"
    return out
