"""The `vllm` backend: offline batch generation with `vllm.LLM` on the local GPU(s).

vLLM schedules the requests of a batch itself (continuous batching, paged KV cache), so
give it large batches (`--batch-size 256`). Prompts go through `LLM.chat`, which applies
the model's own chat template and image placeholders as the `hf` backend does, with the
PIL images passed as they are (no re-encoding). vLLM is an optional extra, imported only
when a run starts: `pip install 'lvlmrec[vllm]'`. vLLM picks its own device; the
`describe.device` setting does not apply.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from PIL import Image

from lvlmrec.describe.base import PromptedDescriber
from lvlmrec.describe.hf import DEFAULT_MODEL
from lvlmrec.describe.prompts import Prompt
from lvlmrec.errors import MissingDependencyError


def _missing() -> MissingDependencyError:
    return MissingDependencyError("vllm", "vllm", "the vllm describe backend")


class VLLMDescriber(PromptedDescriber):
    """Batches of chats through one `vllm.LLM`, created when the first batch arrives."""

    backend = "vllm"

    def __init__(
        self,
        prompt: Prompt,
        model: str = DEFAULT_MODEL,
        max_new_tokens: int = 150,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        dtype: str = "auto",
        quantization: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        engine_args: dict[str, Any] | None = None,
    ):
        super().__init__(model, prompt, max_new_tokens, temperature, top_p, seed)
        if importlib.util.find_spec("vllm") is None:
            raise _missing()
        self.dtype = dtype
        self.quantization = quantization
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.trust_remote_code = trust_remote_code
        self.engine_args = dict(engine_args or {})
        self.llm: Any = None
        self._vllm: Any = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "dtype": self.dtype, "quantization": self.quantization}

    def llm_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model, "dtype": self.dtype, "seed": self.seed,
            "limit_mm_per_prompt": {"image": 1},
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "trust_remote_code": self.trust_remote_code,
        }
        if self.quantization:
            kwargs["quantization"] = self.quantization
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        return {**kwargs, **self.engine_args}

    def load(self) -> None:
        if self.llm is not None:
            return
        try:
            self._vllm = importlib.import_module("vllm")
        except ImportError:
            raise _missing() from None
        self.llm = self._vllm.LLM(**self.llm_kwargs())

    def sampling_params(self) -> Any:
        kwargs: dict[str, Any] = {"max_tokens": self.max_new_tokens,
                                  "temperature": self.temperature}
        if not self.greedy:
            kwargs.update(top_p=self.top_p, seed=self.seed)
        return self._vllm.SamplingParams(**kwargs)

    @staticmethod
    def conversations(images: list[Image.Image], prompts: list[str]) -> list[list[dict]]:
        return [[{"role": "user", "content": [{"type": "image_pil", "image_pil": img},
                                              {"type": "text", "text": p}]}]
                for img, p in zip(images, prompts)]

    def describe(self, images: list[Image.Image], titles: list[str]) -> list[str | Exception]:
        self.load()
        prompts = self.prompt.texts(titles)
        outputs = self.llm.chat(self.conversations(images, prompts),
                                sampling_params=self.sampling_params(), use_tqdm=False)
        return self.clean([out.outputs[0].text for out in outputs], prompts)

    def close(self) -> None:
        self.llm = None
