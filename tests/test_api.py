"""The Python API as a user calls it, end to end on a small synthetic catalog; and the
batch `lvlmrec recommend` command on the same run."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lvlmrec
from lvlmrec.cli import app as cli_app
from lvlmrec.errors import LvlmrecError

CONFIG = {
    "seed": 0,
    "dataset": {"format": "synthetic", "n_items": 80, "n_users": 60, "image_size": 48},
    "describe": {"backend": "attributes", "attributes": {"max_labels": 0}},
    "represent": {"strategies": [
        {"name": "lvlm_text", "kind": "text", "text": "description"},
        {"name": "title_text", "kind": "text", "text": "title"},
        {"name": "popularity", "kind": "popularity"},
        {"name": "itemknn", "kind": "itemknn"},
    ]},
    "evaluate": {"baseline": "title_text", "n_bootstrap": 50, "n_permutations": 50},
    "report": {"n_case_studies": 0},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api") / "run"
    experiment = lvlmrec.Experiment(CONFIG, workdir)
    results = experiment.run()
    return experiment, results, workdir


def test_experiment_returns_the_results_table(finished):
    experiment, results, workdir = finished
    assert isinstance(results, pd.DataFrame)
    assert set(results["representation"]) == {"lvlm_text", "title_text", "popularity",
                                              "itemknn"}
    assert list(results["recall@10"]) == sorted(results["recall@10"], reverse=True)
    on_disk = pd.read_csv(workdir / "results" / "metrics.csv")
    assert np.isclose(results["recall@10"].sum(), on_disk["recall@10"].sum())
    assert not experiment.results("valid").empty
    # a second run skips every stage and returns the same table
    again = lvlmrec.Experiment(None, workdir).run(stages=["evaluate"])
    pd.testing.assert_frame_equal(again, results)


def test_load_run_recommends_by_original_id(finished):
    _, results, workdir = finished
    run = lvlmrec.load_run(workdir)
    assert set(run.models) == {"lvlm_text", "title_text", "popularity", "itemknn"}
    assert run.representations[0] == results["representation"][0]
    user = run.users["source_id"].iloc[3]
    recs = run.recommend(user, k=5, representation="lvlm_text")
    assert list(recs.columns) == ["rank", "item_id", "source_id", "title", "score"]
    assert list(recs["rank"]) == [1, 2, 3, 4, 5]
    seen = set(run.dataset.interactions.loc[run.dataset.interactions["user_id"] == 3,
                                             "item_id"])
    assert not seen & set(recs["item_id"]), "history items are never recommended"
    assert (recs["score"].diff().dropna() <= 1e-9).all()
    same = run.recommend(3, k=5, representation="lvlm_text", by="internal")
    pd.testing.assert_frame_equal(same, recs)
    assert run.recommend(user, k=5, representation="lvlm_text",
                         exclude_history=False)["item_id"].isin(seen).any()
    item = recs["source_id"][0]
    similar = run.similar_items(item, k=4, representation="lvlm_text")
    assert len(similar) == 4 and item not in set(similar["source_id"])
    title = run.items["title"].iloc[7]
    assert run.search(title, k=3, representation="title_text")["item_id"][0] == 7
    anonymous = run.recommend_items(list(run.items["source_id"][:3]), k=5)
    assert not set(anonymous["item_id"]) & {0, 1, 2}
    with pytest.raises(LvlmrecError, match="unknown user source id 'nobody'"):
        run.recommend("nobody")
    with pytest.raises(LvlmrecError, match="unknown representation 'nope'"):
        run.recommend(user, representation="nope")


def test_recommend_all_matches_single_user_recommendations(finished):
    _, _, workdir = finished
    run = lvlmrec.load_run(workdir)
    table = run.recommend_all("itemknn", k=10, block_size=7)
    assert table["user_source_id"].nunique() == len(run.users)
    one = run.users["source_id"].iloc[11]
    mine = table[table["user_source_id"] == one]
    single = run.recommend(one, k=10, representation="itemknn")
    assert list(mine["item_source_id"]) == list(single["source_id"])
    assert np.allclose(mine["score"], single["score"], atol=1e-5)


def test_recommend_command_writes_source_ids_for_all_users(finished, tmp_path):
    _, _, workdir = finished
    run = lvlmrec.load_run(workdir)
    out = tmp_path / "recs.parquet"
    result = CliRunner().invoke(cli_app, ["recommend", "-w", str(workdir), "--representation",
                                          "lvlm_text", "--k", "20", "--users", "all",
                                          "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    recs = pd.read_parquet(out)
    assert list(recs.columns) == ["user_source_id", "rank", "item_source_id", "score"]
    assert set(recs["user_source_id"]) == set(run.users["source_id"])
    assert recs.groupby("user_source_id").size().max() == 20
    assert set(recs["item_source_id"]) <= set(run.items["source_id"])
    # history excluded by default: no (user, item) pair the dataset already has
    inter = run.dataset.interactions
    known = set(zip(run.users["source_id"].to_numpy()[inter["user_id"]],
                    run.items["source_id"].to_numpy()[inter["item_id"]]))
    assert not known & set(zip(recs["user_source_id"], recs["item_source_id"]))

    users = tmp_path / "users.txt"
    users.write_text("user_id\n" + "\n".join(run.users["source_id"][:4]) + "\n")
    csv_out = tmp_path / "some.csv"
    result = CliRunner().invoke(cli_app, ["recommend", "-w", str(workdir), "-r", "popularity",
                                          "--k", "3", "--users", str(users), "--out",
                                          str(csv_out), "--include-history", "--no-progress"])
    assert result.exit_code == 0, result.output
    some = pd.read_csv(csv_out, dtype={"user_source_id": str, "item_source_id": str})
    assert list(some["user_source_id"].unique()) == list(run.users["source_id"][:4])
    # with history allowed, popularity gives every user the same top 3
    assert some.groupby("user_source_id")["item_source_id"].apply(tuple).nunique() == 1


@pytest.mark.parametrize("args, needle", [
    (["-r", "nope", "--out", "x.csv"], "unknown representation 'nope'"),
    (["-r", "popularity", "--out", "x.txt"], "must end in .parquet or .csv"),
    (["-r", "popularity", "--out", "x.csv", "--users", "missing.txt"], "no such file"),
])
def test_recommend_command_errors_are_one_line(finished, tmp_path, monkeypatch, capsys, args,
                                                needle):
    from lvlmrec.cli import main

    _, _, workdir = finished
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lvlmrec", "recommend", "-w", str(workdir), *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    out = capsys.readouterr().out.strip()
    assert needle in out and "Traceback" not in out and out.startswith("error:")


def test_bad_users_file_names_the_line(finished, tmp_path):
    from lvlmrec.serve.batch import read_users_file

    path = tmp_path / "users.txt"
    path.write_text("u1\nu2\nghost\n")
    with pytest.raises(LvlmrecError, match=r"users.txt:3: unknown user 'ghost'"):
        read_users_file(path, ["u1", "u2"])


def test_report_figures_show_at_full_size_in_a_1400px_browser(finished, tmp_path):
    """Every figure of the finished run's report is drawn at 100% (never shrunk to fit) in
    headless Chromium 1400 px wide, so its text keeps the size it was drawn at."""
    from lvlmrec.serve.browser import browser_available, headless_chromium

    if not browser_available():
        pytest.skip("needs Debian's chromium and chromium-driver")
    pytest.importorskip("selenium")
    _, _, workdir = finished
    page = (workdir / "report" / "report.html").as_uri()
    with headless_chromium(tmp_path / "profile", width=1400) as driver:
        driver.get(page)
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('figure img')].map(i => "
            "[i.alt, i.naturalWidth, i.clientWidth])")
    assert {name for name, _, _ in sizes} >= {"main_performance", "slices_history"}
    for name, natural, shown in sizes:
        assert natural > 0 and shown == natural, (name, natural, shown)


def test_a_bad_set_override_is_named_as_the_override(tmp_path):
    from lvlmrec.cli import load_run_config
    from lvlmrec.config import named_config

    with pytest.raises(LvlmrecError) as err:
        load_run_config(named_config("demo"), None, ["describe.batch_sise=8"])
    assert "--set describe.batch_sise: unknown key" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("describe:\n  batch_sise: 4\n")
    with pytest.raises(LvlmrecError, match="bad.yaml") as err:
        load_run_config(bad, None, ["describe.batch_size=8"])
    assert "--set" not in str(err.value)
    with pytest.raises(LvlmrecError, match="Experiment config"):
        lvlmrec.Experiment({"describe": {"batch_sise": 1}}, tmp_path / "run")
