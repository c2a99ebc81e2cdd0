"""Fidelity of the offline `attributes` describer on the synthetic catalog's ground truth.

Draws a synthetic catalog (or reads a prepared synthetic workdir), describes every item
with the attributes describer (ImageNet labels included) and reports, per attribute, the
share of items whose description names the labelled value: the first-named colour (shade
words dropped: "light blue" counts as blue), the pattern word, the category word; and the
share of items whose text is shared with another item; then, when MovieLens posters are
on the machine (`--posters`), how many of their texts are distinct (posters carry no
labels). Writes JSON (date, machine, load, command) to
benchmarks/results/attributes_fidelity.json unless --out says otherwise.

    python benchmarks/attributes_fidelity.py [--items 500] [--workdir runs/demo]
        [--posters DIR --max-posters 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from lvlmrec.describe.attributes import AttributesDescriber
from lvlmrec.describe.base import DescribeItem, load_item_image

try:  # present from attributes-v2 on
    from lvlmrec.describe.attributes import base_colour
except ImportError:  # pragma: no cover - measuring an older describer
    def base_colour(name: str) -> str:
        return name.split()[-1]

# synthetic label -> words that name it in a description
PATTERN_WORDS = {"solid": ["solid"], "stripes": ["striped"], "dots": ["polka dot"],
                 "checks": ["checked"], "zigzag": ["zigzag"], "floral": ["patterned"]}
CATEGORY_WORDS = {"t-shirt": ["top", "jersey", "sweatshirt", "t-shirt"],
                  "dress": ["dress", "gown"], "trousers": ["trousers", "jean"],
                  "skirt": ["skirt"], "shorts": ["shorts", "swimming trunks"],
                  "jacket": ["jacket", "coat", "cardigan", "suit"],
                  "sneaker": ["sneaker", "running shoe", "shoe"],
                  "boot": ["boot"], "handbag": ["handbag", "purse", "bag"],
                  "hat": ["hat", "cap", "sombrero", "bonnet"]}
_FIRST = re.compile(r"^An? (?:solid )?(.+?) (?:product|striped|checked|patterned|polka-dot)")


def first_colour(text: str) -> str:
    """The first colour a description names ("" when none)."""
    m = _FIRST.match(text)
    if not m:
        return ""
    return base_colour(m.group(1).split(" and ")[0].split(",")[0].strip())


def variety(texts: list[str]) -> dict:
    """How many texts are distinct, the share of items sharing theirs, mean words."""
    counts = Counter(texts)
    return {"distinct_texts": len(counts),
            "shared_text_share": round(sum(n for n in counts.values() if n > 1) / len(texts), 4),
            "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 2)}


def describe_all(describer: AttributesDescriber, paths: list[Path]) -> tuple[list[str], float]:
    """Texts for the images (labels included), in batches of 64, and the seconds taken."""
    images = [load_item_image(DescribeItem(i, p, ""))[0] for i, p in enumerate(paths)]
    t0 = time.perf_counter()
    texts = []
    for start in range(0, len(images), 64):
        texts += describer.describe(images[start:start + 64])
    return texts, time.perf_counter() - t0


def fidelity(items: pd.DataFrame, texts: list[str]) -> dict:
    colour = [first_colour(t) == c for t, c in zip(texts, items["colour"])]
    pattern = [any(w in t for w in PATTERN_WORDS[p]) for t, p in zip(texts, items["pattern"])]
    category = [any(w in t.lower() for w in CATEGORY_WORDS[c])
                for t, c in zip(texts, items["category"])]
    by_colour = {c: round(float(pd.Series(colour)[items["colour"].to_numpy() == c].mean()), 3)
                 for c in sorted(items["colour"].unique())}
    return {"n_items": len(texts), "colour_first": round(sum(colour) / len(texts), 4),
            "pattern": round(sum(pattern) / len(texts), 4),
            "category": round(sum(category) / len(texts), 4),
            **variety(texts),
            "colour_first_by_label": by_colour, "examples": texts[:8]}


def main() -> None:
    from record import run_record, write_result

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--workdir", type=Path, help="a prepared synthetic workdir to read")
    parser.add_argument("--posters", type=Path,
                        default=Path("/work/shared/data/movielens-100k-posters"))
    parser.add_argument("--max-posters", type=int, default=1000)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "attributes_fidelity.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.workdir:
            root = args.workdir / "dataset"
            items = pd.read_parquet(root / "items.parquet").head(args.items)
            paths = [args.workdir / p for p in items["image_path"]]
        else:
            from lvlmrec.data.synthetic import generate_synthetic

            root = Path(tmp)
            items = generate_synthetic(root, n_items=args.items, n_users=50, seed=0,
                                       show_progress=False).items
            paths = [root / "images" / f"{i}.png" for i in items["item_id"]]
        describer = AttributesDescriber(device="cpu")
        texts, seconds = describe_all(describer, paths)
    result = fidelity(items, texts)
    result["describer"] = describer.settings()
    result["seconds"] = round(seconds, 2)
    posters = args.posters / "posters"
    if posters.is_dir() and args.max_posters > 0:
        files = sorted(posters.glob("*.jpg"), key=lambda p: int(p.stem))[:args.max_posters]
        poster_texts, poster_seconds = describe_all(describer, files)
        result["posters"] = {"n_items": len(files), **variety(poster_texts),
                             "seconds": round(poster_seconds, 2),
                             "examples": poster_texts[:4]}
    print({k: v for k, v in result.items() if k != "examples"})
    write_result(args.out, run_record(result, load_before))


if __name__ == "__main__":
    main()
