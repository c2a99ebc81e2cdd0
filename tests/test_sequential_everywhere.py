"""A sequential model sees its user's history in time order wherever lvlmrec scores it,
not only in evaluation: the report's case studies, serve's recommendations (GET for a known
user, POST for a history), `Run.recommend` and the batch `recommend_all` give the same
lists and scores as the evaluator's ranking for the same user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from lvlmrec import api
from lvlmrec.cli import load_run_config
from lvlmrec.config import named_config
from lvlmrec.data.schema import Dataset
from lvlmrec.evaluate.ranking import iter_topk
from lvlmrec.pipeline import run_pipeline
from lvlmrec.report.cases import build_case_studies
from lvlmrec.represent.fit import load_model
from lvlmrec.represent.sequential import latest_unique, user_sequence
from lvlmrec.serve.app import create_app
from lvlmrec.serve.service import load_run
from lvlmrec.workdir import Workdir

TINY = {"max_len": 8, "hidden": 16, "epochs": 3, "patience": 3, "num_threads": 1}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cfg = load_run_config(named_config("sequential"), None, [], {
        "dataset": {"n_items": 80, "n_users": 60},
        "represent": {"strategies": [{"name": "popularity", "kind": "popularity"},
                                     {"name": "sasrec", "kind": "sasrec", "params": TINY}]},
        "evaluate": {"baseline": "popularity"},
        "report": {"n_case_studies": 3}})
    wd = Workdir(tmp_path_factory.mktemp("seq_sites"))
    run_pipeline(cfg, wd, show_progress=False)
    return wd


@pytest.fixture(scope="module")
def ds(workdir):
    return Dataset.load(workdir, features=False)


def _evaluator_top(model, ds, users, history_splits, k=10, order=True):
    """The evaluator's own ranking (history masked, time order for sequential models)."""
    history = ds.matrix(history_splits)
    (_, top), = iter_topk(model, np.asarray(users), history, k, block_size=len(users),
                          show_progress=False,
                          order=ds.order_matrix(history_splits) if order else None)
    return top


def test_case_studies_rank_like_the_evaluator(workdir, ds):
    per_user = pd.read_parquet(workdir.root / "results" / "per_user.parquet")
    per_user = per_user[per_user["split"] == "test"]
    cases = build_case_studies(workdir, ds, per_user, ["popularity", "sasrec"], "recall@10", 3)
    assert cases
    model = load_model(workdir, "sasrec")
    users = [c.user_id for c in cases]
    top = _evaluator_top(model, ds, users, ("train", "valid"))
    for row, case in enumerate(cases):
        assert case.tops["sasrec"] == [int(i) for i in top[row] if i >= 0]
        hits = len(set(case.tops["sasrec"]) & case.targets) / len(case.targets)
        assert hits == pytest.approx(case.values["sasrec"])  # per_user.parquet's value
        order = ds.order_matrix(("train", "valid"))
        assert case.history == user_sequence(order, order, case.user_id)[::-1].tolist()
    # and the order matters for these users (without it the lists would differ)
    unordered = _evaluator_top(model, ds, users, ("train", "valid"), order=False)
    assert not np.array_equal(top, unordered)


def test_served_recommendations_rank_like_the_evaluator(workdir, ds):
    client = TestClient(create_app(run=load_run(workdir)))
    model = load_model(workdir, "sasrec")
    history = ds.matrix(("train", "valid"))
    users = np.flatnonzero(np.diff(history.indptr) >= 3)[:5]
    top = _evaluator_top(model, ds, users, ("train", "valid"))
    order = ds.order_matrix(("train", "valid"))
    for row, u in enumerate(users):
        got = client.get(f"/users/{u}/recommendations",
                         params={"representation": "sasrec", "k": 10}).json()
        assert [it["item_id"] for it in got["items"]] == top[row].tolist()
        scores = model.score(np.array([u]), history[[u]], history_order=order[[u]])[0]
        assert [it["score"] for it in got["items"]] == pytest.approx(scores[top[row]].tolist(),
                                                                    rel=1e-5)
        # a POSTed history, oldest first (one item repeated: it counts at its last place)
        sequence = user_sequence(history, order, u).tolist()
        posted = client.post("/recommendations", json={
            "items": [sequence[-1], *sequence], "representation": "sasrec", "k": 10}).json()
        assert [it["item_id"] for it in posted["items"]] == top[row].tolist()


def test_python_api_and_batch_read_the_order(workdir, ds):
    run = api.load_run(workdir)
    model = run.models["sasrec"]
    users = np.flatnonzero(np.diff(ds.matrix(("train", "valid", "test")).indptr) >= 3)[:5]
    top = _evaluator_top(model, ds, users, ("train", "valid", "test"))
    sources = run.served.user_source_ids
    batch = run.recommend_all("sasrec", k=10, users=[sources[u] for u in users])
    for row, u in enumerate(users):
        one = run.recommend(sources[u], k=10, representation="sasrec")
        assert one["item_id"].tolist() == top[row].tolist()
        mine = batch[batch["user_source_id"] == sources[u]].sort_values("rank")
        assert mine["item_source_id"].tolist() == [run.served.item_source_ids[i]
                                                   for i in top[row]]


def test_latest_unique_keeps_the_order_and_the_last_repeat():
    assert latest_unique([5, 3, 5, 7, 3]).tolist() == [5, 7, 3]
    assert latest_unique([]).tolist() == []
