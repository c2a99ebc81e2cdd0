"""The describer protocol and the loop that drives any backend over a catalog.

A describer takes a batch of images (and titles, used only when the prompt asks for them)
and returns one text per image. The loop around it owns everything else: which items are
pending, loading and checking images, committing each batch to the store, retrying a
failed batch item by item, and the closing summary. Backends stay small.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lvlmrec.describe.prompts import Prompt, clean_output
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.errors import DataError
from lvlmrec.imageio import load_image
from lvlmrec.workdir import hash_obj


class Describer(ABC):
    """Batched images + titles in, texts out.

    `describe` may put an exception in place of a text for an item that failed on its own
    (a server error after retries): the loop records it and moves on. Raising fails the
    whole batch, which the loop then retries item by item.
    """

    #: backend name as used in config (`describe.backend`)
    backend: str = ""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Names the model in the store's key."""

    def settings(self) -> dict[str, Any]:
        """Everything besides the model that changes the output (prompt, decoding...)."""
        return {}

    @property
    def prompt_hash(self) -> str:
        return hash_obj({"backend": self.backend, **self.settings()})[:16]

    def legacy_prompt_hashes(self) -> list[str]:
        """Keys an older version of this backend gave the same texts (newest first); a set
        under one of them is adopted when the current key has none (`adopt_legacy`)."""
        return []

    @property
    def prompt_name(self) -> str:
        return self.backend

    @property
    def prompt_template(self) -> str:
        return ""

    def load(self) -> None:
        """Load models or open sessions; called once, only when some item is pending.

        Errors here stop the run (a model that cannot load fails every item alike).
        """

    @abstractmethod
    def describe(self, images: list[Image.Image], titles: list[str]) -> list[str | Exception]:
        """One text (or the exception that stopped it) per image."""

    def prepare(self, images: list[Image.Image], titles: list[str]) -> Any:
        """CPU work on a batch (an LVLM's image preprocessing) that the loop runs in a
        background thread while the model works on the batch before; its result goes to
        `describe_prepared`. None (the default): nothing to prepare, the loop calls `describe`."""
        return None

    def describe_prepared(self, prepared: Any) -> list[str | Exception]:
        """`describe` for a batch that `prepare` has processed."""
        raise NotImplementedError(f"{type(self).__name__} prepares nothing")

    def close(self) -> None:
        """Release models, sessions or servers."""


class PromptedDescriber(Describer):
    """An LVLM describer: a prompt per item, decoding settings, outputs cleaned of echoes.

    Greedy decoding (temperature 0) is the default, as in the study: descriptions are then
    a function of image, prompt and model, and a resumed run writes what a single run would.
    """

    def __init__(self, model: str, prompt: Prompt, max_new_tokens: int = 150,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0):
        self.model = model
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed

    @property
    def model_id(self) -> str:
        return self.model

    @property
    def prompt_name(self) -> str:
        return self.prompt.name

    @property
    def prompt_template(self) -> str:
        return self.prompt.template

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def settings(self) -> dict[str, Any]:
        sampling = None if self.greedy else {
            "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {"prompt": self.prompt.template, "include_title": self.prompt.include_title,
                "max_new_tokens": self.max_new_tokens, "sampling": sampling}

    def clean(self, outputs: Sequence[str], prompts: Sequence[str]) -> list[str]:
        return [clean_output(text, prompt) for text, prompt in zip(outputs, prompts)]


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


def load_item_image(item: DescribeItem) -> tuple[Image.Image | None, str | None]:
    """The item's image, or None and why not: a bad image is an error row, not a crash."""
    if item.image_path is None:
        return None, "item has no image"
    try:
        img = load_image(item.image_path)
    except DataError as err:
        return None, str(err)
    img.info[SOURCE_KEY] = str(item.image_path)  # lets a describer find shared per-image work
    return img, None


#: `Image.info` key naming the file an image was loaded from
SOURCE_KEY = "lvlmrec_source"

Loaded = list[tuple[Image.Image | None, str | None]]  # a batch's (image, error) pairs


def _prepared(describer: Describer, batch: list[DescribeItem],
              loads: list[Future]) -> tuple[Loaded, Any]:
    """A batch's loaded images and what `describer.prepare` made of the readable ones (the
    exception it raised, if any: the batch then goes through `describe`, item by item)."""
    pairs = [f.result() for f in loads]
    ready = [(it, img) for it, (img, _) in zip(batch, pairs) if img is not None]
    if not ready:
        return pairs, None
    try:
        return pairs, describer.prepare([img for _, img in ready], [it.title for it, _ in ready])
    except Exception as err:  # noqa: BLE001 - reported by the per-item retry
        return pairs, err


def _loaded(describer: Describer, batches: list[list[DescribeItem]], workers: int,
            ahead: int = 2) -> Iterator[tuple[Loaded, Any]]:
    """Each batch's (image, error) pairs and prepared form, in order. The next `ahead`
    batches load and are prepared in the background while the describer works, so memory
    holds a few batches, not the catalog."""
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            ThreadPoolExecutor(max_workers=1) as preparer:
        queue: deque[Future] = deque()
        for batch in batches:
            loads = [pool.submit(load_item_image, it) for it in batch]
            queue.append(preparer.submit(_prepared, describer, batch, loads))
            if len(queue) > ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


Row = tuple[int, str | None, str | None, float | None]  # item_id, text, error, seconds


def describe_items(
    describer: Describer,
    store: DescriptionStore,
    items: Sequence[DescribeItem],
    batch_size: int = 16,
    show_progress: bool = True,
    load_workers: int = 4,
) -> DescribeSummary:
    """Describe every item that has no text in `store` yet; never raises for one item.

    Each batch is committed before the next starts, so a killed run loses at most the
    batch in flight.
    """
    model, phash = describer.model_id, describer.prompt_hash
    batches = plan_batches(describer, store, items, batch_size)
    n_pending = sum(map(len, batches))
    failures: dict[int, str] = {}
    n_ok = 0
    if batches:
        describer.load()
    start = time.perf_counter()
    bar = progress_bar(describer, n_pending, show_progress)
    for batch, (images, prepared) in zip(batches, _loaded(describer, batches, load_workers)):
        rows = describe_loaded(describer, batch, images, prepared)
        n_ok += commit_rows(store, model, phash, rows, failures)
        bar.update(len(batch))
    bar.close()
    return DescribeSummary(model, phash, len(items), len(items) - n_pending, n_ok,
                           len(failures), time.perf_counter() - start, failures)


def adopt_legacy(describer: Describer, store: DescriptionStore) -> int:
    """Copy a set written under a legacy key of this describer to its current key, when
    the current key has no rows yet; returns the rows adopted."""
    model, phash = describer.model_id, describer.prompt_hash
    if store.done_ids(model, phash) or store.errors(model, phash):
        return 0
    for old in describer.legacy_prompt_hashes():
        if old != phash and store.done_ids(model, old):
            return store.adopt(model, old, phash)
    return 0


def plan_batches(describer: Describer, store: DescriptionStore, items: Sequence[DescribeItem],
                 batch_size: int) -> list[list[DescribeItem]]:
    """Record the describer's prompt; batch the items that have no text yet.

    Items that failed in an earlier run come after the fresh ones, in batches of their
    own, so one bad item cannot fail a batch of good ones twice.
    """
    model, phash = describer.model_id, describer.prompt_hash
    store.register_prompt(phash, describer.prompt_name, describer.prompt_template,
                          json.dumps(describer.settings(), sort_keys=True, default=str))
    done = store.done_ids(model, phash)
    failed_before = set(store.errors(model, phash))
    pending = [it for it in items if it.item_id not in done]
    fresh = [it for it in pending if it.item_id not in failed_before]
    retry = [it for it in pending if it.item_id in failed_before]
    return [b[i:i + batch_size] for b in (fresh, retry) for i in range(0, len(b), batch_size)]


def progress_bar(describer: Describer, total: int, show_progress: bool) -> tqdm:
    return tqdm(total=total, desc=f"describe [{describer.backend}]", unit="item",
                disable=not show_progress)


def describe_loaded(describer: Describer, batch: Sequence[DescribeItem], images: Loaded,
                    prepared: Any = None) -> list[Row]:
    """One row per item of a batch whose images are loaded ((image, error) per item) and
    perhaps prepared (`Describer.prepare`)."""
    rows: list[Row] = [(it.item_id, None, err, None)
                       for it, (img, err) in zip(batch, images) if img is None]
    ready = [(it, img) for it, (img, _) in zip(batch, images) if img is not None]
    if ready:
        rows.extend(_describe_batch(describer, ready, prepared))
    return rows


def commit_rows(store: DescriptionStore, model: str, prompt_hash: str, rows: list[Row],
                failures: dict[int, str]) -> int:
    """Write one batch's rows in one commit and note its failures; returns the texts."""
    store.put_many(model, prompt_hash, rows)
    n_ok = 0
    for item_id, text, err, _ in rows:
        if text is None:
            failures[item_id] = err or "unknown error"
        else:
            n_ok += 1
    return n_ok


def _describe_batch(describer: Describer, ready: list[tuple[DescribeItem, Image.Image]],
                    prepared: Any = None) -> list[Row]:
    t0 = time.perf_counter()
    try:
        if isinstance(prepared, Exception):
            raise prepared
        if prepared is not None:
            outputs = describer.describe_prepared(prepared)
        else:
            outputs = describer.describe([img for _, img in ready], [it.title for it, _ in ready])
        if len(outputs) != len(ready):
            raise RuntimeError(f"backend returned {len(outputs)} texts for {len(ready)} images")
    except Exception as err:  # noqa: BLE001 - a failed batch is retried item by item
        if len(ready) == 1:
            return [(ready[0][0].item_id, None, _message(err), None)]
        return [row for pair in ready for row in _describe_batch(describer, [pair])]
    per_item = (time.perf_counter() - t0) / len(ready)
    rows: list[Row] = []
    for (it, _), out in zip(ready, outputs):
        if isinstance(out, Exception):
            rows.append((it.item_id, None, _message(out), None))
        elif not isinstance(out, str) or not out.strip():
            rows.append((it.item_id, None, f"backend returned an empty text: {out!r}", None))
        else:
            rows.append((it.item_id, out, None, per_item))
    return rows


def _message(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
