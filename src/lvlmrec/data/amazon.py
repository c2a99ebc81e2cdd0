"""Amazon Reviews 2018 and 2023 dumps: JSON lines, plain or gzipped (DESIGN §2).

Reviews are streamed once: each line keeps only four compact numbers (user code, item code,
rating, timestamp) and each distinct id is stored once, so memory grows with the number of
rows x 24 bytes plus the ids, never with the review texts. Metadata is streamed after
filtering and only lines of kept items are parsed (a regex finds the id first). 2018
metadata files are often Python literals rather than JSON: a line that is not JSON is read
with `ast.literal_eval`.

Items are identified by `asin` (2018) or `parent_asin` (2023, falling back to `asin`).
With metadata, the catalog is the metadata's items plus those the filtered reviews keep:
a product nobody reviewed (or whose reviews the filters removed) stays as a cold item,
after the reviewed ones (`drop_items_without_interactions` keeps only reviewed items; then
only their metadata lines are parsed). Every metadata record is then held in memory.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import gzip
import html
import json
import re
import zlib
from array import array
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lvlmrec.config import AmazonSource
from lvlmrec.data.filters import RawLog, process_log
from lvlmrec.data.images import link_images
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class ReviewFields:
    user: str
    items: tuple[str, ...]  # first present wins
    rating: str
    time: str
    time_scale: int  # divide by this to get seconds


REVIEW_FIELDS = {
    "amazon2018": ReviewFields("reviewerID", ("asin",), "overall", "unixReviewTime", 1),
    "amazon2023": ReviewFields("user_id", ("parent_asin", "asin"), "rating", "timestamp", 1000),
}
META_KEY = {"amazon2018": "asin", "amazon2023": "parent_asin"}
META_COLUMNS = ("title", "text", "image_url", "brand", "category", "price")


# --------------------------------------------------------------------------- reading lines
@contextlib.contextmanager
def open_lines(path: Path) -> Iterator[IO[bytes]]:
    """A binary line stream over a plain or gzipped file (detected by its magic bytes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
        yield fh


def parse_record(line: bytes, where: str) -> dict[str, Any]:
    """One JSON object, or a Python dict literal (old Amazon metadata)."""
    try:
        record = json.loads(line)
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to be a record") from None
    except ValueError:
        try:
            record = ast.literal_eval(line.decode("utf-8", errors="replace").strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise DataError(f"{where}: neither JSON nor a Python literal "
                            f"({type(err).__name__}: {err})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    return record


def record_id(value: Any, field: str, where: str) -> str:
    """An id field as text: a string or an integer; anything else (a list, an object) is an
    error naming the line."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: {field} must be a string, not {type(value).__name__} "
                    f"{str(value)[:40]!r}")


def iter_records(path: Path, desc: str = "reading", show_progress: bool = False,
                 key: str | None = None, wanted: set[str] | None = None,
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line. With `key` and `wanted`, lines
    whose `key` is not wanted are skipped before parsing."""
    probe = re.compile(rb"""["']""" + re.escape(key).encode() + rb"""["']\s*:\s*["']([^"']*)["']"""
                       ) if key and wanted is not None else None
    wanted_b = {w.encode() for w in wanted} if probe is not None else set()
    with open_lines(path) as fh, tqdm(desc=desc, unit=" lines", disable=not show_progress,
                                      mininterval=1.0) as bar:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if lineno % 10000 == 0:
                    bar.update(10000)
                if not line.strip():
                    continue
                if probe is not None:
                    m = probe.search(line)
                    if m is not None and m.group(1) not in wanted_b:
                        continue
                yield lineno, parse_record(line, f"{path}:{lineno}")
        except (EOFError, OSError, zlib.error) as err:  # gzip: truncated or corrupt
            raise DataError(f"{path}: cannot read past line {lineno} "
                            f"({type(err).__name__}: {err}); is the file truncated?") from None


# --------------------------------------------------------------------------- reviews
def _review_time(record: dict[str, Any], fields: ReviewFields) -> int:
    value = record.get(fields.time)
    if value is not None:
        return int(float(value)) // fields.time_scale
    text = record.get("reviewTime")  # 2018: "09 13, 2009"
    if text:
        return int(datetime.strptime(text, "%m %d, %Y").replace(tzinfo=timezone.utc).timestamp())
    return -1


def read_reviews(path: Path, fmt: str, show_progress: bool = False) -> RawLog:
    """Stream a reviews file into a RawLog (null ratings become NaN, no time becomes -1)."""
    fields = REVIEW_FIELDS[fmt]
    user_codes: dict[str, int] = {}
    item_codes: dict[str, int] = {}
    users, items = array("q"), array("q")
    ratings, times = array("d"), array("q")
    for lineno, rec in iter_records(path, "reading reviews", show_progress):
        where = f"{path}:{lineno}"
        user = rec.get(fields.user)
        item_field = next((k for k in fields.items if rec.get(k)), None)
        if not user or item_field is None:
            missing = fields.user if not user else " or ".join(fields.items)
            raise DataError(f"{where}: review has no {missing!r}")
        user, item = record_id(user, fields.user, where), record_id(rec[item_field],
                                                                   item_field, where)
        try:
            rating = rec.get(fields.rating)
            ratings.append(float("nan") if rating is None else float(rating))
            times.append(_review_time(rec, fields))
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: bad rating or time ({err})") from None
        code = user_codes.get(user)
        if code is None:
            code = user_codes[user] = len(user_codes)
        users.append(code)
        code = item_codes.get(item)
        if code is None:
            code = item_codes[item] = len(item_codes)
        items.append(code)
    if not users:
        raise DataError(f"{path}: no reviews")
    return RawLog(
        user=np.frombuffer(users, dtype=np.int64), item=np.frombuffer(items, dtype=np.int64),
        user_keys=np.array(list(user_codes), dtype=object),
        item_keys=np.array(list(item_codes), dtype=object),
        rating=np.frombuffer(ratings, dtype=np.float64),
        timestamp=np.frombuffer(times, dtype=np.int64),
    )


# --------------------------------------------------------------------------- metadata
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """Plain text from a metadata field: lists joined, HTML tags and entities removed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    if isinstance(value, dict):
        return ""
    text = _TAG.sub(" ", html.unescape(str(value)))
    return _SPACE.sub(" ", text).strip()


def _first_url(*candidates: Any) -> str:
    for value in candidates:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
        if isinstance(value, (list, tuple)):
            url = _first_url(*value)
            if url:
                return url
    return ""


def _image_url_2023(images: Any) -> str:
    """The main image's hi_res (else large) URL; `images` is a list of dicts, or one dict of
    lists in the Hugging Face copy."""
    if isinstance(images, dict):
        keys = list(images)
        images = [dict(zip(keys, vals)) for vals in zip(*images.values())]
    if not isinstance(images, list):
        return ""
    images = [im for im in images if isinstance(im, dict)]
    images.sort(key=lambda im: im.get("variant") != "MAIN")
    return _first_url(*[(im.get("hi_res"), im.get("large")) for im in images])


def metadata_row(record: dict[str, Any], fmt: str) -> dict[str, str]:
    """The item columns a metadata record gives: title, text, image_url, brand, category,
    price (all strings, "" when absent)."""
    if fmt == "amazon2018":
        text = [record.get("description"), record.get("feature")]
        image_url = _first_url(record.get("imageURLHighRes"), record.get("imageURL"),
                               record.get("imUrl"))
        brand = record.get("brand")
        category = record.get("category") or record.get("main_cat")
    else:
        text = [record.get("description"), record.get("features")]
        image_url = _image_url_2023(record.get("images"))
        details = record.get("details")
        brand = record.get("store") or (details.get("Brand") if isinstance(details, dict)
                                        else None)
        category = record.get("categories") or record.get("main_category")
    if isinstance(category, (list, tuple)):
        category = " > ".join(clean_text(c) for c in category if clean_text(c))
    price = record.get("price")
    return {"title": clean_text(record.get("title")), "text": clean_text(text),
            "image_url": image_url, "brand": clean_text(brand), "category": clean_text(category),
            "price": "" if price is None else clean_text(price)}


def read_metadata(path: Path, fmt: str, wanted: set[str] | None,
                  show_progress: bool = False) -> pd.DataFrame:
    """Metadata of the `wanted` ids (every id when None), indexed by id; the first record
    of an id wins."""
    key = META_KEY[fmt]
    rows: dict[str, dict[str, str]] = {}
    for lineno, rec in iter_records(path, "reading metadata", show_progress, key, wanted):
        item = rec.get(key) or rec.get("asin")
        if not item:
            raise DataError(f"{path}:{lineno}: metadata record has no {key!r}")
        item = record_id(item, key if rec.get(key) else "asin", f"{path}:{lineno}")
        if (wanted is None or item in wanted) and item not in rows:
            rows[item] = metadata_row(rec, fmt)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(META_COLUMNS))


def join_metadata(items: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Fill the metadata columns of `items` (by source_id); items without metadata get ""."""
    joined = meta.reindex(items["source_id"].astype(str).to_numpy()).fillna("")
    out = items.copy()
    for col in META_COLUMNS:
        out[col] = joined[col].to_numpy()
    return out


# --------------------------------------------------------------------------- dataset
def load_amazon(source: AmazonSource, show_progress: bool = True) -> Dataset:
    log = read_reviews(source.reviews, source.format, show_progress)
    read_counts = log.counts()
    n_unrated = int(np.isnan(log.rating).sum())
    done = process_log(log, min_rating=source.min_rating, k=source.kcore, split=source.split,
                       seed=source.seed, cold_fraction=source.cold_fraction)
    source_ids = log.item_keys[done.item_codes]
    info: dict[str, Any] = {"format": source.format, "read": {**read_counts,
                                                              "n_unrated": n_unrated}}
    meta = None
    if source.metadata is not None:
        reviewed = set(source_ids)
        meta = read_metadata(source.metadata, source.format,
                             reviewed if source.drop_items_without_interactions else None,
                             show_progress)
        unreviewed = [k for k in meta.index if k not in reviewed]
        source_ids = np.concatenate([source_ids, np.asarray(unreviewed, dtype=object)])
    items = pd.DataFrame({"item_id": np.arange(len(source_ids)), "source_id": source_ids,
                          "title": "", "text": "", "image_path": ""})
    if meta is not None:
        items = join_metadata(items, meta)
        info["metadata"] = {"n_items_matched": int(len(meta)),
                            "n_items_without_metadata": int(len(items) - len(meta)),
                            "n_items_only_in_metadata": len(unreviewed)}
    if source.images is not None:
        items["image_path"] = link_images(items, source.images)
    users = pd.DataFrame({"user_id": np.arange(len(done.user_codes)),
                          "source_id": log.user_keys[done.user_codes]})
    info["filters"] = done.steps
    ds = Dataset(items, done.interactions, users, info=info)
    ds.validate(f"{source.format} dataset from {source.reviews}")
    return ds
