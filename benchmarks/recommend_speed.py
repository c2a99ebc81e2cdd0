"""Batch recommendations at the study's shape: `lvlmrec recommend`'s code end to end.

Builds the Amazon Clothing shape (23,318 users, 38,493 items, ~280k interactions; the same
synthetic data as eval_speed.py) and a 384-d content representation (mean-profile cosine),
then writes the top-100 of every user, history (train + valid + test) excluded, to a
Parquet file with original-id strings, exactly as `lvlmrec recommend --users all --k 100`
does after loading the run (`serve.batch.topk_blocks` + `write_recommendations`).

    python benchmarks/recommend_speed.py [--k 100] [--block-size 1024] [--threads N]

Writes benchmarks/results/recommend_speed.json (date, machine, load, command, seconds,
rows, peak memory) and prints it. Target: under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _results import Load, save_results
from eval_speed import DIM, N_ITEMS, N_USERS, PeakRss, matrix, study_shaped_data

from lvlmrec.represent.base import TrainData
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.serve.batch import topk_blocks, write_recommendations

RESULTS = Path(__file__).resolve().parent / "results" / "recommend_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch/BLAS threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    frame = study_shaped_data()
    history = matrix(frame, ("train", "valid", "test"))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    model = ContentRecommender(source="x").fit(TrainData(
        train=matrix(frame, ("train",)), valid=matrix(frame, ("valid",)),
        embedding=lambda _: vectors))
    user_ids = np.asarray([f"A{u:013d}" for u in range(N_USERS)], dtype=object)
    item_ids = np.asarray([f"B{i:09d}" for i in range(N_ITEMS)], dtype=object)
    load = Load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        cpu0, t0 = time.process_time(), time.perf_counter()
        with PeakRss() as peak:
            blocks = topk_blocks(model, history, np.arange(N_USERS), args.k, args.block_size,
                                 show_progress=False)
            rows = write_recommendations(out, blocks, user_ids, item_ids)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        size = out.stat().st_size
        written = pq.read_metadata(out).num_rows
    assert written == rows == N_USERS * args.k, (written, rows)
    results = {
        "shape": {"users": N_USERS, "items": N_ITEMS, "dim": DIM, "k": args.k,
                  "history_interactions": int(history.nnz)},
        "block_size": args.block_size,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "rows": rows,
        "parquet_mib": round(size / 2**20, 1),
        "peak_mib_above_inputs": round(peak.mib, 1),
        "target_seconds": 60,
    }
    print(json.dumps(results, indent=2))
    save_results("recommend_speed", results, load, args.out)


if __name__ == "__main__":
    main()
