"""Every check a run can make before its first stage, with the file, line or option to blame.

`validate_run` builds each strategy through the registry (kind, params, the sources it will
read), checks the evaluation and report settings against the configured strategies and
metrics and imports the plugins, and raises one ConfigError listing every problem: a typo
in the last section fails in seconds, not after hours of describing on a GPU.

`Origin` says where each config key came from (a file, `--set`, a command-line option), so
a message names the right one, with the line of the key in a YAML file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lvlmrec.config import RunConfig
from lvlmrec.errors import ConfigError, LvlmrecError


# --------------------------------------------------------------------------- where keys come from
@dataclasses.dataclass
class Origin:
    """Where a run's config came from: a YAML file (or built-in defaults), then the keys
    given by `--set KEY=VALUE` and by command-line options, which override the file."""

    source: str = "<defaults>"
    sets: list[str] = dataclasses.field(default_factory=list)
    options: list[str] = dataclasses.field(default_factory=list)
    _nodes: Any = dataclasses.field(default=None, repr=False)

    def where(self, key: str, message: str = "") -> str:
        """`--set KEY`, `option --KEY`, or `FILE:LINE` (`FILE` when the line is unknown).
        A section-wide error goes to the option its message names, else the first one."""
        for given_keys, label in ((list(reversed(self.sets)), "--set {}"),
                                  (self.options, "option --{}")):
            hits = [g for g in given_keys if _overlaps(g, key)]
            if hits:
                given = next((g for g in hits if g in message), hits[0])
                name = given if label == "--set {}" else \
                    given.rsplit(".", 1)[-1].replace("_", "-")
                return label.format(name)
        line = self._line(key)
        return f"{self.source}:{line}" if line else self.source

    def _line(self, key: str) -> int | None:
        if self._nodes is None:
            self._nodes = False
            path = Path(self.source)
            if path.suffix in (".yaml", ".yml") and path.is_file():
                try:
                    self._nodes = yaml.compose(path.read_text(encoding="utf-8"))
                except (yaml.YAMLError, OSError, UnicodeDecodeError):
                    pass
        node, line = self._nodes, None
        for part in key.split("."):
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and part.isdigit() \
                    and int(part) < len(node.value):
                node = node.value[int(part)]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _overlaps(given: str, key: str) -> bool:
    """An option given for `given` is to blame for errors at or under it, and for errors
    of the sections it is in (a section's own check, e.g. a prompt that needs a title)."""
    return key == given or key.startswith(given + ".") or given.startswith(key + ".")


def dotted_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the options actually given (not None) in a nested mapping."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += dotted_keys(value, f"{prefix}{key}.")
        elif value is not None:
            out.append(prefix + key)
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file as a mapping; a missing, binary, non-UTF-8 or malformed file is a
    one-line ConfigError naming it (and the line, for YAML errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}"
                          + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}: "
                          f"{err.object[err.start:err.start + 1]!r})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}:{_yaml_line(err)}: not valid YAML: {_yaml_problem(err)}") \
            from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, "
                          f"got {type(data).__name__}")
    return data or {}


def parse_value(key: str, raw: str) -> Any:
    """The YAML value of `--set KEY=VALUE`, or a one-line error naming the option."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: "
                          f"{_yaml_problem(err)}") from None


def _yaml_line(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return str(mark.line + 1) if mark is not None else "?"


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    return " ".join(f"{context or ''} {problem}".split())


def check_workdir(workdir: Path | None) -> None:
    """A workdir must be a folder (or not exist yet)."""
    if workdir is not None and Path(workdir).exists() and not Path(workdir).is_dir():
        raise ConfigError(f"--workdir {workdir}: is a file, not a run folder")


# --------------------------------------------------------------------------- parsing
def parse_run_config(data: dict[str, Any], origin: Origin) -> RunConfig:
    """RunConfig from a mapping; each invalid key is blamed on its file line or option."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        dataset = data.get("dataset")
        tag = dataset.get("format") if isinstance(dataset, dict) else None
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
            if loc[:2] == ["dataset", tag]:  # the union's tag (the format), not a key
                del loc[1]
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append((".".join(loc) or "<root>", msg.removeprefix("Value error, ")))
        raise ConfigError(format_problems(problems, origin)) from None


def format_problems(problems: list[tuple[str, str]], origin: Origin | str) -> str:
    """One line per problem: `WHERE: KEY: message`; several get a heading line."""
    origin = origin if isinstance(origin, Origin) else Origin(origin)
    lines = []
    for key, msg in problems:
        where = origin.where(key, msg)
        lines.append(f"{where}: {msg}" if where == f"--set {key}" else f"{where}: {key}: {msg}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return f"invalid configuration ({len(lines)} problems):\n  " + "\n  ".join(lines)


# --------------------------------------------------------------------------- validation
def validate_run(config: RunConfig, source: Origin | str = "<config>",
                 stages: Iterable[str] | None = None, workdir: Path | None = None) -> None:
    """Raise one ConfigError listing every problem of `config` a run would meet, before any
    stage runs. `stages`: the stages about to run (None: not known, so what depends on
    them, such as needing a strategy to evaluate, is not checked); `workdir`: where sources
    that already exist may be found."""
    problems = run_problems(config, set(stages or ()), workdir)
    if problems:
        raise ConfigError(format_problems(problems, source))


def run_problems(config: RunConfig, stages: set[str],
                 workdir: Path | None = None) -> list[tuple[str, str]]:
    from lvlmrec.represent.registry import build, kind_class, load_plugins, sources_of

    problems: list[tuple[str, str]] = []
    for i, name in enumerate(config.represent.plugins):
        try:
            load_plugins([name])
        except LvlmrecError as err:
            problems.append((f"represent.plugins.{i}", str(err).split(": ", 1)[-1]))
    strategies = config.represent.strategies
    if not strategies and "evaluate" in stages and "prepare" not in stages:
        # with prepare in the run, an empty list gets the default set after it (pipeline)
        problems.append(("represent.strategies", "no representations configured"))
    for i, strategy in enumerate(strategies):
        key = f"represent.strategies.{i}"
        try:
            build(strategy, config.seed)
        except LvlmrecError as err:
            problems.append((key, _without_name(str(err), strategy.name)))
            continue
        except Exception as err:  # noqa: BLE001 - a plugin's constructor may raise anything
            problems.append((key, f"{strategy.name!r}: {type(err).__name__}: {err}"))
            continue
        for src in sources_of(strategy):
            msg = _source_problem(config, src, workdir)
            if msg:
                problems.append((f"{key}.{_source_field(strategy, src)}",
                                 f"{strategy.name!r}: {msg}"))
        if getattr(kind_class(strategy), "needs_order", False) and not _has_time(config):
            problems.append((f"{key}.kind", (f"{strategy.name!r}: kind {strategy.kind!r} "
                                             "orders each history by time, but the dataset "
                                             f"source ({config.dataset.format}) has no "
                                             "timestamps")))
    problems += _evaluate_problems(config)
    return problems


def _has_time(config: RunConfig) -> bool:
    """Can the source's interactions carry timestamps? (A prepared or MMRec dataset is
    checked when it is read: `represent.fit.check_order`.)"""
    fmt = config.dataset.format
    if fmt == "csv":
        return config.dataset.time_col is not None
    return fmt != "kaggle"


def _without_name(message: str, name: str) -> str:
    return message if repr(name) in message else f"{name!r}: {message}"


def _source_field(strategy, src: str) -> str:
    for field in ("text", "vision"):
        if getattr(strategy, field) == src:
            return field
    return "params"


def _source_problem(config: RunConfig, src: str, workdir: Path | None) -> str | None:
    """Why a source will not exist when represent runs, where that is knowable now."""
    from lvlmrec.encode.run import _image_source_name
    from lvlmrec.encode.store import TEXT_SOURCES, source_file, split_source
    from lvlmrec.workdir import Workdir

    exists = workdir is not None and source_file(Workdir(workdir), src).is_file()
    if exists:
        return None
    if src.startswith("dataset:"):
        if config.dataset.format == "prepared" and workdir is not None:
            return f"source {src!r}: the prepared dataset has no feature {src[8:]!r}"
        return None
    base, describer = split_source(src)
    if describer is not None:  # description:<name> and the like: the config validates <name>
        if not config.describe.enabled:
            return f"source {src!r} needs descriptions, but describe.enabled is false"
        return None
    if src in TEXT_SOURCES:
        if src in ("description", "title_description") and not config.describe.enabled:
            return f"source {src!r} needs descriptions, but describe.enabled is false"
        return None
    image = _image_source_name(config.encode.image_model)
    if src == image:
        if not config.encode.images:
            return f"source {src!r} is an image embedding, but encode.images is false"
        return None
    return (f"unknown source {src!r}: use a text source ({', '.join(TEXT_SOURCES)}, or "
            f"description:<describer> and the like), the image model's source {image!r}, or "
            "dataset:<feature>")


def _evaluate_problems(config: RunConfig) -> list[tuple[str, str]]:
    from lvlmrec.evaluate.ranking import METRICS, metric_columns

    problems = []
    names = [s.name for s in config.represent.strategies]
    ev = config.evaluate
    if ev.baseline is not None and ev.baseline not in names:
        problems.append(("evaluate.baseline", f"{ev.baseline!r} is not a configured "
                         f"representation (configured: {', '.join(names) or 'none'})"))
    computed = metric_columns(ev.ks)

    def metric_problem(name: str) -> str | None:
        metric, _, k = str(name).partition("@")
        if metric not in METRICS or not k.isdigit():
            return f"{name!r} is not a metric: use NAME@K with NAME in {', '.join(METRICS)}"
        if name not in computed:
            return f"{name!r} is not computed: K={k} is not in evaluate.ks {ev.ks}"
        return None

    for i, name in enumerate(ev.significance_metrics):
        msg = metric_problem(name)
        if msg:
            problems.append((f"evaluate.significance_metrics.{i}", msg))
    if not ev.significance_metrics:
        problems.append(("evaluate.significance_metrics", "name at least one metric"))
    msg = metric_problem(config.report.metric)
    if msg:
        problems.append(("report.metric", msg))
    compare = config.report.compare
    if compare and (len(compare) != 2 or set(compare) - set(names)):
        problems.append(("report.compare", f"{compare} must name two configured "
                         f"representations (configured: {', '.join(names) or 'none'})"))
    return problems
