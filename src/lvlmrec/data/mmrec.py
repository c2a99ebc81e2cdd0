"""MMRec's dataset format, both ways (DESIGN §2), so its models can run on our embeddings.

A folder holds `<name>.inter` (tab-separated, header `userID itemID rating timestamp
x_label`; x_label 0 train, 1 valid, 2 test), `image_feat.npy` and `text_feat.npy` (row =
itemID) and optionally `i_id_mapping.csv` (`asin itemID`) and `u_id_mapping.csv`
(`user_id userID`), tab- or comma-separated.

Import keeps MMRec's ids as ours and the mapped originals as `source_id`; the feature arrays
become dataset features `image_feat` / `text_feat`. Like MMRec (filter_out_cod_start_users),
valid/test rows of users without a train row are dropped; the count is recorded.

Export writes the same files from a prepared workdir, with any two embedding sources as the
features (e.g. the LVLM descriptions encoded by all-MiniLM-L6-v2 as text_feat), plus the
dataset config MMRec reads (`<name>.yaml`, for `src/configs/dataset/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.config import MMRecSource
from lvlmrec.data.csvdata import csv_header, first_bad, read_table
from lvlmrec.data.features import feature_stats, npy_rows, read_features
from lvlmrec.data.filters import drop_eval_without_train
from lvlmrec.data.images import link_images
from lvlmrec.data.schema import SPLITS, Dataset
from lvlmrec.errors import DataError
from lvlmrec.workdir import Workdir, atomic_path, save_npy, write_text

FEATURE_FILES = {"image_feat": "image_feat.npy", "text_feat": "text_feat.npy"}
MAPPINGS = {"item": ("i_id_mapping.csv", "itemID", "asin"),
            "user": ("u_id_mapping.csv", "userID", "user_id")}
LABELS = {0: "train", 1: "valid", 2: "test"}


def find_inter_file(folder: Path, name: str | None) -> Path:
    if not folder.is_dir():
        raise DataError(f"MMRec dataset folder not found: {folder}")
    if name is not None:
        path = folder / f"{name}.inter"
        if not path.is_file():
            raise DataError(f"missing file: {path}")
        return path
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{folder}: expected one <name>.inter file, found {len(found)} "
                        f"({names}); pass the dataset name")
    return found[0]


def _ints(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[col].str.strip(), errors="coerce")
    row = first_bad(df, values.isna() | (values < 0) | (values != np.floor(values)))
    if row is not None:
        raise DataError(f"{path}:{row['line']}: {col} {row[col]!r} is not a non-negative integer")
    return values.to_numpy().astype(np.int64)


def read_mapping(folder: Path, kind: str) -> pd.Series | None:
    """Original id per MMRec id from `i_id_mapping.csv` / `u_id_mapping.csv` (None if absent)."""
    filename, id_col, _ = MAPPINGS[kind]
    path = folder / filename
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        sep = "\t" if "\t" in fh.readline() else ","
    header = csv_header(path, sep)
    others = [c for c in header if c != id_col]
    if id_col not in header or len(others) != 1:
        raise DataError(f"{path}: expected two columns, {id_col!r} and the original id; "
                        f"got {header}")
    df = read_table(path, [others[0], id_col], sep)
    ids = _ints(df, id_col, path)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        lines = df["line"].to_numpy()[dup & (ids == ids[dup][0])]
        raise DataError(f"{path}: {id_col} {ids[dup][0]} appears twice "
                        f"(lines {lines[0]} and {lines[1]})")
    return pd.Series(df[others[0]].str.strip().to_numpy(), index=ids)


def _source_ids(mapping: pd.Series | None, n: int) -> np.ndarray:
    """Mapped original ids; an id the mapping lacks keeps its number as text."""
    ids = np.arange(n).astype(str).astype(object)
    if mapping is not None:
        ids[mapping.index.to_numpy()] = mapping.to_numpy()
    return ids


def _n_ids(ids: np.ndarray, mapping: pd.Series | None, *rows: int) -> int:
    return max(int(ids.max()) + 1, *rows, int(mapping.index.max()) + 1 if mapping is not None
               and len(mapping) else 0)


def _check_feature_rows(paths: dict[str, Path], rows: dict[str, int], n_ids: int) -> None:
    """Feature files must agree on the number of items; when they do not, blame the one that
    disagrees with the ids the .inter file and mappings use (else the shorter one)."""
    if len(set(rows.values())) < 2:
        return
    odd = [n for n in rows if rows[n] != n_ids]
    bad = odd[0] if len(odd) == 1 else min(rows, key=rows.get)
    other = next(n for n in rows if n != bad)
    raise DataError(f"{paths[bad]}: {rows[bad]} rows, but {paths[other].name} has "
                    f"{rows[other]} and the .inter file and id mapping use {n_ids} items "
                    "(row i must be the feature of item i in every file)")


def load_mmrec(source: MMRecSource, show_progress: bool = True) -> Dataset:
    folder = Path(source.source)
    path = find_inter_file(folder, source.name)
    optional = [c for c in ("rating", "timestamp")
                if c in csv_header(path, "\t")]
    df = read_table(path, ["userID", "itemID", "x_label", *optional], "\t")
    if df.empty:
        raise DataError(f"{path}: no interactions")
    user, item, label = (_ints(df, c, path) for c in ("userID", "itemID", "x_label"))
    row = first_bad(df, label > 2)
    if row is not None:
        raise DataError(f"{path}:{row['line']}: x_label {row['x_label']!r} is not 0 (train), "
                        f"1 (valid) or 2 (test)")
    split = np.array([LABELS[x] for x in range(3)], dtype=object)[label]
    dup = pd.DataFrame({"u": user, "i": item}).duplicated(keep=False).to_numpy()
    if dup.any():
        same = np.flatnonzero(dup & (user == user[dup][0]) & (item == item[dup][0]))
        lines = df["line"].to_numpy()[same]
        raise DataError(f"{path}: duplicate interaction (userID {user[same[0]]}, itemID "
                        f"{item[same[0]]}) at lines {lines[0]} and {lines[1]}")

    item_map, user_map = read_mapping(folder, "item"), read_mapping(folder, "user")
    feature_paths = {n: folder / f for n, f in FEATURE_FILES.items() if (folder / f).is_file()}
    rows = {n: npy_rows(p) for n, p in feature_paths.items()}
    _check_feature_rows(feature_paths, rows, _n_ids(item, item_map))
    n_items = _n_ids(item, item_map, *rows.values())
    n_users = _n_ids(user, user_map)
    features = {n: read_features(p, n_items, "the .inter file and id mapping give")
                for n, p in feature_paths.items()}

    keep = drop_eval_without_train(user, split)
    inter = pd.DataFrame({"user_id": user, "item_id": item, "split": split})
    for col in optional:
        inter[col] = pd.to_numeric(df[col], errors="coerce").to_numpy()
    inter = inter[keep].reset_index(drop=True)

    items = pd.DataFrame({"item_id": np.arange(n_items),
                          "source_id": _source_ids(item_map, n_items),
                          "title": "", "text": "", "image_path": ""})
    if source.images is not None:
        items["image_path"] = link_images(items, source.images, by=("item_id", "source_id"))
    users = pd.DataFrame({"user_id": np.arange(n_users),
                          "source_id": _source_ids(user_map, n_users)})
    info: dict[str, Any] = {
        "format": "mmrec", "inter_file": path.name,
        "read": {"n_interactions": int(len(df)),
                 **{f"n_{s}": int((split == s).sum()) for s in SPLITS}},
        "filters": [{"step": "drop_eval_without_train",
                     "n_dropped": int((~keep).sum())}],
    }
    feature_info = {n: {"origin": "mmrec", "file": FEATURE_FILES[n], **feature_stats(a)}
                    for n, a in features.items()}
    ds = Dataset(items, inter, users, info, features, feature_info)
    ds.validate(f"MMRec dataset {path}")
    return ds


# --------------------------------------------------------------------------- export
def export_mmrec(workdir: Workdir, out_dir: Path, name: str = "lvlmrec",
                 text_source: str | None = "description",
                 image_source: str | None = "efficientnet") -> list[Path]:
    """Write `out_dir/<name>.inter`, the feature files of the two sources (None skips one),
    the id mappings and `<name>.yaml`. Every input is checked before anything is written."""
    from lvlmrec.encode.store import load_source

    ds = Dataset.load(workdir, features=False)
    arrays: dict[str, np.ndarray] = {}
    for filename, src in (("text_feat.npy", text_source), ("image_feat.npy", image_source)):
        if src is not None:
            arrays[filename] = load_source(workdir, src)
            if arrays[filename].shape[0] != ds.n_items:
                raise DataError(f"source {src!r} has {arrays[filename].shape[0]} rows; the "
                                f"dataset has {ds.n_items} items")
    inter = ds.interactions
    label = {s: i for i, s in LABELS.items()}
    table = pd.DataFrame({
        "userID": inter["user_id"].to_numpy(), "itemID": inter["item_id"].to_numpy(),
        "rating": inter["rating"].to_numpy() if "rating" in inter else 1.0,
        "timestamp": inter["timestamp"].to_numpy() if "timestamp" in inter else 0,
        "x_label": inter["split"].map(label).to_numpy(),
    })
    out_dir = Path(out_dir)
    written = [out_dir / f"{name}.inter"]
    _write_tsv(written[0], table)
    for filename, arr in arrays.items():
        save_npy(out_dir / filename, arr)
        written.append(out_dir / filename)
    for kind, frame in (("item", ds.items), ("user", ds.users)):
        filename, id_col, key_col = MAPPINGS[kind]
        _write_tsv(out_dir / filename, pd.DataFrame({key_col: frame["source_id"].to_numpy(),
                                                     id_col: frame[f"{kind}_id"].to_numpy()}))
        written.append(out_dir / filename)
    config = [f"# MMRec dataset config written by lvlmrec export-mmrec: copy to "
              f"src/configs/dataset/{name}.yaml", "USER_ID_FIELD: userID", "ITEM_ID_FIELD: itemID",
              "TIME_FIELD: timestamp", "filter_out_cod_start_users: True",
              f"inter_file_name: '{name}.inter'"]
    if "image_feat.npy" in arrays:
        config.append("vision_feature_file: 'image_feat.npy'")
    if "text_feat.npy" in arrays:
        config.append("text_feature_file: 'text_feat.npy'")
    config.append('field_separator: "\\t"')
    write_text(out_dir / f"{name}.yaml", "\n".join(config) + "\n")
    written.append(out_dir / f"{name}.yaml")
    return written


def _write_tsv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
