"""Data never runs code and files stay inside the run: crafted model folders, image paths
that leave the run, strategy names that leave models/, atomic model folders and modes."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli
from fastapi.testclient import TestClient
from PIL import Image
from rich.console import Console

from lvlmrec.config import EvaluateConfig, RepresentConfig, StrategyConfig, parse_config
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.encode.store import save_embedding
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.evaluate.run import evaluate_all
from lvlmrec.represent.base import Recommender
from lvlmrec.represent.fit import fit_all, load_model
from lvlmrec.represent.registry import REGISTRY, loadable_class
from lvlmrec.serve.app import create_app
from lvlmrec.serve.service import load_run
from lvlmrec.workdir import (
    FILE_MODE,
    Workdir,
    atomic_dir,
    clean_stray_temps,
    to_jsonable,
)

STRATEGIES = [{"name": "vision_only", "kind": "vision", "vision": "efficientnet"},
              {"name": "popular", "kind": "popularity"}]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A fitted run without describing or encoding: synthetic data, a random image source."""
    wd = Workdir(tmp_path_factory.mktemp("safe-run"))
    ds = generate_synthetic(wd.dataset_dir, n_items=60, n_users=40, image_size=32,
                            show_progress=False)
    ds.save(wd, provenance={"source": {"format": "synthetic"}})
    save_embedding(wd, "image_efficientnet",
                   np.random.default_rng(0).normal(size=(60, 8)), {})
    cfg = parse_config({"represent": {"strategies": STRATEGIES}})
    wd.config_path.write_text(yaml.safe_dump(to_jsonable(cfg)))
    fit_all(cfg.represent, 0, wd, ds, "key", Console(quiet=True), show_progress=False)
    return wd, ds, cfg


def _craft(folder, cls_name, params):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"class": cls_name, "params": params,
                                                   "scalars": {}}))
    np.savez(folder / "state.npz")


def _crafted_models(tmp_path, marker):
    """(class, params) that would create `marker` if load imported or called them."""
    evil = tmp_path / "evil_plugin_xyz.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    "class Model:\n    def __init__(self, **kw):\n        pass\n")
    return [("os.system", {"command": f"touch {marker}"}),
            ("subprocess.Popen", {"args": ["touch", str(marker)]}),
            ("builtins.exec", {"source": f"open({str(marker)!r}, 'w')"}),
            ("evil_plugin_xyz.Model", {}),
            ("lvlmrec.represent.base.Recommender", {})]  # a class, but no registered kind


# --------------------------------------------------------------------------- safe loading
def test_crafted_model_json_is_refused_by_load(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.syspath_prepend(str(tmp_path))
    for i, (cls_name, params) in enumerate(_crafted_models(tmp_path, marker)):
        folder = tmp_path / f"m{i}"
        _craft(folder, cls_name, params)
        for plugins in (None, [], ["evil_other"]):
            with pytest.raises(StageError, match="refusing to load") as err:
                Recommender.load(folder, plugins if plugins != ["evil_other"] else None)
            assert str(folder) in str(err.value) and cls_name in str(err.value)
    assert not marker.exists()
    assert "evil_plugin_xyz" not in sys.modules


def test_unreadable_model_state_is_a_clean_error(small_run, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(small_run[0].model_dir("vision_only"), folder)
    (folder / "state.npz").write_bytes(b"not a zip")
    with pytest.raises(StageError, match="cannot read the model state"):
        Recommender.load(folder)
    np.savez(folder / "state.npz", item_vectors_=np.array([object()], dtype=object))
    with pytest.raises(StageError, match="cannot read the model state"):  # no pickles
        Recommender.load(folder)
    (folder / "state.npz").unlink()
    with pytest.raises(StageError, match="cannot read the model state"):
        Recommender.load(folder)


def test_crafted_model_is_refused_by_evaluate_and_serve(small_run, tmp_path, monkeypatch):
    import shutil

    wd0, ds, cfg = small_run
    marker = tmp_path / "marker"
    monkeypatch.syspath_prepend(str(tmp_path))
    for i, (cls_name, params) in enumerate(_crafted_models(tmp_path, marker)):
        wd = Workdir(tmp_path / f"run{i}")
        shutil.copytree(wd0.root, wd.root)
        _craft(wd.model_dir("vision_only"), cls_name, params)
        with pytest.raises(StageError, match="refusing to load"):
            evaluate_all(EvaluateConfig(ks=[10], n_bootstrap=0, n_permutations=0),
                         cfg.represent, wd, ds, Console(quiet=True), show_progress=False)
        served = load_run(wd)
        assert "vision_only" not in served.representations
        assert "not a registered" in served.skipped["vision_only"]
    assert not marker.exists()


def test_serve_opens_only_configured_model_folders(small_run, tmp_path):
    import shutil

    wd = Workdir(tmp_path / "run")
    shutil.copytree(small_run[0].root, wd.root)
    _craft(wd.model_dir("extra"), "subprocess.Popen", {"args": ["true"]})
    served = load_run(wd)
    assert list(served.representations) == ["vision_only", "popular"]
    assert "extra" not in served.skipped


PLUGIN = textwrap.dedent('''
    from lvlmrec.represent.content import ContentRecommender
    from lvlmrec.represent.registry import register


    class PluginText(ContentRecommender):
        pass


    register("plugin_text", PluginText)
''')


def test_plugin_kinds_load_only_for_runs_that_list_the_plugin(tmp_path, monkeypatch):
    (tmp_path / "safe_plugin_abc.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("lvlmrec.represent.registry.REGISTRY", dict(REGISTRY))
    name = "safe_plugin_abc.PluginText"
    assert loadable_class(name, ["safe_plugin_abc"]) is not None  # imports the plugin
    assert loadable_class(name, []) is None  # registered, but not this run's plugin
    assert loadable_class(name, None) is not None
    assert loadable_class("lvlmrec.represent.content.ContentRecommender", []) is not None


# --------------------------------------------------------------------------- atomic folders
def test_a_killed_fit_leaves_no_half_model_and_its_temps_are_cleaned(small_run, tmp_path,
                                                                      monkeypatch):
    import shutil

    wd0, ds, cfg = small_run
    wd = Workdir(tmp_path / "run")
    shutil.copytree(wd0.root, wd.root)
    before = sorted(p.name for p in wd.model_dir("vision_only").iterdir())

    def dies_midway(self, path):
        (path / "state.npz").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Recommender, "save", dies_midway)
    # a changed setting refits vision_only; its save dies halfway
    forced = StrategyConfig(name="vision_only", kind="vision", vision="efficientnet",
                            scoring="max")
    with pytest.raises(KeyboardInterrupt):
        fit_all(RepresentConfig(strategies=[forced]), 0, wd, ds, "key", Console(quiet=True),
                show_progress=False)
    # the old model is intact; nothing half-written under the strategy's name
    assert sorted(p.name for p in wd.model_dir("vision_only").iterdir()) == before
    load_model(wd, "vision_only")
    # a temporary folder of a writer that no longer runs is removed by the next fit
    dead = subprocess.Popen(["true"])
    dead.wait()
    stray = wd.models_dir / f".vision_only.lvtmp{dead.pid}.abc.tmp"
    (stray / "sub").mkdir(parents=True)
    live = wd.models_dir / f".vision_only.lvtmp{os.getpid()}.abc.tmp"
    live.mkdir()
    monkeypatch.undo()
    fit_all(cfg.represent, 0, wd, ds, "key", Console(quiet=True), show_progress=False)
    assert not stray.exists() and live.exists()  # a live writer's temp is left alone
    assert clean_stray_temps(wd.models_dir) == []


def test_a_run_removes_what_a_killed_writer_left(small_run, tmp_path):
    import shutil

    from lvlmrec.pipeline import run_pipeline

    wd = Workdir(tmp_path / "run")
    shutil.copytree(small_run[0].root, wd.root)
    dead = subprocess.Popen(["true"])
    dead.wait()
    strays = [wd.dataset_dir / f".items.parquet.lvtmp{dead.pid}.x1.tmp",
              wd.embeddings_dir / f".image_efficientnet.npy.lvtmp{dead.pid}.x2.tmp"]
    for path in strays:
        path.write_bytes(b"half")
    kept = wd.embeddings_dir / f".text_title.npy.lvtmp{os.getpid()}.x3.tmp"
    kept.write_bytes(b"being written")
    with pytest.raises(StageError, match="unknown stage"):  # cleaning comes first
        run_pipeline(small_run[2], wd, only=["nothing"], console=Console(quiet=True))
    assert not any(p.exists() for p in strays) and kept.exists()


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert os.listdir(tmp_path / "models") == ["m"]


def test_artifacts_are_world_readable(small_run):
    wd = small_run[0]
    old = os.umask(0o022)
    os.umask(old)
    files = [p for p in wd.root.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE, path
    assert stat.S_IMODE(wd.model_dir("vision_only").stat().st_mode) & 0o500 == 0o500
    if old == 0o022:
        assert FILE_MODE == 0o644


# --------------------------------------------------------------------------- image paths
def _csv_catalog(root, pictures):
    n = len(pictures)
    pd.DataFrame({"item_id": [f"i{k}" for k in range(n)],
                  "title": [f"Item {k}" for k in range(n)],
                  "picture": pictures}).to_csv(root / "items.csv", index=False)
    rows = [{"user_id": f"u{u}", "item_id": f"i{(u + j) % n}"} for u in range(6)
            for j in range(4)]
    pd.DataFrame(rows).to_csv(root / "events.csv", index=False)


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "symlink_by_id"])
def test_image_paths_outside_the_run_are_refused_at_prepare(tmp_path, case, capsys):

    data = tmp_path / "data"
    pics = data / "pics"
    pics.mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "outside.jpg")
    for k in range(4):
        Image.new("RGB", (4, 4), "blue").save(pics / f"i{k}.jpg")
    pictures = ["", "", "", ""]
    if case == "absolute":
        pictures[2] = "/etc/hostname"
    elif case == "dotdot":
        pictures[2] = "../../outside.jpg"
    elif case == "symlink":
        (pics / "evil.jpg").symlink_to("/etc/passwd")
        pictures[2] = "evil.jpg"
    else:
        (pics / "i2.jpg").unlink()
        (pics / "i2.jpg").symlink_to("/etc/passwd")
    if case == "absolute" and not os.path.isfile("/etc/hostname"):
        pytest.skip("no /etc/hostname here")
    _csv_catalog(data, pictures)
    wd = tmp_path / "run"
    args = ["prepare", "-w", str(wd), "-f", "csv", "--items", str(data / "items.csv"),
            "--interactions", str(data / "events.csv"), "--images", str(pics),
            "--set", "image_col=picture", "--no-progress"]
    code, out = run_cli(args, capsys)
    assert code == 2, out
    assert "'i2'" in out and "refused" in out and "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("error: ") and out.count("error:") == 1
    assert not (wd / "dataset" / "items.parquet").exists()


def test_a_prepared_dataset_is_checked_too(small_run, tmp_path, capsys):
    import shutil

    wd = Workdir(tmp_path / "run")
    shutil.copytree(small_run[0].root, wd.root)
    items = pd.read_parquet(wd.items_path)
    items.loc[3, "image_path"] = "../../../../../../etc/hostname"
    items.to_parquet(wd.items_path, index=False)
    code, out = run_cli(["prepare", "-w", wd.root, "-f", "prepared", "--no-progress"], capsys)
    assert code == 2 and "items.parquet: item " in out and "refused" in out


def test_server_never_serves_a_file_outside_the_run(small_run, tmp_path):
    import shutil

    wd = Workdir(tmp_path / "run")
    shutil.copytree(small_run[0].root, wd.root)
    run = load_run(wd)
    link = wd.dataset_dir / "images" / "linked.png"
    link.symlink_to("/etc/passwd")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4), "red").save(outside)
    paths = list(run.image_paths)
    paths[1], paths[2], paths[3] = link, outside, wd.root / "config.yaml"
    client = TestClient(create_app(run=dataclasses.replace(run, image_paths=paths)))
    for i in (1, 2, 3):
        for url in (f"/items/{i}/image", f"/items/{i}/image?size=32"):
            response = client.get(url)
            assert response.status_code == 403, (url, response.text)
            assert b"root:" not in response.content
    assert client.get("/items/4/image").status_code == 200
    # items.parquet edited after prepare: the server re-checks what it reads
    items = pd.read_parquet(wd.items_path)
    items.loc[5, "image_path"] = "/etc/passwd"
    items.loc[6, "image_path"] = "/etc/hostname"
    items.loc[7, "image_path"] = "../../../../../../../../etc/passwd"
    items.to_parquet(wd.items_path, index=False)
    client = TestClient(create_app(wd))
    for i in (5, 6, 7):
        response = client.get(f"/items/{i}/image")
        exists = wd.resolve(items.loc[i, "image_path"]).is_file()
        assert response.status_code == (403 if exists else 200), response.text  # else: placeholder
        assert b"root:" not in response.content


# --------------------------------------------------------------------------- strategy names
@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b"])
def test_strategy_names_cannot_leave_models(name, tmp_path):
    with pytest.raises(ConfigError, match="represent.strategies.0.name"):
        parse_config({"represent": {"strategies": [{"name": name, "kind": "popularity"}]}},
                     "cfg.yaml")
    with pytest.raises(ConfigError, match="cannot name a folder"):
        Workdir(tmp_path).model_dir(name)
