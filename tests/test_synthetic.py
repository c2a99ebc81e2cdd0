"""The built-in demo catalog: deterministic, valid, and its tastes live in what images show."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lvlmrec.data.schema import SPLITS, Dataset
from lvlmrec.data.synthetic import (
    CATEGORY_NAMES,
    COLOURS,
    PATTERNS,
    describe_generative_model,
    draw_item,
    generate_synthetic,
)
from lvlmrec.workdir import Workdir

SMALL = {"n_items": 150, "n_users": 120, "image_size": 48, "show_progress": False}
PATTERN_WORDS = {"solid", "stripe", "stripes", "striped", "dot", "dots", "dotted", "polka",
                 "check", "checks", "checked", "plaid", "gingham", "zigzag", "chevron", "floral",
                 "flower", "flowers", "print", "printed", "pattern", "patterned"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ds = generate_synthetic(root / "dataset", seed=3, **SMALL)
    return root, ds


def _image_digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.png")}


def test_same_seed_same_catalog_and_image_bytes(small, tmp_path):
    root, ds = small
    again = generate_synthetic(tmp_path / "dataset", seed=3, **SMALL)
    pd.testing.assert_frame_equal(ds.items, again.items)
    pd.testing.assert_frame_equal(ds.interactions, again.interactions)
    first = _image_digests(root / "dataset" / "images")
    assert len(first) == SMALL["n_items"]
    assert _image_digests(tmp_path / "dataset" / "images") == first

    # Re-running over existing images (a resumed run) rewrites them identically, no leftovers.
    generate_synthetic(tmp_path / "dataset", seed=3, **SMALL)
    assert _image_digests(tmp_path / "dataset" / "images") == first
    assert sorted(p.suffix for p in (tmp_path / "dataset" / "images").iterdir()) == \
        [".png"] * SMALL["n_items"]


def test_different_seed_differs(small, tmp_path):
    root, ds = small
    other = generate_synthetic(tmp_path / "dataset", seed=4, **SMALL)
    assert not ds.items["title"].equals(other.items["title"])
    assert not ds.interactions[["user_id", "item_id"]].equals(
        other.interactions[["user_id", "item_id"]])
    assert _image_digests(tmp_path / "dataset" / "images") != \
        _image_digests(root / "dataset" / "images")


def test_schema_and_provenance(small, tmp_path):
    root, ds = small
    ds.validate()
    items = ds.items
    assert items["item_id"].tolist() == list(range(SMALL["n_items"]))
    assert items["source_id"].iloc[0] == "SYN000001"
    assert ds.users["source_id"].iloc[0] == "U00001"
    assert (items["text"] == "").all()
    assert set(items["category"]) <= set(CATEGORY_NAMES)
    assert set(items["colour"]) <= set(COLOURS)
    assert set(items["colour2"]) <= set(COLOURS) | {""}
    assert (items["colour"] != items["colour2"]).all()
    assert set(items["pattern"]) <= set(PATTERNS)
    assert (items["popularity"] > 0).all()
    assert items["image_path"].iloc[7] == "dataset/images/7.png"
    assert all((root / p).is_file() for p in items["image_path"])
    gen = ds.info["generator"]
    assert ds.info["format"] == "synthetic"
    assert (gen["n_items"], gen["n_users"], gen["seed"], gen["image_size"]) == (150, 120, 3, 48)
    assert ds.interactions.groupby("user_id").size().min() >= 5

    # The caller saves it; the tables survive the round trip.
    wd = Workdir(tmp_path)
    ds.save(wd)
    loaded = Dataset.load(wd)
    pd.testing.assert_frame_equal(loaded.items, ds.items, check_dtype=False)
    assert len(loaded.interactions) == len(ds.interactions)


def test_split_fractions_and_every_user_in_every_split(small):
    _, ds = small
    share = ds.interactions["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.05)
    assert share["valid"] == pytest.approx(0.2, abs=0.05)
    assert share["test"] == pytest.approx(0.2, abs=0.05)
    per_user = ds.interactions.groupby("user_id")["split"].agg(set)
    assert len(per_user) == SMALL["n_users"]
    assert all(s == set(SPLITS) for s in per_user)


def test_titles_name_colour_sometimes_and_pattern_never(small):
    _, ds = small
    colour_words = set(COLOURS)
    with_colour = 0
    for title, colour in zip(ds.items["title"], ds.items["colour"]):
        words = set(re.findall(r"[a-z]+", title.lower()))
        assert not words & PATTERN_WORDS, title
        # Only the primary colour may appear, never the second one.
        assert words & colour_words <= {colour}, title
        with_colour += colour in words
    assert 0.2 < with_colour / len(ds.items) < 0.6


def test_images_decode_with_requested_size_and_differ(small):
    root, ds = small
    digests = set()
    for path in ds.items["image_path"]:
        with Image.open(root / path) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == (48, 48)
            digests.add(hashlib.sha256(img.tobytes()).hexdigest())
    assert len(digests) == len(ds.items)


def test_patterns_are_visible_inside_the_silhouette():
    size = 64
    spread = {p: [] for p in PATTERNS}
    for seed in range(12):
        category = CATEGORY_NAMES[seed % len(CATEGORY_NAMES)]
        colour = ("red", "blue", "green", "beige")[seed % 4]
        # Same seed, same pose: a black and a white render differ exactly on the silhouette.
        dark = np.asarray(draw_item(category, "black", "", "solid", size, _rng(seed)), float)
        light = np.asarray(draw_item(category, "white", "", "solid", size, _rng(seed)), float)
        inside = np.abs(light - dark).mean(axis=2) > 120
        assert inside.mean() > 0.1
        for pattern in PATTERNS:
            img = np.asarray(draw_item(category, colour, "", pattern, size, _rng(seed)), float)
            spread[pattern].append(img.mean(axis=2)[inside].std())
    solid = np.mean(spread["solid"])
    for pattern in PATTERNS[1:]:
        assert np.mean(spread[pattern]) > 2 * solid, (pattern, spread[pattern], solid)


def _rng(seed):
    return np.random.default_rng(seed)


def test_tastes_are_learnable_from_attributes(tmp_path):
    ds = generate_synthetic(tmp_path, n_items=400, n_users=300, image_size=32, seed=0,
                            show_progress=False)
    items = ds.items
    train = ds.matrix("train").toarray()
    test = ds.matrix("test").toarray()

    def onehot(column, values):
        out = np.zeros((len(items), len(values)))
        out[np.arange(len(items)), items[column].map(values.index).to_numpy()] = 1
        return out

    def recall_at_10(scores):
        scores = np.where(train > 0, -np.inf, scores)
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        return float((np.take_along_axis(test, top, 1).sum(1) / test.sum(1)).mean())

    def mean_profile(features):
        f = features / np.linalg.norm(features, axis=1, keepdims=True)
        profile = train @ f
        profile /= np.linalg.norm(profile, axis=1, keepdims=True)
        # A tiny random tie-break: one-hot items with equal attributes score equal.
        return profile @ f.T + 1e-6 * np.random.default_rng(0).random(train.shape)

    category = onehot("category", CATEGORY_NAMES)
    colour = onehot("colour", COLOURS)
    pattern = onehot("pattern", PATTERNS)
    random = recall_at_10(np.random.default_rng(1).random(train.shape))
    popular = recall_at_10(np.tile(train.sum(0), (len(train), 1))
                           + 1e-3 * np.random.default_rng(2).random(train.shape))
    cat_only = recall_at_10(mean_profile(category))
    full = recall_at_10(mean_profile(np.hstack([category, colour, pattern])))
    assert popular > 1.5 * random
    assert cat_only > random
    assert full > 3 * random
    assert full > cat_only + 0.05


def test_generative_model_paragraph():
    text = describe_generative_model()
    for word in ("Dirichlet", "pattern", "title", "60/20/20"):
        assert word in text
    assert "\n\n" not in text


def test_rejects_too_few_interactions(tmp_path):
    with pytest.raises(ValueError, match="min_interactions"):
        generate_synthetic(tmp_path, n_items=30, n_users=10, min_interactions=2,
                           show_progress=False)


def test_user_blocks_draw_what_one_array_would(monkeypatch):
    """The study-sized catalog draws its interactions in blocks of users (memory); block
    size changes nothing, and the demo's interactions are those drawn before blocks
    existed (pinned)."""
    from lvlmrec.data import synthetic

    def tables(block: int) -> pd.DataFrame:
        monkeypatch.setattr(synthetic, "_USER_BLOCK", block)
        return synthetic.synthetic_tables(300, 250, seed=5)[1]

    whole = tables(10_000)
    for block in (1, 7, 64):
        pd.testing.assert_frame_equal(tables(block), whole)
    demo = synthetic.synthetic_tables(2000, 1500, seed=0)[1]
    digest = hashlib.sha256(demo[["user_id", "item_id"]].to_numpy().tobytes()).hexdigest()
    assert digest[:16] == DEMO_INTERACTIONS


#: sha256 of the demo catalog's (user_id, item_id) pairs as drawn from one (users, items) array
DEMO_INTERACTIONS = "7736044001605a2b"
