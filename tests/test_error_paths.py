"""Every CLI command's error paths: a user mistake is one line naming the file, line, key or
option, exit status 2, never a traceback, and it comes before any stage runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

GOOD = """\
dataset:
  format: synthetic
  n_items: 40
  n_users: 20
represent:
  strategies:
    - {name: title_text, kind: text, text: title}
    - {name: popular, kind: popularity}
evaluate:
  ks: [10, 20]
  baseline: title_text
"""


def error_line(out: str) -> str:
    """The error message, which must be the last line of the output and the only one."""
    lines = out.rstrip("\n").splitlines()
    assert out.count("error:") == 1 and lines[-1].startswith("error: "), out
    return lines[-1]


# --------------------------------------------------------------------------- fixtures
def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def config(tmp: Path, text: str = GOOD, name: str = "c.yaml") -> Path:
    return write(tmp / name, text)


def workdir_with_config(tmp: Path, text: str = GOOD) -> Path:
    write(tmp / "wd" / "config.yaml", text)
    return tmp / "wd"


def csv_items(tmp: Path) -> Path:
    return write(tmp / "items.csv", "item_id,title\n1,a\n2,b\n3,c\n")


def csv_events(tmp: Path, bad_time_line: int | None = None) -> Path:
    rows = ["user_id,item_id,when"] + [f"u{i % 7},{1 + i % 3},{1700000000 + i}"
                                       for i in range(200)]
    if bad_time_line:
        rows[bad_time_line - 1] = "u1,2,yesterday"
    return write(tmp / "events.csv", "\n".join(rows) + "\n")


def reviews(tmp: Path, bad: str | None = None) -> Path:
    lines = [json.dumps({"reviewerID": f"u{u}", "asin": f"a{(u + j) % 8}", "overall": 5,
                         "unixReviewTime": 1000 + j}) for u in range(10) for j in range(5)]
    if bad is not None:
        lines.insert(6, bad)
    return write(tmp / "reviews.json.gz", gzip.compress(("\n".join(lines) + "\n").encode()))


def mmrec(tmp: Path, text_rows: int) -> Path:
    folder = tmp / "mm"
    rows = ["userID\titemID\tx_label"] + [f"{u}\t{(u + j) % 10}\t{[0, 0, 1, 2][j]}"
                                          for u in range(6) for j in range(4)]
    write(folder / "x.inter", "\n".join(rows) + "\n")
    np.save(folder / "image_feat.npy", np.ones((10, 4)))
    np.save(folder / "text_feat.npy", np.ones((text_rows, 4)))
    return folder


def a_file(tmp: Path) -> Path:
    return write(tmp / "not_a_folder", "x")


# Each case: (id, args built from tmp_path, text the one error line must hold).
CASES = [
    # ---- run: the config file and options
    ("run-missing-config", lambda t: ["run", "-w", t / "wd", "-c", t / "none.yaml"],
     ["config file not found", "none.yaml"]),
    ("run-config-folder", lambda t: ["run", "-w", t / "wd", "-c", t],
     ["config file not found", "folder"]),
    ("run-config-not-utf8", lambda t: ["run", "-w", t / "wd", "-c",
                                       config(t, "seed: 1\nname: caf\xe9\n".encode("latin-1"))],
     ["c.yaml", "not a UTF-8"]),
    ("run-config-binary", lambda t: ["run", "-w", t / "wd", "-c",
                                     write(t / "c.yaml", bytes(range(256)))],
     ["c.yaml"]),
    ("run-config-bad-yaml", lambda t: ["run", "-w", t / "wd", "-c",
                                       config(t, GOOD + "report:\n  metric: [1,\n")],
     ["c.yaml:", "not valid YAML"]),
    ("run-config-a-list", lambda t: ["run", "-w", t / "wd", "-c", config(t, "- 1\n- 2\n")],
     ["c.yaml", "mapping"]),
    ("run-unknown-key", lambda t: ["run", "-w", t / "wd", "-c",
                                   config(t, GOOD + "describe:\n  batch_sise: 3\n")],
     ["c.yaml:13", "describe.batch_sise", "unknown key"]),
    ("run-bad-baseline", lambda t: ["run", "-w", t / "wd", "-c",
                                    config(t, GOOD.replace("baseline: title_text",
                                                           "baseline: nope"))],
     ["c.yaml:11", "evaluate.baseline", "'nope'"]),
    ("run-unknown-kind", lambda t: ["run", "-w", t / "wd", "-c",
                                    config(t, GOOD.replace("kind: popularity",
                                                           "kind: populrity"))],
     ["c.yaml:8", "represent.strategies.1", "unknown kind 'populrity'"]),
    ("run-bad-param", lambda t: ["run", "-w", t / "wd", "-c", config(t, GOOD.replace(
        "kind: popularity}", "kind: itemknn, params: {neighbours: -3}}"))],
     ["c.yaml:8", "'popular'", "neighbours = -3"]),
    ("run-bad-param-type", lambda t: ["run", "-w", t / "wd", "-c", config(t, GOOD.replace(
        "kind: popularity}", "kind: bpr, params: {epochs: many}}"))],
     ["c.yaml:8", "'popular'", "epochs = 'many'"]),
    ("run-unknown-param", lambda t: ["run", "-w", t / "wd", "-c", config(t, GOOD.replace(
        "kind: popularity}", "kind: popularity, params: {alpha: 1}}"))],
     ["c.yaml:8", "unknown params ['alpha']"]),
    ("run-unknown-source", lambda t: ["run", "-w", t / "wd", "-c", config(t, GOOD.replace(
        "text: title}", "vision: clip}").replace("kind: text", "kind: vision"))],
     ["c.yaml:7", "represent.strategies.0.vision", "unknown source 'clip'"]),
    ("run-description-without-describe", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD.replace("text: title}", "text: description}")),
        "--set", "describe.enabled=false"],
     ["represent.strategies.0.text", "describe.enabled is false"]),
    ("run-bad-significance-metric", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD + "  significance_metrics: [recall@10, recal@20]\n")],
     ["c.yaml:12", "evaluate.significance_metrics.1", "'recal@20' is not a metric"]),
    ("run-metric-at-missing-k", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD + "report:\n  metric: ndcg@50\n")],
     ["c.yaml:13", "report.metric", "K=50 is not in evaluate.ks"]),
    ("run-report-compare", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD + "report:\n  compare: [title_text, nope]\n")],
     ["report.compare"]),
    ("run-missing-plugin", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD.replace("represent:\n", "represent:\n  plugins: [no_such_plugin_q]\n"))],
     ["c.yaml:6", "represent.plugins.0", "no_such_plugin_q"]),
    ("run-strategy-dotdot", lambda t: ["run", "-w", t / "wd", "-c", config(
        t, GOOD.replace("name: popular", "name: '..'"))],
     ["c.yaml:8", "represent.strategies.1.name", "'..'"]),
    # (`run` with no strategies gets the default set after prepare; evaluating none is wrong)
    ("evaluate-no-strategies", lambda t: ["evaluate", "-w", t / "wd", "-c", config(
        t, "dataset: {format: synthetic}\n")],
     ["represent.strategies", "no representations"]),
    ("run-set-bad-yaml", lambda t: ["run", "-w", t / "wd", "-c", config(t), "--set", "k=[1,"],
     ["--set k", "not valid YAML"]),
    ("run-set-no-equals", lambda t: ["run", "-w", t / "wd", "--set", "describe.batch_size"],
     ["--set expects KEY=VALUE"]),
    ("run-set-unknown-key", lambda t: ["run", "-w", workdir_with_config(t), "--set",
                                       "describe.batch_sise=8"],
     ["--set describe.batch_sise", "unknown key"]),
    ("run-set-bad-value", lambda t: ["run", "-w", workdir_with_config(t), "--set",
                                     "evaluate.ks=[0]"],
     ["--set evaluate.ks"]),
    ("run-set-not-a-section", lambda t: ["run", "-w", t / "wd", "--set", "seed.x=1"],
     ["--set seed.x"]),
    ("run-workdir-is-a-file", lambda t: ["run", "-w", a_file(t), "-c", config(t)],
     ["not_a_folder", "is a file"]),
    ("run-unknown-stage", lambda t: ["run", "-w", t / "wd", "-c", config(t), "--only", "fit"],
     ["unknown stage", "fit"]),
    # ---- demo
    ("demo-workdir-is-a-file", lambda t: ["demo", "-w", a_file(t)], ["is a file"]),
    ("demo-set-baseline", lambda t: ["demo", "-w", t / "wd", "--set", "evaluate.baseline=x"],
     ["--set evaluate.baseline", "'x' is not a configured"]),
    ("demo-too-few-items", lambda t: ["demo", "-w", t / "wd", "--n-items", "5"],
     ["option --n-items", "dataset.n_items"]),
    # ---- prepare
    ("prepare-unknown-format", lambda t: ["prepare", "-w", t / "wd", "-f", "parquet"],
     ["option --format", "dataset"]),
    ("prepare-csv-missing-option", lambda t: ["prepare", "-w", t / "wd", "-f", "csv",
                                              "--items", csv_items(t)],
     ["option --interactions", "dataset.interactions", "Field required"]),
    ("prepare-csv-empty", lambda t: ["prepare", "-w", t / "wd", "-f", "csv", "--items",
                                     csv_items(t), "--interactions", write(t / "e.csv", "")],
     ["e.csv", "empty"]),
    ("prepare-csv-binary", lambda t: ["prepare", "-w", t / "wd", "-f", "csv", "--items",
                                      write(t / "i.csv", bytes(range(128, 256)) * 4),
                                      "--interactions", csv_events(t)],
     ["i.csv:1", "not UTF-8"]),
    ("prepare-csv-not-utf8", lambda t: ["prepare", "-w", t / "wd", "-f", "csv", "--items",
                                        write(t / "i.csv", "item_id,title\n1,caf\xe9\n"
                                              .encode("latin-1")),
                                        "--interactions", csv_events(t)],
     ["i.csv:2", "not UTF-8"]),
    ("prepare-csv-bad-time", lambda t: ["prepare", "-w", t / "wd", "-f", "csv", "--items",
                                        csv_items(t), "--interactions",
                                        csv_events(t, bad_time_line=182),
                                        "--set", "time_col=when"],
     ["events.csv:182", "'yesterday'"]),
    ("prepare-csv-unknown-column", lambda t: ["prepare", "-w", t / "wd", "-f", "csv",
                                              "--items", csv_items(t), "--interactions",
                                              csv_events(t), "--set", "time_col=date"],
     ["events.csv", "no column 'date'"]),
    ("prepare-set-unknown-option", lambda t: ["prepare", "-w", t / "wd", "-f", "csv",
                                              "--items", csv_items(t), "--interactions",
                                              csv_events(t), "--set", "titel_col=x"],
     ["--set dataset.titel_col", "unknown key"]),
    ("prepare-amazon-list-id", lambda t: ["prepare", "-w", t / "wd", "-f", "amazon2018",
                                          "--reviews", reviews(t, json.dumps(
                                              {"reviewerID": ["u1"], "asin": "a1"}))],
     ["reviews.json.gz:7", "reviewerID must be a string"]),
    ("prepare-amazon-deep-nesting", lambda t: ["prepare", "-w", t / "wd", "-f", "amazon2018",
                                               "--reviews", reviews(t, "[" * 100_000
                                                                    + "]" * 100_000)],
     ["reviews.json.gz:7", "nested too deeply"]),
    ("prepare-amazon-missing", lambda t: ["prepare", "-w", t / "wd", "-f", "amazon2023",
                                          "--reviews", t / "nope.jsonl"],
     ["nope.jsonl", "not found"]),
    ("prepare-mmrec-short-text", lambda t: ["prepare", "-w", t / "wd", "-f", "mmrec",
                                            "--source", mmrec(t, 8)],
     ["text_feat.npy: 8 rows", "image_feat.npy has 10"]),
    ("prepare-workdir-is-a-file", lambda t: ["prepare", "-w", a_file(t), "-f", "synthetic"],
     ["is a file"]),
    ("prepare-kaggle-missing", lambda t: ["prepare", "-w", t / "wd", "-f", "kaggle",
                                          "--source", t / "nope"],
     ["nope"]),
    # ---- stage commands on a workdir
    ("describe-before-prepare", lambda t: ["describe", "-w", workdir_with_config(t)],
     ["'describe' needs stage 'prepare'"]),
    ("describe-unknown-prompt", lambda t: ["describe", "-w", workdir_with_config(t),
                                           "--backend", "hf", "--prompt", "poem"],
     ["option --prompt", "unknown prompt 'poem'"]),
    ("describe-bad-batch", lambda t: ["describe", "-w", workdir_with_config(t),
                                      "--batch-size", "0"],
     ["option --batch-size", "describe.batch_size"]),
    ("describe-order", lambda t: ["describe", "-w", workdir_with_config(t), "--order", "x"],
     ["option --order", "describe.order"]),
    ("encode-before-prepare", lambda t: ["encode", "-w", workdir_with_config(t)],
     ["needs stage 'prepare'"]),
    ("encode-set", lambda t: ["encode", "-w", workdir_with_config(t), "--set",
                              "encode.image_size=8"],
     ["--set encode.image_size"]),
    ("represent-bad-config", lambda t: ["represent", "-w", workdir_with_config(
        t, GOOD.replace("kind: popularity", "kind: nope"))],
     ["wd/config.yaml:8", "unknown kind 'nope'"]),
    ("evaluate-set-baseline", lambda t: ["evaluate", "-w", workdir_with_config(t), "--set",
                                         "evaluate.baseline=nope"],
     ["--set evaluate.baseline", "'nope'"]),
    ("report-set-metric", lambda t: ["report", "-w", workdir_with_config(t), "--set",
                                     "report.metric=recall"],
     ["--set report.metric", "'recall' is not a metric"]),
    ("report-before-evaluate", lambda t: ["report", "-w", workdir_with_config(t)],
     ["needs stage"]),
    # ---- read-only commands
    ("info-no-dataset", lambda t: ["info", "-w", t], ["no dataset"]),
    ("info-workdir-is-a-file", lambda t: ["info", "-w", a_file(t)], ["no dataset"]),
    ("fetch-images-no-dataset", lambda t: ["fetch-images", "-w", t, "--no-progress"],
     ["prepare"]),
    ("fetch-images-workdir-is-a-file", lambda t: ["fetch-images", "-w", a_file(t)],
     ["not_a_folder"]),
    ("export-mmrec-no-dataset", lambda t: ["export-mmrec", "-w", t, "-o", t / "out"],
     ["prepare"]),
    ("serve-missing", lambda t: ["serve", "-w", t / "nope"], ["no run directory"]),
    ("serve-workdir-is-a-file", lambda t: ["serve", "-w", a_file(t)], ["no run directory"]),
    ("serve-bad-index", lambda t: ["serve", "-w", t, "--index", "faiss"], ["--index"]),
    ("serve-no-dataset", lambda t: ["serve", "-w", t], ["prepare"]),
    # ---- usage errors (click's): one line too, never Typer's box
    ("run-no-such-option", lambda t: ["run", "-w", t / "wd", "--no-such-option"],
     ["No such option: --no-such-option", "lvlmrec run --help"]),
    ("recommend-missing-option", lambda t: ["recommend", "-w", t, "--out", t / "r.csv"],
     ["Missing option", "--representation"]),
    ("recommend-bad-k", lambda t: ["recommend", "-w", t, "-r", "x", "-o", t / "r.csv",
                                   "--k", "many"], ["--k", "integer"]),
    ("no-such-command", lambda t: ["evalute", "-w", t], ["No such command", "'evaluate'"]),
]


@pytest.mark.parametrize("make_args, needles", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error_is_one_clean_line(make_args, needles, tmp_path, capsys):
    code, out = run_cli(make_args(tmp_path), capsys)
    assert code == 2, out
    line = error_line(out)
    for needle in needles:
        assert needle in line, (needle, line)


def test_several_problems_are_listed_together(tmp_path, capsys):
    text = GOOD.replace("kind: popularity", "kind: nope").replace(
        "baseline: title_text", "baseline: gone") + "report:\n  metric: foo@1\n"
    code, out = run_cli(["run", "-w", tmp_path / "wd", "-c", config(tmp_path, text)], capsys)
    assert code == 2 and "(3 problems)" in out
    for needle in ("c.yaml:8: represent.strategies.1", "c.yaml:11: evaluate.baseline",
                   "c.yaml:13: report.metric"):
        assert needle in out


def test_a_bad_baseline_fails_before_prepare(tmp_path, capsys):
    wd = tmp_path / "wd"
    text = GOOD.replace("baseline: title_text", "baseline: nope")
    code, out = run_cli(["run", "-w", wd, "-c", config(tmp_path, text)], capsys)
    assert code == 2 and "evaluate.baseline" in error_line(out)
    assert not (wd / "dataset").exists() and "- prepare" not in out


def test_set_error_does_not_blame_the_workdir_config(tmp_path, capsys):
    wd = workdir_with_config(tmp_path)
    code, out = run_cli(["run", "-w", wd, "--set", "describe.batch_sise=8"], capsys)
    line = error_line(out)
    assert code == 2 and "--set describe.batch_sise" in line and "config.yaml" not in line


def test_validation_itself_is_fast():
    """The checks are cheap once the code is imported (the 5 s budget is mostly imports)."""
    import time

    from lvlmrec.checks import validate_run
    from lvlmrec.config import load_config, named_config

    cfg = load_config(named_config("demo"))
    validate_run(cfg, "demo", ["prepare"])  # imports
    t0 = time.perf_counter()
    validate_run(cfg, "demo", ["prepare", "evaluate"])
    assert time.perf_counter() - t0 < 2.0


def test_errors_stay_one_line_in_a_narrow_terminal(tmp_path):
    """A 40-column terminal wraps nothing: rich would break a long error (or box a usage
    error) at the terminal's width, and the file or key named would be split across lines."""
    import os
    import subprocess
    import sys

    import lvlmrec

    src = str(Path(lvlmrec.__file__).resolve().parents[1])
    env = {**os.environ, "COLUMNS": "40", "LINES": "20",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cases = [
        (["prepare", "-f", "csv", "--items", csv_items(tmp_path), "--interactions",
          csv_events(tmp_path), "-w", tmp_path / "wd", "--set", "time_col=no_such_column"],
         ["events.csv", "no column 'no_such_column'"]),
        (["run", "-w", tmp_path / "wd", "--no-such-option-with-a-long-name"],
         ["No such option: --no-such-option-with-a-long-name", "--help"]),
    ]
    for args, needles in cases:
        proc = subprocess.run([sys.executable, "-m", "lvlmrec.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "\u256d" not in proc.stdout + proc.stderr
        line = error_line(proc.stdout)
        assert len(line) > 40
        for needle in needles:
            assert needle in line, (needle, line)
