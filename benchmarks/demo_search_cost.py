"""What the demo's hyperparameter search costs, and what it buys, on the demo's catalog.

Builds the demo's synthetic catalog (configs/demo.yaml's dataset; images shrunk to 32 px,
the collaborative models never read them) and, for every collaborative strategy of the
demo config that searches (a list in its `params`), fits it twice through the represent
stage's own code (`fit_all`):

  untuned   the strategy with every searched param left at the kind's default, or, with
            --untuned-config, the same-named strategy of that config (for example the demo
            config before its search: `git show REV:configs/demo.yaml > old.yaml`)
  searched  the demo's search (represent.search of the config), every trial on train,
            scored on validation

and reports each one's fit seconds (wall and this process's CPU), validation score and test
Recall@10, and the seconds the search adds. Writes benchmarks/results/demo_search_cost.json (with date, machine, load
and the command).

    python benchmarks/demo_search_cost.py [--config configs/demo.yaml] [--n-items N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from lvlmrec.config import RepresentConfig, load_config
from lvlmrec.data.schema import Dataset
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.represent.fit import fit_all, load_model
from lvlmrec.represent.registry import kind_class
from lvlmrec.represent.search import search_spec
from lvlmrec.workdir import Workdir

RESULTS = Path(__file__).resolve().parent / "results" / "demo_search_cost.json"
CF_KINDS = ("bpr", "lightgcn", "itemknn", "ease", "ials")


def test_recall(workdir: Workdir, ds: Dataset, name: str) -> float:
    history, target = ds.matrix(("train", "valid")), ds.matrix("test")
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    per_user = evaluate_model(load_model(workdir, name), users, history, target, ks=[10],
                              show_progress=False)
    return float(per_user["recall@10"].mean())


def timed_fit(cfg: RepresentConfig, workdir: Workdir, ds: Dataset,
              seed: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the wall time
    mostly measures the other processes; the CPU time is what the fit itself costs."""
    t0, c0 = time.perf_counter(), time.process_time()
    fit_all(cfg, seed, workdir, ds, "bench", Console(quiet=True), show_progress=False)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1]
                                                 / "configs" / "demo.yaml"))
    parser.add_argument("--n-items", type=int, default=None)
    parser.add_argument("--untuned-config", default=None,
                        help="take each strategy's untuned settings from this config")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    config = load_config(args.config)
    searched = [s for s in config.represent.strategies if s.kind in CF_KINDS
                and search_spec(s, kind_class(s)).space]
    n_items = args.n_items or config.dataset.n_items
    before = {s.name: s for s in load_config(args.untuned_config).represent.strategies} \
        if args.untuned_config else {}
    from _results import Load, save_results

    load = Load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Workdir(tmp)
        ds = generate_synthetic(workdir.dataset_dir, n_items=n_items,
                                n_users=config.dataset.n_users, seed=config.dataset.seed,
                                image_size=32, show_progress=False)
        ds.save(workdir)
        ds = Dataset.load(workdir, features=False)
        for strategy in searched:
            spec = search_spec(strategy, kind_class(strategy))
            old = before.get(strategy.name)
            untuned = strategy.model_copy(update={
                "name": f"{strategy.name}_untuned", "search": None,
                "params": old.params if old is not None else spec.fixed})
            t_untuned = timed_fit(RepresentConfig(strategies=[untuned]), workdir, ds,
                                  config.seed)
            t_search = timed_fit(RepresentConfig(strategies=[strategy],
                                                 search=config.represent.search),
                                 workdir, ds, config.seed)
            fit = json.loads((workdir.model_dir(strategy.name) / "fit.json").read_text())
            rows.append({
                "strategy": strategy.name, "kind": strategy.kind,
                "space": spec.space, "n_trials": fit["search"]["n_trials"],
                "untuned_params": untuned.params,
                "chosen": {k: fit["params"][k] for k in spec.space},
                "untuned_seconds": round(t_untuned[0], 2),
                "search_seconds": round(t_search[0], 2),
                "added_seconds": round(t_search[0] - t_untuned[0], 2),
                "untuned_cpu_seconds": round(t_untuned[1], 2),
                "search_cpu_seconds": round(t_search[1], 2),
                "added_cpu_seconds": round(t_search[1] - t_untuned[1], 2),
                "untuned_test_recall@10": round(test_recall(workdir, ds, untuned.name), 4),
                "searched_test_recall@10": round(test_recall(workdir, ds, strategy.name), 4),
                "searched_valid": {fit["search"]["metric"]: round(fit["search"]["value"], 4)},
            })
            print(json.dumps(rows[-1]))
    total = round(sum(r["added_seconds"] for r in rows), 2)
    total_cpu = round(sum(r["added_cpu_seconds"] for r in rows), 2)
    save_results("demo_search_cost", {
        "untuned": args.untuned_config or "kind defaults for the searched params",
        "n_items": n_items, "n_users": config.dataset.n_users,
        "search": config.represent.search.model_dump(),
        "strategies": rows, "added_seconds_total": total,
        "added_cpu_seconds_total": total_cpu,
    }, load, Path(args.out))
    print(f"added_seconds_total={total} added_cpu_seconds_total={total_cpu}")


if __name__ == "__main__":
    main()
