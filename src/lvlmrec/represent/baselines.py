"""Beyond the study: popularity, ItemKNN, and a hybrid of a content representation and ItemKNN.

Popularity and ItemKNN read training interactions only; they tell how much of a content
representation's accuracy plain collaborative signal already gives. The hybrid blends a
content representation with ItemKNN; its blend weight is chosen on validation Recall@20.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import (Recommender, TrainData, binary_csr, check_choice, check_int,
                                    check_number)
from lvlmrec.represent.content import ContentRecommender

#: item rows of the co-occurrence matrix built at once by ItemKNN
_KNN_BLOCK = 2048


class Popularity(Recommender):
    """Every user gets the items with the most training interactions."""

    label = "popularity"

    def __init__(self):
        """No parameters (an explicit empty signature for the registry)."""

    def fit(self, data: TrainData) -> Popularity:
        self.counts_ = np.asarray(binary_csr(data.train).sum(axis=0), dtype=np.float32).ravel()
        return self

    @property
    def n_items(self) -> int:
        return len(self.counts_)

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.counts_, (history.shape[0], 1))


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries (ties to the lower column id)."""
    matrix = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = rank < k
    return sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])),
                         shape=matrix.shape)


class ItemKNN(Recommender):
    """Item-based collaborative filtering: cosine on (weighted) training co-occurrence.

    Each user's row of the training matrix is weighted (`weighting`: `none` binary,
    `tfidf` or `bm25`, as in implicit's TFIDF/BM25 recommenders: users are the terms, so
    heavy users count less; bm25 also damps items by their popularity with `bm25_k1`,
    `bm25_b`), then sim(i, j) = w_i . w_j / (|w_i| |w_j| + shrink) over item columns, each
    item keeping its `neighbours` most similar items (a sparse items x items matrix built in
    row blocks, so no dense items x items matrix ever exists). A user's score =
    history @ similarity.
    """

    label = "ItemKNN"
    search_space: ClassVar[dict[str, list]] = {
        "neighbours": [20, 50, 100, 200, 400],
        "shrink": [0.0, 10.0, 50.0, 100.0, 200.0],
        "weighting": ["none", "tfidf", "bm25"],
    }

    def __init__(self, neighbours: int = 100, shrink: float = 10.0, weighting: str = "none",
                 bm25_k1: float = 1.2, bm25_b: float = 0.75):
        self.neighbours = neighbours
        self.shrink = shrink
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b

    def check_params(self) -> None:
        check_int("neighbours", self.neighbours, 1)
        check_number("shrink", self.shrink, 0.0)
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, "
                              f"not {self.weighting!r}")
        check_number("bm25_k1", self.bm25_k1, 0.0)
        check_number("bm25_b", self.bm25_b, 0.0, 1.0)

    def fit(self, data: TrainData) -> ItemKNN:
        self.similarity_ = item_similarity(data.train, self.neighbours, self.shrink,
                                           data.show_progress, self.weighting, self.bm25_k1,
                                           self.bm25_b)
        return self

    @property
    def n_items(self) -> int:
        return self.similarity_.shape[0]

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return knn_scores(history, self.similarity_)


WEIGHTINGS = ("none", "tfidf", "bm25")


def weight_interactions(train: sp.spmatrix, weighting: str = "none", k1: float = 1.2,
                        b: float = 0.75) -> sp.csr_matrix:
    """The binary users x items matrix, reweighted per user (tfidf, bm25) or not (none).

    idf(u) = log(n_items) - log(1 + |I_u|); tfidf: w = idf(u); bm25:
    w = (k1 + 1) / (k1 * ((1 - b) + b |U_i| / mean |U_i|) + 1) * idf(u), with the item's
    column the document (implicit's `tfidf_weight`, `bm25_weight` on binary data).
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"itemknn: weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    x = binary_csr(train)
    if weighting == "none":
        return x
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    idf = np.log(x.shape[1]) - np.log1p(np.diff(x.indptr))
    weight = idf[rows]
    if weighting == "bm25":
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"itemknn: bm25 needs bm25_k1 >= 0 and 0 <= bm25_b <= 1, "
                              f"not {k1} and {b}")
        item_count = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
        length = (1 - b) + b * item_count[x.indices] / item_count[item_count > 0].mean()
        weight = weight * (k1 + 1) / (k1 * length + 1)
    x.data = weight.astype(np.float32)
    return x


def item_similarity(train: sp.spmatrix, neighbours: int, shrink: float = 0.0,
                    show_progress: bool = False, weighting: str = "none", bm25_k1: float = 1.2,
                    bm25_b: float = 0.75) -> sp.csr_matrix:
    """Top-`neighbours` cosine similarities on (weighted) co-occurrence, one row per item."""
    check_int("neighbours", neighbours, 1)
    check_number("shrink", shrink, 0.0)
    x = weight_interactions(train, weighting, bm25_k1, bm25_b)
    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel()).astype(np.float32)
    n_items = x.shape[1]
    blocks = []
    for start in tqdm(range(0, n_items, _KNN_BLOCK), desc="item similarity", unit="block",
                      disable=not show_progress, leave=False):
        co = (xt[start:start + _KNN_BLOCK] @ x).tocoo()
        off_diagonal = co.row + start != co.col
        rows, cols = co.row[off_diagonal], co.col[off_diagonal]
        sims = co.data[off_diagonal] / (norms[rows + start] * norms[cols] + shrink)
        block = sp.csr_matrix((sims.astype(np.float32), (rows, cols)),
                              shape=(co.shape[0], n_items))
        blocks.append(top_k_per_row(block, neighbours))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), np.float32)


def knn_scores(history: sp.spmatrix, similarity: sp.csr_matrix) -> np.ndarray:
    return np.asarray((binary_csr(history) @ similarity).toarray(), dtype=np.float32)


NORMALISERS = ("zscore", "minmax")


def normalise_rows(scores: np.ndarray, method: str) -> np.ndarray:
    """Per-user standardisation (zscore) or min-max scaling, so two scorers can be blended."""
    check_choice("normalise", method, NORMALISERS)
    if method == "zscore":
        std = scores.std(axis=1, keepdims=True)
        return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    low = scores.min(axis=1, keepdims=True)  # minmax
    span = scores.max(axis=1, keepdims=True) - low
    return (scores - low) / np.where(span > 0, span, 1.0)


class Hybrid(ContentRecommender):
    """score = w * norm(content) + (1 - w) * norm(ItemKNN), w tuned on validation Recall@20.

    `content` names the content strategy kind (text, vision, naive, concat, attention, ...)
    built with this strategy's `text`, `vision`, `scoring` and `content_params`. Each
    weight of `weight_grid` is scored on validation (history = train); the best is `weight_`
    (ties go to the earlier grid value) and every weight's recall is kept in
    `valid_recall_by_weight_`.
    """

    label = "hybrid"

    def __init__(self, text: str | None = None, vision: str | None = None,
                 content: str = "text", content_params: dict | None = None,
                 neighbours: int = 100, shrink: float = 0.0, normalise: str = "zscore",
                 weight_grid: list[float] | None = None, scoring: str = "mean", seed: int = 0):
        self.text = text
        self.vision = vision
        self.content = content
        self.content_params = content_params
        self.neighbours = neighbours
        self.shrink = shrink
        self.normalise = normalise
        self.weight_grid = weight_grid
        self.scoring = scoring
        self.seed = seed

    def check_params(self) -> None:
        super().check_params()
        check_choice("normalise", self.normalise, NORMALISERS)
        check_int("neighbours", self.neighbours, 1)
        check_number("shrink", self.shrink, 0.0)
        grid = self.weight_grid
        if grid is not None and (not isinstance(grid, list | tuple) or not grid or any(
                isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w <= 1.0
                for w in grid)):
            raise ConfigError(f"weight_grid = {grid!r}: expected a non-empty list of weights "
                              "in [0, 1]")
        self._content_model()

    def _content_model(self) -> ContentRecommender:
        """The content half, built (and checked) through the registry."""
        from lvlmrec.config import StrategyConfig
        from lvlmrec.represent.registry import build

        if not isinstance(self.content_params or {}, dict):
            raise ConfigError(f"content_params = {self.content_params!r}: expected a mapping")
        try:
            spec = StrategyConfig(name="hybrid_content", kind=self.content, text=self.text,
                                  vision=self.vision, scoring=self.scoring,
                                  params=self.content_params or {})
        except ValueError as err:  # pydantic: a content kind or text that is not a string
            raise ConfigError(f"content {self.content!r}: {err}".splitlines()[0]) from None
        content = build(spec, self.seed)
        if not isinstance(content, ContentRecommender):
            raise ConfigError(f"hybrid: content kind {self.content!r} is not a content "
                              "representation (an item embedding matrix)")
        return content

    def fit(self, data: TrainData) -> Hybrid:
        self.check_params()
        grid = [float(w) for w in (self.weight_grid if self.weight_grid is not None
                                   else np.linspace(0.0, 1.0, 11).round(2))]
        content = self._content_model()
        self.item_vectors_ = content.fit(data).item_vectors_
        self.similarity_ = item_similarity(data.train, self.neighbours, self.shrink,
                                           data.show_progress)
        self.valid_recall_by_weight_ = {}
        for w in grid:
            self.weight_ = w
            self.valid_recall_by_weight_[str(w)] = data.valid_recall(self, k=20)
        recalls = list(self.valid_recall_by_weight_.values())
        self.weight_ = grid[int(np.argmax(recalls))]
        return self

    def item_vectors(self) -> np.ndarray | None:
        # similar items come from the blended scores, not from the content half alone
        return None

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        w = self.weight_
        blend = np.zeros((history.shape[0], self.n_items), dtype=np.float32)
        if w > 0:
            blend += w * normalise_rows(super().score(user_ids, history), self.normalise)
        if w < 1:
            blend += (1 - w) * normalise_rows(knn_scores(history, self.similarity_),
                                              self.normalise)
        return blend
