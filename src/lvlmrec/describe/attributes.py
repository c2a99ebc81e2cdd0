"""The `attributes` describer: a cheap, offline CPU baseline for the LVLM describers.

It writes a few plain sentences per product image from measurable attributes:
- colours: the background (estimated from the border) is removed, foreground pixels are
  clustered in CIELAB, clusters that differ only by shading are merged, skin-toned clusters
  (a model wearing the product) are set aside when the product has other colours, and each
  cluster is named by the nearest of ~25 named colours, "light"/"dark" when its lightness
  is far from that colour's; the second colour's share is said ("about 70% navy"), and a
  smaller accent colour inside the product (a trim, a logo: not its outline, shadow or a
  blend where two colours meet) as "with touches of red";
- pattern: solid, striped, checked, polka-dot, zigzag, patterned or a printed graphic,
  from edge density and coverage, a gradient-orientation histogram, FFT periodicity and
  the shapes of the connected regions of a two-tone segmentation;
- size, outline and pattern strength: "small"/"large" in the frame; the silhouette's
  proportions ("tall", "very wide"), taper ("wider at the base", "wider at the upper end"),
  asymmetry (a boot's foot), a lower edge split in parts (legs, hanging sleeves) and a
  hole (a bag's handle); a "fine"/"bold" pattern from its edge density;
- what it is: EfficientNet-Lite0's ImageNet classes summed into product-category words
  (shoe, dress, bag...), named only when confident (`categories=False`: raw ImageNet labels);
- optionally the text printed on the product (RapidOCR).

Example: "A navy and white striped product (about 60% navy), with touches of red. It is
tall and wider at the base, with a fine pattern. It looks like a dress."
Output is deterministic: no random initialisation, fixed pixel subsampling. Its speed per
stage is measured by benchmarks/cpu_stages.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
import warnings
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from scipy import ndimage

from lvlmrec.describe.base import SOURCE_KEY, Describer
from lvlmrec.errors import ConfigError, MissingDependencyError
from lvlmrec.imageio import to_rgb

if TYPE_CHECKING:  # torch loads only when the labels' network does: analysis workers skip it
    from lvlmrec.encode.image import ImageEncoder

VERSION = "attributes-v3"
#: analysis processes are forked where fork is safe to use; elsewhere one runs unless asked
_FORK = sys.platform == "linux"
ANALYSIS_SIZE = 160  # longer side, px; enough for stripes and dots, fast in numpy
MIN_SHARE = 0.15  # a colour is named when it covers at least this share of the product
_ACCENT = 0.04  # a smaller colour mostly inside the product is named as an accent from here
_MAX_PIXELS = 6000  # colour clustering subsample
_K = 6  # k-means clusters before merging

# Named colours as sRGB prototypes, matched in CIELAB. Some names need two prototypes
# because CIELAB bends hue in the blues and purples (pure navy #000080 sits nearer the
# single purple prototype than the single navy one).
_PALETTE: dict[str, list[tuple[int, int, int]]] = {
    "white": [(250, 250, 250)],
    "light grey": [(200, 200, 200)],
    "grey": [(130, 130, 130)],
    "dark grey": [(70, 70, 70)],
    "black": [(15, 15, 15)],
    "red": [(205, 30, 35)],
    "dark red": [(125, 20, 30)],
    "pink": [(245, 160, 190), (255, 105, 180)],
    "magenta": [(200, 40, 140), (255, 0, 255)],
    "orange": [(245, 130, 30)],
    "yellow": [(250, 215, 40)],
    "gold": [(200, 160, 50)],
    "beige": [(220, 200, 160)],
    "tan": [(190, 150, 100)],
    "brown": [(115, 70, 40)],
    "olive": [(115, 115, 40)],
    "green": [(40, 150, 60)],
    "dark green": [(20, 80, 40), (0, 100, 0)],
    "mint": [(160, 225, 190)],
    "teal": [(0, 125, 125)],
    "turquoise": [(60, 200, 200)],
    "light blue": [(165, 200, 235), (173, 216, 230), (150, 170, 230)],
    "blue": [(40, 90, 210), (100, 150, 240), (0, 0, 230)],
    "navy": [(20, 30, 75), (0, 0, 128)],
    "purple": [(120, 50, 160), (138, 43, 226)],
    "lavender": [(190, 170, 220)],
}
# Naming tolerates lightness differences more than hue/chroma ones (as CMC l:c = 1.5:1):
# a shaded or pale version of a colour keeps its name.
_NAME_WEIGHTS = np.array([1 / 1.5, 1.0, 1.0], dtype=np.float32)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8:
        return _SRGB_TABLE[rgb]  # the formula below, looked up
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_SRGB_TABLE = srgb_to_linear(np.arange(256, dtype=np.int32))


_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
    dtype=np.float32,
)
_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    xyz = (lin @ _XYZ.T) / _D65
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(np.maximum(xyz, 0)), xyz / (3 * d * d) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


_NAMES = [name for name, protos in _PALETTE.items() for _ in protos]
_PALETTE_LAB = linear_to_lab(srgb_to_linear(np.array([p for ps in _PALETTE.values() for p in ps])))


#: colours that take "light"/"dark" when far lighter/darker than their prototype
_SHADED = {"red", "pink", "orange", "yellow", "green", "turquoise", "blue", "purple",
           "brown", "magenta", "teal", "olive", "mint", "lavender", "beige", "tan"}
_SHADE_DL = 18.0  # CIELAB lightness difference that earns a "light"/"dark" prefix


def colour_name(lab: np.ndarray, shades: bool = False) -> str:
    """Nearest named colour prototype in CIELAB, lightness weighted down; with `shades`,
    "light X"/"dark X" when the colour is much lighter/darker than X's nearest prototype."""
    d = (((_PALETTE_LAB - lab) * _NAME_WEIGHTS) ** 2).sum(1)
    j = int(np.argmin(d))
    name = _NAMES[j]
    if shades and name in _SHADED:
        dl = float(lab[0] - _PALETTE_LAB[j, 0])
        if abs(dl) >= _SHADE_DL:
            return f"{'light' if dl > 0 else 'dark'} {name}"
    return name


def is_skin(lab: np.ndarray) -> bool:
    """Light to medium skin tones in CIELAB (reddish yellow, moderate chroma). Deep tones
    are left out: they cannot be told from brown products by colour alone."""
    lightness, a, b = (float(v) for v in lab)
    hue = np.degrees(np.arctan2(b, a))
    return 45 <= lightness <= 88 and 7 <= a <= 30 and 10 <= b <= 38 and 35 <= hue <= 72


def base_colour(name: str) -> str:
    """The colour word without its shade: "light blue" -> "blue"."""
    return name.split()[-1] if name.split()[0] in ("light", "dark") else name


@dataclass
class Colour:
    name: str
    share: float  # of foreground pixels
    lab: np.ndarray
    rim: float = 0.0  # share of its pixels on the product's edge (`analyse_image`)


@dataclass
class Attributes:
    """What the analysis found in one image."""

    colours: list[Colour]  # by decreasing share; the first is the primary colour
    pattern: str | None  # solid, striped, checked, polka-dot, zigzag, patterned, graphic
    dot_colour: str | None = None  # polka-dot only: colour of the dots
    ground_colour: str | None = None  # polka-dot only: colour around the dots
    shape: str | None = None  # "tall" or "wide" outline; None when squat or unknown
    size: str | None = None  # "small" or "large" share of the frame; None in between
    strength: str | None = None  # "fine" or "bold" pattern; None when unsure
    outline: Outline | None = None  # the product's silhouette; None when it fills the frame
    accent: str | None = None  # a smaller colour inside the product (trim, logo)

    @property
    def colour_names(self) -> list[str]:
        return [c.name for c in self.colours]


#: outline bins: height / width of its box for "tall", width / height for "wide"
_TALL, _VERY_TALL, _WIDE, _VERY_WIDE = 1.25, 1.6, 1.3, 1.75
_WIDER_BELOW, _WIDER_ABOVE = 1.45, 0.8  # lower third's mean width / the upper third's
_HOLE = 0.04  # a hole in the silhouette is named from this share of its area
_ASYMMETRIC = 0.12  # |Outline.shift| from which the outline is "asymmetric"


@dataclass
class Outline:
    """The product's silhouette, when it stands on a background."""

    aspect: float  # height / width of its bounding box
    taper: float  # mean width of its lower third / of its upper third
    split: bool  # its lower edge is in two or more parts (legs, hanging sleeves)
    hole: bool = False  # it has a hole (a bag's handle, a cut-out)
    shift: float = 0.0  # its lower third's centre left or right of its upper third's, in widths

    def words(self) -> list[str]:
        """Plain words for its shape: "very tall", "wider at the base", "split at the
        base"... (the hole is said apart: "with a hole")."""
        words = []
        if self.aspect >= _TALL:
            words.append("very tall" if self.aspect >= _VERY_TALL else "tall")
        elif 1 / self.aspect >= _WIDE:
            words.append("very wide" if 1 / self.aspect >= _VERY_WIDE else "wide")
        if self.taper >= _WIDER_BELOW:
            words.append("wider at the base")
        elif self.taper <= _WIDER_ABOVE:
            words.append("wider at the upper end")
        if abs(self.shift) >= _ASYMMETRIC:
            words.append("asymmetric")  # a boot's foot, a shoe's toe
        if self.split:
            words.append("split at the base")
        return words


# --------------------------------------------------------------------------- analysis
def analyse_image(img: Image.Image, n_colours: int = 2, patterns: bool = True,
                  exclude_skin: bool = False) -> Attributes:
    """Colours, pattern and outline of the product in one image."""
    small = to_rgb(img).copy()
    small.thumbnail((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.Resampling.BOX)
    lin = srgb_to_linear(np.asarray(small))
    # One contiguous (h, w) plane per channel: numpy is slow over a 3-long last axis.
    lab = np.ascontiguousarray(np.moveaxis(linear_to_lab(lin), -1, 0))
    fg, outside, hole, plain = foreground_mask(lab)
    # not the product's own colour: its rim (outline, shadow) and background-coloured
    # pixels inside the silhouette (a handle's hole, a gap closing bridged)
    edge = (fg & ~_erode(fg, 2)) | plain
    colours, ranked = dominant_colours(lab, lin, fg, n_colours, exclude_skin, edge)
    attrs = detect_pattern(lab, fg, outside, colours) if patterns else Attributes(colours, None)
    attrs.shape = _shape(fg)
    attrs.outline = _outline(fg, outside, hole)
    said = [c.name for c in colours] + [n for n in (attrs.dot_colour, attrs.ground_colour) if n]
    attrs.accent = accent_colour(said, ranked, [c.lab for c in colours])
    share = float(fg.mean())
    attrs.size = None if fg.all() else "small" if share < 0.2 else "large" if share > 0.5 else None
    return attrs


def _analyse_images(job: tuple[list[Image.Image], int, bool, bool]) -> list[Attributes]:
    """`analyse_image` over a list of images (a worker process's share of a batch)."""
    images, *args = job
    return [analyse_image(img, *args) for img in images]


def _distance(planes: np.ndarray, point: np.ndarray) -> np.ndarray:
    """`np.linalg.norm(x - point, axis=-1)` of the points x whose coordinates are the rows
    of `planes` (3, ...): the same sums in the same order, without a 3-long inner loop."""
    d0, d1, d2 = (planes[j] - point[j] for j in range(3))
    return np.sqrt((d0 * d0 + d1 * d1) + d2 * d2)


def _pixels(planes: np.ndarray, where: np.ndarray) -> np.ndarray:
    """At most _MAX_PIXELS of the pixels under a mask, evenly spaced, as (3, n) columns."""
    at = np.flatnonzero(where)
    return planes.reshape(3, -1)[:, at[_subsample_index(len(at))]]


def _shape(fg: np.ndarray) -> str | None:
    """"tall" or "wide" when the product's bounding box is clearly elongated."""
    if fg.all() or not fg.any():
        return None
    ys, xs = np.nonzero(fg)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return "tall" if h >= 1.5 * w else "wide" if w >= 1.5 * h else None


def _outline(fg: np.ndarray, outside: np.ndarray, hole: float = 0.0) -> Outline | None:
    """Aspect, taper, lower-edge parts, hole and asymmetry of the product's silhouette
    (None when the product fills the frame). Parts are counted on the background connected
    to the border, which runs up between legs that closing the mask bridged."""
    if fg.all() or not fg.any():
        return None
    ys, xs = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    h, w = y1 - y0, x1 - x0
    if min(h, w) < 6:
        return None
    box = fg[y0:y1, x0:x1]
    widths = box.sum(1)
    third = h // 3
    taper = float(widths[-third:].mean() / max(widths[:third].mean(), 1.0))
    upper, lower = box[:third].sum(0), box[-third:].sum(0)
    columns = np.arange(w)
    shift = float((lower @ columns / max(lower.sum(), 1) - upper @ columns / max(upper.sum(), 1))
                  / w)
    # runs of product pixels in each of the lowest rows, the ones at least 4% wide
    low = np.pad(~outside[y1 - max(2, round(0.12 * h)):y1, x0:x1], ((0, 0), (1, 1)))
    step = np.diff(low.astype(np.int8), axis=1)
    rows, starts = np.nonzero(step == 1)
    ends = np.nonzero(step == -1)[1]
    parts = np.bincount(rows[ends - starts >= max(2, 0.04 * w)], minlength=len(low))
    return Outline(h / w, taper, bool(np.median(parts) >= 2), hole >= _HOLE, shift)


def foreground_mask(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The product's pixels, the background-coloured pixels connected to the border, the
    largest hole in the product's silhouette (a bag's handle) as a share of it, and every
    background-coloured pixel.

    Background-coloured regions inside the product (white stripes of a navy-and-white
    shirt on a white background) are kept by closing the mask and filling its holes; a
    hole wider than the closing bridges is one the silhouette really has.
    When the border is not uniform (full-bleed photo) or almost nothing differs from it
    (a white shirt on white), the whole image is the product.
    """
    h, w = lab.shape[1:]
    b = max(2, round(0.03 * min(h, w)))
    border = np.concatenate(  # (3, n): the border strips' pixels
        [a.reshape(3, -1) for a in (lab[:, :b], lab[:, -b:], lab[:, :, :b], lab[:, :, -b:])],
        axis=1)
    bg = np.median(border, axis=1)
    everything, nothing = np.ones((h, w), dtype=bool), np.zeros((h, w), dtype=bool)
    if np.mean(_distance(border, bg) < 10) < 0.6:
        return everything, nothing, 0.0, nothing
    differs = _distance(lab, bg) > 14
    fg = _open_specks(differs)  # JPEG specks
    r = _closing_radius(lab.shape[1:])
    closed, unfilled = _close_and_fill(fg, r)
    labels, n = ndimage.label(closed)
    if n >= 3 and np.sum(np.bincount(labels.ravel())[1:] >= 0.002 * closed.size) >= 3:
        # wide bands or big dots split the product
        closed, unfilled = _close_and_fill(fg, round(2.5 * r))
    fg = closed
    if fg.mean() < 0.05:
        return everything, nothing, 0.0, nothing
    filled = closed & ~unfilled
    hole = 0.0
    if filled.any():
        holes, _ = ndimage.label(filled)
        hole = np.bincount(holes.ravel())[1:].max() / fg.sum()
    return fg, _border_connected(~differs), float(hole), ~differs


def _border_connected(mask: np.ndarray) -> np.ndarray:
    """The pixels of the mask's 4-connected regions that touch the image border."""
    labels, n = ndimage.label(mask)
    touching = np.zeros(n + 1, dtype=bool)
    touching[labels[0]] = touching[labels[-1]] = True
    touching[labels[:, 0]] = touching[labels[:, -1]] = True
    touching[0] = False
    return touching[labels]


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """`binary_erosion(mask, iterations=r)` (cross element, outside = background) by
    slicing: the pixels farther than r steps (4-connected) from the background."""
    out = mask
    for _ in range(r):
        kept = out.copy()
        kept[1:] &= out[:-1]
        kept[:-1] &= out[1:]
        kept[:, 1:] &= out[:, :-1]
        kept[:, :-1] &= out[:, 1:]
        kept[[0, -1]] = False
        kept[:, [0, -1]] = False
        out = kept
    return out


def _close_and_fill(mask: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Morphological closing with a disk, then hole filling (pads so edges do not erode),
    and the closing before its holes were filled.

    The same pixels as `binary_fill_holes(binary_closing(np.pad(mask, r), disk)[r:-r, r:-r])`
    at a fraction of its cost (tests/test_attributes_speed.py checks it).
    """
    if not mask.any():
        return np.zeros_like(mask), np.zeros_like(mask)
    dilated = _dilate_disk(np.pad(mask, r), r)
    # erosion = not the dilation of the complement; the crop never reaches the padding's edge
    closed = ~_dilate_disk(~dilated, r)[r:-r, r:-r]
    return ~_border_connected(~closed), closed  # binary_fill_holes: the same 4-connected holes


def _dilate_disk(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by the disk x² + y² <= r² (nothing outside the array): the disk is
    2r + 1 horizontal segments, each a window sum of the mask's running row counts."""
    h, w = mask.shape
    # counts[:, r + 1 + j]: the row's mask pixels in columns 0..j (0 left of the image,
    # the row's total right of it)
    counts = np.zeros((h, w + 2 * r + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=counts[:, r + 1 : r + 1 + w])
    counts[:, r + 1 + w :] = counts[:, r + w : r + w + 1]
    segments: dict[int, np.ndarray] = {}
    out = np.zeros((h, w), dtype=bool)
    for dy in range(-r, r + 1):
        half = math.isqrt(r * r - dy * dy)
        if half not in segments:  # any mask pixel within `half` columns
            segments[half] = (counts[:, r + half + 1 : r + half + 1 + w]
                              > counts[:, r - half : r - half + w])
        seg = segments[half]
        if dy >= 0:
            out[: h - dy] |= seg[dy:]
        else:
            out[-dy:] |= seg[: h + dy]
    return out


def _open_specks(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_opening(mask, np.ones((2, 2), bool))` by slicing: keeps the pixels
    of every 2x2 block that lies wholly in the mask."""
    blocks = np.zeros_like(mask)
    blocks[:-1, :-1] = mask[1:, 1:] & mask[:-1, 1:] & mask[1:, :-1] & mask[:-1, :-1]
    out = blocks.copy()
    out[1:, 1:] |= blocks[:-1, :-1]
    out[1:, :] |= blocks[:-1, :]
    out[:, 1:] |= blocks[:, :-1]
    return out


def _dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """`ndimage.binary_dilation(mask, iterations=...)` (4-neighbour cross) by slicing."""
    out = mask
    for _ in range(iterations):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _closing_radius(shape: tuple[int, ...]) -> int:
    """Gaps inside the product narrower than twice this are bridged (~4.5% of the image)."""
    return max(2, round(0.045 * max(shape[:2])))


def dominant_colours(lab: np.ndarray, lin: np.ndarray, fg: np.ndarray, n_colours: int,
                     exclude_skin: bool = False, edge: np.ndarray | None = None,
                     ) -> tuple[list[Colour], list[Colour]]:
    """Named colours covering at least MIN_SHARE of the foreground pixels (the largest
    always), and every colour found, by decreasing share.

    `lab` is the image's CIELAB planes (3, h, w), `lin` its linear RGB (h, w, 3).
    With `exclude_skin`, skin-toned clusters do not count when the rest covers at least
    15% of the pixels (a product worn by a model); shares are then of the rest."""
    at = np.flatnonzero(fg)
    if len(at) == 0:
        return [], []
    at = at[_subsample_index(len(at))]
    lab, lin = lab.reshape(3, -1)[:, at], lin.reshape(-1, 3)[at].T
    assign, centres = kmeans(lab, _K)
    k, n = len(centres), lab.shape[1]
    counts = np.bincount(assign, minlength=k).astype(np.float64)
    lab_sum = np.stack([np.bincount(assign, lab[d], k) for d in range(3)], 1)
    lin_sum = np.stack([np.bincount(assign, lin[d], k) for d in range(3)], 1)
    edge = np.zeros_like(fg) if edge is None else edge
    rim = np.bincount(assign, edge.ravel()[at], k) / np.maximum(counts, 1)
    clusters = [_Cluster(counts[j] / n, (lab_sum[j] / counts[j]).astype(np.float32),
                         (lin_sum[j] / counts[j]).astype(np.float32), float(rim[j]))
                for j in range(k) if counts[j] > 0]
    merged = _merge_shading(clusters)
    if exclude_skin:
        rest = [c for c in merged if not is_skin(c.lab)]
        if rest and sum(c.share for c in rest) >= 0.15 and len(rest) < len(merged):
            total = sum(c.share for c in rest)
            merged = [_Cluster(c.share / total, c.lab, c.lin, c.rim) for c in rest]
    by_name: dict[str, _Cluster] = {}
    for c in merged:
        name = colour_name(c.lab)
        by_name[name] = by_name[name].merge(c) if name in by_name else c
    ranked = sorted(by_name.items(), key=lambda kv: (-kv[1].share, kv[0]))
    out = [Colour(colour_name(c.lab, shades=True), c.share, c.lab, c.rim) for _, c in ranked]
    return [out[0]] + [c for c in out[1:n_colours] if c.share >= MIN_SHARE], out


def accent_colour(said: list[str], ranked: list[Colour],
                  labs: list[np.ndarray] = ()) -> str | None:
    """The largest colour besides the ones said that covers at least _ACCENT of the
    product, mostly off its edge (`Colour.rim`: outline, shadow, background seen through
    it), is no shade of a colour the text already says and no blend of two of them (`labs`:
    where two colours meet, pixels mix them): a trim, a logo."""
    bases = {base_colour(name) for name in said}
    for c in ranked:
        if c.share < _ACCENT:
            break
        if c.rim < 0.5 and base_colour(c.name) not in bases and not any(
                _between(c.lab, a, b) for a, b in itertools.combinations(labs, 2)):
            return c.name
    return None


def _between(lab: np.ndarray, a: np.ndarray, b: np.ndarray, tolerance: float = 12.0) -> bool:
    """Whether a CIELAB colour lies near the segment from a to b (a blend of the two)."""
    ab = (b - a).astype(np.float64)
    t = float(np.clip(np.dot(lab - a, ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(lab - (a + t * ab))) < tolerance


@dataclass
class _Cluster:
    share: float
    lab: np.ndarray  # mean CIELAB
    lin: np.ndarray  # mean linear RGB
    rim: float = 0.0  # share of its pixels on the product's edge

    def merge(self, other: _Cluster) -> _Cluster:
        s = self.share + other.share
        wa, wb = self.share / s, other.share / s
        return _Cluster(s, wa * self.lab + wb * other.lab, wa * self.lin + wb * other.lin,
                        wa * self.rim + wb * other.rim)

    @property
    def luminance(self) -> float:
        return float(self.lin @ _XYZ[1])

    @property
    def chromaticity(self) -> np.ndarray:
        return self.lin / max(float(self.lin.sum()), 1e-6)


def kmeans(x: np.ndarray, k: int, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with deterministic farthest-point initialisation.

    `x` holds the points as columns (3, n); returns each point's cluster and the (k, 3)
    centres."""
    centres = [x[:, np.argmin(_distance(x, np.median(x, axis=1)))]]
    dist = _distance(x, centres[0])
    for _ in range(1, k):
        i = int(np.argmax(dist))
        if dist[i] < 1.0:  # fewer distinct colours than k
            break
        centres.append(x[:, i])
        dist = np.minimum(dist, _distance(x, x[:, i]))
    c = np.stack(centres).astype(np.float64)
    columns = x.astype(np.float64)
    x2 = (columns[0] * columns[0] + columns[1] * columns[1]) + columns[2] * columns[2]
    twice = 2 * np.ascontiguousarray(columns.T)  # (n, 3) rows for the matrix product
    k = len(c)
    # Squared distances by expansion, x² - 2x·c + c², into one reused (n, k) buffer: fresh
    # temporaries cost more in page faults than in arithmetic, and so do broadcasts over
    # a k-long last axis. The same operations in the same order give the same values.
    x2 = np.repeat(x2[:, None], k, axis=1)
    d = np.empty((x.shape[1], k))
    assign = np.zeros(x.shape[1], dtype=int)
    for _ in range(iters):
        np.matmul(twice, c.T, out=d)
        np.subtract(x2, d, out=d)
        _add_to_rows(d, (c * c).sum(1))
        # argmin (the first on a tie); for two clusters a comparison is 6x cheaper
        assign = (d[:, 1] < d[:, 0]).astype(np.intp) if k == 2 else d.argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, col, k) for col in columns], 1)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        # np.allclose(new, c, atol=1e-3) without its overhead (values are finite)
        if (np.abs(new - c) <= 1e-3 + 1e-5 * np.abs(c)).all():
            break
        c = new
    return assign, c.astype(x.dtype)


def _add_to_rows(a: np.ndarray, v: np.ndarray, block: int = 256) -> None:
    """`a += v` for an (n, k) array and a k-vector, over blocks of rows so that numpy's
    inner loop runs block * k long instead of k long."""
    n, k = a.shape
    full = n - n % block
    if full:
        rows = a[:full].reshape(-1, block * k)
        rows += np.tile(v, block)
    a[full:] += v


def _merge_shading(clusters: list[_Cluster]) -> list[_Cluster]:
    """Merge clusters that are the same material under different light.

    Shading scales linear RGB, so it keeps chromaticity (r, g, b)/(r+g+b) and changes
    luminance moderately; black/white or navy/blue differ in one or the other.
    """
    clusters = [c for c in clusters if c.share >= 0.02]
    while len(clusters) > 1:
        best, pair = 0.04, None
        lum = [c.luminance for c in clusters]
        chroma = [c.chromaticity for c in clusters]
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                lo, hi = sorted((lum[i], lum[j]))
                if lo < 0.3 * hi or hi < 0.01:
                    continue
                d = float(np.linalg.norm(chroma[i] - chroma[j]))
                if d < best:
                    best, pair = d, (i, j)
        if pair is None:
            break
        i, j = pair
        clusters[i] = clusters[i].merge(clusters.pop(j))
    total = sum(c.share for c in clusters)
    return [_Cluster(c.share / total, c.lab, c.lin, c.rim) for c in clusters]


@dataclass
class _Regions:
    """Connected regions of one tone of a two-tone segmentation (4-connectivity)."""

    n_compact: int  # blob-like: squat bounding box, fills most of it, small
    compact_share: float  # of this tone's area, in compact regions
    compact_area_cv: float
    n_elongated: int  # long thin regions (bands), by second moments
    largest_share: float  # of this tone's area, in its largest region
    share: float  # of the interior, in this tone


def _regions(mask: np.ndarray, area_total: int) -> _Regions:
    labels, n = ndimage.label(mask)
    if n == 0:
        return _Regions(0, 0.0, 0.0, 0, 0.0, 0.0)
    # Per-region moments by bincount over the labelled pixels in row-major order: the
    # same sums, in the same order, as ndimage.sum_labels/mean over the whole array.
    at = np.flatnonzero(labels)
    which = labels.ravel()[at]
    yy, xx = np.divmod(at, mask.shape[1])
    count = np.bincount(which, minlength=n + 1)[1:]
    area = count.astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(which, values, n + 1)[1:] / area

    my, mx = mean(yy), mean(xx)
    vy = mean(yy * yy) - my**2
    vx = mean(xx * xx) - mx**2
    cxy = mean(xx * yy) - mx * my
    tr, det = vx + vy, vx * vy - cxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    elong = np.sqrt((tr / 2 + disc) / np.maximum(tr / 2 - disc, 0.25))
    boxes = ndimage.find_objects(labels)
    hw = np.array([(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in boxes])
    extent = area / (hw[:, 0] * hw[:, 1])
    aspect = hw.max(1) / hw.min(1)
    real = area >= 5
    compact = real & (aspect <= 2.0) & (extent >= 0.55) & (area <= 0.08 * area_total)
    elongated = real & (elong >= 3.0) & (area >= 0.01 * area_total)
    total = float(area.sum())
    c_area = area[compact]
    cv = float(c_area.std() / c_area.mean()) if len(c_area) else 0.0
    return _Regions(
        int(compact.sum()),
        float(c_area.sum() / total),
        cv,
        int(elongated.sum()),
        float(area.max() / total),
        total / area_total,
    )


def detect_pattern(
    lab: np.ndarray, fg: np.ndarray, outside: np.ndarray, colours: list[Colour]
) -> Attributes:
    """Classify the foreground's texture; falls back to no pattern word when unsure.

    `outside` (background connected to the border) tells a print inside the product
    from the notches between sleeves and body that closing the mask filled in.
    """
    # Drop the silhouette's own edges, and the notches (armpits) that closing filled.
    interior = _erode(fg, _closing_radius(fg.shape))
    n_int = int(interior.sum())
    if n_int < 300:
        return Attributes(colours, None)
    light = lab[0]
    gy, gx = ndimage.sobel(light, 0) / 8, ndimage.sobel(light, 1) / 8
    mag = np.hypot(gx, gy)
    strong = (mag > 6) & interior
    density = strong.sum() / n_int

    # Where: an all-over pattern has edges everywhere; a print or logo in one place.
    ys, xs = np.flatnonzero(interior.any(1)), np.flatnonzero(interior.any(0))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    inner = strong & ~_dilate_cross(outside, 2)
    # edge pixels per interior pixel in a 4x4 grid of cells over the interior's box,
    # leaving out cells with little interior
    rows, cols = _split(y0, y1, 4), _split(x0, x1, 4)
    n = _cell_sums(interior, rows, cols)
    cells = (_cell_sums(inner, rows, cols)[n >= 0.3 * n_int / 16]
             / n[n >= 0.3 * n_int / 16])
    coverage = np.mean(cells >= 0.02)
    if coverage < 0.5 and cells.max() >= 0.05:
        return Attributes(colours, "graphic")
    if density < 0.03:
        return Attributes(colours, "solid" if len(colours) == 1 else None)

    # How: dominant edge orientations (mod 180 degrees), 10-degree bins.
    # Directions from a slightly smoothed image: small dots are pixelated squares.
    smooth = ndimage.gaussian_filter(light, 1.0)
    sy, sx = ndimage.sobel(smooth, 0)[strong], ndimage.sobel(smooth, 1)[strong]
    theta = np.mod(np.arctan2(sy, sx), np.pi)
    hist = np.bincount((theta / np.pi * 18).astype(int) % 18, weights=mag[strong], minlength=18)
    hist = hist / hist.sum()
    window = hist + np.roll(hist, 1) + np.roll(hist, -1)
    p1 = int(np.argmax(window))
    far = [j for j in range(18) if min(abs(j - p1), 18 - abs(j - p1)) >= 4]
    p2 = max(far, key=lambda j: window[j])
    c1, c2 = window[p1], window[p2]

    # Two-tone segmentation of the interior, and the shapes of each tone's regions.
    _, centres = kmeans(_pixels(lab, interior), 2)
    if len(centres) < 2:
        return Attributes(colours, "solid" if len(colours) == 1 else None)
    # nearer centre (argmin: the first on a tie), squared distances summed as ((0+1)+2)
    d0, d1 = ((((lab[0] - c[0]) ** 2 + (lab[1] - c[1]) ** 2) + (lab[2] - c[2]) ** 2)
              for c in centres)
    second = d1 < d0
    masks = [interior & ~second, interior & second]
    tones = [_regions(m, n_int) for m in masks]

    for t in (0, 1):
        blobs, ground = tones[t], tones[1 - t]
        regular = blobs.n_compact >= 5 and blobs.compact_share >= 0.6
        if not regular or blobs.compact_area_cv > 0.6:
            continue
        # Squares in a connected ground: dots, unless the squares cover as much as the
        # ground (windowpane) or the ground is itself two bands of colour (gingham).
        if ground.largest_share < 0.7 or blobs.share >= 0.3 or _two_toned(lab, masks[1 - t]):
            if blobs.n_compact >= 6 and (blobs.share >= 0.2 or ground.largest_share < 0.7):
                return Attributes(colours, "checked",
                                  strength="fine" if blobs.n_compact >= 30 else "bold")
            continue
        dot, ground_name = colour_name(centres[t]), colour_name(centres[1 - t])
        return Attributes(colours, "polka-dot", dot, ground_name,
                          strength="fine" if blobs.n_compact >= 30 else "bold")
    n_bands = sum(t.n_elongated for t in tones)
    strength = "fine" if density >= 0.25 else "bold" if density < 0.1 else None
    if c1 >= 0.6 and (n_bands >= 3 or _periodicity(light, interior, (y0, y1, x0, x1)) >= 0.25):
        return Attributes(colours, "striped", strength=strength)
    if c1 + c2 >= 0.6 and c2 >= 0.2 and n_bands >= 3:
        return Attributes(colours, "zigzag", strength=strength)
    if density >= 0.12:
        return Attributes(colours, "patterned", strength=strength)
    return Attributes(colours, None)


def _subsample_index(n: int) -> np.ndarray:
    """At most _MAX_PIXELS of n indices, evenly spaced: deterministic, unbiased for images."""
    return np.linspace(0, n - 1, min(n, _MAX_PIXELS)).astype(int)


def _two_toned(lab: np.ndarray, where: np.ndarray) -> bool:
    """Whether the pixels under the mask form two clearly different colours, each a fifth
    or more."""
    if where.sum() < 20:
        return False
    assign, centres = kmeans(_pixels(lab, where), 2)
    if len(centres) < 2:
        return False
    share = assign.mean()
    return min(share, 1 - share) >= 0.2 and float(np.linalg.norm(centres[0] - centres[1])) > 20


def _split(lo: int, hi: int, n: int) -> np.ndarray:
    """The n + 1 edges of n near-equal parts of [lo, hi)."""
    return np.linspace(lo, hi, n + 1).round().astype(int)


def _cell_sums(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`mask[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].sum()` for every cell (i, j),
    flattened row by row, from one summed-area table."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0), axis=1, out=table[1:, 1:])
    corners = table[np.ix_(rows, cols)]
    return (corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]).ravel()


def _periodicity(light: np.ndarray, interior: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of the texture's spectral energy in its 6 strongest peaks (0 = aperiodic)."""
    y0, y1, x0, x1 = box
    patch = light[y0:y1, x0:x1].astype(np.float64)
    inside = interior[y0:y1, x0:x1]
    patch = np.where(inside, patch - patch[inside].mean(), 0.0)
    patch *= np.outer(np.hanning(patch.shape[0]), np.hanning(patch.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(patch))) ** 2
    cy, cx = power.shape[0] // 2, power.shape[1] // 2
    power[cy - 2 : cy + 3, cx - 2 : cx + 3] = 0  # DC and the window's own blur
    total = power.sum()
    if total <= 0:
        return 0.0
    smooth = ndimage.uniform_filter(power, 3) * 9  # energy of each 3x3 neighbourhood
    peaks = (power == ndimage.maximum_filter(power, 3)) & (power > 0)
    top = np.sort(smooth[peaks])[::-1][:6]
    return float(top.sum() / total)


# --------------------------------------------------------------------------- sentences
def _article(phrase: str) -> str:
    word = phrase.lower()
    vowel = word[:1] in "aeiou" and not word.startswith(("eu", "uni", "use", "one"))
    return "an" if vowel or word.startswith(("hour", "honest")) else "a"


def _join(words: list[str], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


_PLURAL_LABELS = {"binoculars", "parallel bars", "sunglasses", "swimming trunks"}


def _with_article(label: str) -> str:
    plural = label in _PLURAL_LABELS or label in _PLURAL_CATEGORIES
    return label if plural else f"{_article(label)} {label}"


#: ImageNet classes that are products, by the category word a shop would use
CATEGORY_OF_LABEL: dict[str, str] = {
    **dict.fromkeys(["jersey", "sweatshirt", "cardigan", "Cardigan", "brassiere", "bib",
                     "bulletproof vest"], "top"),
    **dict.fromkeys(["gown", "abaya", "kimono", "academic gown", "vestment", "hoopskirt"],
                    "dress"),
    **dict.fromkeys(["miniskirt", "overskirt", "sarong"], "skirt"),
    **dict.fromkeys(["jean", "pajama"], "trousers"),
    **dict.fromkeys(["swimming trunks", "diaper"], "shorts"),
    **dict.fromkeys(["trench coat", "fur coat", "lab coat", "suit", "poncho", "cloak",
                     "military uniform"], "jacket"),
    **dict.fromkeys(["running shoe"], "sneaker"),
    **dict.fromkeys(["cowboy boot"], "boot"),
    **dict.fromkeys(["Loafer", "clog", "sandal", "shoe shop"], "shoe"),
    **dict.fromkeys(["purse", "mailbag", "wallet", "plastic bag"], "handbag"),
    **dict.fromkeys(["backpack"], "backpack"),
    **dict.fromkeys(["cowboy hat", "sombrero", "bonnet", "mortarboard", "shower cap",
                     "bathing cap"], "hat"),
    **dict.fromkeys(["bikini", "maillot", "maillot tank suit"], "swimsuit"),
    **dict.fromkeys(["sunglass", "sunglasses"], "sunglasses"),
    **dict.fromkeys(["bow tie", "Windsor tie", "bolo tie"], "tie"),
    **dict.fromkeys(["stole", "feather boa"], "scarf"),
    "sock": "socks", "mitten": "gloves", "apron": "apron", "necklace": "necklace",
    "umbrella": "umbrella",
}
_PLURAL_CATEGORIES = {"trousers", "shorts", "sunglasses", "socks", "gloves"}


def category_words(labels: list[tuple[str, float]], threshold: float, k: int) -> list[str]:
    """Up to k product-category words whose ImageNet classes' summed probability reaches
    `threshold` (several classes often share one category, e.g. jersey and sweatshirt)."""
    total: dict[str, float] = {}
    for name, p in labels:
        if name in CATEGORY_OF_LABEL:
            word = CATEGORY_OF_LABEL[name]
            total[word] = total.get(word, 0.0) + p
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, p in ranked if p >= threshold][:k]


def sentence(attrs: Attributes, labels: list[str], text: str = "") -> str:
    """Compose the description: colours (with the first one's share when there are two)
    and pattern, shape and pattern strength, then category or labels and text when present."""
    colours = _join(attrs.colour_names) if attrs.colours else ""
    p = attrs.pattern
    if p == "polka-dot" and attrs.dot_colour != attrs.ground_colour:
        phrase = f"{attrs.ground_colour} product with {attrs.dot_colour} polka dots"
    elif p == "solid":
        phrase = f"solid {colours} product"
    elif p in ("striped", "checked", "patterned", "polka-dot"):
        phrase = f"{colours} {p} product"
    elif p == "zigzag":
        phrase = f"{colours} product with a zigzag pattern"
    elif p == "graphic":
        phrase = f"{colours} product with a printed graphic"
    else:
        phrase = f"{colours} product"
    phrase = " ".join(phrase.split())  # no colours found: no double space
    first = f"{_article(phrase).capitalize()} {phrase}"
    if len(attrs.colours) >= 2 and p != "polka-dot":
        share = attrs.colours[0].share / sum(c.share for c in attrs.colours)
        first += f" (about {int(round(share * 10)) * 10}% {attrs.colours[0].name})"
    if attrs.accent:
        first += f", with touches of {attrs.accent}"
    parts = [f"{first}."]
    outline = attrs.outline.words() if attrs.outline else [attrs.shape] if attrs.shape else []
    looks = [attrs.size] + outline if attrs.size else outline
    strength = attrs.strength if p not in (None, "solid", "graphic") else None
    has = (["a hole"] if attrs.outline and attrs.outline.hole else []) + (
        [f"a {strength} pattern"] if strength else [])
    if looks:
        parts.append(f"It is {_join(looks)}, with {_join(has)}." if has
                     else f"It is {_join(looks)}.")
    elif has:
        parts.append(f"It has {_join(has)}.")
    if labels:
        parts.append(f"It looks like {_join([_with_article(x) for x in labels], 'or')}.")
    if text:
        parts.append(f'It shows the text "{text}".')
    return " ".join(parts)


# --------------------------------------------------------------------------- describer
class AttributesDescriber(Describer):
    """Offline describer from colours, patterns, ImageNet labels and optional OCR."""

    backend = "attributes"

    def __init__(
        self,
        label_threshold: float = 0.15,
        max_labels: int = 2,
        n_colours: int = 2,
        patterns: bool = True,
        ocr: bool = False,
        categories: bool = True,
        exclude_skin: bool = True,
        outline: bool = True,
        label_image_size: int = 224,
        processes: int | None = None,
        device: str = "auto",
        image_encoder: ImageEncoder | None = None,
    ):
        self.label_threshold = label_threshold
        self.max_labels = max_labels
        self.n_colours = n_colours
        self.patterns = patterns
        self.ocr = ocr
        self.categories = categories
        self.exclude_skin = exclude_skin
        self.outline = outline
        self.label_image_size = label_image_size
        # processes analysing images side by side (None: every granted core); the analysis
        # is pure Python and numpy, so threads would wait on the GIL. Not in `settings`: it
        # changes no text
        if processes is not None and (isinstance(processes, bool) or not isinstance(
                processes, int) or processes < 1):
            raise ConfigError(f"describe.attributes.processes must be a whole number >= 1 or "
                              f"null, not {processes!r}")
        self.processes = processes
        self._pool: Executor | None = None
        if ocr and importlib.util.find_spec("rapidocr_onnxruntime") is None:
            raise _ocr_missing()
        self.device = device
        self._encoder = image_encoder
        self._ocr_engine = None
        self._shared: tuple[Any, list[Any], Any] | None = None
        self._labels_by_source: dict[str, list[str]] = {}

    @property
    def model_id(self) -> str:
        return VERSION

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": VERSION,
            "label_threshold": self.label_threshold,
            "max_labels": self.max_labels,
            "n_colours": self.n_colours,
            "patterns": self.patterns,
            "ocr": self.ocr,
            "categories": self.categories,
            "exclude_skin": self.exclude_skin,
            "outline": self.outline,
        }
        if self.max_labels > 0:
            out["label_model"] = self._image_encoder().model_id
        return out

    def _image_encoder(self) -> ImageEncoder:
        if self._encoder is None:
            from lvlmrec.encode.image import ImageEncoder

            self._encoder = ImageEncoder(device=self.device, image_size=self.label_image_size)
        return self._encoder

    def share_image_pass(self, workdir: Any, paths: list[Any]) -> None:
        """Take labels from the workdir's shared EfficientNet pass over these image files
        (encode/image_pass.py), which the encode stage then reuses; it runs on `load`."""
        from lvlmrec.encode.image_pass import ImagePassCache
        from lvlmrec.workdir import ContentHasher

        self._shared = (ImagePassCache.for_workdir(workdir), list(paths), ContentHasher(workdir))

    def load(self) -> None:
        if self._workers() > 1:
            self._start_pool(self._workers())
        if self._shared is None or self.max_labels <= 0:
            return
        from lvlmrec.encode.image_pass import image_pass

        cache, paths, hasher = self._shared
        try:
            outputs = image_pass(self._image_encoder(), paths, cache,
                                 desc="EfficientNet labels", hasher=hasher)
        finally:
            cache.close()
            hasher.save()
        self._labels_by_source = {str(p): labels for p, labels
                                  in zip(paths, self._labels(outputs)) if p is not None}

    def _labels(self, outputs: Any) -> list[list[str]]:
        if self.categories:  # every class that could add to a category: threshold 0
            from lvlmrec.encode.image_pass import TOP_K

            return [category_words(row, self.label_threshold, self.max_labels)
                    for row in outputs.top_labels(TOP_K, 0.0)]
        top = outputs.top_labels(self.max_labels, self.label_threshold)
        # dict.fromkeys: ImageNet repeats a few names ("maillot", "crane")
        return [list(dict.fromkeys(name for name, _ in row)) for row in top]

    def describe(
        self, images: list[Image.Image | None], titles: list[str] | None = None
    ) -> list[str]:
        """One description per image; titles are ignored. A None image gives ""."""
        labels: list[list[str]] = [[] for _ in images]
        if self.max_labels > 0:
            sources = [img.info.get(SOURCE_KEY) if img is not None else None for img in images]
            todo = [i for i, s in enumerate(sources) if s not in self._labels_by_source]
            for i, s in enumerate(sources):
                if s in self._labels_by_source:
                    labels[i] = self._labels_by_source[s]
            if todo:  # images the shared pass did not see: run the network on them here
                outputs = self._image_encoder().encode_and_classify(
                    [images[i] for i in todo], show_progress_bar=False)
                for i, row in zip(todo, self._labels(outputs)):
                    labels[i] = row
        analysed = iter(self._analyse([img for img in images if img is not None]))
        texts = []
        for img, lab in zip(images, labels):
            if img is None:
                texts.append("")
                continue
            attrs = next(analysed)
            if not self.outline:  # attributes-v2's outline words: tall or wide only
                attrs.outline = None
            texts.append(sentence(attrs, lab, self._read_text(img) if self.ocr else ""))
        return texts

    def _analyse(self, images: list[Image.Image]) -> list[Attributes]:
        """`analyse_image` of each image, in order; on `processes` worker processes when
        there are several of both (each image's attributes are its own: the same either way)."""
        args = (self.n_colours, self.patterns, self.exclude_skin)
        workers = self._workers()
        if workers < 2 or len(images) < 2:
            return [analyse_image(img, *args) for img in images]
        self._start_pool(workers)
        chunk = -(-len(images) // workers)  # one part per worker
        parts = [(images[i:i + chunk], *args) for i in range(0, len(images), chunk)]
        try:
            return [attrs for part in self._pool.map(_analyse_images, parts) for attrs in part]
        except BrokenProcessPool:  # a worker was killed (out of memory?): go on in-process
            warnings.warn("describe.attributes: an analysis process died; analysing in this "
                          "process from now on", RuntimeWarning, stacklevel=2)
            self.close()
            self.processes = 1
            return [analyse_image(img, *args) for img in images]

    def _workers(self) -> int:
        if self.processes is not None:
            return self.processes
        if not _FORK:  # spawn re-runs the caller's script: only when asked for
            return 1
        from lvlmrec.device import available_cpus

        return available_cpus()

    def _start_pool(self, workers: int) -> None:
        """The analysis processes, started at once (`load` starts them before the describe
        loop's image-loading threads exist). On Linux they are forked: no import, and the
        caller's script is not run again, as spawn would (the analysis never calls torch,
        whose thread pool does not survive a fork)."""
        if self._pool is not None:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork" if _FORK else "spawn")
        self._pool = ProcessPoolExecutor(workers, context)
        list(self._pool.map(int, range(workers)))  # fork every worker now

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _read_text(self, img: Image.Image, max_words: int = 8) -> str:
        """Confident OCR lines, in reading order, cut to max_words."""
        if self._ocr_engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                raise _ocr_missing() from None
            self._ocr_engine = RapidOCR()
        # A PIL image (not an array) so RapidOCR converts RGB to the BGR it expects.
        result, _ = self._ocr_engine(to_rgb(img))
        words = [w for _, line, score in result or [] if float(score) >= 0.6 for w in line.split()]
        return " ".join(words[:max_words]).replace('"', "'")


def _ocr_missing() -> MissingDependencyError:
    return MissingDependencyError("rapidocr-onnxruntime", "ocr", "OCR in the attributes describer")
