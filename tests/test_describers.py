"""Named describers: config, independent resumable sets, per-describer sources, the audit."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import StrategyConfig, parse_config
from lvlmrec.data.schema import Dataset
from lvlmrec.describe import registry
from lvlmrec.describe.audit import (
    audit_describer,
    audit_path,
    describer_downstream,
    describer_strategies,
    fidelity,
    named_values,
    text_stats,
    write_text_audit,
)
from lvlmrec.describe.base import Describer
from lvlmrec.describe.run import description_sets, read_active, run_describers
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.run import text_inputs
from lvlmrec.encode.store import available_sources, source_file
from lvlmrec.errors import ConfigError
from lvlmrec.workdir import Workdir, read_json

CALLS: list[tuple[str, int]] = []  # (prompt name, item id) of every text the fake wrote


class FakeDescriber(Describer):
    """Writes `<prompt> <title>` (a JSON object for the structured prompt); a model named
    `broken` cannot load."""

    backend = "fake"

    def __init__(self, cfg):
        self.model = cfg.model or "fake-model"
        self.prompt = cfg.prompt

    @property
    def model_id(self):
        return self.model

    @property
    def prompt_name(self):
        return self.prompt

    def settings(self):
        return {"prompt": self.prompt}

    def load(self):
        if self.model == "broken":
            raise ConfigError("describe.model: cannot load 'broken'")

    def describe(self, images, titles):
        CALLS.extend((self.prompt, t) for t in titles)
        if self.prompt == "structured":
            return ['```json\n{"category": "dress", "colors": ["Red"]}\n``` done'] * len(titles)
        return [f"{self.prompt} {t}" for t in titles]


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "fake", FakeDescriber)
    CALLS.clear()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    wd = tmp_path_factory.mktemp("describers") / "run"
    result = CliRunner().invoke(app, ["prepare", "--workdir", str(wd), "--format", "synthetic",
                                      "--n-items", "24", "--n-users", "12", "--image-size", "32",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return wd


@pytest.fixture
def workdir(prepared, tmp_path):
    import shutil

    wd = tmp_path / "run"
    shutil.copytree(prepared, wd)
    return Workdir(wd)


def describe_cfg(describers, **extra):
    return parse_config({"describe": {"backend": "fake", "describers": describers, **extra}}
                        ).describe


# --------------------------------------------------------------------------- config
def test_one_section_is_one_describer_called_default():
    cfg = parse_config({"describe": {"backend": "attributes"}}).describe
    assert list(cfg.named()) == ["default"] and cfg.named()["default"] is cfg


def test_describers_take_the_section_settings_they_do_not_set():
    section = {"backend": "attributes", "batch_size": 7, "describers": {
        "labels": {}, "colours_only": {"attributes": {"max_labels": 0}}}}
    cfg = parse_config({"describe": section}).describe
    named = cfg.named()
    assert list(named) == ["labels", "colours_only"]
    assert named["labels"].attributes.max_labels == 2
    assert named["colours_only"].attributes.max_labels == 0
    assert named["colours_only"].batch_size == 7
    # a saved config (unset settings written as null) reads back the same
    import yaml

    from lvlmrec.workdir import to_jsonable

    saved = yaml.safe_load(yaml.safe_dump(to_jsonable(parse_config({"describe": section}))))
    again = parse_config(saved).describe.named()
    assert {n: c.model_dump() for n, c in again.items()} == {
        n: c.model_dump() for n, c in named.items()}


@pytest.mark.parametrize("describe, match", [
    ({"describers": {"a b": {}}}, r"describe: .*describers\.a b: a describer name"),
    ({"describers": {"x:y": {}}}, r"describers\.x:y: a describer name"),
    ({"describers": {"one": {}, "two": {"batch_size": 3}}},
     r"describers\.two: same settings as describer 'one'"),
    ({"backend": "hf", "describers": {"a": {"prompt": "study_code"}}},
     r"describers\.a: .*include_title"),
    ({"describers": {"a": {"colour": 1}}}, r"describers\.a\.colour: unknown key"),
])
def test_bad_describers_are_config_errors_naming_the_key(describe, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"describe": describe})


def test_a_strategy_naming_an_unknown_describer_is_a_config_error():
    data = {"describe": {"describers": {"a": {}, "b": {"attributes": {"max_labels": 0}}}},
            "represent": {"strategies": [
                {"name": "ok", "kind": "text", "text": "description:b"},
                {"name": "bad", "kind": "naive", "text": "title_description:c",
                 "vision": "efficientnet"}]}}
    with pytest.raises(ConfigError, match=r"represent\.strategies\.bad: source "
                       r"'title_description:c' names describer 'c'.*known: a, b"):
        parse_config(data)
    data["represent"]["strategies"].pop()
    parse_config(data)
    data["represent"]["strategies"].append({"name": "attrs", "kind": "text",
                                            "text": "attributes:a"})
    with pytest.raises(ConfigError, match=r"strategies\.attrs: source 'attributes:a' needs "
                       r"describer 'a' to use a structured prompt"):
        parse_config(data)
    data["describe"]["describers"]["a"] = {"backend": "hf", "prompt": "structured"}
    parse_config(data)
    default = {"represent": {"strategies": [{"name": "d", "kind": "text",
                                             "text": "description:default"}]}}
    parse_config(default)


# --------------------------------------------------------------------------- running
def test_describers_run_and_resume_independently(workdir):
    ds = Dataset.load(workdir, features=False)
    two = {"readme": {"prompt": "study_readme"}, "caption": {"prompt": "caption"}}
    records = run_describers(describe_cfg(two), workdir, ds, show_progress=False)
    assert [r["status"] for r in records.values()] == ["ok", "ok"]
    assert len(CALLS) == 2 * ds.n_items
    with DescriptionStore(workdir.descriptions_db) as store:
        for name, prompt in (("readme", "study_readme"), ("caption", "caption")):
            rec = records[name]
            texts = store.texts(rec["model"], rec["prompt_hash"])
            assert len(texts) == ds.n_items and texts[0].startswith(prompt)
    assert read_active(workdir)["name"] == "readme"  # plain `description` is the first

    # adding a describer does only its own work; `only` runs one
    CALLS.clear()
    three = {**two, "json": {"prompt": "structured"}}
    records = run_describers(describe_cfg(three), workdir, ds, show_progress=False)
    assert {p for p, _ in CALLS} == {"structured"} and len(CALLS) == ds.n_items
    # a structured describer's fidelity is judged on its parsed attributes
    write_text_audit(workdir, ds, describe_cfg(three), records)
    rows = {r["describer"]: r for r in read_json(audit_path(workdir))}
    assert rows["json"]["fidelity_colour"] == pytest.approx((ds.items.colour == "red").mean())
    assert rows["json"]["fidelity_category"] == pytest.approx(
        (ds.items.category == "dress").mean())
    assert rows["readme"]["fidelity_colour"] is not None and rows["json"]["coverage"] == 1
    CALLS.clear()
    run_describers(describe_cfg(three), workdir, ds, only=["caption"], show_progress=False)
    assert CALLS == []
    assert list(description_sets(workdir)) == ["readme", "caption", "json"]

    sources = text_inputs(workdir, ds)
    assert sources["description"] == sources["description:readme"]
    assert sources["title_description:caption"][0].endswith(f"caption {ds.items.title[0]}")
    assert sources["attributes:json"][0] == "category: dress; colours: red"
    assert "attributes:readme" not in sources


def test_a_describer_that_cannot_load_fails_alone(workdir):
    ds = Dataset.load(workdir, features=False)
    cfg = describe_cfg({"broken": {"model": "broken"}, "fine": {"prompt": "caption"}})
    records = run_describers(cfg, workdir, ds, show_progress=False)
    assert records["broken"]["status"] == "failed"
    assert "cannot load 'broken'" in records["broken"]["error"]
    assert records["fine"]["status"] == "ok" and records["fine"]["n_texts"] == ds.n_items
    sources = text_inputs(workdir, ds)
    assert "description" not in sources and "description:fine" in sources


def test_named_sources_map_to_files_without_colons(workdir):
    path = source_file(workdir, "title_description:my-vlm")
    assert path.name == "text_title_description__my-vlm.npy"
    workdir.embeddings_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros((2, 2), np.float32))
    assert "title_description:my-vlm" in available_sources(workdir)


def test_describe_command_runs_one_named_describer(workdir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("describe:\n  backend: fake\n  describers:\n    a: {}\n"
                      "    b: {prompt: caption}\n")
    base = ["describe", "--workdir", str(workdir.root), "--config", str(config), "--no-progress"]
    result = CliRunner().invoke(app, [*base, "--describer", "b"])
    assert result.exit_code == 0, result.output
    assert {p for p, _ in CALLS} == {"caption"}
    sets = description_sets(workdir)
    assert sets["b"]["status"] == "ok" and sets["a"]["status"] == "not run"
    result = CliRunner().invoke(app, [*base, "--describer", "a"])
    assert result.exit_code == 0, result.output
    sets = description_sets(workdir)
    assert sets["a"]["status"] == sets["b"]["status"] == "ok"  # b read from the store
    assert sets["b"]["n_texts"] == sets["a"]["n_texts"] > 0
    result = CliRunner().invoke(app, [*base, "--describer", "zz"])
    assert isinstance(result.exception, ConfigError)  # main() exits 2 with its message
    assert "'zz' is not a describer" in str(result.exception)


# --------------------------------------------------------------------------- audit
def test_audit_numbers_on_a_fixture_with_known_answers():
    titles = ["Red Summer Dress", "Blue Chinos", "Tote Bag", "Wool Hat"]
    texts = {0: "A navy blue and red striped dress.",   # colour wrong (navy first), pattern ok
             1: "Grey trousers, plain.",               # grey ok (label Gray), solid ok
             2: "Grey trousers, plain.",               # shared text; category wrong
             }
    labels = {"colour": ["red", "Gray", "grey", "black"],
              "category": ["dress", "trousers", "handbag", "hat"],
              "pattern": ["stripes", "solid", "dots", "solid"]}
    row = audit_describer({"name": "x", "n_items": 4, "seconds": 1.5, "n_failed": 1,
                           "status": "ok"}, texts, titles, labels)
    assert row["coverage"] == 0.75 and row["items_per_second"] == 2.0
    assert row["n_failed"] == 1
    assert row["distinct_texts"] == 2 and row["shared_text_share"] == pytest.approx(2 / 3)
    assert row["mean_words"] == pytest.approx((7 + 3 + 3) / 3)
    # bigrams: 6 + 2 + 2 = 10, distinct 6 + 2 = 8
    assert row["distinct_2"] == pytest.approx(0.8)
    # title words repeated: "red", "dress" 2/3, "chinos"/"blue" 0/2, "tote"/"bag" 0/2
    assert row["title_overlap"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert row["fidelity_colour"] == pytest.approx(2 / 3)
    assert row["fidelity_category"] == pytest.approx(2 / 3)
    assert row["fidelity_pattern"] == pytest.approx(2 / 3)


def test_colour_words_match_longest_first_with_synonyms():
    assert named_values("colour", "Navy blue top with gray stripes") == ["navy", "grey"]
    assert named_values("category", "two sneakers and a tote") == ["sneaker", "handbag"]
    assert fidelity("colour", [None, ""], ["red", "red"]) is None
    assert text_stats({}, [])["distinct_texts"] == 0


def test_downstream_metrics_per_describer_with_paired_tests():
    rng = np.random.default_rng(0)
    users = np.arange(300)
    good = (rng.random(300) < 0.6).astype(float)
    frames = [pd.DataFrame({"user_id": users, "representation": name, "recall@10": vals,
                            "ndcg@10": vals / 2})
              for name, vals in (("text_a", good), ("text_b", good * 0),
                                 ("text_c", good.copy()))]
    per_user = pd.concat(frames)
    strategies = [StrategyConfig(name="text_a", kind="text", text="description"),
                  StrategyConfig(name="text_b", kind="text", text="description:b"),
                  StrategyConfig(name="text_c", kind="text", text="description:c"),
                  StrategyConfig(name="fused", kind="naive", text="description:c",
                                 vision="efficientnet")]
    chosen = describer_strategies({"a": {}, "b": {}, "c": {}, "d": {}}, strategies)
    assert chosen == {"a": "text_a", "b": "text_b", "c": "text_c"}
    down, pairs = describer_downstream(per_user, chosen, ["recall@10", "ndcg@10"],
                                       n_bootstrap=200, n_permutations=200)
    a = down.set_index("describer").loc["a"]
    assert a["recall@10"] == pytest.approx(good.mean())
    assert a["recall@10_low"] < good.mean() < a["recall@10_high"]
    assert len(pairs) == 6  # 3 pairs x 2 metrics
    ab = pairs[(pairs.describer_a == "a") & (pairs.describer_b == "b")].iloc[0]
    ac = pairs[(pairs.describer_a == "a") & (pairs.describer_b == "c")].iloc[0]
    assert ab["p_ttest_bh"] < 0.001 and ac["p_ttest"] == 1.0 and ac["difference"] == 0
    assert (pairs["p_ttest_bh"] >= pairs["p_ttest"]).all()


# --------------------------------------------------------------------------- end to end
E2E = """
dataset: {format: synthetic, n_items: 30, n_users: 24, image_size: 48}
describe:
  backend: attributes
  describers:
    labels: {}
    colours: {attributes: {max_labels: 0}}
encode: {images: false}
represent:
  strategies:
    - {name: title_text, kind: text, text: title}
    - {name: text_labels, kind: text, text: description}
    - {name: text_colours, kind: text, text: "description:colours"}
evaluate: {n_bootstrap: 50, n_permutations: 50, ks: [10], significance_metrics: [recall@10]}
report: {n_case_studies: 0}
"""


def test_two_describers_end_to_end(tmp_path, one_torch_thread):
    config = tmp_path / "c.yaml"
    config.write_text(E2E)
    wd = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "-w", str(wd), "-c", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(wd / "results" / "describers.csv")
    assert table["describer"].tolist() == ["labels", "colours"]
    assert table["strategy"].tolist() == ["text_labels", "text_colours"]
    assert (table["coverage"] == 1).all() and table["recall@10"].notna().all()
    assert table["fidelity_colour"].between(0, 1).all()
    report = (wd / "report" / "report.md").read_text()
    assert "Describer **colours**: attributes" in report and "## Describers" in report
    assert report.count("](figures/items/") >= 12
    assert (wd / "report" / "figures" / "describers_recall.png").is_file()
    # a third describer: only its texts are written; the others' embeddings stay cached
    config.write_text(E2E.replace("    colours: {attributes: {max_labels: 0}}",
                                  "    colours: {attributes: {max_labels: 0}}\n"
                                  "    one: {attributes: {max_labels: 0, n_colours: 1}}"))
    result = CliRunner().invoke(app, ["run", "-w", str(wd), "-c", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "labels: described 0 items" in result.output
    assert "text_description__labels: cached" in result.output
    assert "text_labels: cached" in result.output
