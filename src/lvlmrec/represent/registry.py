"""Named representation strategies: config entry -> Recommender.

A strategy kind maps to a Recommender class. The config's `text`, `vision` and `scoring`
fields fill the constructor arguments of the same name (a single-source model takes
`source`), `params` fills the rest, and the run seed fills `seed`. Adding a strategy is
writing the class and one `register("kind", Class)` line.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from lvlmrec.config import StrategyConfig
from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender
from lvlmrec.represent.baselines import Hybrid, ItemKNN, Popularity
from lvlmrec.represent.cf import BPRMF, LightGCN
from lvlmrec.represent.content import ConcatFusion, ContentRecommender, NaiveFusion
from lvlmrec.represent.fusion import AttentionFusion, CrossModalFusion, GatingFusion
from lvlmrec.represent.linear import EASE, IALS
from lvlmrec.represent.search import search_spec
from lvlmrec.represent.sequential import GRU4Rec, SASRec
from lvlmrec.represent.smore import SMORE

REGISTRY: dict[str, type[Recommender]] = {}
#: the module whose `register` call added each class (what `loadable_class` trusts)
ORIGIN: dict[type, str] = {}


def register(kind: str, cls: type[Recommender]) -> type[Recommender]:
    REGISTRY[kind] = cls
    ORIGIN.setdefault(cls, sys._getframe(1).f_globals.get("__name__", ""))
    return cls


def class_name(cls: type) -> str:
    """How model.json names a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def loadable_class(name: str, plugins: list[str] | None = None) -> type[Recommender] | None:
    """The registered class a saved model names, or None: nothing is imported here.

    With `plugins` (a run's `represent.plugins`), only built-in kinds and kinds registered
    by those modules (or defined in them) count; with None, any kind registered so far."""
    if plugins is not None:
        from lvlmrec.plugins import module_name

        load_plugins(plugins)
        plugins = [module_name(p) for p in plugins]
    for cls in REGISTRY.values():
        if class_name(cls) != name:
            continue
        if plugins is None:
            return cls
        for module in (cls.__module__, ORIGIN.get(cls, "")):
            if module == "lvlmrec" or module.startswith("lvlmrec.") or any(
                    module == p or module.startswith(p + ".") for p in plugins):
                return cls
    return None


register("text", ContentRecommender)
register("vision", ContentRecommender)
register("content", ContentRecommender)
register("naive", NaiveFusion)
register("concat", ConcatFusion)
register("attention", AttentionFusion)
register("gating", GatingFusion)
register("cross_attention", CrossModalFusion)
register("popularity", Popularity)
register("itemknn", ItemKNN)
register("hybrid", Hybrid)
register("smore", SMORE)
register("bpr", BPRMF)
register("lightgcn", LightGCN)
register("ease", EASE)
register("ials", IALS)
register("sasrec", SASRec)
register("gru4rec", GRU4Rec)


def load_plugins(modules: list[str]) -> None:
    """Import the modules that register extra kinds (the config's `represent.plugins`)."""
    from lvlmrec.plugins import import_plugins

    import_plugins(modules)


def kind_class(strategy: StrategyConfig) -> type[Recommender]:
    cls = REGISTRY.get(strategy.kind)
    if cls is None:
        raise ConfigError(
            f"representation {strategy.name!r}: unknown kind {strategy.kind!r}; "
            f"known kinds: {', '.join(sorted(REGISTRY))}"
        )
    return cls


def seeded(strategy: StrategyConfig) -> bool:
    """Does the kind take a seed (so several seeds give several fits)?"""
    return "seed" in inspect.signature(kind_class(strategy).__init__).parameters


def build(strategy: StrategyConfig, seed: int = 0) -> Recommender:
    """Instantiate the strategy's model with its settings (not fitted).

    A strategy with a search (represent/search.py) is checked whole (every searched key
    accepted, no empty list) and built with the first value of each searched param.
    """
    cls = kind_class(strategy)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs: dict[str, Any] = {}
    if "source" in accepted:
        src = strategy.vision if strategy.kind == "vision" else (strategy.text or strategy.vision)
        if src is None:
            raise ConfigError(f"representation {strategy.name!r}: set `text` or `vision`")
        kwargs["source"] = src
    for field in ("text", "vision"):
        value = getattr(strategy, field)
        if field in accepted:
            if value is None and _required(cls, field):
                raise ConfigError(f"representation {strategy.name!r}: `{field}` is required "
                                  f"for kind {strategy.kind!r}")
            if value is not None:
                kwargs[field] = value
    if "scoring" in accepted:
        kwargs["scoring"] = strategy.scoring
    elif strategy.scoring != "mean":
        raise ConfigError(f"representation {strategy.name!r}: kind {strategy.kind!r} has no "
                          f"`scoring` option (it is not a content representation)")
    if "seed" in accepted:
        kwargs["seed"] = seed
    unknown = set(strategy.params) - accepted
    if unknown:
        raise ConfigError(
            f"representation {strategy.name!r}: unknown params {sorted(unknown)} for kind "
            f"{strategy.kind!r}; accepted: {sorted(accepted)}"
        )
    kwargs.update(search_spec(strategy, cls).first())
    model = cls(**kwargs)
    try:
        model.check_params()
    except ConfigError as err:
        raise ConfigError(f"representation {strategy.name!r} (kind {strategy.kind!r}): "
                          f"{err}") from None
    return model


def _required(cls: type, name: str) -> bool:
    param = inspect.signature(cls.__init__).parameters[name]
    return param.default is inspect.Parameter.empty


def sources_of(strategy: StrategyConfig) -> list[str]:
    """The embedding sources a strategy reads (part of its cache key)."""
    return strategy.sources()
