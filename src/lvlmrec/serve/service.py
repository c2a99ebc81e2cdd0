"""What the server knows about a finished run: loaded once on startup, never written.

`load_run` reads the run's artifacts (dataset tables, the active description set, the
saved config, metrics and every fitted model) and precomputes what each request needs:
the users' histories as CSR rows, each model's L2-normalised item matrix and its
nearest-neighbour index. A request is then one (1 x n_items) `score` of the model plus a
partial sort, all in numpy.

Models are used only through the `Recommender` protocol (`recommend`, `score`,
`similar_items`, `item_vectors`), so every representation kind is served alike.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from lvlmrec.config import RunConfig, StrategyConfig, parse_config
from lvlmrec.data.images import image_roots, refused_image
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import read_active
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import (TEXT_SOURCES, embedding_meta, is_text_source,
                                  text_embedding_name)
from lvlmrec.errors import ConfigError, LvlmrecError, StageError
from lvlmrec.represent.base import Recommender
from lvlmrec.represent.fit import load_model
from lvlmrec.represent.sequential import user_sequence
from lvlmrec.serve.index import ExactIndex, HnswIndex, make_index, unit_rows
from lvlmrec.workdir import Workdir

#: the fallback explanation scores at most this many single-item histories per request
EXPLAIN_MAX_HISTORY = 100


class SearchUnavailable(LvlmrecError):
    """Free-text search was asked of a run or representation that cannot answer it."""


class Representation:
    """One fitted model as served: top-k, explanations, similar items and text search.

    Explanations say which history items scored a recommended item highest:
    - a model with item vectors: the cosine between the recommended item and each history
      item. For the content representations (mean profile, cosine scoring) this is exact,
      the item's score is the mean of these cosines; for max scoring the first one is the
      score itself.
    - a model without (ItemKNN, popularity...): how much each history item alone raises
      the item's score over an empty history, `score(item | {h}) - score(item | {})`, over at
      most `EXPLAIN_MAX_HISTORY` history items. A model that ignores the history (popularity)
      gets no explanation.
    Only history items with a positive weight are named.
    """

    def __init__(self, name: str, model: Recommender, strategy: StrategyConfig | None = None,
                 index: str = "exact", max_k: int = 100, metrics: dict[str, float] | None = None,
                 text_source: str | None = None):
        self.name = name
        self.model = model
        self.strategy = strategy
        self.metrics = metrics or {}
        vectors = model.item_vectors()
        self.unit_vectors = None if vectors is None else unit_rows(vectors)
        self.index: ExactIndex | HnswIndex | None = (
            None if self.unit_vectors is None else make_index(index, self.unit_vectors, max_k))
        #: the text source whose encoder embeds search queries into this item space
        self.text_source = text_source if self.unit_vectors is not None else None

    @property
    def searchable(self) -> bool:
        return self.text_source is not None

    @property
    def explanation(self) -> str:
        return "cosine" if self.unit_vectors is not None else "single-item score gain"

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def recommend(self, history_items: np.ndarray, k: int,
                  user_id: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k unseen items for a history (history items are never recommended)."""
        return self.model.recommend(history_items, k=k, user_id=user_id)

    def explain(self, item_ids: np.ndarray, history_items: np.ndarray, user_id: int = -1,
                n: int = 3) -> list[list[tuple[int, float]]]:
        """For each item, up to n (history item, weight) pairs, strongest first."""
        hist = np.asarray(history_items, dtype=np.int64)
        if len(hist) == 0 or len(item_ids) == 0:
            return [[] for _ in item_ids]
        if self.unit_vectors is not None:
            weights = self.unit_vectors[item_ids] @ self.unit_vectors[hist].T
        else:
            hist = hist[:EXPLAIN_MAX_HISTORY]
            rows = len(hist) + 1  # one row per history item alone, then the empty history
            alone = sp.csr_matrix(
                (np.ones(len(hist), np.float32), hist, np.append(np.arange(len(hist) + 1),
                                                                 len(hist))),
                shape=(rows, self.n_items))
            scores = self.model.score(np.full(rows, user_id), alone)[:, item_ids]
            weights = (scores[:-1] - scores[-1]).T
        out = []
        for row in np.asarray(weights, dtype=np.float64):
            order = np.lexsort((hist, -row))[:n]
            out.append([(int(hist[j]), float(row[j])) for j in order
                        if np.isfinite(row[j]) and row[j] > 0])
        return out

    def similar(self, item_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items in the model's item space, or the model's own notion of similar."""
        own = type(self.model).similar_items is not Recommender.similar_items
        if self.index is not None and not own:
            return self.index.search(self.unit_vectors[item_id], k, exclude=(item_id,))
        return self.model.similar_items(item_id, k)

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items nearest to a query embedded in this representation's item space."""
        if query_vector.shape[0] != self.unit_vectors.shape[1]:
            raise SearchUnavailable(
                f"representation {self.name!r} has {self.unit_vectors.shape[1]}-d items but "
                f"the text encoder gives {query_vector.shape[0]}-d queries")
        return self.index.search(query_vector, k)

    def info(self) -> dict[str, Any]:
        s = self.strategy
        return {
            "name": self.name,
            "kind": s.kind if s else None,
            "text": s.text if s else None,
            "vision": s.vision if s else None,
            "scoring": getattr(self.model, "scoring", None),
            "model": type(self.model).__name__,
            "has_item_vectors": self.unit_vectors is not None,
            "searchable": self.searchable,
            "explanation": self.explanation,
            "metrics": self.metrics,
        }


@dataclasses.dataclass
class ServedRun:
    """A finished run in memory. Item and user ids are the run's (0-based row numbers)."""

    workdir: Workdir
    titles: list[str]
    texts: list[str]
    descriptions: list[str]
    image_paths: list[Path | None]
    item_source_ids: list[str]
    user_source_ids: list[str]
    #: train + valid: the history a known user's recommendations start from (and mask)
    history: sp.csr_matrix
    #: test interactions, shown as hits; empty when the run has none
    test: sp.csr_matrix
    representations: dict[str, Representation]
    #: model folders that could not be served, with the reason
    skipped: dict[str, str]
    text_model: str | None
    index_kind: str = "exact"
    #: the only folders an image is read from (data/images.py `image_roots`); none: workdir
    image_roots: list[Path] = dataclasses.field(default_factory=list)
    #: time positions of `history` (Dataset.order_matrix); None without timestamps
    history_order: sp.csr_matrix | None = None
    _encoder: Any = dataclasses.field(default=None, repr=False)
    _encoder_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock,
                                                      repr=False)

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @property
    def n_users(self) -> int:
        return len(self.user_source_ids)

    @property
    def has_test(self) -> bool:
        return self.test.nnz > 0

    def user_history(self, user_id: int) -> np.ndarray:
        return _row(self.history, user_id)

    def user_sequence(self, user_id: int) -> np.ndarray:
        """The history oldest first, as recommendations read it (sequential models need the
        order the evaluator gives them; the rest see the same set)."""
        return user_sequence(self.history, self.history_order, user_id)

    def user_test(self, user_id: int) -> np.ndarray:
        return _row(self.test, user_id)

    @property
    def searchable(self) -> list[str]:
        return [name for name, rep in self.representations.items() if rep.searchable]

    def search(self, text: str, k: int,
               name: str | None = None) -> tuple[Representation, np.ndarray, np.ndarray]:
        """Items nearest to a free text in a text representation (default: the first)."""
        if not self.searchable:
            raise SearchUnavailable(
                "this run has no representation searchable by text: search needs a `kind: "
                f"text` representation over one of the text sources {', '.join(TEXT_SOURCES)}")
        name = name or self.searchable[0]
        if name not in self.searchable:
            raise SearchUnavailable(
                f"representation {name!r} is not a text embedding of the run's text encoder; "
                f"searchable: {', '.join(self.searchable)}")
        rep = self.representations[name]
        return rep, *rep.search(self.embed_query(text), k)

    def embed_query(self, text: str) -> np.ndarray:
        """The unit query vector of a free text, from the run's text encoder."""
        with self._encoder_lock:
            if self._encoder is None:
                from lvlmrec.encode.text import TextEncoder

                self._encoder = TextEncoder(self.text_model, device="cpu")
            return self._encoder.encode([text], show_progress_bar=False)[0]

    def image_file(self, item_id: int) -> Path | None:
        """The item's image file, None when it has none; PermissionError when the file lies
        outside the run's folders (re-checked at every read: items.parquet may be edited)."""
        path = self.image_paths[item_id]
        if path is None or not path.is_file():
            return None
        reason = refused_image(path, self.image_roots or [self.workdir.root.resolve()])
        if reason is not None:
            raise PermissionError(reason)
        return path

    def warm(self) -> None:
        """Load the text encoder now rather than on the first search."""
        if self.searchable:
            self.embed_query("warm up")


def ranked_representations(run: ServedRun, metric: str = "recall@10") -> list[str]:
    """Served names, best first by a test metric; unevaluated ones last, in config order."""
    names = list(run.representations)
    value = {n: run.representations[n].metrics.get(metric) for n in names}
    return sorted(names, key=lambda n: (value[n] is None, -(value[n] or 0.0)))


def _row(matrix: sp.csr_matrix, row: int) -> np.ndarray:
    return matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]].astype(np.int64)


# --------------------------------------------------------------------------- loading
def load_run(workdir: str | Path | Workdir, index: str = "exact", max_k: int = 100,
             progress: Any = None) -> ServedRun:
    """Read a finished run. `progress(message)` is told what is being loaded."""
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    say = progress or (lambda message: None)
    if not wd.root.is_dir():
        raise StageError(f"no run directory at {wd.root}")
    ds = Dataset.load(wd, features=False)
    cfg = _saved_config(wd)
    if cfg is not None:  # a plugin that fails to import is an error here as in every stage
        from lvlmrec.plugins import import_plugins

        import_plugins(cfg.represent.plugins)
    items = ds.items
    strategies = {s.name: s for s in cfg.represent.strategies} if cfg else {}
    metrics = _metrics(wd)
    text_model = cfg.encode.text_model if cfg else None
    reps: dict[str, Representation] = {}
    skipped: dict[str, str] = {}
    plugins = cfg.represent.plugins if cfg else []
    for name in _model_names(wd, list(strategies)):
        say(f"loading representation {name}")
        try:
            model = load_model(wd, name, plugins=plugins)
            if model.n_items != ds.n_items:
                raise StageError(f"it scores {model.n_items} items but the dataset has "
                                 f"{ds.n_items}: refit it (lvlmrec represent)")
        except Exception as err:  # noqa: BLE001 - one broken model must not stop the server
            skipped[name] = f"{type(err).__name__}: {err}"
            say(f"skipping representation {name}: {skipped[name]}")
            continue
        strategy = strategies.get(name)
        if index != "exact" and model.item_vectors() is not None:
            say(f"building the {index} index of {name}")
        reps[name] = Representation(
            name, model, strategy, index=index, max_k=max_k, metrics=metrics.get(name),
            text_source=_text_source(wd, strategy, model, text_model))
    if cfg is None:
        raise StageError(f"no config.yaml in {wd.root}: the server loads only the models of "
                         "the run's configured strategies")
    if not reps:
        raise StageError(f"no servable model in {wd.models_dir}: run `lvlmrec represent "
                         f"--workdir {wd.root}` first"
                         + (f" (skipped: {skipped})" if skipped else ""))
    return ServedRun(
        workdir=wd,
        titles=items["title"].fillna("").astype(str).tolist(),
        texts=items["text"].fillna("").astype(str).tolist(),
        descriptions=_descriptions(wd, ds.n_items),
        image_paths=ds.image_paths(wd),
        item_source_ids=items["source_id"].astype(str).tolist(),
        user_source_ids=ds.users["source_id"].astype(str).tolist(),
        history=ds.matrix(("train", "valid")),
        history_order=ds.order_matrix(("train", "valid")),
        test=ds.matrix(("test",)),
        representations=reps,
        skipped=skipped,
        text_model=text_model,
        index_kind=index,
        image_roots=image_roots((ds.info or {}).get("source"), wd.root),
    )


def _saved_config(wd: Workdir) -> RunConfig | None:
    if not wd.config_path.is_file():
        return None
    try:
        data = yaml.safe_load(wd.config_path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{wd.config_path}: not valid YAML: {err}") from None
    return parse_config(data, str(wd.config_path))


def _model_names(wd: Workdir, configured: list[str]) -> list[str]:
    """The run's configured representations that have a saved model, in config order: any
    other folder under models/ is never opened."""
    return [n for n in configured if (wd.model_dir(n) / "model.json").is_file()]


def _metrics(wd: Workdir) -> dict[str, dict[str, float]]:
    if not wd.metrics_path.is_file():
        return {}
    table = pd.read_csv(wd.metrics_path)
    cols = [c for c in table.columns if "@" in c]
    # a cold protocol's n/a rows have no numbers (evaluate/cold.py): left out, not NaN
    return {str(row["representation"]): {c: float(row[c]) for c in cols if pd.notna(row[c])}
            for _, row in table.iterrows()}


def _descriptions(wd: Workdir, n_items: int) -> list[str]:
    """The active description set's text per item ("" where an item has none)."""
    active = read_active(wd)
    if not active or not wd.descriptions_db.is_file():
        return [""] * n_items
    with DescriptionStore(wd.descriptions_db, read_only=True) as store:
        texts = store.texts(active["model"], active["prompt_hash"])
    return [texts.get(i, "") for i in range(n_items)]


def _text_source(wd: Workdir, strategy: StrategyConfig | None, model: Recommender,
                 text_model: str | None) -> str | None:
    """The text source a representation's items are embeddings of, when a search query
    embedded with the run's text encoder lands in the same space."""
    if strategy is None or strategy.kind != "text" or text_model is None:
        return None
    source = getattr(model, "source", None)
    if not isinstance(source, str) or not is_text_source(source):
        return None
    meta = embedding_meta(wd, text_embedding_name(source))
    if meta is not None and "model" in meta:
        from lvlmrec.encode.text import TextEncoder

        if meta["model"] != TextEncoder(text_model).model_id:
            return None
    return source
