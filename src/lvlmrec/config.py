"""Typed run configuration, loaded from YAML.

Every section forbids unknown keys, so a typo is an error that names the key and the
file instead of a silently ignored setting. Each stage hashes only its own section (plus
its inputs), so editing the report settings never re-runs the describer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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
    sequential_strength: float = Field(0.0, ge=0, le=1)  # next item like the last one
    split: Literal["random", "loo", "temporal"] = "random"  # loo/temporal use the timestamps


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
    """One named item representation; `kind` picks the strategy from the registry.

    In `params`, a list value (or `{search: [...]}`) is a search over those values on
    validation (docs/representations.md, "Hyperparameter search and seeds"); `search:
    default` adds the kind's default search space.
    """

    name: str
    kind: str
    text: str | None = None
    vision: str | None = None
    scoring: Literal["mean", "max"] = "mean"
    params: dict[str, Any] = Field(default_factory=dict)
    search: Literal["default"] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "_-." for c in v):
            raise ValueError("use letters, digits, '_', '-' or '.' only")
        if v.startswith("."):  # '.', '..' and hidden names would escape or hide in models/
            raise ValueError(f"{v!r} may not start with '.'")
        return v


#: metric names a search may select on (those of evaluate.ranking.METRICS)
SEARCH_METRICS = ("recall", "ndcg", "precision", "hit", "map")


class SearchConfig(Section):
    """How a strategy's searched params are explored: every trial fits on train and is
    scored on validation only (represent/search.py)."""

    method: Literal["grid", "random", "tpe"] = "grid"  # random and tpe use optuna
    n_trials: int = Field(20, ge=1)  # distinct trials per strategy (random, tpe)
    metric: str = "recall@20"

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        name, _, k = v.partition("@")
        if name not in SEARCH_METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"{v!r} is not a metric; use NAME@K with NAME in "
                             f"{', '.join(SEARCH_METRICS)}")
        return v


class RepresentConfig(Section):
    strategies: list[StrategyConfig] = Field(default_factory=list)
    device: str = "auto"
    # importable Python modules that register extra strategy kinds (docs/representations.md)
    plugins: list[str] = Field(default_factory=list)
    search: SearchConfig = Field(default_factory=SearchConfig)

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
    # several seeds: every seeded model is fitted once per seed (docs/representations.md)
    seeds: list[int] | None = None
    dataset: DatasetConfig = Field(default_factory=PreparedSource, discriminator="format")
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    represent: RepresentConfig = Field(default_factory=RepresentConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one seed (or leave `seeds` out to use `seed`)")
            twice = sorted({s for s in v if v.count(s) > 1})
            if twice:
                raise ValueError(f"seed(s) {twice} appear more than once")
        return v

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every seeded model is fitted with; the first is the primary one."""
        return list(self.seeds) if self.seeds else [self.seed]


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
    from lvlmrec.checks import read_config_file  # missing, binary, non-UTF-8, bad YAML

    path = Path(path)
    data = read_config_file(path)
    cfg = parse_config(data, str(path))
    return resolve_paths(cfg, path.parent)


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Relative dataset paths in a config file are relative to that file."""
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
