"""The attributes describer on product-like images drawn here: colours, patterns, sentences."""

import importlib.util
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lvlmrec.describe.attributes import (
    Attributes,
    AttributesDescriber,
    Colour,
    analyse_image,
    colour_name,
    linear_to_lab,
    sentence,
    srgb_to_linear,
)
from lvlmrec.errors import DataError, MissingDependencyError
from lvlmrec.imageio import load_image

WHITE, BLACK, GREY = (255, 255, 255), (15, 15, 15), (200, 200, 200)
NAVY, RED, YELLOW = (25, 35, 80), (205, 30, 35), (250, 215, 40)
SIZE = 256


def _shirt_mask() -> Image.Image:
    m = Image.new("L", (SIZE, SIZE), 0)
    outline = [(80, 30), (176, 30), (236, 80), (206, 115), (186, 100), (186, 230),
               (70, 230), (70, 100), (50, 115), (20, 80)]
    ImageDraw.Draw(m).polygon(outline, fill=255)
    return m


def _fabric(kind: str, c1, c2, period: int = 24) -> Image.Image:
    a = np.empty((SIZE, SIZE, 3), np.uint8)
    a[:] = c1
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    half = period // 2
    if kind == "stripes":
        m = (y // half) % 2 == 1
    elif kind == "diagonal":
        m = ((x + y) // half) % 2 == 1
    elif kind == "checks":
        m = (x // half + y // half) % 2 == 1
    elif kind == "dots":  # staggered rows, like most polka-dot prints
        cy = y % period - half
        cx = (x + (y // period % 2) * half) % period - half
        m = cx**2 + cy**2 <= (0.22 * period) ** 2
    elif kind == "zigzag":
        m = ((y + np.abs((x % period) / period * 2 - 1) * half) // half) % 2 == 1
    else:
        m = np.zeros_like(x, bool)
    a[m] = c2
    return Image.fromarray(a)


def _product(fabric: Image.Image, background=WHITE) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), background)
    img.paste(fabric, (0, 0), _shirt_mask())
    return img


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


CASES = {
    # name: (image, expected colour names (set when shares are near equal), pattern)
    "red solid": (_product(_fabric("solid", RED, RED)), ["red"], "solid"),
    "white on grey": (_product(_fabric("solid", WHITE, WHITE), GREY), ["white"], "solid"),
    "navy/white stripes": (_product(_fabric("stripes", NAVY, WHITE)), {"navy", "white"}, "striped"),
    "diagonal stripes": (_product(_fabric("diagonal", RED, WHITE)), {"red", "white"}, "striped"),
    "wide stripes": (
        _product(_fabric("stripes", NAVY, WHITE, period=56)), {"navy", "white"}, "striped"
    ),
    "black dots on yellow": (_product(_fabric("dots", YELLOW, BLACK)), ["yellow"], "polka-dot"),
    "white dots on navy": (
        _product(_fabric("dots", NAVY, WHITE, period=32)), ["navy"], "polka-dot"
    ),
    "red/white checks": (_product(_fabric("checks", RED, WHITE)), {"red", "white"}, "checked"),
    "checks swatch": (_fabric("checks", BLACK, WHITE, period=32), {"black", "white"}, "checked"),
    "zigzag": (_product(_fabric("zigzag", BLACK, WHITE)), {"black", "white"}, "zigzag"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("compressed", [False, True], ids=["png", "jpeg"])
def test_colours_and_pattern(name, compressed):
    img, colours, pattern = CASES[name]
    attrs = analyse_image(_jpeg(img) if compressed else img)
    assert attrs.pattern == pattern
    if isinstance(colours, set):
        assert set(attrs.colour_names) == colours
    else:
        assert attrs.colour_names == colours


def test_polka_dot_colours():
    attrs = analyse_image(CASES["black dots on yellow"][0])
    assert (attrs.ground_colour, attrs.dot_colour) == ("yellow", "black")


def test_printed_graphic_and_busy_print():
    img = _product(_fabric("solid", WHITE, WHITE), (235, 235, 235))
    ImageDraw.Draw(img).rectangle((110, 90, 150, 130), fill=RED)
    assert analyse_image(img).pattern == "graphic"
    rng = np.random.default_rng(0)
    floral = Image.new("RGB", (SIZE, SIZE), (240, 230, 200))
    d = ImageDraw.Draw(floral)
    for _ in range(120):
        x, y, r = *rng.integers(0, SIZE, 2).tolist(), int(rng.integers(5, 18))
        fill = [RED, (30, 120, 60), YELLOW][x % 3]
        d.ellipse((x - r, y - r * 0.6, x + r, y + r * 0.6), fill=fill)
    assert analyse_image(_product(floral)).pattern == "patterned"


def test_shading_keeps_one_colour():
    a = np.asarray(_fabric("solid", (40, 80, 200), (0, 0, 0))).astype(np.float32)
    shaded = Image.fromarray((a * np.linspace(1.0, 0.6, SIZE)[None, :, None]).astype(np.uint8))
    attrs = analyse_image(_product(shaded))
    assert attrs.colour_names == ["blue"] and attrs.pattern == "solid"


@pytest.mark.parametrize(
    "rgb, name",
    [((0, 0, 128), "navy"), ((173, 216, 230), "light blue"), ((128, 0, 0), "dark red"),
     ((255, 165, 0), "orange"), ((245, 245, 240), "white"), ((54, 69, 79), "dark grey"),
     ((139, 69, 19), "brown"), ((128, 0, 128), "purple"), ((0, 128, 128), "teal")],
)
def test_colour_names(rgb, name):
    assert colour_name(linear_to_lab(srgb_to_linear(np.array(rgb)))) == name


def _attrs(names, pattern=None, **kw):
    return Attributes([Colour(n, 0.5, np.zeros(3)) for n in names], pattern, **kw)


def test_sentences_read_naturally():
    assert sentence(_attrs(["red"], "solid"), []) == "A solid red product."
    assert sentence(_attrs(["orange", "white"], "striped"), ["jersey", "sweatshirt"]) == (
        "An orange and white striped product (about 50% orange). It looks like a jersey or a "
        "sweatshirt."
    )
    dots = _attrs(["yellow"], "polka-dot", dot_colour="black", ground_colour="yellow")
    assert sentence(dots, ["umbrella"]) == (
        "A yellow product with black polka dots. It looks like an umbrella."
    )
    assert sentence(_attrs([], "striped"), []) == "A striped product."
    assert sentence(_attrs(["black", "white", "red"], "zigzag"), ["sunglasses"], "NIKE") == (
        "A black, white and red product with a zigzag pattern (about 30% black). It looks like "
        "sunglasses. "
        'It shows the text "NIKE".'
    )


def test_describer_sentences_without_labels():
    d = AttributesDescriber(max_labels=0)
    names = ("red solid", "navy/white stripes", "black dots on yellow")
    texts = d.describe([CASES[n][0] for n in names], ["t1", "t2", "t3"])
    # the shirt's sleeves make its outline wider at the upper end
    assert texts[0] == "A solid red product. It is wider at the upper end." and texts[2].startswith(
        "A yellow product with black polka dots.")
    assert texts[1].startswith("A navy and white striped product (about 50% navy).")


def test_describer_with_labels_is_deterministic_and_batch_independent():
    d = AttributesDescriber(label_threshold=0.0, max_labels=2, device="cpu", categories=False)
    images = [CASES[n][0] for n in ("red solid", "zigzag", "checks swatch")]
    texts = d.describe(images, [""] * 3)
    assert texts == d.describe(images, [""] * 3)
    assert texts[1:2] == d.describe(images[1:2], [""])
    for t in texts:
        assert t.count(". It looks like ") == 1 and " or " in t and t.endswith(".")
    assert d.describe([None, images[0]], ["", ""])[0] == ""


def test_describer_identity_and_settings():
    d = AttributesDescriber()
    assert d.model_id == "attributes-v3" and d.backend == "attributes"
    s = d.settings()
    assert s["label_threshold"] == 0.15 and s["max_labels"] == 2 and s["ocr"] is False
    assert s["label_model"] == "efficientnet-lite0@224"
    assert AttributesDescriber(n_colours=3).prompt_hash != d.prompt_hash
    assert AttributesDescriber().prompt_hash == d.prompt_hash


def test_corrupt_image_is_the_callers_error(tmp_path):
    """The describer takes decoded images: a broken file fails in load_image, by name."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    with pytest.raises(DataError, match="broken.jpg"):
        load_image(bad)
    CASES["red solid"][0].save(tmp_path / "ok.png")
    assert AttributesDescriber(max_labels=0).describe([load_image(tmp_path / "ok.png")], [""]) == [
        "A solid red product. It is wider at the upper end."
    ]


def test_ocr_missing_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rapidocr_onnxruntime" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"rapidocr-onnxruntime.*lvlmrec\[ocr\]"):
        AttributesDescriber(ocr=True)


def test_ocr_reads_printed_text():
    pytest.importorskip("rapidocr_onnxruntime")
    img = Image.new("RGB", (320, 320), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((40, 60, 280, 280), fill=BLACK)
    font = ImageFont.load_default(size=44)
    d.text((70, 140), "JUST DO", fill="white", font=font)
    d.text((100, 195), "IT", fill="white", font=font)
    (text,) = AttributesDescriber(max_labels=0, ocr=True).describe([img], [""])
    assert text.endswith('It shows the text "JUST DO IT".')
