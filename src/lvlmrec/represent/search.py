"""Hyperparameter search on validation, the same for every strategy kind.

A strategy's `params` may name several values for a parameter: a list (`reg_weight: [1e-4,
1e-2]`), or `{search: [...]}`, which is also how a parameter that itself takes a list (the
hybrid's `weight_grid`) or a mapping is searched; a plain list given to such a parameter
is its value. `search: default` on the strategy adds the kind's `search_space` (values in
`params` override it). `represent.search` says how the space is explored: `grid` (every
combination, in config order), `random` or `tpe` (optuna, seeded by the run seed, at most
`n_trials` distinct combinations).

Every trial fits on train and is scored on validation (history = train) by the evaluator;
the test split is never read. The best trial (first in proposal order on a tie) is kept as
fitted, never refitted. Finished trials are recorded one file each under
`.lvlmrec/search/<name>/` by a key over the concrete settings (the same key a plain fit of
those settings gets), so a killed search resumes where it stopped, a grid that grows runs
only its new points, and optuna's samplers are replayed from the record deterministically.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvlmrec.config import SearchConfig, StrategyConfig
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.workdir import Workdir, read_json, write_json

_LIST_TYPE = re.compile(r"\b(list|tuple|List|Tuple|Sequence)\b")
_MAP_TYPE = re.compile(r"\b(dict|Dict|Mapping)\b")


# --------------------------------------------------------------------------- the space
@dataclasses.dataclass
class SearchSpec:
    """A strategy's params split into fixed values and searched candidates."""

    fixed: dict[str, Any]
    space: dict[str, list]  # param -> candidate values (config order, no repeats)

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.space.values())

    def first(self) -> dict[str, Any]:
        """The params of the first grid point (what `registry.build` instantiates)."""
        return {**self.fixed, **{k: v[0] for k, v in self.space.items()}}


def _annotation(cls: type, name: str) -> tuple[str, Any]:
    param = inspect.signature(cls.__init__).parameters.get(name)
    if param is None:
        return "", inspect.Parameter.empty
    ann = param.annotation
    return (ann if isinstance(ann, str) else repr(ann)), param.default


def takes_list(cls: type, name: str) -> bool:
    """Does the parameter itself take a list (so a plain list is its value)?"""
    ann, default = _annotation(cls, name)
    return bool(_LIST_TYPE.search(ann)) or isinstance(default, (list, tuple))


def takes_mapping(cls: type, name: str) -> bool:
    ann, default = _annotation(cls, name)
    return bool(_MAP_TYPE.search(ann)) or isinstance(default, dict)


def _candidates(strategy: StrategyConfig, cls: type, key: str, value: Any) -> list | None:
    """The values searched for `key`, or None when `value` is a plain setting."""
    where = f"representation {strategy.name!r}: params.{key}"
    if isinstance(value, dict) and set(value) == {"search"} and not takes_mapping(cls, key):
        values = value["search"]
        if not isinstance(values, list):
            raise ConfigError(f"{where}: `search` takes a list of values to try")
    elif isinstance(value, list) and not takes_list(cls, key):
        values = value
    else:
        return None
    if not values:
        raise ConfigError(f"{where}: an empty list searches nothing; give the values to try "
                          "(one value is a fixed setting)")
    unique: dict[str, Any] = {}
    for v in values:
        unique.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    return list(unique.values())


def search_spec(strategy: StrategyConfig, cls: type) -> SearchSpec:
    """Fixed and searched params of a strategy; a config error names the strategy and key."""
    space: dict[str, list] = {}
    if strategy.search == "default":
        default = getattr(cls, "search_space", None) or {}
        if not default:
            raise ConfigError(f"representation {strategy.name!r}: search: default, but kind "
                              f"{strategy.kind!r} has no default search space; list the "
                              "values to try in `params` instead")
        for key, values in default.items():
            space[key] = _candidates(strategy, cls, key, {"search": list(values)})
    fixed: dict[str, Any] = {}
    for key, value in strategy.params.items():
        values = _candidates(strategy, cls, key, value)
        if values is None:
            fixed[key] = value
            space.pop(key, None)
        else:
            space[key] = values
    return SearchSpec(fixed, space)


def concrete(strategy: StrategyConfig, params: dict[str, Any]) -> StrategyConfig:
    """The strategy with one value per param and no search (a trial, or the chosen one)."""
    return strategy.model_copy(update={"params": dict(params), "search": None})


# --------------------------------------------------------------------------- trial record
class TrialStore:
    """Finished trials of one strategy: one JSON file per trial key (written atomically,
    so a kill never leaves half a record)."""

    def __init__(self, workdir: Workdir, name: str):
        self.folder = workdir.root / ".lvlmrec" / "search" / name

    def _path(self, key: str) -> Path:
        return self.folder / f"{key[:32]}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = read_json(path)
        except ValueError:
            return None
        return record if record.get("key") == key else None

    def put(self, record: dict) -> None:
        write_json(self._path(record["key"]), record)


@dataclasses.dataclass
class Trial:
    """What one trial needs from the caller: its key, and how to fit and keep it."""

    key: Callable[[dict], str]  # params -> fit key of the concrete strategy
    fit: Callable[[dict], tuple[Any, dict[str, float], float]]  # -> model, valid metrics, s
    keep: Callable[[Any, dict], None]  # save a new best model (its record given)


def run_search(name: str, spec: SearchSpec, settings: SearchConfig, seed: int,
               store: TrialStore, trial: Trial, log: Callable[[str], None]) -> list[dict]:
    """Every trial's record (finished or replayed from `store`), in proposal order; the
    best one is flagged `best`. Raises StageError when no trial could be fitted."""
    records: list[dict] = []
    best: dict | None = None

    def run(params: dict) -> dict:
        nonlocal best
        key = trial.key(params)
        record = store.get(key)
        if record is None or settings.metric not in record.get("metrics", {}) \
                and record.get("error") is None:
            try:
                model, metrics, seconds = trial.fit(params)
                record = {"key": key, "params": params, "metrics": metrics,
                          "seconds": round(seconds, 3), "error": None}
            except (StageError, ValueError) as err:
                model, record = None, {"key": key, "params": params, "metrics": {},
                                       "seconds": None, "error": str(err)}
            value = record["metrics"].get(settings.metric)
            if model is not None and (best is None or value > best["value"]):
                trial.keep(model, {**record, "value": value})
            store.put(record)
            cached = False
        else:
            cached = True
        value = record["metrics"].get(settings.metric)
        row = {**record, "trial": len(records), "value": value, "cached": cached}
        records.append(row)
        if value is not None and (best is None or value > best["value"]):
            best = row
        shown = "failed: " + record["error"] if record["error"] else \
            f"{settings.metric} {value:.4f}"
        searched = ", ".join(f"{k}={params[k]}" for k in spec.space)
        log(f"    trial {row['trial']} {searched}: {shown}" + (" (cached)" if cached else ""))
        return row

    if settings.method == "grid":
        for combo in itertools.product(*spec.space.values()):
            run({**spec.fixed, **dict(zip(spec.space, combo))})
    else:
        _optuna_search(spec, settings, seed, run)
    if best is None:
        raise StageError(f"representation {name!r}: every search trial failed; first "
                         f"error: {records[0]['error']}")
    for row in records:
        row["best"] = row is best
    return records


def _optuna_search(spec: SearchSpec, settings: SearchConfig, seed: int,
                   run: Callable[[dict], dict]) -> None:
    """Ask optuna for up to n_trials distinct points of the (categorical) space. A point
    asked again is told its recorded value without a new fit."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.RandomSampler(seed=seed) if settings.method == "random"
               else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # indices, not values: categorical choices must be scalars, and lists may be searched
    dists = {k: CategoricalDistribution(list(range(len(v)))) for k, v in spec.space.items()}
    target = min(settings.n_trials, spec.size)
    seen: dict[tuple, float | None] = {}
    attempts = 0
    while len(seen) < target and attempts < 50 * target:
        attempts += 1
        asked = study.ask(dists)
        index = tuple(asked.params[k] for k in spec.space)
        if index not in seen:
            params = {k: spec.space[k][i] for k, i in zip(spec.space, index)}
            seen[index] = run({**spec.fixed, **params})["value"]
        if seen[index] is None:
            study.tell(asked, state=TrialState.FAIL)
        else:
            study.tell(asked, seen[index])


def best_record(records: list[dict]) -> dict:
    return next(r for r in records if r["best"])
