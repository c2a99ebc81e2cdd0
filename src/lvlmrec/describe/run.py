"""The describe stage: every pending item through the configured backend, into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvlmrec.config import DescribeConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.describe.base import DescribeItem, DescribeSummary, describe_items, order_items
from lvlmrec.describe.registry import make_describer
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.workdir import Workdir, hash_obj, read_json, write_json


def active_path(workdir: Workdir) -> Path:
    """Which (model, prompt) description set the encode stage uses."""
    return workdir.descriptions_dir / "active.json"


def read_active(workdir: Workdir) -> dict[str, Any] | None:
    path = active_path(workdir)
    return read_json(path) if path.is_file() else None


def catalog_items(ds: Dataset, workdir: Workdir) -> list[DescribeItem]:
    paths = ds.image_paths(workdir)
    titles = ds.items["title"].astype(str).tolist()
    return [DescribeItem(int(i), p, t) for i, (p, t) in enumerate(zip(paths, titles))]


def run_describe(cfg: DescribeConfig, workdir: Workdir, ds: Dataset,
                 show_progress: bool = True) -> tuple[DescribeSummary, dict[str, Any]]:
    on_ray = cfg.scale.engine == "ray"
    # With Ray, this describer only names the store's key (workers build and load their
    # own): the device, which is not in the key, is the workers' concern.
    describer = make_describer(cfg.model_copy(update={"device": "cpu"}) if on_ray else cfg)
    items = order_items(catalog_items(ds, workdir), cfg.order,
                        popularity=ds.item_popularity(), seed=cfg.seed,
                        max_items=cfg.max_items)
    if not on_ray and hasattr(describer, "share_image_pass"):  # labels from the shared pass
        describer.share_image_pass(workdir, [it.image_path for it in items])
    try:
        with DescriptionStore(workdir.descriptions_db) as store:
            if on_ray:
                from lvlmrec.describe.ray_engine import describe_items_ray

                summary = describe_items_ray(describer, cfg, store, items, show_progress)
            else:
                summary = describe_items(describer, store, items, batch_size=cfg.batch_size,
                                         show_progress=show_progress)
            texts = store.texts(summary.model, summary.prompt_hash)
    finally:
        describer.close()
    active = {
        "backend": cfg.backend,
        "model": summary.model,
        "prompt_hash": summary.prompt_hash,
        "prompt_name": describer.prompt_name,
        "include_title": cfg.include_title,
        "n_texts": len(texts),
        "texts_digest": hash_obj(sorted(texts.items())),
    }
    write_json(active_path(workdir), active)
    return summary, active
