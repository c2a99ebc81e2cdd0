import pytest

from lvlmrec.config import RunConfig, load_config, named_config, parse_config
from lvlmrec.errors import ConfigError


def test_demo_config_loads():
    cfg = load_config(named_config("demo"))
    assert cfg.dataset.format == "synthetic"
    assert {s.name for s in cfg.represent.strategies} >= {"title_text", "lvlm_text"}


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("describe:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "bad.yaml" in msg and "describe.batch_sise" in msg and "unknown key" in msg


def test_bad_value_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("evaluate:\n  ks: [10, -1]\n")
    with pytest.raises(ConfigError, match="evaluate.ks"):
        load_config(path)
    path.write_text("describe:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"describe\.batch_size"):
        load_config(path)


def test_unknown_dataset_format_is_an_error():
    with pytest.raises(ConfigError, match="dataset"):
        parse_config({"dataset": {"format": "parquetzilla"}}, "x.yaml")


def test_duplicate_strategy_names_rejected():
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config({"represent": {"strategies": [
            {"name": "a", "kind": "text", "text": "title"},
            {"name": "a", "kind": "text", "text": "title"}]}})


def test_relative_paths_resolve_against_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("dataset:\n  format: kaggle\n  source: ../archive\n")
    cfg = load_config(path)
    assert cfg.dataset.source == (tmp_path / "archive").resolve()


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_defaults_are_complete():
    cfg = RunConfig()
    assert cfg.evaluate.ks == [5, 10, 20, 50]
    assert cfg.describe.max_new_tokens == 150
