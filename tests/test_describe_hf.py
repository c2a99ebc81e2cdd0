"""The hf backend on a tiny random LLaVA-NeXT: the real processor, chat template and generate."""

import importlib.util

import pytest
import torch
from PIL import Image

from lvlmrec.config import DescribeConfig
from lvlmrec.describe import hf
from lvlmrec.describe.registry import make_describer
from lvlmrec.describe.tiny import build_tiny_idefics3, build_tiny_llava_next
from lvlmrec.errors import ConfigError, MissingDependencyError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TITLES = ["red cotton shirt", "boots", "a long title about blue suede shoes for the beach", ""]


def _images():
    return [Image.new("RGB", (30 + 17 * i, 60 - 9 * i), (200, 40 * i, 30)) for i in range(4)]


def _describer(model_dir, **kw):
    cfg = {"backend": "hf", "model": str(model_dir), "device": "cpu", "max_new_tokens": 8, **kw}
    return make_describer(DescribeConfig(**cfg))


@pytest.fixture(scope="module")
def describer(tiny_llava):
    d = _describer(tiny_llava, prompt="study_code", include_title=True)
    d.load()
    return d


def test_loads_lazily_through_the_auto_classes(tiny_llava):
    d = _describer(tiny_llava)
    assert d.hf_model is None and d.processor is None
    d.load()
    assert type(d.hf_model).__name__ == "LlavaNextForConditionalGeneration"
    assert d.hf_model.dtype == torch.float32  # auto on CPU
    assert d.processor.tokenizer.padding_side == "left"


def test_prompts_go_through_the_chat_template_left_padded(describer):
    inputs = describer.prepare(_images(), TITLES).chunks[0]  # plain generate: one chunk
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    pad = describer.processor.tokenizer.pad_token_id
    assert (ids[:, -1] != pad).all() and (mask[:, -1] == 1).all()  # all end together
    assert (mask[:, 0] == 0).any()  # shorter rows are padded on the left
    first = describer.processor.tokenizer.decode(ids[0][mask[0] == 1], skip_special_tokens=False)
    assert first.startswith("<s> [INST] <image>") and first.endswith("[/INST]")
    assert "red cotton shirt" in first
    assert inputs["pixel_values"].dtype == torch.float32


def test_batched_generation_equals_one_by_one(describer):
    images = _images()
    batched = describer.describe(images, TITLES)
    single = [describer.describe([img], [t])[0] for img, t in zip(images, TITLES)]
    assert batched == single
    assert all(isinstance(t, str) and t.strip() for t in batched)
    for text in batched:  # only new tokens were decoded, at most max_new_tokens of them
        assert len(text.split()) <= 8
        assert "[INST]" not in text and "[/INST]" not in text
        assert not text.startswith("Describe this product")


def test_title_is_in_the_prompt_only_when_asked(tiny_llava, describer):
    img = _images()[:1] * 2
    assert describer.describe(img, ["shirt", "boots"])[0] != describer.describe(
        img, ["boots", "shirt"])[0]
    plain = _describer(tiny_llava)
    plain.load()
    assert plain.describe(img, ["shirt", "boots"]) == plain.describe(img, ["a", "b"])


def test_same_seed_same_checkpoint(tmp_path, describer):
    again = _describer(build_tiny_llava_next(tmp_path / "a", seed=0),
                       prompt="study_code", include_title=True)
    other = _describer(build_tiny_llava_next(tmp_path / "b", seed=1),
                       prompt="study_code", include_title=True)
    images = _images()
    assert again.describe(images, TITLES) == describer.describe(images, TITLES)
    assert other.describe(images, TITLES) != describer.describe(images, TITLES)


def test_sampling_is_seeded(tiny_llava):
    images = _images()
    a = _describer(tiny_llava, temperature=1.0, seed=3).describe(images, TITLES)
    b = _describer(tiny_llava, temperature=1.0, seed=3).describe(images, TITLES)
    assert a == b


def test_unloadable_model_is_a_clear_error(tmp_path):
    d = _describer(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="cannot load .*no-such-model"):
        d.load()


def test_quantisation_needs_bitsandbytes_and_a_gpu(tiny_llava, monkeypatch):
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(MissingDependencyError, match=r"lvlmrec\[quant\]"):
            _describer(tiny_llava, options={"quant": "4bit"})
    real = importlib.util.find_spec
    present = {"bitsandbytes", "accelerate"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in present else real(name, *a))
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        _describer(tiny_llava, options={"quant": "4bit"})
    with pytest.raises(ConfigError, match="unknown '3bit'"):
        _describer(tiny_llava, options={"quant": "3bit"})


def test_dtype_choice():
    assert hf.pick_dtype("auto", "cpu") == torch.float32
    assert hf.pick_dtype("bf16", "cpu") == torch.bfloat16
    assert hf.pick_dtype("fp16", "cuda") == torch.float16
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        hf.pick_dtype("int3", "cpu")


def test_unknown_engine_is_a_config_error(tiny_llava):
    with pytest.raises(ConfigError, match="unknown engine 'turbo'.*generate"):
        _describer(tiny_llava, options={"engine": "turbo"})


def test_another_model_family_through_the_same_code(tmp_path):
    d = _describer(build_tiny_idefics3(tmp_path / "idefics3"), prompt="study_code",
                  include_title=True)
    d.load()
    assert type(d.hf_model).__name__ == "Idefics3ForConditionalGeneration"
    images = _images()
    batched = d.describe(images, TITLES)
    assert batched == [d.describe([img], [t])[0] for img, t in zip(images, TITLES)]
    assert all(t.strip() and "Assistant" not in t for t in batched)
