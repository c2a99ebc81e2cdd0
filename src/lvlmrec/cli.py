"""Command line: one command per stage, `run` for all of them, `demo` for the built-in data.

Stage commands run that one stage of the pipeline on a workdir, with the workdir's saved
config (or --config) plus any options given, so they skip, cache and resume exactly as
`lvlmrec run` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from lvlmrec.checks import check_workdir
from lvlmrec.config import RunConfig, named_config
from lvlmrec.pipeline import STAGE_NAMES
from lvlmrec.errors import ConfigError, LvlmrecError
from lvlmrec.workdir import Workdir, to_jsonable

app = typer.Typer(
    help="lvlmrec: describe product images with an LVLM, encode, fuse, and evaluate "
    "recommenders fairly over the whole catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

WorkdirOpt = typer.Option(..., "--workdir", "-w", help="Run directory (created if missing).")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config; default: the workdir's "
                         "config.yaml from its last run, else built-in defaults.")
SetOpt = typer.Option(None, "--set", help="Override a config value: --set describe.batch_size=8 "
                      "(repeatable; the value is parsed as YAML).")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
EngineOpt = typer.Option(None, help="local (this process) or ray (a Ray cluster; docs/ray.md); "
                         "--address, --workers or --gpus-per-worker imply ray.")
AddressOpt = typer.Option(None, help="Ray cluster: auto or HOST:PORT; default: start a local Ray.")
WorkersOpt = typer.Option(None, min=1, help="Ray actors, each holding one copy of the model.")
GpusOpt = typer.Option(None, min=0, help="GPUs per Ray actor (fractions share a GPU).")


def _scale(engine: str | None, address: str | None, workers: int | None,
           gpus_per_worker: float | None) -> dict[str, Any]:
    """The scale-out options; any Ray option given implies --engine ray."""
    ray_options = {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker}
    if engine is None and any(v is not None for v in ray_options.values()):
        engine = "ray"
    return {"engine": engine, **ray_options}


# --------------------------------------------------------------------------- config plumbing
def _config_dict(config: Path | None, workdir: Path | None) -> tuple[dict[str, Any], str, Path]:
    """The raw config mapping, a name for error messages, and the folder paths resolve from."""
    from lvlmrec.checks import read_config_file

    check_workdir(workdir)
    if config is not None:
        return read_config_file(config), str(config), config.parent
    if workdir is not None and Workdir(workdir).config_path.is_file():
        path = Workdir(workdir).config_path
        return read_config_file(path), str(path), path.parent
    return {}, "<defaults>", Path.cwd()


def _apply_sets(data: dict[str, Any], sets: list[str] | None) -> None:
    from lvlmrec.checks import parse_value

    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = parse_value(key, raw)


def _set_keys(sets: list[str] | None, prefix: str = "") -> list[str]:
    return [prefix + item.partition("=")[0] for item in sets or []]


def load_run_config(config: Path | None, workdir: Path | None, sets: list[str] | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None,
                    stages: list[str] | None = None) -> RunConfig:
    """The run's config: file (or the workdir's), options, then --set; validated whole for
    the `stages` about to run (None: not known) before any of them starts (checks.py)."""
    from lvlmrec.checks import Origin, dotted_keys, parse_run_config, validate_run
    from lvlmrec.config import resolve_paths

    data, source, base = _config_dict(config, workdir)
    _merge_options(data, overrides or {})
    _apply_sets(data, sets)
    origin = Origin(source, sets=_set_keys(sets), options=dotted_keys(overrides or {}))
    cfg = resolve_paths(parse_run_config(data, origin), base)
    validate_run(cfg, origin, stages, workdir)
    return cfg


def _merge_options(node: dict[str, Any], values: dict[str, Any]) -> None:
    """Options given (not None) override the config; nested sections merge key by key."""
    for key, value in values.items():
        if isinstance(value, dict):
            if any(v is not None for v in value.values()):
                node[key] = node.get(key) or {}
                _merge_options(node[key], value)
        elif value is not None:
            node[key] = value


def _run(cfg: RunConfig, workdir: Path, only: list[str] | None = None,
         force: list[str] | None = None, progress: bool = True,
         options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from lvlmrec.pipeline import run_pipeline

    return run_pipeline(cfg, Workdir(workdir), only=only, force=force, console=console,
                        show_progress=progress, options=options)


# --------------------------------------------------------------------------- whole runs
@app.command()
def run(
    workdir: Path = WorkdirOpt,
    config: Path = ConfigOpt,
    only: list[str] = typer.Option(None, "--only", help="Run only these stages (repeatable)."),
    force: list[str] = typer.Option(None, "--force", help="Re-run these stages even when "
                                    "unchanged (repeatable; 'all' for every stage)."),
    set_: list[str] = SetOpt,
    progress: bool = ProgressOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would run and why, "
                                 "and run nothing."),
) -> None:
    """Run every stage; unchanged stages are skipped, an interrupted run resumes."""
    cfg = load_run_config(config, workdir, set_, stages=only or list(STAGE_NAMES))
    if dry_run:
        _print_plan(cfg, workdir, only, force)
        return
    _run(cfg, workdir, only, force, progress)
    _where(workdir)


def _print_plan(cfg: RunConfig, workdir: Path, only: list[str] | None = None,
                force: list[str] | None = None) -> None:
    """One line per stage: skip, run or maybe, and why (the next `run`'s decisions)."""
    from lvlmrec.pipeline import plan_pipeline

    for step in plan_pipeline(cfg, Workdir(workdir), only, force):
        console.print(f"{step.stage:<10} {step.action:<6} {step.reason}", highlight=False,
                      soft_wrap=True)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("runs/demo"), "--workdir", "-w", help="Run directory."),
    n_items: int = typer.Option(None, help="Catalog size (default from configs/demo.yaml)."),
    n_users: int = typer.Option(None, help="Number of users (default from configs/demo.yaml)."),
    seed: int = typer.Option(None, help="Seed of the synthetic catalog."),
    set_: list[str] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """The whole pipeline on the built-in synthetic fashion catalog (offline, CPU)."""
    cfg = load_run_config(named_config("demo"), None, set_,
                          {"dataset": {"n_items": n_items, "n_users": n_users, "seed": seed}},
                          stages=list(STAGE_NAMES))
    check_workdir(workdir)
    _run(cfg, workdir, progress=progress)
    _where(workdir)


def _where(workdir: Path) -> None:
    """End of a run: the results table and where the report is, also when all was cached."""
    from lvlmrec.report.build import load_metrics, print_table, results_table

    wd = Workdir(workdir)
    if wd.metrics_path.is_file():
        print_table(results_table(load_metrics(wd)), console)
    for path in (wd.report_dir / "report.html", wd.report_dir / "report.md"):
        if path.is_file():
            console.print(f"\nReport: {path}")
            break
    if wd.metrics_path.is_file():
        console.print(f"Metrics: {wd.metrics_path}")


# --------------------------------------------------------------------------- stages
@app.command()
def prepare(
    workdir: Path = WorkdirOpt,
    format: str = typer.Option(..., "--format", "-f", help="synthetic, kaggle, amazon2018, "
                               "amazon2023, mmrec or csv."),
    source: Path = typer.Option(None, help="Dataset folder (kaggle, mmrec)."),
    reviews: Path = typer.Option(None, help="Reviews JSON lines (amazon2018/2023)."),
    metadata: Path = typer.Option(None, help="Item metadata JSON lines (optional)."),
    images: Path = typer.Option(None, help="Folder of images named by item id or source id."),
    items: Path = typer.Option(None, help="Items CSV (csv)."),
    interactions: Path = typer.Option(None, help="Interactions CSV (csv)."),
    n_items: int = typer.Option(None, help="Synthetic: number of items."),
    n_users: int = typer.Option(None, help="Synthetic: number of users."),
    image_size: int = typer.Option(None, help="Synthetic: image side in pixels."),
    seed: int = typer.Option(None, help="Seed (synthetic catalog, random splits)."),
    min_rating: float = typer.Option(None, help="Keep interactions rated at least this."),
    kcore: int = typer.Option(None, help="Iterated k-core filter on users and items."),
    split: str = typer.Option(None, help="random (60/20/20 per user), loo (last two by time), "
                              "temporal (global time cut), cold_items (a random share of the "
                              "items is held out entirely) or cold_items_temporal (the newest "
                              "items are)."),
    cold_fraction: float = typer.Option(None, help="Cold splits: share of the items made cold, "
                                        "in (0, 0.9], half valid and half test (default 0.2)."),
    drop_items_without_interactions: bool = typer.Option(
        None, "--drop-items-without-interactions", help="Remove catalog items that have no "
        "interaction (default: keep them as cold items)."),
    name: str = typer.Option(None, help="MMRec: dataset name (<name>.inter)."),
    set_: list[str] = typer.Option(None, "--set", help="Other source options: --set "
                                   "title_col=name (repeatable)."),
    progress: bool = ProgressOpt,
) -> None:
    """Build dataset/ in the workdir from a data source (docs/data.md lists the formats)."""
    values = {"format": format, "source": source, "reviews": reviews, "metadata": metadata,
              "images": images, "items": items, "interactions": interactions,
              "n_items": n_items, "n_users": n_users, "image_size": image_size, "seed": seed,
              "min_rating": min_rating, "kcore": kcore, "split": split, "name": name,
              "cold_fraction": cold_fraction,
              "drop_items_without_interactions": drop_items_without_interactions}
    section = {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}
    from lvlmrec.data.cold import check_split_options

    check_split_options(section)
    _apply_sets(section, set_)
    data, src, base = _config_dict(None, workdir)
    data["dataset"] = section
    from lvlmrec.checks import Origin, parse_run_config, validate_run
    from lvlmrec.config import resolve_paths

    # every dataset key comes from this command's options (or its --set)
    origin = Origin(src, sets=_set_keys(set_, "dataset."),
                    options=[f"dataset.{k}" for k in values])
    cfg = resolve_paths(parse_run_config(data, origin), Path.cwd())
    validate_run(cfg, origin, ["prepare"], workdir)
    _run(cfg, workdir, only=["prepare"], progress=progress)
    info(workdir)


@app.command("fetch-images")
def fetch_images(
    workdir: Path = WorkdirOpt,
    concurrency: int = typer.Option(8, min=1, help="Parallel downloads."),
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds allowed per download."),
    retries: int = typer.Option(3, min=0, help="Retries of a transient failure (backoff 1, 2, "
                                "4 ... s)."),
    max_bytes: int = typer.Option(20_000_000, min=1, help="Largest image accepted, in bytes."),
    progress: bool = ProgressOpt,
) -> None:
    """Download item images from their image_url into dataset/images; resumable."""
    from lvlmrec.data.fetch import fetch_images as run_fetch

    summary, failures = run_fetch(Workdir(workdir), concurrency=concurrency, timeout=timeout,
                                  retries=retries, max_bytes=max_bytes, show_progress=progress)
    console.print(summary.line(), soft_wrap=True)
    for failure in failures[:5]:
        console.print(f"  [yellow]item {failure.item_id}: {failure.error}[/yellow]",
                      soft_wrap=True)
    if failures:
        console.print(f"  all {len(failures)} failures: "
                      f"{Workdir(workdir).dataset_dir / 'fetch_errors.csv'}", soft_wrap=True)


@app.command("export-mmrec")
def export_mmrec(
    workdir: Path = WorkdirOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the MMRec dataset to."),
    name: str = typer.Option("lvlmrec", help="Dataset name: <name>.inter, <name>.yaml."),
    text_source: str = typer.Option("description", help="Embedding source for text_feat.npy "
                                    "(description, title, dataset:text_clip, ...; none: skip)."),
    image_source: str = typer.Option("efficientnet", help="Embedding source for image_feat.npy "
                                     "(none: skip)."),
) -> None:
    """Write the prepared dataset and our embeddings in MMRec's format."""
    from lvlmrec.data.mmrec import export_mmrec as run_export

    written = run_export(Workdir(workdir), out, name,
                         None if text_source == "none" else text_source,
                         None if image_source == "none" else image_source)
    for path in written:
        console.print(f"wrote {path}")


@app.command()
def describe(
    workdir: Path = WorkdirOpt,
    config: Path = ConfigOpt,
    backend: str = typer.Option(None, help="attributes, hf, openai or vllm."),
    model: str = typer.Option(None, help="Model id or path for the backend."),
    prompt: str = typer.Option(None, help="Prompt template name: study_readme, study_code "
                               "or one from describe.prompts."),
    include_title: bool = typer.Option(None, "--include-title/--no-include-title",
                                       help="Put the item title in the prompt (the prompt "
                                       "must have a {title} placeholder)."),
    batch_size: int = typer.Option(None, help="Items per batch."),
    max_new_tokens: int = typer.Option(None, help="Longest description, in tokens."),
    max_items: int = typer.Option(None, help="Describe at most this many items."),
    order: str = typer.Option(None, help="all, popularity or random."),
    engine: str = EngineOpt,
    address: str = AddressOpt,
    workers: int = WorkersOpt,
    gpus_per_worker: float = GpusOpt,
    describer: list[str] = typer.Option(None, "--describer", help="Run only this named "
                                        "describer (describe.describers; repeatable)."),
    set_: list[str] = SetOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Describe item images in text; resumes, never redoes finished items."""
    cfg = load_run_config(config, workdir, set_, {"describe": {
        "backend": backend, "model": model, "prompt": prompt, "include_title": include_title,
        "batch_size": batch_size, "max_new_tokens": max_new_tokens, "max_items": max_items,
        "order": order, "scale": _scale(engine, address, workers, gpus_per_worker)}},
        stages=["describe"])
    if describer:
        named = cfg.describe.named()
        unknown = [d for d in describer if d not in named]
        if unknown:
            raise ConfigError(f"--describer: {', '.join(map(repr, unknown))} is not a describer "
                              f"of this run; configured: {', '.join(named)}")
    _run(cfg, workdir, only=["describe"], progress=progress,
         options={"describers": describer or None})


@app.command()
def encode(workdir: Path = WorkdirOpt, config: Path = ConfigOpt, engine: str = EngineOpt,
           address: str = AddressOpt, workers: int = WorkersOpt,
           gpus_per_worker: float = GpusOpt, set_: list[str] = SetOpt,
           progress: bool = ProgressOpt) -> None:
    """Embed titles, descriptions and images."""
    cfg = load_run_config(config, workdir, set_, {
        "encode": {"scale": _scale(engine, address, workers, gpus_per_worker)}},
        stages=["encode"])
    _run(cfg, workdir, only=["encode"], progress=progress)


@app.command()
def represent(workdir: Path = WorkdirOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt,
              progress: bool = ProgressOpt) -> None:
    """Fit every configured representation strategy."""
    _run(load_run_config(config, workdir, set_, stages=["represent"]), workdir,
         only=["represent"], progress=progress)


@app.command()
def evaluate(workdir: Path = WorkdirOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt,
             progress: bool = ProgressOpt) -> None:
    """Full-catalog ranking for every user and representation."""
    _run(load_run_config(config, workdir, set_, stages=["evaluate"]), workdir,
         only=["evaluate"], progress=progress)


@app.command()
def report(workdir: Path = WorkdirOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt,
           progress: bool = ProgressOpt) -> None:
    """Results table and figures."""
    _run(load_run_config(config, workdir, set_, stages=["report"]), workdir,
         only=["report"], progress=progress)
    _where(workdir)


@app.command()
def info(workdir: Path = WorkdirOpt,
         full: bool = typer.Option(False, "--full", help="Print all of dataset.json.")) -> None:
    """Dataset provenance and counts, and the state of every stage."""
    from lvlmrec.data.prepare import describe_provenance
    from lvlmrec.pipeline import STAGE_NAMES
    from lvlmrec.workdir import StageBook, read_json

    wd = Workdir(workdir)
    if not wd.dataset_json.is_file():
        raise LvlmrecError(f"no dataset in {workdir}: run `lvlmrec prepare` first")
    meta = read_json(wd.dataset_json)
    if full:
        console.print(yaml.safe_dump(to_jsonable(meta), sort_keys=False).rstrip())
    else:
        console.print("\n".join(describe_provenance(meta)), highlight=False, soft_wrap=True)
    book = StageBook(wd)
    for name in STAGE_NAMES:
        rec = book.get(name)
        state = "not run" if rec is None else (
            "incomplete" if rec.key.startswith("incomplete:") else f"done in {rec.seconds:.1f}s")
        console.print(f"stage {name}: {state}")
    if wd.config_path.is_file():
        console.print("next `lvlmrec run` (with the workdir's config.yaml):")
        try:
            _print_plan(load_run_config(None, workdir), workdir)
        except LvlmrecError as err:
            console.print(f"  cannot tell: {escape(str(err))}", highlight=False, soft_wrap=True)


@app.command()
def recommend(
    workdir: Path = WorkdirOpt,
    representation: str = typer.Option(..., "--representation", "-r",
                                       help="A fitted representation's name."),
    k: int = typer.Option(100, "--k", min=1, help="Items per user."),
    users: str = typer.Option("all", help="all, or a file of users' original ids, one "
                              "per line."),
    out: Path = typer.Option(..., "--out", "-o", help="recs.parquet or recs.csv."),
    include_history: bool = typer.Option(False, "--include-history",
                                         help="Allow items the user already has."),
    block_size: int = typer.Option(1024, min=1, help="Users scored at once."),
    progress: bool = ProgressOpt,
) -> None:
    """Top-k of one representation for every user (or a list) to Parquet or CSV: user
    source id, rank, item source id, score. A user's history (train, valid and test) is
    what the model scores from and is excluded unless --include-history."""
    from lvlmrec.api import load_run as load_api_run
    from lvlmrec.serve.batch import check_output, read_users_file

    check_output(out)
    run_ = load_api_run(workdir)
    if representation not in run_.models:
        raise ConfigError(f"--representation: unknown representation {representation!r}; "
                          f"fitted: {', '.join(run_.models) or 'none'}")
    ids = None if users == "all" else \
        [run_.served.user_source_ids[u] for u in read_users_file(Path(users),
                                                                  run_.served.user_source_ids)]
    n_rows = run_.recommend_all(representation, k=k, users=ids, out=out,
                                include_history=include_history, block_size=block_size,
                                progress=progress)
    n_users = run_.served.n_users if ids is None else len(ids)
    console.print(f"wrote {n_rows} recommendations for {n_users} users to {out}")


@app.command()
def serve(
    workdir: Path = typer.Option(..., "--workdir", "-w", help="A finished run's directory "
                                 "(read only: the server writes nothing there)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; loopback by default."),
    port: int = typer.Option(8000, help="Port to listen on."),
    index: str = typer.Option("exact", help="Similar-items and search index: exact or hnsw "
                              "(approximate, needs the `ann` extra; for large catalogs)."),
    max_k: int = typer.Option(100, min=1, help="Largest k a request may ask for."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log",
                                    help="Log every request."),
) -> None:
    """Serve a finished run: an HTTP API (docs at /docs) and a web page at /."""
    import ipaddress

    import uvicorn
    from threadpoolctl import threadpool_limits

    from lvlmrec.serve.app import create_app
    from lvlmrec.serve.index import INDEX_KINDS
    from lvlmrec.serve.service import load_run

    if index not in INDEX_KINDS:
        raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, not {index!r}")
    served = load_run(workdir, index=index, max_k=max_k,
                      progress=lambda msg: console.print(f"  {msg}", highlight=False))
    served.warm()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        console.print(f"[yellow]warning: listening on {host}: anyone who can reach this "
                      "address can read the run's catalog and users[/yellow]")
    console.print(f"Serving {workdir}: {served.n_items} items, {served.n_users} users, "
                  f"representations {', '.join(served.representations)}\n"
                  f"  page: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    # One BLAS thread per request: requests run in parallel in the server's thread pool, and
    # a multi-threaded product over the item matrix is several times slower on busy cores.
    threadpool_limits(1)
    uvicorn.run(create_app(run=served, max_k=max_k), host=host, port=port,
                access_log=access_log, log_level="info")


def _print_error(message: str) -> None:
    """`error: MESSAGE` on one line however narrow the terminal (never wrapped or boxed)."""
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False,
                  soft_wrap=True)


def _click_errors() -> Any:
    """The click exceptions module Typer raises from: its own copy since Typer 0.2x."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer runs on click itself
        from click import exceptions
    return exceptions


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    errors = _click_errors()
    try:
        # not standalone: usage errors come here (Typer would box and wrap them), and an
        # interrupt comes back as status 130; the commands themselves return None
        code = app(standalone_mode=False)
    except errors.UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `lvlmrec` alone: the help
            if err.format_message().strip():
                err.show()
            sys.exit(2)
        where = err.ctx.command_path if err.ctx is not None else "lvlmrec"
        _print_error(f"{err.format_message()} (see `{where} --help`)")
        sys.exit(2)
    except errors.ClickException as err:
        _print_error(err.format_message())
        sys.exit(err.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except LvlmrecError as err:
        _print_error(str(err))
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    if code == 130:
        console.print("\ninterrupted: finished work is kept; run the same command to resume")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
