"""The pipeline: prepare -> describe -> encode -> represent -> evaluate -> report.

Each stage has a key: a hash of its own config section and of its inputs' content (the
digests of the stages it reads). `run_pipeline` skips a stage whose recorded key matches and
whose outputs are unchanged, so a second run does no work and a run killed midway resumes
at the first unfinished stage. Long stages (describe, encode, represent) also cache inside
the stage, per item or per artifact, so even a changed setting redoes only what it touches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from lvlmrec.config import RunConfig
from lvlmrec.errors import ConfigError, LvlmrecError, StageError
from lvlmrec.workdir import StageBook, Workdir, hash_obj, write_text

#: bump when a stage's output format changes, so old records no longer match
STAGE_VERSION = 1


@dataclasses.dataclass
class Context:
    workdir: Workdir
    config: RunConfig
    console: Console
    show_progress: bool = True


@dataclasses.dataclass
class StageResult:
    outputs: list[Path]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: a stage may name what downstream stages depend on instead of its files' bytes
    digest: str | None = None
    #: False leaves the stage unrecorded, so the next run enters it again (e.g. to retry
    #: failed items); downstream stages still run on what it produced.
    complete: bool = True


@dataclasses.dataclass
class Stage:
    name: str
    upstream: tuple[str, ...]
    settings: Callable[[RunConfig], Any]
    run: Callable[[Context], StageResult]
    help: str = ""


def _stages() -> list[Stage]:
    from lvlmrec import stages

    return [
        Stage("prepare", (), _prepare_settings, stages.prepare,
              "build dataset/ from the configured source"),
        Stage("describe", ("prepare",), lambda c: _without_scale(c.describe), stages.describe,
              "write a text description of every item image"),
        Stage("encode", ("prepare", "describe"), lambda c: _without_scale(c.encode),
              stages.encode, "embed titles, descriptions and images"),
        Stage("represent", ("prepare", "encode"),
              lambda c: {"represent": c.represent, "seed": c.seed}, stages.represent,
              "fit every representation strategy"),
        Stage("evaluate", ("prepare", "represent"),
              lambda c: {"evaluate": c.evaluate, "strategies": c.represent}, stages.evaluate,
              "rank the whole catalog for every user; metrics, significance, slices"),
        Stage("report", ("prepare", "evaluate"),
              lambda c: {"report": c.report, "evaluate": c.evaluate}, stages.report,
              "tables and figures"),
    ]


def _without_scale(section: Any) -> dict[str, Any]:
    """Where the work runs (local or Ray) changes no output, so it is no part of the key."""
    return section.model_dump(mode="json", exclude={"scale"})


def _prepare_settings(config: RunConfig) -> Any:
    from lvlmrec.data.prepare import prepare_settings

    return prepare_settings(config.dataset)


STAGE_NAMES = ("prepare", "describe", "encode", "represent", "evaluate", "report")


def stage_key(stage: Stage, ctx: Context, book: StageBook) -> str:
    upstream = {}
    for name in stage.upstream:
        digest = book.digest(name)
        if digest is None:
            raise StageError(f"stage {stage.name!r} needs stage {name!r} to have run first")
        upstream[name] = digest
    return hash_obj({"stage": stage.name, "version": STAGE_VERSION,
                     "settings": stage.settings(ctx.config), "upstream": upstream})


def run_pipeline(
    config: RunConfig,
    workdir: Workdir,
    only: list[str] | None = None,
    force: list[str] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or skip) the stages in order; returns one summary dict per stage."""
    console = console or Console()
    ctx = Context(workdir, config, console, show_progress)
    workdir.root.mkdir(parents=True, exist_ok=True)
    previous_config = workdir.config_path.read_text() if workdir.config_path.is_file() else None
    _save_config(config, workdir)
    book = StageBook(workdir)
    force = set(force or [])
    unknown = (set(only or []) | force) - set(STAGE_NAMES) - {"all"}
    if unknown:
        raise StageError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    summary: list[dict[str, Any]] = []
    try:
        _run_stages(ctx, book, only, force, summary)
    except LvlmrecError:
        if not any(s["status"] != "skipped" for s in summary):
            # bad input before any work: the workdir's config stays the one that worked
            _restore_config(workdir, previous_config)
        raise
    return summary


def _run_stages(ctx: Context, book: StageBook, only: list[str] | None, force: set[str],
                summary: list[dict[str, Any]]) -> None:
    config, workdir, console = ctx.config, ctx.workdir, ctx.console
    for stage in _stages():
        if only and stage.name not in only:
            continue
        if stage.name == "represent" and not config.represent.strategies:
            raise ConfigError(
                f"represent.strategies is empty in {workdir.config_path}: nothing to fit; list "
                "strategies there (README: Representations), or run `lvlmrec prepare` again, "
                "which writes a default set")
        key = stage_key(stage, ctx, book)
        if stage.name not in force and "all" not in force and book.is_current(stage.name, key):
            console.print(f"[dim]- {stage.name}: skipped (inputs and settings unchanged)[/dim]")
            summary.append({"stage": stage.name, "status": "skipped", "seconds": 0.0})
        else:
            console.print(f"[bold]- {stage.name}[/bold]: {stage.help}")
            t0 = time.perf_counter()
            result = stage.run(ctx)
            seconds = time.perf_counter() - t0
            # an incomplete stage keeps a record (downstream stages need its digest) under a
            # key that never matches, so the next run enters it again
            recorded_key = key if result.complete else f"incomplete:{key}"
            book.finish(stage.name, recorded_key, result.outputs, seconds, result.info,
                        digest=result.digest)
            status = "ran" if result.complete else "incomplete"
            console.print(f"  {stage.name} {status} in {seconds:.1f}s")
            summary.append({"stage": stage.name, "status": status,
                            "seconds": round(seconds, 2)})
        if stage.name == "prepare":
            _fill_defaults(config, workdir, console)

def _fill_defaults(config: RunConfig, workdir: Workdir, console: Console) -> None:
    """No strategies configured: write a default set that fits the data, and say so."""
    from lvlmrec.represent.defaults import fill_default_strategies

    names = fill_default_strategies(config, workdir)
    if names:
        _save_config(config, workdir)
        console.print(f"  represent.strategies was empty: wrote {len(names)} default strategies "
                      f"to {workdir.config_path} ({', '.join(names)}); edit it to change them",
                      soft_wrap=True)


def _restore_config(workdir: Workdir, text: str | None) -> None:
    if text is None:
        workdir.config_path.unlink(missing_ok=True)
    else:
        write_text(workdir.config_path, text)


def _save_config(config: RunConfig, workdir: Workdir) -> None:
    import yaml

    from lvlmrec.workdir import to_jsonable

    write_text(workdir.config_path, yaml.safe_dump(to_jsonable(config), sort_keys=False))
