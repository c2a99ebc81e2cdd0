"""Link item rows to image files in a folder named by item id or original (source) id."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from lvlmrec.errors import DataError

#: in order of preference when one name has several files
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
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
