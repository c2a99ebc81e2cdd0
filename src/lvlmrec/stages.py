"""Stage runners: read the workdir, call the stage's core, return what they wrote."""

from __future__ import annotations

from lvlmrec.data.schema import Dataset
from lvlmrec.pipeline import Context, StageResult
from lvlmrec.workdir import StageBook


def prepare(ctx: Context) -> StageResult:
    from lvlmrec.data.prepare import prepare_dataset
    from lvlmrec.data.schema import dataset_digest

    outputs = prepare_dataset(ctx.config.dataset, ctx.workdir, ctx.show_progress)
    counts = Dataset.load(ctx.workdir, features=False).counts()
    ctx.console.print(f"  {counts['n_users']} users, {counts['n_items']} items, "
                      f"{counts['n_interactions']} interactions")
    return StageResult(outputs, info=counts, digest=dataset_digest(ctx.workdir))


def describe(ctx: Context) -> StageResult:
    from lvlmrec.describe.run import active_path, run_describe

    cfg = ctx.config.describe
    if not cfg.enabled:
        active_path(ctx.workdir).unlink(missing_ok=True)
        ctx.console.print("  describe.enabled is false: no descriptions")
        return StageResult([], digest="disabled")
    from rich.markup import escape

    ds = Dataset.load(ctx.workdir, features=False)
    summary, active = run_describe(cfg, ctx.workdir, ds, ctx.show_progress)
    ctx.console.print(f"  {summary.line()}")
    for item_id, err in list(summary.failures.items())[:5]:
        ctx.console.print(f"  [yellow]item {item_id}: {escape(err)}[/yellow]")
    return StageResult(
        [ctx.workdir.descriptions_db, active_path(ctx.workdir)],
        info={"coverage": summary.n_covered, "failed": summary.n_failed,
              "items_per_second": round(summary.items_per_second, 3)},
        digest=active["texts_digest"] + active["model"] + active["prompt_hash"],
        complete=summary.n_failed == 0,
    )


def encode(ctx: Context) -> StageResult:
    from lvlmrec.encode.run import encode_all

    ds = Dataset.load(ctx.workdir, features=False)
    outputs = encode_all(ctx.config.encode, ctx.workdir, ds, ctx.console, ctx.show_progress)
    return StageResult(outputs)


def represent(ctx: Context) -> StageResult:
    from lvlmrec.represent.fit import fit_all

    ds = Dataset.load(ctx.workdir, features=False)
    data_key = StageBook(ctx.workdir).digest("prepare")
    outputs = fit_all(ctx.config.represent, ctx.config.seed, ctx.workdir, ds, data_key,
                      ctx.console, ctx.show_progress)
    return StageResult(outputs)


def evaluate(ctx: Context) -> StageResult:
    from lvlmrec.evaluate.run import evaluate_all

    ds = Dataset.load(ctx.workdir, features=False)
    outputs = evaluate_all(ctx.config.evaluate, ctx.config.represent, ctx.workdir, ds,
                           ctx.console, ctx.show_progress)
    return StageResult(outputs)


def report(ctx: Context) -> StageResult:
    from lvlmrec.report.build import build_report

    outputs = build_report(ctx.config.report, ctx.workdir, ctx.console, ctx.show_progress)
    return StageResult(outputs)
