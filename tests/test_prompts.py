"""The study's prompts, config templates, include_title, the cache key and output cleaning."""

import pytest

from lvlmrec.config import DescribeConfig
from lvlmrec.describe.hf import HFDescriber
from lvlmrec.describe.prompts import (
    BUILTIN_PROMPTS,
    Prompt,
    clean_output,
    resolve_prompt,
)
from lvlmrec.describe.registry import make_describer
from lvlmrec.errors import ConfigError


def test_study_readme_prompt_is_verbatim_and_title_free():
    p = resolve_prompt("study_readme", include_title=False)
    assert p.text("Anything") == (
        "Describe this product image in detail, focusing on visual attributes like color, "
        "style, material, and what occasion it might be suitable for.")


def test_study_code_prompt_is_title_conditioned():
    p = resolve_prompt("study_code", include_title=True)
    text = p.text("Levi's 501 Jeans {x}")
    assert text.startswith("Describe this product in detail for an e-commerce recommendation")
    assert "Product title: Levi's 501 Jeans {x}\n" in text
    assert text.endswith("Provide a concise but informative description (2-3 sentences).")
    assert "[INST]" not in text  # the chat template adds the model's own turn markers


def test_include_title_must_agree_with_the_template():
    with pytest.raises(ConfigError, match="include_title is false"):
        resolve_prompt("study_code", include_title=False)
    with pytest.raises(ConfigError, match="no {title} placeholder"):
        resolve_prompt("study_readme", include_title=True)


def test_templates_from_config():
    custom = {"short": "Name the {title}'s colour.", "plain": "What colour is this? {not_a_field}"}
    p = resolve_prompt("short", True, custom)
    assert p == Prompt("short", custom["short"], True)
    assert p.texts(["shoe", "hat"]) == ["Name the shoe's colour.", "Name the hat's colour."]
    assert resolve_prompt("plain", False, custom).text("x") == custom["plain"]
    with pytest.raises(ConfigError, match="unknown prompt .nope.*plain, short, structured, study_code"):
        resolve_prompt("nope", False, custom)
    with pytest.raises(ConfigError, match="built-in prompt name"):
        resolve_prompt("study_readme", False, {"study_readme": "other text"})
    with pytest.raises(ConfigError, match="empty"):
        resolve_prompt("blank", False, {"blank": "  "})


def _hf(**kw):
    cfg = DescribeConfig(backend="hf", model="some/model", device="cpu", **kw)
    return make_describer(cfg)


def test_prompt_hash_covers_template_title_and_decoding():
    base = _hf()
    assert isinstance(base, HFDescriber) and base.hf_model is None  # nothing loaded
    assert base.model_id == "some/model"
    variants = [
        _hf(prompt="study_code", include_title=True),
        _hf(max_new_tokens=64),
        _hf(temperature=0.7),
        _hf(prompts={"mine": BUILTIN_PROMPTS["study_readme"] + " Be brief."}, prompt="mine"),
        _hf(options={"dtype": "bf16"}),
        _hf(options={"processor_kwargs": {"max_pixels": 200704}}),
    ]
    hashes = {base.prompt_hash} | {d.prompt_hash for d in variants}
    assert len(hashes) == len(variants) + 1
    # what does not change outputs does not change the key
    assert _hf(batch_size=2, max_items=5, order="random").prompt_hash == base.prompt_hash
    assert _hf(top_p=0.5).prompt_hash == base.prompt_hash  # greedy ignores top_p
    renamed = _hf(prompts={"same": BUILTIN_PROMPTS["study_readme"]}, prompt="same")
    assert renamed.prompt_hash == base.prompt_hash and renamed.prompt_name == "same"


def test_unknown_backend_option_is_a_config_error():
    with pytest.raises(ConfigError, match="'max_pixls' is not an option of backend 'hf'"):
        _hf(options={"max_pixls": 5})
    with pytest.raises(ConfigError, match="unknown backend 'llava'"):
        make_describer(DescribeConfig(backend="llava"))
    with pytest.raises(ConfigError, match="describe.attributes"):
        make_describer(DescribeConfig(backend="attributes", options={"x": 1}))


@pytest.mark.parametrize("raw, prompt, expected", [
    ("  A red shirt.\n", "", "A red shirt."),
    ("[INST] <image>\nDescribe it. [/INST] A red shirt.", "Describe it.", "A red shirt."),
    ("USER: <image>\nDescribe it. ASSISTANT: A red shirt.", "Describe it.", "A red shirt."),
    ("<|im_start|>assistant\nA red shirt.<|im_end|>\n<|im_start|>user", "", "A red shirt."),
    ("assistant\nA red shirt.", "", "A red shirt."),
    ("Describe it. A red shirt.", "Describe it.", "A red shirt."),
    ("A red shirt.</s>", "", "A red shirt."),
    ("A model wearing a red shirt.", "", "A model wearing a red shirt."),
    ("Assistant's choice: red.", "", "Assistant's choice: red."),
])
def test_clean_output(raw, prompt, expected):
    assert clean_output(raw, prompt) == expected


def test_config_rejects_a_prompt_that_does_not_resolve():
    from lvlmrec.config import parse_config

    with pytest.raises(ConfigError, match="(?s)in run.yaml.*include_title is false"):
        parse_config({"describe": {"backend": "hf", "prompt": "study_code"}}, "run.yaml")
    with pytest.raises(ConfigError, match="unknown prompt 'typo'"):
        parse_config({"describe": {"backend": "openai", "prompt": "typo"}})
    cfg = parse_config({"describe": {"backend": "hf", "prompt": "study_code",
                                     "include_title": True}})
    assert cfg.describe.include_title
    # the attributes describer takes no prompt: its prompt settings are not checked
    parse_config({"describe": {"backend": "attributes", "prompt": "study_code"}})
