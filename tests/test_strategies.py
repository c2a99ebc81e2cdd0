"""The strategy registry: every kind builds, fits and scores; the configs' sets build; max
scoring goes through config; a user's own strategy plugs in end to end."""

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from rich.console import Console

from lvlmrec.config import (
    EvaluateConfig,
    RepresentConfig,
    StrategyConfig,
    load_config,
    named_config,
)
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.encode.store import save_embedding
from lvlmrec.errors import ConfigError
from lvlmrec.evaluate.run import evaluate_all
from lvlmrec.represent.base import Recommender, TrainData, l2_normalise
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.represent.fit import fit_all, load_model
from lvlmrec.represent.registry import REGISTRY, build
from lvlmrec.workdir import Workdir

STUDY_ROWS = ["lvlm_text", "title_text", "lvlm_vision_attention", "lvlm_vision_concat",
              "lvlm_vision_naive", "smore_lvlm_vision", "title_vision_attention",
              "title_vision_concat", "title_vision_naive", "smore_title_vision",
              "gating_fusion", "vision_only"]
# this kinds; SMORE and the CF models register their own
KINDS = ["text", "vision", "content", "naive", "concat", "attention", "gating",
         "cross_attention", "popularity", "itemknn", "hybrid"]
QUICK = {"attention": {"epochs": 2, "hidden": 16}, "gating": {"epochs": 2, "hidden": 16},
         "cross_attention": {"epochs": 2, "hidden": 16, "heads": 2},
         "hybrid": {"weight_grid": [0.5]}}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train = sp.random(50, 40, density=0.1, format="csr", random_state=0)
    valid = sp.random(50, 40, density=0.05, format="csr", random_state=1)
    train.data[:] = valid.data[:] = 1
    emb = {"t": rng.normal(size=(40, 6)), "v": rng.normal(size=(40, 9))}
    return TrainData(train=train, valid=valid, embedding=lambda s: emb[s], show_progress=False)


def _strategy(kind, **kw):
    return StrategyConfig(name=f"s_{kind}", kind=kind, text="t", vision="v",
                          params=QUICK.get(kind, {}), **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_fits_and_scores(kind, data):
    model = build(_strategy(kind), seed=1)
    assert isinstance(model, Recommender)
    scores = model.fit(data).score(np.arange(6), data.train[:6])
    assert scores.shape == (6, 40) and np.isfinite(scores).all()


# (the hybrid's max scoring is checked in test_baselines)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "hybrid"
                                  and "scoring" in REGISTRY[k]._param_names()])
def test_max_scoring_through_the_registry(kind, data):
    model = build(_strategy(kind, scoring="max"), seed=1).fit(data)
    assert model.scoring == "max"
    vecs = l2_normalise(model.item_vectors_)
    for user in range(5):
        items = data.train[user].indices
        expected = (vecs[items] @ vecs.T).max(0) if len(items) else np.zeros(40)
        np.testing.assert_allclose(model.score(np.array([user]), data.train[user])[0],
                                   expected, rtol=1e-5, atol=1e-6)


def test_scoring_on_a_kind_without_it_is_an_error():
    with pytest.raises(ConfigError, match="no `scoring` option"):
        build(StrategyConfig(name="p", kind="popularity", scoring="max"))


def test_study_config_builds_its_twelve_rows():
    cfg = load_config(named_config("study"))
    names = [s.name for s in cfg.represent.strategies]
    # the study's twelve rows, then the collaborative baseline beyond the study
    assert names[:len(STUDY_ROWS)] == STUDY_ROWS and names[len(STUDY_ROWS):] == ["ials"]
    assert cfg.evaluate.baseline == "title_text"
    for strategy in cfg.represent.strategies:
        assert isinstance(build(strategy, cfg.seed), REGISTRY[strategy.kind])


def test_demo_config_builds_and_uses_the_study_names():
    cfg = load_config(named_config("demo"))
    names = {s.name for s in cfg.represent.strategies}
    assert names >= set(STUDY_ROWS)
    assert any(s.scoring == "max" for s in cfg.represent.strategies)
    kinds = {s.kind for s in cfg.represent.strategies}
    assert kinds >= {"attention", "gating", "cross_attention", "popularity", "itemknn",
                     "hybrid", "smore", "lightgcn", "bpr"}
    for strategy in cfg.represent.strategies:
        if strategy.kind in REGISTRY:
            build(strategy, cfg.seed)


def test_unknown_plugin_is_a_clear_error(tmp_path):
    cfg = RepresentConfig(plugins=["no_such_module_xyz"])
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        fit_all(cfg, 0, Workdir(tmp_path), None, "k", Console(quiet=True))


# The docs' "how to add a strategy" example, as a user's own module.
PLUGIN = textwrap.dedent('''
    from lvlmrec.represent.content import ContentRecommender
    from lvlmrec.represent.registry import register


    class CentredText(ContentRecommender):
        """Text embeddings minus the catalog mean (drops the direction all items share)."""

        def build_item_matrix(self, data):
            x = data.embedding(self.source)
            return x - x.mean(axis=0)


    register("centred_text", CentredText)
''')


def test_a_users_strategy_runs_end_to_end(tmp_path, monkeypatch):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_strategies.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr("lvlmrec.represent.registry.REGISTRY", dict(REGISTRY))
    monkeypatch.delitem(sys.modules, "my_strategies", raising=False)  # another test's plugin

    workdir = Workdir(tmp_path / "run")
    ds = generate_synthetic(workdir.dataset_dir, n_items=60, n_users=40, image_size=32,
                            show_progress=False)
    ds.save(workdir)
    rng = np.random.default_rng(0)
    save_embedding(workdir, "text_title", rng.normal(1.0, 1.0, size=(60, 8)), {})
    cfg = RepresentConfig(plugins=["my_strategies"], strategies=[
        StrategyConfig(name="centred_title", kind="centred_text", text="title"),
        StrategyConfig(name="title_text", kind="text", text="title", scoring="max")])
    console = Console(quiet=True)
    fit_all(cfg, 0, workdir, ds, "key", console, show_progress=False)
    model = load_model(workdir, "centred_title")
    assert type(model).__name__ == "CentredText" and isinstance(model, ContentRecommender)
    evaluate_all(EvaluateConfig(ks=[10]), cfg, workdir, ds, console, show_progress=False)
    metrics = pd.read_csv(workdir.metrics_path)
    assert metrics["representation"].tolist() == ["centred_title", "title_text"]
    assert (metrics["n_users"] == 40).all()
