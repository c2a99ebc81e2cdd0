"""The description audit of the demo's two offline describers, on a synthetic catalog.

Runs prepare -> describe -> encode -> represent -> evaluate with the demo's describers
(`attributes` with ImageNet labels, and without: `max_labels: 0`), a third without labels
and without the silhouette words (`outline: false`, what attributes-v2 said of the
outline), and one text-only strategy per describer, then writes the rows of results/describers.csv (coverage, speed,
length, variety, fidelity, Recall@10 with CIs) and the paired test to
benchmarks/results/describer_audit.json (or $OUT), with date, machine, load and command.

    python benchmarks/describer_audit.py --n-items 300 --n-users 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from record import run_record, write_result  # noqa: E402

from lvlmrec.config import parse_config  # noqa: E402
from lvlmrec.pipeline import run_pipeline  # noqa: E402
from lvlmrec.workdir import Workdir  # noqa: E402


def config(n_items: int, n_users: int) -> dict:
    return {
        "dataset": {"format": "synthetic", "n_items": n_items, "n_users": n_users,
                    "image_size": 128},
        "describe": {"backend": "attributes", "batch_size": 64, "describers": {
            "imagenet": {}, "colours": {"attributes": {"max_labels": 0}},
            "no_outline": {"attributes": {"max_labels": 0, "outline": False}}}},
        "encode": {"images": False},
        "represent": {"strategies": [
            {"name": "title_text", "kind": "text", "text": "title"},
            {"name": "lvlm_text", "kind": "text", "text": "description"},
            {"name": "lvlm_text_colours", "kind": "text", "text": "description:colours"},
            {"name": "lvlm_text_no_outline", "kind": "text",
             "text": "description:no_outline"}]},
        "evaluate": {"baseline": "title_text"},
        "report": {"n_case_studies": 0},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-items", type=int, default=300)
    p.add_argument("--n-users", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    out = args.json or (Path(os.environ["OUT"]) / "describer_audit.json"
                        if os.environ.get("OUT") else HERE / "results" / "describer_audit.json")
    load = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wd = Workdir(Path(tmp) / "run")
        cfg = parse_config(config(args.n_items, args.n_users))
        stages = run_pipeline(cfg, wd, only=["prepare", "describe", "encode", "represent",
                                             "evaluate"], show_progress=False)
        table = pd.read_csv(wd.results_dir / "describers.csv")
        pairs = pd.read_csv(wd.results_dir / "describer_pairs.csv")
    results = {
        "seconds": round(time.perf_counter() - t0, 1),
        "stages": stages,
        "describers": json.loads(table.to_json(orient="records")),
        "pairs": json.loads(pairs.to_json(orient="records")),
    }
    write_result(out, run_record(results, load))  # _results.py's format, like the others
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
