"""The encode stage: text embeddings of every text source, image embeddings of every image.

Each embedding is cached by a key over the model and its exact inputs, so changing the
describer re-encodes descriptions but never the images. The encoders run in this process
or on a Ray cluster (`encode.scale`, docs/ray.md): same files, same keys.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from lvlmrec.config import EncodeConfig, ScaleConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import read_active
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import embedding_meta, save_embedding
from lvlmrec.workdir import Workdir, hash_obj

if TYPE_CHECKING:
    from lvlmrec.encode.image import ImageEncoder
    from lvlmrec.encode.ray_engine import RayEncoders
    from lvlmrec.encode.text import TextEncoder


def text_inputs(workdir: Workdir, ds: Dataset) -> dict[str, list[str]]:
    """Texts per text source, aligned with item ids ("" where an item has none)."""
    titles = ds.items["title"].fillna("").astype(str).tolist()
    out = {"title": titles}
    meta_text = ds.items["text"].fillna("").astype(str).tolist()
    if any(meta_text):
        out["metadata"] = [_join(t, m) for t, m in zip(titles, meta_text)]
    active = read_active(workdir)
    if active and active.get("n_texts", 0) > 0 and workdir.descriptions_db.is_file():
        with DescriptionStore(workdir.descriptions_db) as store:
            texts = store.texts(active["model"], active["prompt_hash"])
        desc = [texts.get(i, "") for i in range(ds.n_items)]
        out["description"] = desc
        out["title_description"] = [_join(t, d) if d else "" for t, d in zip(titles, desc)]
    return out


def _join(first: str, second: str) -> str:
    first, second = first.strip(), second.strip()
    if not first or not second:
        return first or second
    return f"{first}. {second}" if not first.endswith((".", "!", "?")) else f"{first} {second}"


def encode_all(cfg: EncodeConfig, workdir: Workdir, ds: Dataset, console: Console,
               show_progress: bool = True) -> list[Path]:
    with contextlib.closing(_engine(cfg.scale, show_progress, workdir)) as engine:
        return (_encode_texts(cfg, workdir, ds, console, engine)
                + _encode_images(cfg, workdir, ds, console, engine))


def _encode_texts(cfg: EncodeConfig, workdir: Workdir, ds: Dataset, console: Console,
                  engine: LocalEncoders | RayEncoders) -> list[Path]:
    from lvlmrec.encode.text import TextEncoder

    outputs: list[Path] = []
    pending: dict[str, tuple[str, list[str]]] = {}  # source -> (key, texts)
    for source, texts in text_inputs(workdir, ds).items():
        name = f"text_{source}"
        key = hash_obj({"model": cfg.text_model, "texts": hash_obj(texts)})
        meta = embedding_meta(workdir, name)
        if meta is None or meta.get("key") != key:
            pending[source] = (key, texts)
        else:
            console.print(f"  [dim]{name}: cached[/dim]")
        outputs += [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]
    if pending:
        encoder = TextEncoder(cfg.text_model, device=cfg.device, batch_size=cfg.text_batch_size)
        console.print(f"  encoding {', '.join(pending)} texts with {cfg.text_model}")
        embeddings = engine.texts(encoder, [texts for _, texts in pending.values()])
        for (source, (key, _)), emb in zip(pending.items(), embeddings):
            save_embedding(workdir, f"text_{source}", emb, {"key": key, "model": encoder.model_id,
                                                            "source": source, "normalised": True})
    return outputs


def _encode_images(cfg: EncodeConfig, workdir: Workdir, ds: Dataset, console: Console,
                   engine: LocalEncoders | RayEncoders) -> list[Path]:
    paths = ds.image_paths(workdir)
    if not cfg.images or all(p is None for p in paths):
        return []
    name = f"image_{_image_source_name(cfg.image_model)}"
    fingerprints = [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                    if p is not None and p.is_file() else None for p in paths]
    from lvlmrec.encode.image import PREPROCESSING_VERSION, ImageEncoder

    encoder = ImageEncoder(cfg.image_model, device=cfg.device,
                           batch_size=cfg.image_batch_size, image_size=cfg.image_size)
    key = hash_obj({"model": encoder.model_id, "preprocessing": PREPROCESSING_VERSION,
                    "images": hash_obj(fingerprints)})
    meta = embedding_meta(workdir, name)
    if meta is None or meta.get("key") != key:
        console.print(f"  encoding {sum(p is not None for p in paths)} images "
                      f"with {cfg.image_model}")
        emb, failures = engine.images(encoder, paths)
        if failures:
            console.print(f"  [yellow]{len(failures)} images could not be read; "
                          f"their rows are zero[/yellow]")
        save_embedding(workdir, name, emb, {"key": key, "model": cfg.image_model,
                                            "source": "image", "normalised": False,
                                            "n_unreadable": len(failures)})
    else:
        console.print(f"  [dim]{name}: cached[/dim]")
    return [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]


class LocalEncoders:
    """The encoders run in this process (the default engine). Images go through the
    workdir's shared image pass (encode/image_pass.py): those the describe stage already
    ran through EfficientNet are read from its cache."""

    def __init__(self, show_progress: bool = True, workdir: Workdir | None = None):
        self.show_progress = show_progress
        self.workdir = workdir

    def texts(self, encoder: TextEncoder, sources: list[list[str]]) -> list[np.ndarray]:
        return [encoder.encode(texts, show_progress_bar=self.show_progress)
                for texts in sources]

    def images(self, encoder: ImageEncoder, paths: list[Path | None]
               ) -> tuple[np.ndarray, dict[int, str]]:
        from lvlmrec.encode.image_pass import ImagePassCache, image_pass

        cache = ImagePassCache.for_workdir(self.workdir) if self.workdir else None
        try:
            out = image_pass(encoder, paths, cache, show_progress_bar=self.show_progress)
        finally:
            if cache is not None:
                cache.close()
        return out.features, out.failures

    def close(self) -> None:
        pass


def _engine(scale: ScaleConfig, show_progress: bool,
            workdir: Workdir | None = None) -> LocalEncoders | RayEncoders:
    if scale.engine == "ray":
        from lvlmrec.encode.ray_engine import RayEncoders

        return RayEncoders(scale, show_progress)
    return LocalEncoders(show_progress, workdir)


def _image_source_name(model: str) -> str:
    """`efficientnet-lite0` -> `efficientnet`: the source name strategies use."""
    return model.split("-")[0].split("/")[-1].lower()
