"""Batch recommendations: the top-k of one representation for many users, to a file.

`lvlmrec recommend` and `Run.recommend_all` use it. Users are scored in blocks with the
evaluation's own code (`score_block`, `mask_block`, `topk_block`: same tie-break by lower
item id, the users x items matrix never exists whole), and each block is appended to the
output (Parquet or CSV) as rows of (user_source_id, rank, item_source_id, score).

History: a user's history is everything the dataset knows about them (train, valid and
test interactions). The model scores from it, and its items are not recommended again
unless `include_history` is set. These are recommendations for what comes next, not an
evaluation: `lvlmrec evaluate` is where held-out items are hidden.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lvlmrec.errors import ConfigError, DataError
from lvlmrec.evaluate.ranking import mask_block, score_block, topk_block
from lvlmrec.workdir import atomic_path

COLUMNS = ["user_source_id", "rank", "item_source_id", "score"]
FORMATS = (".parquet", ".csv")
_HEADER_NAMES = {"user", "user_id", "source_id", "user_source_id"}


def topk_blocks(model, history: sp.csr_matrix, users: np.ndarray, k: int,
                block_size: int = 1024, include_history: bool = False,
                show_progress: bool = True, order: sp.csr_matrix | None = None,
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(users, (b, k) item ids, (b, k) scores) per block, best first; ids are -1 where a
    user has fewer than k recommendable items. `order`: the history's time positions, which
    sequential models read (as in evaluation)."""
    history = sp.csr_matrix(history)
    n_items = history.shape[1]
    bar = tqdm(total=len(users), desc="recommend", unit="user", disable=not show_progress)
    for start in range(0, len(users), block_size):
        block = users[start:start + block_size]
        hist = history[block]
        scores = score_block(model, block, hist, n_items,
                             None if order is None else order[block])
        if not include_history:
            mask_block(scores, hist)
        top = topk_block(scores, k)
        values = torch.gather(scores, 1, torch.from_numpy(np.maximum(top, 0))).numpy()
        del scores
        bar.update(len(block))
        yield block, top, np.where(top >= 0, values, np.nan)
    bar.close()


def read_users_file(path: Path, user_source_ids: list[str]) -> np.ndarray:
    """Internal ids of the users listed in a file, one original (source) id per line; a
    first line naming the column (user, user_id, source_id) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--users: no such file {path} (give a file of user ids, one per "
                          "line, or `all`)")
    position = {s: i for i, s in enumerate(user_source_ids)}
    out = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text file of user ids: {err}") from None
    for number, line in enumerate(lines, start=1):
        value = line.strip().split(",")[0].strip().strip('"')
        if not value or (number == 1 and value.lower() in _HEADER_NAMES
                         and value not in position):
            continue
        if value not in position:
            raise DataError(f"{path}:{number}: unknown user {value!r} (the file lists the "
                            "users' original ids, as in the dataset's users.parquet source_id)")
        out.append(position[value])
    if not out:
        raise DataError(f"{path}: lists no user")
    return np.asarray(out, dtype=np.int64)


def check_output(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--out {path}: the file name must end in .parquet or .csv")
    return suffix


def write_recommendations(path: Path, blocks: Iterator[tuple[np.ndarray, np.ndarray,
                                                           np.ndarray]],
                          user_source_ids: np.ndarray, item_source_ids: np.ndarray) -> int:
    """Write the blocks' rows to `path` (atomically); returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = check_output(path)
    users_arr = np.asarray(user_source_ids, dtype=object)
    items_arr = np.asarray(item_source_ids, dtype=object)
    n_rows = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        writer = None
        with open(tmp, "wb") as fh:
            for users, top, scores in blocks:
                frame = block_frame(users, top, scores, users_arr, items_arr)
                if suffix == ".csv":
                    frame.to_csv(fh, header=n_rows == 0, index=False)
                else:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(fh, table.schema)
                    writer.write_table(table)
                n_rows += len(frame)
            if suffix == ".parquet":
                if writer is None:  # no user: an empty file with the columns
                    writer = pq.ParquetWriter(fh, pa.Table.from_pandas(
                        _empty(), preserve_index=False).schema)
                writer.close()
            elif n_rows == 0:
                _empty().to_csv(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
    return n_rows


def block_frame(users: np.ndarray, top: np.ndarray, scores: np.ndarray,
                user_source_ids: np.ndarray, item_source_ids: np.ndarray) -> pd.DataFrame:
    """One block's rows, padding (-1) dropped; ids are object arrays of original ids."""
    keep = top >= 0
    return pd.DataFrame({
        "user_source_id": user_source_ids[np.repeat(users, keep.sum(axis=1))],
        "rank": (np.nonzero(keep)[1] + 1).astype(np.int32),
        "item_source_id": item_source_ids[top[keep]],
        "score": scores[keep].astype(np.float32),
    })


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"user_source_id": pd.Series([], dtype=object),
                         "rank": pd.Series([], dtype=np.int32),
                         "item_source_id": pd.Series([], dtype=object),
                         "score": pd.Series([], dtype=np.float32)})
