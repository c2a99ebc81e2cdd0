"""The Ray engine on a local Ray instance (2 CPUs, 2 workers): same results as the local
engine, a killed driver resumes, a killed worker is retried without duplicates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import store_rows
from typer.testing import CliRunner

import lvlmrec
from lvlmrec.cli import app
from lvlmrec.cluster import (
    check_reachable,
    check_resources,
    import_ray,
    worker_error,
    worker_runtime_env,
)
from lvlmrec.config import RunConfig, ScaleConfig
from lvlmrec.errors import MissingDependencyError, StageError
from lvlmrec.workdir import Workdir

N_ITEMS = 32
BAD = {5: "image not found", 9: "cannot read image"}
SRC = str(Path(lvlmrec.__file__).resolve().parents[1])
RAY = ["--engine", "ray", "--workers", "2"]


# --------------------------------------------------------------------------- without Ray
def test_scale_options_reach_the_config_but_not_the_stage_keys(tmp_path):
    from lvlmrec.cli import _scale, load_run_config
    from lvlmrec.pipeline import _stages

    assert _scale(None, None, 2, None)["engine"] == "ray"  # a Ray option implies the engine
    assert _scale("local", "auto", None, None)["engine"] == "local"
    assert _scale(None, None, None, None)["engine"] is None  # the config decides

    cfg = load_run_config(None, None, ["describe.scale.cpus_per_worker=2"], {"describe": {
        "batch_size": 8, "scale": {"engine": "ray", "address": "10.0.0.1:6379", "workers": 3,
                                   "gpus_per_worker": 0.5}}})
    assert cfg.describe.scale == ScaleConfig(engine="ray", address="10.0.0.1:6379", workers=3,
                                             gpus_per_worker=0.5, cpus_per_worker=2)
    settings = {s.name: s.settings for s in _stages()}
    for stage in ("describe", "encode"):
        assert settings[stage](cfg) == settings[stage](RunConfig(**{
            stage: getattr(cfg, stage).model_copy(update={"scale": ScaleConfig()})}))
    assert settings["describe"](cfg) != settings["describe"](RunConfig())  # batch_size counts


def test_missing_ray_and_a_too_small_cluster_are_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"lvlmrec\[ray\]"):
        import_ray()
    with pytest.raises(StageError, match="need 4 GPUs, but the cluster has 2"):
        check_resources({"CPU": 64, "GPU": 2}, ScaleConfig(workers=4, gpus_per_worker=1))
    with pytest.raises(StageError, match="need 3 CPUs, but the cluster has 2"):
        check_resources({"CPU": 2, "GPU": 8}, ScaleConfig(workers=2, gpus_per_worker=1))
    check_resources({"CPU": 2}, ScaleConfig(workers=2))  # loading runs inside the actors
    check_resources({"CPU": 5, "GPU": 1}, ScaleConfig(workers=4, gpus_per_worker=0.25))


def test_an_address_where_nothing_listens_fails_fast_and_worker_errors_read_plainly():
    with pytest.raises(StageError, match="nothing answers at the Ray address 127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout=1)
    with pytest.raises(StageError, match="expected auto or HOST:PORT"):
        check_reachable("head-node")
    check_reachable("auto")  # Ray's own lookup
    died = RuntimeError("The actor died because of an error raised in its creation task, "
                        "ray::MapWorker.__init__() (pid=1, ip=10.0.0.2)\n  File \"x.py\", "
                        "line 1, in load\n    raise ConfigError(\nlvlmrec.errors.ConfigError: "
                        "describe.model: cannot load 'm'\n(a hint)")
    assert worker_error(died) == ("lvlmrec.errors.ConfigError: describe.model: cannot load "
                                  "'m'\n(a hint)")


# --------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module (starting one takes seconds); its GCS address."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=worker_runtime_env(),
             logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A prepared synthetic catalog; item 5's image is missing, item 9's truncated."""
    wd = tmp_path_factory.mktemp("catalog") / "run"
    _ok(["prepare", "--workdir", str(wd), "--format", "synthetic", "--n-items", str(N_ITEMS),
         "--n-users", "30", "--image-size", "48"])
    images = Workdir(wd).dataset_dir / "images"
    (images / "5.png").unlink()
    (images / "9.png").write_bytes((images / "9.png").read_bytes()[:40])
    return wd


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # as one line: the console wraps at 80 columns


def _copy(catalog: Path, to: Path) -> Path:
    shutil.copytree(catalog, to)
    return to


def _results(wd: Path) -> dict[int, tuple[str | None, str | None]]:
    """Text or error per item; errors name image paths, here relative to the workdir."""
    return {item: (text, error and error.replace(str(wd), "WORKDIR"))
            for item, text, error, _ in store_rows(Workdir(wd).descriptions_db)}


def _descendants(name: str) -> list[int]:
    """Pids of this test's processes (Ray workers under our raylet) whose title has `name`."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if name in title and ours(pid)]


@pytest.mark.timeout(120)
def test_attributes_on_ray_equal_local_and_survive_a_killed_worker(ray_address, catalog,
                                                                   tmp_path):
    local, on_ray = _copy(catalog, tmp_path / "local"), _copy(catalog, tmp_path / "ray")
    _ok(["describe", "--workdir", str(local), "--batch-size", "4"])
    killed: list[int] = []

    def kill_a_worker_after_the_first_batch() -> None:
        deadline = time.monotonic() + 60
        while len(store_rows(Workdir(on_ray).descriptions_db)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = _descendants("MapWorker")
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(len(store_rows(Workdir(on_ray).descriptions_db)))

    killer = threading.Thread(target=kill_a_worker_after_the_first_batch)
    killer.start()
    output = _ok(["describe", "--workdir", str(on_ray), "--batch-size", "4", *RAY])
    killer.join()
    assert killed and killed[0] < N_ITEMS, "no worker was killed while work remained"
    assert len(store_rows(Workdir(on_ray).descriptions_db)) == N_ITEMS  # one row per item: the retried batch wrote once
    expected = _results(local)
    assert _results(on_ray) == expected
    assert {i for i, (text, _) in expected.items() if text is None} == set(BAD)
    assert all(expected[i][1].startswith(why) for i, why in BAD.items())
    assert f"coverage {N_ITEMS - 2}/{N_ITEMS}" in output and "2 failed" in output


@pytest.mark.timeout(120)
def test_tiny_llava_on_ray_writes_what_the_local_engine_writes(ray_address, catalog, tmp_path,
                                                               tiny_llava):
    args = ["--backend", "hf", "--model", str(tiny_llava), "--max-new-tokens", "6",
            "--batch-size", "4", "--max-items", "12"]
    local, on_ray = _copy(catalog, tmp_path / "local"), _copy(catalog, tmp_path / "ray")
    _ok(["describe", "--workdir", str(local), *args])
    _ok(["describe", "--workdir", str(on_ray), *args, *RAY])
    expected = _results(local)
    assert len(expected) == 12 and sum(text is not None for text, _ in expected.values()) >= 10
    assert _results(on_ray) == expected
    assert (json.loads((Workdir(on_ray).descriptions_dir / "active.json").read_text())
            == json.loads((Workdir(local).descriptions_dir / "active.json").read_text()))


@pytest.mark.timeout(150)
def test_a_killed_driver_resumes_without_redoing_finished_items(ray_address, catalog, tmp_path):
    wd = _copy(catalog, tmp_path / "run")
    args = ["describe", "--workdir", str(wd), "--batch-size", "4", *RAY]
    env = {**os.environ, "PYTHONPATH": SRC}
    driver = subprocess.Popen([sys.executable, "-m", "lvlmrec", *args, "--address", ray_address,
                               "--no-progress"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while len(store_rows(Workdir(wd).descriptions_db)) < 8 and driver.poll() is None:
        assert time.monotonic() < deadline, "the Ray driver never committed a batch"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    log = driver.communicate()[0].decode()
    assert driver.returncode == -signal.SIGKILL, log
    before = store_rows(Workdir(wd).descriptions_db)
    assert 8 <= len(before) < N_ITEMS and len(before) % 4 == 0, "whole batches only"

    output = _ok(args)
    after = store_rows(Workdir(wd).descriptions_db)
    assert [r[0] for r in after] == list(range(N_ITEMS))
    done_before = {r[0]: r for r in before if r[1] is not None}
    assert all(after[i] == row for i, row in done_before.items())  # untouched
    assert f"{len(done_before)} were already done" in output
    assert f"described {N_ITEMS - 2 - len(done_before)} items" in output


@pytest.mark.timeout(120)
def test_encode_on_ray_equals_local_and_each_is_the_others_cache(ray_address, catalog, tmp_path):
    local = _copy(catalog, tmp_path / "local")
    # descriptions for a quarter of the items: the other rows of text_description are zero
    _ok(["describe", "--workdir", str(local), "--max-items", "8"])
    on_ray = _copy(local, tmp_path / "ray")
    # several blocks per text source and 4 image batches for the 2 workers
    sizes = ["--set", "encode.image_batch_size=8", "--set", "encode.text_batch_size=2"]
    _ok(["encode", "--workdir", str(local), *sizes])
    output = _ok(["encode", "--workdir", str(on_ray), *sizes, *RAY])
    assert "2 images could not be read" in output
    names = sorted(p.stem for p in Workdir(local).embeddings_dir.glob("*.npy"))
    assert names == sorted(p.stem for p in Workdir(on_ray).embeddings_dir.glob("*.npy"))
    assert {"text_title", "text_description", "image_efficientnet"} <= set(names)
    for name in names:
        a, b = (np.load(Workdir(w).embedding_path(name)) for w in (local, on_ray))
        assert a.shape == b.shape and np.abs(a).sum() > 0
        np.testing.assert_array_equal(a.any(axis=1), b.any(axis=1))  # the same zero rows
        np.testing.assert_allclose(a, b, atol=2e-5, err_msg=name)
        meta = [json.loads(Workdir(w).embedding_path(name).with_suffix(".json").read_text())
                for w in (local, on_ray)]
        for m in meta:  # image keys hash the image paths, which differ between the copies
            m.pop("key")
        assert meta[0] == meta[1]
    # the same keys: each engine's files are the other's cache
    for wd, engine in ((on_ray, "local"), (local, "ray")):
        output = _ok(["encode", "--workdir", str(wd), "--engine", engine,
                      "--set", "encode.text_batch_size=64"])  # a changed key: the stage runs
        assert output.count(": cached") == len(names), output
