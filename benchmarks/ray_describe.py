"""Describe throughput of the Ray engine with 1 and 2 workers, beside the local engine.

A synthetic catalog is described three times from scratch: by the local engine, then on
a local Ray instance (one CPU per machine CPU) with 1 and with 2 workers. A Ray worker
with one CPU runs its math libraries on one thread, and so does the local engine here, so
the local row is what one worker does without Ray. Per run it prints the wall time (Ray
runs include starting Ray's workers and loading the model in each) and the steady rate:
items committed after the first batch, over the time from the first commit to the last
(from the store's timestamps).

    PYTHONPATH=src python benchmarks/ray_describe.py [--items 192] [--backend attributes|tiny-llava]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path


def steady_rate(db: Path) -> float:
    """Items per second after the first commit, from the commit times in the store."""
    with sqlite3.connect(db) as conn:
        times = sorted(t for (t,) in conn.execute("SELECT created FROM descriptions"))
    first = [t for t in times if t == times[0]]
    span = times[-1] - times[0]
    return (len(times) - len(first)) / span if span > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=192)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backend", choices=["attributes", "tiny-llava"], default="attributes")
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    # one thread per math library, as Ray gives a worker with one CPU: set before numpy loads
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray
    from rich.console import Console

    from lvlmrec.cluster import worker_runtime_env
    from lvlmrec.config import DescribeConfig, RunConfig, ScaleConfig, SyntheticSource
    from lvlmrec.data.schema import Dataset
    from lvlmrec.describe.run import run_describe
    from lvlmrec.pipeline import run_pipeline
    from lvlmrec.workdir import Workdir

    with tempfile.TemporaryDirectory() as tmp:
        settings: dict = {"batch_size": args.batch_size}
        if args.backend == "tiny-llava":
            from lvlmrec.describe.tiny import build_tiny_llava_next

            model = build_tiny_llava_next(Path(tmp) / "tiny-llava")
            settings.update(backend="hf", model=str(model), max_new_tokens=16)
        source = SyntheticSource(n_items=args.items, n_users=max(10, args.items // 2),
                                 image_size=args.image_size)
        catalog = Workdir(Path(tmp) / "catalog")
        run_pipeline(RunConfig(dataset=source), catalog, only=["prepare"],
                     console=Console(quiet=True), show_progress=False)
        ds = Dataset.load(catalog, features=False)
        cpus = os.cpu_count() or 1
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=worker_runtime_env(),
                 logging_level="WARNING")
        print(f"{args.items} synthetic items ({args.image_size} px), backend {args.backend}, "
              f"batch {args.batch_size}, {cpus} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'engine':<18}{'wall s':>8}{'items/s (wall)':>16}{'items/s (steady)':>18}")
        runs = [("local", ScaleConfig())] + [
            (f"ray, {n} worker{'s' * (n > 1)}", ScaleConfig(engine="ray", workers=n))
            for n in (1, 2)]
        rows = []
        for name, scale in runs:
            workdir = Workdir(shutil.copytree(catalog.root, Path(tmp) / name.replace(" ", "")))
            cfg = DescribeConfig(**settings, scale=scale)
            t0 = time.perf_counter()
            summary, _ = run_describe(cfg, workdir, ds, show_progress=False)
            wall = time.perf_counter() - t0
            assert summary.n_described == args.items, summary.line()
            steady = steady_rate(workdir.descriptions_db)
            print(f"{name:<18}{wall:>8.1f}{args.items / wall:>16.2f}{steady:>18.2f}")
            rows.append({"engine": name, "wall_s": wall, "items_per_s": args.items / wall,
                         "steady_items_per_s": steady})
        ray.shutdown()
    save_results("ray_describe", {"items": args.items, "backend": args.backend,
                                  "batch_size": args.batch_size, "rows": rows}, load)


if __name__ == "__main__":
    main()
