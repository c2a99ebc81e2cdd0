"""The built-in demo catalog: procedurally drawn fashion products and simulated shoppers.

**The synthetic demo catalog.** Each item has a category (t-shirt, dress, trousers, skirt,
shorts, jacket, sneaker, boot, handbag, hat), one or two colours from a palette of 13, a
pattern (solid, stripes, dots, checks, zigzag, floral), a made-up brand and a latent
popularity (lognormal). Its image is a drawn product photo: the category's silhouette at a
random size, position and tilt, filled with the colours and the pattern, under directional
light with an outline, a soft shadow, a tinted background and a little noise. Its title reads
like a shop's ("Norvik Women's Midi Dress"): brand, sometimes an audience word and a style
word, a category synonym, and the primary colour on about 40% of items — never the pattern
or the second colour, so the image carries information the title lacks. Each user has
concentrated tastes (Dirichlet, alpha 0.3) over categories, colours and patterns; an item's
weight for a user is popularity^0.6 × taste(category) × taste(colour) × taste(pattern), where
taste(colour) mixes the primary (70%) and second (30%) colour. A user draws 5 + a negative
binomial number of items (mean 12 in all by default) without replacement in proportion to
these weights, and each user's interactions are split at random 60/20/20 into
train/valid/test. Each interaction has a timestamp: a user starts at a random time in a
year and shops every ~2 days (exponential gaps), in random order; with `sequential_strength`
s > 0 the order is a chain instead: each next item shares the last one's category or colour
with probability s (when one is left), so order carries signal (`split: loo` holds out
each user's last two items by time).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from lvlmrec.data.schema import Dataset, random_split
from lvlmrec.workdir import write_bytes

# Bump when drawing or sampling changes, so cached artifacts built on the old catalog are redone.
GENERATOR_VERSION = 1

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 32, 44),
    "blue": (42, 96, 206),
    "navy": (26, 36, 84),
    "green": (38, 140, 64),
    "yellow": (242, 204, 46),
    "orange": (240, 130, 30),
    "pink": (240, 150, 184),
    "purple": (122, 60, 152),
    "black": (28, 28, 30),
    "white": (246, 246, 244),
    "grey": (140, 142, 146),
    "brown": (112, 70, 40),
    "beige": (216, 196, 160),
}
COLOURS = tuple(PALETTE)
# Shops stock more neutrals than brights.
COLOUR_PRIOR = np.array([6, 7, 7, 5, 4, 4, 5, 4, 12, 10, 8, 5, 6], dtype=float)

PATTERNS = ("solid", "stripes", "dots", "checks", "zigzag", "floral")
PATTERN_PRIOR = np.array([0.35, 0.15, 0.13, 0.13, 0.11, 0.13])

BRANDS = (
    "Norvik", "Kestrel", "Aldana", "Brisa", "Calloway", "Dunmore", "Elowen", "Fenwick",
    "Garrow", "Halden", "Isola", "Jarrah", "Kinsale", "Lumio", "Marlow", "Nettle & Pine",
    "Oakhurst", "Pellam", "Quillon", "Rosslyn", "Saverne", "Tamsin", "Ulverton", "Valdor",
    "Wrenfield", "Yarrow", "Zephra", "Arlo & Finch", "Bexley", "Corvana",
)

# Category -> title nouns (synonyms), audiences that fit, silhouette, the band a second colour
# fills on a solid item, and seam lines. Shapes are ("poly", points), ("ellipse", box) or
# ("ring", box, width) in unit coordinates (x right, y down) around the frame centre.
CATEGORIES: dict[str, dict] = {
    "t-shirt": {
        "nouns": ("T-Shirt", "Tee", "Crew Neck Tee"),
        "audience": ("Women's", "Men's", "Unisex", "Kids'"),
        "shapes": [("poly", [(0.32, 0.14), (0.42, 0.11), (0.5, 0.17), (0.58, 0.11), (0.68, 0.14),
                             (0.88, 0.31), (0.79, 0.42), (0.70, 0.36), (0.70, 0.88), (0.30, 0.88),
                             (0.30, 0.36), (0.21, 0.42), (0.12, 0.31)])],
        "trim": (0.80, 0.88),
        "seams": [],
    },
    "dress": {
        "nouns": ("Dress", "Midi Dress", "Shift Dress", "Sundress"),
        "audience": ("Women's", "Girls'"),
        "shapes": [("poly", [(0.39, 0.10), (0.45, 0.10), (0.5, 0.17), (0.55, 0.10), (0.61, 0.10),
                             (0.63, 0.23), (0.58, 0.40), (0.79, 0.90), (0.21, 0.90), (0.42, 0.40),
                             (0.37, 0.23)])],
        "trim": (0.37, 0.43),
        "seams": [],
    },
    "trousers": {
        "nouns": ("Trousers", "Pants", "Chinos"),
        "audience": ("Women's", "Men's", "Kids'"),
        "shapes": [("poly", [(0.32, 0.10), (0.68, 0.10), (0.73, 0.92), (0.56, 0.92), (0.50, 0.34),
                             (0.44, 0.92), (0.27, 0.92)])],
        "trim": (0.10, 0.16),
        "seams": [((0.50, 0.16), (0.50, 0.34))],
    },
    "skirt": {
        "nouns": ("Skirt", "A-Line Skirt", "Mini Skirt"),
        "audience": ("Women's", "Girls'"),
        "shapes": [("poly", [(0.36, 0.22), (0.64, 0.22), (0.81, 0.78), (0.19, 0.78)])],
        "trim": (0.22, 0.28),
        "seams": [],
    },
    "shorts": {
        "nouns": ("Shorts", "Chino Shorts", "Bermuda Shorts"),
        "audience": ("Women's", "Men's", "Kids'"),
        "shapes": [("poly", [(0.27, 0.25), (0.73, 0.25), (0.79, 0.70), (0.55, 0.72), (0.50, 0.48),
                             (0.45, 0.72), (0.21, 0.70)])],
        "trim": (0.25, 0.31),
        "seams": [((0.50, 0.31), (0.50, 0.48))],
    },
    "jacket": {
        "nouns": ("Jacket", "Bomber Jacket", "Zip Jacket"),
        "audience": ("Women's", "Men's", "Unisex"),
        "shapes": [("poly", [(0.34, 0.12), (0.44, 0.10), (0.5, 0.22), (0.56, 0.10), (0.66, 0.12),
                             (0.82, 0.24), (0.90, 0.84), (0.78, 0.86), (0.72, 0.42), (0.72, 0.88),
                             (0.28, 0.88), (0.28, 0.42), (0.22, 0.86), (0.10, 0.84),
                             (0.18, 0.24)])],
        "trim": (0.81, 0.88),
        "seams": [((0.50, 0.22), (0.50, 0.88))],
    },
    "sneaker": {
        "nouns": ("Sneakers", "Trainers", "Low-Top Sneakers"),
        "audience": ("Women's", "Men's", "Unisex", "Kids'"),
        "shapes": [("poly", [(0.12, 0.66), (0.11, 0.46), (0.16, 0.40), (0.24, 0.42), (0.34, 0.47),
                             (0.42, 0.40), (0.47, 0.35), (0.53, 0.39), (0.66, 0.47), (0.80, 0.52),
                             (0.88, 0.56), (0.91, 0.62), (0.90, 0.66)]),
                   ("poly", [(0.09, 0.65), (0.93, 0.65), (0.93, 0.70), (0.90, 0.74), (0.11, 0.74),
                             (0.09, 0.71)])],
        "trim": (0.655, 0.74),
        "seams": [((0.45, 0.40), (0.62, 0.50)), ((0.24, 0.58), (0.70, 0.56))],
    },
    "boot": {
        "nouns": ("Boots", "Ankle Boots", "Chelsea Boots"),
        "audience": ("Women's", "Men's", "Kids'"),
        "shapes": [("poly", [(0.30, 0.15), (0.55, 0.15), (0.56, 0.55), (0.80, 0.64), (0.85, 0.78),
                             (0.28, 0.78)]),
                   ("poly", [(0.26, 0.77), (0.87, 0.77), (0.86, 0.85), (0.27, 0.85)])],
        "trim": (0.77, 0.85),
        "seams": [],
    },
    "handbag": {
        "nouns": ("Handbag", "Tote Bag", "Shoulder Bag"),
        "audience": ("Women's",),
        "shapes": [("poly", [(0.22, 0.40), (0.78, 0.40), (0.84, 0.85), (0.16, 0.85)]),
                   ("ring", (0.32, 0.14, 0.68, 0.62), 0.05)],
        "trim": (0.40, 0.52),
        "seams": [],
    },
    "hat": {
        "nouns": ("Hat", "Bucket Hat", "Sun Hat"),
        "audience": ("Women's", "Men's", "Unisex"),
        "shapes": [("ellipse", (0.10, 0.52, 0.90, 0.70)),
                   ("poly", [(0.30, 0.61), (0.33, 0.28), (0.45, 0.22), (0.55, 0.22), (0.67, 0.28),
                             (0.70, 0.61)])],
        "trim": (0.50, 0.58),
        "seams": [],
    },
}
CATEGORY_NAMES = tuple(CATEGORIES)
STYLE_WORDS = ("Classic", "Essential", "Everyday", "Premium", "Lightweight", "Relaxed",
               "Slim Fit", "Organic Cotton", "Vintage", "Signature")

TASTE_ALPHA = 0.3       # Dirichlet concentration of each taste: most users like few values
TASTE_FLOOR = 0.05      # share of each taste spread evenly, so nothing is strictly impossible
POPULARITY_POWER = 0.6
SECOND_COLOUR_RATE = 0.45
SECOND_COLOUR_WEIGHT = 0.3
TITLE_COLOUR_RATE = 0.4
SUPERSAMPLE = 2         # silhouettes are drawn at 2x and reduced, for smooth edges
_USER_BLOCK = 512       # users whose item weights are held at once


def describe_generative_model() -> str:
    """The generative model as a markdown paragraph (the README quotes it)."""
    return (__doc__ or "").partition("\n\n")[2].strip()


def generate_synthetic(
    out_dir: Path,
    n_items: int = 2000,
    n_users: int = 1500,
    seed: int = 0,
    image_size: int = 128,
    min_interactions: int = 5,
    mean_interactions: float = 12.0,
    show_progress: bool = True,
    image_prefix: str = "dataset/images",
    sequential_strength: float = 0.0,
    split: str = "random",
    cold_fraction: float = 0.2,
) -> Dataset:
    """Draw the demo catalog's images into `out_dir/images` and return the validated dataset.

    Nothing but the images is written: the caller saves the returned `Dataset`. The same
    arguments always give the same tables and byte-identical images, and each image is
    written atomically, so an interrupted run is simply repeated. `split="cold_items"`
    replaces the random split by a cold-item split (data/cold.py) of `cold_fraction`.
    """
    items, interactions, users = synthetic_tables(n_items, n_users, seed, min_interactions,
                                                  mean_interactions, image_prefix,
                                                  sequential_strength,
                                                  "random" if split == "cold_items" else split)
    filters = []
    if split == "cold_items":  # the random 60/20/20 labels are replaced
        from lvlmrec.data.cold import cold_split_frame

        interactions, users, filters = cold_split_frame(interactions, users, cold_fraction,
                                                        seed)

    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = items.itertuples(index=False)
    for row in tqdm(rows, total=n_items, desc="drawing images", unit="img",
                    disable=not show_progress):
        img = draw_item(row.category, row.colour, row.colour2, row.pattern, image_size,
                        np.random.default_rng((seed, row.item_id)))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        write_bytes(image_dir / f"{row.item_id}.png", buf.getvalue())

    ds = Dataset(items, interactions, users, info={
        "format": "synthetic",
        "generator": {
            "version": GENERATOR_VERSION, "n_items": n_items, "n_users": n_users, "seed": seed,
            "image_size": image_size, "min_interactions": min_interactions,
            "mean_interactions": mean_interactions,
            # only when set, so the default catalog's provenance is unchanged
            **({"sequential_strength": sequential_strength} if sequential_strength else {}),
            **({"split": split} if split != "random" else {}),
        },
        **({"filters": filters} if filters else {}),
    })
    ds.validate("synthetic catalog")
    return ds


def synthetic_tables(
    n_items: int = 2000,
    n_users: int = 1500,
    seed: int = 0,
    min_interactions: int = 5,
    mean_interactions: float = 12.0,
    image_prefix: str = "dataset/images",
    sequential_strength: float = 0.0,
    split: str = "random",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The catalog's items, split interactions and users, without drawing any image (the
    same tables `generate_synthetic` returns; benchmarks of collaborative models need no
    more). Timestamps come from their own random stream, so `sequential_strength` and
    `split` never change which items a user has."""
    if not 3 <= min_interactions <= n_items:
        raise ValueError(
            f"min_interactions must be between 3 (one train, valid and test interaction) "
            f"and n_items={n_items}; got {min_interactions}"
        )
    rng = np.random.default_rng(seed)
    items = _items(rng, n_items, image_prefix)
    interactions = _interactions(rng, items, n_users, min_interactions, mean_interactions)
    interactions["timestamp"] = _timestamps(interactions, items, seed, sequential_strength)
    if split == "random":
        interactions["split"] = random_split(interactions["user_id"].to_numpy(), seed)
    elif split in ("loo", "temporal"):
        from lvlmrec.data.filters import loo_split, temporal_split

        ts = interactions["timestamp"].to_numpy()
        interactions["split"] = (loo_split(interactions["user_id"].to_numpy(), ts)
                                 if split == "loo" else temporal_split(ts))
    else:
        raise ValueError(f"split must be random, loo or temporal; got {split!r}")
    users = pd.DataFrame({
        "user_id": np.arange(n_users),
        "source_id": [f"U{u + 1:05d}" for u in range(n_users)],
    })
    return items, interactions, users


# --------------------------------------------------------------------------- catalog
def _items(rng: np.random.Generator, n_items: int, image_prefix: str) -> pd.DataFrame:
    cat = rng.integers(len(CATEGORY_NAMES), size=n_items)
    colour_p = COLOUR_PRIOR / COLOUR_PRIOR.sum()
    col = rng.choice(len(COLOURS), size=n_items, p=colour_p)
    # A second colour is never the first: draw from the prior without it.
    col2 = np.full(n_items, -1)
    two = rng.random(n_items) < SECOND_COLOUR_RATE
    for i in np.flatnonzero(two):
        p = colour_p.copy()
        p[col[i]] = 0
        col2[i] = rng.choice(len(COLOURS), p=p / p.sum())
    pat = rng.choice(len(PATTERNS), size=n_items, p=PATTERN_PRIOR)
    brand = rng.integers(len(BRANDS), size=n_items)
    popularity = rng.lognormal(0.0, 1.0, size=n_items)

    titles = []
    for i in range(n_items):
        spec = CATEGORIES[CATEGORY_NAMES[cat[i]]]
        words = [BRANDS[brand[i]]]
        if rng.random() < 0.6:
            words.append(spec["audience"][rng.integers(len(spec["audience"]))])
        if rng.random() < 0.4:
            words.append(STYLE_WORDS[rng.integers(len(STYLE_WORDS))])
        words.append(spec["nouns"][rng.integers(len(spec["nouns"]))])
        title = " ".join(words)
        if rng.random() < TITLE_COLOUR_RATE:
            colour = COLOURS[col[i]].capitalize()
            # Shops put the colour either after a dash or in front of the noun.
            if rng.random() < 0.6:
                title = f"{title} - {colour}"
            else:
                title = " ".join(words[:-1] + [colour, words[-1]])
        titles.append(title)

    return pd.DataFrame({
        "item_id": np.arange(n_items),
        "source_id": [f"SYN{i + 1:06d}" for i in range(n_items)],
        "title": titles,
        "text": "",
        "image_path": [f"{image_prefix}/{i}.png" for i in range(n_items)],
        "category": [CATEGORY_NAMES[c] for c in cat],
        "colour": [COLOURS[c] for c in col],
        "colour2": [COLOURS[c] if c >= 0 else "" for c in col2],
        "pattern": [PATTERNS[p] for p in pat],
        "brand": [BRANDS[b] for b in brand],
        "popularity": popularity,
    })


def _taste(rng: np.random.Generator, n_users: int, k: int) -> np.ndarray:
    p = rng.dirichlet(np.full(k, TASTE_ALPHA), size=n_users)
    return (1 - TASTE_FLOOR) * p + TASTE_FLOOR / k


def _interactions(
    rng: np.random.Generator,
    items: pd.DataFrame,
    n_users: int,
    min_interactions: int,
    mean_interactions: float,
) -> pd.DataFrame:
    n_items = len(items)
    cat = items["category"].map(CATEGORY_NAMES.index).to_numpy()
    col = items["colour"].map(COLOURS.index).to_numpy()
    col2 = items["colour2"].map(lambda c: COLOURS.index(c) if c else -1).to_numpy()
    pat = items["pattern"].map(PATTERNS.index).to_numpy()
    taste_cat = _taste(rng, n_users, len(CATEGORY_NAMES))
    taste_col = _taste(rng, n_users, len(COLOURS))
    taste_pat = _taste(rng, n_users, len(PATTERNS))

    popularity = POPULARITY_POWER * np.log(items["popularity"].to_numpy())
    two = col2 >= 0

    def log_weights(users: slice) -> np.ndarray:
        """log of each user's weight for each item: popularity and the three tastes."""
        colour_fit = taste_col[users][:, col]
        colour_fit[:, two] = ((1 - SECOND_COLOUR_WEIGHT) * colour_fit[:, two]
                              + SECOND_COLOUR_WEIGHT * taste_col[users][:, col2[two]])
        return (popularity + np.log(taste_cat[users][:, cat]) + np.log(colour_fit)
                + np.log(taste_pat[users][:, pat]))

    # Overdispersed counts (negative binomial, shape 2) on top of the minimum, like real logs.
    extra_mean = max(mean_interactions - min_interactions, 0.0)
    extra = rng.negative_binomial(2, 2 / (2 + extra_mean), size=n_users) if extra_mean else 0
    cap = min(n_items, max(min_interactions, int(round(5 * mean_interactions))))
    counts = np.minimum(min_interactions + extra, cap)

    # Gumbel top-k draws k items without replacement with probability proportional to weight.
    # Blocks of users keep memory at block x items (the study's 23k x 38k users x items would
    # be 7 GB per array); the Gumbel noise is drawn block after block from the same stream,
    # so the draws are those of one (users, items) array.
    user_ids = np.repeat(np.arange(n_users), counts)
    chosen = []
    for lo in range(0, n_users, _USER_BLOCK):
        users = slice(lo, min(lo + _USER_BLOCK, n_users))
        keys = log_weights(users)
        keys += rng.gumbel(size=keys.shape)
        top = np.argpartition(-keys, cap - 1, axis=1)[:, :cap] if cap < n_items else \
            np.broadcast_to(np.arange(n_items), keys.shape)
        ranked = np.take_along_axis(top, np.argsort(
            -np.take_along_axis(keys, top, axis=1), axis=1, kind="stable"), axis=1)
        chosen += [ranked[u, :c] for u, c in enumerate(counts[users])]
    item_ids = np.concatenate(chosen)
    df = pd.DataFrame({"user_id": user_ids, "item_id": item_ids})
    return df.sort_values(["user_id", "item_id"], ignore_index=True)


def _timestamps(interactions: pd.DataFrame, items: pd.DataFrame, seed: int,
               strength: float) -> np.ndarray:
    """Unix seconds of each interaction (rows grouped by user): a random order per user, or
    with `strength` > 0 a chain where each next item shares the previous one's category or
    colour with that probability."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"sequential_strength must be in [0, 1]; got {strength}")
    rng = np.random.default_rng((seed, 7919))  # its own stream: the tables stay as they were
    user = interactions["user_id"].to_numpy()
    item = interactions["item_id"].to_numpy()
    cat = items["category"].to_numpy()
    col = items["colour"].to_numpy()
    out = np.empty(len(user), dtype=np.int64)
    start = np.r_[0, np.flatnonzero(user[1:] != user[:-1]) + 1] if len(user) else []
    ends = np.r_[start[1:], len(user)] if len(user) else []
    for lo, hi in zip(start, ends):
        rows = np.arange(lo, hi)
        if strength > 0:
            left = list(rng.permutation(rows))
            chain = [left.pop()]
            while left:
                last = item[chain[-1]]
                near = [j for j, r in enumerate(left)
                        if cat[item[r]] == cat[last] or col[item[r]] == col[last]]
                pick = near[rng.integers(len(near))] if near and rng.random() < strength \
                    else int(rng.integers(len(left)))
                chain.append(left.pop(pick))
            rows = np.asarray(chain)
        else:
            rows = rng.permutation(rows)
        t0 = 1_600_000_000 + int(rng.integers(365 * 86400))
        gaps = np.maximum(rng.exponential(2 * 86400, size=len(rows)).astype(np.int64), 1)
        out[rows] = t0 + np.cumsum(gaps)
    return out


# --------------------------------------------------------------------------- drawing
def draw_item(
    category: str, colour: str, colour2: str, pattern: str, size: int, rng: np.random.Generator
) -> Image.Image:
    """One product photo: silhouette, colours and pattern under random pose and light."""
    spec = CATEGORIES[category]
    scale = rng.uniform(0.7, 1.0)
    angle = math.radians(rng.uniform(-6, 6))
    shift = rng.uniform(-0.45, 0.45, size=2) * (1 - scale)
    centre = np.array([0.5, 0.5]) + shift
    cos, sin = math.cos(angle), math.sin(angle)

    def place(points, factor=1.0):
        # Unit coordinates -> pixels at `factor` x the output size.
        p = np.asarray(points, dtype=float) - 0.5
        p = np.stack([p[:, 0] * cos - p[:, 1] * sin, p[:, 0] * sin + p[:, 1] * cos], axis=1)
        p = (p * scale + centre) * size * factor
        return [tuple(q) for q in p]

    big = size * SUPERSAMPLE
    mask_img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask_img)
    for shape in spec["shapes"]:
        if shape[0] == "poly":
            draw.polygon(place(shape[1], SUPERSAMPLE), fill=255)
        else:
            x0, y0, x1, y1 = shape[1]
            # Ellipses are placed by their centre; the small tilt is ignored for them.
            (cx, cy), = place([(0.5 * (x0 + x1), 0.5 * (y0 + y1))], SUPERSAMPLE)
            rx, ry = 0.5 * (x1 - x0) * scale * big, 0.5 * (y1 - y0) * scale * big
            width = int(round(shape[2] * scale * big)) if shape[0] == "ring" else 0
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=None if width else 255,
                         outline=255 if width else None, width=width)
    mask_img = mask_img.reduce(SUPERSAMPLE)
    alpha = np.asarray(mask_img, dtype=np.float32) / 255.0

    # Coordinates in the item's own frame (pixels at output size), so patterns follow the tilt.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ox, oy = centre * size
    u = (xx - ox) * cos + (yy - oy) * sin
    v = -(xx - ox) * sin + (yy - oy) * cos

    base = np.array(PALETTE[colour], dtype=np.float32)
    accent = np.array(PALETTE[colour2], dtype=np.float32) if colour2 else _shade(base)
    period = max(4.0, size * scale * rng.uniform(0.08, 0.14))
    if pattern != "solid":
        amount = _pattern(pattern, u, v, period, rng, size)
    elif colour2:
        y0, y1 = spec["trim"]
        band = Image.new("L", (size, size), 0)
        ImageDraw.Draw(band).polygon(place([(0, y0), (1, y0), (1, y1), (0, y1)]), fill=255)
        amount = np.asarray(band, dtype=np.float32) / 255.0
    else:
        amount = np.zeros((size, size), dtype=np.float32)
    obj = base * (1 - amount[..., None]) + accent * amount[..., None]

    if spec["seams"]:
        seams = Image.new("L", (size, size), 0)
        sd = ImageDraw.Draw(seams)
        for line in spec["seams"]:
            sd.line(place(line), fill=255, width=max(1, size // 96))
        s = np.asarray(seams, dtype=np.float32)[..., None] / 255.0
        obj = obj * (1 - 0.35 * s)

    # Directional light with a little falloff towards the silhouette's far side.
    theta = rng.uniform(0, 2 * math.pi)
    gain = rng.uniform(0.15, 0.35)
    light = 1 + gain * ((xx - ox) * math.cos(theta) + (yy - oy) * math.sin(theta)) / (scale * size)
    obj = obj * light[..., None] + rng.uniform(-8, 8)

    # A light, slightly graded backdrop and a soft shadow down-right of the item.
    tint = 255 - rng.uniform(0, 28, size=3)
    grade = 1 - rng.uniform(0.0, 0.08) * (yy / size)
    bg = tint[None, None, :] * grade[..., None]
    offset = max(1, size // 40)
    shadow_img = Image.fromarray((alpha * 255).astype(np.uint8)).transform(
        (size, size), Image.AFFINE, (1, 0, -offset, 0, 1, -offset)
    ).filter(ImageFilter.BoxBlur(max(1, size // 32)))
    shadow = np.asarray(shadow_img, dtype=np.float32) / 255.0
    bg = bg * (1 - 0.18 * shadow[..., None])

    # A thin dark outline keeps white and beige items visible on a light backdrop.
    grown = np.asarray(mask_img.filter(ImageFilter.MaxFilter(3)), dtype=np.float32) / 255.0
    edge = np.clip(grown - alpha, 0, 1)[..., None]
    bg = bg * (1 - 0.45 * edge)

    a = alpha[..., None]
    img = bg * (1 - a) + obj * a
    img = img + rng.normal(0, rng.uniform(1.0, 3.0), size=img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def _shade(rgb: np.ndarray) -> np.ndarray:
    """The pattern colour of a one-colour item: a lighter tone of dark colours, else darker."""
    if rgb.mean() < 90:
        return rgb + 0.45 * (255 - rgb)
    return rgb * 0.6


def _pattern(
    name: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator, size: int
) -> np.ndarray:
    """Share of the second colour per pixel (0..1) for a pattern in item coordinates u, v."""
    phase = rng.uniform(0, 1)
    if name == "stripes":
        theta = math.radians(rng.choice([0, 90, 45, -45]))
        t = (u * math.cos(theta) + v * math.sin(theta)) / period + phase
        return (np.mod(t, 1.0) < rng.uniform(0.35, 0.55)).astype(np.float32)
    if name == "dots":
        row = np.floor(v / period)
        du = np.mod(u / period + 0.5 * row + phase, 1.0) - 0.5
        dv = np.mod(v / period, 1.0) - 0.5
        r = rng.uniform(0.2, 0.32)
        return (du * du + dv * dv < r * r).astype(np.float32)
    if name == "checks":
        # Gingham: two crossing half-strength stripe sets, full strength where they meet.
        a = np.mod(u / period + phase, 1.0) < 0.5
        b = np.mod(v / period + phase, 1.0) < 0.5
        return 0.5 * a.astype(np.float32) + 0.5 * b.astype(np.float32)
    if name == "zigzag":
        wave = period * rng.uniform(0.8, 1.5)
        tri = 2 * np.abs(np.mod(u / wave, 1.0) - 0.5)
        t = (v + period * rng.uniform(0.6, 1.2) * tri) / period + phase
        return (np.mod(t, 1.0) < 0.5).astype(np.float32)
    if name == "floral":
        layer = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(layer)
        step = period * 1.6
        petal = step * rng.uniform(0.12, 0.17)
        # Flowers on a jittered grid over the whole frame (the silhouette mask clips them).
        for gy in np.arange(-step, size + step, step):
            for gx in np.arange(-step, size + step, step):
                cx, cy = gx + rng.uniform(-0.3, 0.3) * step, gy + rng.uniform(-0.3, 0.3) * step
                turn = rng.uniform(0, 2 * math.pi)
                for k in range(5):
                    a = turn + 2 * math.pi * k / 5
                    px, py = cx + 1.6 * petal * math.cos(a), cy + 1.6 * petal * math.sin(a)
                    draw.ellipse((px - petal, py - petal, px + petal, py + petal), fill=255)
        return np.asarray(layer, dtype=np.float32) / 255.0
    raise ValueError(f"unknown pattern {name!r}")
