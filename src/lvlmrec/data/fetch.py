"""Download item images for catalogs that only have URLs (`lvlmrec fetch-images`).

For every item with an `image_url` and no readable local image, the image is downloaded into
`dataset/images/<source id>.<ext>` (the original id, not the item number, so files stay
right when the dataset is prepared again with other filters; odd ids are hashed, see
`images.file_stem`). Each download is streamed to a temporary file under a size cap and a
deadline, must decode as an image (`imageio.load_image`), and only then is renamed into
place, so a file in the folder is always a whole, readable image. Transient failures
(timeouts, broken connections, HTTP 5xx/408/429) are retried with exponential backoff;
permanent ones (other 4xx, too big, not an image) are not. A second run checks the files
it finds and downloads only what is still missing: it never fetches a valid file again.

At the end `items.parquet` gets the new image paths (atomically), `dataset.json` the
coverage, `dataset/fetch_errors.csv` one row per failed item, and the prepare stage record
the new dataset digest, so later stages see changed inputs and rerun.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lvlmrec.data.images import IMAGE_EXTENSIONS, file_stem
from lvlmrec.data.schema import Dataset, dataset_digest
from lvlmrec.errors import DataError
from lvlmrec.imageio import load_image
from lvlmrec.workdir import (FILE_MODE, StageBook, Workdir, read_json, write_csv, write_json,
                             write_parquet)

FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                     "BMP": ".bmp", "TIFF": ".tif"}
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
USER_AGENT = "lvlmrec-fetch-images/0.1"
CHECK_SIZE = 64  # decode existing files at reduced scale: enough to prove they decode


class _Permanent(Exception):
    """A failure that retrying cannot fix."""


@dataclasses.dataclass
class FetchResult:
    item_id: int
    status: str  # present (image_path already valid), found (file on disk), fetched, failed
    path: Path | None = None
    error: str = ""
    attempts: int = 0


@dataclasses.dataclass
class FetchSummary:
    n_items: int
    n_with_url: int = 0
    n_present: int = 0
    n_found: int = 0
    n_fetched: int = 0
    n_failed: int = 0
    n_with_image: int = 0
    seconds: float = 0.0

    @property
    def coverage(self) -> float:
        return self.n_with_image / self.n_items if self.n_items else 0.0

    def line(self) -> str:
        return (f"{self.n_with_image} of {self.n_items} items have an image "
                f"({100 * self.coverage:.1f}%): {self.n_fetched} fetched, {self.n_failed} failed, "
                f"{self.n_present + self.n_found} already there, "
                f"{self.n_items - self.n_with_url} without URL; {self.seconds:.1f}s")


def fetched_image(images_dir: Path, source_id: str) -> Path | None:
    """The downloaded file of an item, whatever its extension (None if there is none)."""
    stem = file_stem(source_id)
    for ext in IMAGE_EXTENSIONS:
        path = images_dir / f"{stem}{ext}"
        if path.is_file():
            return path
    return None


def is_valid_image(path: Path) -> bool:
    try:
        load_image(path, target_size=CHECK_SIZE)
        return True
    except DataError:
        return False


def link_fetched(items: pd.DataFrame, workdir: Workdir) -> pd.DataFrame:
    """Items without an image get the file fetch-images downloaded for them earlier, so a
    dataset prepared again keeps its downloads."""
    images_dir = workdir.dataset_dir / "images"
    if "image_url" not in items.columns or not images_dir.is_dir():
        return items
    paths = items["image_path"].astype(str).tolist()
    for row, (path, url, sid) in enumerate(zip(paths, items["image_url"].astype(str),
                                               items["source_id"].astype(str))):
        if not path and url:
            found = fetched_image(images_dir, sid)
            if found is not None:
                paths[row] = workdir.relative(found)
    items = items.copy()
    items["image_path"] = paths
    return items


# --------------------------------------------------------------------------- downloading
def _download(client: httpx.Client, url: str, stem: str, images_dir: Path, timeout: float,
              max_bytes: int) -> Path:
    """Fetch one URL into `images_dir/<stem>.<ext>`; raises _Permanent or a retryable error."""
    deadline = time.monotonic() + timeout
    fd, tmp_name = tempfile.mkstemp(dir=images_dir, prefix=f".{stem}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh, client.stream("GET", url) as response:
            if response.status_code >= 400:
                err = httpx.HTTPStatusError(f"HTTP {response.status_code}",
                                            request=response.request, response=response)
                if response.status_code in RETRY_STATUS:
                    raise err
                raise _Permanent(f"HTTP {response.status_code}")
            size = int(response.headers.get("content-length") or 0)
            if size > max_bytes:
                raise _Permanent(f"too big: {size} bytes > max_bytes {max_bytes}")
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise _Permanent(f"too big: more than max_bytes {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"took longer than {timeout}s",
                                            request=response.request)
                fh.write(chunk)
        try:
            with Image.open(tmp) as img:
                fmt = img.format
            load_image(tmp)
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise _Permanent(f"not a readable image ({total} bytes): {err}") from None
        final = images_dir / f"{stem}{FORMAT_EXTENSIONS.get(fmt, '.img')}"
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)


def _ensure_image(client: httpx.Client, item_id: int, source_id: str, url: str,
                  current: Path | None, images_dir: Path, timeout: float, retries: int,
                  max_bytes: int, backoff: float) -> FetchResult:
    if current is not None and current.is_file() and is_valid_image(current):
        return FetchResult(item_id, "present", current)
    on_disk = fetched_image(images_dir, source_id)
    if on_disk is not None:
        if is_valid_image(on_disk):
            return FetchResult(item_id, "found", on_disk)
        on_disk.unlink()  # a broken file of ours: fetch it again
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            path = _download(client, url, file_stem(source_id), images_dir, timeout, max_bytes)
            return FetchResult(item_id, "fetched", path, attempts=attempt + 1)
        except _Permanent as err:
            return FetchResult(item_id, "failed", error=str(err), attempts=attempt + 1)
        except (httpx.HTTPError, OSError) as err:
            error = f"{type(err).__name__}: {err}"
    return FetchResult(item_id, "failed", error=error, attempts=retries + 1)


def fetch_images(workdir: Workdir, *, concurrency: int = 8, timeout: float = 30.0,
                 retries: int = 3, max_bytes: int = 20_000_000, backoff: float = 1.0,
                 show_progress: bool = True) -> tuple[FetchSummary, list[FetchResult]]:
    """Download missing item images (module docstring); returns the summary and the failures."""
    t0 = time.perf_counter()
    ds = Dataset.load(workdir, features=False)
    items = ds.items
    if "image_url" not in items.columns:
        raise DataError(f"{workdir.items_path} has no image_url column: this dataset has no "
                        f"image URLs to fetch (join metadata when preparing it)")
    images_dir = workdir.dataset_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    urls = items["image_url"].fillna("").astype(str).str.strip()
    current = [workdir.resolve(p) if p else None for p in items["image_path"].astype(str)]
    todo = [i for i in range(len(items)) if urls.iloc[i]]
    summary = FetchSummary(n_items=len(items), n_with_url=len(todo))
    results: list[FetchResult] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.Client(timeout=httpx.Timeout(timeout), limits=limits, follow_redirects=True,
                          headers={"User-Agent": USER_AGENT})
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [pool.submit(_ensure_image, client, int(items["item_id"].iloc[i]),
                               str(items["source_id"].iloc[i]), urls.iloc[i], current[i],
                               images_dir, timeout, retries, max_bytes, backoff) for i in todo]
        with tqdm(total=len(futures), desc="fetching images", unit="img",
                  disable=not show_progress) as bar:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(1)
    finally:
        # keep whatever finished, also when interrupted
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()
        _save(workdir, ds, results, summary, t0)
    return summary, [r for r in results if r.status == "failed"]


def _save(workdir: Workdir, ds: Dataset, results: list[FetchResult], summary: FetchSummary,
          t0: float) -> None:
    items = ds.items.copy()
    paths = items["image_path"].astype(str).tolist()
    for r in results:
        setattr(summary, f"n_{r.status}", getattr(summary, f"n_{r.status}") + 1)
        if r.status in ("found", "fetched"):
            paths[r.item_id] = workdir.relative(r.path)
    items["image_path"] = paths
    failures = [r for r in results if r.status == "failed"]
    errors = pd.DataFrame({
        "item_id": [r.item_id for r in failures],
        "source_id": [ds.items["source_id"].iloc[r.item_id] for r in failures],
        "url": [ds.items["image_url"].iloc[r.item_id] for r in failures],
        "attempts": [r.attempts for r in failures],
        "error": [r.error for r in failures],
    })
    write_csv(workdir.dataset_dir / "fetch_errors.csv", errors.sort_values("item_id"))
    summary.n_with_image = sum(bool(p) for p in paths)
    summary.seconds = round(time.perf_counter() - t0, 2)
    if items["image_path"].tolist() != ds.items["image_path"].astype(str).tolist():
        write_parquet(workdir.items_path, items)
    meta: dict[str, Any] = read_json(workdir.dataset_json) if workdir.dataset_json.is_file() else {}
    meta["image_fetch"] = {**dataclasses.asdict(summary), "coverage": round(summary.coverage, 4),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    meta.setdefault("counts", {})["n_items_with_image"] = summary.n_with_image
    write_json(workdir.dataset_json, meta)
    _refresh_prepare_record(workdir)


def _refresh_prepare_record(workdir: Workdir) -> None:
    """The dataset changed on purpose: the prepare record takes the new outputs and digest,
    so `run` does not rebuild the dataset but downstream stages see new inputs."""
    book = StageBook(workdir)
    rec = book.get("prepare")
    if rec is None:
        return
    outputs = {workdir.resolve(p) for p in rec.outputs} | {workdir.dataset_dir / "images"}
    book.finish("prepare", rec.key, sorted(p for p in outputs if p.exists()), rec.seconds,
                rec.info, digest=dataset_digest(workdir))
