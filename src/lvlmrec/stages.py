"""Stage runners: read the workdir, call the stage's core, return what they wrote."""

from __future__ import annotations

from lvlmrec.data.schema import Dataset
from lvlmrec.pipeline import Context, StageResult
from lvlmrec.errors import StageError
from lvlmrec.workdir import StageBook, hash_obj, read_json


def prepare(ctx: Context) -> StageResult:
    from lvlmrec.data.prepare import prepare_dataset
    from lvlmrec.data.schema import dataset_digest

    outputs = prepare_dataset(ctx.config.dataset, ctx.workdir, ctx.show_progress, ctx.hasher)
    counts = Dataset.load(ctx.workdir, features=False).counts()
    ctx.console.print(f"  {counts['n_users']} users, {counts['n_items']} items, "
                      f"{counts['n_interactions']} interactions")
    return StageResult(outputs, info=counts, digest=dataset_digest(ctx.workdir, ctx.hasher))


def describe(ctx: Context) -> StageResult:
    from rich.markup import escape

    from lvlmrec.describe.audit import audit_labels, write_text_audit
    from lvlmrec.describe.run import active_path, describers_path, run_describers

    cfg = ctx.config.describe
    if not cfg.enabled:
        active_path(ctx.workdir).unlink(missing_ok=True)
        describers_path(ctx.workdir).unlink(missing_ok=True)
        ctx.console.print("  describe.enabled is false: no descriptions")
        return StageResult([], digest="disabled")
    ds = Dataset.load(ctx.workdir, features=False)
    audit_labels(ds, cfg)  # a describe.audit column the items lack fails before any work
    only = ctx.options.get("describers")
    several = len(cfg.named()) > 1

    def done(name, summary, record) -> None:
        label = f"{name}: " if several else ""
        if summary is None:
            ctx.console.print(f"  [red]{label}failed: {escape(record['error'])}[/red]")
            return
        ctx.console.print(f"  {label}{summary.line()}")
        for item_id, err in list(summary.failures.items())[:5]:
            ctx.console.print(f"  [yellow]item {item_id}: {escape(err)}[/yellow]")

    records = run_describers(cfg, ctx.workdir, ds, only, ctx.show_progress, on_done=done)
    audit = write_text_audit(ctx.workdir, ds, cfg, records, ctx.config.encode.text_model)
    ok = [r for r in records.values() if r.get("status") == "ok"]
    if not ok:
        raise StageError("every describer failed: " + "; ".join(
            f"{n}: {r.get('error', r.get('status'))}" for n, r in records.items()))
    return StageResult(
        [ctx.workdir.descriptions_db, describers_path(ctx.workdir), audit],
        info={name: {"status": r.get("status"), "coverage": r.get("n_texts"),
                     "failed": r.get("n_failed")} for name, r in records.items()},
        digest=hash_obj({n: [r.get("texts_digest"), r.get("model"), r.get("prompt_hash")]
                         for n, r in records.items()}),
        complete=not only and all(r.get("status") == "ok" and not r.get("n_failed")
                                  for r in records.values()),
    )


def encode(ctx: Context) -> StageResult:
    from lvlmrec.encode.run import encode_all

    ds = Dataset.load(ctx.workdir, features=False)
    outputs = encode_all(ctx.config.encode, ctx.workdir, ds, ctx.console, ctx.show_progress)
    return StageResult(outputs)


def represent(ctx: Context) -> StageResult:
    from lvlmrec.represent.fit import fit_all

    ds = Dataset.load(ctx.workdir, features=False)
    data_key = StageBook(ctx.workdir, ctx.hasher).digest("prepare")
    outputs = fit_all(ctx.config.represent, ctx.config.seed, ctx.workdir, ds, data_key,
                      ctx.console, ctx.show_progress, seeds=ctx.config.run_seeds)
    return StageResult(outputs, digest=represent_digest(outputs))


def represent_digest(outputs: list) -> str:
    """What downstream depends on: the fit keys each model folder (and its other seeds'
    fits) was built from, not its bytes, which hold timings. results/search.csv holds only
    what those keys determine (and timings), so it is left out."""
    parts = {}
    for path in outputs:
        if path.is_dir():
            fits = [path / "fit.json", *sorted(path.glob("seed-*/fit.json"))]
            parts[path.name] = [read_json(f).get("key") for f in fits if f.is_file()]
    return hash_obj(parts)


def evaluate(ctx: Context) -> StageResult:
    from lvlmrec.evaluate.run import evaluate_all

    ds = Dataset.load(ctx.workdir, features=False)
    outputs = evaluate_all(ctx.config.evaluate, ctx.config.represent, ctx.workdir, ds,
                           ctx.console, ctx.show_progress, seeds=ctx.config.run_seeds)
    return StageResult(outputs)


def report(ctx: Context) -> StageResult:
    from lvlmrec.report.build import build_report

    outputs = build_report(ctx.config.report, ctx.workdir, ctx.console, ctx.show_progress)
    return StageResult(outputs)
