"""The prepared dataset every later stage reads (DESIGN §1).

items.parquet         item_id (0..n-1, row i is item i), source_id, title, text, image_path,
                      plus any extra columns a loader keeps (brand, category, image_url, ...)
interactions.parquet  user_id (0..m-1), item_id, split in {train, valid, test}
                      (optional rating, timestamp)
users.parquet         user_id, source_id
dataset.json          provenance and counts
features/<name>.npy   embeddings that came with the dataset (+ <name>.json)

Loaders build a `Dataset` in memory, call `validate()`, then `save()`; nothing is written
when validation fails, and every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lvlmrec.data.cold import cold_counts
from lvlmrec.errors import DataError
from lvlmrec.workdir import ContentHasher, Workdir, read_json, save_npy, write_json, write_parquet

SPLITS = ("train", "valid", "test")
ITEM_COLUMNS = ("item_id", "source_id", "title", "text", "image_path")


@dataclasses.dataclass
class Dataset:
    items: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # name -> (n_items, d) array, row = item id; zero rows mean "no feature"
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    feature_info: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    # ------------------------------------------------------------------ views
    def split(self, name: str) -> pd.DataFrame:
        return self.interactions[self.interactions["split"] == name]

    def matrix(self, splits: tuple[str, ...] | str = ("train",)) -> sp.csr_matrix:
        """Binary users x items matrix of the given splits (duplicates collapse to 1)."""
        if isinstance(splits, str):
            splits = (splits,)
        df = self.interactions[self.interactions["split"].isin(splits)]
        return interaction_matrix(
            df["user_id"].to_numpy(), df["item_id"].to_numpy(), self.n_users, self.n_items
        )

    @property
    def has_order(self) -> bool:
        """Do interactions carry a timestamp (what sequential models need)?"""
        return "timestamp" in self.interactions.columns

    def order_matrix(self, splits: tuple[str, ...] | str = ("train",)) -> sp.csr_matrix | None:
        """Users x items positions 1..n of each user's items in time order within `splits`
        (ties by the interactions table's row order; a repeated item keeps its latest
        position), with the same non-zeros as `matrix(splits)`; None without timestamps."""
        if not self.has_order:
            return None
        if isinstance(splits, str):
            splits = (splits,)
        df = self.interactions[self.interactions["split"].isin(splits)]
        return order_matrix(df["user_id"].to_numpy(), df["item_id"].to_numpy(),
                            df["timestamp"].to_numpy(), self.n_users, self.n_items)

    def item_popularity(self, splits: tuple[str, ...] = ("train",)) -> np.ndarray:
        return np.asarray(self.matrix(splits).sum(axis=0)).ravel()

    def counts(self) -> dict[str, Any]:
        per_split = self.interactions["split"].value_counts()
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": int(len(self.interactions)),
            **{f"n_{s}": int(per_split.get(s, 0)) for s in SPLITS},
            "n_items_with_image": int((self.items["image_path"].astype(str) != "").sum()),
            "n_items_with_title": int((self.items["title"].astype(str) != "").sum()),
            "n_items_with_text": int((self.items["text"].astype(str) != "").sum()),
            **cold_counts(self.interactions, self.n_items),
        }

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "dataset") -> None:
        """Raise DataError naming what is wrong; called before anything is saved."""
        items, inter, users = self.items, self.interactions, self.users
        for col in ITEM_COLUMNS:
            if col not in items.columns:
                raise DataError(f"{where}: items table has no column {col!r}")
        for col in ("user_id", "item_id", "split"):
            if col not in inter.columns:
                raise DataError(f"{where}: interactions table has no column {col!r}")
        if len(items) == 0:
            raise DataError(f"{where}: no items")
        if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
            raise DataError(f"{where}: item_id must be 0..n_items-1 in row order")
        if not np.array_equal(users["user_id"].to_numpy(), np.arange(len(users))):
            raise DataError(f"{where}: user_id must be 0..n_users-1 in row order")
        uid = inter["user_id"].to_numpy()
        iid = inter["item_id"].to_numpy()
        bad_u = np.flatnonzero((uid < 0) | (uid >= len(users)))
        if len(bad_u):
            raise DataError(
                f"{where}: interaction row {bad_u[0]} has user_id {uid[bad_u[0]]} "
                f"outside 0..{len(users) - 1}"
            )
        bad_i = np.flatnonzero((iid < 0) | (iid >= len(items)))
        if len(bad_i):
            raise DataError(
                f"{where}: interaction row {bad_i[0]} has item_id {iid[bad_i[0]]} "
                f"outside 0..{len(items) - 1}"
            )
        bad_split = ~inter["split"].isin(SPLITS)
        if bad_split.any():
            row = int(np.flatnonzero(bad_split.to_numpy())[0])
            raise DataError(
                f"{where}: interaction row {row} has split {inter['split'].iloc[row]!r}; "
                f"expected one of {SPLITS}"
            )
        for s in SPLITS:
            if not (inter["split"] == s).any():
                raise DataError(f"{where}: the {s!r} split is empty")
        dup = inter.duplicated(["user_id", "item_id"])
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise DataError(
                f"{where}: duplicate interaction (user {uid[row]}, item {iid[row]}) at row {row}"
            )
        has_train = np.zeros(len(users), dtype=bool)
        has_train[inter.loc[inter["split"] == "train", "user_id"].to_numpy()] = True
        evaluated = np.unique(inter.loc[inter["split"] != "train", "user_id"].to_numpy())
        no_train = evaluated[~has_train[evaluated]]
        if len(no_train):
            first = no_train[0]
            sid = f" ({users['source_id'].iloc[first]})" if "source_id" in users else ""
            raise DataError(
                f"{where}: {len(no_train)} users have validation/test interactions but no "
                f"training history (first: user {first}{sid})"
            )
        for name, arr in self.features.items():
            if arr.ndim != 2 or arr.shape[0] != len(items):
                raise DataError(
                    f"{where}: feature {name!r} has shape {arr.shape}; expected "
                    f"({len(items)}, d), one row per item"
                )

    # ------------------------------------------------------------------ io
    def save(self, workdir: Workdir, provenance: dict[str, Any] | None = None) -> list[Path]:
        self.validate()
        info = dict(self.info)
        info.update(provenance or {})
        info["counts"] = self.counts()
        info["features"] = {
            name: {"dim": int(arr.shape[1]), **self.feature_info.get(name, {})}
            for name, arr in self.features.items()
        }
        info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        out = [workdir.items_path, workdir.interactions_path, workdir.users_path]
        items = self.items.copy()
        for col in ("source_id", "title", "text", "image_path"):
            items[col] = items[col].fillna("").astype(str)
        inter = self.interactions.copy()
        inter["user_id"] = inter["user_id"].astype(np.int64)
        inter["item_id"] = inter["item_id"].astype(np.int64)
        inter["split"] = inter["split"].astype(str)
        users = self.users.copy()
        users["source_id"] = users["source_id"].astype(str)
        write_parquet(workdir.items_path, items)
        write_parquet(workdir.interactions_path, inter)
        write_parquet(workdir.users_path, users)
        stale = set(workdir.features_dir.glob("*.npy")) if workdir.features_dir.exists() else set()
        for name, arr in self.features.items():
            path = workdir.features_dir / f"{name}.npy"
            save_npy(path, arr)
            write_json(path.with_suffix(".json"), {"name": name, "dim": int(arr.shape[1]),
                                                   **self.feature_info.get(name, {})})
            stale.discard(path)
            out.append(path)
        for path in stale:
            path.unlink()
            path.with_suffix(".json").unlink(missing_ok=True)
        write_json(workdir.dataset_json, info)
        out.append(workdir.dataset_json)
        return out

    @classmethod
    def load(cls, workdir: Workdir, features: bool = True) -> Dataset:
        for path in (workdir.items_path, workdir.interactions_path, workdir.users_path):
            if not path.is_file():
                raise DataError(
                    f"missing {path}: prepare a dataset first "
                    f"(lvlmrec prepare --workdir {workdir.root} ...)"
                )
        items = pd.read_parquet(workdir.items_path)
        inter = pd.read_parquet(workdir.interactions_path)
        users = pd.read_parquet(workdir.users_path)
        info = read_json(workdir.dataset_json) if workdir.dataset_json.is_file() else {}
        feats: dict[str, np.ndarray] = {}
        feat_info: dict[str, dict[str, Any]] = {}
        if features and workdir.features_dir.is_dir():
            for path in sorted(workdir.features_dir.glob("*.npy")):
                feats[path.stem] = np.load(path, mmap_mode="r")
                meta = path.with_suffix(".json")
                feat_info[path.stem] = read_json(meta) if meta.is_file() else {}
        return cls(items, inter, users, info, feats, feat_info)

    def image_paths(self, workdir: Workdir) -> list[Path | None]:
        """Absolute image path per item (None where the item has no image)."""
        out: list[Path | None] = []
        for p in self.items["image_path"].astype(str):
            out.append(workdir.resolve(p) if p else None)
        return out


def dataset_digest(workdir: Workdir, hasher: ContentHasher | None = None) -> str:
    """Content hash of the dataset tables, features and every item's image bytes: what
    downstream stages depend on, however the dataset was produced. An image edited in place
    changes it; a copied or moved workdir does not."""
    from lvlmrec.workdir import hash_obj

    hasher = hasher or ContentHasher(workdir)
    files = [workdir.items_path, workdir.interactions_path, workdir.users_path]
    if workdir.features_dir.is_dir():
        files += sorted(workdir.features_dir.glob("*.npy"))
    tables = {p.name: hasher.file(p) for p in files}
    items = pd.read_parquet(workdir.items_path, columns=["image_path"])
    images = image_hashes(items["image_path"], workdir, hasher)
    return hash_obj({"tables": tables, "images": hash_obj(images)})


def image_hashes(image_paths, workdir: Workdir, hasher: ContentHasher | None = None) -> list[str]:
    """Content hash of each item's image ("" without one, "missing" when its file is gone),
    aligned with item ids: the key of per-item caches of what an image gives (descriptions,
    image embeddings), so an image edited in place is described and encoded again."""
    hasher = hasher or ContentHasher(workdir)
    out = []
    for p in pd.Series(image_paths).fillna("").astype(str):
        if not p:
            out.append("")
            continue
        try:
            out.append(hasher.file(p if os.path.isabs(p) else os.path.join(workdir.root, p)))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            out.append("missing")
    return out


def interaction_matrix(
    user_ids: np.ndarray, item_ids: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    data = np.ones(len(user_ids), dtype=np.float32)
    m = sp.csr_matrix(
        (data, (np.asarray(user_ids, dtype=np.int64), np.asarray(item_ids, dtype=np.int64))),
        shape=(n_users, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def order_matrix(user_ids: np.ndarray, item_ids: np.ndarray, timestamps: np.ndarray,
                 n_users: int, n_items: int) -> sp.csr_matrix:
    """Positions 1..n (float32) of each user's distinct items by (timestamp, row order)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(user_ids)
    order = np.lexsort((np.arange(n), np.asarray(timestamps), user_ids))
    u, i = user_ids[order], item_ids[order]
    # a repeated (user, item) keeps its last occurrence
    key = u * max(n_items, 1) + i
    _, last_from_end = np.unique(key[::-1], return_index=True)
    keep = np.sort(n - 1 - last_from_end)
    u, i = u[keep], i[keep]
    start = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1] if len(u) else np.zeros(0, int)
    sizes = np.diff(np.r_[start, len(u)])
    pos = np.arange(len(u)) - np.repeat(start, sizes) + 1
    return sp.csr_matrix((pos.astype(np.float32), (u, i)), shape=(n_users, n_items))


def random_split(
    user_ids: np.ndarray, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> np.ndarray:
    """Per-user random split like the study's data; every user with >= 3 rows gets all three.

    Returns an array of split names aligned with `user_ids`.
    """
    rng = np.random.default_rng(seed)
    user_ids = np.asarray(user_ids)
    out = np.empty(len(user_ids), dtype=object)
    order = np.argsort(user_ids, kind="stable")
    bounds = np.flatnonzero(np.diff(user_ids[order])) + 1
    for rows in np.split(order, bounds):
        n = len(rows)
        rows = rows[rng.permutation(n)]
        if n >= 3:
            n_test = max(1, int(round(n * fractions[2])))
            n_valid = max(1, int(round(n * fractions[1])))
            n_train = n - n_test - n_valid
            if n_train < 1:
                n_train, n_valid, n_test = 1, 1, n - 2
        else:
            n_train, n_valid, n_test = n, 0, 0
        out[rows[:n_train]] = "train"
        out[rows[n_train:n_train + n_valid]] = "valid"
        out[rows[n_train + n_valid:]] = "test"
    return out
