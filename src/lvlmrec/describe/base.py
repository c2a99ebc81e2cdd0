"""The describer protocol and the loop that drives any backend over a catalog.

A describer takes a batch of images (and titles, used only when the prompt asks for them)
and returns one text per image. The loop around it owns everything else: which items are
pending, loading and checking images, committing each batch to the store, retrying a
failed batch item by item, and the closing summary. Backends stay small.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lvlmrec.describe.store import DescriptionStore
from lvlmrec.workdir import hash_obj


class Describer(ABC):
    """Batched images + titles in, texts out."""

    #: backend name as used in config (`describe.backend`)
    backend: str = ""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Names the model (and anything that changes its outputs) in the store's key."""

    def settings(self) -> dict[str, Any]:
        """Everything besides the model that changes the output (prompt, decoding...)."""
        return {}

    @property
    def prompt_hash(self) -> str:
        return hash_obj({"backend": self.backend, **self.settings()})[:16]

    @property
    def prompt_name(self) -> str:
        return self.settings().get("prompt_name", self.backend)

    @property
    def prompt_template(self) -> str:
        return self.settings().get("prompt", "")

    @abstractmethod
    def describe(self, images: list[Image.Image], titles: list[str]) -> list[str]:
        """One text per image. May raise: the loop then retries item by item."""

    def close(self) -> None:
        """Release models, sessions or servers."""


@dataclasses.dataclass
class DescribeItem:
    item_id: int
    image_path: Path | None
    title: str


@dataclasses.dataclass
class DescribeSummary:
    model: str
    prompt_hash: str
    n_items: int
    n_done_before: int
    n_described: int
    n_failed: int
    seconds: float
    failures: dict[int, str]

    @property
    def n_covered(self) -> int:
        return self.n_done_before + self.n_described

    @property
    def items_per_second(self) -> float:
        return self.n_described / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"described {self.n_described} items in {self.seconds:.1f}s "
            f"({self.items_per_second:.2f} items/s); coverage {self.n_covered}/{self.n_items} "
            f"({100 * self.n_covered / max(self.n_items, 1):.1f}%); "
            f"{self.n_failed} failed; {self.n_done_before} were already done"
        )


def order_items(
    items: Sequence[DescribeItem],
    order: str = "all",
    popularity: np.ndarray | None = None,
    seed: int = 0,
    max_items: int | None = None,
) -> list[DescribeItem]:
    """Which items to describe, in which order: catalog order, most popular first, or seeded
    random; `max_items` keeps the first N (the study described 12% of its catalog)."""
    items = list(items)
    if order == "popularity":
        if popularity is None:
            raise ValueError("order='popularity' needs item popularity")
        ranks = np.argsort(-popularity[[it.item_id for it in items]], kind="stable")
        items = [items[i] for i in ranks]
    elif order == "random":
        perm = np.random.default_rng(seed).permutation(len(items))
        items = [items[i] for i in perm]
    elif order != "all":
        raise ValueError(f"unknown order {order!r}; expected all, popularity or random")
    return items[:max_items] if max_items else items


def _load(item: DescribeItem) -> tuple[Image.Image | None, str | None]:
    from lvlmrec.imageio import load_image

    if item.image_path is None:
        return None, "item has no image"
    try:
        return load_image(item.image_path), None
    except Exception as err:  # noqa: BLE001 - the message is recorded per item
        return None, str(err)


def describe_items(
    describer: Describer,
    store: DescriptionStore,
    items: Sequence[DescribeItem],
    batch_size: int = 16,
    show_progress: bool = True,
    load_workers: int = 4,
) -> DescribeSummary:
    """Describe every item that has no text in `store` yet; never raises for one item."""
    model, phash = describer.model_id, describer.prompt_hash
    store.register_prompt(phash, describer.prompt_name, describer.prompt_template,
                          hash_obj(describer.settings()))
    done = store.done_ids(model, phash)
    pending = [it for it in items if it.item_id not in done]
    n_before = len(items) - len(pending)
    failures: dict[int, str] = {}
    n_ok = 0
    start = time.perf_counter()
    bar = tqdm(total=len(pending), desc=f"describe [{describer.backend}]", unit="item",
               disable=not show_progress)
    batches = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]
    with ThreadPoolExecutor(max_workers=load_workers) as pool:
        # images of the next batch load while the describer works on this one
        loaded = pool.map(lambda b: [_load(it) for it in b], batches)
        for batch, images in zip(batches, loaded):
            rows: list[tuple[int, str | None, str | None, float | None]] = []
            ready = [(it, img) for it, (img, err) in zip(batch, images) if img is not None]
            for it, (img, err) in zip(batch, images):
                if img is None:
                    rows.append((it.item_id, None, err, None))
            if ready:
                rows.extend(_describe_batch(describer, ready))
            for item_id, text, err, _ in rows:
                if text is None:
                    failures[item_id] = err or "unknown error"
                else:
                    n_ok += 1
            store.put_many(model, phash, rows)
            bar.update(len(batch))
    bar.close()
    return DescribeSummary(model, phash, len(items), n_before, n_ok, len(failures),
                           time.perf_counter() - start, failures)


def _describe_batch(describer: Describer, ready: list[tuple[DescribeItem, Image.Image]]):
    t0 = time.perf_counter()
    try:
        texts = describer.describe([img for _, img in ready], [it.title for it, _ in ready])
        if len(texts) != len(ready):
            raise RuntimeError(f"backend returned {len(texts)} texts for {len(ready)} images")
        per_item = (time.perf_counter() - t0) / len(ready)
        return [(it.item_id, text, None, per_item) for (it, _), text in zip(ready, texts)]
    except Exception as err:  # noqa: BLE001 - a failed batch is retried item by item
        if len(ready) == 1:
            return [(ready[0][0].item_id, None, f"{type(err).__name__}: {err}", None)]
        rows = []
        for pair in ready:
            rows.extend(_describe_batch(describer, [pair]))
        return rows
