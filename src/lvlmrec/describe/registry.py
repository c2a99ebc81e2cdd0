"""Describer backends by name (`describe.backend` in config, `--backend` on the CLI)."""

from __future__ import annotations

from collections.abc import Callable

from lvlmrec.config import DescribeConfig
from lvlmrec.describe.base import Describer
from lvlmrec.errors import ConfigError

Factory = Callable[[DescribeConfig], Describer]
BACKENDS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        BACKENDS[name] = factory
        return factory

    return deco


@register("attributes")
def _attributes(cfg: DescribeConfig) -> Describer:
    from lvlmrec.describe.attributes import AttributesDescriber

    return AttributesDescriber(**cfg.attributes.model_dump(), device=cfg.device)


def make_describer(cfg: DescribeConfig) -> Describer:
    factory = BACKENDS.get(cfg.backend)
    if factory is None:
        raise ConfigError(f"describe.backend: unknown backend {cfg.backend!r}; "
                          f"known: {', '.join(sorted(BACKENDS))}")
    return factory(cfg)
