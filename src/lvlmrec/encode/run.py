"""The encode stage: text embeddings of every text source, image embeddings of every image.

Each embedding is cached by a key over the model and its exact inputs, so changing the
describer re-encodes descriptions but never the images.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from lvlmrec.config import EncodeConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.run import read_active
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import embedding_meta, save_embedding
from lvlmrec.workdir import Workdir, hash_obj


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
    outputs: list[Path] = []
    text_encoder = None
    for source, texts in text_inputs(workdir, ds).items():
        name = f"text_{source}"
        key = hash_obj({"model": cfg.text_model, "texts": hash_obj(texts)})
        meta = embedding_meta(workdir, name)
        if meta is None or meta.get("key") != key:
            if text_encoder is None:
                from lvlmrec.encode.text import TextEncoder

                text_encoder = TextEncoder(cfg.text_model, device=cfg.device,
                                           batch_size=cfg.text_batch_size)
            console.print(f"  encoding {source} texts with {cfg.text_model}")
            emb = text_encoder.encode(texts, show_progress_bar=show_progress)
            save_embedding(workdir, name, emb, {"key": key, "model": text_encoder.model_id,
                                                "source": source, "normalised": True})
        else:
            console.print(f"  [dim]{name}: cached[/dim]")
        outputs += [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]
    paths = ds.image_paths(workdir)
    if cfg.images and any(p is not None for p in paths):
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
            emb = encoder.encode(paths, show_progress_bar=show_progress)
            failures = getattr(encoder, "last_failures", [])
            if failures:
                console.print(f"  [yellow]{len(failures)} images could not be read; "
                              f"their rows are zero[/yellow]")
            save_embedding(workdir, name, emb, {"key": key, "model": cfg.image_model,
                                                "source": "image", "normalised": False,
                                                "n_unreadable": len(failures)})
        else:
            console.print(f"  [dim]{name}: cached[/dim]")
        outputs += [workdir.embedding_path(name), workdir.embedding_path(name).with_suffix(".json")]
    return outputs


def _image_source_name(model: str) -> str:
    """`efficientnet-lite0` -> `efficientnet`: the source name strategies use."""
    return model.split("-")[0].split("/")[-1].lower()
