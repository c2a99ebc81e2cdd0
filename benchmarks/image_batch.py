"""EfficientNet-Lite0 images/s on CPU by batch size, and what the batch size changes.

Encodes the demo catalog's images (drawn here at 128 px, letterboxed to `--size`) with
`ImageEncoder.encode` (decoding on worker threads included) for each batch size. Each
setting runs `--repeats` times; the median images/s is reported, with the largest feature
difference between each batch size and a batch of 32 (the default before).

    python benchmarks/image_batch.py [--images 200] [--size 224] [--batch-sizes 1,2,4,5,8,16,32]

Writes benchmarks/results/image_batch.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import Load, save_results

from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.encode.image import ImageEncoder


def rate(enc: ImageEncoder, paths: list[Path], repeats: int) -> tuple[float, np.ndarray]:
    enc.encode(paths[:16], show_progress_bar=False)  # warm up
    rates, feats = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        feats = enc.encode(paths, show_progress_bar=False)
        rates.append(len(paths) / (time.perf_counter() - start))
    return round(statistics.median(rates), 1), feats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="1,2,4,5,8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = Load()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic(Path(tmp), n_items=args.images, n_users=20, seed=0,
                           show_progress=False)
        paths = sorted((Path(tmp) / "images").glob("*.png"), key=lambda p: int(p.stem))
        rows = []
        _, reference = rate(ImageEncoder(device="cpu", batch_size=32, image_size=args.size),
                            paths, 1)
        for bs in sizes:
            encoder = ImageEncoder(device="cpu", batch_size=bs, image_size=args.size)
            images_per_s, feats = rate(encoder, paths, args.repeats)
            diff = float(np.abs(feats - reference).max())
            rows.append({"batch_size": bs, "images_per_s": images_per_s,
                         "max_abs_diff_vs_batch_32": diff})
            print(f"batch {bs:3d}: {images_per_s:6.1f} images/s "
                  f"(max |diff| vs batch 32: {diff:.1e})", flush=True)
    save_results("image_batch", {"images": args.images, "image_size": args.size,
                                 "torch_threads": torch.get_num_threads(), "rows": rows}, load)


if __name__ == "__main__":
    main()
