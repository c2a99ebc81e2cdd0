"""Link item rows to image files in a folder named by item id or original (source) id."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lvlmrec.errors import DataError

#: in order of preference when one name has several files
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: what an item's image file may be named (`.img`: fetch-images' name for an image PIL reads
#: in a format without a usual extension)
ALLOWED_SUFFIXES = frozenset(IMAGE_EXTENSIONS + (".img",))
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")


def index_image_folder(folder: Path) -> dict[str, Path]:
    """File stem -> path of every image file directly in `folder` (one scan, no decoding)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    best: dict[str, tuple[int, Path]] = {}
    for path in folder.iterdir():
        ext = path.suffix.lower()
        if ext in rank and path.is_file() and not path.name.startswith("."):
            if path.stem not in best or rank[ext] < best[path.stem][0]:
                best[path.stem] = (rank[ext], path)
    return {stem: path for stem, (_, path) in best.items()}


def link_images(items: pd.DataFrame, folder: Path,
                by: tuple[str, ...] = ("source_id",)) -> pd.Series:
    """Absolute image path per item ("" where none): the first file named by the item's
    value in each column of `by`. Only sources whose own ids are the item ids (Kaggle,
    MMRec) look up `item_id`: elsewhere a file `5.jpg` means original id 5, not item 5."""
    found = index_image_folder(folder)
    keys = [items[col].astype(str).tolist() for col in by]
    paths = []
    for names in zip(*keys):
        path = next((found[n] for name in names for n in (name, file_stem(name)) if n in found),
                    None)
        paths.append(str(path.resolve()) if path is not None else "")
    return pd.Series(paths, index=items.index, dtype=object)


def file_stem(source_id: str) -> str:
    """A file name for an original id: itself when it is a plain name (ASINs, numbers),
    else a hash of it, so any id maps to one safe, stable name."""
    if _SAFE_NAME.fullmatch(source_id) and not source_id.endswith("."):
        return source_id
    return "id-" + hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:20]


# --------------------------------------------------------------------------- containment
def image_roots(source: Mapping[str, Any] | None, workdir_root: str | os.PathLike) -> list[Path]:
    """The folders item images may live in: the workdir, the source's image folder and, for
    CSV tables, the items CSV's own folder (image paths may be relative to it). `source` is
    the dataset config as a mapping (dataset.json's `source`)."""
    roots = [Path(workdir_root)]
    source = source or {}
    if source.get("images"):
        roots.append(Path(source["images"]))
    if source.get("format") == "csv" and source.get("items"):
        roots.append(Path(source["items"]).parent)
    return [r.resolve() for r in roots]


def refused_image(path: str | os.PathLike, roots: Iterable[Path]) -> str | None:
    """Why an item may not use this image file, or None when it may: after following every
    link the file must lie inside one of `roots` and carry an image extension."""
    real = Path(path).resolve()
    if real.suffix.lower() not in ALLOWED_SUFFIXES:
        return f"{real} has no image extension ({', '.join(IMAGE_EXTENSIONS)})"
    if not any(real.is_relative_to(root) for root in roots):
        return f"{real} is outside the image folder and the workdir"
    return None


def check_item_images(items, roots: list[Path], workdir_root: str | os.PathLike,
                      where: str = "") -> None:
    """Refuse a catalog whose image paths leave the run's folders (one error, first item)."""
    base = Path(workdir_root)
    for source_id, value in zip(items["source_id"].astype(str), items["image_path"]):
        if value is None or str(value) in ("", "nan", "None"):
            continue
        path = Path(str(value))
        reason = refused_image(path if path.is_absolute() else base / path, roots)
        if reason is not None:
            raise DataError(f"{where or 'dataset'}: item {source_id!r}: image {str(value)!r} "
                            f"refused: {reason}")
