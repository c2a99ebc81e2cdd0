"""Amazon Reviews 2018 / 2023 dumps: streaming, literals, nulls, duplicates, k-core, splits."""

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import AmazonSource
from lvlmrec.data.amazon import load_amazon, read_reviews
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.workdir import Workdir


def _write(path, lines, gz=False):
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _reviews_2018(n_users=12, n_items=9, seed=0):
    """Every user reviews 5-7 items; a few null ratings and one duplicate review."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, rng.integers(5, 8), replace=False)):
            rating = None if (u + k) % 11 == 0 else float(rng.integers(1, 6))
            lines.append(json.dumps({"reviewerID": f"R{u}", "asin": f"A{i}", "overall": rating,
                                     "unixReviewTime": 1_500_000_000 + 1000 * (u * 10 + k),
                                     "reviewText": "fine " * 20, "style": {"Size:": " M"}}))
    dup = json.loads(lines[0])
    dup.update(overall=1.0, unixReviewTime=dup["unixReviewTime"] + 5)
    lines.append(json.dumps(dup))  # the same user re-reviews later: this row wins
    return lines


def test_2018_reviews_gz_with_nulls_and_duplicates(tmp_path):
    reviews = _write(tmp_path / "Clothing.json.gz", _reviews_2018(), gz=True)
    log = read_reviews(reviews, "amazon2018")
    assert np.isnan(log.rating).sum() >= 1
    ds = load_amazon(AmazonSource(format="amazon2018", reviews=reviews, kcore=0),
                     show_progress=False)
    assert not ds.interactions.duplicated(["user_id", "item_id"]).any()
    first = json.loads(_reviews_2018()[0])
    row = ds.interactions[(ds.users["source_id"].iloc[ds.interactions["user_id"]].to_numpy()
                           == first["reviewerID"])
                          & (ds.items["source_id"].iloc[ds.interactions["item_id"]].to_numpy()
                             == first["asin"])]
    assert row["rating"].tolist() == [1.0]  # the latest review of the pair
    steps = {s["step"]: s for s in ds.info["filters"]}
    assert steps["dedupe_latest"]["before"]["n_interactions"] == len(_reviews_2018())
    assert steps["dedupe_latest"]["after"]["n_interactions"] == len(_reviews_2018()) - 1


def test_min_rating_kcore_and_metadata_literals(tmp_path):
    reviews = _write(tmp_path / "r.json", _reviews_2018(n_users=30, n_items=12, seed=1))
    meta = _write(tmp_path / "meta.json", [
        repr({"asin": f"A{i}", "title": f"Item {i}", "description": [f"Desc {i}"],
              "imageURLHighRes": [f"https://img/{i}.jpg"], "brand": "B",
              "also_buy": [f"A{(i + 1) % 12}"]}) for i in range(12)] + ["{'asin': 'ZZZ'}"])
    ds = load_amazon(AmazonSource(format="amazon2018", reviews=reviews, metadata=meta,
                                  min_rating=3, kcore=3, split="loo"), show_progress=False)
    assert (ds.interactions["rating"] >= 3).all()
    assert ds.interactions.groupby("user_id").size().min() >= 3
    assert ds.interactions.groupby("item_id").size().min() >= 3
    # the metadata-only product ZZZ (never reviewed) stays in the catalog as a cold item
    assert ds.items["source_id"].iloc[-1] == "ZZZ"
    assert ds.n_items - 1 not in set(ds.interactions["item_id"])
    assert ds.counts()["n_items_without_interactions"] >= 1
    reviewed = ds.items[ds.items["source_id"] != "ZZZ"]
    titles = dict(zip(reviewed["source_id"], reviewed["title"]))
    assert all(titles[sid] == f"Item {sid[1:]}" for sid in titles)
    assert reviewed["image_url"].str.startswith("https://img/").all()
    assert reviewed["text"].str.startswith("Desc").all()
    steps = [s["step"] for s in ds.info["filters"]]
    assert steps == ["dedupe_latest", "min_rating", "kcore", "split"]
    # loo: each user's test row is their latest
    inter = ds.interactions
    latest = inter.loc[inter.groupby("user_id")["timestamp"].idxmax(), "split"]
    assert (latest == "test").all()


def test_2023_joins_on_parent_asin_and_takes_the_main_image(tmp_path):
    lines = []
    for u in range(8):
        for i in range(4):
            lines.append(json.dumps({"user_id": f"U{u}", "asin": f"V{i}x{u}",
                                     "parent_asin": f"P{i}", "rating": 5.0,
                                     "timestamp": 1_600_000_000_000 + 1000 * (i * 8 + u)}))
    reviews = _write(tmp_path / "Beauty.jsonl.gz", lines, gz=True)
    meta = _write(tmp_path / "meta_Beauty.jsonl", [json.dumps({
        "parent_asin": f"P{i}", "title": f"Cream {i}", "features": ["Soft"],
        "description": [], "store": "Shop", "categories": ["Beauty", "Skin"],
        "images": [{"thumb": "t", "large": f"https://l/{i}", "hi_res": None, "variant": "PT01"},
                   {"thumb": "t", "large": f"https://m/{i}", "hi_res": f"https://h/{i}",
                    "variant": "MAIN"}]}) for i in range(4)])
    wd = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "prepare", "--format", "amazon2023", "--reviews", str(reviews), "--metadata", str(meta),
        "--workdir", str(wd), "--kcore", "3", "--split", "temporal", "--no-progress"])
    assert result.exit_code == 0, result.output
    ds = Dataset.load(Workdir(wd))
    assert sorted(ds.items["source_id"]) == ["P0", "P1", "P2", "P3"]
    assert set(ds.items["image_url"]) == {f"https://h/{i}" for i in range(4)}
    assert set(ds.items["brand"]) == {"Shop"} and set(ds.items["category"]) == {"Beauty > Skin"}
    # timestamps are seconds; the temporal cut puts the latest rows in test
    inter = ds.interactions
    assert inter["timestamp"].max() < 2_000_000_000
    assert inter.loc[inter["split"] == "test", "timestamp"].min() > \
        inter.loc[inter["split"] == "train", "timestamp"].max()
    assert "drop_eval_without_train" in result.output


def test_bad_lines_are_named(tmp_path):
    lines = _reviews_2018()
    lines.insert(3, '{"reviewerID": "R1", "asin": ')
    with pytest.raises(DataError, match=r"r.json:4: neither JSON nor a Python literal"):
        read_reviews(_write(tmp_path / "r.json", lines), "amazon2018")
    lines = _reviews_2018()
    lines[5] = json.dumps({"asin": "A1", "overall": 5})
    with pytest.raises(DataError, match=r"r2.json:6: review has no 'reviewerID'"):
        read_reviews(_write(tmp_path / "r2.json", lines), "amazon2018")
    with pytest.raises(DataError, match=r"r3.json:1: expected an object, got list"):
        read_reviews(_write(tmp_path / "r3.json", ["[1, 2]"]), "amazon2018")


def test_truncated_gzip_is_reported(tmp_path):
    path = _write(tmp_path / "r.json.gz", _reviews_2018() * 20, gz=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"r.json.gz: cannot read past line \d+.*truncated"):
        read_reviews(path, "amazon2018")


def test_temporal_split_that_leaves_test_empty_says_why(tmp_path):
    # each user's reviews are contiguous in time: the last 10% belong to users with no
    # earlier review, so their rows cannot be evaluated
    lines = [json.dumps({"user_id": f"U{u}", "parent_asin": f"P{i}", "rating": 5,
                         "timestamp": 1000 * (u * 4 + i)}) for u in range(8) for i in range(4)]
    with pytest.raises(DataError, match=r"temporal split left the 'test' split empty.*'loo'"):
        load_amazon(AmazonSource(format="amazon2023", reviews=_write(tmp_path / "r.json", lines),
                                 kcore=0, split="temporal"), False)


def test_missing_reviews_file(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nope.json"):
        load_amazon(AmazonSource(format="amazon2018", reviews=tmp_path / "nope.json"), False)
