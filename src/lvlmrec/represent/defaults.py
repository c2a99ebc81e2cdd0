"""Default strategies for a dataset whose config names none.

`lvlmrec prepare` on a user's own data writes these into the workdir's config.yaml, so
the next stages compare something sensible instead of fitting nothing. What they include
follows the data: a text row for every text source the items have (titles, the dataset's
own text, the describer's descriptions when there are images to describe), vision and
fusions when images exist (or the dataset ships image features), and collaborative
baselines that every dataset supports.
"""

from __future__ import annotations

from typing import Any

from lvlmrec.config import RunConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.workdir import Workdir

#: the collaborative baselines, the same settings on every dataset (BPR capped like the demo)
BASELINES: list[dict[str, Any]] = [
    {"name": "popularity", "kind": "popularity"},
    {"name": "itemknn", "kind": "itemknn"},
    {"name": "bprmf", "kind": "bpr",
     "params": {"learning_rate": 0.01, "epochs": 50, "patience": 5}},
    {"name": "ease", "kind": "ease"},
]


def default_strategies(config: RunConfig, workdir: Workdir, ds: Dataset) -> list[dict[str, Any]]:
    """Strategy entries (config mappings) that fit this dataset and config."""
    from lvlmrec.encode.run import _image_source_name
    from lvlmrec.represent.registry import REGISTRY

    items = ds.items
    has_titles = items["title"].fillna("").astype(str).str.strip().ne("").any()
    has_text = items["text"].fillna("").astype(str).str.strip().ne("").any()
    has_images = config.encode.images and any(p is not None for p in ds.image_paths(workdir))
    describes = has_images and config.describe.enabled
    features = sorted(p.stem for p in workdir.features_dir.glob("*.npy")) \
        if workdir.features_dir.is_dir() else []

    texts: list[tuple[str, str]] = []  # (row name prefix, source)
    if describes:
        texts.append(("lvlm", "description"))
    if has_titles:
        texts.append(("title", "title"))
    if has_text:
        texts.append(("metadata", "metadata"))
    texts += [(f"dataset_{f}", f"dataset:{f}") for f in features if not f.startswith("image")]
    vision = _image_source_name(config.encode.image_model) if has_images else next(
        (f"dataset:{f}" for f in features if f.startswith("image")), None)

    out: list[dict[str, Any]] = [{"name": f"{prefix}_text", "kind": "text", "text": source}
                                 for prefix, source in texts]
    if vision is not None:
        out.append({"name": "vision_only", "kind": "vision", "vision": vision})
        for prefix, source in texts[:2]:  # fuse the first two text sources with vision
            for kind in ("naive", "attention"):
                out.append({"name": f"{prefix}_vision_{kind}", "kind": kind, "text": source,
                            "vision": vision})
    out += [dict(b) for b in BASELINES if b["kind"] in REGISTRY]
    return out


def fill_default_strategies(config: RunConfig, workdir: Workdir) -> list[str]:
    """Put the defaults into an empty `represent.strategies`; returns their names ([] when
    the config already names strategies)."""
    from lvlmrec.config import RepresentConfig

    if config.represent.strategies:
        return []
    ds = Dataset.load(workdir, features=False)
    section = config.represent.model_dump(mode="json")
    section["strategies"] = default_strategies(config, workdir, ds)
    config.represent = RepresentConfig.model_validate(section)
    return [s.name for s in config.represent.strategies]
