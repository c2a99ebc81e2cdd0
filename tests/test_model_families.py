"""Every model family the docs name runs through the `hf` backend (tiny random models).

LLaVA-NeXT and Idefics3 load from checkpoint folders (tests/test_describe_hf.py). The
families below hold a video processor, which needs torchvision (not installable beside
this environment's torch), so their tiny models are built in memory with an image-only
processor and attached: chat template, image processing, batching, generation and
decoding are the code a real checkpoint runs; only `from_pretrained` is not.
"""

import importlib.util

import pytest
from PIL import Image

from lvlmrec.describe.base import DescribeItem, describe_items
from lvlmrec.describe.hf import HFDescriber
from lvlmrec.describe.prompts import resolve_prompt
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.describe.tiny import TINY_FAMILIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = [
    "qwen2_vl", "qwen2_5_vl", "llava_onevision",
    pytest.param("smolvlm", marks=pytest.mark.skipif(
        importlib.util.find_spec("num2words") is None
        or importlib.util.find_spec("torchvision") is None,
        reason="SmolVLM's processor needs num2words and, for its video processor, torchvision "
               "(which cannot be installed beside the CPU torch here)")),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_describes_through_the_hf_backend(family, tmp_path):
    processor, model = TINY_FAMILIES[family]()
    assert model.config.model_type == family
    d = HFDescriber(resolve_prompt("study_code", True), model=f"tiny-{family}",
                    max_new_tokens=6, device="cpu", engine="auto")
    d.attach(processor, model)
    assert d.engine.name == "generate"  # auto on a CPU
    # images of different sizes and aspect ratios in one left-padded batch
    images = [Image.new("RGB", (60, 40), (200, 20, 20)), Image.new("RGB", (40, 80), (20, 20, 200)),
              Image.new("RGB", (48, 48), (20, 160, 20))]
    titles = ["red shirt", "blue shoe", "green hat"]
    batched = d.describe(images, titles)
    assert batched == [d.describe([img], [t])[0] for img, t in zip(images, titles)]
    assert all(isinstance(t, str) and t.strip() for t in batched)
    prepared = d.prepare(images[:1], titles[:1])
    assert "red shirt" in prepared.prompts[0]
    # and through the describe loop into a store
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        items = [DescribeItem(i, p, t) for i, (p, t) in enumerate(zip(paths, titles))]
        summary = describe_items(d, store, items, batch_size=2, show_progress=False)
        assert summary.n_described == 3 and summary.n_failed == 0
        assert list(store.texts(d.model_id, d.prompt_hash).values()) == batched
