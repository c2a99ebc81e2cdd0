"""Describer backends by name (`describe.backend` in config, `--backend` on the CLI)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

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


def build_with_options(cls: type[Describer], cfg: DescribeConfig,
                       **settings: Any) -> Describer:
    """`cls(**settings, **cfg.options)`; an option the backend lacks is a config error."""
    accepted = set(inspect.signature(cls).parameters) - set(settings)
    unknown = sorted(set(cfg.options) - accepted)
    if unknown:
        raise ConfigError(f"describe.options: {', '.join(map(repr, unknown))} is not an option "
                          f"of backend {cfg.backend!r}; its options: "
                          f"{', '.join(sorted(accepted)) or 'none'}")
    return cls(**settings, **cfg.options)


def prompted_settings(cfg: DescribeConfig) -> dict[str, Any]:
    """What every LVLM backend takes from the describe section (model only when given)."""
    from lvlmrec.describe.prompts import resolve_prompt

    settings: dict[str, Any] = {
        "prompt": resolve_prompt(cfg.prompt, cfg.include_title, cfg.prompts),
        "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
        "top_p": cfg.top_p, "seed": cfg.seed}
    if cfg.model:
        settings["model"] = cfg.model
    return settings


@register("attributes")
def _attributes(cfg: DescribeConfig) -> Describer:
    from lvlmrec.describe.attributes import AttributesDescriber

    if cfg.options:
        raise ConfigError("describe.options: the attributes backend takes its settings from "
                          "describe.attributes, not describe.options")
    return AttributesDescriber(**cfg.attributes.model_dump(), device=cfg.device)


@register("hf")
def _hf(cfg: DescribeConfig) -> Describer:
    from lvlmrec.describe.hf import HFDescriber

    return build_with_options(HFDescriber, cfg, device=cfg.device, **prompted_settings(cfg))


@register("openai")
def _openai(cfg: DescribeConfig) -> Describer:
    from lvlmrec.describe.openai_compat import OpenAIDescriber

    if not cfg.model:
        raise ConfigError("describe.model: the openai backend needs the model name the "
                          "server knows (--model NAME)")
    return build_with_options(OpenAIDescriber, cfg, **prompted_settings(cfg))


@register("vllm")
def _vllm(cfg: DescribeConfig) -> Describer:
    from lvlmrec.describe.vllm_backend import VLLMDescriber

    return build_with_options(VLLMDescriber, cfg, **prompted_settings(cfg))


def make_describer(cfg: DescribeConfig) -> Describer:
    factory = BACKENDS.get(cfg.backend)
    if factory is None:
        raise ConfigError(f"describe.backend: unknown backend {cfg.backend!r}; "
                          f"known: {', '.join(sorted(BACKENDS))}")
    return factory(cfg)
