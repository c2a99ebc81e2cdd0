"""Read product images once, the same way everywhere.

Catalog images are scraped files: some are missing, truncated, CMYK, palette or
transparent PNGs, or phone photos with an EXIF rotation. Every stage reads them through
`load_image`, so all of them see the same RGB pixels and the same `DataError` (naming the
file) for a broken one. The module imports no torch, so data loaders can use it cheaply.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

from lvlmrec.errors import DataError

_WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike, target_size: int | None = None) -> Image.Image:
    """Open, fully decode and convert an image file to RGB.

    `target_size` lets JPEGs decode at a reduced scale whose sides stay at least that
    large (PIL draft mode): a 1500 px photo that ends up at 224 px decodes several times
    faster. Raises DataError naming the path when the file is missing, unreadable,
    corrupt or truncated.
    """
    try:
        with Image.open(path) as img:
            if target_size is not None:
                img.draft("RGB", (target_size, target_size))
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    # Decoders raise a zoo of types for bad bytes (OSError, SyntaxError, struct.error,
    # ValueError, DecompressionBombError, ...); all mean the same thing to a caller.
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert to RGB; transparent pixels become white, the usual product background."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
