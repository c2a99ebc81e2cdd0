"""Text and image encoders with the bundled offline models, and the image loader."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lvlmrec.device import resolve_device, set_cpu_threads
from lvlmrec.encode.image import ImageEncoder, imagenet_labels, letterbox
from lvlmrec.encode.text import TextEncoder
from lvlmrec.errors import ConfigError, DataError, LvlmrecError
from lvlmrec.imageio import load_image


@pytest.fixture(scope="module")
def text_encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        enc = TextEncoder(device="cpu")
        enc.encode(["warm up"], show_progress_bar=False)  # loads the model offline
        yield enc


@pytest.fixture(scope="module")
def image_encoder():
    return ImageEncoder(device="cpu", batch_size=4)


def _product(colour, size=(128, 128), stripes=None):
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle((w // 5, h // 6, 4 * w // 5, 5 * h // 6), fill=colour)
    if stripes:
        for y in range(h // 6, 5 * h // 6, 12):
            d.rectangle((w // 5, y, 4 * w // 5, y + 5), fill=stripes)
    return img


# --------------------------------------------------------------------------- device
def test_resolve_device():
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_set_cpu_threads_restores():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_cpu_threads() >= 1
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- text
def test_text_shape_normalised_offline(text_encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["a red shirt", "blue jeans", "a leather wallet"]
    emb = text_encoder.encode(texts, show_progress_bar=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert text_encoder.dim == 384
    assert text_encoder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert TextEncoder("sentence-transformers/all-MiniLM-L6-v2").model_id == text_encoder.model_id


def test_text_similar_sentences_are_closer(text_encoder):
    a, b, c = text_encoder.encode(
        [
            "A red cotton t-shirt with short sleeves.",
            "Short-sleeved crimson tee made of cotton.",
            "A stainless steel chef's knife for the kitchen.",
        ],
        show_progress_bar=False,
    )
    assert a @ b > a @ c + 0.2


def test_text_empty_is_zero_row(text_encoder):
    emb = text_encoder.encode(["", "   ", None, "a hat"], show_progress_bar=False)
    assert not emb[:3].any()
    assert np.linalg.norm(emb[3]) == pytest.approx(1.0, abs=1e-5)
    assert text_encoder.encode([], show_progress_bar=False).shape == (0, 384)


def test_text_deterministic_across_batch_sizes(text_encoder):
    colours = ["red", "green", "blue"] * 5
    texts = [f"product number {i} in a {c} colour" for i, c in enumerate(colours)]
    a = text_encoder.encode(texts, show_progress_bar=False)
    b = text_encoder.encode(texts, batch_size=4, show_progress_bar=False)
    np.testing.assert_array_equal(a, text_encoder.encode(texts, show_progress_bar=False))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_text_repeats_encoded_once_and_copied(text_encoder, monkeypatch):
    texts = ["a red shirt", "a blue shoe", "a red shirt", "", "a red shirt"]
    seen = []
    real = text_encoder._load().encode
    monkeypatch.setattr(text_encoder._load(), "encode",
                        lambda sentences, **kw: (seen.append(list(sentences)),
                                                 real(sentences, **kw))[1])
    out = text_encoder.encode(texts, show_progress_bar=False)
    assert seen == [["a red shirt", "a blue shoe"]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[4])
    assert not out[3].any() and out[1].any()


def test_text_default_order_is_sentence_transformers_own(text_encoder):
    """The default (`characters`) order gives the embeddings of earlier versions, bit for
    bit: sentence-transformers' encode at 128 texts a batch."""
    texts = [f"a {c} shirt with {n} buttons and a collar" * (n % 3 + 1)
             for n, c in enumerate(["red", "green", "blue", "black"] * 40)]
    st = text_encoder._load()
    expected = st.encode(texts, batch_size=128, show_progress_bar=False,
                         normalize_embeddings=True)
    assert text_encoder.batch_size == 128
    np.testing.assert_array_equal(text_encoder.encode(texts, show_progress_bar=False), expected)
    with pytest.raises(LvlmrecError, match="order"):
        TextEncoder(order="random")


def test_text_token_order_batches_like_lengths(text_encoder, monkeypatch):
    """In `tokens` order batches are cut from the texts sorted by token count, longest
    first, not by characters: "ok" * 9 is long in characters and short in tokens."""
    tokens_order = TextEncoder(device="cpu", order="tokens")
    assert tokens_order.batch_size == 64
    tokens_order._st = text_encoder._load()
    texts = ["a red shirt", "okokokokokokokokok", "a long blue cotton shirt with white stripes",
             "a hat", "a pair of black leather boots", "okokokokokokokokok now"]
    alone = np.stack([text_encoder.encode([t], show_progress_bar=False)[0] for t in texts])
    tokenizer = text_encoder._load().tokenizer
    tokens = {t: len(tokenizer(t)["input_ids"]) for t in texts}
    batches = []
    real = text_encoder._load().encode
    monkeypatch.setattr(text_encoder._load(), "encode",
                        lambda sentences, **kw: (batches.append(list(sentences)),
                                                 real(sentences, **kw))[1])
    out = tokens_order.encode(texts, batch_size=2, show_progress_bar=False)
    assert [len(b) for b in batches] == [2, 2, 2]
    order = [tokens[t] for b in batches for t in b]
    assert order == sorted(tokens.values(), reverse=True)
    np.testing.assert_allclose(out, alone, atol=1e-5)


def test_text_bfloat16_is_close_to_float32(text_encoder):
    texts = ["a red striped cotton shirt", "black leather boots", "a small blue handbag"]
    fp32 = text_encoder.encode(texts, show_progress_bar=False)
    bf16 = TextEncoder(device="cpu", precision="bfloat16").encode(texts, show_progress_bar=False)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    assert (bf16 * fp32).sum(1).min() > 0.999
    with pytest.raises(LvlmrecError, match="precision"):
        TextEncoder(precision="float16")


def test_text_unknown_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LvlmrecError, match="no-such-model"):
        TextEncoder("nobody/no-such-model", device="cpu").encode(["x"], show_progress_bar=False)


# --------------------------------------------------------------------------- images
def test_load_image_converts_and_names_bad_files(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "t.png")
    img = load_image(tmp_path / "t.png")
    assert img.mode == "RGB" and img.size == (20, 10)
    assert img.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white, not red/black
    assert img.getpixel((0, 0)) == (0, 0, 255)

    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg" * 20)
    _product("red").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    for name in ("garbage.jpg", "trunc.png", "missing.png"):
        with pytest.raises(DataError, match=name):
            load_image(tmp_path / name)


def test_letterbox_keeps_the_whole_product():
    tall = Image.new("RGB", (50, 100), (250, 250, 250))
    ImageDraw.Draw(tall).rectangle((10, 10, 40, 90), fill=(200, 0, 0))
    out = letterbox(tall, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert tuple(out[32, 2]) == (250, 250, 250)  # padded with the border colour
    red = (out[..., 0] > 150) & (out[..., 1] < 60)
    rows, cols = np.nonzero(red)
    assert rows.min() <= 8 and rows.max() >= 56  # not cropped: 10..90 of 100 px -> 6..58
    assert abs(cols.mean() - 31.5) < 1  # centred


def test_image_encode_shape_and_determinism(image_encoder, tmp_path):
    imgs = [_product("red"), _product("navy", stripes="white"), _product("green", size=(96, 160))]
    imgs[1].save(tmp_path / "stripes.png")
    feats = image_encoder.encode(imgs, show_progress_bar=False)
    assert feats.shape == (3, 1280) and feats.dtype == np.float32
    assert np.all(np.linalg.norm(feats, axis=1) > 0)
    assert image_encoder.last_failures == {}
    np.testing.assert_array_equal(feats, image_encoder.encode(imgs, show_progress_bar=False))
    # a path gives the same pixels, hence the same features, as the decoded image
    from_path = image_encoder.encode([tmp_path / "stripes.png"], show_progress_bar=False)
    np.testing.assert_allclose(from_path[0], feats[1], atol=1e-5)
    # batching (and the threaded prefetch) does not change a single bit of the results
    for batch_size in (5, 32, None):
        other = ImageEncoder(device="cpu", batch_size=batch_size)
        np.testing.assert_array_equal(other.encode(imgs, show_progress_bar=False), feats)
    assert image_encoder.dim == 1280 and image_encoder.model_id == "efficientnet-lite0@224"


def test_image_failures_give_zero_rows(image_encoder, tmp_path):
    (tmp_path / "garbage.jpg").write_bytes(b"garbage" * 100)
    _product("red").save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    inputs = [tmp_path / "ok.png", None, tmp_path / "garbage.jpg", tmp_path / "trunc.png",
              tmp_path / "missing.jpg", _product("blue")]
    out = image_encoder.encode_and_classify(inputs, show_progress_bar=False)
    assert sorted(out.failures) == [1, 2, 3, 4]
    assert image_encoder.last_failures == out.failures
    assert "garbage.jpg" in out.failures[2] and "trunc.png" in out.failures[3]
    assert not out.features[[1, 2, 3, 4]].any() and not out.probs[[1, 2, 3, 4]].any()
    assert np.linalg.norm(out.features[[0, 5]], axis=1).min() > 0
    np.testing.assert_allclose(out.probs[[0, 5]].sum(1), 1.0, atol=1e-4)
    labels = out.top_labels(3)
    assert [len(x) for x in labels] == [3, 0, 0, 0, 0, 3]
    assert image_encoder.encode([], show_progress_bar=False).shape == (0, 1280)


def test_classify_returns_real_labels(image_encoder):
    imgs = [_product("red"), _product("navy", stripes="white")]
    top = image_encoder.classify(imgs, top_k=5, show_progress_bar=False)
    names = set(imagenet_labels())
    assert len(imagenet_labels()) == 1000 and "jersey" in names
    for row in top:
        assert len(row) == 5
        probs = [p for _, p in row]
        assert all(label in names for label, _ in row)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    both = image_encoder.encode_and_classify(imgs, show_progress_bar=False)
    np.testing.assert_allclose(both.features, image_encoder.encode(imgs, show_progress_bar=False))
    assert [label for label, _ in both.top_labels(5)[0]] == [label for label, _ in top[0]]


def test_unknown_image_model():
    with pytest.raises(ConfigError, match="efficientnet-lite0"):
        ImageEncoder("clip-vit-l14")
