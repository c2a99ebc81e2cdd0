"""The represent stage: fit every configured strategy and save it under models/<name>/.

Each fitted model is cached by a key over its settings, the seed, the training data and
the content keys of the embeddings it reads; unchanged strategies are not refitted.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from lvlmrec.config import RepresentConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.device import resolve_device
from lvlmrec.encode.store import load_source, source_key
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.registry import build, load_plugins, sources_of
from lvlmrec.workdir import (Workdir, atomic_dir, clean_stray_temps, code_key, hash_obj,
                             read_json, write_json)


def train_data(ds: Dataset, workdir: Workdir, seed: int = 0, device: str = "cpu",
               show_progress: bool = True) -> TrainData:
    cache: dict[str, object] = {}

    def embedding(source: str):
        if source not in cache:
            cache[source] = load_source(workdir, source)
        return cache[source]

    return TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"), embedding=embedding,
                     seed=seed, device=device, models_dir=workdir.models_dir,
                     show_progress=show_progress)


def fit_all(cfg: RepresentConfig, seed: int, workdir: Workdir, ds: Dataset, data_key: str,
            console: Console, show_progress: bool = True) -> list[Path]:
    load_plugins(cfg.plugins)
    clean_stray_temps(workdir.models_dir, recursive=False)  # what a killed fit left behind
    data = train_data(ds, workdir, seed, resolve_device(cfg.device), show_progress)
    code = code_key(cfg.plugins)  # lvlmrec's version and the plugins' source
    outputs: list[Path] = []
    for strategy in cfg.strategies:
        folder = workdir.model_dir(strategy.name)
        model = build(strategy, seed)
        # the model's repr holds every parameter, defaults included, so a changed default refits
        key = hash_obj({"strategy": strategy, "seed": seed, "data": data_key,
                        "model": repr(model), "code": code,
                        "sources": {s: source_key(workdir, s) for s in sources_of(strategy)}})
        fit_json = folder / "fit.json"
        if fit_json.is_file() and read_json(fit_json).get("key") == key \
                and (folder / "model.json").is_file():
            console.print(f"  [dim]{strategy.name}: cached[/dim]")
        else:
            t0 = time.perf_counter()
            model.fit(data)
            seconds = time.perf_counter() - t0
            # saved whole into a temporary folder, then renamed: a killed fit never leaves
            # a half model under the strategy's name
            with atomic_dir(folder) as tmp:
                model.save(tmp)
                write_json(tmp / "fit.json", {"key": key, "seconds": round(seconds, 3),
                                              "strategy": strategy, "model": repr(model)})
            console.print(f"  {strategy.name}: fitted {type(model).__name__} in {seconds:.1f}s")
        outputs.append(folder)
    return outputs


def load_model(workdir: Workdir, name: str, plugins: list[str] | None = None) -> Recommender:
    """A fitted strategy. Only built-in kinds and the kinds of `plugins` load
    (`Recommender.load`); None: the plugins of the run's saved config.yaml (without one,
    the kinds registered in this process)."""
    if plugins is None:
        plugins = saved_plugins(workdir)
    return Recommender.load(workdir.model_dir(name), plugins)


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
