import os

import numpy as np
import pytest

from lvlmrec.workdir import StageBook, Workdir, atomic_path, hash_obj, save_npy, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_hash_obj_is_order_independent_for_dicts():
    assert hash_obj({"a": 1, "b": [1, 2]}) == hash_obj({"b": [1, 2], "a": 1})
    assert hash_obj({"a": 1}) != hash_obj({"a": 2})


def test_stage_book_detects_changed_outputs(tmp_path):
    wd = Workdir(tmp_path)
    book = StageBook(wd)
    out = tmp_path / "results" / "x.npy"
    save_npy(out, np.arange(3))
    book.finish("evaluate", "k1", [out], 1.0)
    assert book.is_current("evaluate", "k1")
    assert not book.is_current("evaluate", "k2")
    save_npy(out, np.arange(4))
    assert not book.is_current("evaluate", "k1")
    book.finish("evaluate", "k1", [out], 1.0)
    out.unlink()
    assert not book.is_current("evaluate", "k1")


def test_stage_digest_follows_content_not_time(tmp_path):
    wd = Workdir(tmp_path)
    book = StageBook(wd)
    out = tmp_path / "f.json"
    write_json(out, {"a": 1})
    d1 = book.finish("s", "k", [out], 0.1).digest
    write_json(out, {"a": 1})
    d2 = book.finish("s", "k", [out], 0.1).digest
    write_json(out, {"a": 2})
    d3 = book.finish("s", "k", [out], 0.1).digest
    assert d1 == d2 != d3
