"""The represent stage: fit every configured strategy and save it under models/<name>/.

Each fitted model is cached by a key over its settings, the seed, the training data and
the content keys of the embeddings it reads; unchanged strategies are not refitted.

A strategy with searched params (represent/search.py) runs its trials on train, scores
them on validation and keeps the best trial's model as fitted. With several run seeds
(`seeds`), a seeded kind is fitted once per seed with the chosen params: the first seed's
model is models/<name>/ (what serve and the case studies use), the others
models/<name>/seed-<s>/; a deterministic kind is fitted once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from lvlmrec.config import RepresentConfig, SearchConfig, StrategyConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.device import resolve_device
from lvlmrec.encode.store import load_source, source_key
from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.registry import build, kind_class, load_plugins, seeded, sources_of
from lvlmrec.represent.search import (Trial, TrialStore, best_record, concrete, run_search,
                                      search_spec)
from lvlmrec.workdir import (Workdir, atomic_dir, clean_stray_temps, code_key, hash_obj,
                             read_json, to_jsonable, write_csv, write_json)

SEARCH_CSV = "search.csv"


def train_data(ds: Dataset, workdir: Workdir, seed: int = 0, device: str = "cpu",
               show_progress: bool = True) -> TrainData:
    cache: dict[str, object] = {}

    def embedding(source: str):
        if source not in cache:
            cache[source] = load_source(workdir, source)
        return cache[source]

    return TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"), embedding=embedding,
                     seed=seed, device=device, models_dir=workdir.models_dir,
                     show_progress=show_progress, train_order=ds.order_matrix("train"))


def seed_dir(folder: Path, seed: int) -> Path:
    """Where a non-primary seed's fit of a strategy lives."""
    return folder / f"seed-{seed}"


def model_folders(workdir: Workdir, strategy: StrategyConfig,
                  seeds: list[int]) -> dict[int, Path]:
    """seed -> model folder of every fit of the strategy (one for a deterministic kind)."""
    folder = workdir.model_dir(strategy.name)
    if not seeded(strategy):
        return {seeds[0]: folder}
    return {s: folder if i == 0 else seed_dir(folder, s) for i, s in enumerate(seeds)}


def fitted_params(folder: Path) -> dict | None:
    """The concrete params a model folder was fitted with (chosen ones for a search)."""
    path = folder / "fit.json"
    if not path.is_file():
        return None
    record = read_json(path)
    return record.get("params", record.get("strategy", {}).get("params"))


@dataclasses.dataclass
class _Fitter:
    """Fits concrete strategies for one run: shared data, keys and logging."""

    workdir: Workdir
    data: TrainData
    data_key: str
    console: Console
    code: str = ""  # lvlmrec's version and the plugins' source (workdir.code_key)

    def key(self, strategy: StrategyConfig, seed: int, model: Recommender) -> str:
        # the model's repr holds every parameter, defaults included, so a changed default
        # refits
        return hash_obj({"strategy": strategy, "seed": seed, "data": self.data_key,
                         "model": repr(model), "code": self.code,
                         "sources": {s: source_key(self.workdir, s)
                                     for s in sources_of(strategy)}})

    def is_current(self, folder: Path, key: str) -> bool:
        fit_json = folder / "fit.json"
        return fit_json.is_file() and read_json(fit_json).get("key") == key \
            and (folder / "model.json").is_file()

    def fit(self, model: Recommender, seed: int) -> float:
        t0 = time.perf_counter()
        model.fit(dataclasses.replace(self.data, seed=seed))
        return time.perf_counter() - t0

    def save(self, model: Recommender, folder: Path, key: str, strategy: StrategyConfig,
             seed: int, seconds: float, **extra) -> None:
        # saved whole into a temporary folder, then renamed: a killed fit never leaves a
        # half model under the strategy's name; other seeds' fits inside it move along
        with atomic_dir(folder) as tmp:
            model.save(tmp)
            write_json(tmp / "fit.json", {"key": key, "seconds": round(seconds, 3),
                                          "strategy": strategy, "model": repr(model),
                                          "params": strategy.params, "seed": seed, **extra})
            for other in folder.glob("seed-*") if folder.is_dir() else ():
                os.replace(other, tmp / other.name)

    def fit_one(self, strategy: StrategyConfig, seed: int, folder: Path, label: str) -> None:
        """Fit and save one concrete strategy, unless its folder already holds that fit."""
        model = build(strategy, seed)
        key = self.key(strategy, seed, model)
        if self.is_current(folder, key):
            self.console.print(f"  [dim]{label}: cached[/dim]")
            return
        seconds = self.fit(model, seed)
        self.save(model, folder, key, strategy, seed, seconds)
        self.console.print(f"  {label}: fitted {type(model).__name__} in {seconds:.1f}s")

    def search(self, strategy: StrategyConfig, settings: SearchConfig, seed: int,
               folder: Path) -> tuple[dict, list[dict]]:
        """Run (or resume) the strategy's search; models/<name>/ ends holding the best
        trial's model. Returns the chosen params and every trial's record."""
        spec = search_spec(strategy, kind_class(strategy))
        metric = settings.metric
        k = int(metric.split("@")[1])
        self.console.print(f"  {strategy.name}: {settings.method} search over "
                           f"{', '.join(spec.space)} ({spec.size} points) on validation "
                           f"{metric}")

        def key(params: dict) -> str:
            trial = concrete(strategy, params)
            return self.key(trial, seed, build(trial, seed))

        def fit(params: dict):
            model = build(concrete(strategy, params), seed)
            seconds = self.fit(model, seed)
            return model, valid_metrics(model, self.data, k), seconds

        def keep(model: Recommender, record: dict) -> None:
            self.save(model, folder, record["key"], concrete(strategy, record["params"]),
                      seed, record["seconds"])

        records = run_search(strategy.name, spec, settings, seed,
                             TrialStore(self.workdir, strategy.name), Trial(key, fit, keep),
                             lambda line: self.console.print(f"[dim]{line}[/dim]"))
        best = best_record(records)
        chosen = concrete(strategy, best["params"])
        if not self.is_current(folder, best["key"]):
            # the best trial's weights were not kept (a folder deleted or overwritten since)
            self.console.print(f"  [yellow]{strategy.name}: the best trial's model is not "
                               "on disk; fitting it again with its seed[/yellow]")
            model = build(chosen, seed)
            self.save(model, folder, best["key"], chosen, seed, self.fit(model, seed))
        record = read_json(folder / "fit.json")
        record["search"] = {"method": settings.method, "metric": metric,
                            "value": best["value"], "n_trials": len(records),
                            "searched": list(spec.space)}
        write_json(folder / "fit.json", record)
        self.console.print(f"  {strategy.name}: chose "
                           + ", ".join(f"{k}={best['params'][k]}" for k in spec.space)
                           + f" ({metric} {best['value']:.4f} on validation)")
        return best["params"], records


def valid_metrics(model: Recommender, data: TrainData, k: int) -> dict[str, float]:
    """Every metric at K on validation, history = train (the test split is not in `data`)."""
    from lvlmrec.evaluate.ranking import evaluate_model, metric_columns

    users = (data.valid.getnnz(axis=1) > 0).nonzero()[0]
    per_user = evaluate_model(model, users, data.train, data.valid, ks=[k],
                              show_progress=False, order=data.train_order)
    return {c: float(per_user[c].mean()) if len(per_user) else 0.0
            for c in metric_columns([k])}


def fit_all(cfg: RepresentConfig, seed: int, workdir: Workdir, ds: Dataset, data_key: str,
            console: Console, show_progress: bool = True,
            seeds: list[int] | None = None) -> list[Path]:
    """Fit every strategy (searching where asked) for every run seed; `seeds` defaults to
    [seed]. Writes results/search.csv when a strategy searched."""
    load_plugins(cfg.plugins)
    clean_stray_temps(workdir.models_dir, recursive=False)  # what a killed fit left behind
    seeds = list(seeds) if seeds else [seed]
    check_order(cfg, ds)
    data = train_data(ds, workdir, seeds[0], resolve_device(cfg.device), show_progress)
    # lvlmrec's version and the plugins' source join every fit key
    fitter = _Fitter(workdir, data, data_key, console, code_key(cfg.plugins))
    outputs: list[Path] = []
    rows: list[dict] = []
    for strategy in cfg.strategies:
        folder = workdir.model_dir(strategy.name)
        spec = search_spec(strategy, kind_class(strategy))
        if spec.space:
            params, records = fitter.search(strategy, cfg.search, seeds[0], folder)
            rows += [_search_row(strategy.name, r, cfg.search.metric) for r in records]
        else:
            params = spec.fixed
            fitter.fit_one(concrete(strategy, params), seeds[0], folder, strategy.name)
        folders = model_folders(workdir, strategy, seeds)
        for s, path in folders.items():
            if path != folder:
                fitter.fit_one(concrete(strategy, params), s, path,
                               f"{strategy.name} (seed {s})")
        for stale in folder.glob("seed-*"):
            if stale.is_dir() and stale not in folders.values():
                shutil.rmtree(stale)
        outputs.append(folder)
    search_csv = workdir.results_dir / SEARCH_CSV
    if rows:
        write_csv(search_csv, pd.DataFrame(rows))
        outputs.append(search_csv)
    else:
        search_csv.unlink(missing_ok=True)
    return outputs


def check_order(cfg: RepresentConfig, ds: Dataset) -> None:
    """A sequential kind on a dataset without timestamps is a config error, before any fit."""
    if ds.has_order:
        return
    for strategy in cfg.strategies:
        if kind_class(strategy).needs_order:
            raise ConfigError(f"representation {strategy.name!r}: kind {strategy.kind!r} "
                              "orders each history by time, but the dataset has no "
                              "timestamps (use a source with times, e.g. csv time_col, "
                              "amazon, or the synthetic catalog)")


def _search_row(name: str, record: dict, metric: str) -> dict:
    return {"representation": name, "trial": record["trial"],
            "params": _json(record["params"]), "metric": metric, "value": record["value"],
            "best": record["best"], "seconds": record["seconds"], "cached": record["cached"],
            "error": record["error"] or ""}


def _json(obj) -> str:
    import json

    return json.dumps(to_jsonable(obj), sort_keys=True)


def load_model(workdir: Workdir, name: str, seed: int | None = None,
               plugins: list[str] | None = None) -> Recommender:
    """A fitted strategy: the primary fit, or the fit of a non-primary `seed`. Only built-in
    kinds and the kinds of `plugins` load (`Recommender.load`); None: the plugins of the
    run's saved config.yaml (without one, the kinds registered in this process)."""
    if plugins is None:
        plugins = saved_plugins(workdir)
    folder = workdir.model_dir(name)
    return Recommender.load(folder if seed is None else seed_dir(folder, seed), plugins)


def saved_plugins(workdir: Workdir) -> list[str] | None:
    """`represent.plugins` of the workdir's config.yaml (None without one)."""
    import yaml

    if not workdir.config_path.is_file():
        return None
    try:
        data = yaml.safe_load(workdir.config_path.read_text(encoding="utf-8")) or {}
        plugins = (data.get("represent") or {}).get("plugins") or []
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return []
    return [str(p) for p in plugins] if isinstance(plugins, list) else []
