"""End to end on a tiny demo catalog: every stage, skip on re-run, resume after a crash."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from lvlmrec import stages
from lvlmrec.cli import app, load_run_config
from lvlmrec.config import PreparedSource, named_config
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.pipeline import run_pipeline
from lvlmrec.workdir import StageBook, Workdir

TINY = ["--n-items", "60", "--n-users", "40", "--set", "dataset.image_size=48", "--no-progress"]


def _tiny_config():
    return load_run_config(named_config("demo"), None, ["dataset.image_size=48"],
                           {"dataset": {"n_items": 60, "n_users": 40}})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--workdir", str(wd), *TINY])
    assert result.exit_code == 0, result.output
    return wd, result.output


def test_demo_writes_every_artifact(demo_run):
    wd, output = demo_run
    w = Workdir(wd)
    for path in (w.items_path, w.interactions_path, w.users_path, w.dataset_json,
                 w.descriptions_db, w.embedding_path("text_title"),
                 w.embedding_path("text_description"), w.embedding_path("image_efficientnet"),
                 w.metrics_path, w.results_dir / "per_user.parquet",
                 w.results_dir / "significance.csv", w.results_dir / "slices.csv",
                 w.report_dir / "report.md", w.report_dir / "report.html"):
        assert path.is_file(), path
    assert list(w.figures_dir.glob("*.png"))
    metrics = pd.read_csv(w.metrics_path)
    for col in ("representation", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "n_users"):
        assert col in metrics.columns
    assert set(metrics["representation"]) >= {"title_text", "lvlm_text", "vision_only"}
    assert (metrics["n_users"] == 40).all()
    assert "Test results" in output and "Report:" in output


def test_descriptions_cover_every_item(demo_run):
    wd, _ = demo_run
    with DescriptionStore(Workdir(wd).descriptions_db) as store:
        keys = store.keys()
        assert len(keys) == 2  # the demo's two describers, each its own set
        for model, phash, n in keys:
            assert n == 60
            assert all(t.strip() for t in store.texts(model, phash).values())


def test_second_run_skips_every_stage(demo_run):
    wd, _ = demo_run
    result = CliRunner().invoke(app, ["demo", "--workdir", str(wd), *TINY])
    assert result.exit_code == 0, result.output
    for stage in ("prepare", "describe", "encode", "represent", "evaluate", "report"):
        assert f"{stage}: skipped" in result.output
    assert "Test results" in result.output


def test_changed_setting_reruns_only_downstream(tmp_path, demo_run):
    import shutil

    wd = tmp_path / "copy"
    shutil.copytree(demo_run[0], wd)
    cfg = _tiny_config()
    cfg.evaluate.ks = [10, 20]
    summary = run_pipeline(cfg, Workdir(wd), show_progress=False)
    status = {s["stage"]: s["status"] for s in summary}
    assert status == {"prepare": "skipped", "describe": "skipped", "encode": "skipped",
                      "represent": "skipped", "evaluate": "ran", "report": "ran"}


def test_crash_midway_resumes_without_redoing(tmp_path, monkeypatch):
    cfg = _tiny_config()
    wd = Workdir(tmp_path / "run")

    def boom(ctx):
        raise RuntimeError("killed")

    monkeypatch.setattr(stages, "encode", boom)
    with pytest.raises(RuntimeError):
        run_pipeline(cfg, wd, show_progress=False)
    book = StageBook(wd)
    assert book.get("describe") is not None and book.get("encode") is None
    monkeypatch.undo()

    calls = []
    real_describe = stages.describe
    monkeypatch.setattr(stages, "describe", lambda ctx: calls.append(1) or real_describe(ctx))
    summary = run_pipeline(cfg, wd, show_progress=False)
    status = {s["stage"]: s["status"] for s in summary}
    assert status["prepare"] == "skipped" and status["describe"] == "skipped"
    assert status["encode"] == "ran" and not calls


def test_corrupt_image_is_recorded_and_retried(tmp_path):
    cfg = _tiny_config()
    cfg.represent.strategies = cfg.represent.strategies[:2]
    cfg.describe.describers = {}  # one describer: one set
    wd = Workdir(tmp_path / "run")
    run_pipeline(cfg, wd, only=["prepare"], show_progress=False)
    cfg.dataset = PreparedSource()  # images now belong to the user: nothing regenerates them
    bad = wd.dataset_dir / "images" / "7.png"
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not a png")
    summary = run_pipeline(cfg, wd, show_progress=False)
    assert {s["stage"]: s["status"] for s in summary}["describe"] == "incomplete"
    with DescriptionStore(wd.descriptions_db) as store:
        (model, phash, n), = store.keys()
        assert n == 59
        errors = store.errors(model, phash)
        assert list(errors) == [7] and "7.png" in errors[7]
    assert wd.metrics_path.is_file()  # the rest of the run went on
    bad.write_bytes(good_bytes)
    summary = run_pipeline(cfg, wd, show_progress=False)
    status = {s["stage"]: s["status"] for s in summary}
    # the dataset's content changed (an image, in place): prepare checks it again
    assert status["describe"] == "ran" and status["prepare"] == "ran"
    assert status["encode"] == "ran"
    with DescriptionStore(wd.descriptions_db) as store:
        assert store.keys()[0][2] == 60 and not store.errors(model, phash)


def test_every_command_has_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    import typer

    commands = list(typer.main.get_command(app).commands)
    assert {"run", "demo", "prepare", "describe", "encode", "evaluate", "report"} <= set(commands)
    for name in commands:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, name
        assert "Usage" in r.output


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluate:\n  kss: [10]\n")
    from lvlmrec.cli import main
    import sys

    argv = sys.argv
    sys.argv = ["lvlmrec", "run", "--workdir", str(tmp_path / "w"), "--config", str(bad)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = argv
    assert exit_info.value.code == 2
