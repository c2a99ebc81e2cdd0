"""The encode stage: text embeddings of every text source, image embeddings of every image.

Each embedding is cached by a key over the model and its exact inputs, so changing the
describer re-encodes descriptions but never the images. The encoders run in this process
or on a Ray cluster (`encode.scale`, docs/ray.md): same files, same keys.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from lvlmrec.config import EncodeConfig, ScaleConfig
from lvlmrec.data.schema import Dataset, image_hashes
from lvlmrec.describe.run import description_sets
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import embedding_meta, save_embedding, text_embedding_name
from lvlmrec.workdir import ContentHasher, Workdir, hash_obj

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
    for source, texts in describer_texts(workdir, ds.n_items).items():
        out[source] = texts
        if source.partition(":")[0] == "description":
            title_source = source.replace("description", "title_description", 1)
            out[title_source] = [_join(t, d) if d else "" for t, d in zip(titles, texts)]
    return out


def describer_texts(workdir: Workdir, n_items: int) -> dict[str, list[str]]:
    """`description` (the first describer's) and, with several describers, each one's
    `description:<name>` and `attributes:<name>`, aligned with item ids."""
    from lvlmrec.describe.structured import render_attributes

    configured = description_sets(workdir)
    sets = {n: r for n, r in configured.items()
            if r.get("n_texts", 0) > 0 and r.get("status", "ok") == "ok"}
    if not sets or not workdir.descriptions_db.is_file():
        return {}
    out: dict[str, list[str]] = {}
    with DescriptionStore(workdir.descriptions_db) as store:
        for name, rec in sets.items():
            texts = store.texts(rec["model"], rec["prompt_hash"])
            desc = [texts.get(j, "") for j in range(n_items)]
            if name == next(iter(configured)):
                out["description"] = desc
            out[f"description:{name}"] = desc
            if rec.get("structured"):
                attrs = store.attributes(rec["model"], rec["prompt_hash"])
                out[f"attributes:{name}"] = [
                    render_attributes(json.loads(attrs[j])) if j in attrs else ""
                    for j in range(n_items)]
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
        name = text_embedding_name(source)
        model = {"model": cfg.text_model}
        if cfg.text_precision != "float32":  # float32 keys stay those of earlier versions
            model["precision"] = cfg.text_precision
        # the batch size, `text_order` and the engine move embeddings only by float
        # rounding: not part of the key, so a workdir's embeddings serve any of them
        key = hash_obj({**model, "texts": hash_obj(texts)})
        meta = embedding_meta(workdir, name)
        if meta is None or meta.get("key") != key:
            pending[source] = (key, texts)
        else:
            console.print(f"  [dim]{name}: cached[/dim]")
        outputs += [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]
    if pending:
        encoder = TextEncoder(cfg.text_model, device=cfg.device, batch_size=cfg.text_batch_size,
                              precision=cfg.text_precision, order=cfg.text_order)
        console.print(f"  encoding {', '.join(pending)} texts with {cfg.text_model}")
        # a source with the same texts as another (`description` and the first describer's
        # `description:<name>`) is encoded once
        unique = {key: texts for key, texts in pending.values()}
        embeddings = dict(zip(unique, engine.texts(encoder, list(unique.values()))))
        for source, (key, _) in pending.items():
            save_embedding(workdir, text_embedding_name(source), embeddings[key],
                           {"key": key, "model": encoder.model_id, "source": source,
                            "normalised": True, "precision": cfg.text_precision,
                            "order": cfg.text_order})
    return outputs


def _encode_images(cfg: EncodeConfig, workdir: Workdir, ds: Dataset, console: Console,
                   engine: LocalEncoders | RayEncoders) -> list[Path]:
    paths = ds.image_paths(workdir)
    if not cfg.images or all(p is None for p in paths):
        return []
    name = f"image_{_image_source_name(cfg.image_model)}"
    hashes = image_hashes(ds.items["image_path"], workdir)
    from lvlmrec.encode.image import PREPROCESSING_VERSION, ImageEncoder

    encoder = ImageEncoder(cfg.image_model, device=cfg.device,
                           batch_size=cfg.image_batch_size, image_size=cfg.image_size)
    # keyed by the images' content, not their paths or times: a copied workdir is cached,
    # an image edited in place is encoded again (only that image: rows of unchanged
    # images are reused from the previous array)
    model_key = hash_obj({"model": encoder.model_id, "preprocessing": PREPROCESSING_VERSION})
    key = hash_obj({"model": model_key, "images": hash_obj(hashes)})
    meta = embedding_meta(workdir, name)
    if meta is None or meta.get("key") != key:
        emb, todo = _reuse_image_rows(workdir, name, meta, model_key, hashes, encoder.dim)
        reused = sum(1 for h in hashes if h) - len(todo)
        console.print(f"  encoding {len(todo)} images with {cfg.image_model}"
                      + (f" ({reused} unchanged, reused)" if reused else ""))
        failures: dict[int, str] = {}
        if todo:
            new, sub_failures = engine.images(encoder, [paths[i] for i in todo])
            emb[todo] = new
            failures = {todo[j]: err for j, err in sub_failures.items()}
        if failures:
            console.print(f"  [yellow]{len(failures)} images could not be read; "
                          f"their rows are zero[/yellow]")
        save_embedding(workdir, name, emb, {"key": key, "model": cfg.image_model,
                                            "source": "image", "normalised": False,
                                            "n_unreadable": len(failures),
                                            "model_key": model_key, "image_hashes": hashes})
    else:
        console.print(f"  [dim]{name}: cached[/dim]")
    return [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]


def _reuse_image_rows(workdir: Workdir, name: str, meta: dict | None, model_key: str,
                      hashes: list[str], dim: int) -> tuple[np.ndarray, list[int]]:
    """The new array with the rows of images whose content was encoded before (same model)
    filled in, and the item ids still to encode."""
    emb = np.zeros((len(hashes), dim), dtype=np.float32)
    old_rows: dict[str, np.ndarray] = {}
    if meta and meta.get("model_key") == model_key and meta.get("image_hashes"):
        old = np.load(workdir.embedding_path(name))
        old_rows = {h: old[i] for i, h in enumerate(meta["image_hashes"])
                    if h not in ("", "missing") and i < len(old) and np.any(old[i])}
    todo = []
    for i, h in enumerate(hashes):
        if h in old_rows:
            emb[i] = old_rows[h]
        elif h:
            todo.append(i)  # a missing file is tried too, so it is counted as unreadable
    return emb, todo


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
        hasher = ContentHasher(self.workdir) if self.workdir else None
        try:
            out = image_pass(encoder, paths, cache, show_progress_bar=self.show_progress,
                             hasher=hasher)
        finally:
            if cache is not None:
                cache.close()
            if hasher is not None:
                hasher.save()
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
