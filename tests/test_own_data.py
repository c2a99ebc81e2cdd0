"""The README's "Your data" commands, verbatim, on a copy of the MovieLens folder.

The commands are read out of README.md (the bash block after the `own-data commands`
marker), so the README cannot drift from what runs. Skipped when the shared MovieLens
data is absent (it is research data, read from ../shared, never copied into the project).
"""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_cli


ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT / ".." / "shared" / "data" / "movielens-100k-posters"
if not MOVIELENS.is_dir():  # worktrees live beside main; the shared folder is fixed
    MOVIELENS = Path("/work/shared/data/movielens-100k-posters")
needs_movielens = pytest.mark.skipif(
    not MOVIELENS.is_dir(), reason=f"MovieLens 100K with posters not found at {MOVIELENS} "
                                   "(shared test data, never copied into the project)")


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- own-data commands.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its own-data commands block"
    joined = block.group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in joined.splitlines() if line.strip()]
    assert all(c[0] == "lvlmrec" for c in commands)
    return [c[1:] for c in commands]


def lvlmrec(args: list[str], capsys) -> tuple[int, str]:
    return run_cli(args, capsys)


@pytest.fixture
def movielens_copy(tmp_path, monkeypatch):
    folder = tmp_path / "movielens"
    shutil.copytree(MOVIELENS, folder)
    monkeypatch.chdir(folder)
    return folder


@needs_movielens
def test_readme_prepare_writes_default_strategies(movielens_copy, capsys):
    prepare = [c for c in readme_commands() if c[0] == "prepare"]
    assert len(prepare) == 1
    code, out = lvlmrec(prepare[0], capsys)
    assert code == 0, out
    assert "default strategies" in " ".join(out.split())
    config = yaml.safe_load((movielens_copy / "D" / "config.yaml").read_text())
    names = [s["name"] for s in config["represent"]["strategies"]]
    for name in ("lvlm_text", "title_text", "metadata_text", "vision_only",
                 "lvlm_vision_naive", "lvlm_vision_attention", "popularity", "itemknn",
                 "bprmf"):
        assert name in names
    assert config["dataset"]["time_col"] == "unix_timestamp"

    # a prepare that fails leaves the config as it was: no `time_col: ts`
    before = (movielens_copy / "D" / "config.yaml").read_text()
    bad = [a if a != "time_col=unix_timestamp" else "time_col=ts" for a in prepare[0]]
    code, out = lvlmrec(bad, capsys)
    assert code == 2 and "no column 'ts'" in " ".join(out.split())
    assert (movielens_copy / "D" / "config.yaml").read_text() == before

    # a fresh workdir whose prepare fails gets no config at all
    code, _ = lvlmrec([a if a != "D" else "E" for a in bad], capsys)
    assert code == 2 and not (movielens_copy / "E" / "config.yaml").exists()


@needs_movielens
def test_represent_without_strategies_is_an_error(movielens_copy, capsys):
    prepare = [c for c in readme_commands() if c[0] == "prepare"][0]
    assert lvlmrec(prepare, capsys)[0] == 0
    config_path = movielens_copy / "D" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["represent"]["strategies"] = []
    config_path.write_text(yaml.safe_dump(config))
    code, out = lvlmrec(["represent", "-w", "D"], capsys)
    assert code == 2 and "represent.strategies is empty" in out
    assert "stage represent: not run" in lvlmrec(["info", "-w", "D"], capsys)[1]


@pytest.mark.slow
@needs_movielens
def test_readme_own_data_commands_run_verbatim(movielens_copy, capsys):
    import pandas as pd

    commands = readme_commands()
    for command in commands:
        code, out = lvlmrec(command, capsys)
        assert code == 0, f"lvlmrec {' '.join(command)}: {out}"
    recommend = next(c for c in commands if c[0] == "recommend")
    k = int(recommend[recommend.index("--k") + 1])
    recs = pd.read_parquet(movielens_copy / recommend[recommend.index("--out") + 1])
    ratings = pd.read_csv(movielens_copy / "ratings.csv").astype({"user_id": str,
                                                                  "movie_id": str})
    # every user, by their own ids, k items each, none they rated (history is excluded)
    assert set(recs["user_source_id"]) == set(ratings["user_id"])
    assert (recs.groupby("user_source_id").size() == k).all()
    movies = pd.read_csv(movielens_copy / "items.csv")["movie_id"].astype(str)
    assert set(recs["item_source_id"]) <= set(movies)
    rated = set(zip(ratings["user_id"], ratings["movie_id"]))
    assert not any(pair in rated for pair in zip(recs["user_source_id"],
                                                 recs["item_source_id"]))
    assert (movielens_copy / "D" / "report" / "report.html").is_file()
