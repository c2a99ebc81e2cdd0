"""The `hf` backend: any transformers image-text-to-text model, with its own processor.

Every model family formats prompts differently (LLaVA-NeXT's `[INST] <image>\\n...`,
Qwen2-VL's `<|vision_start|>...`, Idefics3's `<image>` splits), so this backend never
writes a prompt format itself: it asks the model's processor for its chat template and
image preprocessing. One code path then serves LLaVA-NeXT (the study's model),
LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, Idefics3 and SmolVLM.

Batches are left-padded so every prompt ends where generation starts; only the new tokens
are decoded. Preprocessing (`prepare`) runs on CPU threads, ahead of the GPU when the
describe loop drives it. Generation itself is one replaceable step (`engine`, see
describe/engine.py): `generate` is plain `model.generate`; `fast` is ours. `auto` (the
default) picks `fast` only on CUDA for model families where a GPU run showed it matches
`generate`'s tokens, else `generate`. The engine and the resolved dtype are part of the
store's key, so a resumed run never mixes texts from two engines or precisions.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from PIL import Image

from lvlmrec.describe.base import PromptedDescriber
from lvlmrec.describe.engine import (
    GPU_VERIFIED_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    FastEngine,
    GenerateEngine,
    PlainGenerate,
    strip_after_eos,
)
from lvlmrec.describe.prompts import Prompt
from lvlmrec.device import available_cpus, resolve_device
from lvlmrec.errors import ConfigError, MissingDependencyError
from lvlmrec.workdir import hash_obj

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-v1.6-mistral-7b-hf"
QUANTS = ("4bit", "8bit")
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}

#: engine name -> factory taking the engine's options (`describe.options.engine_options`)
ENGINES: dict[str, Callable[..., GenerateEngine]] = {"generate": PlainGenerate,
                                                     "fast": FastEngine}


def choose_engine(name: str, device: str, model: str | None = None, greedy: bool = True,
                  trust_remote_code: bool = False) -> tuple[str, str]:
    """(engine, why): `auto` is `fast` only on CUDA, greedy, for a model family whose tokens
    `fast` matched on a GPU (`GPU_VERIFIED_MODEL_TYPES`), else `generate`. Decided before
    the model loads, because the engine is part of the store's key."""
    if name == "fast":  # what is known before loading sends it to generate now
        if not greedy:
            return "generate", "fast is greedy only: sampling runs through generate"
        model_type = _model_type(model, trust_remote_code)
        if model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
            return "generate", f"fast is not verified on model type {model_type!r}"
    if name != "auto":
        return name, "configured"
    if not device.startswith("cuda"):
        return "generate", f"auto: not a CUDA device ({device})"
    if not greedy:
        return "generate", "auto: sampling (fast is greedy only)"
    if not GPU_VERIFIED_MODEL_TYPES:
        return "generate", ("auto: fast has not matched generate's tokens on a GPU for any "
                            "model family yet (benchmarks/gpu_check.sh)")
    model_type = _model_type(model, trust_remote_code)
    if model_type in GPU_VERIFIED_MODEL_TYPES:
        return "fast", (f"auto: fast matched generate on a GPU for {model_type} "
                        f"({GPU_VERIFIED_MODEL_TYPES[model_type]})")
    return "generate", (f"auto: no GPU measurement of fast for model type {model_type!r} "
                        f"(measured: {', '.join(sorted(GPU_VERIFIED_MODEL_TYPES))})")


def _model_type(model: str | None, trust_remote_code: bool) -> str | None:
    """The checkpoint's `model_type` from its config alone (a local folder or the hub
    cache; nothing is downloaded to decide), or None."""
    if not model:
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code,
                                          local_files_only=True).model_type
    except Exception:  # noqa: BLE001 - unknown family: the caller picks generate
        return None


def make_engine(name: str, device: str, options: dict[str, Any]) -> GenerateEngine:
    """The engine `name` (`generate` or `fast`; `auto` resolved by `choose_engine`)."""
    if name == "auto":
        name = choose_engine(name, device)[0]
    if name not in ENGINES:
        raise ConfigError(f"describe.options.engine: unknown engine {name!r}; known: auto, "
                          f"{', '.join(sorted(ENGINES))}")
    try:
        return ENGINES[name](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"describe.options.engine_options: engine {name!r} (on {device}): "
                          f"{err}") from None


@dataclasses.dataclass
class PreparedBatch:
    """A batch processed for the model: chunks in the engine's order, on the CPU."""

    order: list[int]  # item indices, chunk after chunk
    chunks: list[Any]  # processor outputs (BatchFeature)
    prompts: list[str]  # per item, in the batch's order


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
        engine: str = "auto",
        engine_options: dict[str, Any] | None = None,
        preprocess_workers: int | None = None,
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
        engine_name, why = choose_engine(engine, self.device, model, self.greedy,
                                         trust_remote_code)
        if engine == "auto":
            log.info("hf: engine %s for %s (%s)", engine_name, model, why)
        elif engine_name != engine:
            log.warning("hf: engine %r cannot serve %s (%s); using plain generate", engine,
                        model, why)
        self.engine = make_engine(engine_name, self.device, dict(engine_options or {}))
        if preprocess_workers is not None and preprocess_workers < 1:
            raise ConfigError("describe.options.preprocess_workers: must be at least 1")
        self.preprocess_workers = preprocess_workers or min(8, available_cpus())
        self.processor: Any = None
        self.hf_model: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()  # each preprocessing thread's own processor copy

    def settings(self) -> dict[str, Any]:
        # the engine and the resolved dtype name the texts' origin, so a resumed run never
        # mixes engines or precisions in one set
        return {**self._legacy_settings(), "engine": self.engine.name,
                "resolved_dtype": str(self.torch_dtype).removeprefix("torch.")}

    def _legacy_settings(self) -> dict[str, Any]:
        return {**super().settings(), "dtype": self.dtype, "quant": self.quant,
                "processor_kwargs": self.processor_kwargs}

    def legacy_prompt_hashes(self) -> list[str]:
        """Keys of stores written before the engine joined the key: those texts are plain
        `generate`'s, so a `generate` describer adopts them."""
        if self.engine.name != "generate":
            return []
        return [hash_obj({"backend": self.backend, **self._legacy_settings()})[:16]]

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
        self.attach(processor, model)

    def attach(self, processor: Any, model: Any) -> None:
        """Use an already loaded processor and model (`load` calls this; so can benchmarks
        that build a model in memory); picks plain generate when the engine cannot serve it."""
        model.eval()
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not self.greedy:
            torch.manual_seed(self.seed)
        self.processor, self.hf_model = processor, model
        reason = self.engine.unsupported(model, self.generate_kwargs())
        if reason:  # the engine is in the store's key: falling back now would mislabel texts
            raise ConfigError(f"describe.options.engine: engine {self.engine.name!r} cannot "
                              f"serve {self.model} ({reason}); set engine: generate (or auto)")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.preprocess_workers,
                                            thread_name_prefix="preprocess")

    def _process_in_worker(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> Any:
        """Chat-templated, left-padded model inputs in the model's dtype, on the CPU."""
        # a fast tokenizer called from two threads at once fails ("Already borrowed")
        if getattr(self._local, "processor", None) is None:
            self._local.processor = copy.deepcopy(self.processor)
        processor = self._local.processor
        chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
                 for p in prompts]
        texts = processor.apply_chat_template(chats, add_generation_prompt=True)
        # one image per prompt, nested: the form every processor accepts
        inputs = processor(text=texts, images=[[img] for img in images], padding=True,
                           return_tensors="pt")
        return inputs.to(dtype=self.torch_dtype)

    def prepare(self, images: list[Image.Image], titles: list[str]) -> PreparedBatch:
        """Prompts and processor outputs, chunked as the engine wants them, made on CPU
        threads. An engine that groups gets same-sized images (one image grid, equal token
        counts) together, so its chunks need little or no padding."""
        self.load()
        prompts = self.prompt.texts(titles)
        order = list(range(len(images)))
        if self.engine.groups:
            order.sort(key=lambda i: (images[i].width / images[i].height,
                                      images[i].width * images[i].height, len(prompts[i])))
        size = self.engine.chunk_items or len(order)
        groups = [order[i:i + size] for i in range(0, len(order), size)]
        assert self._pool is not None
        chunks = list(self._pool.map(
            lambda g: self._process_in_worker([images[i] for i in g], [prompts[i] for i in g]),
            groups))
        return PreparedBatch(order, chunks, prompts)

    def generate_prepared(self, prepared: PreparedBatch) -> list[list[int]]:
        """Each item's new token ids (up to its EOS), in the batch's order."""
        chunks = [chunk.to(self.device) for chunk in prepared.chunks]
        kwargs = self.generate_kwargs()
        new_ids = self.engine.generate(self.hf_model, chunks, **kwargs)
        eos = kwargs.get("eos_token_id", self.hf_model.generation_config.eos_token_id)
        eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        rows = [strip_after_eos(row, eos_ids) for ids in new_ids for row in ids.tolist()]
        out: list[list[int]] = [[]] * len(rows)
        for position, row in zip(prepared.order, rows):
            out[position] = row
        return out

    def generate_ids(self, images: list[Image.Image], titles: list[str]) -> list[list[int]]:
        """Each item's new token ids up to its EOS (benchmarks compare engines with these)."""
        return self.generate_prepared(self.prepare(images, titles))

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
        return self.describe_prepared(self.prepare(images, titles))

    def describe_prepared(self, prepared: PreparedBatch) -> list[str | Exception]:
        texts = self.processor.batch_decode(self.generate_prepared(prepared),
                                            skip_special_tokens=True)
        return self.clean(texts, prepared.prompts)

    def close(self) -> None:
        self.engine.release()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
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
