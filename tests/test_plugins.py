"""The README's "Adding a strategy" example, verbatim, without PYTHONPATH; and a broken
plugin is the same one-line error in every stage that loads models."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from lvlmrec.errors import ConfigError
from lvlmrec.plugins import import_plugin, resolve_plugins
from lvlmrec.represent.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> tuple[str, dict]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Adding a strategy"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    return code, config


def lvlmrec(args, capsys) -> tuple[int, str]:
    code, out = run_cli(args, capsys)
    return code, " ".join(out.split())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project folder: the plugin and a config beside it; commands run elsewhere."""
    monkeypatch.setattr("lvlmrec.represent.registry.REGISTRY", dict(REGISTRY))
    monkeypatch.delitem(sys.modules, "my_strategies", raising=False)
    code, represent = readme_example()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_strategies.py").write_text(code)
    config = {
        "dataset": {"format": "synthetic", "n_items": 60, "n_users": 40, "image_size": 32},
        "describe": {"attributes": {"max_labels": 0}},
        "represent": {**represent["represent"],
                      "strategies": represent["represent"]["strategies"]
                      + [{"name": "title_text", "kind": "text", "text": "title"}]},
        "evaluate": {"n_bootstrap": 20, "n_permutations": 20},
        "report": {"n_case_studies": 1},
    }
    (folder / "my.yaml").write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert str(folder) not in sys.path
    return folder


def test_readme_plugin_runs_without_pythonpath(project, capsys, tmp_path):
    code, out = lvlmrec(["run", "--config", str(project / "my.yaml"), "-w", "run",
                         "--no-progress"], capsys)
    assert code == 0, out
    metrics = (Path("run") / "results" / "metrics.csv").read_text()
    assert "centred_lvlm_text" in metrics
    saved = yaml.safe_load(Path("run/config.yaml").read_text())
    assert saved["represent"]["plugins"] == [str(project / "my_strategies.py")]
    # later stages and readers find the plugin from the saved config, from anywhere
    sys.modules.pop("my_strategies", None)
    from lvlmrec import load_run

    run = load_run("run")
    assert type(run.models["centred_lvlm_text"]).__name__ == "CentredText"
    code, out = lvlmrec(["recommend", "-w", "run", "-r", "centred_lvlm_text", "--out",
                         "recs.csv", "--no-progress"], capsys)
    assert code == 0, out

    # the plugin breaks: the same clean error in every stage that loads it
    (project / "my_strategies.py").write_text("import no_such_package_xyz\n")
    sys.modules.pop("my_strategies", None)
    commands = [[*stage, "--force", stage[-1]] for stage in (
        ["run", "-w", "run", "--only", "represent"], ["run", "-w", "run", "--only", "evaluate"],
        ["run", "-w", "run", "--only", "report"])]
    commands.append(["recommend", "-w", "run", "-r", "centred_lvlm_text", "--out", "r.csv"])
    for args in commands:
        sys.modules.pop("my_strategies", None)
        code, out = lvlmrec(args, capsys)
        assert code == 2, (args, out)
        flat = "".join(out.split())  # rich may wrap a long path anywhere
        assert "represent.plugins" in flat and "cannotimport" in flat and \
            "my_strategies.py" in flat and "no_such_package_xyz" in flat, (args, out)


def test_serve_reports_a_broken_plugin_cleanly(project, capsys):
    from lvlmrec.serve.service import load_run

    assert lvlmrec(["run", "--config", str(project / "my.yaml"), "-w", "run",
                    "--no-progress", "--only", "prepare"], capsys)[0] == 0
    (project / "my_strategies.py").write_text("raise RuntimeError('boom')\n")
    sys.modules.pop("my_strategies", None)  # the up-front checks imported the good one
    with pytest.raises(ConfigError, match="cannot import .*RuntimeError: boom"):
        load_run("run")


def test_plugin_lookup_order(tmp_path, monkeypatch):
    config_dir, cwd = tmp_path / "cfg", tmp_path / "cwd"
    config_dir.mkdir()
    cwd.mkdir()
    (config_dir / "a_plugin.py").write_text("VALUE = 'config folder'\n")
    (cwd / "a_plugin.py").write_text("VALUE = 'cwd'\n")
    (cwd / "b_plugin.py").write_text("VALUE = 'cwd'\n")
    monkeypatch.chdir(cwd)
    resolved = resolve_plugins(["a_plugin", "b_plugin", "json", "sub/c.py"], config_dir)
    assert resolved[:3] == [str(config_dir / "a_plugin.py"), str(cwd / "b_plugin.py"), "json"]
    assert resolved[3] == "sub/c.py"  # not found: left as written, an error on import
    monkeypatch.delitem(sys.modules, "a_plugin", raising=False)
    import_plugin(resolved[0])
    assert sys.modules["a_plugin"].VALUE == "config folder"
    with pytest.raises(ConfigError, match="'sub/c.py'.*FileNotFoundError"):
        import_plugin("sub/c.py")
