"""Feature arrays that come with a dataset (`.npy`, row i = item i), read with bounded memory.

The study's archive ships float64 arrays of 38k x 768; reading them with `np.load` and then
casting would hold both copies. `read_features` parses the .npy header and reads row chunks
straight into the float32 result, so only that copy is ever held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvlmrec.errors import DataError

CHUNK_ROWS = 4096


def npy_header(fh, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open .npy file, positioned at its data."""
    try:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        return read(fh)
    except ValueError as err:
        raise DataError(f"{path}: not a .npy array file ({err})") from None


def npy_rows(path: Path) -> int:
    """Number of rows of a .npy file, from its header alone."""
    if not Path(path).is_file():
        raise DataError(f"missing file: {path}")
    with open(path, "rb") as fh:
        shape, _, _ = npy_header(fh, Path(path))
    return int(shape[0]) if shape else 0


def read_features(path: Path, n_items: int, expected_by: str = "the dataset has") -> np.ndarray:
    """An (n_items, d) numeric .npy as float32; DataError for a missing, malformed,
    truncated or misshaped file, or for a row with NaN/inf (naming the row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    with open(path, "rb") as fh:
        shape, fortran, dtype = npy_header(fh, path)
        if len(shape) != 2 or dtype.kind not in "fiu" or fortran:
            raise DataError(f"{path}: expected a 2-D numeric C-order array, got shape {shape} "
                            f"dtype {dtype}{' (Fortran order)' if fortran else ''}")
        if shape[0] != n_items:
            raise DataError(f"{path}: {shape[0]} rows but {expected_by} {n_items} items "
                            f"(row i must be the feature of item i)")
        out = np.empty(shape, dtype=np.float32)
        for start in range(0, shape[0], CHUNK_ROWS):
            rows = min(CHUNK_ROWS, shape[0] - start)
            chunk = np.fromfile(fh, dtype=dtype, count=rows * shape[1])
            if chunk.size != rows * shape[1]:
                raise DataError(f"{path}: data ends at row {start + chunk.size // shape[1]} of "
                                f"{shape[0]}; is the file truncated?")
            chunk = chunk.reshape(rows, shape[1])
            bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
            if len(bad):
                row = start + int(bad[0])
                raise DataError(f"{path}: row {row} (item {row}) has NaN or infinite values")
            out[start:start + rows] = chunk
    return out


def feature_stats(array: np.ndarray) -> dict[str, int]:
    """What `dataset.json` records per feature: zero rows mean "no feature"."""
    return {"dim": int(array.shape[1]), "n_missing": int((~array.any(axis=1)).sum())}
