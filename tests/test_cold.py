"""Item cold start: the catalog as given, cold-item splits, the cold protocols, the n/a
marking, and that trained models never see a cold item's interactions."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from lvlmrec.cli import app, load_run_config
from lvlmrec.config import CsvSource, RunConfig, named_config, parse_config
from lvlmrec.data.cold import (cold_item_split, cold_item_temporal_split, cold_split_frame,
                               drop_items_without_interactions)
from lvlmrec.data.csvdata import load_csv
from lvlmrec.data.filters import RawLog, process_log
from lvlmrec.data.prepare import build_dataset
from lvlmrec.data.schema import Dataset
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.errors import ConfigError
from lvlmrec.evaluate.cold import NA_NOTE, check_config, check_protocol, mark_na
from lvlmrec.evaluate.protocols import make_task
from lvlmrec.evaluate.slices import slice_metrics
from lvlmrec.evaluate.ranking import rank_users
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.registry import REGISTRY
from lvlmrec.workdir import Workdir


# --------------------------------------------------------------------------- splits
def _log(n_users=60, n_items=40, n_rows=600, seed=0, times=True):
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.column_stack([rng.integers(n_users, size=n_rows),
                                       rng.integers(n_items, size=n_rows)]), axis=0)
    return RawLog(user=pairs[:, 0], item=pairs[:, 1],
                  user_keys=np.array([f"u{i}" for i in range(n_users)], dtype=object),
                  item_keys=np.array([f"i{i}" for i in range(n_items)], dtype=object),
                  timestamp=rng.integers(0, 10**6, len(pairs)) if times else None)


def _items_by_split(inter):
    return {s: set(inter.loc[inter["split"] == s, "item_id"]) for s in ("train", "valid", "test")}


def test_cold_split_has_no_leakage_and_the_right_counts():
    log = _log()
    split = cold_item_split(log.item, 0.2, seed=3)
    items = {s: set(log.item[split == s]) for s in ("train", "valid", "test")}
    assert not items["train"] & items["valid"] and not items["train"] & items["test"]
    assert not items["valid"] & items["test"]
    n_cold = round(0.2 * len(np.unique(log.item)))
    assert len(items["valid"]) == n_cold // 2 and len(items["test"]) == n_cold - n_cold // 2
    # every row of a cold item is held out, every row of a warm item is training
    cold = items["valid"] | items["test"]
    assert all((s != "train") == (i in cold) for i, s in zip(log.item, split))


def test_cold_split_is_seeded():
    log = _log()
    a, b, c = (cold_item_split(log.item, 0.2, seed=s) for s in (1, 1, 2))
    assert (a == b).all() and not (a == c).all()


def test_temporal_cold_items_are_the_newest():
    log = _log()
    split = cold_item_temporal_split(log.item, log.timestamp, 0.2)
    first = pd.Series(log.timestamp).groupby(log.item).min()
    cold_first = first[np.unique(log.item[split != "train"])]
    warm_first = first[np.unique(log.item[split == "train"])]
    assert cold_first.min() >= warm_first.max()
    test_first = first[np.unique(log.item[split == "test"])]
    valid_first = first[np.unique(log.item[split == "valid"])]
    assert test_first.min() >= valid_first.max()


def test_process_log_drops_and_counts_users_without_warm_history():
    log = _log()
    split = cold_item_split(log.item, 0.2, seed=0)
    cold_items = np.unique(log.item[split != "train"])
    # user 999 only ever touched cold items: no training history left
    extra = RawLog(user=np.r_[log.user, 999, 999], item=np.r_[log.item, cold_items[:2]],
                   user_keys=np.array([f"u{i}" for i in range(1000)], dtype=object),
                   item_keys=log.item_keys, timestamp=np.r_[log.timestamp, 5, 6])
    done = process_log(extra, split="cold_items", seed=0, cold_fraction=0.2, catalog=True)
    step = next(s for s in done.steps if s["step"] == "drop_eval_without_train")
    assert step["n_users_dropped"] >= 1
    assert "u999" not in set(extra.user_keys[done.user_codes])
    inter = done.interactions
    items = _items_by_split(inter)
    assert not items["train"] & (items["valid"] | items["test"])
    assert len(done.item_codes) == len(log.item_keys)  # the catalog is untouched


def test_synthetic_catalog_supports_the_cold_split(tmp_path):
    ds = generate_synthetic(tmp_path, n_items=60, n_users=40, image_size=32, seed=1,
                            show_progress=False, split="cold_items", cold_fraction=0.3)
    items = _items_by_split(ds.interactions)
    assert not items["train"] & (items["valid"] | items["test"])
    assert ds.n_items == 60 and ds.counts()["n_cold_test_items"] == len(items["test"]) > 0
    assert [s["step"] for s in ds.info["filters"]] == ["split", "drop_eval_without_train"]
    assert np.array_equal(ds.users["user_id"], np.arange(ds.n_users))


def test_cold_split_frame_renumbers_users():
    inter = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2, 2], "item_id": [0, 1, 2, 3, 0, 1, 4],
                          "split": "train"})
    users = pd.DataFrame({"user_id": [0, 1, 2], "source_id": ["a", "b", "c"]})
    out, kept, steps = cold_split_frame(inter, users, 0.4, seed=0)
    assert np.array_equal(kept["user_id"], np.arange(len(kept)))
    assert out["user_id"].max() == len(kept) - 1
    assert steps[1]["n_users_dropped"] == 3 - len(kept)


# --------------------------------------------------------------------------- catalog
def _csv(tmp_path, n_items=30, n_cold=4):
    rng = np.random.default_rng(0)
    pd.DataFrame({"item_id": [f"I{i}" for i in range(n_items)],
                  "title": [f"item {i}" for i in range(n_items)]}).to_csv(
        tmp_path / "items.csv", index=False)
    rows = {(int(rng.integers(25)), int(rng.integers(n_items - n_cold))) for _ in range(400)}
    inter = pd.DataFrame(sorted(rows), columns=["user_id", "item_id"])
    inter["item_id"] = "I" + inter["item_id"].astype(str)
    inter["ts"] = rng.integers(0, 10**6, len(inter))
    inter.to_csv(tmp_path / "events.csv", index=False)
    return CsvSource(items=tmp_path / "items.csv", interactions=tmp_path / "events.csv",
                     time_col="ts")


def test_catalog_items_without_interactions_stay_as_cold_items(tmp_path):
    source = _csv(tmp_path)
    ds = load_csv(source, show_progress=False)
    assert ds.n_items == 30
    assert ds.counts()["n_items_without_interactions"] == 4
    assert list(ds.items["source_id"].iloc[-4:]) == ["I26", "I27", "I28", "I29"]
    dropped = build_dataset(source.model_copy(update={"drop_items_without_interactions": True}),
                            Workdir(tmp_path / "w"), show_progress=False)
    assert dropped.n_items == 26
    step = dropped.info["filters"][-1]
    assert step["step"] == "drop_items_without_interactions" and step["n_items_dropped"] == 4
    assert step["before"]["n_items"] == 30 and step["after"]["n_items"] == 26
    # ids are renumbered, interactions still point at the same source items
    pairs = lambda d: set(zip(d.interactions["user_id"],  # noqa: E731
                              d.items["source_id"].to_numpy()[d.interactions["item_id"]]))
    assert pairs(ds) == pairs(dropped)


def test_kcore_filters_interactions_and_keeps_the_catalog(tmp_path):
    source = _csv(tmp_path, n_items=15)
    # 20 users x items 0-9, plus two rare items (10, 11) the 3-core removes; 12-14 unused
    rows = [(u, i) for u in range(20) for i in range(10)] + [(0, 10), (1, 11)]
    pd.DataFrame({"user_id": [u for u, _ in rows], "item_id": [f"I{i}" for _, i in rows],
                  "ts": range(len(rows))}).to_csv(tmp_path / "events.csv", index=False)
    ds = load_csv(source.model_copy(update={"kcore": 3}), show_progress=False)
    assert ds.n_items == 15
    assert set(ds.interactions["item_id"]) == set(range(10))
    assert ds.counts()["n_items_without_interactions"] == 5
    kcore = next(s for s in ds.info["filters"] if s["step"] == "kcore")
    assert kcore["after"]["n_items"] == 10 and kcore["before"]["n_items"] == 12


def test_drop_keeps_feature_rows_aligned():
    items = pd.DataFrame({"item_id": range(4), "source_id": list("abcd"), "title": "",
                          "text": "", "image_path": ""})
    inter = pd.DataFrame({"user_id": [0, 0, 0], "item_id": [1, 3, 2],
                          "split": ["train", "valid", "test"]})
    feats = {"f": np.arange(8, dtype=np.float32).reshape(4, 2)}
    ds = Dataset(items, inter, pd.DataFrame({"user_id": [0], "source_id": ["u"]}),
                 features=feats)
    out, step = drop_items_without_interactions(ds)
    assert list(out.items["source_id"]) == ["b", "c", "d"]
    assert np.array_equal(out.features["f"], feats["f"][1:])
    assert list(out.interactions["item_id"]) == [0, 2, 1]


# --------------------------------------------------------------------------- bad input
def test_bad_cold_options_fail_before_any_work(tmp_path):
    runner = CliRunner()
    for args in (["--format", "csv", "--items", "x.csv", "--interactions", "y.csv",
                  "--split", "cold_items", "--cold-fraction", "0.95"],
                 ["--format", "csv", "--items", "x.csv", "--interactions", "y.csv",
                  "--split", "cold_items", "--cold-fraction", "0"],
                 ["--format", "kaggle", "--source", str(tmp_path), "--split", "cold_items"],
                 ["--format", "mmrec", "--source", str(tmp_path), "--split", "cold_items"]):
        result = runner.invoke(app, ["prepare", "--workdir", str(tmp_path / "w"), *args])
        assert isinstance(result.exception, ConfigError), result.output
        assert "cold" in str(result.exception)
        assert not (tmp_path / "w" / "dataset").exists()
    # through the real entry point: one line, exit status 2
    proc = subprocess.run([sys.executable, "-m", "lvlmrec.cli", "prepare", "--workdir",
                           str(tmp_path / "w"), "--format", "kaggle", "--source", str(tmp_path),
                           "--split", "cold_items"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    with pytest.raises(ConfigError, match="cold_fraction"):
        parse_config({"dataset": {"format": "synthetic", "cold_fraction": 1.5}})
    with pytest.raises(ConfigError, match="raw log"):
        parse_config({"dataset": {"format": "csv", "items": "a", "interactions": "b",
                                  "split_col": "s", "split": "cold_items"}})


def test_cold_protocol_needs_cold_items():
    cfg = parse_config({"dataset": {"format": "synthetic"}, "evaluate": {"protocol": "cold"}})
    with pytest.raises(ConfigError, match="cold_items"):
        check_config(cfg)
    inter = pd.DataFrame({"user_id": [0, 0, 0], "item_id": [0, 1, 0],
                          "split": ["train", "valid", "test"]})
    with pytest.raises(ConfigError, match="no training or validation"):
        check_protocol("cold_all", inter, 2)  # the test item 0 is also a training item
    check_protocol("full", inter, 2)  # no cold protocol, no check
    check_protocol("cold", inter.assign(item_id=[0, 1, 2]), 3)
    ok = parse_config({"dataset": {"format": "synthetic", "split": "cold_items"},
                       "evaluate": {"protocol": "cold"}})
    check_config(ok)


# --------------------------------------------------------------------------- protocols
class _Fixed(Recommender):
    """Scores every user with the same fixed item scores."""

    def __init__(self, scores=None):
        self.scores = scores

    def score(self, user_ids, history):
        return np.tile(np.asarray(self.scores, np.float32), (len(user_ids), 1))

    @property
    def n_items(self):
        return len(self.scores)


def _csr(rows, n_items):
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for r in rows for i in r]
    return sp.csr_matrix((np.ones(len(items), np.float32), (users, items)),
                         shape=(len(rows), n_items))


def test_cold_protocols_rank_only_cold_targets():
    # items 0-3 warm (in history), 4-5 cold test items, 6 cold without interactions
    history = _csr([[0, 1], [2, 3], [0]], 7)
    target = _csr([[4, 2], [5], [1]], 7)
    cold = make_task("cold", "test", history, target)
    assert list(cold.users) == [0, 1]  # user 2's only target is warm
    assert list(np.flatnonzero(cold.candidates)) == [4, 5, 6]
    assert cold.target[0].indices.tolist() == [4]
    everything = make_task("cold_all", "test", history, target)
    assert everything.candidates is None and list(everything.users) == [0, 1]
    model = _Fixed([9, 8, 7, 6, 1, 2, 3])  # warm items first, then 6, 5, 4
    r_cold = rank_users(model, cold.users, cold.history, cold.target, [1, 3], 16,
                        cold.candidates, False)
    r_all = rank_users(model, everything.users, everything.history, everything.target,
                       [1, 3], 16, everything.candidates, False)
    assert r_cold.per_user["recall@3"].tolist() == [1.0, 1.0]
    assert r_all.per_user["recall@1"].tolist() == [0.0, 0.0]  # warm items rank above


def test_every_model_declares_whether_it_scores_unseen_items():
    unseen = {kind: cls.scores_unseen_items for kind, cls in REGISTRY.items()}
    assert unseen["popularity"] is unseen["itemknn"] is unseen["bpr"] is False
    assert unseen["lightgcn"] is False
    for kind in ("text", "vision", "naive", "concat", "attention", "gating",
                 "cross_attention", "hybrid", "smore"):
        assert unseen[kind] is True, kind


def test_slices_mark_cold_bins_na_for_models_that_need_interactions():
    history = _csr([[0, 1], [2, 3], [0, 2]], 6)
    target = _csr([[4, 2], [5, 3], [1]], 6)
    popularity = np.array([9, 3, 1, 6, 0, 0])
    ranking = rank_users(_Fixed([1, 2, 3, 4, 5, 6]), np.arange(3), history, target, [10],
                         16, None, False)
    for unseen in (True, False):
        s = slice_metrics(ranking, target, popularity, ["recall@10"], unseen, 50, 0)
        rows = s[s["slice"] == "train_interactions"].set_index("bin")
        assert list(rows.index) == ["0", "1-4", "5+"]
        assert rows.loc["0", "n_targets"] == 2 and rows.loc["0", "n_users"] == 2
        assert rows.loc["5+", "ci_low"] <= rows.loc["5+", "value"] <= rows.loc["5+", "ci_high"]
        if unseen:
            assert rows.loc["0", "value"] == 1.0 and rows.loc["0", "note"] == ""
        else:
            assert np.isnan(rows.loc["0", "value"]) and rows.loc["0", "note"] == NA_NOTE
            assert rows.loc["1-4", "note"] == ""


def test_mark_na_never_shows_a_number():
    table = pd.DataFrame({"representation": ["a", "b"], "recall@10": [0.3, np.nan],
                          "n_users": [5, 0], "note": ["", NA_NOTE]})
    shown = mark_na(table, ["recall@10"])
    assert shown.loc[1, "recall@10"] == "n/a" and shown.loc[1, "note"] == NA_NOTE
    assert shown.loc[0, "recall@10"] == 0.3


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def cold_data(tmp_path_factory):
    ds = generate_synthetic(tmp_path_factory.mktemp("cold"), n_items=80, n_users=120,
                            image_size=32, seed=2, show_progress=False, split="cold_items",
                            cold_fraction=0.3)
    rng = np.random.default_rng(0)
    emb = {"t": rng.normal(size=(80, 12)).astype(np.float32),
           "v": rng.normal(size=(80, 16)).astype(np.float32)}
    data = TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"),
                     embedding=lambda s: emb[s], show_progress=False)
    inter = ds.interactions
    cold = np.unique(inter.loc[inter["split"] != "train", "item_id"])
    test_items = np.unique(inter.loc[inter["split"] == "test", "item_id"])
    return ds, data, cold, test_items


def test_training_data_holds_no_cold_interaction(cold_data):
    ds, data, cold, test_items = cold_data
    assert data.train[:, cold].nnz == 0
    assert data.valid[:, test_items].nnz == 0  # test targets are nowhere in TrainData


def test_trained_models_never_see_cold_items_and_still_score_them(cold_data, monkeypatch,
                                                                  one_torch_thread):
    from lvlmrec.represent import cf, fusion, smore
    from lvlmrec.represent.baselines import Hybrid

    _, data, cold, _ = cold_data
    seen: list[np.ndarray] = []
    batches = fusion._Pairs.batches

    def spy_batches(self, batch_size):
        for users, anchors, partners in batches(self, batch_size):
            seen.extend([anchors, partners])
            yield users, anchors, partners

    loss = smore.SMORENet.loss

    def spy_loss(self, users, pos, neg):
        seen.extend([np.asarray(pos), np.asarray(neg)])
        return loss(self, users, pos, neg)

    monkeypatch.setattr(fusion._Pairs, "batches", spy_batches)
    monkeypatch.setattr(smore.SMORENet, "loss", spy_loss)
    sample = cf.NegativeSampler.sample

    def spy_sample(self, users):
        neg = sample(self, users)
        seen.append(neg)
        return neg

    monkeypatch.setattr(cf.NegativeSampler, "sample", spy_sample)
    models = [
        fusion.AttentionFusion(text="t", vision="v", hidden=16, heads=2, epochs=2,
                               batch_size=64),
        fusion.GatingFusion(text="t", vision="v", hidden=16, epochs=2, batch_size=64,
                            objective="cooccur"),
        smore.SMORE(text="t", vision="v", embedding_dim=8, epochs=2, batch_size=256,
                    num_threads=1),
        Hybrid(text="t", weight_grid=[0.0, 0.5, 1.0]),
    ]
    for model in models:
        model.fit(data)
        scores = model.score(np.arange(4), data.train[:4])
        assert np.isfinite(scores[:, cold]).all()
        assert np.ptp(scores[:, cold]) > 0  # cold items are told apart by their content
    touched = np.unique(np.concatenate([np.asarray(s).ravel() for s in seen]))
    assert len(touched) and not np.isin(touched, cold).any()
    assert models[-1].similarity_[:, cold].nnz == 0 and models[-1].similarity_[cold].nnz == 0


# --------------------------------------------------------------------------- end to end
def test_cold_config_runs_and_marks_na(tmp_path):
    # titles only (no describer, no image model) keep it fast; the hybrid is a content model
    strategies = ("[{name: title_text, kind: text, text: title}, "
                  "{name: hybrid_title, kind: hybrid, text: title}, "
                  "{name: popularity, kind: popularity}, {name: itemknn, kind: itemknn}]")
    result = CliRunner().invoke(app, [
        "run", "--config", str(named_config("cold")), "--workdir", str(tmp_path),
        "--set", "dataset.n_items=60", "--set", "dataset.n_users=50",
        "--set", "dataset.image_size=32", "--set", f"represent.strategies={strategies}",
        "--set", "evaluate.n_bootstrap=50", "--set", "evaluate.n_permutations=50",
        "--set", "describe.enabled=false", "--set", "encode.images=false", "--no-progress"])
    assert result.exit_code == 0, result.output
    w = Workdir(tmp_path)
    metrics = pd.read_csv(w.metrics_path, keep_default_na=False)
    na = metrics.set_index("representation")
    assert na.loc["popularity", "note"] == na.loc["itemknn", "note"] == NA_NOTE
    assert na.loc["popularity", "recall@10"] == ""  # no number, not a zero
    assert float(na.loc["title_text", "recall@10"]) > 0
    assert "n/a" in result.output
    run = json.loads(w.run_json.read_text())
    assert run["needs_interactions"] == ["popularity", "itemknn"]
    per_user = pd.read_parquet(w.results_dir / "per_user.parquet")
    assert set(per_user["representation"]) == {"title_text", "hybrid_title"}
    report = (w.report_dir / "report.md").read_text()
    assert "## Cold items" in report and NA_NOTE in report
    assert (w.figures_dir / "cold_items.png").is_file()
    info = json.loads(w.dataset_json.read_text())
    assert info["counts"]["n_cold_test_items"] > 0


def test_packaged_cold_config_loads():
    cfg = load_run_config(named_config("cold"), None)
    assert cfg.dataset.split == "cold_items" and cfg.evaluate.protocol == "cold"
    assert isinstance(cfg, RunConfig)
