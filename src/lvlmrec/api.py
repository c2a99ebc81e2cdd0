"""The Python API: run an experiment and use its models from a notebook.

    import lvlmrec
    results = lvlmrec.Experiment("configs/demo.yaml", "runs/demo").run()   # a DataFrame
    run = lvlmrec.load_run("runs/demo")
    run.recommend("A2XVJBSRI3SWDI", k=10)          # a user's original id
    run.similar_items("B00ZW3SXMU", k=5)
    run.search("red striped summer dress")
    run.recommend_all("lvlm_text", k=100, out="recs.parquet")

A thin layer over what the CLI runs: `Experiment.run` is `lvlmrec run` (same config
loading, stages, caching and resume: `pipeline.run_pipeline`), and `load_run` reads a
finished run the way `lvlmrec serve` does (`serve.service.load_run`); batch top-k is
`lvlmrec recommend`'s code (`serve.batch`). Ids: `by="source_id"` (default) takes and
returns the dataset's original ids; `by="internal"` the run's 0-based row numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.config import RunConfig, named_config, parse_config, resolve_paths
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import ConfigError, LvlmrecError
from lvlmrec.represent.base import Recommender
from lvlmrec.workdir import Workdir

ID_KINDS = ("source_id", "internal")


class Experiment:
    """A configured run in a workdir.

    `config`: a YAML path, the name of a packaged config ("demo"), a mapping with the
    YAML's structure, a `RunConfig`, or None (the workdir's saved config.yaml). Relative
    paths in a mapping are relative to the working directory. `overrides` are
    `--set`-style strings ("describe.batch_size=8").
    """

    def __init__(self, config: str | Path | dict[str, Any] | RunConfig | None = None,
                 workdir: str | Path = "runs/experiment", overrides: list[str] | None = None):
        self.workdir = Workdir(workdir)
        self.config = _load_config(config, Path(workdir), overrides)

    def run(self, stages: list[str] | str | None = None, force: list[str] | str | None = None,
            progress: bool = False, quiet: bool = False) -> pd.DataFrame:
        """Run the stages (all by default; unchanged ones are skipped) and return the test
        results table (`results/metrics.csv`, best first by the report metric); empty when
        no evaluation has run yet."""
        from rich.console import Console

        from lvlmrec.pipeline import run_pipeline

        run_pipeline(self.config, self.workdir, only=_as_list(stages), force=_as_list(force),
                     console=Console(quiet=quiet), show_progress=progress)
        return self.results()

    def results(self, split: str = "test") -> pd.DataFrame:
        """The metrics table of a split (test or valid), best first by the report metric."""
        return results_frame(self.workdir, self.config.report.metric, split)

    def load(self, **kwargs: Any) -> Run:
        """The finished run's models, ready to recommend (`load_run`)."""
        return load_run(self.workdir, **kwargs)


def results_frame(workdir: Workdir, metric: str = "recall@10", split: str = "test"
                  ) -> pd.DataFrame:
    if split not in ("test", "valid"):
        raise ConfigError(f"split must be 'test' or 'valid', not {split!r}")
    path = workdir.metrics_path if split == "test" else \
        workdir.metrics_path.with_name("metrics_valid.csv")
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path)
    if metric in table:
        table = table.sort_values(metric, ascending=False, kind="stable")
    return table.reset_index(drop=True)


def _load_config(config: Any, workdir: Path, overrides: list[str] | None) -> RunConfig:
    from lvlmrec.cli import _apply_sets, load_run_config

    if isinstance(config, RunConfig):
        if overrides:
            data = config.model_dump(mode="json")
            _apply_sets(data, overrides)
            return parse_config(data, "Experiment config")
        return config
    if isinstance(config, dict):
        data = dict(config)
        _apply_sets(data, overrides)
        return resolve_paths(parse_config(data, "Experiment config"), Path.cwd())
    if config is not None:
        path = Path(config)
        if not path.is_file() and path.suffix == "" and "/" not in str(config):
            path = named_config(str(config))
        return load_run_config(path, None, overrides)
    return load_run_config(None, workdir, overrides)


def _as_list(value: list[str] | str | None) -> list[str] | None:
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- a finished run
class Run:
    """A finished run in memory: the dataset, every fitted model, and lookups by id.

    A known user's history is everything the dataset holds for them (train, valid and test
    interactions); those items are not recommended again (`exclude_history=False` keeps
    them), the same as `lvlmrec recommend`.
    """

    def __init__(self, served: Any, dataset: Dataset, metric: str = "recall@10"):
        self.served = served
        self.dataset = dataset
        self.workdir = served.workdir
        self.metric = metric
        self.history = dataset.matrix(("train", "valid", "test"))
        #: its time positions (None without timestamps): sequential models read the order
        self.history_order = dataset.order_matrix(("train", "valid", "test"))
        self._users = {s: i for i, s in enumerate(served.user_source_ids)}
        self._items = {s: i for i, s in enumerate(served.item_source_ids)}

    # ------------------------------------------------------------------ what is there
    @property
    def models(self) -> dict[str, Recommender]:
        """Every fitted model by representation name."""
        return {name: rep.model for name, rep in self.served.representations.items()}

    @property
    def representations(self) -> list[str]:
        """Names, best first by the report metric when the run was evaluated."""
        from lvlmrec.serve.service import ranked_representations

        return ranked_representations(self.served, self.metric)

    @property
    def items(self) -> pd.DataFrame:
        return self.dataset.items

    @property
    def users(self) -> pd.DataFrame:
        return self.dataset.users

    def results(self, split: str = "test") -> pd.DataFrame:
        return results_frame(self.workdir, self.metric, split)

    # ------------------------------------------------------------------ ids
    def user_id(self, user: Any, by: str = "source_id") -> int:
        """The internal id of a user given by original id (or internal id)."""
        return _lookup(user, by, self._users, self.served.n_users, "user")

    def item_id(self, item: Any, by: str = "source_id") -> int:
        return _lookup(item, by, self._items, self.served.n_items, "item")

    def _rep(self, name: str | None):
        reps = self.served.representations
        if name is None:
            return reps[self.representations[0]]
        if name not in reps:
            raise ConfigError(f"unknown representation {name!r}; known: {', '.join(reps)}")
        return reps[name]

    def _frame(self, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        ids = np.asarray(ids, dtype=np.int64)
        return pd.DataFrame({
            "rank": np.arange(1, len(ids) + 1),
            "item_id": ids,
            "source_id": [self.served.item_source_ids[i] for i in ids],
            "title": [self.served.titles[i] for i in ids],
            "score": np.asarray(scores, dtype=np.float64),
        })

    # ------------------------------------------------------------------ queries
    def recommend(self, user: Any, k: int = 10, representation: str | None = None,
                  by: str = "source_id", exclude_history: bool = True) -> pd.DataFrame:
        """Top-k items for a known user: rank, item_id, source_id, title, score."""
        u = self.user_id(user, by)
        from lvlmrec.represent.sequential import user_sequence

        hist = user_sequence(self.history, self.history_order, u)
        ids, scores = self._rep(representation).model.recommend(
            hist, k=k, user_id=u, exclude_history=exclude_history)
        return self._frame(ids, scores)

    def recommend_items(self, items: list[Any], k: int = 10, representation: str | None = None,
                        by: str = "source_id") -> pd.DataFrame:
        """Top-k for a new user given the items they interacted with, oldest first (never
        recommended; sequential representations read this order)."""
        from lvlmrec.represent.sequential import latest_unique

        hist = latest_unique([self.item_id(i, by) for i in items])
        ids, scores = self._rep(representation).recommend(hist, k)
        return self._frame(ids, scores)

    def similar_items(self, item: Any, k: int = 10, representation: str | None = None,
                      by: str = "source_id") -> pd.DataFrame:
        """The k items nearest to one item in a representation's item space."""
        ids, scores = self._rep(representation).similar(self.item_id(item, by), k)
        return self._frame(ids, scores)

    def search(self, text: str, k: int = 10, representation: str | None = None
               ) -> pd.DataFrame:
        """Items whose text embedding is nearest to a free-text query."""
        _, ids, scores = self.served.search(text, k, representation)
        return self._frame(ids, scores)

    def recommend_all(self, representation: str | None = None, k: int = 100,
                      users: list[Any] | None = None, by: str = "source_id",
                      out: str | Path | None = None, include_history: bool = False,
                      block_size: int = 1024, progress: bool = False) -> pd.DataFrame | int:
        """Top-k of every user (or of `users`): a DataFrame of user_source_id, rank,
        item_source_id, score; with `out` (.parquet or .csv) the rows go to that file and
        the number of rows is returned (what `lvlmrec recommend` does)."""
        from lvlmrec.serve.batch import (COLUMNS, block_frame, check_output, topk_blocks,
                                         write_recommendations)

        rep = self._rep(representation)
        ids = np.arange(self.served.n_users, dtype=np.int64) if users is None else \
            np.asarray([self.user_id(u, by) for u in users], dtype=np.int64)
        if out is not None:
            check_output(Path(out))
        blocks = topk_blocks(rep.model, self.history, ids, k, block_size, include_history,
                             progress, order=self.history_order)
        user_ids = np.asarray(self.served.user_source_ids, dtype=object)
        item_ids = np.asarray(self.served.item_source_ids, dtype=object)
        if out is not None:
            return write_recommendations(Path(out), blocks, user_ids, item_ids)
        frames = [block_frame(*block, user_ids, item_ids) for block in blocks]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def _lookup(value: Any, by: str, table: dict[str, int], n: int, what: str) -> int:
    if by == "source_id":
        key = str(value)
        if key not in table:
            raise LvlmrecError(f"unknown {what} source id {key!r}")
        return table[key]
    if by == "internal":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or not 0 <= int(value) < n:
            raise LvlmrecError(f"unknown internal {what} id {value!r}: ids are 0..{n - 1}")
        return int(value)
    raise ConfigError(f"by must be one of {', '.join(ID_KINDS)}, not {by!r}")


def load_run(workdir: str | Path | Workdir, index: str = "exact", max_k: int = 1000) -> Run:
    """Read a finished run (dataset, fitted models, descriptions, metrics)."""
    from lvlmrec.serve.service import _saved_config
    from lvlmrec.serve.service import load_run as load_served

    served = load_served(workdir, index=index, max_k=max_k)
    cfg = _saved_config(served.workdir)
    metric = cfg.report.metric if cfg is not None else "recall@10"
    return Run(served, Dataset.load(served.workdir, features=False), metric)


__all__ = ["Experiment", "Run", "load_run"]
