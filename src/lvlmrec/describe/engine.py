"""Generation engines of the `hf` backend: plain `generate`, and `fast` for big GPUs.

Describing a catalog with LLaVA-NeXT at 672x672 is a prefill of ~2,950 tokens per item (an
image is 2,928 of them) and then ~150 decode steps. Plain `model.generate` pays three
avoidable costs there: its dynamic KV cache grows by concatenation, copying every row's
whole cache at every step; every step runs the model's Python (32 layers of it) on the
CPU while the GPU waits; and a batch of mixed images is left-padded to its longest prompt.
The `fast` engine keeps the model's own forward (so its outputs are those of `generate`)
and changes only how it is driven:

- the describer orders a batch so that each prefill micro-batch (`prefill_batch` items)
  holds images of one size, hence one image grid and no padding, and preprocesses them on
  CPU threads ahead of the GPU (`HFDescriber.prepare`);
- each micro-batch is prefilled on its own (peak memory stays that of a few items), and
  its keys and values are copied into one preallocated static cache holding a whole
  decode wave, each row right-aligned at a common column, as left padding would put it;
- the wave then decodes together: one token per row per step, positions and a boolean
  mask per row, rows that emitted EOS padded as `generate` pads them; on CUDA the step is
  captured once in a CUDA graph and replayed, so a step costs the GPU's time only;
- a wave holds as many rows as fit in free GPU memory (KV bytes per token x tokens per
  row); a larger batch decodes in several equal waves.

Greedy tokens equal `generate`'s (tested on CPU in fp32; on a GPU in bf16 only once
benchmarks/gpu_check.sh has run there, see `GPU_VERIFIED_MODEL_TYPES`). The engine is part
of the store's key all the same: in bf16, batch shapes alone can flip near-tied tokens.
What the engine cannot reproduce exactly (sampling, beam search, repetition penalties, an
unverified model family) runs through plain `generate`, with the reason logged, when it
is known before the model loads; found only at load, it is a configuration error.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Model families the engine is verified on (tests/test_describe_engine.py): every input
#: tensor has one row per item, and positions are one index per token.
SUPPORTED_MODEL_TYPES = frozenset({"llava_next", "idefics3"})
#: Model families whose greedy tokens `fast` matched against `generate` on a real GPU, in
#: bf16, with the measurement that showed it (benchmarks/gpu_check.sh). The `auto` engine
#: picks `fast` only for these; empty until a GPU run is committed under
#: benchmarks/results/, so until then `auto` means plain `generate` everywhere.
GPU_VERIFIED_MODEL_TYPES: dict[str, str] = {}
Chunk = Mapping[str, torch.Tensor]  # one processor call's output, on the model's device

# generate() settings that add a logits processor the fast engine does not implement,
# with their neutral values (any other value sends the describer to plain generate)
_NEUTRAL_SETTINGS: dict[str, tuple[Any, ...]] = {
    "do_sample": (None, False), "num_beams": (None, 1), "num_return_sequences": (None, 1),
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "sequence_bias": (None,), "guidance_scale": (None, 1.0),
    "min_length": (None, 0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False), "exponential_decay_length_penalty": (None,),
    "begin_suppress_tokens": (None,), "stop_strings": (None,), "max_time": (None,),
    "watermarking_config": (None,), "penalty_alpha": (None,), "dola_layers": (None,),
    "prompt_lookup_num_tokens": (None,), "assistant_early_exit": (None,),
}
_COLUMN_MULTIPLE = 64  # cache lengths are rounded up to this, so waves share CUDA graphs


class Unsupported(Exception):
    """Why the fast engine cannot serve a model or a setting; the describer then falls back."""


class GenerateEngine(ABC):
    """The generation step of the `hf` backend: processed batches in, new token ids out."""

    name: str = ""
    #: items per processor call (and prefill micro-batch); None: the whole batch in one call
    chunk_items: int | None = None
    #: whether the describer should order items so that each chunk holds same-sized images
    groups: bool = False

    def unsupported(self, model: Any, generate_kwargs: dict[str, Any]) -> str | None:
        """Why this engine cannot reproduce `generate` for this model and settings, or None."""
        return None

    @abstractmethod
    def generate(self, model: Any, chunks: Sequence[Chunk], **generate_kwargs: Any
                 ) -> list[torch.Tensor]:
        """Per chunk, its rows' new token ids (rows, n_new): after a row's EOS, pad ids."""

    def release(self) -> None:
        """Free what the engine keeps between calls (a KV cache)."""


class PlainGenerate(GenerateEngine):
    """`model.generate`, one call per chunk (the describer makes one chunk per batch)."""

    name = "generate"

    def generate(self, model: Any, chunks: Sequence[Chunk], **generate_kwargs: Any
                 ) -> list[torch.Tensor]:
        with torch.inference_mode():
            # with left padding every row's new tokens start at one column
            return [model.generate(**chunk, **generate_kwargs)[:, chunk["input_ids"].shape[1]:]
                    for chunk in chunks]


@dataclass(frozen=True)
class GreedySettings:
    """What greedy `generate` does with the logits at each step, resolved once."""

    max_new_tokens: int
    min_new_tokens: int
    eos_ids: tuple[int, ...]
    pad_id: int
    suppress_ids: tuple[int, ...]

    @classmethod
    def resolve(cls, model: Any, generate_kwargs: dict[str, Any]) -> GreedySettings:
        """The model's generation config updated with the call's kwargs, as generate merges
        them; raises Unsupported for anything beyond greedy search with EOS, pad,
        min_new_tokens and suppress_tokens."""
        config = copy.deepcopy(model.generation_config)
        unused = config.update(**generate_kwargs)
        if unused:
            raise Unsupported(f"generate arguments it does not handle: {sorted(unused)}")
        for field, neutral in _NEUTRAL_SETTINGS.items():
            value = getattr(config, field, None)
            if value not in neutral:
                raise Unsupported(f"generation setting {field}={value!r} (greedy search only)")
        if config.max_new_tokens is None:
            raise Unsupported("max_new_tokens is not set")
        eos = config.eos_token_id
        eos_ids = tuple(int(t) for t in ([] if eos is None else [eos] if isinstance(eos, int)
                                         else eos))
        pad = config.pad_token_id
        pad_id = int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0)
        return cls(int(config.max_new_tokens), int(config.min_new_tokens or 0), eos_ids, pad_id,
                   tuple(int(t) for t in (config.suppress_tokens or ())))

    def choose(self, logits: torch.Tensor, step: int, suppress: torch.Tensor,
               eos: torch.Tensor) -> torch.Tensor:
        """Each row's greedy token as `generate` picks its `step`-th new token (`suppress`
        and `eos`: these settings' ids, on the logits' device)."""
        scores = logits.float()
        if suppress.numel():
            scores = scores.index_fill(1, suppress, -math.inf)
        if step < self.min_new_tokens and eos.numel():
            scores = scores.index_fill(1, eos, -math.inf)
        return scores.argmax(-1)


def strip_after_eos(ids: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """A row's new tokens up to and including its first EOS (the rest is padding)."""
    ids = [int(t) for t in ids]
    stops = set(eos_ids)
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i + 1]
    return ids


def plan_waves(rows: Sequence[int], capacity: int | None) -> list[list[int]]:
    """Consecutive chunks grouped into decode waves of at most `capacity` rows (a chunk
    larger than that is a wave of its own), as few as that allows and of similar sizes,
    so that no wave decodes a small remainder alone; None: one wave."""
    total = sum(rows)
    if not capacity or total <= capacity:
        return [list(range(len(rows)))] if rows else []
    target = math.ceil(total / math.ceil(total / capacity))
    waves: list[list[int]] = [[]]
    filled = 0
    for i, n in enumerate(rows):
        if waves[-1] and (filled >= target or filled + n > capacity):
            waves.append([])
            filled = 0
        waves[-1].append(i)
        filled += n
    return waves


def decode_capacity(free_bytes: int, bytes_per_row: int, reserve_bytes: int,
                    fraction: float) -> int:
    """Rows whose KV cache fits in `fraction` of the free memory left after `reserve_bytes`."""
    usable = max(0.0, (free_bytes - reserve_bytes) * fraction)
    return max(1, int(usable // max(bytes_per_row, 1)))


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one token takes in the text model's cache."""
    text = model.config.get_text_config(decoder=True)
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def _cache_argument(model: Any) -> str:
    """The forward's name for the KV cache: `cache` (transformers >= 5.2x) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise Unsupported("its forward takes no KV cache argument")


def _static_cache(batch: int, columns: int, prototype: Any) -> Any:
    """A static cache shaped like `prototype` (a filled DynamicCache), `batch` rows wide."""
    from transformers.cache_utils import Cache, StaticLayer

    layers = []
    for source in prototype.layers:
        layer = StaticLayer(max_cache_len=columns)
        keys, values = source.keys, source.values
        layer.lazy_initialization(keys.new_empty((batch, keys.shape[1], 0, keys.shape[3])),
                                  values.new_empty((batch, values.shape[1], 0, values.shape[3])))
        layers.append(layer)
    return Cache(layers=layers)


def _check_static_layer() -> None:
    """The engine writes a static layer's tensors and write position directly."""
    try:
        from transformers.cache_utils import Cache, StaticLayer  # noqa: F401
    except ImportError:
        raise Unsupported("this transformers has no StaticLayer cache (needs transformers 5)") \
            from None
    layer = StaticLayer(max_cache_len=1)
    probe = torch.zeros(1, 1, 0, 1)
    layer.lazy_initialization(probe, probe)
    if not all(isinstance(getattr(layer, name, None), torch.Tensor)
               for name in ("keys", "values", "cumulative_length")):
        raise Unsupported("this transformers' StaticLayer lacks keys/values/cumulative_length")


class _Wave:
    """One decode wave's static KV cache and step inputs; on CUDA, its captured step.

    Kept between calls while waves keep the same shape, so the CUDA graph is captured once.
    """

    def __init__(self, model: Any, rows: int, columns: int, prototype: Any, cuda_graph: bool):
        self.model, self.rows, self.columns = model, rows, columns
        self.cache = _static_cache(rows, columns, prototype)
        device = prototype.layers[0].keys.device
        self.mask = torch.zeros(rows, 1, 1, columns, dtype=torch.bool, device=device)
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.cache_argument = _cache_argument(model)
        self.cuda_graph = cuda_graph and device.type == "cuda"
        self.graph: Any = None
        self.graph_logits: torch.Tensor | None = None
        self.warm_steps = 0

    def matches(self, model: Any, rows: int, columns: int) -> bool:
        return self.model is model and self.rows == rows and self.columns == columns

    def start(self) -> None:
        self.mask.zero_()

    def put(self, row: int, prefill_cache: Any, attention_mask: torch.Tensor, end: int) -> None:
        """Copy a prefilled micro-batch's keys and values into rows row.., right-aligned at
        column `end`; padding columns hold zeros and stay masked."""
        n, length = attention_mask.shape
        valid = attention_mask.bool()
        keep = valid[:, None, :, None]
        for target, source in zip(self.cache.layers, prefill_cache.layers):
            target.keys[row:row + n, :, end - length:end] = torch.where(keep, source.keys, 0)
            target.values[row:row + n, :, end - length:end] = torch.where(keep, source.values, 0)
        self.mask[row:row + n, 0, 0, end - length:end] = valid

    def begin_decode(self, end: int, first_tokens: torch.Tensor, lengths: torch.Tensor) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(end)
        self.ids.copy_(first_tokens[:, None])
        self.positions.copy_(lengths[:, None])

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.ids, attention_mask=self.mask,
                         position_ids=self.positions, use_cache=True,
                         **{self.cache_argument: self.cache})
        return out.logits[:, -1]

    def step(self, column: int) -> torch.Tensor:
        """Logits of the next token of every row, the current ones written at `column`."""
        self.mask[:, 0, 0, column] = True
        if self.graph is not None:
            self.graph.replay()
            return self.graph_logits
        if not self.cuda_graph:
            return self._forward()
        if self.warm_steps < 2:  # real steps, run on a side stream as capture requires
            self.warm_steps += 1
            main, side = torch.cuda.current_stream(), torch.cuda.Stream()
            side.wait_stream(main)
            with torch.cuda.stream(side):
                logits = self._forward()
            main.wait_stream(side)
            logits.record_stream(main)
            return logits
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.graph_logits = self._forward()
        except Exception as err:  # noqa: BLE001 - a model that cannot be captured runs eagerly
            log.warning("fast engine: decoding without a CUDA graph (%s: %s)",
                        type(err).__name__, err)
            self.cuda_graph = False
            return self._forward()
        self.graph = graph
        self.graph.replay()
        return self.graph_logits

    def advance(self, tokens: torch.Tensor) -> None:
        self.ids.copy_(tokens[:, None])
        self.positions += 1


class FastEngine(GenerateEngine):
    """Grouped, micro-batched prefill into a static cache; batched (CUDA-graph) decode.

    prefill_batch: items per prefill micro-batch (and per processor call).
    max_decode_batch: cap on the rows decoding together (default: as many as fit in free
        GPU memory; on a CPU, the whole batch).
    cuda_graphs: capture the decode step in a CUDA graph (CUDA only).
    memory_fraction: share of the free GPU memory (after a prefill reserve) the KV cache may take.
    check_every: decode steps between checks whether every row has stopped (each check
        waits for the GPU; between them, finished rows only emit padding).
    """

    name = "fast"
    groups = True

    def __init__(self, prefill_batch: int = 4, max_decode_batch: int | None = None,
                 cuda_graphs: bool = True, memory_fraction: float = 0.9, check_every: int = 16):
        if prefill_batch < 1 or (max_decode_batch is not None and max_decode_batch < 1):
            raise ValueError("prefill_batch and max_decode_batch must be at least 1")
        if not 0 < memory_fraction <= 1:
            raise ValueError("memory_fraction must be in (0, 1]")
        self.chunk_items = prefill_batch if max_decode_batch is None else min(
            prefill_batch, max_decode_batch)
        self.max_decode_batch = max_decode_batch
        self.cuda_graphs = cuda_graphs
        self.memory_fraction = memory_fraction
        self.check_every = max(1, check_every)
        self._wave: _Wave | None = None

    @property
    def last_wave(self) -> dict[str, Any] | None:
        """The shape of the decode wave it holds (rows, cache columns, CUDA graph or not)."""
        wave = self._wave
        return None if wave is None else {"rows": wave.rows, "columns": wave.columns,
                                          "cuda_graph": wave.graph is not None}

    def release(self) -> None:
        self._wave = None

    def unsupported(self, model: Any, generate_kwargs: dict[str, Any]) -> str | None:
        model_type = getattr(model.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            return (f"model type {model_type!r} is not one it is verified on "
                    f"({', '.join(sorted(SUPPORTED_MODEL_TYPES))})")
        try:
            _cache_argument(model)
            GreedySettings.resolve(model, generate_kwargs)
            _check_static_layer()
        except Unsupported as err:
            return str(err)
        return None

    def generate(self, model: Any, chunks: Sequence[Chunk], **generate_kwargs: Any
                 ) -> list[torch.Tensor]:
        settings = GreedySettings.resolve(model, generate_kwargs)
        lengths = [chunk["input_ids"].shape[1] for chunk in chunks]
        rows = [chunk["input_ids"].shape[0] for chunk in chunks]
        window = getattr(model.config.get_text_config(decoder=True), "sliding_window", None)
        out: list[torch.Tensor] = [torch.empty(0)] * len(chunks)
        with torch.inference_mode():
            capacity = self._capacity(model, chunks, max(lengths, default=0), settings)
            for wave in plan_waves(rows, capacity):
                columns = _round_up(max(lengths[i] for i in wave) + settings.max_new_tokens)
                wave_chunks = [chunks[i] for i in wave]
                if window is not None and columns > window:
                    # beyond the window a full static cache would attend where the model does not
                    results = PlainGenerate().generate(model, wave_chunks, **generate_kwargs)
                else:
                    results = self._run_wave(model, wave_chunks, columns, settings)
                for i, result in zip(wave, results):
                    out[i] = result
        return out

    def _capacity(self, model: Any, chunks: Sequence[Chunk], longest: int,
                  settings: GreedySettings) -> int | None:
        """Rows per decode wave: the cap, bounded on CUDA by the free memory."""
        device = chunks[0]["input_ids"].device if chunks else torch.device("cpu")
        if device.type != "cuda":
            return self.max_decode_batch
        per_token = kv_bytes_per_token(model)
        per_row = per_token * _round_up(longest + settings.max_new_tokens)
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        if self._wave is not None:  # its cache is freed when the next wave's shape differs
            free += self._wave.rows * self._wave.columns * per_token
        text = model.config.get_text_config(decoder=True)
        prefill_tokens = self.chunk_items * longest
        # the prefill's own cache, its copy, and activations (hidden and MLP states) + 2 GiB
        reserve = prefill_tokens * (2 * per_token + model.dtype.itemsize * (
            24 * text.hidden_size + 4 * getattr(text, "intermediate_size", 4 * text.hidden_size)))
        capacity = decode_capacity(free, per_row, reserve + (2 << 30), self.memory_fraction)
        return min(capacity, self.max_decode_batch or capacity)

    def _wave_for(self, model: Any, rows: int, columns: int, prototype: Any) -> _Wave:
        if self._wave is None or not self._wave.matches(model, rows, columns):
            self._wave = None  # free the old cache before allocating the new one
            self._wave = _Wave(model, rows, columns, prototype, self.cuda_graphs)
        return self._wave

    def _run_wave(self, model: Any, chunks: Sequence[Chunk], columns: int,
                  settings: GreedySettings) -> list[torch.Tensor]:
        from transformers import DynamicCache

        end = max(chunk["input_ids"].shape[1] for chunk in chunks)  # prompts end at this column
        total = sum(chunk["input_ids"].shape[0] for chunk in chunks)
        device = chunks[0]["input_ids"].device
        cache_argument = _cache_argument(model)
        eos = torch.tensor(settings.eos_ids, dtype=torch.long, device=device)
        suppress = torch.tensor(settings.suppress_ids, dtype=torch.long, device=device)
        accepts_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        first, lengths = [], []
        wave: _Wave | None = None
        row = 0
        for chunk in chunks:
            mask = chunk["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate
            prefill_cache = DynamicCache()
            extra = {"logits_to_keep": 1} if accepts_keep else {}
            out = model(**chunk, position_ids=positions, use_cache=True,
                        **{cache_argument: prefill_cache}, **extra)
            if wave is None:
                wave = self._wave_for(model, total, columns, prefill_cache)
                wave.start()
            wave.put(row, prefill_cache, mask, end)
            first.append(settings.choose(out.logits[:, -1], 0, suppress, eos))
            lengths.append(mask.sum(-1))
            row += mask.shape[0]
            del out, prefill_cache
        assert wave is not None
        tokens = torch.cat(first)
        new = torch.full((total, settings.max_new_tokens), settings.pad_id, dtype=torch.long,
                         device=device)
        new[:, 0] = tokens
        never = settings.max_new_tokens  # finish step of a row still running
        running = ~torch.isin(tokens, eos)
        # torch.where, not boolean indexing: no wait for the GPU
        finished_at = torch.where(running, never, 0)
        wave.begin_decode(end, tokens, torch.cat(lengths))
        for step in range(1, settings.max_new_tokens):
            if step % self.check_every == 0 and not bool(running.any()):
                break
            logits = wave.step(end + step - 1)
            tokens = torch.where(running, settings.choose(logits, step, suppress, eos),
                                 settings.pad_id)
            new[:, step] = tokens
            stopped = running & torch.isin(tokens, eos)
            finished_at = torch.where(stopped, step, finished_at)
            running &= ~stopped
            wave.advance(tokens)
        n_new = min(never, int(finished_at.max()) + 1)
        new = new[:, :n_new]
        bounds = [0]
        for chunk in chunks:
            bounds.append(bounds[-1] + chunk["input_ids"].shape[0])
        return [new[a:b] for a, b in zip(bounds, bounds[1:])]


def _round_up(n: int, multiple: int = _COLUMN_MULTIPLE) -> int:
    return -(-n // multiple) * multiple
