"""Nearest-neighbour search over one representation's item vectors (cosine).

`ExactIndex` scores every item with one matrix-vector product: at the study's 38,493 items
x 384 dims that is about 2 ms on one core, so it is the default and always correct.
`HnswIndex` (hnswlib, the `ann` extra) answers in tens of microseconds at any catalog size at
the price of a build on startup and a recall below 1; `benchmarks/ann_recall.py` measures it.

Items whose vector is zero (no description, no image) have no direction: neither index
returns them, and a zero query finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lvlmrec.errors import MissingDependencyError
from lvlmrec.represent.base import l2_normalise, top_k

INDEX_KINDS = ("exact", "hnsw")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows; the input itself when it already is (no second copy)."""
    v = np.asarray(vectors)
    if v.dtype == np.float32 and v.flags.c_contiguous:
        norms = np.linalg.norm(v, axis=1)
        if np.all((np.abs(norms - 1) < 1e-4) | (norms == 0)):
            return v
    return l2_normalise(v)


class ExactIndex:
    """Brute-force cosine search; the reference the ANN index is measured against."""

    kind = "exact"

    def __init__(self, unit_vectors: np.ndarray):
        self.vectors = unit_vectors
        self.present = np.linalg.norm(unit_vectors, axis=1) > 0

    def search(self, query: np.ndarray, k: int,
               exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids and cosines to a unit `query`, best first, ties as in `top_k`."""
        if not np.any(query):
            return np.empty(0, np.int64), np.empty(0, np.float64)
        scores = (self.vectors @ np.asarray(query, np.float32)).astype(np.float64)
        scores[~self.present] = -np.inf
        scores[list(exclude)] = -np.inf
        return top_k(scores, k)


class HnswIndex:
    """Approximate cosine search with an HNSW graph (hnswlib), built once on startup.

    `ef` (the search beam) is fixed at construction to at least `max_k` + 1, so queries
    never change shared state; hnswlib's searches are safe to run in parallel (only adding
    items during a search is not, and the index is never changed after the build).
    """

    kind = "hnsw"

    def __init__(self, unit_vectors: np.ndarray, max_k: int = 100, m: int = 16,
                 ef_construction: int = 200, ef: int = 128, seed: int = 0,
                 num_threads: int = -1):
        try:
            import hnswlib
        except ImportError:
            raise MissingDependencyError("hnswlib", "ann", "the hnsw index") from None
        present = np.flatnonzero(np.linalg.norm(unit_vectors, axis=1) > 0)
        self.n_indexed = len(present)
        self._index = hnswlib.Index(space="ip", dim=unit_vectors.shape[1])
        self._index.init_index(max_elements=max(1, len(present)), M=m,
                               ef_construction=ef_construction, random_seed=seed)
        if len(present):
            self._index.add_items(unit_vectors[present], present, num_threads=num_threads)
        self.set_ef(max(ef, max_k + 1))

    def set_ef(self, ef: int) -> None:
        """Change the search beam (larger: better recall, slower); not during searches."""
        self._index.set_ef(ef)
        self.ef = ef

    def search(self, query: np.ndarray, k: int,
               exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        exclude = set(exclude)
        want = min(k + len(exclude), self.n_indexed)
        if want == 0 or not np.any(query):
            return np.empty(0, np.int64), np.empty(0, np.float64)
        labels, distances = self._index.knn_query(
            np.asarray(query, np.float32)[None, :], k=want, num_threads=1)
        ids = labels[0].astype(np.int64)
        scores = 1.0 - distances[0].astype(np.float64)  # ip space: distance = 1 - dot
        keep = np.array([i not in exclude for i in ids], dtype=bool)
        ids, scores = ids[keep][:k], scores[keep][:k]
        order = np.lexsort((ids, -scores))  # same tie-break as the exact index
        return ids[order], scores[order]


def make_index(kind: str, unit_vectors: np.ndarray, max_k: int = 100) -> ExactIndex | HnswIndex:
    if kind == "exact":
        return ExactIndex(unit_vectors)
    if kind == "hnsw":
        return HnswIndex(unit_vectors, max_k=max_k)
    raise ValueError(f"unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
