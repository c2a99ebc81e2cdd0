"""The describe loop with scripted describers: resume, failures, retries, ordering."""

import numpy as np
import pytest
from PIL import Image

from lvlmrec.describe.base import DescribeItem, Describer, describe_items, order_items
from lvlmrec.describe.store import DescriptionStore


class Scripted(Describer):
    """Texts 'item <title>'; raises for titles in `fail_batch` (whole batch) and returns
    an error for titles in `fail_item`."""

    backend = "scripted"

    def __init__(self, fail_batch=(), fail_item=(), empty=()):
        self.fail_batch, self.fail_item, self.empty = set(fail_batch), set(fail_item), set(empty)
        self.calls: list[list[str]] = []
        self.loads = 0

    @property
    def model_id(self):
        return "scripted-v1"

    def load(self):
        self.loads += 1

    def describe(self, images, titles):
        self.calls.append(list(titles))
        if self.fail_batch & set(titles):
            raise RuntimeError("CUDA out of memory (scripted)")
        return [ValueError(f"server said no to {t}") if t in self.fail_item else
                "" if t in self.empty else f"item {t}" for t in titles]


@pytest.fixture
def catalog(tmp_path):
    items = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (16, 16), (20 * i, 0, 0)).save(path)
        items.append(DescribeItem(i, path, str(i)))
    return items


def _run(describer, store, items, batch_size=4):
    return describe_items(describer, store, items, batch_size=batch_size, show_progress=False)


def test_describes_every_item_in_batches_and_commits(tmp_path, catalog):
    d = Scripted()
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        s = _run(d, store, catalog)
        assert store.texts(d.model_id, d.prompt_hash) == {i: f"item {i}" for i in range(10)}
    assert [len(c) for c in d.calls] == [4, 4, 2]
    assert (s.n_described, s.n_failed, s.n_covered, s.n_items) == (10, 0, 10, 10)
    assert "coverage 10/10 (100.0%)" in s.line() and "items/s" in s.line()
    assert "0 failed" in s.line()


def test_second_run_asks_for_nothing(tmp_path, catalog):
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        _run(Scripted(), store, catalog)
        again = Scripted()
        s = _run(again, store, catalog)
    assert again.calls == [] and again.loads == 0
    assert (s.n_described, s.n_done_before) == (0, 10)


def test_failed_batch_is_retried_item_by_item(tmp_path, catalog):
    d = Scripted(fail_batch={"5"})
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        s = _run(d, store, catalog)
        texts = store.texts(d.model_id, d.prompt_hash)
        errors = store.errors(d.model_id, d.prompt_hash)
    assert set(texts) == set(range(10)) - {5}
    assert list(errors) == [5] and "CUDA out of memory" in errors[5]
    assert ["4", "5", "6", "7"] in d.calls and ["4"] in d.calls and ["7"] in d.calls
    assert s.n_failed == 1 and s.failures[5].startswith("RuntimeError")


def test_item_errors_are_recorded_without_retrying_the_batch(tmp_path, catalog):
    d = Scripted(fail_item={"2"}, empty={"3"})
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        s = _run(d, store, catalog)
        errors = store.errors(d.model_id, d.prompt_hash)
    assert len(d.calls) == 3  # no batch was split
    assert "server said no to 2" in errors[2] and "empty text" in errors[3]
    assert s.n_failed == 2 and s.n_described == 8


def test_missing_and_corrupt_images_do_not_stop_the_run(tmp_path, catalog):
    catalog[1].image_path.unlink()
    catalog[6].image_path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    catalog[8] = DescribeItem(8, None, "8")
    d = Scripted()
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        s = _run(d, store, catalog)
        errors = store.errors(d.model_id, d.prompt_hash)
    assert sorted(errors) == [1, 6, 8]
    assert "image not found" in errors[1] and "1.png" in errors[1]
    assert "cannot read image" in errors[6] and "6.png" in errors[6]
    assert errors[8] == "item has no image"
    assert s.n_described == 7
    assert all(t not in {"1", "6", "8"} for call in d.calls for t in call)


def test_errors_are_retried_next_run_in_batches_of_their_own(tmp_path, catalog):
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        _run(Scripted(fail_item={"1", "6"}), store, catalog)
        fixed = Scripted()
        s = _run(fixed, store, catalog + [DescribeItem(10, catalog[0].image_path, "10")])
        assert not store.errors(fixed.model_id, fixed.prompt_hash)
        assert len(store.texts(fixed.model_id, fixed.prompt_hash)) == 11
    assert fixed.calls == [["10"], ["1", "6"]]  # fresh items first, then the retries
    assert (s.n_described, s.n_done_before, s.n_failed) == (3, 8, 0)


def test_finished_rows_are_never_rewritten(tmp_path, catalog):
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        _run(Scripted(fail_item={"9"}), store, catalog)
        before = dict(store._conn.execute("SELECT item_id, created FROM descriptions"))
        _run(Scripted(), store, catalog)
        after = dict(store._conn.execute("SELECT item_id, created FROM descriptions"))
    assert all(after[i] == before[i] for i in range(9)) and after[9] > before[9]


def test_prompt_settings_are_part_of_the_key(tmp_path, catalog):
    class Other(Scripted):
        def settings(self):
            return {"prompt": "something else"}

    with DescriptionStore(tmp_path / "d.sqlite") as store:
        a, b = Scripted(), Other()
        _run(a, store, catalog)
        _run(b, store, catalog)
        assert a.prompt_hash != b.prompt_hash and len(b.calls) == 3
        assert sorted(n for _, _, n in store.keys()) == [10, 10]
        (template, settings), = store._conn.execute(
            "SELECT template, settings FROM prompts WHERE prompt_hash=?", (b.prompt_hash,))
        assert "something else" in settings


def test_order_items_popularity_random_and_max_items():
    items = [DescribeItem(i, None, str(i)) for i in range(6)]
    pop = np.array([1, 9, 3, 9, 0, 5])
    assert [it.item_id for it in order_items(items, "popularity", pop)] == [1, 3, 5, 2, 0, 4]
    assert [it.item_id for it in order_items(items, "popularity", pop, max_items=2)] == [1, 3]
    r1 = [it.item_id for it in order_items(items, "random", seed=3)]
    assert r1 == [it.item_id for it in order_items(items, "random", seed=3)]
    assert sorted(r1) == list(range(6)) and r1 != [it.item_id for it in
                                                   order_items(items, "random", seed=4)]
    with pytest.raises(ValueError, match="unknown order"):
        order_items(items, "newest")


def test_images_load_a_few_batches_ahead_not_the_whole_catalog(tmp_path, catalog, monkeypatch):
    from lvlmrec.describe import base

    loads = []
    real = base.load_item_image
    monkeypatch.setattr(base, "load_item_image", lambda it: loads.append(it.item_id) or real(it))

    class Counting(Scripted):
        def describe(self, images, titles):
            self.loaded_at_call = getattr(self, "loaded_at_call", None) or len(loads)
            return super().describe(images, titles)

    d = Counting()
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        _run(d, store, catalog * 3, batch_size=2)  # 15 batches (ids repeat; fine here)
    assert d.loaded_at_call <= 6  # this batch and two ahead
    assert len(loads) == 30


def test_items_without_an_image_are_not_scheduled_or_failed(tmp_path):
    """An item the data gives no image has nothing to describe: no error row, so the
    describe stage can be complete and a later run does not retry it (a missing file is
    still an error, above)."""
    from types import SimpleNamespace

    import pandas as pd

    from lvlmrec.describe.run import catalog_items

    ds = SimpleNamespace(items=pd.DataFrame({"title": ["a", "b", "c"]}),
                         image_paths=lambda wd: [tmp_path / "0.png", None, tmp_path / "2.png"])
    assert [(it.item_id, it.title) for it in catalog_items(ds, None)] == [(0, "a"), (2, "c")]
