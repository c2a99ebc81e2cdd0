"""Trained fusions on a finished run: each fusion kind with each training objective.

Prints, per (fusion, objective, precision): fit seconds (wall and CPU), epochs run, best
epoch, validation Recall@20 (what selects) and test Recall@10/20 (reported only).

    python benchmarks/fusion_objectives.py --workdir runs/demo [--text description]
        [--vision efficientnet] [--objectives user,cooccur] [--precisions float32]

Writes benchmarks/results/fusion_objectives.json, or fusion_precision.json when
`--precisions` names more than float32 (the opt-in bfloat16 training next to float32).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from lvlmrec.data.schema import Dataset
from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.represent.fit import train_data
from lvlmrec.represent.fusion import OBJECTIVES, AttentionFusion, CrossModalFusion, GatingFusion
from lvlmrec.workdir import Workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--text", default="description")
    parser.add_argument("--vision", default="efficientnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--precisions", default="float32")
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    workdir = Workdir(args.workdir)
    ds = Dataset.load(workdir, features=False)
    data = train_data(ds, workdir, seed=args.seed, show_progress=False)
    history, target = ds.matrix(("train", "valid")), ds.matrix(("test",))
    print(f"{ds.n_users} users, {ds.n_items} items, {data.train.nnz} training interactions; "
          f"text={args.text} vision={args.vision}")
    precisions = args.precisions.split(",")
    print(f"{'fusion':<18}{'objective':<10}{'precision':<10}{'wall_s':>8}{'cpu_s':>8}"
          f"{'epochs':>8}{'best':>6}{'valid@20':>10}{'test@10':>9}{'test@20':>9}")
    rows = []
    for cls in (AttentionFusion, GatingFusion, CrossModalFusion):
        for objective, precision in itertools.product(args.objectives.split(","), precisions):
            model = cls(args.text, args.vision, objective=objective, precision=precision,
                        seed=args.seed)
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(data)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            test = evaluate_model(model, np.arange(ds.n_users), history, target, ks=[10, 20],
                                  show_progress=False)
            print(f"{cls.__name__:<18}{objective:<10}{precision:<10}{wall:>8.1f}{cpu:>8.1f}"
                  f"{len(model.valid_recall_):>8}{model.best_epoch_:>6}"
                  f"{max(model.valid_recall_):>10.4f}{test['recall@10'].mean():>9.4f}"
                  f"{test['recall@20'].mean():>9.4f}", flush=True)
            rows.append({"fusion": cls.__name__, "objective": objective,
                         "precision": precision, "wall_s": round(wall, 1),
                         "cpu_s": round(cpu, 1), "epochs": len(model.valid_recall_),
                         "best_epoch": model.best_epoch_,
                         "valid_recall@20": round(max(model.valid_recall_), 4),
                         "test_recall@10": round(float(test["recall@10"].mean()), 4),
                         "test_recall@20": round(float(test["recall@20"].mean()), 4)})
    name = "fusion_objectives" if precisions == ["float32"] else "fusion_precision"
    save_results(name, {"n_users": ds.n_users, "n_items": ds.n_items, "rows": rows}, load)


if __name__ == "__main__":
    main()
