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
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.workdir import (ContentHasher, StageBook, Workdir, clean_run_temps, code_key,
                             hash_obj, stage_lock, write_text)

#: bump when a stage's output format changes, so old records no longer match
STAGE_VERSION = 1


@dataclasses.dataclass
class Context:
    workdir: Workdir
    config: RunConfig
    console: Console
    show_progress: bool = True
    hasher: ContentHasher | None = None
    #: per-run options of stages that are no part of any key (`describe --describer NAME`)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    #: content of what the stage reads from outside the workdir (prepare's source files)
    inputs: Callable[[Context], Any] | None = None
    #: the digest the stage's record should still have; a mismatch reruns it (prepare: the
    #: dataset's content, images included, which may change in place after prepare)
    verify: Callable[[Context, StageBook], str] | None = None


def _stages() -> list[Stage]:
    from lvlmrec import stages

    return [
        Stage("prepare", (), _prepare_settings, stages.prepare,
              "build dataset/ from the configured source", inputs=_prepare_inputs,
              verify=_dataset_digest),
        Stage("describe", ("prepare",), lambda c: _without_scale(c.describe), stages.describe,
              "write a text description of every item image"),
        Stage("encode", ("prepare", "describe"), lambda c: _without_scale(c.encode),
              stages.encode, "embed titles, descriptions and images"),
        Stage("represent", ("prepare", "encode"),
              lambda c: {"represent": c.represent, "seed": c.seed,
                         "code": code_key(c.represent.plugins), **_seeds(c)},
              stages.represent, "fit every representation strategy"),
        # describe: results/describers.csv audits every describer, used by a strategy or not
        Stage("evaluate", ("prepare", "represent", "describe"),
              lambda c: {"evaluate": c.evaluate, "strategies": c.represent, **_seeds(c)},
              stages.evaluate,
              "rank the whole catalog for every user; metrics, significance, slices"),
        Stage("report", ("prepare", "evaluate"),
              lambda c: {"report": c.report, "evaluate": c.evaluate}, stages.report,
              "tables and figures"),
    ]


def _seeds(config: RunConfig) -> dict[str, Any]:
    """`seeds` joins the keys only when set, so single-seed runs keep their keys."""
    return {"seeds": config.seeds} if config.seeds else {}


def _without_scale(section: Any) -> dict[str, Any]:
    """Where the work runs (local or Ray) changes no output, so it is no part of the key."""
    return section.model_dump(mode="json", exclude={"scale"})


def _prepare_settings(config: RunConfig) -> Any:
    from lvlmrec.data.prepare import prepare_settings

    return prepare_settings(config.dataset)


def _prepare_inputs(ctx: Context) -> Any:
    from lvlmrec.data.prepare import source_inputs

    return source_inputs(ctx.config.dataset, ctx.hasher)


def _dataset_digest(ctx: Context, book: StageBook) -> str:
    from lvlmrec.data.schema import dataset_digest

    return dataset_digest(ctx.workdir, book.hasher)


STAGE_NAMES = ("prepare", "describe", "encode", "represent", "evaluate", "report")


def stage_parts(stage: Stage, ctx: Context, book: StageBook,
                digests: dict[str, str | None] | None = None) -> dict[str, Any]:
    """What a stage's key hashes: its settings, its outside inputs' content, the digests
    of the stages it reads (`digests` overrides the recorded ones) and the code version."""
    upstream = {}
    for name in stage.upstream:
        digest = (digests or {}).get(name) or book.digest(name)
        if digest is None:
            raise StageError(f"stage {stage.name!r} needs stage {name!r} to have run first")
        upstream[name] = digest
    parts = {"stage": stage.name, "version": STAGE_VERSION, "code": code_key(),
             "settings": hash_obj(stage.settings(ctx.config)), "upstream": upstream}
    if stage.inputs is not None:
        parts["inputs"] = hash_obj(stage.inputs(ctx))
    return parts


def stage_key(stage: Stage, ctx: Context, book: StageBook) -> str:
    return hash_obj(stage_parts(stage, ctx, book))


@dataclasses.dataclass
class PlanStep:
    """What the next run does with one stage: `skip`, `run`, or `maybe` (runs only if a
    stage it reads, which runs first, produces a different output)."""

    stage: str
    action: str
    reason: str

    def line(self) -> str:
        return f"{self.stage}: {self.action} ({self.reason})"


def _why_stale(stage: Stage, ctx: Context, book: StageBook, parts: dict[str, Any]) -> str | None:
    rec = book.get(stage.name)
    why = book.why_stale(stage.name, hash_obj(parts))
    if why == "settings, inputs or code changed" and rec is not None and rec.parts:
        changed = [k for k in ("settings", "inputs", "code", "version")
                   if rec.parts.get(k) != parts.get(k)]
        before = rec.parts.get("upstream", {})
        changed += [f"output of {u}" for u, d in parts["upstream"].items() if before.get(u) != d]
        why = " and ".join(changed) + " changed" if changed else why
    if why is None and stage.verify is not None and rec is not None \
            and stage.verify(ctx, book) != rec.digest:
        why = "its output's content changed (e.g. an image edited in place)"
    return why


def plan_pipeline(config: RunConfig, workdir: Workdir, only: list[str] | None = None,
                  force: list[str] | None = None) -> list[PlanStep]:
    """What `run_pipeline` with the same arguments would do, without doing it."""
    ctx = Context(workdir, config, Console(), False, ContentHasher(workdir))
    book = StageBook(workdir, ctx.hasher)
    force = _check_stage_names(only, force)
    steps: list[PlanStep] = []
    will_run: set[str] = set()
    for stage in _stages():
        if only and stage.name not in only:
            continue
        if stage.name in force or "all" in force:
            steps.append(PlanStep(stage.name, "run", "forced"))
            will_run.add(stage.name)
            continue
        try:
            parts = stage_parts(stage, ctx, book)
        except StageError:
            missing = [u for u in stage.upstream if book.digest(u) is None]
            if any(u in will_run for u in missing):
                steps.append(PlanStep(stage.name, "run", "never ran"))
                will_run.add(stage.name)
            else:
                steps.append(PlanStep(stage.name, "fail", f"needs {', '.join(missing)} first"))
            continue
        why = _why_stale(stage, ctx, book, parts)
        ahead = [u for u in stage.upstream if u in will_run]
        if why is not None:
            steps.append(PlanStep(stage.name, "run", why))
            will_run.add(stage.name)
        elif ahead:
            steps.append(PlanStep(stage.name, "maybe", f"runs if the output of "
                                  f"{', '.join(ahead)} changes; else skipped"))
            will_run.add(stage.name)
        else:
            steps.append(PlanStep(stage.name, "skip", "inputs and settings unchanged"))
    ctx.hasher.save()
    return steps


def _check_stage_names(only: list[str] | None, force: list[str] | None) -> set[str]:
    force_set = set(force or [])
    unknown = (set(only or []) | force_set) - set(STAGE_NAMES) - {"all"}
    if unknown:
        raise StageError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    return force_set


def run_pipeline(
    config: RunConfig,
    workdir: Workdir,
    only: list[str] | None = None,
    force: list[str] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run (or skip) the stages in order; returns one summary dict per stage.

    Holds the workdir's stage lock throughout. The config is saved to the workdir only
    once a stage has gone through (ran or was current), so a command that fails first
    leaves config.yaml as it was."""
    console = console or Console()
    from lvlmrec.evaluate.cold import check_config

    check_config(config, workdir)  # a cold protocol without cold items fails before any work
    if workdir.root.is_dir():
        clean_run_temps(workdir)  # half-written files of a killed earlier run (dead pids only)
    force_set = _check_stage_names(only, force)
    workdir.root.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir, config, console, show_progress, ContentHasher(workdir),
                  dict(options or {}))
    with stage_lock(workdir, f"lvlmrec {' '.join(only) if only else 'run'}"):
        return _run_stages(ctx, only, force_set)


def _run_stages(ctx: Context, only: list[str] | None, force: set[str]) -> list[dict[str, Any]]:
    console, workdir = ctx.console, ctx.workdir
    book = StageBook(workdir, ctx.hasher)
    summary = []
    for stage in _stages():
        if only and stage.name not in only:
            continue
        if stage.name == "represent" and not ctx.config.represent.strategies:
            raise ConfigError(
                f"represent.strategies is empty in {workdir.config_path}: nothing to fit; list "
                "strategies there (README: Representations), or run `lvlmrec prepare` again, "
                "which writes a default set")
        parts = stage_parts(stage, ctx, book)
        key = hash_obj(parts)
        if stage.name in force or "all" in force:
            why = "forced"
        else:
            why = _why_stale(stage, ctx, book, parts)
        if why is None:
            console.print(f"[dim]- {stage.name}: skipped (inputs and settings unchanged)[/dim]")
            summary.append({"stage": stage.name, "status": "skipped", "seconds": 0.0})
            _save_config(ctx.config, workdir)
            if stage.name == "prepare":
                _fill_defaults(ctx.config, workdir, console)
            continue
        console.print(f"[bold]- {stage.name}[/bold]: {stage.help} [dim]({why})[/dim]")
        t0 = time.perf_counter()
        result = stage.run(ctx)
        seconds = time.perf_counter() - t0
        # an incomplete stage keeps a record (downstream stages need its digest) under a
        # key that never matches, so the next run enters it again
        recorded_key = key if result.complete else f"incomplete:{key}"
        book.finish(stage.name, recorded_key, result.outputs, seconds, result.info,
                    digest=result.digest, parts=parts)
        _save_config(ctx.config, workdir)
        status = "ran" if result.complete else "incomplete"
        console.print(f"  {stage.name} {status} in {seconds:.1f}s")
        summary.append({"stage": stage.name, "status": status, "seconds": round(seconds, 2)})
        if stage.name == "prepare":
            _fill_defaults(ctx.config, workdir, console)
    ctx.hasher.save()
    return summary


def _fill_defaults(config: RunConfig, workdir: Workdir, console: Console) -> None:
    """No strategies configured: write a default set that fits the data, and say so."""
    from lvlmrec.represent.defaults import fill_default_strategies

    names = fill_default_strategies(config, workdir)
    if names:
        _save_config(config, workdir)
        console.print(f"  represent.strategies was empty: wrote {len(names)} default strategies "
                      f"to {workdir.config_path} ({', '.join(names)}); edit it to change them",
                      soft_wrap=True)


def _save_config(config: RunConfig, workdir: Workdir) -> None:
    import yaml

    from lvlmrec.workdir import to_jsonable

    text = yaml.safe_dump(to_jsonable(config), sort_keys=False)
    path = workdir.config_path
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)
