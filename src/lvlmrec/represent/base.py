"""One recommender protocol shared by every representation.

scikit-learn style: parameters in `__init__`, work in `fit`, learned state in attributes
ending with `_`. After `fit`, every model answers `score(user_ids, history)`: the scores of
all items for a block of users, given each user's known items as rows of a sparse matrix.
The evaluator, the report and the server only ever call that, so no model is special-cased.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from lvlmrec.errors import ConfigError, StageError
from lvlmrec.workdir import atomic_path, write_json


@dataclasses.dataclass
class TrainData:
    """What a model may learn from. Test interactions are never part of it."""

    train: sp.csr_matrix  # users x items, binary
    valid: sp.csr_matrix  # users x items, binary (early stopping and selection only)
    embedding: Callable[[str], np.ndarray]  # source name -> (n_items, d) array
    seed: int = 0
    device: str = "cpu"
    models_dir: Path | None = None
    show_progress: bool = True
    #: users x items positions 1..n of each user's train items in time order (same
    #: non-zeros as `train`); None when the dataset has no timestamps
    train_order: sp.csr_matrix | None = None

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def valid_recall(self, model: Recommender, k: int = 20) -> float:
        """Mean Recall@k on validation with training history masked (for early stopping)."""
        from lvlmrec.evaluate.ranking import evaluate_model

        users = np.flatnonzero(np.diff(self.valid.indptr) > 0)
        per_user = evaluate_model(model, users, self.train, self.valid, ks=[k],
                                  show_progress=False, order=self.train_order)
        return float(per_user[f"recall@{k}"].mean()) if len(per_user) else 0.0


class Recommender:
    """Base class. Subclasses implement `fit` and `score`; the rest comes for free."""

    #: a short human name for tables; the registry name is the config's `name`.
    label: str = ""
    #: param -> values tried by `search: default` (represent/search.py); empty: none
    search_space: ClassVar[dict[str, list]] = {}
    #: whether `score` ranks an item that had no training interaction on something learned
    #: about it (its content); models that cannot are "n/a" under the cold protocols
    scores_unseen_items: ClassVar[bool] = False
    #: True: `score` takes `history_order` (time positions of the history's items) and the
    #: data needs timestamps (sequential models); set-based models never see the order
    needs_order: ClassVar[bool] = False

    # ------------------------------------------------------------------ protocol
    def fit(self, data: TrainData) -> Recommender:
        raise NotImplementedError

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """(len(user_ids), n_items) float32 scores; `history` has one row per user."""
        raise NotImplementedError

    def item_vectors(self) -> np.ndarray | None:
        """Item embeddings in the space `score` works in, when the model has one."""
        return getattr(self, "item_vectors_", None)

    # ------------------------------------------------------------------ derived
    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def recommend(
        self,
        history_items: list[int] | np.ndarray,
        k: int = 10,
        user_id: int = -1,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids and scores for one user given their known items."""
        history_items = np.asarray(history_items, dtype=np.int64)
        hist = sp.csr_matrix(
            (np.ones(len(history_items), np.float32),
             (np.zeros(len(history_items), np.int64), history_items)),
            shape=(1, self.n_items),
        )
        hist.sum_duplicates()
        hist.data[:] = 1.0
        scores = self.score(np.array([user_id]), hist)[0].astype(np.float64)
        if exclude_history and len(history_items):
            scores[history_items] = -np.inf
        return top_k(scores, k)

    def similar_items(self, item_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to one item (cosine in the model's item space)."""
        vecs = self.item_vectors()
        if vecs is None:
            hist_ids, hist_scores = self.recommend([item_id], k=k)
            return hist_ids, hist_scores
        v = np.asarray(vecs, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1)
        norms[norms == 0] = 1.0
        scores = (v @ v[item_id]) / (norms * norms[item_id])
        scores = scores.astype(np.float64)
        scores[item_id] = -np.inf
        return top_k(scores, k)

    # ------------------------------------------------------------------ params and state
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"
                and sig.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                   inspect.Parameter.VAR_KEYWORD)]

    def check_params(self) -> None:
        """Raise ConfigError naming a parameter this model cannot be fitted with. Cheap: no
        data. `registry.build` calls it, so `lvlmrec run` reports it before any stage runs."""

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def _state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()
                if k.endswith("_") and not k.startswith("_")}

    def is_fitted(self) -> bool:
        return bool(self._state())

    def save(self, path: str | Path) -> list[Path]:
        """Write params (JSON) and learned state (arrays) into folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dense: dict[str, np.ndarray] = {}
        scalars: dict[str, Any] = {}
        written: list[Path] = []
        for key, value in self._state().items():
            if sp.issparse(value):
                target = path / f"{key}.npz"
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as fh:
                        sp.save_npz(fh, sp.csr_matrix(value))
                written.append(target)
            elif isinstance(value, np.ndarray):
                dense[key] = value
            else:
                scalars[key] = value
        arrays = path / "state.npz"
        with atomic_path(arrays) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **dense)
        written.append(arrays)
        meta = path / "model.json"
        write_json(meta, {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.get_params(),
            "scalars": scalars,
        })
        written.append(meta)
        return written

    @classmethod
    def load(cls, path: str | Path, plugins: list[str] | None = None) -> Recommender:
        """The model saved in folder `path`. Its model.json may only name a registered class
        (a built-in kind, or one registered by a module of `plugins`; None allows any kind
        registered in this process): anything else is refused before it is imported or
        called, so a crafted model folder never runs code (docs/representations.md)."""
        from lvlmrec.represent.registry import loadable_class

        path = Path(path)
        meta_path = path / "model.json"
        if not meta_path.is_file():
            raise StageError(f"no saved model in {path}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise StageError(f"{meta_path}: not valid JSON: {err}") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("class"), str):
            raise StageError(f"{meta_path}: no \"class\" entry naming the model's class")
        klass = loadable_class(meta["class"], plugins)
        if klass is None:
            raise StageError(f"refusing to load the model in {path}: its class "
                             f"{meta['class']!r} is not a registered representation kind "
                             "(built-in, or registered by a plugin of represent.plugins)")
        params, scalars = meta.get("params", {}), meta.get("scalars", {})
        if not isinstance(params, dict) or set(params) - set(klass._param_names()):
            raise StageError(f"{meta_path}: params {params!r} are not parameters of "
                             f"{klass.__name__}")
        if not isinstance(scalars, dict) or not all(_is_state_name(k) for k in scalars):
            raise StageError(f"{meta_path}: scalars must be learned attributes (name_)")
        model = klass(**params)
        for key, value in scalars.items():
            setattr(model, key, value)
        try:
            with np.load(path / "state.npz") as npz:  # allow_pickle is False: arrays only
                for key in npz.files:
                    if not _is_state_name(key):
                        raise StageError(f"{path / 'state.npz'}: {key!r} is not a learned "
                                         "attribute")
                    setattr(model, key, npz[key])
            for sparse_file in path.glob("*_.npz"):
                if _is_state_name(sparse_file.stem):
                    setattr(model, sparse_file.stem, sp.load_npz(sparse_file).tocsr())
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise StageError(f"cannot read the model state in {path}: {err}") from None
        model._load_extra(path)
        return model

    def _load_extra(self, path: Path) -> None:
        """Restore what a subclass's `save` wrote beside the generic state (torch weights)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


# --------------------------------------------------------------------------- param checks
def check_int(name: str, value: Any, low: int = 1, allow_none: bool = False) -> None:
    """An integer parameter of at least `low` (None too when `allow_none`)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} = {value!r}: expected an integer >= {low}")


def check_number(name: str, value: Any, low: float | None = 0.0, high: float | None = None,
                 strict: bool = False) -> None:
    """A number in [low, high] (or (low, high] when `strict`)."""
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) \
        and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = f"{'>' if strict else '>='} {low}" if low is not None else "finite"
        raise ConfigError(f"{name} = {value!r}: expected a number {bounds}"
                          + (f" and <= {high}" if high is not None else ""))


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} = {value!r}: expected one of {', '.join(map(str, choices))}")


def _is_state_name(name: object) -> bool:
    """Learned state is restored only into `name_` attributes, never over methods."""
    return isinstance(name, str) and name.endswith("_") and not name.startswith("_") \
        and name.isidentifier()


def top_k(scores: np.ndarray, k: int, tie_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest finite scores, best first; equal scores are
    ordered by the seeded permutation the evaluator uses (`evaluate.ranking.tie_order`),
    never by the lower id."""
    from lvlmrec.evaluate.ranking import tie_order

    finite = np.flatnonzero(np.isfinite(scores))
    k = min(k, len(finite))
    if k == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    vals = scores[finite]
    part = np.argpartition(-vals, k - 1)[:k] if k < len(vals) else np.arange(len(vals))
    # include every item tied with the k-th score so the tie-break is exact
    kth = vals[part].min()
    cand = np.flatnonzero(vals >= kth)
    order = np.lexsort((tie_order(len(scores), tie_seed)[finite[cand]], -vals[cand]))[:k]
    idx = finite[cand[order]]
    return idx.astype(np.int64), scores[idx]


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def binary_csr(matrix) -> sp.csr_matrix:
    """A float32 CSR copy with every stored non-zero set to 1 (duplicates merged)."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out
