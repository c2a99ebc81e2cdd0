"""The vllm backend: the missing-extra message, and its requests against a fake `vllm`."""

import importlib.machinery
import sys
import types

import pytest
from PIL import Image

from lvlmrec.config import DescribeConfig
from lvlmrec.describe.hf import DEFAULT_MODEL
from lvlmrec.describe.registry import make_describer
from lvlmrec.errors import MissingDependencyError


def _cfg(**kw):
    return DescribeConfig(backend="vllm", **kw)


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        make_describer(_cfg())
    assert str(err.value) == ("the vllm describe backend needs the optional package 'vllm': "
                              "pip install 'lvlmrec[vllm]'")


class FakeLLM:
    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append((messages, sampling_params, use_tqdm))
        outs = []
        for conv in messages:
            text = conv[0]["content"][1]["text"]
            size = conv[0]["content"][0]["image_pil"].size
            completion = types.SimpleNamespace(text=f"[/INST] {size[0]}px wide. </s>{text}")
            outs.append(types.SimpleNamespace(outputs=[completion]))
        return outs


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_llm_is_created_lazily_with_the_model_and_engine_args(fake_vllm):
    d = make_describer(_cfg(options={"max_model_len": 4096, "engine_args": {"enforce_eager": True},
                                     "quantization": "awq"}))
    assert FakeLLM.instances == []
    d.load()
    d.load()
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {"model": DEFAULT_MODEL, "dtype": "auto", "seed": 0,
                          "limit_mm_per_prompt": {"image": 1}, "gpu_memory_utilization": 0.9,
                          "tensor_parallel_size": 1, "trust_remote_code": False,
                          "quantization": "awq", "max_model_len": 4096, "enforce_eager": True}


def test_chat_requests_greedy_and_cleaned(fake_vllm):
    d = make_describer(_cfg(model="Qwen/Qwen2-VL-2B-Instruct", prompt="study_code",
                            include_title=True, max_new_tokens=99))
    images = [Image.new("RGB", (10 + i, 10)) for i in range(3)]
    texts = d.describe(images, ["hat", "shoe", "bag"])
    assert texts == ["10px wide.", "11px wide.", "12px wide."]
    (llm,) = FakeLLM.instances
    assert llm.kwargs["model"] == "Qwen/Qwen2-VL-2B-Instruct"
    messages, params, use_tqdm = llm.calls[0]
    assert params.kwargs == {"max_tokens": 99, "temperature": 0.0} and use_tqdm is False
    assert [m[0]["role"] for m in messages] == ["user"] * 3
    first = messages[0][0]["content"]
    assert first[0] == {"type": "image_pil", "image_pil": images[0]}
    assert first[1]["type"] == "text" and "Product title: hat\n" in first[1]["text"]


def test_sampling_parameters(fake_vllm):
    d = make_describer(_cfg(temperature=0.8, top_p=0.95, seed=7))
    d.describe([Image.new("RGB", (8, 8))], ["x"])
    params = FakeLLM.instances[0].calls[0][1]
    assert params.kwargs == {"max_tokens": 150, "temperature": 0.8, "top_p": 0.95, "seed": 7}
    assert d.prompt_hash != make_describer(_cfg()).prompt_hash
