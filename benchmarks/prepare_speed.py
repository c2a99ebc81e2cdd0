"""Prepare an archive of the study's size and print the time and peak memory.

The archive (23,318 users, 38,493 items, ~280k interactions, two 768-d float64 feature
arrays: ~470 MB) is generated in a temporary folder, then prepared by
the pipeline's prepare stage (what `lvlmrec prepare --format kaggle` runs: load, validate,
save, digests) in a child process, so its peak resident memory is the
prepare step's alone. Target: under a minute, and memory near the float32 copies of the two
arrays (2 x 118 MB) plus the tables, not several float64 copies.

    PYTHONPATH=src python benchmarks/prepare_speed.py [--users N --items N --interactions N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK = """
def peak_mb():
    # VmHWM: this process's peak resident memory (ru_maxrss would include the parent's,
    # inherited across fork + exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
CHILD = PEAK + """
import json, sys, time
from rich.console import Console
from lvlmrec.config import KaggleSource, RunConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.pipeline import run_pipeline
from lvlmrec.workdir import Workdir
t0 = time.perf_counter()
run_pipeline(RunConfig(dataset=KaggleSource(source=sys.argv[1])), Workdir(sys.argv[2]),
             only=["prepare"], console=Console(quiet=True), show_progress=False)
seconds = time.perf_counter() - t0
counts = Dataset.load(Workdir(sys.argv[2]), features=False).counts()
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb(), **counts}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=23_318)
    parser.add_argument("--items", type=int, default=38_493)
    parser.add_argument("--interactions", type=int, default=280_000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()

    from _results import Load, save_results

    from lvlmrec.data.kaggle import random_archive

    load = Load()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "Clothing_Shoes_and_Jewelry-clip_clip"
        t0 = time.perf_counter()
        random_archive(folder, args.users, args.items, args.interactions, args.dim)
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"generated {folder.name} ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f}s")
        # a bare interpreter's baseline, to tell the prepare step's own memory
        base = subprocess.run([sys.executable, "-c", PEAK + "import lvlmrec.data.kaggle, "
                               "lvlmrec.data.prepare; print(peak_mb())"],
                              capture_output=True, text=True, check=True)
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(Path(tmp) / "run")],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"prepared {result['n_users']} users, {result['n_items']} items, "
              f"{result['n_interactions']} interactions "
              f"(train {result['n_train']}, valid {result['n_valid']}, test {result['n_test']})")
        print(f"time: {result['seconds']:.1f}s")
        print(f"peak memory: {result['peak_rss_mb']:.0f} MB resident "
              f"(interpreter + imports alone: {float(base.stdout):.0f} MB)")
        save_results("prepare_speed", {**result, "archive_mb": round(size_mb, 1),
                                       "baseline_rss_mb": float(base.stdout)}, load)


if __name__ == "__main__":
    main()
