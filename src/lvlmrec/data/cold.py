"""Item cold start in the data: catalog items without interactions, and cold-item splits.

An LVLM description exists as soon as a product photo does, before anyone bought the item.
Two things let the toolkit measure that case (docs/data.md, docs/evaluation.md):

* The catalog as given: every item of the items table stays an item, with or without
  interactions (`n_items_without_interactions` in dataset.json); the option
  `drop_items_without_interactions` removes them again and is recorded as a filter step.
* Cold-item splits of a raw log: a set of items loses *all* its interactions to the
  held-out splits, half of the set to valid and half to test, so no model sees them in
  training; users keep their training history of the other (warm) items.
  `cold_items` picks the set at random (seeded); `cold_items_temporal` takes the items
  first seen last (the newest items: the earlier half valid, the later half test).
  Users left without training history are dropped and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.errors import ConfigError, DataError

COLD_SPLITS = ("cold_items", "cold_items_temporal")


def _cold_counts(n_items: int, fraction: float) -> tuple[int, int]:
    """(n cold-valid, n cold-test) items out of `n_items` items with interactions."""
    if not 0 < fraction <= 0.9:
        raise DataError(f"cold_fraction must be in (0, 0.9], got {fraction}")
    n_cold = max(2, int(round(fraction * n_items)))
    if n_items < 3 or n_cold >= n_items:
        raise DataError(f"a cold-item split of {n_items} items with interactions at "
                        f"cold_fraction {fraction} leaves no warm item to train on")
    return n_cold // 2, n_cold - n_cold // 2


def _labels(item: np.ndarray, valid_items: np.ndarray, test_items: np.ndarray) -> np.ndarray:
    out = np.full(len(item), "train", dtype=object)
    out[np.isin(item, valid_items)] = "valid"
    out[np.isin(item, test_items)] = "test"
    return out


def cold_item_split(item: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Split labels per row: a seeded random `fraction` of the items that have rows is cold,
    the first half of that draw cold-valid, the rest cold-test; every other row is train."""
    items = np.unique(item)
    n_valid, n_test = _cold_counts(len(items), fraction)
    chosen = np.random.default_rng(seed).permutation(items)[:n_valid + n_test]
    return _labels(item, chosen[:n_valid], chosen[n_valid:])


def cold_item_temporal_split(item: np.ndarray, timestamp: np.ndarray,
                             fraction: float) -> np.ndarray:
    """Split labels per row: the `fraction` of items first seen last are cold (ties by item
    code); the earlier half of them cold-valid, the later half cold-test."""
    first = pd.Series(np.asarray(timestamp)).groupby(np.asarray(item)).min()
    items = first.index.to_numpy()
    order = np.lexsort((items, first.to_numpy()))
    n_valid, n_test = _cold_counts(len(items), fraction)
    newest = items[order][len(items) - n_valid - n_test:]
    return _labels(item, newest[:n_valid], newest[n_valid:])


def cold_split_frame(interactions: pd.DataFrame, users: pd.DataFrame, fraction: float,
                     seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """`cold_items` on an in-memory dataset (the synthetic catalog): relabel the split,
    drop users left without training history and renumber the rest. Returns the new
    interactions, users and the filter steps (for dataset.json)."""
    before = _counts(interactions)
    split = cold_item_split(interactions["item_id"].to_numpy(), fraction, seed)
    inter = interactions.assign(split=split)
    has_train = np.zeros(len(users), dtype=bool)
    has_train[inter.loc[inter["split"] == "train", "user_id"].to_numpy()] = True
    kept_users = np.flatnonzero(has_train)
    inter = inter[has_train[inter["user_id"].to_numpy()]].reset_index(drop=True)
    new_id = np.full(len(users), -1, dtype=np.int64)
    new_id[kept_users] = np.arange(len(kept_users))
    inter["user_id"] = new_id[inter["user_id"].to_numpy()]
    users = users.iloc[kept_users].reset_index(drop=True).assign(
        user_id=np.arange(len(kept_users)))
    steps = [{"step": "split", "method": "cold_items", "seed": seed, "cold_fraction": fraction},
             {"step": "drop_eval_without_train",
              "n_users_dropped": int(len(np.unique(interactions["user_id"])) - len(kept_users)),
              "before": before, "after": _counts(inter)}]
    return inter, users, steps


def _counts(inter: pd.DataFrame) -> dict[str, int]:
    return {"n_interactions": int(len(inter)), "n_users": int(inter["user_id"].nunique()),
            "n_items": int(inter["item_id"].nunique())}


def drop_items_without_interactions(ds):
    """The dataset without its catalog items that have no interaction (renumbered, features
    sliced), and the filter step recording it. `ds` is a `schema.Dataset`."""
    used = np.unique(ds.interactions["item_id"].to_numpy())
    before = {"n_interactions": int(len(ds.interactions)),
              "n_users": int(ds.interactions["user_id"].nunique()), "n_items": int(ds.n_items)}
    step = {"step": "drop_items_without_interactions",
            "n_items_dropped": int(ds.n_items - len(used)), "before": before,
            "after": {**before, "n_items": int(len(used))}}
    if len(used) == ds.n_items:
        return ds, step
    new_id = np.full(ds.n_items, -1, dtype=np.int64)
    new_id[used] = np.arange(len(used))
    items = ds.items.iloc[used].reset_index(drop=True)
    items["item_id"] = np.arange(len(used))
    inter = ds.interactions.copy()
    inter["item_id"] = new_id[inter["item_id"].to_numpy()]
    features = {name: np.ascontiguousarray(arr[used]) for name, arr in ds.features.items()}
    return dataclasses.replace(ds, items=items, interactions=inter, features=features), step


def cold_counts(interactions: pd.DataFrame, n_items: int) -> dict[str, int]:
    """Catalog items without any interaction, items without a training interaction, and
    cold test items (test targets nobody interacted with in train or valid)."""
    split = interactions["split"].to_numpy()
    item = interactions["item_id"].to_numpy()
    seen = np.zeros(n_items, dtype=bool)
    seen[item] = True
    in_train = np.zeros(n_items, dtype=bool)
    in_train[item[split == "train"]] = True
    in_history = in_train.copy()
    in_history[item[split == "valid"]] = True
    in_test = np.zeros(n_items, dtype=bool)
    in_test[item[split == "test"]] = True
    return {"n_items_without_interactions": int((~seen).sum()),
            "n_items_without_training": int((~in_train).sum()),
            "n_cold_test_items": int((in_test & ~in_history).sum())}


def check_split_options(source: dict[str, Any]) -> None:
    """Options of a dataset source (a config mapping) that no loader could honour, as one
    clear error before any work: a cold split of data that comes already split, or a cold
    fraction outside (0, 0.9]. The typed config checks the same; this names the options."""
    fmt, split = source.get("format"), source.get("split")
    fraction = source.get("cold_fraction")
    if fraction is not None and not (isinstance(fraction, (int, float))
                                     and 0 < fraction <= 0.9):
        raise ConfigError(f"--cold-fraction {fraction}: must be in (0, 0.9] (the share of "
                          f"items held out, half for valid and half for test)")
    if isinstance(split, str) and split in COLD_SPLITS:
        if fmt in ("kaggle", "mmrec", "prepared") or source.get("split_col"):
            what = f"the {fmt} format" if fmt in ("kaggle", "mmrec", "prepared") \
                else f"split_col {source['split_col']!r}"
            raise ConfigError(f"--split {split}: {what} gives data already split into "
                              f"train/valid/test; a cold split needs a raw interaction log "
                              f"(csv without a split column, amazon2018/2023, synthetic)")
        if fmt == "synthetic" and split != "cold_items":
            raise ConfigError(f"--split {split}: the synthetic catalog has no timestamps; "
                              f"use cold_items")
