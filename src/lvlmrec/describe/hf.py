"""The `hf` backend: any transformers image-text-to-text model, with its own processor.

Every model family formats prompts differently (LLaVA-NeXT's `[INST] <image>\\n...`,
Qwen2-VL's `<|vision_start|>...`, Idefics3's `<image>` splits), so this backend never
writes a prompt format itself: it asks the model's processor for its chat template and
image preprocessing. One code path then serves LLaVA-NeXT (the study's model),
LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, Idefics3 and SmolVLM.

Batches are left-padded so every prompt ends where generation starts; only the new tokens
are decoded. Generation itself is one replaceable step (`engine`): `generate` is plain
`model.generate`; faster engines register under another name in `ENGINES` and must give
the same greedy outputs, so they share the store's cache key.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from lvlmrec.describe.base import PromptedDescriber
from lvlmrec.describe.prompts import Prompt
from lvlmrec.device import resolve_device
from lvlmrec.errors import ConfigError, MissingDependencyError

DEFAULT_MODEL = "llava-hf/llava-v1.6-mistral-7b-hf"
QUANTS = ("4bit", "8bit")
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}

#: (model, inputs on the model's device, **generate kwargs) -> new token ids (batch, n_new)
GenerateEngine = Callable[..., torch.Tensor]


def generate_engine(model: Any, inputs: Any, **kwargs: Any) -> torch.Tensor:
    """Plain `model.generate`; with left padding every row's new tokens start at one column."""
    with torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    return out[:, inputs["input_ids"].shape[1]:]


ENGINES: dict[str, GenerateEngine] = {"generate": generate_engine}


def pick_dtype(name: str, device: str) -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it, else fp16 on GPUs; fp32 on CPU."""
    if name != "auto":
        if name not in _DTYPES:
            raise ConfigError(f"describe.options.dtype: unknown dtype {name!r}; use auto, "
                              "bf16, fp16 or fp32")
        return _DTYPES[name]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


class HFDescriber(PromptedDescriber):
    """A transformers LVLM (AutoProcessor + AutoModelForImageTextToText), loaded lazily."""

    backend = "hf"

    def __init__(
        self,
        prompt: Prompt,
        model: str = DEFAULT_MODEL,
        max_new_tokens: int = 150,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        quant: str | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        engine: str = "generate",
    ):
        super().__init__(model, prompt, max_new_tokens, temperature, top_p, seed)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.torch_dtype = pick_dtype(dtype, self.device)
        if quant is not None:
            _check_quant(quant, self.device)
        self.quant = quant
        self.processor_kwargs = dict(processor_kwargs or {})
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        if engine not in ENGINES:
            raise ConfigError(f"describe.options.engine: unknown engine {engine!r}; known: "
                              f"{', '.join(sorted(ENGINES))}")
        self.engine = engine
        self.processor: Any = None
        self.hf_model: Any = None

    def settings(self) -> dict[str, Any]:
        # the configured dtype, not the resolved one: moving a run between a GPU and a CPU
        # keeps its descriptions (their numerics differ slightly; their meaning does not)
        return {**super().settings(), "dtype": self.dtype, "quant": self.quant,
                "processor_kwargs": self.processor_kwargs}

    def load(self) -> None:
        if self.hf_model is not None:
            return
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs: dict[str, Any] = {"dtype": self.torch_dtype,
                                  "trust_remote_code": self.trust_remote_code}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.quant:
            kwargs["quantization_config"] = _quant_config(self.quant, self.torch_dtype)
            kwargs["device_map"] = {"": self.device}
        try:
            processor = AutoProcessor.from_pretrained(
                self.model, trust_remote_code=self.trust_remote_code, **self.processor_kwargs)
            model = AutoModelForImageTextToText.from_pretrained(self.model, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(
                f"describe.model: cannot load {self.model!r} as a transformers "
                f"image-text-to-text model: {type(err).__name__}: {err}\n(a hub id needs "
                "network access or a filled Hugging Face cache; else pass a local folder)"
            ) from None
        if not self.quant:
            model.to(self.device)
        model.eval()
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not self.greedy:
            torch.manual_seed(self.seed)
        self.processor, self.hf_model = processor, model

    def build_inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> Any:
        """The batch as the model takes it: chat-templated, left-padded, on its device."""
        chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
                 for p in prompts]
        texts = self.processor.apply_chat_template(chats, add_generation_prompt=True)
        # one image per prompt, nested: the form every processor accepts
        inputs = self.processor(text=texts, images=[[img] for img in images], padding=True,
                                return_tensors="pt")
        return inputs.to(self.device, dtype=self.torch_dtype)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens,
                                  "do_sample": not self.greedy,
                                  "pad_token_id": self.processor.tokenizer.pad_token_id}
        if self.greedy:  # override sampling defaults some checkpoints ship (Qwen2-VL)
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs

    def describe(self, images: list[Image.Image], titles: list[str]) -> list[str | Exception]:
        self.load()
        prompts = self.prompt.texts(titles)
        inputs = self.build_inputs(images, prompts)
        new_ids = ENGINES[self.engine](self.hf_model, inputs, **self.generate_kwargs())
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        return self.clean(texts, prompts)

    def close(self) -> None:
        self.hf_model = self.processor = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _check_quant(quant: str, device: str) -> None:
    if quant not in QUANTS:
        raise ConfigError(f"describe.options.quant: unknown {quant!r}; use 4bit, 8bit or null")
    for package in ("bitsandbytes", "accelerate"):  # transformers needs both for it
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "quant", f"{quant} loading (hf backend)")
    if not device.startswith("cuda"):
        raise ConfigError(f"describe.options.quant: {quant} loading needs a CUDA GPU; "
                          f"this run's device is {device!r}")


def _quant_config(quant: str, dtype: torch.dtype) -> Any:
    """The study's 4-bit setting: NF4 weights, double quantisation, 16-bit compute."""
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
