"""A user's own catalog: an items CSV, an interactions CSV and an optional image folder.

Column names are options (`CsvSource`). The items table gives each item's original id
(kept as `source_id`), title, optional text and optional image column (a URL, kept as
`image_url` for `lvlmrec fetch-images`, or a file path relative to the image folder or to
the CSV's folder); other columns are kept unless their names clash with standard ones.
Images are otherwise found in the image folder by the item's original id (`<id>.jpg`, ...).

Interactions: with a split column (train/valid/test, also validation/val or 0/1/2) that
split is used as given: duplicates and users without training history are errors, and k-core
is refused (it would break the split). Without one, the raw-log chain of `filters.py` runs
(duplicates keep the latest, rating threshold, k-core, split). The catalog is the items
table as given: an item without interactions (or whose interactions a filter removed) stays
as a cold item (`drop_items_without_interactions` removes such items, as a recorded step).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.config import CsvSource
from lvlmrec.data.filters import ProcessedLog, RawLog, min_rating_mask, process_log, reindex
from lvlmrec.data.images import link_images, refused_image
from lvlmrec.data.schema import ITEM_COLUMNS, Dataset
from lvlmrec.errors import DataError

SPLIT_VALUES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
                "test": "test", "0": "train", "1": "valid", "2": "test"}
RESERVED = set(ITEM_COLUMNS) | {"image_url"}


def read_table(path: Path, columns: list[str], sep: str = ",") -> pd.DataFrame:
    """The named columns of a CSV as strings ("" for empty cells), plus `line` (1-based line
    of the row in the file). A missing column is an error listing the header."""
    path = Path(path)
    header = csv_header(path, sep)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)}); "
                        f"set the column name option")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                         usecols=list(dict.fromkeys(columns)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise _csv_error(path, err) from None
    df["line"] = row_lines(path, len(df), sep)
    return df


def csv_header(path: Path, sep: str = ",") -> list[str]:
    """The column names of a CSV file; a missing, empty, binary or non-UTF-8 file is a
    DataError naming it (and the line of the first byte that is not UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise _csv_error(path, err) from None


def _csv_error(path: Path, err: Exception) -> DataError:
    if isinstance(err, UnicodeDecodeError):
        with open(path, "rb") as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return DataError(f"{path}:{line_no}: not UTF-8 text (byte "
                                     f"{line[bad.start:bad.start + 1]!r}); save the file as "
                                     "UTF-8")
    if isinstance(err, pd.errors.EmptyDataError):
        return DataError(f"{path}: the file is empty (no header line)")
    return DataError(f"{path}: cannot parse as CSV: {' '.join(str(err).split())}")


def row_lines(path: Path, n_rows: int, sep: str = ",") -> np.ndarray:
    """The 1-based line on which each data row starts (the header is line 1). Counting
    newlines is enough unless quoted fields span lines or blank lines are skipped; only
    then is the file walked with the csv module."""
    with open(path, "rb") as fh:
        n_lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        fh.seek(-1, 2)
        n_lines += fh.read(1) != b"\n"
    if n_lines == n_rows + 1:
        return np.arange(n_rows) + 2
    starts, line = [], 1
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep)
        for record in reader:
            if record:  # pandas skips blank lines too
                starts.append(line)
            line = reader.line_num + 1
    return np.asarray(starts[1:n_rows + 1])


def first_bad(df: pd.DataFrame, mask: pd.Series | np.ndarray) -> pd.Series | None:
    mask = np.asarray(mask)
    return df.iloc[int(np.flatnonzero(mask)[0])] if mask.any() else None


def numbers(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """A numeric column; empty cells are NaN, anything else unparsable is an error."""
    text = df[col].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    row = first_bad(df, values.isna() & (text != ""))
    if row is not None:
        raise DataError(f"{path}:{row['line']}: {col} {row[col]!r} is not a number")
    return values.to_numpy(dtype=np.float64)


def times(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Unix seconds from numbers or date strings; empty cells give -1."""
    text = df[col].str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all() or (numeric.notna() | (text == "")).all():
        return numeric.fillna(-1).to_numpy().astype(np.int64)
    # numbers are Unix seconds, other cells dates: a bad cell is one that is neither (its
    # line is named, not the first number the date parser could not read)
    dates = text.where((text != "") & numeric.isna())
    parsed = pd.to_datetime(dates, errors="coerce", utc=True, format="mixed")
    row = first_bad(df, parsed.isna() & dates.notna())
    if row is not None:
        raise DataError(f"{path}:{row['line']}: {col} {row[col]!r} is neither a number nor a date")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return numeric.fillna(seconds).fillna(-1).to_numpy().astype(np.int64)


def read_items(source: CsvSource) -> pd.DataFrame:
    """The items table with standard columns (source_id, title, text, image_path,
    image_url) plus its other columns."""
    path = Path(source.items)
    cols = [c for c in (source.item_col, source.title_col, source.text_col, source.image_col)
            if c]
    header = csv_header(path, source.sep)
    extra = [c for c in header if c not in cols and c not in RESERVED]
    df = read_table(path, cols + extra, source.sep)
    ids = df[source.item_col].str.strip()
    row = first_bad(df, ids == "")
    if row is not None:
        raise DataError(f"{path}:{row['line']}: empty {source.item_col}")
    dup = ids.duplicated(keep=False)
    if dup.any():
        lines = df.loc[dup & (ids == ids[dup].iloc[0]), "line"].tolist()
        raise DataError(f"{path}: item {ids[dup].iloc[0]!r} appears twice "
                        f"(lines {lines[0]} and {lines[1]})")
    out = pd.DataFrame({"source_id": ids, "title": df[source.title_col].str.strip(),
                        "text": df[source.text_col].str.strip() if source.text_col else "",
                        "image_path": "", "image_url": ""})
    if source.image_col:
        value = df[source.image_col].str.strip()
        is_url = value.str.match(r"(?i)https?://")
        out["image_url"] = value.where(is_url, "")
        bases = [Path(b) for b in (source.images, path.parent) if b is not None]
        out["image_path"] = [
            next((str((b / v).resolve()) for b in bases if (b / v).is_file()), "")
            if v and not url else "" for v, url in zip(value, is_url)]
        roots = [b.resolve() for b in bases]
        for image, line, item in zip(out["image_path"], df["line"], ids):
            reason = refused_image(image, roots) if image else None
            if reason is not None:
                raise DataError(f"{path}:{line}: item {item!r}: image refused: {reason}")
    for col in extra:
        out[col] = df[col].to_numpy()
    return out


def read_log(source: CsvSource, item_ids: pd.Index) -> tuple[RawLog, pd.DataFrame]:
    """The interactions as a RawLog (item codes = rows of the items table) and the table
    read (for line numbers and the split column)."""
    path = Path(source.interactions)
    cols = [source.user_col, source.item_col] + [
        c for c in (source.rating_col, source.time_col, source.split_col) if c]
    df = read_table(path, cols, source.sep)
    if df.empty:
        raise DataError(f"{path}: no interactions")
    users, items = df[source.user_col].str.strip(), df[source.item_col].str.strip()
    for col, values in ((source.user_col, users), (source.item_col, items)):
        row = first_bad(df, values == "")
        if row is not None:
            raise DataError(f"{path}:{row['line']}: empty {col}")
    item_code = item_ids.get_indexer(items)
    row = first_bad(df, item_code < 0)
    if row is not None:
        raise DataError(f"{path}:{row['line']}: item {row[source.item_col]!r} is not in "
                        f"{source.items}")
    user_code, user_keys = pd.factorize(users)
    log = RawLog(user=user_code.astype(np.int64), item=item_code.astype(np.int64),
                 user_keys=np.asarray(user_keys, dtype=object),
                 item_keys=np.asarray(item_ids, dtype=object),
                 rating=numbers(df, source.rating_col, path) if source.rating_col else None,
                 timestamp=times(df, source.time_col, path) if source.time_col else None)
    return log, df


def given_split(source: CsvSource, log: RawLog, df: pd.DataFrame) -> ProcessedLog:
    """Use the split column as it is, checking what a given split must satisfy."""
    path = source.interactions
    if source.kcore > 1:
        raise DataError(f"kcore={source.kcore} cannot be combined with split_col "
                        f"{source.split_col!r}: filtering would break the given split")
    labels = df[source.split_col].str.strip().str.lower()
    split = labels.map(SPLIT_VALUES)
    row = first_bad(df, split.isna())
    if row is not None:
        raise DataError(f"{path}:{row['line']}: {source.split_col} {row[source.split_col]!r} "
                        f"is not one of train, valid (validation, val), test or 0, 1, 2")
    split = split.to_numpy(dtype=object)
    steps: list[dict[str, Any]] = []
    keep = np.arange(len(log))
    if source.min_rating is not None:
        before = log.counts()
        keep = np.flatnonzero(min_rating_mask(log, source.min_rating))
        log = log.take(keep)
        steps.append({"step": "min_rating", "min_rating": source.min_rating,
                      "before": before, "after": log.counts()})
    split, lines = split[keep], df["line"].to_numpy()[keep]
    pair = pd.DataFrame({"u": log.user, "i": log.item})
    dup = pair.duplicated(keep=False).to_numpy()
    if dup.any():
        first = np.flatnonzero(dup)[0]
        same = np.flatnonzero(dup & (log.user == log.user[first]) & (log.item == log.item[first]))
        raise DataError(f"{path}: duplicate interaction (user {log.user_keys[log.user[first]]!r}, "
                        f"item {log.item_keys[log.item[first]]!r}) at lines {lines[same[0]]} "
                        f"and {lines[same[1]]}")
    has_train = np.zeros(len(log.user_keys), dtype=bool)
    has_train[log.user[split == "train"]] = True
    cold = np.flatnonzero(~has_train[log.user])
    if len(cold):
        raise DataError(f"{path}:{lines[cold[0]]}: user {log.user_keys[log.user[cold[0]]]!r} "
                        f"has {split[cold[0]]} interactions but no training history")
    steps.append({"step": "split", "method": f"column {source.split_col!r}"})
    done = reindex(log, split, catalog=True)
    done.steps = steps
    return done


def load_csv(source: CsvSource, show_progress: bool = True) -> Dataset:
    items = read_items(source)
    log, df = read_log(source, pd.Index(items["source_id"]))
    if source.split_col:
        done = given_split(source, log, df)
    else:
        done = process_log(log, min_rating=source.min_rating, k=source.kcore,
                           split=source.split, seed=source.seed,
                           cold_fraction=source.cold_fraction, catalog=True)
    items = items.iloc[done.item_codes].reset_index(drop=True)
    items.insert(0, "item_id", np.arange(len(items)))
    if source.images is not None:
        linked = link_images(items, source.images)
        items["image_path"] = items["image_path"].where(items["image_path"] != "", linked)
    users = pd.DataFrame({"user_id": np.arange(len(done.user_codes)),
                          "source_id": log.user_keys[done.user_codes]})
    info = {"format": "csv", "read": {**log.counts(), "n_catalog_items": len(log.item_keys)},
            "filters": done.steps}
    ds = Dataset(items, done.interactions, users, info)
    ds.validate(f"CSV dataset from {source.items} and {source.interactions}")
    return ds
