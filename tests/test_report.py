"""The evaluate and report stages end to end on a tiny synthetic run (no encoder models:
embeddings and descriptions are written directly), under every protocol."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from lvlmrec.config import (EvaluateConfig, ReportConfig, RepresentConfig, StrategyConfig,
                            SyntheticSource)
from lvlmrec.data.prepare import prepare_dataset
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import active_path
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import save_embedding
from lvlmrec.errors import ConfigError
from lvlmrec.evaluate.run import choose_baseline, covered_items, evaluate_all, main_metrics
from lvlmrec.report.build import ablation_groups, build_report, comparison_pair, load_results
from lvlmrec.represent.fit import fit_all
from lvlmrec.workdir import Workdir, write_json

STRATEGIES = [
    {"name": "lvlm_text", "kind": "text", "text": "description"},
    {"name": "title_text", "kind": "text", "text": "title"},
    {"name": "title_vision_concat", "kind": "concat", "text": "title", "vision": "efficientnet"},
    {"name": "vision_only", "kind": "vision", "vision": "efficientnet"},
]
N_ITEMS, N_USERS = 80, 60


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A workdir with a dataset, descriptions for 3/4 of the items, embeddings and models."""
    wd = Workdir(tmp_path_factory.mktemp("eval") / "run")
    prepare_dataset(SyntheticSource(n_items=N_ITEMS, n_users=N_USERS, image_size=32), wd,
                    show_progress=False)
    ds = Dataset.load(wd, features=False)
    rng = np.random.default_rng(0)
    described = np.arange(N_ITEMS) % 4 != 0
    with DescriptionStore(wd.descriptions_db) as store:
        store.put_many("fake-lvlm", "p1", [(int(i), f"a product number {i}", None, 0.1)
                                           for i in np.flatnonzero(described)])
    write_json(active_path(wd), {"backend": "fake", "model": "fake-lvlm", "prompt_hash": "p1",
                                 "prompt_name": "test", "include_title": False,
                                 "n_texts": int(described.sum()), "texts_digest": "x"})
    description = rng.standard_normal((N_ITEMS, 8)).astype(np.float32)
    description[~described] = 0
    for name, array in (("text_title", rng.standard_normal((N_ITEMS, 8))),
                        ("text_description", description),
                        ("image_efficientnet", rng.standard_normal((N_ITEMS, 12)))):
        save_embedding(wd, name, np.asarray(array, np.float32), {"key": name})
    represent = RepresentConfig(strategies=[StrategyConfig(**s) for s in STRATEGIES])
    fit_all(represent, 0, wd, ds, "data", Console(quiet=True), show_progress=False)
    return wd, ds, represent


def _evaluate(fitted, tmp_path, **settings):
    wd, ds, represent = fitted
    copy = Workdir(tmp_path / "run")
    shutil.copytree(wd.root, copy.root)
    cfg = EvaluateConfig(n_bootstrap=200, n_permutations=200, **settings)
    evaluate_all(cfg, represent, copy, ds, Console(quiet=True), show_progress=False)
    return copy


def _self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page


def test_full_protocol_outputs_and_report(fitted, tmp_path):
    wd = _evaluate(fitted, tmp_path)
    res = wd.results_dir
    per_user = pd.read_parquet(res / "per_user.parquet")
    metrics = pd.read_csv(wd.metrics_path)
    sig = pd.read_csv(res / "significance.csv")
    slices = pd.read_csv(res / "slices.csv")
    for frame in (per_user, metrics, sig, slices):
        assert set(frame["protocol"]) == {"full"}
    test = per_user[per_user.split == "test"]
    means = test.groupby("representation")["ndcg@10"].mean()
    assert metrics.set_index("representation")["ndcg@10"].to_dict() == pytest.approx(
        means.to_dict())
    assert set(sig["baseline"]) == {"title_text"}  # the first text-only title strategy
    assert set(sig["metric"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    assert set(slices["slice"]) >= {"history_length", "popularity", "cold_items"}
    # every user with a test item is evaluated, for every representation
    ds = fitted[1]
    n_with_test = ds.interactions.loc[ds.interactions.split == "test", "user_id"].nunique()
    assert (metrics["n_users"] == n_with_test).all()

    outputs = build_report(ReportConfig(), wd, Console(quiet=True), show_progress=False)
    html_path = wd.report_dir / "report.html"
    assert html_path in outputs and (wd.report_dir / "report.md") in outputs
    page = html_path.read_text()
    _self_contained(page)
    figures = sorted(p.stem for p in wd.figures_dir.glob("*.png"))
    assert figures == ["ablation", "cold_items", "fusion_strategies", "improvement",
                       "main_performance",
                       "slices_history", "slices_items"]
    assert page.count("data:image/png;base64,") == len(figures)
    assert "data:image/jpeg;base64," in page  # case-study thumbnails
    assert "Case studies" in page and "title_text" in page
    md = (wd.report_dir / "report.md").read_text()
    assert "95% CI" in md and "Protocol: full" in md
    assert "with/without-title-in-prompt panel" in md  # one description set only: a note
    for fig in figures:
        assert f"figures/{fig}.png" in md


def test_sampled_protocol_is_labelled_everywhere(fitted, tmp_path):
    wd = _evaluate(fitted, tmp_path, protocol="sampled", n_negatives=20)
    res = wd.results_dir
    for name in ("per_user.parquet", "metrics.csv", "metrics_valid.csv", "significance.csv",
                 "slices.csv"):
        path = res / name
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        assert set(frame["protocol"]) == {"sampled"}, name
    full = _evaluate(fitted, tmp_path / "full")
    sampled_means = pd.read_csv(wd.metrics_path).set_index("representation")["recall@10"]
    full_means = pd.read_csv(full.metrics_path).set_index("representation")["recall@10"]
    assert (sampled_means >= full_means - 1e-12).all()  # 20 negatives: an easier task
    build_report(ReportConfig(n_case_studies=0), wd, Console(quiet=True), show_progress=False)
    for page in ("report.md", "report.html"):
        assert "SAMPLED metrics" in (wd.report_dir / page).read_text()


def test_covered_protocol_restricts_users_and_targets(fitted, tmp_path):
    wd = _evaluate(fitted, tmp_path, protocol="covered")
    _, ds, _ = fitted
    covered = covered_items(wd, ds.n_items)
    assert covered.sum() == N_ITEMS - N_ITEMS // 4
    per_user = pd.read_parquet(wd.results_dir / "per_user.parquet")
    test = per_user[per_user.split == "test"]
    inter = ds.interactions
    has = lambda split: set(inter.loc[(inter.split.isin(split)) & covered[inter.item_id],
                                      "user_id"])
    expected = has(["test"]) & has(["train", "valid"])
    for _, group in test.groupby("representation"):
        assert set(group["user_id"]) == expected
    n_covered_targets = inter[(inter.split == "test") & covered[inter.item_id]] \
        .groupby("user_id").size()
    first = test[test.representation == "title_text"].set_index("user_id")["n_targets"]
    assert first.to_dict() == n_covered_targets.loc[sorted(expected)].to_dict()
    run = load_results(wd).run
    assert "covered subset" in run["protocol_label"] and run["n_candidates"] == covered.sum()
    build_report(ReportConfig(n_case_studies=1), wd, Console(quiet=True), show_progress=False)
    page = (wd.report_dir / "report.html").read_text()
    assert "covered subset" in page


def test_baseline_choice():
    strategies = [StrategyConfig(**s) for s in STRATEGIES]
    assert choose_baseline(EvaluateConfig(), strategies) == "title_text"
    assert choose_baseline(EvaluateConfig(baseline="vision_only"), strategies) == "vision_only"
    assert choose_baseline(EvaluateConfig(), strategies[2:]) == "title_vision_concat"
    with pytest.raises(ConfigError, match="evaluate.baseline: 'nope'"):
        choose_baseline(EvaluateConfig(baseline="nope"), strategies)


def test_significance_metrics_are_checked():
    assert main_metrics(EvaluateConfig(ks=[10])) == ["recall@10", "ndcg@10"]
    with pytest.raises(ConfigError, match="'recal@10' is not a metric"):
        main_metrics(EvaluateConfig(significance_metrics=["recal@10"]))
    with pytest.raises(ConfigError, match="none of"):
        main_metrics(EvaluateConfig(ks=[5]))


def test_report_compare_must_name_two_representations(fitted, tmp_path):
    wd = _evaluate(fitted, tmp_path)
    res = load_results(wd)
    assert comparison_pair(ReportConfig(), res, "recall@10")[0] == "title_text"
    assert comparison_pair(ReportConfig(compare=["vision_only", "lvlm_text"]), res,
                           "recall@10") == ["vision_only", "lvlm_text"]
    with pytest.raises(ConfigError, match="report.compare"):
        comparison_pair(ReportConfig(compare=["vision_only", "nope"]), res, "recall@10")


def test_ablation_groups_by_text_source_and_prompt():
    strategies = [
        {"name": "a", "kind": "text", "text": "description",
         "sources": {"description": {"include_title": False}}},
        {"name": "b", "kind": "text", "text": "description_titled",
         "sources": {"description_titled": {"include_title": True}}},
        {"name": "c", "kind": "text", "text": "title", "sources": {"title": {}}},
        {"name": "d", "kind": "concat", "text": "title", "vision": "efficientnet"},
    ]
    text_only, prompt = ablation_groups(strategies)
    assert [s["name"] for s in text_only] == ["a", "b", "c"]
    assert prompt == {"no title in prompt": ["a"], "title in prompt": ["b"]}


def test_case_study_users_both_directions():
    from lvlmrec.report.cases import choose_users

    per_user = pd.DataFrame({"user_id": [0, 1, 2, 3] * 2,
                             "representation": ["a"] * 4 + ["b"] * 4,
                             "recall@10": [0.5, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.0]})
    chosen = choose_users(per_user, "a", "b", "recall@10", n=3, seed=0)
    assert chosen[0] == (1, "largest recall@10 gain of b over a")
    assert chosen[1] == (2, "largest recall@10 gain of a over b")
    assert chosen[2] == (0, "drawn at random among users with a hit")
    same = per_user.assign(**{"recall@10": [0.5, 0.0, 1.0, 0.0] * 2})
    assert "never beats" in choose_users(same, "a", "b", "recall@10", n=1)[0][1]
