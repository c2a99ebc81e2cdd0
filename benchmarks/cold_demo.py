"""Run the cold-start demo (configs/cold.yaml) and record its table and stage times.

Runs `lvlmrec run --config configs/cold.yaml --workdir DIR` (stages already done in DIR are
skipped, so their recorded times are reported), then writes benchmarks/results/cold_demo.json:
date, machine, load average, the command, seconds per stage (as the run recorded them), and
the test table under the `cold` protocol: Recall@10 and NDCG@10 with bootstrap 95% CIs, the
relative improvement over the title baseline with its BH-adjusted paired t-test p-value, and
the representations marked `n/a — needs interactions`. The README quotes this file.

`--config` runs another demo config the same way (`--name` names its JSON): the sequential
demo is recorded as benchmarks/results/sequential_demo.json (docs/representations.md).

    PYTHONPATH=src python benchmarks/cold_demo.py [--workdir runs/cold]
    PYTHONPATH=src python benchmarks/cold_demo.py --config configs/sequential.yaml \
        --name sequential_demo --workdir runs/sequential
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cold.yaml")
    parser.add_argument("--name", default="cold_demo", help="the results JSON's name")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "cold")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/<name>.json")
    parser.add_argument("--note", default="", help="How the stages recorded were run "
                        "(e.g. the first run's /usr/bin/time figures and load).")
    args = parser.parse_args()

    from lvlmrec.pipeline import STAGE_NAMES
    from lvlmrec.workdir import StageBook, Workdir, read_json

    out = args.out or ROOT / "benchmarks" / "results" / f"{args.name}.json"
    command = [sys.executable, "-m", "lvlmrec.cli", "run", "--config",
               str(args.config), "--workdir", str(args.workdir),
               "--no-progress"]
    from _results import Load, save_results

    load = Load()
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - t0
    wd = Workdir(args.workdir)
    book = StageBook(wd)
    stages = {name: round(book.get(name).seconds, 1) for name in STAGE_NAMES if book.get(name)}
    run = read_json(wd.run_json)
    sig = pd.read_csv(wd.results_dir / "significance.csv")
    counts = read_json(wd.dataset_json)["counts"]
    rows = []
    for metric in ("recall@10", "ndcg@10"):
        for r in sig[sig["metric"] == metric].itertuples():
            rows.append({"representation": r.representation, "metric": metric,
                         "mean": round(r.mean, 4), "ci_low": round(r.ci_low, 4),
                         "ci_high": round(r.ci_high, 4),
                         "rel_improvement": None if pd.isna(r.rel_improvement)
                         else round(r.rel_improvement, 4),
                         "p_ttest_bh": None if pd.isna(r.p_ttest_bh) else float(r.p_ttest_bh),
                         "n_users": int(r.n_users)})
    result = {
        "wall_seconds_this_invocation": round(wall, 1),
        "note": args.note,
        "stage_seconds_recorded": stages,
        "stage_seconds_total": round(sum(stages.values()), 1),
        "protocol": run["protocol"], "protocol_label": run["protocol_label"],
        "baseline": run["baseline"], "n_users_evaluated": run["n_users_evaluated"]["test"],
        "counts": {k: counts[k] for k in ("n_users", "n_items", "n_train", "n_valid", "n_test",
                                          "n_items_without_training", "n_cold_test_items")},
        "needs_interactions": run.get("needs_interactions", []),
        "table": rows,
    }
    save_results(args.name, result, load, out)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))


if __name__ == "__main__":
    main()
