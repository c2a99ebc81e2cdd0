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


def test_content_hasher_memo_never_hides_a_change(tmp_path):
    import os
    import time

    from lvlmrec.workdir import ContentHasher, file_digest

    wd = Workdir(tmp_path)
    f = tmp_path / "img" / "a.bin"
    f.parent.mkdir()
    f.write_bytes(b"x" * 100)
    old = time.time() - 60
    os.utime(f, (old, old))
    time.sleep(2.1)  # a file changed in the last 2 s is not memoised (racy)
    hasher = ContentHasher(wd)
    first = hasher.tree(tmp_path / "img")
    hasher.save()
    assert (tmp_path / ".lvlmrec" / "hashes.json").is_file()
    # same size, mtime put back: the ctime still changed, so the bytes are read again
    f.write_bytes(b"y" * 100)
    os.utime(f, (old, old))
    again = ContentHasher(wd)
    assert again.file(f) == file_digest(f)
    assert again.tree(tmp_path / "img") != first
    # a copy (new inode, new times) hashes to the same digest
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "a.bin").write_bytes(f.read_bytes())
    assert again.tree(copy) == again.tree(tmp_path / "img")
