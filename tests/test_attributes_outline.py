"""attributes-v3's outline words and accent colours, on silhouettes drawn here."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lvlmrec.describe.attributes import (
    Attributes,
    AttributesDescriber,
    Colour,
    Outline,
    analyse_image,
    sentence,
)

SIZE = 128
BACKGROUND, GREY, RED = (245, 245, 245), (120, 120, 120), (205, 30, 35)

# unit-square polygons (x, y), y downwards
SHAPES = {
    "trousers": [(0.32, 0.08), (0.68, 0.08), (0.74, 0.94), (0.57, 0.94), (0.5, 0.35),
                 (0.43, 0.94), (0.26, 0.94)],
    "dress": [(0.40, 0.08), (0.60, 0.08), (0.62, 0.35), (0.80, 0.92), (0.20, 0.92),
              (0.38, 0.35)],
    "t-shirt": [(0.32, 0.14), (0.68, 0.14), (0.90, 0.32), (0.80, 0.44), (0.70, 0.36),
                (0.70, 0.88), (0.30, 0.88), (0.30, 0.36), (0.20, 0.44), (0.10, 0.32)],
    "boot": [(0.28, 0.12), (0.52, 0.12), (0.54, 0.58), (0.84, 0.68), (0.86, 0.86),
             (0.26, 0.86)],
    "sneaker": [(0.08, 0.72), (0.10, 0.50), (0.40, 0.44), (0.60, 0.50), (0.92, 0.62),
                (0.92, 0.72)],
    "square": [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)],
}


def _draw(shape: str, colour=GREY, ring: bool = False, trim=None) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.polygon([(x * SIZE, y * SIZE) for x, y in SHAPES[shape]], fill=colour)
    if ring:  # a bag's handle above the body: a hole in the silhouette
        draw.ellipse((0.32 * SIZE, 0.02 * SIZE, 0.68 * SIZE, 0.42 * SIZE), outline=colour,
                     width=6)
    if trim:  # a band across the lower part
        draw.rectangle((0.3 * SIZE, 0.70 * SIZE, 0.7 * SIZE, 0.76 * SIZE), fill=trim)
    return img


@pytest.mark.parametrize("shape, words", [
    ("trousers", ["very tall", "split at the base"]),
    ("dress", ["tall", "wider at the base"]),
    ("t-shirt", ["wider at the upper end"]),
    ("boot", ["wider at the base", "asymmetric"]),
    ("sneaker", ["very wide", "wider at the base", "asymmetric"]),
    ("square", []),
])
def test_outline_words(shape, words):
    outline = analyse_image(_draw(shape)).outline
    assert outline is not None and outline.words() == words and not outline.hole


def test_a_handle_is_a_hole_and_a_full_frame_has_no_outline():
    assert analyse_image(_draw("square", ring=True)).outline.hole
    full = Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), np.uint8))
    assert analyse_image(full).outline is None


def test_accent_is_a_colour_inside_the_product_not_its_edge():
    assert analyse_image(_draw("t-shirt", trim=RED)).accent == "red"
    # a grey product on a light background has a rim of blended pixels: no accent
    assert analyse_image(_draw("t-shirt")).accent is None


def test_sentences_say_outline_hole_and_accent():
    attrs = Attributes([Colour("navy", 0.7, None), Colour("white", 0.3, None)], "striped",
                       size="small", strength="fine", accent="red",
                       outline=Outline(2.0, 1.6, True, hole=True))
    assert sentence(attrs, ["dress"]) == (
        "A navy and white striped product (about 70% navy), with touches of red. It is small, "
        "very tall, wider at the base and split at the base, with a hole and a fine pattern. "
        "It looks like a dress.")
    plain = Attributes([Colour("grey", 1.0, None)], "solid", outline=Outline(1.0, 1.0, False))
    assert sentence(plain, []) == "A solid grey product."
    holed = Attributes([Colour("grey", 1.0, None)], None, outline=Outline(1.0, 1.0, False, True))
    assert sentence(holed, []) == "A grey product. It has a hole."


def test_outline_can_be_left_out():
    """`outline: false` (describe.attributes) says only "tall"/"wide", as attributes-v2 did,
    and is another describer (its own store key)."""
    on, off = AttributesDescriber(max_labels=0), AttributesDescriber(max_labels=0, outline=False)
    images = [_draw("dress"), _draw("sneaker")]
    assert on.describe(images) == [
        "A solid grey product. It is tall and wider at the base.",
        "A solid grey product. It is small, very wide, wider at the base and asymmetric."]
    assert off.describe(images) == ["A solid grey product.",
                                    "A solid grey product. It is small and wide."]
    assert off.settings()["outline"] is False and off.prompt_hash != on.prompt_hash
