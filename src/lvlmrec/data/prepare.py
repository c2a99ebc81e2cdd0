"""Turn a configured data source into the workdir's dataset artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvlmrec.config import DatasetConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.workdir import ContentHasher, Workdir

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
            sequential_strength=source.sequential_strength,
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


def source_inputs(source: DatasetConfig,
                  hasher: ContentHasher | None = None) -> dict[str, dict[str, Any]]:
    """Path -> content hash (files) or hash of every file's name and content (folders) of
    every input a source reads: recorded as provenance and part of the prepare stage's key,
    so replacing an input file, or editing an image in place, prepares the dataset again.
    Times and sizes are not part of it: a copied input is the same input."""
    hasher = hasher or ContentHasher()
    out: dict[str, dict[str, Any]] = {}
    for field in INPUT_FIELDS:
        path = getattr(source, field, None)
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            n_files = sum(1 for p in path.rglob("*") if p.is_file())
            out[str(path)] = {"kind": "dir", "n_files": n_files, "sha256": hasher.tree(path)}
        elif path.is_file():
            out[str(path)] = {"kind": "file", "size": path.stat().st_size,
                              "sha256": hasher.file(path)}
        else:
            out[str(path)] = {"kind": "missing"}
    return out


def prepare_settings(source: DatasetConfig) -> Any:
    """The settings part of the prepare stage's key (its inputs' content is the other)."""
    return source


def prepare_dataset(source: DatasetConfig, workdir: Workdir, show_progress: bool = True,
                    hasher: ContentHasher | None = None) -> list[Path]:
    """Write dataset/ for `source`; with format `prepared`, check the one already there."""
    from lvlmrec.data.images import check_item_images, image_roots

    if source.format == "prepared":
        ds = Dataset.load(workdir, features=True)
        ds.validate(str(workdir.dataset_dir))
        check_item_images(ds.items, image_roots(ds.info.get("source"), workdir.root),
                          workdir.root, str(workdir.items_path))
        outputs = [workdir.items_path, workdir.interactions_path, workdir.users_path]
        if workdir.features_dir.is_dir():
            outputs.append(workdir.features_dir)
        return outputs
    from lvlmrec.data.fetch import link_fetched

    ds = build_dataset(source, workdir, show_progress)
    ds.items = link_fetched(ds.items, workdir)
    # every image path must stay inside the run's folders: nothing else is ever read or served
    check_item_images(ds.items, image_roots(source.model_dump(mode="json"), workdir.root),
                      workdir.root, f"{source.format} dataset")
    provenance: dict[str, Any] = {"source": source.model_dump(mode="json")}
    inputs = source_inputs(source, hasher)
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
            sha = f", sha256 {fp['sha256'][:12]}" if "sha256" in fp else ""
            if fp.get("kind") == "file":
                lines.append(f"    {path} ({fp['size']:,} bytes{sha})")
            elif fp.get("kind") == "dir":
                lines.append(f"    {path}/ ({fp['n_files']:,} files{sha})")
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
