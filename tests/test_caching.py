"""Content-addressed stages: copies rerun nothing, changed content reruns what depends on
it, `info`/`--dry-run` say what `run` then does, one process per workdir, and a failed
command leaves config.yaml as it was."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lvlmrec.cli import app, load_run_config
from lvlmrec.config import PreparedSource, named_config
from lvlmrec.describe.run import description_sets
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.pipeline import plan_pipeline, run_pipeline
from lvlmrec.workdir import Workdir, stage_lock

STAGES = ("prepare", "describe", "encode", "represent", "evaluate", "report")


def _config(**sets):
    cfg = load_run_config(named_config("demo"), None,
                          ["dataset.image_size=32", *[f"{k}={v}" for k, v in sets.items()]],
                          {"dataset": {"n_items": 60, "n_users": 40}})
    cfg.represent.strategies = [s for s in cfg.represent.strategies
                                if s.name in ("lvlm_text", "title_text", "vision_only")]
    return cfg


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cache") / "run"
    run_pipeline(_config(), Workdir(wd), show_progress=False)
    return wd


def _cp(src, dst):
    """`cp -r`: new inodes and new mtimes, as a user's copy has."""
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def _plan(cfg, wd):
    return {s.stage: s.action for s in plan_pipeline(cfg, Workdir(wd))}


def _run(cfg, wd):
    return {s["stage"]: s["status"] for s in run_pipeline(cfg, Workdir(wd), show_progress=False)}


def _agrees(plan, status):
    """A planned `skip` was skipped, a planned `run` ran; `maybe` may do either."""
    for stage, action in plan.items():
        if action == "skip":
            assert status[stage] == "skipped", (stage, plan, status)
        elif action == "run":
            assert status[stage] == "ran", (stage, plan, status)


def test_copied_workdir_reruns_nothing(base, tmp_path):
    wd = _cp(base, tmp_path / "copy")
    old = time.time() - 3600
    for root, _, files in os.walk(wd):  # every file looks freshly written
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    result = CliRunner().invoke(app, ["run", "-w", str(wd), "--dry-run"])
    assert result.exit_code == 0, result.output
    for stage in STAGES:
        assert f"{stage:<10} skip" in result.output, result.output
    info = CliRunner().invoke(app, ["info", "-w", str(wd)])
    assert info.exit_code == 0 and info.output.count(" skip ") == len(STAGES), info.output
    assert _run(_config(), wd) == dict.fromkeys(STAGES, "skipped")
    moved = tmp_path / "moved"
    os.rename(wd, moved)
    assert _plan(_config(), moved) == dict.fromkeys(STAGES, "skip")


def test_image_edited_in_place_reruns_that_item_and_everything_downstream(base, tmp_path):
    wd = _cp(base, tmp_path / "edit")
    w = Workdir(wd)
    cfg = _config()
    cfg.dataset = PreparedSource()  # the dataset now belongs to the user
    _run(cfg, wd)  # the source changed: prepare checks the dataset, nothing else changes
    assert _plan(cfg, wd) == dict.fromkeys(STAGES, "skip")
    before = np.load(w.embedding_path("image_efficientnet"))
    first = next(iter(description_sets(w).values()))  # the demo's first describer's set
    model, phash = first["model"], first["prompt_hash"]
    with DescriptionStore(w.descriptions_db) as store:
        texts_before = store.texts(model, phash)
    with DescriptionStore(w.descriptions_db) as store:
        created_before = dict(store._conn.execute("SELECT item_id, created FROM descriptions"))
    image = wd / "dataset" / "images" / "7.png"
    Image.new("RGB", (32, 32), (250, 10, 10)).save(image)  # a plain red square, same name

    plan = plan_pipeline(cfg, w)
    assert plan[0].action == "run" and "content" in plan[0].reason
    status = _run(cfg, wd)
    _agrees({s.stage: s.action for s in plan}, status)
    assert status == dict.fromkeys(STAGES, "ran")
    with DescriptionStore(w.descriptions_db) as store:
        created = dict(store._conn.execute("SELECT item_id, created FROM descriptions"))
        texts = store.texts(model, phash)
    redone = {i for i in created if created[i] != created_before[i]}
    assert redone == {7}  # only that item was described again
    assert texts[7] != texts_before[7] and "red" in texts[7]
    after = np.load(w.embedding_path("image_efficientnet"))
    changed = np.flatnonzero(np.abs(after - before).sum(axis=1) > 0)
    assert changed.tolist() == [7]  # only that image was encoded again (others reused)
    assert _plan(cfg, wd) == dict.fromkeys(STAGES, "skip")


def test_new_description_set_refits_and_reevaluates(base, tmp_path):
    wd = _cp(base, tmp_path / "newdesc")
    w = Workdir(wd)
    metrics_before = pd.read_csv(w.metrics_path).set_index("representation")
    fit_before = json.loads((w.model_dir("lvlm_text") / "fit.json").read_text())["key"]
    cfg = _config(**{"describe.attributes.max_labels": 0, "describe.attributes.patterns": False})
    plan = _plan(cfg, wd)
    assert plan["prepare"] == "skip" and plan["describe"] == "run"
    status = _run(cfg, wd)
    _agrees(plan, status)
    assert status == {"prepare": "skipped", **dict.fromkeys(STAGES[1:], "ran")}
    fit_after = json.loads((w.model_dir("lvlm_text") / "fit.json").read_text())["key"]
    assert fit_after != fit_before
    metrics = pd.read_csv(w.metrics_path).set_index("representation")
    cols = [c for c in metrics.columns if "@" in c]
    assert not np.allclose(metrics.loc["lvlm_text", cols].to_numpy(float),
                           metrics_before.loc["lvlm_text", cols].to_numpy(float))
    # the title-only model read nothing new: same numbers
    np.testing.assert_allclose(metrics.loc["title_text", cols].to_numpy(float),
                               metrics_before.loc["title_text", cols].to_numpy(float))


def test_text_precision_reencodes_texts_but_not_images(base, tmp_path):
    wd = _cp(base, tmp_path / "bf16")
    w = Workdir(wd)
    image_meta = json.loads(w.embedding_path("image_efficientnet").with_suffix(".json")
                            .read_text())
    status = _run(_config(**{"encode.text_precision": "bfloat16"}), wd)
    assert status["describe"] == "skipped" and status["encode"] == "ran"
    text_meta = json.loads(w.embedding_path("text_description").with_suffix(".json").read_text())
    assert text_meta["precision"] == "bfloat16"
    again = json.loads(w.embedding_path("image_efficientnet").with_suffix(".json").read_text())
    assert again["key"] == image_meta["key"]


def test_text_order_reuses_the_embeddings(base, tmp_path):
    """`text_order` moves embeddings only by float rounding, like the batch size: the
    stage reruns (its settings changed) and finds every embedding cached."""
    wd = _cp(base, tmp_path / "tokens")
    path = Workdir(wd).embedding_path("text_description")
    before = (path.read_bytes(), path.with_suffix(".json").read_text())
    status = _run(_config(**{"encode.text_order": "tokens"}), wd)
    assert status["describe"] == "skipped" and status["encode"] == "ran"
    assert (path.read_bytes(), path.with_suffix(".json").read_text()) == before
    assert json.loads(before[1])["order"] == "characters"


def test_a_changed_plugin_source_refits(base, tmp_path, monkeypatch):
    wd = _cp(base, tmp_path / "plugin")
    plugin = tmp_path / "my_cache_plugin.py"
    plugin.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _config()
    cfg.represent.plugins = ["my_cache_plugin"]
    assert _plan(cfg, wd)["represent"] == "run"
    _run(cfg, wd)
    assert _plan(cfg, wd)["represent"] == "skip"
    plugin.write_text("X = 2\n")
    plan = _plan(cfg, wd)
    assert plan["represent"] == "run" and plan["prepare"] == "skip"


def test_a_running_process_holds_the_workdir(base, tmp_path):
    wd = _cp(base, tmp_path / "locked")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from lvlmrec.workdir import Workdir, stage_lock\n"
         "with stage_lock(Workdir(sys.argv[1]), 'lvlmrec describe'):\n"
         "    print('locked', flush=True); time.sleep(60)", str(wd)],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = subprocess.run([sys.executable, "-m", "lvlmrec.cli", "describe", "-w", str(wd),
                                 "--no-progress"], capture_output=True, text=True)
        assert result.returncode == 2
        assert "is busy: lvlmrec describe is running there" in " ".join(result.stdout.split())
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale and is taken over
    assert (wd / ".lvlmrec" / "lock").is_file()
    with stage_lock(Workdir(wd), "test"):
        assert json.loads((wd / ".lvlmrec" / "lock").read_text())["pid"] == os.getpid()
    assert not (wd / ".lvlmrec" / "lock").exists()


def test_failed_prepare_leaves_config_as_it_was(base, tmp_path):
    wd = _cp(base, tmp_path / "failed")
    config = (wd / "config.yaml").read_bytes()
    bad = tmp_path / "items.csv"
    bad.write_text("foo,bar\n1,2\n")  # parses as a config, fails inside the stage
    result = subprocess.run([sys.executable, "-m", "lvlmrec.cli", "prepare", "-w", str(wd),
                             "--format", "csv", "--items", str(bad), "--interactions", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (wd / "config.yaml").read_bytes() == config
    # the workdir's own config still runs and is still current
    result = CliRunner().invoke(app, ["run", "-w", str(wd), "--dry-run"])
    assert result.exit_code == 0 and result.output.count(" skip ") == len(STAGES), result.output
