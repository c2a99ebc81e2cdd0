"""Typed run configuration, loaded from YAML.

Every section forbids unknown keys, so a typo is an error that names the key and the
file instead of a silently ignored setting. Each stage hashes only its own section (plus
its inputs), so editing the report settings never re-runs the describer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from lvlmrec.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- dataset
class SyntheticSource(Section):
    """The built-in demo catalog (procedurally drawn fashion items)."""

    format: Literal["synthetic"] = "synthetic"
    n_items: int = Field(2000, ge=20)
    n_users: int = Field(1500, ge=10)
    seed: int = 0
    image_size: int = Field(128, ge=32, le=1024)
    min_interactions: int = Field(5, ge=3)
    mean_interactions: float = Field(12.0, gt=3)


class PreparedSource(Section):
    """Use the dataset already in the workdir (written by `lvlmrec prepare`)."""

    format: Literal["prepared"] = "prepared"


class KaggleSource(Section):
    """The study's archive: one `<Dataset>-<img>_<txt>` folder of the Kaggle dataset."""

    format: Literal["kaggle"] = "kaggle"
    source: Path
    metadata: Path | None = None
    images: Path | None = None


class AmazonSource(Section):
    """Amazon Reviews 2018 / 2023 JSON-lines dumps (plain or gzipped)."""

    format: Literal["amazon2018", "amazon2023"]
    reviews: Path
    metadata: Path | None = None
    images: Path | None = None
    min_rating: float | None = None
    kcore: int = Field(5, ge=0)
    split: Literal["random", "loo", "temporal"] = "random"
    seed: int = 0


class MMRecSource(Section):
    """An MMRec dataset folder (`<name>.inter` + feature .npy files)."""

    format: Literal["mmrec"] = "mmrec"
    source: Path
    name: str | None = None
    images: Path | None = None


class CsvSource(Section):
    """A CSV items table, a CSV interactions table and an optional image folder."""

    format: Literal["csv"] = "csv"
    items: Path
    interactions: Path
    images: Path | None = None
    item_col: str = "item_id"
    user_col: str = "user_id"
    title_col: str = "title"
    text_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    split_col: str | None = None
    image_col: str | None = None  # items: image URL (-> image_url) or path (image folder / CSV)
    sep: str = ","  # field separator of both tables
    min_rating: float | None = None
    kcore: int = Field(0, ge=0)
    split: Literal["random", "loo", "temporal"] = "random"
    seed: int = 0


DatasetConfig = (
    SyntheticSource | PreparedSource | KaggleSource | AmazonSource | MMRecSource | CsvSource
)


# --------------------------------------------------------------------------- scale-out
class ScaleConfig(Section):
    """Where a stage's model work runs (docs/ray.md); never part of any cache key."""

    engine: Literal["local", "ray"] = "local"  # ray: a Ray Data pipeline, `lvlmrec[ray]`
    address: str | None = None  # auto, HOST:PORT or ray://...; None = start a local Ray
    workers: int = Field(1, ge=1)  # actors, each holding one copy of the model
    gpus_per_worker: float = Field(0.0, ge=0)  # fractional (0.25) packs small models per GPU
    cpus_per_worker: float = Field(1.0, gt=0)


# --------------------------------------------------------------------------- describe
class AttributesSettings(Section):
    """The offline CPU describer: colours, patterns, ImageNet labels, optional OCR."""

    label_threshold: float = Field(0.15, ge=0, le=1)
    max_labels: int = Field(2, ge=0)
    n_colours: int = Field(2, ge=1, le=4)
    patterns: bool = True
    ocr: bool = False


class DescribeConfig(Section):
    """Which backend writes the item descriptions, with which prompt (docs/describe.md)."""

    enabled: bool = True
    backend: str = "attributes"  # attributes, hf, openai or vllm
    model: str | None = None  # hub id, local folder or server model name; None = default
    prompt: str = "study_readme"  # a built-in prompt name or a key of `prompts`
    prompts: dict[str, str] = Field(default_factory=dict)  # your templates; {title} placeholder
    include_title: bool = False  # must be true exactly when the prompt has {title}
    batch_size: int = Field(32, ge=1)  # items per committed batch
    max_new_tokens: int = Field(150, ge=1)
    temperature: float = Field(0.0, ge=0)  # 0 = greedy decoding, as in the study
    top_p: float = Field(1.0, gt=0, le=1)  # nucleus sampling; used only when temperature > 0
    max_items: int | None = Field(None, ge=1)  # describe only the first N items in `order`
    order: Literal["all", "popularity", "random"] = "all"
    seed: int = 0  # of order: random, and of sampling
    device: str = "auto"
    attributes: AttributesSettings = Field(default_factory=AttributesSettings)
    options: dict[str, Any] = Field(default_factory=dict)  # backend-specific, see the docs
    scale: ScaleConfig = Field(default_factory=ScaleConfig)

    @model_validator(mode="after")
    def _prompt_resolves(self) -> DescribeConfig:
        """An unknown prompt, or a title setting the template contradicts, fails at load."""
        from lvlmrec.describe.prompts import resolve_prompt

        if self.backend != "attributes":  # the attributes describer takes no prompt
            try:
                resolve_prompt(self.prompt, self.include_title, self.prompts)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return self


# --------------------------------------------------------------------------- encode
class EncodeConfig(Section):
    text_model: str = "all-MiniLM-L6-v2"
    image_model: str = "efficientnet-lite0"
    text_batch_size: int = Field(128, ge=1)
    image_batch_size: int = Field(32, ge=1)
    image_size: int = Field(224, ge=32)
    device: str = "auto"
    images: bool = True
    scale: ScaleConfig = Field(default_factory=ScaleConfig)


# --------------------------------------------------------------------------- represent
class StrategyConfig(Section):
    """One named item representation; `kind` picks the strategy from the registry."""

    name: str
    kind: str
    text: str | None = None
    vision: str | None = None
    scoring: Literal["mean", "max"] = "mean"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "_-." for c in v):
            raise ValueError("use letters, digits, '_', '-' or '.' only")
        return v


class RepresentConfig(Section):
    strategies: list[StrategyConfig] = Field(default_factory=list)
    device: str = "auto"
    # importable Python modules that register extra strategy kinds (docs/representations.md)
    plugins: list[str] = Field(default_factory=list)

    @field_validator("strategies")
    @classmethod
    def _unique_names(cls, v: list[StrategyConfig]) -> list[StrategyConfig]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"strategy name {s.name!r} appears twice")
            seen.add(s.name)
        return v


# --------------------------------------------------------------------------- evaluate
class EvaluateConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    protocol: Literal["full", "covered", "sampled"] = "full"
    n_negatives: int = Field(100, ge=1)
    baseline: str | None = None
    block_size: int = Field(2048, ge=1)
    n_bootstrap: int = Field(1000, ge=0)
    n_permutations: int = Field(2000, ge=0)
    seed: int = 0
    # metrics tested against the baseline (significance.csv, report marks, slices)
    significance_metrics: list[str] = Field(
        default_factory=lambda: ["recall@10", "ndcg@10", "recall@20", "ndcg@20"])

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v or any(k <= 0 for k in v):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(v))


class ReportConfig(Section):
    metric: str = "recall@10"
    n_case_studies: int = Field(2, ge=0)
    compare: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- run
class RunConfig(Section):
    seed: int = 0
    dataset: DatasetConfig = Field(default_factory=PreparedSource, discriminator="format")
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    represent: RepresentConfig = Field(default_factory=RepresentConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> RunConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = parse_config(data, str(path))
    return resolve_paths(cfg, path.parent)


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Relative dataset paths in a config file are relative to that file; so are plugins
    (lvlmrec/plugins.py)."""
    from lvlmrec.plugins import resolve_plugins

    if cfg.represent.plugins:
        cfg.represent.plugins = resolve_plugins(cfg.represent.plugins, base)
    ds = cfg.dataset
    for field in ("source", "metadata", "images", "reviews", "items", "interactions"):
        value = getattr(ds, field, None)
        if isinstance(value, Path) and not value.is_absolute():
            setattr(ds, field, (base / value).resolve())
    return cfg


def packaged_config_dir() -> Path:
    """`configs/` in a source checkout, `lvlmrec/configs` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("cannot find the packaged configs/ folder")


def named_config(name: str) -> Path:
    path = packaged_config_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no packaged config named {name!r} in {path.parent}")
    return path
