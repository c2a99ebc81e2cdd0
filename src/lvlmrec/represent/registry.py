"""Named representation strategies: config entry -> Recommender.

A strategy kind maps to a Recommender class. The config's `text`, `vision` and `scoring`
fields fill the constructor arguments of the same name (a single-source model takes
`source`), `params` fills the rest, and the run seed fills `seed`. Adding a strategy is
writing the class and one `register("kind", Class)` line.
"""

from __future__ import annotations

import inspect
from typing import Any

from lvlmrec.config import StrategyConfig
from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender
from lvlmrec.represent.baselines import Hybrid, ItemKNN, Popularity
from lvlmrec.represent.cf import BPRMF, LightGCN
from lvlmrec.represent.content import ConcatFusion, ContentRecommender, NaiveFusion
from lvlmrec.represent.fusion import AttentionFusion, CrossModalFusion, GatingFusion
from lvlmrec.represent.smore import SMORE

REGISTRY: dict[str, type[Recommender]] = {}


def register(kind: str, cls: type[Recommender]) -> type[Recommender]:
    REGISTRY[kind] = cls
    return cls


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


def load_plugins(modules: list[str]) -> None:
    """Import the modules that register extra kinds (the config's `represent.plugins`)."""
    from lvlmrec.plugins import import_plugins

    import_plugins(modules)


def build(strategy: StrategyConfig, seed: int = 0) -> Recommender:
    """Instantiate the strategy's model with its settings (not fitted)."""
    cls = REGISTRY.get(strategy.kind)
    if cls is None:
        raise ConfigError(
            f"representation {strategy.name!r}: unknown kind {strategy.kind!r}; "
            f"known kinds: {', '.join(sorted(REGISTRY))}"
        )
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
    kwargs.update(strategy.params)
    return cls(**kwargs)


def _required(cls: type, name: str) -> bool:
    param = inspect.signature(cls.__init__).parameters[name]
    return param.default is inspect.Parameter.empty


def sources_of(strategy: StrategyConfig) -> list[str]:
    """The embedding sources a strategy reads (part of its cache key)."""
    out = [s for s in (strategy.text, strategy.vision) if s]
    for key in ("text", "vision", "source"):
        value = strategy.params.get(key)
        if isinstance(value, str):
            out.append(value)
    return out
