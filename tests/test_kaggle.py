"""The study's Kaggle archive: exact schema, features as sources, metadata, and every error."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import KaggleSource
from lvlmrec.data.kaggle import load_kaggle, random_archive, write_archive
from lvlmrec.data.prepare import prepare_dataset
from lvlmrec.encode.store import load_source
from lvlmrec.errors import DataError
from lvlmrec.workdir import Workdir

N_USERS, N_ITEMS = 6, 8
ASINS = [f"B00000{i:04d}" for i in range(N_ITEMS)]


def _archive(tmp_path, name="Clothing-clip_clip", **changes):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS, 5, replace=False)
        rows += [(u, items[0], "train"), (u, items[1], "train"), (u, items[2], "train"),
                 (u, items[3], "valid"), (u, items[4], "test")]
    inter = pd.DataFrame(rows, columns=["user", "item", "split"])
    image = rng.standard_normal((N_ITEMS, 4))
    image[3] = 0.0  # a missing feature
    text = rng.standard_normal((N_ITEMS, 3))
    folder = write_archive(tmp_path / name, [f"A{u}REVIEWER" for u in range(N_USERS)], ASINS,
                           inter, {"image": image, "text": text})
    return folder, inter, image, text


def test_loads_the_exact_schema(tmp_path):
    folder, inter, image, text = _archive(tmp_path)
    ds = load_kaggle(KaggleSource(source=folder), show_progress=False)
    assert ds.n_users == N_USERS and ds.n_items == N_ITEMS
    assert ds.items["source_id"].tolist() == ASINS
    assert ds.users["source_id"].tolist() == [f"A{u}REVIEWER" for u in range(N_USERS)]
    got = ds.interactions.sort_values(["user_id", "item_id"], ignore_index=True)
    want = inter.rename(columns={"user": "user_id", "item": "item_id"}).sort_values(
        ["user_id", "item_id"], ignore_index=True)
    pd.testing.assert_frame_equal(got[["user_id", "item_id", "split"]], want,
                                  check_dtype=False)
    assert set(ds.features) == {"image_clip", "text_clip"}
    assert ds.features["image_clip"].dtype == np.float32
    np.testing.assert_allclose(ds.features["image_clip"], image, rtol=1e-6)
    assert ds.feature_info["image_clip"]["n_missing"] == 1
    assert ds.info["dataset"] == "Clothing" and ds.info["image_encoder"] == "clip"


def test_none_encoders_are_skipped_and_odd_folder_names_still_load(tmp_path):
    folder, *_ = _archive(tmp_path, name="Clothing-none_bert")
    (folder / "embed_image.npy").unlink()  # not needed for a `none` encoder
    assert set(load_kaggle(KaggleSource(source=folder), False).features) == {"text_bert"}
    folder, *_ = _archive(tmp_path, name="my_copy")
    assert set(load_kaggle(KaggleSource(source=folder), False).features) == {"image", "text"}


def test_prepare_cli_makes_features_usable_as_sources(tmp_path):
    folder, _, image, _ = _archive(tmp_path)
    wd = tmp_path / "run"
    result = CliRunner().invoke(app, ["prepare", "--format", "kaggle", "--source", str(folder),
                                      "--workdir", str(wd), "--no-progress"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(load_source(Workdir(wd), "dataset:image_clip"), image, rtol=1e-6)
    assert load_source(Workdir(wd), "dataset:text_clip").shape == (N_ITEMS, 3)
    meta = json.loads(Workdir(wd).dataset_json.read_text())
    assert meta["format"] == "kaggle" and str(folder) in meta["inputs"]
    assert meta["counts"]["n_users"] == N_USERS
    assert meta["features"]["image_clip"]["n_missing"] == 1


def test_metadata_join_and_image_folder(tmp_path):
    folder, *_ = _archive(tmp_path)
    meta = tmp_path / "meta_Clothing.json.gz"
    lines = [
        # strict JSON
        json.dumps({"asin": ASINS[0], "title": "Red &amp; Blue Dress",
                    "description": ["<b>Soft</b> cotton", "Machine wash"],
                    "feature": ["Pockets"], "imageURL": ["http://x/small.jpg"],
                    "imageURLHighRes": ["http://x/big.jpg"], "brand": "Acme",
                    "category": ["Clothing", "Women", "Dresses"]}),
        # a Python literal, as in the old dumps
        repr({"asin": ASINS[1], "title": "Boot", "imageURL": ["http://x/boot.jpg"],
              "also_buy": [ASINS[2]]}),
        "",
        json.dumps({"asin": "NOT_IN_ARCHIVE", "title": "other"}),
        json.dumps({"asin": ASINS[0], "title": "duplicate record: first wins"}),
    ]
    with gzip.open(meta, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (4, 4)).save(images / "2.jpg")  # by item id
    Image.new("RGB", (4, 4)).save(images / f"{ASINS[5]}.PNG")  # by ASIN, any case
    ds = load_kaggle(KaggleSource(source=folder, metadata=meta, images=images), False)
    first = ds.items.iloc[0]
    assert first["title"] == "Red & Blue Dress"
    assert first["text"] == "Soft cotton Machine wash Pockets"
    assert first["image_url"] == "http://x/big.jpg"
    assert first["brand"] == "Acme" and first["category"] == "Clothing > Women > Dresses"
    assert ds.items.iloc[1]["image_url"] == "http://x/boot.jpg"
    assert ds.items.iloc[3]["title"] == ""
    assert ds.info["metadata"] == {"n_items_matched": 2, "n_items_without_metadata": 6}
    linked = ds.items["image_path"]
    assert linked.iloc[2].endswith("2.jpg") and linked.iloc[5].endswith(f"{ASINS[5]}.PNG")
    assert (linked.drop([2, 5]) == "").all()


# --------------------------------------------------------------------------- errors
def _rewrite(path, transform):
    path.write_text(transform(path.read_text()))


def _lines(path):
    return path.read_text().splitlines()


ERRORS = {
    "missing file": (lambda f: (f / "validation.txt").unlink(),
                     r"missing file: .*validation.txt"),
    "bad header": (lambda f: _rewrite(f / "train.txt", lambda t: t.replace("user,item", "u,i")),
                   r"train.txt:1: bad header 'u,i'; expected 'user,item'"),
    "bad users header": (lambda f: _rewrite(f / "users.txt", lambda t: "id,user" + t[2:]),
                         r"users.txt:1: bad header"),
    "not an integer": (lambda f: _rewrite(f / "test.txt", lambda t: t.replace("\n", "\n1,x\n", 1)),
                       r"test.txt:2: item 'x' is not a non-negative integer"),
    "item out of range": (lambda f: _rewrite(f / "train.txt",
                                             lambda t: t.replace("\n", "\n0,99\n", 1)),
                          r"train.txt:2: item 99 is out of range: items.txt lists 8 ids"),
    "user out of range": (lambda f: _rewrite(f / "validation.txt",
                                             lambda t: t + "6,0\n"),
                          r"validation.txt:\d+: user 6 is out of range: users.txt lists 6"),
    "duplicate across files": (
        lambda f: _rewrite(f / "test.txt", lambda t: t + _lines(f / "train.txt")[1] + "\n"),
        r"duplicate interaction \(user \d+, item \d+\) at train.txt:2 and test.txt:\d+"),
    "duplicate within a file": (
        lambda f: _rewrite(f / "train.txt", lambda t: t + _lines(f / "train.txt")[3] + "\n"),
        r"duplicate interaction .* at train.txt:4 and train.txt:\d+"),
    "empty split": (lambda f: (f / "test.txt").write_text("user,item\n"),
                    r"test.txt: no interactions \(the 'test' split is empty\)"),
    "user without training history": (
        lambda f: _rewrite(f / "train.txt", lambda t: "\n".join(
            line for line in t.splitlines() if not line.startswith("2,")) + "\n"),
        r"(validation|test).txt:\d+: user 2 \(A2REVIEWER\) has no interactions in train.txt; "
        r"1 users"),
    "items.txt and features disagree": (
        lambda f: np.save(f / "embed_text.npy", np.zeros((7, 3))),
        r"embed_text.npy: 7 rows but items.txt lists 8 items"),
    "truncated features": (
        lambda f: _rewrite_bytes(f / "embed_image.npy", lambda b: b[:-40]),
        r"embed_image.npy: data ends at row 6 of 8; is the file truncated"),
    "not a npy": (lambda f: (f / "embed_image.npy").write_bytes(b"hello"),
                  r"embed_image.npy: not a .npy array file"),
    "nan feature": (lambda f: np.save(f / "embed_image.npy", np.where(
        np.arange(8)[:, None] == 4, np.nan, np.ones((8, 4)))),
                    r"embed_image.npy: row 4 \(item 4\) has NaN"),
    "duplicate item id": (lambda f: _rewrite(f / "items.txt", lambda t: t.replace(
        f"{ASINS[3]},3", f"{ASINS[3]},2")), r"items.txt: id 2 appears twice \(lines 4 and 5\)"),
    "item id gap": (lambda f: _rewrite(f / "items.txt", lambda t: t.replace(
        f"{ASINS[7]},7", f"{ASINS[7]},9")), r"items.txt:9: id 9 is out of range: 8 rows"),
    "duplicate ASIN": (lambda f: _rewrite(f / "items.txt", lambda t: t.replace(
        ASINS[4], ASINS[1])), r"items.txt: ASIN 'B000000001' appears twice \(lines 3 and 6\)"),
}


def _rewrite_bytes(path, transform):
    path.write_bytes(transform(path.read_bytes()))


@pytest.mark.parametrize("case", list(ERRORS))
def test_validation_errors_name_file_and_line(tmp_path, case):
    folder, *_ = _archive(tmp_path)
    damage, message = ERRORS[case]
    damage(folder)
    wd = Workdir(tmp_path / "run")
    with pytest.raises(DataError, match=message):
        prepare_dataset(KaggleSource(source=folder), wd, show_progress=False)
    assert not wd.dataset_dir.exists()  # nothing half-written


def test_cli_error_exits_nonzero_with_the_message(tmp_path):
    folder, *_ = _archive(tmp_path)
    (folder / "items.txt").unlink()
    result = CliRunner().invoke(app, ["prepare", "--format", "kaggle", "--source", str(folder),
                                      "--workdir", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError) and "items.txt" in str(result.exception)


def test_random_archive_has_the_study_shape(tmp_path):
    folder = random_archive(tmp_path / "X-vit_bert", 50, 80, 600, dim=6)
    ds = load_kaggle(KaggleSource(source=folder), False)
    assert ds.n_users == 50 and ds.n_items == 80 and set(ds.features) == {"image_vit",
                                                                           "text_bert"}
    assert 400 < len(ds.interactions) <= 600  # repeats of popular items are dropped
    assert (ds.interactions.groupby("user_id")["split"].nunique() == 3).all()
