"""The demo's results and timings as a committed JSON: what README's demo table quotes.

    make demo                       # (timed: `time make demo` from a clean clone)
    python benchmarks/demo_results.py --workdir runs/demo --wall-seconds 446.7

Reads a finished demo run (results/metrics.csv and the stage records) and writes
benchmarks/results/demo.json with the test metrics of every representation, each stage's
seconds and, when given, the wall time of the whole `make demo` (install included).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _results import Load, save_results

from lvlmrec.pipeline import STAGE_NAMES
from lvlmrec.workdir import StageBook, Workdir, read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--wall-seconds", type=float, default=None,
                        help="wall time of the whole `make demo`, install included")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    load = Load()
    wd = Workdir(args.workdir)
    metrics = pd.read_csv(wd.metrics_path)
    cols = ["representation", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "n_users"]
    table = [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in row.items()}
             for row in metrics[cols].sort_values("recall@10", ascending=False)
             .to_dict("records")]
    book = StageBook(wd)
    stages = {name: round(book.get(name).seconds, 1) for name in STAGE_NAMES if book.get(name)}
    run = read_json(wd.run_json)
    save_results("demo", {
        "make_demo_wall_seconds": args.wall_seconds,
        "stage_seconds": stages,
        "stage_seconds_total": round(sum(stages.values()), 1),
        "baseline": run.get("baseline"),
        "n_users": int(run.get("n_users", 0)), "n_items": int(run.get("n_items", 0)),
        "note": args.note,
        "table": table,
    }, load)


if __name__ == "__main__":
    main()
