"""A user's catalog as CSV tables + an image folder, and MovieLens 100K with real posters."""

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import CsvSource, RunConfig
from lvlmrec.data.csvdata import load_csv
from lvlmrec.data.prepare import prepare_dataset
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.pipeline import run_pipeline
from lvlmrec.workdir import Workdir

MOVIELENS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "movielens-100k-posters"
if not MOVIELENS.is_dir():  # worktrees live beside main; the shared folder is fixed
    MOVIELENS = Path("/work/shared/data/movielens-100k-posters")


def _catalog(tmp_path, split_col=False):
    items = pd.DataFrame({
        "sku": [f"S-{i}" for i in range(6)],
        "name": [f"Shirt {i}" for i in range(6)],
        "blurb": [f"cotton {i}" for i in range(6)],
        "picture": ["https://cdn/0.jpg", "pics/1.png", "", "", "", ""],
        "colour": ["red", "blue", "red", "green", "blue", "red"],
    })
    items.to_csv(tmp_path / "items.csv", index=False)
    rows = []
    for u in range(5):
        for k, i in enumerate([(u + j) % 6 for j in range(4)]):
            rows.append({"customer": f"c{u}", "sku": f"S-{i}", "stars": 2 if k == 1 else 5,
                         "when": f"2024-01-{1 + u + k:02d}",
                         "part": ["train", "train", "validation", "test"][k]})
    inter = pd.DataFrame(rows)
    if not split_col:
        inter = inter.drop(columns="part")
    inter.to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "pics" / "1.png")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "pics" / "S-3.jpg")
    return tmp_path / "items.csv", tmp_path / "events.csv"


def _source(tmp_path, **kw):
    options = dict(items=tmp_path / "items.csv", interactions=tmp_path / "events.csv",
                   images=tmp_path / "pics", item_col="sku", user_col="customer",
                   title_col="name", text_col="blurb", image_col="picture",
                   rating_col="stars", time_col="when")
    return CsvSource(**{**options, **kw})


def test_csv_catalog_with_options(tmp_path):
    _catalog(tmp_path)
    ds = load_csv(_source(tmp_path, split="loo"), show_progress=False)
    assert ds.n_users == 5 and ds.n_items == 6
    assert ds.items["source_id"].tolist() == [f"S-{i}" for i in range(6)]
    assert ds.items["title"].iloc[2] == "Shirt 2" and ds.items["text"].iloc[2] == "cotton 2"
    assert ds.items["colour"].tolist()[:2] == ["red", "blue"]  # extra columns kept
    assert ds.items["image_url"].iloc[0] == "https://cdn/0.jpg"
    paths = ds.items["image_path"]
    assert paths.iloc[1].endswith("pics/1.png") and paths.iloc[3].endswith("S-3.jpg")
    assert paths.iloc[0] == "" and paths.iloc[5] == ""
    # dates became unix seconds, and loo put each user's latest row in test
    inter = ds.interactions
    assert inter["timestamp"].min() >= pd.Timestamp("2024-01-01").timestamp()
    latest = inter.loc[inter.groupby("user_id")["timestamp"].idxmax(), "split"]
    assert (latest == "test").all()


def test_rating_threshold_and_kcore(tmp_path):
    _catalog(tmp_path)
    ds = load_csv(_source(tmp_path, min_rating=4), show_progress=False)
    assert (ds.interactions["rating"] >= 4).all() and len(ds.interactions) == 15
    assert ds.info["filters"][1]["step"] == "min_rating"


def test_given_split_column_is_used_as_is(tmp_path):
    _catalog(tmp_path, split_col=True)
    ds = load_csv(_source(tmp_path, split_col="part"), show_progress=False)
    assert ds.interactions["split"].value_counts().to_dict() == {"train": 10, "valid": 5,
                                                                 "test": 5}
    with pytest.raises(DataError, match="kcore=2 cannot be combined with split_col 'part'"):
        load_csv(_source(tmp_path, split_col="part", kcore=2), show_progress=False)


def _edit(path, transform):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    transform(df)
    df.to_csv(path, index=False)


CSV_ERRORS = {
    "missing column": ({}, lambda i, e: _edit(e, lambda d: d.drop(columns="stars", inplace=True)),
                       r"events.csv: no column 'stars' \(columns: customer, sku, when, part\)"),
    "unknown item": ({}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((3, "sku"), "S-99")),
                     r"events.csv:5: item 'S-99' is not in .*items.csv"),
    "duplicate item": ({}, lambda i, e: _edit(i, lambda d: d.loc.__setitem__((4, "sku"), "S-1")),
                       r"items.csv: item 'S-1' appears twice \(lines 3 and 6\)"),
    "bad rating": ({}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((2, "stars"), "five")),
                   r"events.csv:4: stars 'five' is not a number"),
    "bad time": ({}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((6, "when"), "soon")),
                 r"events.csv:8: when 'soon' is neither a number nor a date"),
    "bad split value": ({}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((1, "part"), "x")),
                        r"events.csv:3: part 'x' is not one of train"),
    "duplicate with split": (
        {}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((1, "sku"), d.loc[0, "sku"])),
        r"duplicate interaction \(user 'c0', item 'S-0'\) at lines 2 and 3"),
    "user without train": (
        {}, lambda i, e: _edit(e, lambda d: d.loc.__setitem__((slice(0, 1), "part"), "test")),
        r"events.csv:2: user 'c0' has test interactions but no training history"),
    "no rating column": ({"rating_col": None, "min_rating": 3}, lambda i, e: None,
                         r"min_rating=3.0 was given but the data has no ratings"),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_csv_errors_name_file_and_line(tmp_path, case):
    items, events = _catalog(tmp_path, split_col=True)
    options, damage, message = CSV_ERRORS[case]
    damage(items, events)
    wd = Workdir(tmp_path / "run")
    with pytest.raises(DataError, match=message):
        prepare_dataset(_source(tmp_path, **{"split_col": "part", **options}), wd, False)
    assert not wd.dataset_dir.exists()


@pytest.mark.skipif(not MOVIELENS.is_dir(),
                    reason=f"MovieLens 100K with posters not found at {MOVIELENS} "
                           f"(shared test data, never copied into the project)")
def test_movielens_with_posters_through_the_cli(tmp_path):
    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    posters = {int(p.stem) for p in (MOVIELENS / "posters").glob("*.jpg")}
    wd = tmp_path / "ml"
    result = CliRunner().invoke(app, [
        "prepare", "--format", "csv", "--workdir", str(wd),
        "--items", str(MOVIELENS / "items.csv"), "--interactions", str(MOVIELENS / "ratings.csv"),
        "--images", str(MOVIELENS / "posters"), "--min-rating", "4", "--kcore", "5",
        "--set", "item_col=movie_id", "--set", "text_col=overview",
        "--set", "rating_col=rating", "--set", "time_col=unix_timestamp", "--no-progress"])
    assert result.exit_code == 0, result.output
    ds = Dataset.load(Workdir(wd))
    # the same filters, computed independently with pandas
    kept = ratings[ratings["rating"] >= 4]
    while True:
        small_u = kept.groupby("user_id").size().loc[lambda s: s < 5].index
        small_i = kept.groupby("movie_id").size().loc[lambda s: s < 5].index
        if not len(small_u) and not len(small_i):
            break
        kept = kept[~kept["user_id"].isin(small_u) & ~kept["movie_id"].isin(small_i)]
    assert ds.n_users == kept["user_id"].nunique() == 938
    # k-core filters interactions; the catalog stays as given, filtered-out movies are cold
    items_table = pd.read_csv(MOVIELENS / "items.csv")
    assert ds.n_items == len(items_table)
    assert ds.interactions["item_id"].nunique() == kept["movie_id"].nunique()
    assert len(ds.interactions) == len(kept)
    counts = ds.counts()
    assert counts["n_items_without_interactions"] == len(items_table) - kept["movie_id"].nunique()
    movie_ids = ds.items["source_id"].astype(int)
    assert counts["n_items_with_image"] == movie_ids.isin(posters).sum() > 0.95 * ds.n_items
    toy_story = ds.items[ds.items["source_id"] == "1"].iloc[0]
    assert toy_story["title"] == "Toy Story (1995)" and "Woody" in toy_story["text"]
    assert toy_story["image_path"].endswith("posters/1.jpg")
    assert Image.open(toy_story["image_path"]).size == (92, 138)
    assert ds.items["genres"].iloc[0]  # extra columns kept
    meta = json.loads(Workdir(wd).dataset_json.read_text())
    assert [s["step"] for s in meta["filters"]] == ["dedupe_latest", "min_rating", "kcore",
                                                   "split"]
    assert meta["filters"][0]["before"] == {"n_interactions": 99815, "n_users": 943,
                                           "n_items": 1663}
    assert "kcore" in result.output and "n_items_with_image" in result.output


def test_changed_input_file_prepares_again(tmp_path):
    _catalog(tmp_path)
    cfg = RunConfig(dataset=_source(tmp_path))
    wd = Workdir(tmp_path / "run")
    assert run_pipeline(cfg, wd, only=["prepare"], show_progress=False)[0]["status"] == "ran"
    assert run_pipeline(cfg, wd, only=["prepare"], show_progress=False)[0]["status"] == "skipped"
    events = tmp_path / "events.csv"
    events.write_text(events.read_text() + "c9,S-0,5,2024-02-01\n")
    assert run_pipeline(cfg, wd, only=["prepare"], show_progress=False)[0]["status"] == "ran"
    assert Dataset.load(wd).n_users == 6


def test_error_lines_count_quoted_line_breaks_and_blank_lines(tmp_path):
    _catalog(tmp_path)
    (tmp_path / "items.csv").write_text(
        'sku,name,blurb,picture,colour\nS-0,A,"two\nlines",,red\n\nS-1,B,x,,red\n'
        'S-1,C,y,,red\n')
    with pytest.raises(DataError, match=r"items.csv: item 'S-1' appears twice \(lines 5 and 6\)"):
        load_csv(_source(tmp_path), show_progress=False)
