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
from lvlmrec.errors import StageError
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.registry import build, load_plugins, sources_of
from lvlmrec.workdir import Workdir, hash_obj, read_json, write_json


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
    data = train_data(ds, workdir, seed, resolve_device(cfg.device), show_progress)
    outputs: list[Path] = []
    for strategy in cfg.strategies:
        folder = workdir.model_dir(strategy.name)
        model = build(strategy, seed)
        # the model's repr holds every parameter, defaults included, so a changed default refits
        key = hash_obj({"strategy": strategy, "seed": seed, "data": data_key,
                        "model": repr(model),
                        "sources": {s: source_key(workdir, s) for s in sources_of(strategy)}})
        fit_json = folder / "fit.json"
        if fit_json.is_file() and read_json(fit_json).get("key") == key \
                and (folder / "model.json").is_file():
            console.print(f"  [dim]{strategy.name}: cached[/dim]")
        else:
            t0 = time.perf_counter()
            model.fit(data)
            seconds = time.perf_counter() - t0
            model.save(folder)
            write_json(fit_json, {"key": key, "seconds": round(seconds, 3),
                                  "strategy": strategy, "model": repr(model)})
            console.print(f"  {strategy.name}: fitted {type(model).__name__} in {seconds:.1f}s")
        outputs.append(folder)
    return outputs


def load_model(workdir: Workdir, name: str) -> Recommender:
    """A fitted model; the plugins of the workdir's saved config are imported first, so a
    plugin kind loads in every stage, and a class that cannot be found is a clean error."""
    from lvlmrec.plugins import import_plugins

    import_plugins(_saved_plugins(workdir))
    try:
        return Recommender.load(workdir.model_dir(name))
    except (ImportError, AttributeError) as err:
        raise StageError(f"{workdir.model_dir(name) / 'model.json'}: cannot load the model "
                         f"class: {type(err).__name__}: {err} (a plugin kind must be listed "
                         "in represent.plugins)") from None


def _saved_plugins(workdir: Workdir) -> list[str]:
    import yaml

    if not workdir.config_path.is_file():
        return []
    try:
        data = yaml.safe_load(workdir.config_path.read_text()) or {}
    except yaml.YAMLError:
        return []
    plugins = (data.get("represent") or {}).get("plugins") if isinstance(data, dict) else None
    return [str(p) for p in plugins] if isinstance(plugins, list) else []
