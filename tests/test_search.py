"""Hyperparameter search on validation and several seeds: the best valid trial is kept as
fitted (no refit), every trial is in search.csv, a killed search resumes without redoing
finished trials, the test split is never read, seeds give mean and std, deterministic
kinds are fitted once, and bad search settings are config errors naming the key."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from lvlmrec.config import (EvaluateConfig, RepresentConfig, SearchConfig, StrategyConfig,
                            parse_config)
from lvlmrec.data.schema import Dataset
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.encode.store import save_embedding
from lvlmrec.errors import ConfigError
from lvlmrec.evaluate.run import evaluate_all
from lvlmrec.represent.baselines import Hybrid, ItemKNN
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.fit import fit_all, load_model, train_data, valid_metrics
from lvlmrec.represent.registry import build
from lvlmrec.represent.search import search_spec
from lvlmrec.workdir import Workdir, read_json

QUIET = Console(quiet=True)
GRID = {"shrink": [0.0, 5.0, 50.0], "neighbours": [3, 30]}
BPR = {"epochs": 2, "patience": 2, "learning_rate": 0.05, "embedding_dim": 8,
       "num_threads": 1}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small synthetic run folder (dataset + title embeddings), copied by each test."""
    workdir = Workdir(tmp_path_factory.mktemp("template") / "run")
    ds = generate_synthetic(workdir.dataset_dir, n_items=80, n_users=60, image_size=32,
                            seed=0, show_progress=False)
    ds.save(workdir)
    save_embedding(workdir, "text_title", np.random.default_rng(0).normal(size=(80, 8)), {})
    return workdir.root


def _workdir(template, tmp_path, name="run", poison_test=False):
    shutil.copytree(template, tmp_path / name)
    workdir = Workdir(tmp_path / name)
    ds = Dataset.load(workdir, features=False)
    if poison_test:  # every test interaction moved to another item
        inter = ds.interactions
        test = inter[inter["split"] == "test"].copy()
        test["item_id"] = (test["item_id"] + 37) % ds.n_items
        rest = inter[inter["split"] != "test"]
        taken = set(zip(rest["user_id"], rest["item_id"]))
        test = test[[pair not in taken for pair in zip(test["user_id"], test["item_id"])]]
        ds.interactions = pd.concat([rest, test.drop_duplicates(["user_id", "item_id"])],
                                    ignore_index=True)
        ds.save(workdir)
        ds = Dataset.load(workdir, features=False)
    return workdir, ds


@pytest.fixture
def run(template, tmp_path):
    return _workdir(template, tmp_path)


def _knn(**kw):
    return RepresentConfig(strategies=[StrategyConfig(name="knn", kind="itemknn",
                                                      params=dict(GRID))], **kw)


def _count_fits(monkeypatch, cls, fail_after=None):
    calls = []
    real = cls.fit

    def fit(self, data):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("killed")
        calls.append(self.get_params())
        return real(self, data)

    monkeypatch.setattr(cls, "fit", fit)
    return calls


def test_search_keeps_the_best_valid_trial_without_refit(run, monkeypatch):
    workdir, ds = run
    calls = _count_fits(monkeypatch, ItemKNN)
    fit_all(_knn(), 0, workdir, ds, "data", QUIET, show_progress=False)
    assert len(calls) == 6  # one fit per grid point, none after the search
    table = pd.read_csv(workdir.results_dir / "search.csv")
    assert len(table) == 6 and (table["metric"] == "recall@20").all()
    assert table["best"].sum() == 1
    best = table.loc[table["value"].idxmax()]  # first maximum: ties go to the earlier trial
    assert bool(best["best"])
    chosen = json.loads(best["params"])
    # every trial's value is its validation recall@20, recomputed here independently
    data = train_data(ds, workdir, show_progress=False)
    for _, row in table.iterrows():
        model = ItemKNN(**json.loads(row["params"])).fit(data)
        assert row["value"] == pytest.approx(valid_metrics(model, data, 20)["recall@20"])
    saved = load_model(workdir, "knn")
    assert {k: saved.get_params()[k] for k in chosen} == chosen
    fit = read_json(workdir.model_dir("knn") / "fit.json")
    assert fit["params"] == chosen and fit["search"]["n_trials"] == 6
    # a second run replays the record: nothing is fitted
    calls.clear()
    fit_all(_knn(), 0, workdir, ds, "data", QUIET, show_progress=False)
    assert calls == []
    assert pd.read_csv(workdir.results_dir / "search.csv")["cached"].all()


def test_killed_search_resumes_without_rerunning_finished_trials(template, tmp_path,
                                                                  monkeypatch):
    workdir, ds = _workdir(template, tmp_path)
    calls = _count_fits(monkeypatch, ItemKNN, fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        fit_all(_knn(), 0, workdir, ds, "data", QUIET, show_progress=False)
    assert len(calls) == 4
    monkeypatch.undo()
    calls = _count_fits(monkeypatch, ItemKNN)
    fit_all(_knn(), 0, workdir, ds, "data", QUIET, show_progress=False)
    assert len(calls) == 2  # only the two unfinished trials
    resumed = pd.read_csv(workdir.results_dir / "search.csv")
    assert resumed["cached"].tolist() == [True] * 4 + [False] * 2
    fresh, ds2 = _workdir(template, tmp_path, "fresh")
    fit_all(_knn(), 0, fresh, ds2, "data", QUIET, show_progress=False)
    again = pd.read_csv(fresh.results_dir / "search.csv")
    pd.testing.assert_frame_equal(resumed.drop(columns=["cached", "seconds"]),
                                  again.drop(columns=["cached", "seconds"]))
    assert load_model(workdir, "knn").get_params() == load_model(fresh, "knn").get_params()


def test_growing_the_grid_runs_only_the_new_points(run, monkeypatch):
    workdir, ds = run
    fit_all(_knn(), 0, workdir, ds, "data", QUIET, show_progress=False)
    calls = _count_fits(monkeypatch, ItemKNN)
    bigger = RepresentConfig(strategies=[StrategyConfig(
        name="knn", kind="itemknn", params={**GRID, "shrink": GRID["shrink"] + [500.0]})])
    fit_all(bigger, 0, workdir, ds, "data", QUIET, show_progress=False)
    assert [c["shrink"] for c in calls] == [500.0, 500.0]


def test_search_never_reads_the_test_split(template, tmp_path, monkeypatch):
    clean, ds = _workdir(template, tmp_path, "clean")
    poisoned, ds_poisoned = _workdir(template, tmp_path, "poisoned", poison_test=True)
    assert not ds.split("test").equals(ds_poisoned.split("test"))
    cfg = RepresentConfig(strategies=[
        StrategyConfig(name="knn", kind="itemknn", params=dict(GRID)),
        StrategyConfig(name="bpr", kind="bpr", params={**BPR, "reg_weight": [1e-4, 1e-1]})],
        search=SearchConfig(method="random", n_trials=2))
    data = train_data(ds, clean)
    assert data.train.nnz + data.valid.nnz == len(ds.split("train")) + len(ds.split("valid"))
    real = Dataset.matrix

    def matrix(self, splits=("train",)):
        assert "test" not in ([splits] if isinstance(splits, str) else splits)
        return real(self, splits)

    monkeypatch.setattr(Dataset, "matrix", matrix)
    fit_all(cfg, 0, clean, ds, "data", QUIET, show_progress=False)
    fit_all(cfg, 0, poisoned, ds_poisoned, "data", QUIET, show_progress=False)
    a = pd.read_csv(clean.results_dir / "search.csv")
    b = pd.read_csv(poisoned.results_dir / "search.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    np.testing.assert_array_equal(load_model(clean, "bpr").item_vectors_,
                                  load_model(poisoned, "bpr").item_vectors_)


def test_random_search_is_seeded_distinct_and_replayed(run, monkeypatch):
    workdir, ds = run
    cfg = _knn(search=SearchConfig(method="tpe", n_trials=4, metric="ndcg@10"))
    calls = _count_fits(monkeypatch, ItemKNN)
    fit_all(cfg, 3, workdir, ds, "data", QUIET, show_progress=False)
    assert len(calls) == 4 and len({json.dumps(c, sort_keys=True) for c in calls}) == 4
    first = pd.read_csv(workdir.results_dir / "search.csv")
    assert (first["metric"] == "ndcg@10").all()
    calls.clear()
    fit_all(cfg, 3, workdir, ds, "data", QUIET, show_progress=False)
    assert calls == []  # the sampler asks the same points again, all recorded
    again = pd.read_csv(workdir.results_dir / "search.csv")
    assert again["params"].tolist() == first["params"].tolist()


def test_seeds_mean_std_and_deterministic_models_fitted_once(run, monkeypatch):
    workdir, ds = run
    cfg = RepresentConfig(strategies=[
        StrategyConfig(name="bpr", kind="bpr", params=BPR),
        StrategyConfig(name="knn", kind="itemknn")])
    knn_calls = _count_fits(monkeypatch, ItemKNN)
    bpr_calls = _count_fits(monkeypatch, BPRMF)
    seeds = [0, 1, 2]
    fit_all(cfg, 0, workdir, ds, "data", QUIET, show_progress=False, seeds=seeds)
    assert len(knn_calls) == 1 and [c["seed"] for c in bpr_calls] == seeds
    folder = workdir.model_dir("bpr")
    assert (folder / "seed-1" / "model.json").is_file()
    assert not (workdir.model_dir("knn") / "seed-1").exists()
    assert not np.array_equal(load_model(workdir, "bpr").item_vectors_,
                              load_model(workdir, "bpr", 1).item_vectors_)
    evaluate_all(EvaluateConfig(ks=[10, 20], n_bootstrap=10, n_permutations=10), cfg,
                 workdir, ds, QUIET, show_progress=False, seeds=seeds)
    metrics = pd.read_csv(workdir.metrics_path).set_index("representation")
    per_seed = pd.read_csv(workdir.results_dir / "seeds.csv")
    bpr = per_seed[(per_seed["representation"] == "bpr") & (per_seed["split"] == "test")]
    assert bpr["seed"].tolist() == seeds
    assert metrics.loc["bpr", "n_seeds"] == 3 and metrics.loc["knn", "n_seeds"] == 1
    assert metrics.loc["bpr", "recall@10"] == pytest.approx(bpr["recall@10"].mean())
    assert metrics.loc["bpr", "recall@10_std"] == pytest.approx(bpr["recall@10"].std(ddof=1))
    assert metrics.loc["knn", "recall@10_std"] == 0  # deterministic: every seed is the same
    assert json.loads(metrics.loc["bpr", "params"]) == BPR
    # the paired tests read the seed-averaged per-user values
    per_user = pd.read_parquet(workdir.results_dir / "per_user.parquet")
    test = per_user[(per_user["representation"] == "bpr") & (per_user["split"] == "test")]
    assert test["recall@10"].mean() == pytest.approx(bpr["recall@10"].mean())
    assert len(test) == test["user_id"].nunique()
    sig = pd.read_csv(workdir.results_dir / "significance.csv")
    row = sig[(sig["representation"] == "bpr") & (sig["metric"] == "recall@10")]
    assert row["mean"].item() == pytest.approx(bpr["recall@10"].mean())
    run_json = read_json(workdir.run_json)
    assert run_json["seeds"] == seeds and run_json["tie_break"]["seed"] == 0
    # fewer seeds later: the stale fits go
    fit_all(cfg, 0, workdir, ds, "data", QUIET, show_progress=False, seeds=[0, 1])
    assert not (folder / "seed-2").exists() and (folder / "seed-1").is_dir()


def test_search_and_seeds_together_fit_the_chosen_params_per_seed(run, monkeypatch):
    workdir, ds = run
    cfg = RepresentConfig(strategies=[StrategyConfig(
        name="bpr", kind="bpr", params={**BPR, "reg_weight": [1e-4, 1e-1]})])
    calls = _count_fits(monkeypatch, BPRMF)
    fit_all(cfg, 0, workdir, ds, "data", QUIET, show_progress=False, seeds=[5, 6])
    assert [(c["seed"], c["reg_weight"]) for c in calls[:2]] == [(5, 1e-4), (5, 1e-1)]
    chosen = load_model(workdir, "bpr").reg_weight
    assert len(calls) == 3 and calls[2]["seed"] == 6 and calls[2]["reg_weight"] == chosen
    assert load_model(workdir, "bpr", 6).get_params()["reg_weight"] == chosen


# --------------------------------------------------------------------------- bad input
def _strategy(kind="itemknn", **params):
    return StrategyConfig(name="mine", kind=kind, params=params)


@pytest.mark.parametrize("params,words", [
    ({"shrinkage": [1, 2]}, ["'mine'", "shrinkage"]),
    ({"shrink": []}, ["'mine'", "params.shrink", "empty"]),
    ({"shrink": {"search": []}}, ["'mine'", "params.shrink", "empty"]),
    ({"shrink": {"search": 3}}, ["'mine'", "params.shrink", "list"]),
])
def test_bad_search_is_a_config_error_naming_strategy_and_key(params, words):
    with pytest.raises(ConfigError) as err:
        build(_strategy(**params))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_default_space_needs_one_and_lists_override_it(monkeypatch):
    with pytest.raises(ConfigError, match="'mine'.*no default search space"):
        build(StrategyConfig(name="mine", kind="popularity", search="default"))
    monkeypatch.setattr(ItemKNN, "search_space", {"shrink": [0, 10], "neighbours": [5, 50]})
    strategy = StrategyConfig(name="mine", kind="itemknn", search="default",
                              params={"neighbours": 20, "shrink": [1, 2, 3]})
    spec = search_spec(strategy, ItemKNN)
    assert spec.fixed == {"neighbours": 20} and spec.space == {"shrink": [1, 2, 3]}
    params = build(strategy).get_params()
    assert (params["neighbours"], params["shrink"]) == (20, 1)


def test_list_valued_params_are_values_unless_searched():
    plain = search_spec(_strategy("hybrid", weight_grid=[0.2, 0.8]), Hybrid)
    assert plain.fixed == {"weight_grid": [0.2, 0.8]} and not plain.space
    searched = search_spec(_strategy("hybrid", weight_grid={"search": [[0.5], [0.2, 0.8]]},
                                     shrink=[0, 0, 10]), Hybrid)
    assert searched.space == {"weight_grid": [[0.5], [0.2, 0.8]], "shrink": [0, 10]}
    assert searched.size == 4


def test_seeds_config_errors():
    with pytest.raises(ConfigError, match="seeds.*more than once"):
        parse_config({"seeds": [0, 1, 1]})
    with pytest.raises(ConfigError, match="seeds"):
        parse_config({"seeds": []})
    with pytest.raises(ConfigError, match="represent.search.metric"):
        parse_config({"represent": {"search": {"metric": "auc@10"}}})
    assert parse_config({"seed": 4}).run_seeds == [4]
    assert parse_config({"seeds": [3, 1]}).run_seeds == [3, 1]


def test_report_shows_chosen_params_seed_std_and_ties(run):
    from lvlmrec.config import ReportConfig
    from lvlmrec.report.build import build_report

    workdir, ds = run
    cfg = RepresentConfig(strategies=[
        StrategyConfig(name="title_text", kind="text", text="title"),
        StrategyConfig(name="popularity", kind="popularity"),
        StrategyConfig(name="bpr", kind="bpr", params={**BPR, "reg_weight": [1e-4, 1e-1]})])
    fit_all(cfg, 0, workdir, ds, "data", QUIET, show_progress=False, seeds=[0, 1])
    evaluate_all(EvaluateConfig(ks=[10, 20], n_bootstrap=10, n_permutations=10), cfg,
                 workdir, ds, QUIET, show_progress=False, seeds=[0, 1])
    build_report(ReportConfig(n_case_studies=0), workdir, QUIET, show_progress=False)
    md = (workdir.report_dir / "report.md").read_text()
    html = (workdir.report_dir / "report.html").read_text()
    chosen = load_model(workdir, "bpr").reg_weight
    for page in (md, html):
        assert "Hyperparameter search" in page and f"reg_weight={chosen}" in page
        assert "recall@10 mean ± std over seeds" in page and "(2 seeds)" in page
        assert "fitted once (deterministic)" in page  # popularity, title_text
        assert "Ties at the cut-off (K=10)" in page
    ties = pd.read_csv(workdir.results_dir / "ties.csv")
    pop = ties[(ties["representation"] == "popularity") & (ties["split"] == "test")
               & (ties["k"] == 10)]
    assert pop["share_tied"].item() > 0.1  # integer counts tie: flagged
    assert "**Flagged**: popularity:" in md


def test_seeds_join_the_represent_and_evaluate_keys_only_when_set():
    from lvlmrec.pipeline import _stages

    settings = {stage.name: stage.settings for stage in _stages()}
    one, several = parse_config({}), parse_config({"seeds": [0, 1]})
    for stage in ("represent", "evaluate"):
        assert "seeds" not in settings[stage](one)  # single-seed runs keep their keys
        assert settings[stage](several)["seeds"] == [0, 1]
    assert settings["describe"](one) == settings["describe"](several)
