"""The structured-prompt parser takes what it can from malformed JSON and never raises."""

import pytest

from lvlmrec.describe.structured import parse_attributes, render_attributes


@pytest.mark.parametrize("text, expected", [
    ('{"category": "Dress", "colours": ["Red", "white"], "pattern": "striped"}',
     {"category": "dress", "colours": ["red", "white"], "pattern": "striped"}),
    # fenced, with prose before and after
    ('Sure! Here it is:\n```json\n{"category": "boot", "colour": "black"}\n```\nEnjoy.',
     {"category": "boot", "colours": ["black"]}),
    # trailing text after a complete object, another object after it
    ('{"category": "bag", "material": "leather"} I hope this helps {"x": 1}',
     {"category": "bag", "material": "leather"}),
    # cut off mid-object by max_new_tokens: the last unterminated string is dropped
    ('{"category": "sneaker", "colors": ["white", "gre', {"category": "sneaker",
                                                         "colours": ["white"]}),
    # single quotes and null fields
    ("{'category': 'hat', 'color': 'navy and white', 'material': null, 'style': 'N/A'}",
     {"category": "hat", "colours": ["navy", "white"]}),
    # unknown keys ignored, aliases mapped, lists for strings joined
    ('{"type": "jacket", "occasion": ["office", "party"], "brand": "x", "fabric": "wool"}',
     {"category": "jacket", "occasion": "office, party", "material": "wool"}),
    ("The product is a nice red shirt.", {}),
    ("", {}),
    ("[1, 2, 3]", {}),
    ('```\n{"pattern": "floral",}\n```', {"pattern": "floral"}),
])
def test_parser_on_malformed_outputs(text, expected):
    assert parse_attributes(text) == expected


def test_rendered_in_field_order():
    attrs = {"style": "casual", "category": "dress", "colours": ["red", "white"]}
    assert render_attributes(attrs) == "category: dress; colours: red, white; style: casual"
    assert render_attributes({}) == ""
