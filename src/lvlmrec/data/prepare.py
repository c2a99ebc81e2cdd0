"""Turn a configured data source into the workdir's dataset artifacts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lvlmrec.config import DatasetConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.workdir import Workdir, _fingerprint

#: source fields that name files or folders a loader reads
INPUT_FIELDS = ("source", "reviews", "metadata", "items", "interactions", "images")


def build_dataset(source: DatasetConfig, workdir: Workdir, show_progress: bool = True) -> Dataset:
    """Load (or generate) the dataset described by `source`, validated, not yet saved;
    catalog items without interactions stay unless the source drops them (recorded)."""
    ds = _load_source(source, workdir, show_progress)
    if getattr(source, "drop_items_without_interactions", False):
        from lvlmrec.data.cold import drop_items_without_interactions

        ds, step = drop_items_without_interactions(ds)
        ds.info["filters"] = [*ds.info.get("filters", []), step]
        ds.validate("dataset without items lacking interactions")
    return ds


def _load_source(source: DatasetConfig, workdir: Workdir, show_progress: bool) -> Dataset:
    fmt = source.format
    if fmt == "synthetic":
        from lvlmrec.data.synthetic import generate_synthetic

        return generate_synthetic(
            workdir.dataset_dir,
            n_items=source.n_items,
            n_users=source.n_users,
            seed=source.seed,
            image_size=source.image_size,
            min_interactions=source.min_interactions,
            mean_interactions=source.mean_interactions,
            show_progress=show_progress,
            split=source.split,
            cold_fraction=source.cold_fraction,
        )
    if fmt == "kaggle":
        from lvlmrec.data.kaggle import load_kaggle

        return load_kaggle(source, show_progress)
    if fmt in ("amazon2018", "amazon2023"):
        from lvlmrec.data.amazon import load_amazon

        return load_amazon(source, show_progress)
    if fmt == "mmrec":
        from lvlmrec.data.mmrec import load_mmrec

        return load_mmrec(source, show_progress)
    if fmt == "csv":
        from lvlmrec.data.csvdata import load_csv

        return load_csv(source, show_progress)
    raise DataError(f"dataset format {fmt!r} is not supported")


def source_inputs(source: DatasetConfig) -> dict[str, dict[str, Any]]:
    """Path -> size and mtime (files) or listing digest (folders) of every input a source
    reads: recorded as provenance and part of the prepare stage's key, so replacing an input
    file prepares the dataset again."""
    out: dict[str, dict[str, Any]] = {}
    for field in INPUT_FIELDS:
        path = getattr(source, field, None)
        if path is not None:
            path = Path(path)
            out[str(path)] = _fingerprint(path) if path.exists() else {"kind": "missing"}
    return out


def prepare_settings(source: DatasetConfig) -> Any:
    """What the prepare stage's key hashes: the source settings and its inputs' identity."""
    inputs = source_inputs(source)
    return {"source": source, "inputs": inputs} if inputs else source


def prepare_dataset(source: DatasetConfig, workdir: Workdir,
                    show_progress: bool = True) -> list[Path]:
    """Write dataset/ for `source`; with format `prepared`, check the one already there."""
    if source.format == "prepared":
        ds = Dataset.load(workdir, features=True)
        ds.validate(str(workdir.dataset_dir))
        outputs = [workdir.items_path, workdir.interactions_path, workdir.users_path]
        if workdir.features_dir.is_dir():
            outputs.append(workdir.features_dir)
        return outputs
    from lvlmrec.data.fetch import link_fetched

    ds = build_dataset(source, workdir, show_progress)
    ds.items = link_fetched(ds.items, workdir)
    provenance: dict[str, Any] = {"source": source.model_dump(mode="json")}
    inputs = source_inputs(source)
    if inputs:
        provenance["inputs"] = inputs
    outputs = ds.save(workdir, provenance=provenance)
    images = workdir.dataset_dir / "images"
    if images.is_dir():
        outputs.append(images)
    return outputs


def describe_provenance(meta: dict[str, Any]) -> list[str]:
    """`dataset.json` as a few readable lines (what `lvlmrec info` prints)."""
    from lvlmrec.data.fetch import FetchSummary

    c = meta.get("counts", {})
    lines = [f"dataset: {meta.get('format', '?')}, {c.get('n_users', 0):,} users, "
             f"{c.get('n_items', 0):,} items, {c.get('n_interactions', 0):,} interactions "
             f"(train {c.get('n_train', 0):,}, valid {c.get('n_valid', 0):,}, "
             f"test {c.get('n_test', 0):,}); created {meta.get('created', '?')}"]
    if meta.get("inputs"):
        lines.append("  inputs:")
        for path, fp in meta["inputs"].items():
            if fp.get("kind") == "file":
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(fp["mtime_ns"] / 1e9))
                lines.append(f"    {path} ({fp['size']:,} bytes, modified {when})")
            elif fp.get("kind") == "dir":
                lines.append(f"    {path}/ ({fp['n_files']:,} files)")
            else:
                lines.append(f"    {path} (missing)")
    if meta.get("filters"):
        lines.append("  filters:")
        for step in meta["filters"]:
            options = ", ".join(f"{k} {v}" for k, v in step.items()
                                if k not in ("step", "before", "after") and v is not None)
            text = f"    {step['step']}" + (f" ({options})" if options else "")
            if "before" in step:
                text += ": " + ", ".join(
                    f"{step['before'][k]:,} -> {step['after'][k]:,} {k[2:]}"
                    for k in ("n_interactions", "n_users", "n_items"))
            lines.append(text)
    if "n_items_without_interactions" in c:
        lines.append(f"  cold items: {c['n_items_without_interactions']:,} catalog items "
                     f"without interactions (n_items_without_interactions), "
                     f"{c['n_items_without_training']:,} without a training interaction, "
                     f"{c['n_cold_test_items']:,} cold test items")
    lines.append(f"  items: {c.get('n_items_with_title', 0):,} with title, "
                 f"{c.get('n_items_with_text', 0):,} with text, "
                 f"{c.get('n_items_with_image', 0):,} with image")
    for name, feat in (meta.get("features") or {}).items():
        missing = f", {feat['n_missing']:,} zero rows" if "n_missing" in feat else ""
        lines.append(f"  feature dataset:{name}: {feat.get('dim')}-d{missing}")
    fetch = meta.get("image_fetch")
    if fetch:
        fields = {k: fetch[k] for k in FetchSummary.__dataclass_fields__ if k in fetch}
        lines.append(f"  image fetch: {FetchSummary(**fields).line()} "
                     f"(finished {fetch.get('finished', '?')})")
    return lines
