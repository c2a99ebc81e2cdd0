"""The encode stage's encoders on a Ray cluster (`encode.scale.engine: ray`, docs/ray.md).

The driver's own encoder objects, never loaded there, travel to the actors, which load
the network once and embed block after block; CPU tasks load and letterbox the images.
The driver assembles the rows by item id into the same arrays the local engine returns,
so the embedding files, and their cache keys, do not depend on the engine.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lvlmrec.cluster import batch_dataset, object_array, on_workers, ray_session, stream
from lvlmrec.config import ScaleConfig
from lvlmrec.encode.image import ImageEncoder
from lvlmrec.encode.text import TextEncoder
from lvlmrec.errors import DataError, StageError

#: model batches per text block: texts are cheap to ship, blocks cost a few ms each
TEXT_BATCHES_PER_BLOCK = 8


class RayEncoders:
    """`texts` and `images` as the local engine computes them; Ray starts on first use."""

    def __init__(self, scale: ScaleConfig, show_progress: bool = True):
        self.scale = scale
        self.show_progress = show_progress
        self._session = contextlib.ExitStack()
        self._connected = False

    def _connect(self) -> None:
        if not self._connected:
            self._session.enter_context(ray_session(self.scale))
            self._connected = True

    def close(self) -> None:
        self._session.close()
        self._connected = False

    def texts(self, encoder: TextEncoder, sources: list[list[str]]) -> list[np.ndarray]:
        """Float32 (n, dim) embeddings per list of texts; empty texts give zero rows.

        One actor pool (one model load per actor) serves every list."""
        self._connect()
        texts = [text for source in sources for text in source]
        step = encoder.batch_size * TEXT_BATCHES_PER_BLOCK
        starts = np.cumsum([0] + [len(source) for source in sources])
        # blocks of `step` texts, none spanning two sources
        bounds = [b for s, e in zip(starts, starts[1:]) for b in range(s, e, step)] + [len(texts)]
        dataset = batch_dataset({"row": range(len(texts)), "text": texts}, bounds, _text_rows,
                                self.scale)
        dataset = on_workers(dataset, TextWorker, self.scale, len(bounds) - 1, encoder=encoder)
        out: np.ndarray | None = None
        with self._bar(len(texts), "Encoding texts", "text") as bar:
            for block in stream(dataset):
                if out is None:  # the first block tells the dimension
                    out = np.zeros((len(texts), block["embedding"].shape[1]), dtype=np.float32)
                out[block["row"]] = block["embedding"]
                bar.update(len(block["row"]))
        if out is None:
            raise StageError("no texts to encode")
        return [out[start:end] for start, end in zip(starts, starts[1:])]

    def images(self, encoder: ImageEncoder, paths: list[Any]) -> tuple[np.ndarray, dict[int, str]]:
        """Float32 (n, dim) features and {row: why} for images that could not be read
        (their rows are zero)."""
        self._connect()
        bounds = [*range(0, len(paths), encoder.effective_batch_size), len(paths)]
        dataset = batch_dataset({"row": range(len(paths)),
                                 "path": [None if p is None else str(p) for p in paths]},
                                bounds, _prepare_images, self.scale, encoder=encoder)
        dataset = on_workers(dataset, ImageWorker, self.scale, len(bounds) - 1,
                             encoder=encoder)
        out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
        failures: dict[int, str] = {}
        with self._bar(len(paths), "Encoding images", "img") as bar:
            for block in stream(dataset):
                out[block["row"]] = block["embedding"]
                failures.update((int(r), e) for r, e in zip(block["row"], block["error"]) if e)
                bar.update(len(block["row"]))
        return out, dict(sorted(failures.items()))

    def _bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(total=total, desc=f"{desc} [ray]", unit=unit, disable=not self.show_progress)


def _text_rows(rows: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    return {"row": np.asarray(rows["row"], dtype=np.int64),
            "text": object_array([t or "" for t in rows["text"]])}


def _prepare_images(rows: dict[str, list[Any]], encoder: ImageEncoder) -> dict[str, np.ndarray]:
    """CPU task: load and letterbox a batch of images; a bad one keeps its error instead."""
    size = encoder.image_size
    pixels = np.zeros((len(rows["path"]), size, size, 3), dtype=np.uint8)
    errors = []
    for i, path in enumerate(rows["path"]):
        try:
            pixels[i] = encoder.prepare(path)
            errors.append("")  # Ray Data turns a column of None into floats
        except DataError as err:
            errors.append(str(err))
    return {"row": np.asarray(rows["row"], dtype=np.int64), "pixels": pixels,
            "error": object_array(errors)}


class TextWorker:
    """A Ray actor holding one text encoder, loaded on its first block."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.encoder.encode(block["text"].tolist(), show_progress_bar=False)
        return {"row": block["row"], "embedding": emb}


class ImageWorker:
    """A Ray actor holding one image encoder; one forward pass per batch, as locally."""

    def __init__(self, encoder: ImageEncoder):
        self.encoder = encoder

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = np.zeros((len(block["row"]), self.encoder.dim), dtype=np.float32)
        readable = np.array([not e for e in block["error"]], dtype=bool)
        for batch_id in np.unique(block["batch"]):
            where = readable & (block["batch"] == batch_id)
            if where.any():
                emb[where] = self.encoder.features(block["pixels"][where])
        return {"row": block["row"], "embedding": emb, "error": block["error"]}
