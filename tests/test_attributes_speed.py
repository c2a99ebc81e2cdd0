"""The attributes describer's fast analysis is the same analysis: same masks, clusters,
regions and, on fixed images, the same attributes as before it was made fast; and each
describer VERSION keeps its texts.

The pinned analysis hashes were recorded from the describer before the speed work
(attributes-v2, commit 1b30d6f; its texts hashed the same after it, commit a43c878), on
this project's CPU build of numpy/scipy. The helpers are checked against the scipy calls
and the row-wise k-means they replace on random inputs. Texts that change need a new
VERSION (the store keys texts by it) and a new row in TEXTS.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lvlmrec.describe import attributes as A
from lvlmrec.imageio import load_image

POSTERS = Path("/work/shared/data/movielens-100k-posters/posters")
# (pixels, the analysis fields attributes-v2 had)
PINNED = {
    "synthetic": ("efae7bd2e243180d", "50491888345834f5"),
    "posters": ("83ca39d043debcde", "de84dda0341acc53"),
}
# VERSION -> the texts (no ImageNet labels) of the synthetic images and of the posters
TEXTS = {
    "attributes-v2": ("5922d0e458332794", "5a0f5362d106fe5f"),
    "attributes-v3": ("265bba1a99ee399d", "555ff5ce7b43ff94"),
}


def _masks(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for t in range(n):
        h, w = (int(v) for v in rng.integers(12, 90, 2))
        if t % 3 == 0:
            m = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        elif t % 3 == 1:
            m = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(1, 5)) > 0.5
        else:
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h):rng.integers(0, h), rng.integers(0, w):rng.integers(0, w)] = True
            m |= rng.random((h, w)) < 0.02
        yield m, int(rng.integers(2, 12))


def test_morphology_matches_scipy():
    for m, r in _masks(150):
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = xx**2 + yy**2 <= r * r
        closed = ndimage.binary_closing(np.pad(m, r), disk)[r:-r, r:-r]
        filled, unfilled = A._close_and_fill(m, r)
        assert (filled == ndimage.binary_fill_holes(closed)).all() and (unfilled == closed).all()
        assert (A._open_specks(m) == ndimage.binary_opening(m, np.ones((2, 2), bool))).all()
        assert (A._dilate_cross(m, 2) == ndimage.binary_dilation(m, iterations=2)).all()
        assert (A._erode(m, r) == ndimage.binary_erosion(m, iterations=r)).all()
        labels, _ = ndimage.label(m)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        assert (A._border_connected(m) == np.isin(labels, edge[edge > 0])).all()


def _reference_kmeans(x: np.ndarray, k: int, iters: int = 20):
    """attributes-v2's k-means on (n, 3) rows."""
    centres = [x[np.argmin(np.linalg.norm(x - np.median(x, axis=0), axis=1))]]
    dist = np.linalg.norm(x - centres[0], axis=1)
    for _ in range(1, k):
        i = int(np.argmax(dist))
        if dist[i] < 1.0:
            break
        centres.append(x[i])
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
    c = np.stack(centres).astype(np.float64)
    x64 = x.astype(np.float64)
    x2 = (x64 * x64).sum(1, keepdims=True)
    assign = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        assign = np.argmin(x2 - 2 * x64 @ c.T + (c * c).sum(1), axis=1)
        counts = np.bincount(assign, minlength=len(c))
        sums = np.stack([np.bincount(assign, x64[:, d], len(c)) for d in range(3)], 1)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        if np.allclose(new, c, atol=1e-3):
            break
        c = new
    return assign, c.astype(x.dtype)


@pytest.mark.parametrize("k", [2, 6])
def test_kmeans_matches_the_row_wise_version(k):
    rng = np.random.default_rng(k)
    for n in (7, 300, 900, 6000):
        groups = rng.integers(0, 5, size=(n, 1)) * rng.uniform(8, 30)
        rows = (rng.normal(size=(n, 3)) * rng.uniform(2, 25) + groups).astype(np.float32)
        assign, centres = A.kmeans(np.ascontiguousarray(rows.T), k)
        ref_assign, ref_centres = _reference_kmeans(rows, k)
        assert (assign == ref_assign).all() and centres.tobytes() == ref_centres.tobytes()


def _reference_regions(mask: np.ndarray, area_total: int) -> A._Regions:
    """attributes-v2's region statistics, from ndimage's per-label sums and means."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return A._Regions(0, 0.0, 0.0, 0, 0.0, 0.0)
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(mask, labels, idx)
    yy, xx = np.indices(mask.shape)
    my, mx = ndimage.mean(yy, labels, idx), ndimage.mean(xx, labels, idx)
    vy = ndimage.mean(yy * yy, labels, idx) - my**2
    vx = ndimage.mean(xx * xx, labels, idx) - mx**2
    cxy = ndimage.mean(xx * yy, labels, idx) - mx * my
    tr, det = vx + vy, vx * vy - cxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    elong = np.sqrt((tr / 2 + disc) / np.maximum(tr / 2 - disc, 0.25))
    hw = np.array([(s[0].stop - s[0].start, s[1].stop - s[1].start)
                   for s in ndimage.find_objects(labels)])
    extent, aspect = area / (hw[:, 0] * hw[:, 1]), hw.max(1) / hw.min(1)
    real = area >= 5
    compact = real & (aspect <= 2.0) & (extent >= 0.55) & (area <= 0.08 * area_total)
    elongated = real & (elong >= 3.0) & (area >= 0.01 * area_total)
    total, c_area = float(area.sum()), area[compact]
    cv = float(c_area.std() / c_area.mean()) if len(c_area) else 0.0
    return A._Regions(int(compact.sum()), float(c_area.sum() / total), cv,
                      int(elongated.sum()), float(area.max() / total), total / area_total)


def test_region_statistics_match_ndimage():
    for m, _ in _masks(100, seed=1):
        assert repr(A._regions(m, m.size)) == repr(_reference_regions(m, m.size))


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _images(kind: str, tmp_path: Path) -> list:
    if kind == "synthetic":
        from lvlmrec.data.synthetic import generate_synthetic

        ds = generate_synthetic(tmp_path, n_items=40, n_users=20, seed=0, show_progress=False)
        return [load_image(tmp_path / "images" / f"{i}.png") for i in ds.items["item_id"]]
    if not POSTERS.is_dir():
        pytest.skip(f"no posters at {POSTERS}")
    files = sorted(POSTERS.glob("*.jpg"), key=lambda p: int(p.stem))[:12]
    return [load_image(p) for p in files]


def _fields(a: A.Attributes) -> list:
    """What attributes-v2's analysis decided, exactly (shares and CIELAB to the last bit)."""
    return [[c.name for c in a.colours], [float(c.share) for c in a.colours],
            [np.asarray(c.lab, np.float32).tolist() for c in a.colours],
            a.pattern, a.dot_colour, a.ground_colour, a.shape, a.size, a.strength]


@pytest.mark.parametrize("kind", ["synthetic", "posters"])
def test_fixed_images_keep_their_analysis(kind, tmp_path):
    images = _images(kind, tmp_path)
    pixels, fields = PINNED[kind]
    digest = hashlib.sha256(b"".join(np.asarray(im).tobytes() for im in images))
    assert digest.hexdigest()[:16] == pixels, "the input images changed: re-record PINNED"
    got = [_fields(A.analyse_image(im, 2, True, True)) for im in images]
    assert _hash(got) == fields, got[:3]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("kind", ["synthetic", "posters"])
def test_fixed_images_keep_their_texts(kind, processes, tmp_path):
    images = _images(kind, tmp_path)
    describer = A.AttributesDescriber(max_labels=0, processes=processes)
    try:
        texts = describer.describe(images)
    finally:
        describer.close()
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    assert digest == TEXTS[A.VERSION][kind == "posters"], texts


def test_processes_change_no_key_and_reject_nonsense():
    from lvlmrec.config import DescribeConfig, hash_settings
    from lvlmrec.describe.registry import make_describer
    from lvlmrec.describe.run import describer_identity
    from lvlmrec.errors import ConfigError

    plain = DescribeConfig()
    four = DescribeConfig(attributes={"processes": 4})
    assert hash_settings(plain) == hash_settings(four)
    assert describer_identity(plain) == describer_identity(four)
    assert make_describer(plain).prompt_hash == make_describer(four).prompt_hash
    assert make_describer(four).processes == 4
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="processes"):
            A.AttributesDescriber(processes=bad)


def test_a_pool_is_started_by_load_and_stopped_by_close():
    describer = A.AttributesDescriber(max_labels=0, processes=2)
    describer.load()
    try:
        assert describer._pool is not None
        pids = {describer._pool.submit(os.getpid).result() for _ in range(8)}
        assert os.getpid() not in pids
    finally:
        describer.close()
    assert describer._pool is None


def test_a_ray_actor_analyses_on_the_cpus_it_was_granted():
    pytest.importorskip("ray")
    from lvlmrec.config import DescribeConfig
    from lvlmrec.describe.ray_engine import DescribeWorker
    from lvlmrec.describe.registry import make_describer

    cfg = DescribeConfig(attributes={"max_labels": 0},
                         scale={"engine": "ray", "cpus_per_worker": 2})
    plain = make_describer(cfg)
    worker = DescribeWorker(cfg, plain.model_id, plain.prompt_hash)
    try:
        assert worker.describer.processes == 2
    finally:
        worker.describer.close()


def test_a_dead_analysis_process_falls_back_to_this_process(tmp_path):
    images = _images("synthetic", tmp_path)[:6]
    expected = A.AttributesDescriber(max_labels=0, processes=1).describe(images)
    describer = A.AttributesDescriber(max_labels=0, processes=2)
    describer.load()
    for pid in list(describer._pool._processes):  # what the out-of-memory killer would do
        os.kill(pid, 9)
    try:
        with pytest.warns(RuntimeWarning, match="analysis process died"):
            assert describer.describe(images) == expected
        assert describer.processes == 1 and describer._pool is None
    finally:
        describer.close()
