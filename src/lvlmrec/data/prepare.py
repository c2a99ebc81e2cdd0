"""Turn a configured data source into the workdir's dataset artifacts."""

from __future__ import annotations

from pathlib import Path

from lvlmrec.config import DatasetConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.workdir import Workdir


def build_dataset(source: DatasetConfig, workdir: Workdir, show_progress: bool = True) -> Dataset:
    """Load (or generate) the dataset described by `source`, validated, not yet saved."""
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
        )
    raise DataError(f"dataset format {fmt!r} is not supported yet")


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
    ds = build_dataset(source, workdir, show_progress)
    outputs = ds.save(workdir, provenance={"source": source.model_dump(mode="json")})
    images = workdir.dataset_dir / "images"
    if images.is_dir():
        outputs.append(images)
    return outputs
