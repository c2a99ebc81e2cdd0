"""The describe stage: every pending item through the configured backend, into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lvlmrec.config import NOT_ATTRIBUTES_IDENTITY, DescribeConfig
from lvlmrec.data.schema import Dataset, image_hashes
from lvlmrec.describe.base import (
    DescribeItem,
    DescribeSummary,
    adopt_legacy,
    describe_items,
    order_items,
)
from lvlmrec.describe.prompts import STRUCTURED_PROMPTS
from lvlmrec.describe.registry import make_describer
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.describe.structured import parse_attributes
from lvlmrec.errors import ConfigError
from lvlmrec.workdir import Workdir, hash_obj, read_json, write_json


def active_path(workdir: Workdir) -> Path:
    """Which (model, prompt) description set the encode stage uses."""
    return workdir.descriptions_dir / "active.json"


def read_active(workdir: Workdir) -> dict[str, Any] | None:
    path = active_path(workdir)
    return read_json(path) if path.is_file() else None


def catalog_items(ds: Dataset, workdir: Workdir) -> list[DescribeItem]:
    """The items to describe: those with an image. An item the data gives no image has
    nothing to describe, which is not a failure to retry (a named but missing or unreadable
    file is one: it is recorded and retried on the next run)."""
    paths = ds.image_paths(workdir)
    titles = ds.items["title"].astype(str).tolist()
    return [DescribeItem(int(i), p, t) for i, (p, t) in enumerate(zip(paths, titles))
            if p is not None]


def describers_path(workdir: Workdir) -> Path:
    """Every named describer's record (which set in the store, coverage, timing, error)."""
    return workdir.descriptions_dir / "describers.json"


def description_sets(workdir: Workdir) -> dict[str, dict[str, Any]]:
    """Describer name -> its record, in config order (the first is plain `description`).
    A workdir from before named describers has one, `default`, from active.json."""
    path = describers_path(workdir)
    if path.is_file():  # a list: JSON objects are written with sorted keys
        return {r["name"]: r for r in read_json(path)}
    active = read_active(workdir)
    return {"default": active} if active else {}


def run_describers(cfg: DescribeConfig, workdir: Workdir, ds: Dataset,
                   only: list[str] | None = None, show_progress: bool = True,
                   on_done: Any = None) -> dict[str, dict[str, Any]]:
    """Run every describer (or those in `only`), each resumable on its own set in the store.

    Every describer is built (settings checked) before any runs; one that then fails (its
    model cannot load) is recorded as failed and the others go on. `on_done(name, summary
    or None, record)` is called after each. Returns every configured describer's record.
    """
    named = cfg.named()
    unknown = sorted(set(only or []) - set(named))
    if unknown:
        raise ConfigError(f"--describer: {', '.join(map(repr, unknown))} is not a describer; "
                          f"configured: {', '.join(named)}")
    for sub in named.values():  # bad settings fail here, before any model loads
        make_describer(_keyed(sub)).close()
    records: dict[str, dict[str, Any]] = {}
    for name, sub in named.items():
        if only and name not in only:
            records[name] = stored_record(sub, workdir, name)
            continue
        try:
            summary, record = run_describe(sub, workdir, ds, show_progress, name=name)
        except Exception as err:  # noqa: BLE001 - one describer's failure stops only it
            if len(named) == 1:  # nothing else to go on with: the error as it is
                raise
            summary, record = None, {**describer_identity(sub), "name": name,
                                     "status": "failed", "error": f"{type(err).__name__}: {err}"}
        records[name] = record
        if on_done is not None:
            on_done(name, summary, record)
    write_json(describers_path(workdir), [{**r, "name": n} for n, r in records.items()])
    first = next(iter(records.values()))
    if first.get("status") == "ok":
        write_json(active_path(workdir), first)
    else:
        active_path(workdir).unlink(missing_ok=True)
    return records


def stored_record(cfg: DescribeConfig, workdir: Workdir, name: str) -> dict[str, Any]:
    """The record of a describer that is not run now: what the store holds under its key."""
    describer = make_describer(_keyed(cfg))
    try:
        model, phash = describer.model_id, describer.prompt_hash
        record = {**describer_identity(cfg), "name": name, "model": model,
                  "prompt_hash": phash, "prompt_name": describer.prompt_name,
                  "prompt_template": describer.prompt_template,
                  "include_title": cfg.include_title,
                  "structured": describer.prompt_name in STRUCTURED_PROMPTS}
    finally:
        describer.close()
    if not workdir.descriptions_db.is_file():
        return {**record, "status": "not run", "n_texts": 0}
    with DescriptionStore(workdir.descriptions_db) as store:
        texts = store.texts(model, phash)
        stats = store.stats(model, phash)
    return {**record, "status": "ok" if texts else "not run", "n_texts": len(texts),
            "n_failed": stats["n_errors"], "texts_digest": hash_obj(sorted(texts.items()))}


def _keyed(cfg: DescribeConfig) -> DescribeConfig:
    """The settings that name a store key (with Ray, the workers own the device)."""
    return cfg.model_copy(update={"device": "cpu"}) if cfg.scale.engine == "ray" else cfg


def describer_identity(cfg: DescribeConfig) -> dict[str, Any]:
    """What the report says about who wrote a set of texts."""
    out: dict[str, Any] = {"backend": cfg.backend, "model": cfg.model}
    if cfg.backend == "attributes":
        out["settings"] = cfg.attributes.model_dump(exclude=NOT_ATTRIBUTES_IDENTITY)
    else:
        out["settings"] = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                           "top_p": cfg.top_p, **cfg.options}
    return out


def run_describe(cfg: DescribeConfig, workdir: Workdir, ds: Dataset,
                 show_progress: bool = True, name: str = "default"
                 ) -> tuple[DescribeSummary, dict[str, Any]]:
    on_ray = cfg.scale.engine == "ray"
    # With Ray, this describer only names the store's key (workers build and load their
    # own): the device, which is not in the key, is the workers' concern.
    describer = make_describer(_keyed(cfg))
    items = order_items(catalog_items(ds, workdir), cfg.order,
                        popularity=ds.item_popularity(), seed=cfg.seed,
                        max_items=cfg.max_items)
    if not on_ray and hasattr(describer, "share_image_pass"):  # labels from the shared pass
        describer.share_image_pass(workdir, [it.image_path for it in items])
    try:
        with DescriptionStore(workdir.descriptions_db) as store:
            # an image edited in place is described again (only that item)
            store.sync_images(dict(enumerate(image_hashes(ds.items["image_path"], workdir))))
            adopt_legacy(describer, store)
            if on_ray:
                from lvlmrec.describe.ray_engine import describe_items_ray

                summary = describe_items_ray(describer, cfg, store, items, show_progress)
            else:
                summary = describe_items(describer, store, items, batch_size=cfg.batch_size,
                                         show_progress=show_progress)
            texts = store.texts(summary.model, summary.prompt_hash)
            structured = describer.prompt_name in STRUCTURED_PROMPTS
            if structured:
                store_attributes(store, summary.model, summary.prompt_hash, texts)
            stats = store.stats(summary.model, summary.prompt_hash)
    finally:
        describer.close()
    active = {
        **describer_identity(cfg),
        "name": name,
        "status": "ok",
        "backend": cfg.backend,
        "model": summary.model,
        "prompt_hash": summary.prompt_hash,
        "prompt_name": describer.prompt_name,
        "prompt_template": describer.prompt_template,
        "include_title": cfg.include_title,
        "structured": structured,
        "n_items": summary.n_items,
        "n_texts": len(texts),
        "n_failed": stats["n_errors"],
        "texts_digest": hash_obj(sorted(texts.items())),
    }
    if not cfg.describers:  # one describer: active.json as before named describers
        write_json(active_path(workdir), active)
    return summary, active


def store_attributes(store: DescriptionStore, model: str, prompt_hash: str,
                     texts: dict[int, str]) -> None:
    """Parse a structured set's texts that have no attributes yet; store them beside."""
    have = store.attributes(model, prompt_hash)
    rows = [(i, json.dumps(parse_attributes(t), sort_keys=True))
            for i, t in texts.items() if i not in have]
    if rows:
        store.put_attributes(model, prompt_hash, rows)
