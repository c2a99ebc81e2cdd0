"""Kill a describe run with SIGKILL, run it again: finished items stay, the rest gets done."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import store_rows
from typer.testing import CliRunner

import lvlmrec
from lvlmrec.cli import app
from lvlmrec.describe.run import read_active
from lvlmrec.workdir import Workdir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_ITEMS = 80
SRC = str(Path(lvlmrec.__file__).resolve().parents[1])


@pytest.fixture
def workdir(tmp_path):
    wd = tmp_path / "run"
    result = CliRunner().invoke(app, ["prepare", "--workdir", str(wd), "--format", "synthetic",
                                      "--n-items", str(N_ITEMS), "--n-users", "30",
                                      "--image-size", "48", "--no-progress"])
    assert result.exit_code == 0, result.output
    return wd


def test_killed_run_resumes_without_redoing_finished_items(workdir, tiny_llava):
    w = Workdir(workdir)
    images = w.dataset_dir / "images"
    (images / "5.png").unlink()  # missing
    corrupt = images / "9.png"
    good_bytes = corrupt.read_bytes()
    corrupt.write_bytes(good_bytes[:40])  # truncated
    args = ["describe", "--workdir", str(workdir), "--backend", "hf", "--model", str(tiny_llava),
            "--batch-size", "4", "--max-new-tokens", "32", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lvlmrec", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(store_rows(w.descriptions_db)) < 12 and proc.poll() is None:
        assert time.monotonic() < deadline, "describe never committed a batch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    before = store_rows(w.descriptions_db)
    assert 12 <= len(before) < N_ITEMS, "the run ended before it could be killed"
    assert len(before) % 4 == 0  # whole batches only: a batch commits at once
    assert read_active(w) is None

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    after = store_rows(w.descriptions_db)
    assert [r[0] for r in after] == list(range(N_ITEMS))
    done_before = {r[0]: r for r in before if r[1] is not None}
    assert all(after[i] == row for i, row in done_before.items())  # untouched, same created
    errors = {r[0]: r[2] for r in after if r[1] is None}
    assert sorted(errors) == [5, 9]
    assert "image not found" in errors[5] and "5.png" in errors[5]
    assert "cannot read image" in errors[9] and "9.png" in errors[9]
    n_new = N_ITEMS - 2 - len(done_before)
    assert f"described {n_new} items" in result.output
    assert f"coverage {N_ITEMS - 2}/{N_ITEMS}" in result.output and "2 failed" in result.output
    assert "items/s" in result.output and "describe incomplete" in result.output
    active = read_active(w)
    assert active["model"] == str(tiny_llava) and active["n_texts"] == N_ITEMS - 2

    # the images are fixed: the next run describes just those two, one batch of their own
    corrupt.write_bytes(good_bytes)
    (images / "5.png").write_bytes(good_bytes)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "described 2 items" in result.output and "0 failed" in result.output
    assert f"{N_ITEMS - 2} were already done" in result.output
    final = store_rows(w.descriptions_db)
    assert all(r[1] for r in final) and final[0] == after[0]
    assert json.loads(w.descriptions_dir.joinpath("active.json").read_text())["n_texts"] == N_ITEMS


def test_cli_title_prompt_popularity_order_and_max_items(workdir, tiny_llava):
    from lvlmrec.data.schema import Dataset

    w = Workdir(workdir)
    result = CliRunner().invoke(app, [
        "describe", "--workdir", str(workdir), "--backend", "hf", "--model", str(tiny_llava),
        "--prompt", "study_code", "--include-title", "--order", "popularity",
        "--max-items", "6", "--max-new-tokens", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "coverage 6/6 (100.0%)" in result.output
    popularity = Dataset.load(w, features=False).item_popularity()
    top = sorted(range(N_ITEMS), key=lambda i: (-popularity[i], i))[:6]
    assert sorted(r[0] for r in store_rows(w.descriptions_db)) == sorted(top)
    active = read_active(w)
    assert (active["prompt_name"], active["include_title"], active["n_texts"]) == (
        "study_code", True, 6)
