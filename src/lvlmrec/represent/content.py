"""Content representations: an item matrix plus the study's retrieval rule.

The study scores items by cosine between the user profile (mean of the history items'
embeddings) and each item. `scoring="max"` scores an item by its best cosine to any
history item instead, which keeps users with several distinct tastes apart.
Fusions differ only in how they build the item matrix, so they subclass this.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lvlmrec.represent.base import (Recommender, TrainData, check_choice, check_number,
                                    l2_normalise)

#: rows of history x items computed at once by max-similarity scoring
_MAX_ROWS = 1024
PROJECTIONS = ("pca", "random", "pad")


class ContentRecommender(Recommender):
    """One embedding source as the item representation (text only, vision only...)."""

    label = "content"
    # an item's vector comes from its embedding alone (fusions: a net trained on warm items)
    scores_unseen_items = True

    def __init__(self, source: str = "title", scoring: str = "mean"):
        self.source = source
        self.scoring = scoring

    def build_item_matrix(self, data: TrainData) -> np.ndarray:
        return data.embedding(self.source)

    def check_params(self) -> None:
        check_choice("scoring", self.scoring, ("mean", "max"))

    def fit(self, data: TrainData) -> ContentRecommender:
        self.check_params()
        self.item_vectors_ = l2_normalise(self.build_item_matrix(data))
        return self

    @property
    def n_items(self) -> int:
        return self.item_vectors_.shape[0]

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        vecs = self.item_vectors_
        history = sp.csr_matrix(history, dtype=np.float32)
        if self.scoring == "mean":
            counts = np.maximum(np.diff(history.indptr), 1).astype(np.float32)
            profile = (history @ vecs) / counts[:, None]
            return profile @ vecs.T
        return self._max_scores(history)

    def _max_scores(self, history: sp.csr_matrix) -> np.ndarray:
        vecs = self.item_vectors_
        out = np.zeros((history.shape[0], vecs.shape[0]), dtype=np.float32)
        indptr, indices = history.indptr, history.indices
        row = 0
        while row < history.shape[0]:
            # take as many users as fit in one (history rows x items) product
            end = row + 1
            while end < history.shape[0] and indptr[end + 1] - indptr[row] <= _MAX_ROWS:
                end += 1
            lo, hi = indptr[row], indptr[end]
            if hi > lo:
                sims = vecs[indices[lo:hi]] @ vecs.T
                starts = indptr[row:end] - lo
                nonempty = np.diff(indptr[row:end + 1]) > 0
                reduced = np.maximum.reduceat(sims, starts[nonempty], axis=0)
                out[row:end][nonempty] = reduced
            row = end
        return out


def match_dimensions(text: np.ndarray, vision: np.ndarray, method: str = "pca",
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bring both modalities to the smaller dimension, each L2-normalised first.

    `pca` projects the larger modality on its top principal components, fitted on the
    catalog's non-zero rows; `random` uses a seeded Gaussian projection; `pad` zero-pads
    the smaller one instead.
    """
    t, v = l2_normalise(text), l2_normalise(vision)
    if t.shape[1] == v.shape[1]:
        return t, v
    if method == "pad":
        d = max(t.shape[1], v.shape[1])
        return (np.pad(t, ((0, 0), (0, d - t.shape[1]))),
                np.pad(v, ((0, 0), (0, d - v.shape[1]))))
    swap = t.shape[1] > v.shape[1]
    small, large = (v, t) if swap else (t, v)
    d = small.shape[1]
    if method == "pca":
        present = np.abs(large).sum(axis=1) > 0
        fit_rows = large[present] if present.sum() > d else large
        mean = fit_rows.mean(axis=0)
        _, _, vt = np.linalg.svd(fit_rows - mean, full_matrices=False)
        comps = vt[:d]
        if comps.shape[0] < d:  # fewer rows than target dims
            comps = np.pad(comps, ((0, d - comps.shape[0]), (0, 0)))
        projected = (large - mean) @ comps.T
        projected[~present] = 0.0
    elif method == "random":
        rng = np.random.default_rng(seed)
        projected = large @ (rng.standard_normal((large.shape[1], d)) / np.sqrt(d))
    else:
        check_choice("projection", method, PROJECTIONS)
    projected = l2_normalise(projected.astype(np.float32))
    return (projected, small) if swap else (small, projected)


class NaiveFusion(ContentRecommender):
    """The study's naive 50/50: average of the two normalised, dimension-matched modalities."""

    label = "naive 50/50"

    def __init__(self, text: str = "title", vision: str = "efficientnet", alpha: float = 0.5,
                 projection: str = "pca", scoring: str = "mean", seed: int = 0):
        self.text = text
        self.vision = vision
        self.alpha = alpha
        self.projection = projection
        self.scoring = scoring
        self.seed = seed

    def check_params(self) -> None:
        super().check_params()
        check_number("alpha", self.alpha, 0.0, 1.0)
        check_choice("projection", self.projection, PROJECTIONS)

    def build_item_matrix(self, data: TrainData) -> np.ndarray:
        t, v = match_dimensions(data.embedding(self.text), data.embedding(self.vision),
                                self.projection, self.seed)
        return self.alpha * t + (1 - self.alpha) * v


class ConcatFusion(ContentRecommender):
    """Concatenation of the per-modality normalised embeddings; `weight` scales vision."""

    label = "concat"

    def __init__(self, text: str = "title", vision: str = "efficientnet", weight: float = 1.0,
                 scoring: str = "mean"):
        self.text = text
        self.vision = vision
        self.weight = weight
        self.scoring = scoring

    def check_params(self) -> None:
        super().check_params()
        check_number("weight", self.weight, 0.0)

    def build_item_matrix(self, data: TrainData) -> np.ndarray:
        t = l2_normalise(data.embedding(self.text))
        v = l2_normalise(data.embedding(self.vision)) * self.weight
        return np.hstack([t, v])
