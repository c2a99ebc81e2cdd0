"""How long a no-op `lvlmrec run` spends checking a study-sized catalog (38,493 images).

Stage keys and output digests hash content, never times: an unchanged stage is recognised
after a `cp -r` as well as in place. What keeps that cheap is the memo of content hashes in
`.lvlmrec/hashes.json` ((size, mtime, ctime, inode) -> sha256): a file whose stat did not
change is not read again. This script writes a CSV catalog of the study's size (38,493
small JPEG images, 23,318 users, about 280k interactions) inside a workdir, prepares it,
then times, each in a fresh `python -m lvlmrec.cli` process:

  noop_warm     `lvlmrec run --only prepare` again: memo hits only (stat every image)
  noop_copy     the same on a `cp -r` copy: no memo hit, every image is read and hashed
  dry_run_warm  `lvlmrec run --dry-run` on the original (plan only)

and, in this process, hashing the image folder with a cold and with a warm memo. The other
stages' outputs are a handful of files (embeddings, model folders, results), memoised the
same way; the images dominate. Target (issue 14): a no-op run within 30 s on 2 cores.

    PYTHONPATH=src python benchmarks/noop_run.py [--items 38493] [--users 23318] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_catalog(root: Path, n_items: int, n_users: int, mean_interactions: int,
                  seed: int = 0) -> None:
    """items.csv, interactions.csv and images/<item_id>.jpg (64 px, a few KB each)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    base = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    for i in range(n_items):
        tile = np.roll(base, i % 16, axis=0) ^ np.uint8(i % 251)
        Image.fromarray(tile).resize((64, 64)).save(images / f"{i}.jpg", quality=85)
    pd.DataFrame({"item_id": np.arange(n_items),
                  "title": [f"item {i}" for i in range(n_items)]}).to_csv(root / "items.csv",
                                                                          index=False)
    per_user = 5 + rng.poisson(mean_interactions - 5, n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, len(users))
    inter = pd.DataFrame({"user_id": users, "item_id": items}).drop_duplicates()
    inter.to_csv(root / "interactions.csv", index=False)


CPU: dict[str, float] = {}


def cli(workdir: Path, *args: str, label: str = "") -> float:
    """Wall seconds of one `lvlmrec` command in a fresh process (imports included); its
    CPU seconds (user + system, what a loaded machine does not inflate) go to CPU[label]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lvlmrec.cli", *args, "-w", str(workdir)],
                   check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[label] = round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=38_493)
    parser.add_argument("--users", type=int, default=23_318)
    parser.add_argument("--mean-interactions", type=int, default=12)
    parser.add_argument("--keep", type=Path, default=None, help="build here and keep it")
    args = parser.parse_args()
    from _results import Load, save_results

    from lvlmrec.workdir import ContentHasher, Workdir

    load = Load()
    with tempfile.TemporaryDirectory(prefix="noop-run-") as tmp:
        root = args.keep or Path(tmp)
        wd = root / "run"
        t0 = time.perf_counter()
        write_catalog(wd / "source", args.items, args.users, args.mean_interactions)
        n_bytes = sum(p.stat().st_size for p in (wd / "source" / "images").iterdir())
        print(f"catalog: {args.items} images ({n_bytes / 2**20:.0f} MiB) written in "
              f"{time.perf_counter() - t0:.1f}s")
        src = wd / "source"
        first = cli(wd, "prepare", "--format", "csv", "--items", str(src / "items.csv"),
                    "--interactions", str(src / "interactions.csv"),
                    "--images", str(src / "images"), "--no-progress")
        print(f"prepare (first, hashes every image once): {first:.1f}s")

        images = src / "images"
        (wd / ".lvlmrec" / "hashes.json").rename(wd / ".lvlmrec" / "hashes.bak")
        t0 = time.perf_counter()
        ContentHasher(Workdir(wd)).tree(images)
        cold_hash = time.perf_counter() - t0
        (wd / ".lvlmrec" / "hashes.bak").rename(wd / ".lvlmrec" / "hashes.json")
        t0 = time.perf_counter()
        ContentHasher(Workdir(wd)).tree(images)
        warm_hash = time.perf_counter() - t0
        print(f"hash the image folder in-process: cold {cold_hash:.2f}s, warm memo "
              f"{warm_hash:.2f}s")

        noop = cli(wd, "run", "--only", "prepare", "--no-progress", label="noop_run_warm")
        dry = cli(wd, "run", "--dry-run", label="dry_run")
        copy = root / "copy"
        subprocess.run(["cp", "-r", str(wd), str(copy)], check=True)
        noop_copy = cli(copy, "run", "--only", "prepare", "--no-progress",
                        label="noop_run_copy")
        noop_copy_again = cli(copy, "run", "--only", "prepare", "--no-progress",
                              label="noop_run_copy_again")
        out = subprocess.run([sys.executable, "-m", "lvlmrec.cli", "run", "--dry-run",
                              "-w", str(copy)], capture_output=True, text=True, check=True)
        assert "prepare    skip" in out.stdout, out.stdout
        print(f"no-op run (prepare): {noop:.1f}s warm, {noop_copy:.1f}s on a cp -r copy "
              f"(then {noop_copy_again:.1f}s); dry run {dry:.1f}s; CPU seconds {CPU}")
        if args.keep is None:
            shutil.rmtree(copy)
    save_results("noop_run", {
        "n_images": args.items, "image_mib": round(n_bytes / 2**20, 1), "n_users": args.users,
        "prepare_first_s": round(first, 2), "hash_images_cold_s": round(cold_hash, 2),
        "hash_images_warm_s": round(warm_hash, 2), "noop_run_warm_s": round(noop, 2),
        "noop_run_copy_s": round(noop_copy, 2), "noop_run_copy_again_s":
        round(noop_copy_again, 2), "dry_run_s": round(dry, 2), "target_s": 30,
        "cpu_seconds": CPU, "cpu_count": os.cpu_count()}, load)


if __name__ == "__main__":
    main()
