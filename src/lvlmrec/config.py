"""Typed run configuration, loaded from YAML.

Every section forbids unknown keys, so a typo is an error that names the key and the
file instead of a silently ignored setting. Each stage hashes only its own section (plus
its inputs), so editing the report settings never re-runs the describer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from lvlmrec.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- dataset
#: raw-log splits; the cold ones hold out every interaction of some items (data/cold.py)
SplitMethod = Literal["random", "loo", "temporal", "cold_items", "cold_items_temporal"]
#: share of the items made cold by a cold split, half for valid and half for test
ColdFraction = Annotated[float, Field(gt=0, le=0.9)]


class CatalogSource(Section):
    """A source with an items table: its items without interactions stay as cold items
    unless dropped (the drop is a recorded filter step)."""

    drop_items_without_interactions: bool = False


class SyntheticSource(CatalogSource):
    """The built-in demo catalog (procedurally drawn fashion items)."""

    format: Literal["synthetic"] = "synthetic"
    n_items: int = Field(2000, ge=20)
    n_users: int = Field(1500, ge=10)
    seed: int = 0
    image_size: int = Field(128, ge=32, le=1024)
    min_interactions: int = Field(5, ge=3)
    mean_interactions: float = Field(12.0, gt=3)
    sequential_strength: float = Field(0.0, ge=0, le=1)  # next item like the last one
    # loo/temporal use the timestamps; cold_items: a cold-item split (data/cold.py)
    split: Literal["random", "loo", "temporal", "cold_items"] = "random"
    cold_fraction: ColdFraction = 0.2


class PreparedSource(Section):
    """Use the dataset already in the workdir (written by `lvlmrec prepare`)."""

    format: Literal["prepared"] = "prepared"


class KaggleSource(CatalogSource):
    """The study's archive: one `<Dataset>-<img>_<txt>` folder of the Kaggle dataset."""

    format: Literal["kaggle"] = "kaggle"
    source: Path
    metadata: Path | None = None
    images: Path | None = None


class AmazonSource(CatalogSource):
    """Amazon Reviews 2018 / 2023 JSON-lines dumps (plain or gzipped)."""

    format: Literal["amazon2018", "amazon2023"]
    reviews: Path
    metadata: Path | None = None
    images: Path | None = None
    min_rating: float | None = None
    kcore: int = Field(5, ge=0)
    split: SplitMethod = "random"
    cold_fraction: ColdFraction = 0.2
    seed: int = 0


class MMRecSource(CatalogSource):
    """An MMRec dataset folder (`<name>.inter` + feature .npy files)."""

    format: Literal["mmrec"] = "mmrec"
    source: Path
    name: str | None = None
    images: Path | None = None


class CsvSource(CatalogSource):
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
    split: SplitMethod = "random"
    cold_fraction: ColdFraction = 0.2
    seed: int = 0

    @model_validator(mode="after")
    def _cold_split_needs_raw_log(self) -> CsvSource:
        if self.split_col and self.split.startswith("cold_items"):
            raise ValueError(f"split {self.split!r} needs a raw log, but split_col "
                             f"{self.split_col!r} gives the data already split")
        return self


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
    #: ImageNet labels become product-category words (shoe, dress, bag...), named only when
    #: their summed probability reaches label_threshold; false keeps raw ImageNet labels
    categories: bool = True
    #: skin-toned regions (a model wearing the product) are not named as its colour
    exclude_skin: bool = True
    #: name the product's silhouette (tall, wider at the base, split at the base, a hole...);
    #: false says only "tall"/"wide", as attributes-v2 did
    outline: bool = True
    #: input side of the EfficientNet pass the labels come from; equal to encode.image_size,
    #: the describe and encode stages share one pass (encode/image_pass.py)
    label_image_size: int = Field(224, ge=32)
    #: processes analysing images side by side; null: every granted core. Changes no text
    processes: int | None = Field(None, ge=1)


class DescriberSettings(Section):
    """One named describer (`describe.describers.<name>`): the describe settings it sets
    itself; every setting it leaves out comes from the `describe` section (docs/describe.md)."""

    backend: str | None = None
    model: str | None = None
    prompt: str | None = None
    include_title: bool | None = None
    batch_size: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    device: str | None = None
    attributes: AttributesSettings | None = None
    options: dict[str, Any] | None = None


#: settings that change no text: two describers differing only in these are the same one
_NOT_IDENTITY = {"enabled", "batch_size", "device", "scale", "describers", "audit",
                 "max_items", "order", "prompts"}
#: the same for `describe.attributes`
NOT_ATTRIBUTES_IDENTITY = {"processes"}


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
    # several describers in one run, by name; empty: this section is one describer `default`
    describers: dict[str, DescriberSettings] = Field(default_factory=dict)
    # the items columns holding labelled attributes the audit checks texts against
    # (colour, category, pattern); the synthetic catalog's are used when left empty
    audit: dict[Literal["colour", "category", "pattern"], str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prompt_resolves(self) -> DescribeConfig:
        """An unknown prompt, or a title setting the template contradicts, fails at load."""
        from lvlmrec.describe.prompts import resolve_prompt

        if self.backend != "attributes" and not self.describers:  # attributes takes no prompt
            try:
                resolve_prompt(self.prompt, self.include_title, self.prompts)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        if self.describers:
            self.named()  # every describer resolves; names are simple; no two are the same
        return self

    def named(self) -> dict[str, DescribeConfig]:
        """Each describer's full settings by name, in config order; the first is the one
        plain `description` means. Raises ValueError naming the describer that is wrong."""
        if not self.describers:
            return {"default": self}
        base = self.model_dump(exclude={"describers"})
        out: dict[str, DescribeConfig] = {}
        seen: dict[str, str] = {}
        for name, entry in self.describers.items():
            key = f"describers.{name}"
            if not DESCRIBER_NAME.fullmatch(name):
                raise ValueError(f"{key}: a describer name uses letters, digits, '_' and '-' "
                                 "only, starting with a letter or digit")
            try:
                # null (as a saved config.yaml writes unset settings) means: the section's
                cfg = DescribeConfig.model_validate({**base, **entry.model_dump(
                    exclude_none=True)})
            except ValidationError as err:
                msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}"
                                for e in err.errors())
                raise ValueError(f"{key}: {msg}") from None
            identity = hash_settings(cfg)
            if identity in seen:
                raise ValueError(f"{key}: same settings as describer {seen[identity]!r} (they "
                                 "would write the same texts); change one or drop one")
            seen[identity] = name
            out[name] = cfg
        return out


DESCRIBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def hash_settings(cfg: DescribeConfig) -> str:
    """What makes a describer's texts what they are (not batch size, device, ...)."""
    from lvlmrec.describe.prompts import resolve_prompt

    data = cfg.model_dump(mode="json", exclude={**dict.fromkeys(_NOT_IDENTITY, True),
                                                "attributes": NOT_ATTRIBUTES_IDENTITY})
    if cfg.backend == "attributes":
        for k in ("prompt", "include_title", "max_new_tokens", "temperature", "top_p", "model"):
            data.pop(k, None)
    else:
        data.pop("attributes", None)
        data["prompt"] = resolve_prompt(cfg.prompt, cfg.include_title, cfg.prompts).template
    if cfg.temperature == 0:
        data.pop("seed", None)
        data.pop("top_p", None)
    return repr(sorted(data.items()))


# --------------------------------------------------------------------------- encode
class EncodeConfig(Section):
    text_model: str = "all-MiniLM-L6-v2"
    image_model: str = "efficientnet-lite0"
    text_batch_size: int | None = Field(None, ge=1)  # None: 128, or 64 in `tokens` order
    # bfloat16: the text model's matrix products in bfloat16 (opt-in; on CPUs with native
    # bfloat16 about twice the texts/s, embeddings within cosine 0.9999 of float32)
    text_precision: Literal["float32", "bfloat16"] = "float32"
    # tokens: batches of texts of like token length (less padding, faster on CPU; embeddings
    # within about 2e-7 of `characters`, sentence-transformers' own order and the default)
    text_order: Literal["characters", "tokens"] = "characters"
    image_batch_size: int | None = Field(None, ge=1)  # None: 5 on CPU, 64 on a GPU
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

    def sources(self) -> list[str]:
        """The embedding sources this strategy reads (part of its cache key)."""
        out = [s for s in (self.text, self.vision) if s]
        for key in ("text", "vision", "source"):
            value = self.params.get(key)
            if isinstance(value, str):
                out.append(value)
        return out

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
    # cold / cold_all: cold test items only, or among all items (docs/evaluation.md)
    protocol: Literal["full", "covered", "sampled", "cold", "cold_all"] = "full"
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

    @model_validator(mode="after")
    def _describers_exist(self) -> RunConfig:
        """A strategy reading `description:<name>` needs a describer called <name>."""
        from lvlmrec.encode.store import split_source

        from lvlmrec.describe.prompts import STRUCTURED_PROMPTS

        named = self.describe.named() if self.describe.enabled else {}
        for s in self.represent.strategies:
            for source in s.sources():
                base, describer = split_source(source)
                if describer is not None and describer not in named:
                    raise ValueError(
                        f"represent.strategies.{s.name}: source {source!r} names describer "
                        f"{describer!r}, which describe.describers does not define (known: "
                        f"{', '.join(named) or 'none, describe is disabled'})")
                if base == "attributes" and (named[describer].backend == "attributes" or
                                             named[describer].prompt not in STRUCTURED_PROMPTS):
                    raise ValueError(
                        f"represent.strategies.{s.name}: source {source!r} needs describer "
                        f"{describer!r} to use a structured prompt "
                        f"({', '.join(sorted(STRUCTURED_PROMPTS))}); it writes plain text")
        return self


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
