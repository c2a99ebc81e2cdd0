"""One EfficientNet-Lite0 pass per image content, shared by the describe and encode stages.

The attributes describer needs each image's ImageNet labels and the encode stage its
1280-d feature; both come out of the same forward pass (`ImageEncoder.encode_and_classify`).
`image_pass` runs that pass once per distinct image content (file bytes, SHA-256) and keeps
the outputs in a cache in the workdir (`cache/image_pass.sqlite`), keyed by content hash,
model, input size, preprocessing version and device type. The describe stage fills it; the
encode stage then only reads it. Images are decoded and letterboxed on worker threads ahead
of the network (`ImageEncoder._run`), in batches.

The cached features are the network's output bytes, so the encode stage's embeddings are
exactly those of running the encoder on the same images in the same batches (a batch's
composition can move a feature by ~1e-6 on CPU; `tests/test_image_pass.py` checks
equality). Only the `TOP_K` most probable ImageNet classes are kept per image: every label
list of up to `TOP_K` labels is the same as from the full distribution.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lvlmrec.encode.image import FEATURE_DIM, ImageEncoder, ImageOutputs, imagenet_labels
from lvlmrec.workdir import ContentHasher, Workdir, file_digest, hash_obj

#: ImageNet classes kept per image (describers name at most a few)
TOP_K = 32
#: images per cache commit: an interrupted pass keeps what it finished
_CHUNK = 1024


def cache_path(workdir: Workdir) -> Path:
    return workdir.root / "cache" / "image_pass.sqlite"


class ImagePassCache:
    """Features and top ImageNet classes per (model key, image content hash), in SQLite."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    @classmethod
    def for_workdir(cls, workdir: Workdir) -> ImagePassCache:
        return cls(cache_path(workdir))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS pass (model TEXT, image TEXT, "
                             "features BLOB, top_idx BLOB, top_p BLOB, "
                             "PRIMARY KEY (model, image))")
        return self._db

    def get(self, model: str, hashes: Sequence[str]
            ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """hash -> (features, top class indices, their probabilities) for cached hashes."""
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        db, unique = self._conn(), list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            part = unique[start:start + 500]
            rows = db.execute(f"SELECT image, features, top_idx, top_p FROM pass WHERE model=? "
                              f"AND image IN ({','.join('?' * len(part))})", [model, *part])
            for image, feat, idx, p in rows:
                out[image] = (np.frombuffer(feat, np.float32), np.frombuffer(idx, np.int16),
                              np.frombuffer(p, np.float32))
        return out

    def put(self, model: str, hashes: Sequence[str], outputs: ImageOutputs) -> None:
        """Store the rows of `outputs` that did not fail, one row per hash."""
        top = np.argsort(-outputs.probs, axis=1, kind="stable")[:, :TOP_K]
        rows = [(model, h, outputs.features[i].tobytes(), top[i].astype(np.int16).tobytes(),
                 outputs.probs[i, top[i]].tobytes())
                for i, h in enumerate(hashes) if i not in outputs.failures]
        with self._conn() as db:
            db.executemany("INSERT OR REPLACE INTO pass VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def model_key(encoder: ImageEncoder) -> str:
    """What the cached outputs depend on besides the image bytes."""
    from lvlmrec.device import resolve_device
    from lvlmrec.encode.image import PREPROCESSING_VERSION

    device = resolve_device(encoder.device).split(":")[0]
    return hash_obj({"model": encoder.model_id, "preprocessing": PREPROCESSING_VERSION,
                     "device": device})[:32]


def content_hashes(paths: Sequence[Path | str | None], workers: int = 4,
                   hasher: ContentHasher | None = None) -> list[str | None]:
    """SHA-256 of each file's bytes; None for no path or an unreadable file.

    With the workdir's `hasher` the digests come from its memo (the same SHA-256 the run's
    stage keys use), so files the run has already hashed are not read again."""

    def one(path: Path | str | None) -> str | None:
        if path is None:
            return None
        try:
            return hasher.file(path) if hasher is not None else file_digest(path)
        except OSError:
            return None

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


def image_pass(encoder: ImageEncoder, paths: Sequence[Path | str | None],
               cache: ImagePassCache | None = None,
               show_progress_bar: bool = True,
               desc: str = "EfficientNet pass",
               hasher: ContentHasher | None = None) -> ImageOutputs:
    """Features and class probabilities of every image, each distinct content run once.

    With a cache, contents it holds are not run again and new ones are added. Probabilities
    of cached images are zero outside their `TOP_K` classes. Failed images (missing,
    unreadable) have zero rows and a reason in `failures`, as from `ImageEncoder`.
    `hasher`: the workdir's content-hash memo (saved by the caller).
    """
    n = len(paths)
    features = np.zeros((n, FEATURE_DIM), dtype=np.float32)
    probs = np.zeros((n, len(imagenet_labels())), dtype=np.float32)
    failures: dict[int, str] = {}
    hashes = content_hashes(paths, hasher=hasher)
    for i, (p, h) in enumerate(zip(paths, hashes)):
        if h is None:
            failures[i] = "no image" if p is None else f"image not found: {p}"
    first: dict[str, int] = {}  # content -> the first item that has it
    for i, h in enumerate(hashes):
        if h is not None:
            first.setdefault(h, i)
    key = model_key(encoder) if cache is not None else ""
    known = cache.get(key, list(first)) if cache is not None else {}
    todo = [first[h] for h in first if h not in known]
    rows: dict[str, tuple[np.ndarray, np.ndarray] | str] = {}  # hash -> (features, probs)
    with tqdm(total=len(todo), desc=desc, unit="img",
              disable=not (show_progress_bar and todo)) as bar:
        for start in range(0, len(todo), _CHUNK):
            part = todo[start:start + _CHUNK]
            out = encoder.encode_and_classify([paths[i] for i in part], progress=bar)
            part_hashes = [hashes[i] for i in part]
            if cache is not None:
                cache.put(key, part_hashes, out)
            for j, h in enumerate(part_hashes):
                rows[h] = (out.failures[j] if j in out.failures
                           else (out.features[j], out.probs[j]))
    for h, (feat, idx, p) in known.items():
        dense = np.zeros(probs.shape[1], dtype=np.float32)
        dense[idx.astype(np.int64)] = p
        rows[h] = (feat, dense)
    for i, h in enumerate(hashes):
        if h is None:
            continue
        row = rows[h]
        if isinstance(row, str):
            failures[i] = row
        else:
            features[i], probs[i] = row
    encoder.last_failures = failures
    return ImageOutputs(features, probs, failures)
