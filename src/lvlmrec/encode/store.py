"""Embedding artifacts: `embeddings/<name>.npy` + `<name>.json`.

Row i is item i, always. Items without the input (no image, no description) get a zero
row and are counted in `n_missing`. The JSON's `key` hashes the model and the exact inputs,
so an embedding is recomputed only when what it encodes changed.

Sources are how representations name their inputs:
  title              -> embeddings/text_title.npy        (item titles)
  description        -> embeddings/text_description.npy  (the describer's texts)
  title_description  -> embeddings/text_title_description.npy
  metadata           -> embeddings/text_metadata.npy     (title + the dataset's own text)
  efficientnet (or any image model name)  -> embeddings/image_<source>.npy
  dataset:<name>                          -> dataset/features/<name>.npy (came with the data)

With several describers (`describe.describers`), each one's texts are sources of their own:
  description:<name>        -> embeddings/text_description__<name>.npy
  title_description:<name>  -> embeddings/text_title_description__<name>.npy
  attributes:<name>         -> embeddings/text_attributes__<name>.npy (structured prompt only)
Plain `description` and `title_description` are the first describer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lvlmrec.errors import StageError
from lvlmrec.workdir import Workdir, read_json, save_npy, write_json

TEXT_SOURCES = ("title", "description", "title_description", "metadata")
#: text sources that exist once per describer, as `<source>:<describer name>`
DESCRIBER_SOURCES = ("description", "title_description", "attributes")


def split_source(source: str) -> tuple[str, str | None]:
    """`description:vlm` -> ("description", "vlm"); sources of no describer -> (source, None)."""
    base, sep, name = source.partition(":")
    if sep and base in DESCRIBER_SOURCES:
        return base, name
    return source, None


def is_text_source(source: str) -> bool:
    return source in TEXT_SOURCES or split_source(source)[1] is not None


def text_embedding_name(source: str) -> str:
    """The embeddings/ file stem of a text source (no ':' in file names)."""
    base, name = split_source(source)
    return f"text_{base}" if name is None else f"text_{base}__{name}"


def save_embedding(workdir: Workdir, name: str, array: np.ndarray,
                   meta: dict[str, Any]) -> list[Path]:
    path = workdir.embedding_path(name)
    array = np.ascontiguousarray(array, dtype=np.float32)
    save_npy(path, array)
    n_missing = int((np.abs(array).sum(axis=1) == 0).sum())
    info = {"name": name, "n_items": int(array.shape[0]), "dim": int(array.shape[1]),
            "n_missing": n_missing, "item_order": "item_id", **meta}
    write_json(path.with_suffix(".json"), info)
    return [path, path.with_suffix(".json")]


def embedding_meta(workdir: Workdir, name: str) -> dict[str, Any] | None:
    meta = workdir.embedding_path(name).with_suffix(".json")
    if not meta.is_file() or not workdir.embedding_path(name).is_file():
        return None
    return read_json(meta)


def list_embeddings(workdir: Workdir) -> list[str]:
    if not workdir.embeddings_dir.is_dir():
        return []
    return sorted(p.stem for p in workdir.embeddings_dir.glob("*.npy"))


def source_file(workdir: Workdir, source: str) -> Path:
    if source.startswith("dataset:"):
        return workdir.features_dir / f"{source.split(':', 1)[1]}.npy"
    if is_text_source(source):
        return workdir.embedding_path(text_embedding_name(source))
    return workdir.embedding_path(f"image_{source}")


def available_sources(workdir: Workdir) -> list[str]:
    out = []
    for name in list_embeddings(workdir):
        kind, _, src = name.partition("_")
        if kind in ("text", "image") and src:
            base, sep, describer = src.partition("__")
            out.append(f"{base}:{describer}" if sep and kind == "text" else src)
    if workdir.features_dir.is_dir():
        out.extend(f"dataset:{p.stem}" for p in sorted(workdir.features_dir.glob("*.npy")))
    return out


def load_source(workdir: Workdir, source: str) -> np.ndarray:
    """The (n_items, d) float32 array a representation names as its input."""
    path = source_file(workdir, source)
    if not path.is_file():
        known = ", ".join(available_sources(workdir)) or "none yet"
        raise StageError(f"embedding source {source!r} not found ({path}); available: {known}")
    return np.asarray(np.load(path), dtype=np.float32)


def source_key(workdir: Workdir, source: str) -> str:
    """A content key for a source, used in downstream cache keys."""
    path = source_file(workdir, source)
    meta = path.with_suffix(".json")
    if meta.is_file():
        info = read_json(meta)
        if "key" in info:
            return str(info["key"])
    if path.is_file():
        from lvlmrec.workdir import ContentHasher

        return f"{path.name}:{ContentHasher(workdir).file(path)}"
    return "missing"
