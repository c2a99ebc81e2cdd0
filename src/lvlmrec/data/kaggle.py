"""The study's data: one folder of the Kaggle "Multimodal Recommendation System Dataset"
(the Align-MacridVAE archive), named `<Dataset>-<img>_<txt>` (DESIGN §2).

train.txt, validation.txt, test.txt   header `user,item`, 0-based ints
users.txt                             header `,0`: reviewerID, user int
items.txt                             header `,item_id`: ASIN, item int (row i is item i)
embed_image.npy, embed_text.npy       float64 (n_items, d), zero row = no feature

The archive's ints are kept as our ids and the reviewer ids / ASINs become `source_id`. The
feature arrays become dataset features named after the folder's encoders (`image_clip`,
`text_bert`, ...; `none` arrays are skipped), usable as sources `dataset:image_clip` etc.
The arrays are read in row chunks straight into float32, so only the float32 copy is held.
Every inconsistency stops with a DataError naming the file and line (or item): this data is
already filtered and split, so nothing is repaired silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.config import KaggleSource
from lvlmrec.data.amazon import join_metadata, read_metadata
from lvlmrec.data.csvdata import row_lines
from lvlmrec.data.features import feature_stats, read_features
from lvlmrec.data.images import link_images
from lvlmrec.data.schema import SPLITS, Dataset
from lvlmrec.errors import DataError

SPLIT_FILES = {"train": "train.txt", "valid": "validation.txt", "test": "test.txt"}
FEATURE_FILES = {"image": "embed_image.npy", "text": "embed_text.npy"}
FOLDER_NAME = re.compile(r"^(?P<dataset>.+)-(?P<image>[A-Za-z0-9]+)_(?P<text>[A-Za-z0-9]+)$")


# --------------------------------------------------------------------------- small readers
def read_csv_checked(path: Path, header: list[str], int_columns: list[str]) -> pd.DataFrame:
    """A CSV whose first line must be exactly `header`; `int_columns` must hold integers.
    The result has a `line` column (1-based line in the file) for error messages."""
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().lstrip("\ufeff").rstrip("\r\n")
    if first.split(",") != header:
        raise DataError(f"{path}:1: bad header {first!r}; expected {','.join(header)!r}")
    names = [c or "key" for c in header]
    try:
        df = pd.read_csv(path, header=None, skiprows=1, names=names, dtype=str,
                         keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(f"{path}: cannot parse: {err}") from None
    df["line"] = row_lines(path, len(df))
    for col in int_columns:
        values = pd.to_numeric(df[col].str.strip(), errors="coerce")
        bad = values.isna() | (values != np.floor(values)) | (values < 0)
        if bad.any():
            row = df[bad].iloc[0]
            raise DataError(f"{path}:{row['line']}: {col} {row[col]!r} is not a "
                            f"non-negative integer")
        df[col] = values.astype(np.int64)
    return df


def ids_in_order(df: pd.DataFrame, col: str, path: Path) -> pd.DataFrame:
    """Rows sorted by `col`, which must hold each of 0..n-1 exactly once."""
    dup = df[col].duplicated(keep=False)
    if dup.any():
        rows = df[dup & (df[col] == df.loc[dup, col].iloc[0])]
        raise DataError(f"{path}: id {rows[col].iloc[0]} appears twice "
                        f"(lines {rows['line'].iloc[0]} and {rows['line'].iloc[1]})")
    n = len(df)
    bad = df[df[col] >= n]
    if len(bad):
        raise DataError(f"{path}:{bad['line'].iloc[0]}: id {bad[col].iloc[0]} is out of range: "
                        f"{n} rows must hold ids 0..{n - 1}")
    return df.sort_values(col, ignore_index=True)


def unique_keys(df: pd.DataFrame, path: Path, what: str) -> None:
    dup = df["key"].duplicated(keep=False)
    if dup.any():
        rows = df[dup & (df["key"] == df.loc[dup, "key"].iloc[0])]
        raise DataError(f"{path}: {what} {rows['key'].iloc[0]!r} appears twice "
                        f"(lines {rows['line'].iloc[0]} and {rows['line'].iloc[1]})")
    empty = df["key"].str.strip() == ""
    if empty.any():
        raise DataError(f"{path}:{df.loc[empty, 'line'].iloc[0]}: empty {what}")


def feature_names(folder: Path) -> dict[str, str | None]:
    """Dataset feature name per modality from the folder's `<Dataset>-<img>_<txt>` name
    (None for an encoder called `none`); plain `image`/`text` for other folder names."""
    m = FOLDER_NAME.match(folder.name)
    if m is None:
        return {"image": "image", "text": "text"}
    return {mod: None if m[mod].lower() == "none" else f"{mod}_{m[mod].lower()}"
            for mod in FEATURE_FILES}


# --------------------------------------------------------------------------- loader
def read_interactions(folder: Path, n_users: int, n_items: int) -> pd.DataFrame:
    """The three split files, checked: ids in range, no empty split, no duplicate pair."""
    parts = []
    for split, name in SPLIT_FILES.items():
        path = folder / name
        df = read_csv_checked(path, ["user", "item"], ["user", "item"])
        if df.empty:
            raise DataError(f"{path}: no interactions (the {split!r} split is empty)")
        for col, n, ref in (("user", n_users, "users.txt"), ("item", n_items, "items.txt")):
            bad = df[df[col] >= n]
            if len(bad):
                raise DataError(f"{path}:{bad['line'].iloc[0]}: {col} {bad[col].iloc[0]} is out "
                                f"of range: {ref} lists {n} ids (0..{n - 1})")
        df["split"], df["file"] = split, name
        parts.append(df)
    inter = pd.concat(parts, ignore_index=True)
    dup = inter.duplicated(["user", "item"], keep=False)
    if dup.any():
        first = inter[dup].iloc[0]
        both = inter[dup & (inter["user"] == first["user"]) & (inter["item"] == first["item"])]
        where = " and ".join(f"{r.file}:{r.line}" for r in both.itertuples())
        raise DataError(f"duplicate interaction (user {first['user']}, item {first['item']}) "
                        f"at {where}")
    return inter


def load_kaggle(source: KaggleSource, show_progress: bool = True) -> Dataset:
    folder = Path(source.source)
    if not folder.is_dir():
        raise DataError(f"Kaggle dataset folder not found: {folder}")
    users_path, items_path = folder / "users.txt", folder / "items.txt"
    users = ids_in_order(read_csv_checked(users_path, ["", "0"], ["0"]), "0", users_path)
    unique_keys(users, users_path, "reviewer id")
    items = ids_in_order(read_csv_checked(items_path, ["", "item_id"], ["item_id"]), "item_id",
                         items_path)
    unique_keys(items, items_path, "ASIN")
    n_users, n_items = len(users), len(items)
    if not n_items:
        raise DataError(f"{items_path}: no items")

    inter = read_interactions(folder, n_users, n_items)
    has_train = np.zeros(n_users, dtype=bool)
    has_train[inter.loc[inter["split"] == "train", "user"].to_numpy()] = True
    cold = inter[~has_train[inter["user"].to_numpy()]]
    if len(cold):
        row = cold.iloc[0]
        n_cold = cold["user"].nunique()
        raise DataError(f"{row['file']}:{row['line']}: user {row['user']} "
                        f"({users['key'].iloc[row['user']]}) has no interactions in train.txt; "
                        f"{n_cold} users have validation/test interactions but no training history")

    features: dict[str, np.ndarray] = {}
    feature_info: dict[str, dict[str, Any]] = {}
    for modality, name in feature_names(folder).items():
        if name is None:
            continue
        path = folder / FEATURE_FILES[modality]
        arr = read_features(path, n_items, "items.txt lists")
        features[name] = arr
        feature_info[name] = {"origin": "kaggle", "file": path.name, "modality": modality,
                              "encoder": name.split("_", 1)[1] if "_" in name else None,
                              **feature_stats(arr)}

    item_table = pd.DataFrame({"item_id": np.arange(n_items), "source_id": items["key"],
                               "title": "", "text": "", "image_path": ""})
    info: dict[str, Any] = {"format": "kaggle", "folder": folder.name}
    m = FOLDER_NAME.match(folder.name)
    if m is not None:
        info.update(dataset=m["dataset"], image_encoder=m["image"], text_encoder=m["text"])
    if source.metadata is not None:
        meta = read_metadata(source.metadata, "amazon2018", set(items["key"]), show_progress)
        item_table = join_metadata(item_table, meta)
        info["metadata"] = {"n_items_matched": int(len(meta)),
                            "n_items_without_metadata": int(n_items - len(meta))}
    if source.images is not None:
        item_table["image_path"] = link_images(item_table, source.images,
                                               by=("item_id", "source_id"))
    interactions = pd.DataFrame({"user_id": inter["user"].to_numpy(),
                                 "item_id": inter["item"].to_numpy(),
                                 "split": inter["split"].to_numpy()})
    user_table = pd.DataFrame({"user_id": np.arange(n_users), "source_id": users["key"]})
    info["read"] = {f"n_{s}": int((inter["split"] == s).sum()) for s in SPLITS}
    ds = Dataset(item_table, interactions, user_table, info, features, feature_info)
    ds.validate(f"Kaggle dataset {folder}")
    return ds


# --------------------------------------------------------------------------- writing
def write_archive(folder: Path, user_keys: list[str], item_keys: list[str],
                  interactions: pd.DataFrame, features: dict[str, np.ndarray]) -> Path:
    """Write a folder in the archive's exact layout: `interactions` has user, item, split
    columns; `features` maps "image"/"text" to (n_items, d) arrays. Tests and
    benchmarks/prepare_speed.py build archives with it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in SPLIT_FILES.items():
        part = interactions.loc[interactions["split"] == split, ["user", "item"]]
        part.to_csv(folder / name, index=False)
    for path, header, keys in ((folder / "users.txt", ",0", user_keys),
                               (folder / "items.txt", ",item_id", item_keys)):
        path.write_text(header + "\n" + "".join(f"{k},{i}\n" for i, k in enumerate(keys)))
    for modality, array in features.items():
        np.save(folder / FEATURE_FILES[modality], array)
    return folder


def random_archive(folder: Path, n_users: int, n_items: int, n_interactions: int,
                   dim: int = 768, seed: int = 0, missing_rate: float = 0.05) -> Path:
    """An archive-shaped folder of random data (popularity-skewed items, per-user random
    60/20/20 split, float64 features with `missing_rate` zero rows)."""
    from lvlmrec.data.schema import random_split

    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.5, n_items) + 1
    per_user = 3 + rng.poisson(max(n_interactions / n_users - 3, 0), n_users)
    user = np.repeat(np.arange(n_users), per_user)
    item = rng.choice(n_items, size=len(user), p=popularity / popularity.sum())
    inter = pd.DataFrame({"user": user, "item": item}).drop_duplicates(ignore_index=True)
    inter["split"] = random_split(inter["user"].to_numpy(), seed)
    counts = inter.groupby("user")["split"].nunique()
    inter = inter[inter["user"].isin(counts.index[counts == 3])]
    folder = write_archive(folder, [f"U{u:08d}" for u in range(n_users)],
                           [f"B{i:09d}" for i in range(n_items)], inter, {})
    for modality in FEATURE_FILES:
        array = np.lib.format.open_memmap(folder / FEATURE_FILES[modality], mode="w+",
                                          dtype=np.float64, shape=(n_items, dim))
        for start in range(0, n_items, 4096):
            block = rng.standard_normal((min(4096, n_items - start), dim))
            block[rng.random(len(block)) < missing_rate] = 0.0
            array[start:start + len(block)] = block
        array.flush()
        del array
    return folder
