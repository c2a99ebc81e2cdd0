"""The describe stage on a Ray cluster (`describe.scale.engine: ray`, docs/ray.md).

Same batches, store and summary as the local loop (`describe_items`): the driver plans
the batches of pending items, CPU tasks load and check their images, actors holding the
describer (any backend, built from the config once per actor) describe them, and the
driver commits each batch's rows as it arrives. A killed driver loses only batches in
flight; the next run skips every item with a text and retries the failed ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lvlmrec.cluster import batch_dataset, object_array, on_workers, ray_session, stream
from lvlmrec.config import DescribeConfig
from lvlmrec.describe.base import (
    DescribeItem,
    Describer,
    DescribeSummary,
    Row,
    commit_rows,
    describe_loaded,
    load_item_image,
    plan_batches,
    progress_bar,
)
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.errors import StageError

# Between processes "" stands for no text and no error (Ray Data turns a column of None
# into floats), and an empty array for no image.
_NO_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)


def describe_items_ray(describer: Describer, cfg: DescribeConfig, store: DescriptionStore,
                       items: Sequence[DescribeItem],
                       show_progress: bool = True) -> DescribeSummary:
    """`describe_items` with the work on Ray workers; `describer` (built by the driver,
    never loaded) names the store's key, the workers build their own from `cfg`."""
    model, phash = describer.model_id, describer.prompt_hash
    batches = plan_batches(describer, store, items, cfg.batch_size)
    n_pending = sum(map(len, batches))
    failures: dict[int, str] = {}
    n_ok = 0
    start = time.perf_counter()
    if batches:
        pending = [it for batch in batches for it in batch]
        columns = {"item_id": [it.item_id for it in pending],
                   "image_path": [None if it.image_path is None else str(it.image_path)
                                  for it in pending],
                   "title": [it.title for it in pending]}
        bounds = np.cumsum([0] + [len(batch) for batch in batches])
        with ray_session(cfg.scale), progress_bar(describer, n_pending, show_progress) as bar:
            dataset = batch_dataset(columns, bounds, _load_images, cfg.scale)
            dataset = on_workers(dataset, DescribeWorker, cfg.scale, len(batches), cfg=cfg,
                                 model=model, prompt_hash=phash)
            for out in stream(dataset):
                rows = _rows(out)
                n_ok += commit_rows(store, model, phash, rows, failures)
                bar.update(len(rows))
    return DescribeSummary(model, phash, len(items), len(items) - n_pending, n_ok,
                           len(failures), time.perf_counter() - start, failures)


def _load_images(rows: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """CPU task: decode and check a batch's images; a bad one keeps its error, not pixels."""
    items = [DescribeItem(i, None if p is None else Path(p), t)
             for i, p, t in zip(rows["item_id"], rows["image_path"], rows["title"])]
    loaded = [load_item_image(it) for it in items]
    return {"item_id": np.asarray(rows["item_id"], dtype=np.int64),
            "title": object_array(rows["title"]),
            "image": object_array([_NO_IMAGE if img is None else np.asarray(img)
                                   for img, _ in loaded]),
            "error": object_array([err or "" for _, err in loaded])}


class DescribeWorker:
    """A Ray actor: the configured describer, built and loaded once, then batch after batch.

    Its key must be the driver's: a worker whose environment builds a different describer
    (another model path or package version) would write texts under the wrong key.
    """

    def __init__(self, cfg: DescribeConfig, model: str, prompt_hash: str):
        from lvlmrec.describe.registry import make_describer

        if cfg.backend == "attributes" and cfg.attributes.processes is None:
            # the actor's analysis uses the CPUs Ray grants it, not every core of its node
            granted = max(1, int(cfg.scale.cpus_per_worker))
            cfg = cfg.model_copy(update={"attributes": cfg.attributes.model_copy(
                update={"processes": granted})})
        self.describer = make_describer(cfg)
        found = (self.describer.model_id, self.describer.prompt_hash)
        if found != (model, prompt_hash):
            raise StageError(f"this Ray worker's describer is {found}, the driver's "
                             f"{(model, prompt_hash)}: its environment differs")
        self.describer.load()

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[Row] = []
        for batch_id in dict.fromkeys(block["batch"].tolist()):  # the local engine's batches
            where = np.flatnonzero(block["batch"] == batch_id)
            batch = [DescribeItem(int(block["item_id"][i]), None, str(block["title"][i]))
                     for i in where]
            images = [(None, block["error"][i]) if block["error"][i]
                      else (Image.fromarray(np.asarray(block["image"][i], dtype=np.uint8)), None)
                      for i in where]
            rows.extend(describe_loaded(self.describer, batch, images))
        item_ids, texts, errors, seconds = zip(*rows)
        return {"item_id": np.asarray(item_ids, dtype=np.int64),
                "text": object_array([t or "" for t in texts]),
                "error": object_array([e or "" for e in errors]),
                "seconds": np.array([np.nan if s is None else s for s in seconds])}


def _rows(out: dict[str, np.ndarray]) -> list[Row]:
    return [(int(i), text or None, err or None, None if np.isnan(s) else float(s))
            for i, text, err, s in zip(out["item_id"], out["text"], out["error"],
                                       out["seconds"])]
