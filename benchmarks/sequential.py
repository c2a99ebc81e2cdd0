"""Sequential models next to set-based ones on MovieLens-100k, leave-one-out by time.

Data: ../shared/data/movielens-100k-posters (every rating is an interaction, 5-core,
`split: loo`: each user's last rating by time is the test item, the one before it the
validation item), read through lvlmrec's own CSV prepare path. Content: the bundled
all-MiniLM-L6-v2 embedding of "title. overview" (a frozen text source).

Rows: popularity, ItemKNN (shrink tuned on validation), BPR-MF (reg tuned on validation),
the text content model, SASRec with `input` id / content / id+content, and GRU4Rec (id).
Every model is scored by lvlmrec's evaluator (full ranking, history masked); sequential
models get the history's time order, the others the same history as a set. Trained models
stop early on validation Recall@20 and keep their best epoch. Test Recall/NDCG with one
standard error over users.

RecBole's SASRec (row `recbole_sasrec`, run whenever `recbole` is installed: the `bench`
extra; skipped with a note otherwise) is trained and early-stopped by RecBole's own Trainer
on exactly this split (benchmarks/_recbole.py) and then ranked by the same evaluator. When it
and `sasrec_id` ran together, the JSON's `recbole_comparison` holds the paired per-user
difference for each metric and whether our SASRec is at least RecBole's minus one standard
error (the issue's goal); when only `recbole_sasrec` ran, the comparison uses the JSON's
`sasrec_id` row (means and standard errors, `paired: false`). A RecBole fit records its
epochs (from its own log) in the JSON. One RecBole epoch is every prefix of every user: a
run too long for the time at hand can be stopped by hand, and the checkpoint it saved
(RecBole's `saved/*.pth` in the run's temporary folder; copy it while the run lives) ranked
with `--recbole-checkpoint`, the run's output given with `--recbole-log`: its epochs go into
the JSON, and `stopped_by_hand` says whether it had ended on its own.

    python benchmarks/sequential.py                 # writes benchmarks/results/sequential.json
    python benchmarks/sequential.py --rows sasrec_id,recbole_sasrec --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Load, save_results

from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.represent.base import TrainData
from lvlmrec.represent.baselines import ItemKNN, Popularity
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.represent.sequential import GRU4Rec, SASRec

import _recbole  # noqa: E402
from _data import MOVIELENS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KS = (10, 20)


def load(folder: Path):
    from lvlmrec.config import CsvSource
    from lvlmrec.data.csvdata import load_csv

    from lvlmrec.data.cold import drop_items_without_interactions

    source = CsvSource(items=folder / "items.csv", interactions=folder / "ratings.csv",
                       item_col="movie_id", text_col="overview", rating_col="rating",
                       time_col="unix_timestamp", kcore=5, split="loo", seed=0)
    # the catalog is the 5-core's items, as in every row's first run (the loader now keeps
    # the items the k-core removed as cold items; nothing here ranks cold items)
    return drop_items_without_interactions(load_csv(source, show_progress=False))[0]


def text_embedding(ds, cache: Path | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2 of "title. overview" (read from / written to `cache` when given)."""
    from lvlmrec.encode.text import TextEncoder

    if cache is not None and cache.is_file():
        return np.load(cache)
    texts = (ds.items["title"].astype(str) + ". " + ds.items["text"].astype(str)).tolist()
    emb = TextEncoder(device="cpu").encode(texts, show_progress_bar=False)
    if cache is not None:
        np.save(cache, emb)
    return emb


def rows(threads: int) -> dict[str, list]:
    """row -> candidate models (the best on validation Recall@20 is kept)."""
    seq = {"epochs": 200, "patience": 5, "num_threads": threads, "max_len": 50,
           "hidden": 64, "seed": 0}
    return {  # cheap rows and SASRec first: the JSON is written after every row
        "popularity": [Popularity()],
        "text_content": [ContentRecommender("text")],
        "sasrec_id": [SASRec(input="id", **seq)],
        "itemknn": [ItemKNN(shrink=s) for s in (10, 100)],
        # GRU4Rec stalls near popularity with SASRec's settings (best epoch 1 of 6 at
        # lr 1e-3, patience 5): it needs a higher rate and more patience
        "gru4rec_id": [GRU4Rec(input="id", n_layers=1, **{**seq, "learning_rate": 3e-3,
                                                          "dropout": 0.1, "patience": 8})],
        "sasrec_id+content": [SASRec(input="id+content", text="text", **seq)],
        "sasrec_content": [SASRec(input="content", text="text", **seq)],
        "bpr": [BPRMF(reg_weight=r, learning_rate=0.01, item_bias=True, epochs=100,
                      patience=5, num_threads=threads) for r in (0.01, 0.1)],
        # RecBole's SASRec with our shape (max_len, hidden, layers, heads, dropout, CE loss,
        # lr); its own defaults otherwise (inner_size 256, post-norm) except the batch of 256
        # sequences (RecBole's default 2048, the SASRec paper's 128), a patience of 3 of its
        # epochs and at most 20 of them: one RecBole epoch is every prefix of every user
        # (~96k sequences of 50), 1-2 minutes on 2 CPU cores, and at 256 it takes ~375 Adam
        # steps per epoch (ours: ~19 per epoch of ~2.4k windows)
        "recbole_sasrec": [_recbole.RecBoleSASRec(max_len=50, hidden=64, n_layers=2,
                                                  n_heads=2, dropout=0.2, learning_rate=1e-3,
                                                  batch_size=256, epochs=20, patience=3,
                                                  seed=0)],
    }


def mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def earlier_rows(wanted: set[str]) -> list[dict]:
    """With --rows, the other rows of the JSON already written (each says when it ran)."""
    from _results import RESULTS_DIR

    path = RESULTS_DIR / "sequential.json"
    if not wanted or not path.is_file():
        return []
    record = json.loads(path.read_text())
    return [{**r, "ran": r.get("ran", record["date"]), "load": r.get("load", record["load"])}
            for r in record["results"]["rows"]
            if r["row"] not in wanted]


def compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict:
    """Per metric: both means with their standard errors, the paired per-user difference
    (ours - RecBole's) with its standard error, and the goal: ours >= RecBole's - one SE."""
    out = {}
    for key in ours:
        (m_o, se_o), (m_r, se_r) = mean_se(ours[key]), mean_se(theirs[key])
        d, se_d = mean_se(ours[key] - theirs[key])
        out[key] = {"ours": round(m_o, 4), "ours_se": round(se_o, 4),
                    "recbole": round(m_r, 4), "recbole_se": round(se_r, 4),
                    "difference": round(d, 4), "difference_se": round(se_d, 4),
                    "abs_difference": round(abs(d), 4), "paired": True,
                    "at_least_recbole_minus_one_se": bool(m_o >= m_r - se_r)}
    return out


def compare_means(ours: dict, theirs: dict) -> dict:
    """`compare` from two rows' means and standard errors (rows of different runs: no
    per-user pairing, so no paired difference)."""
    out = {}
    for k in KS:
        for m in ("recall", "ndcg"):
            key = f"{m}@{k}"
            out[key] = {"ours": ours[key], "ours_se": ours[f"{key}_se"],
                        "recbole": theirs[key], "recbole_se": theirs[f"{key}_se"],
                        "difference": round(ours[key] - theirs[key], 4),
                        "abs_difference": round(abs(ours[key] - theirs[key]), 4),
                        "difference_se": None, "paired": False,
                        "at_least_recbole_minus_one_se": bool(
                            ours[key] >= theirs[key] - theirs[f"{key}_se"])}
    return out


def previous_comparison(wanted: set[str]) -> dict | None:
    """With --rows leaving out both SASRec rows, the comparison already in the JSON."""
    from _results import RESULTS_DIR

    path = RESULTS_DIR / "sequential.json"
    if not wanted or wanted & {"sasrec_id", "recbole_sasrec"} or not path.is_file():
        return None
    return json.loads(path.read_text())["results"].get("recbole_comparison")


def save(ds, users, threads: int, out: list[dict], load_info: Load,
         comparison: dict | None) -> None:
    results = {
        "dataset": "MovieLens-100k (all ratings, 5-core, loo by time)",
        "n_users": ds.n_users, "n_items": ds.n_items, "n_test_users": len(users),
        "threads": threads,
        "recbole": _recbole.version() or "not installed (pip install recbole: the bench extra)",
        "rows": out}
    if comparison:
        results["recbole_comparison"] = comparison
    save_results("sequential", results, load_info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--movielens", type=Path, default=MOVIELENS)
    parser.add_argument("--rows", default="", help="comma-separated subset of rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recbole-checkpoint", type=Path, default=None,
                        help="score this RecBole checkpoint instead of training (saved by "
                        "an earlier run of recbole_sasrec; give its log too)")
    parser.add_argument("--recbole-log", type=Path, default=None,
                        help="that run's output: its epochs go into the JSON")
    parser.add_argument("--embedding-cache", type=Path, default=None,
                        help="a .npy to keep the text embedding in between runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_info = Load()
    ds = load(args.movielens)
    emb = text_embedding(ds, args.embedding_cache)
    data = TrainData(ds.matrix("train"), ds.matrix("valid"), lambda source: emb,
                     show_progress=False, train_order=ds.order_matrix("train"))
    history, target = ds.matrix(("train", "valid")), ds.matrix("test")
    order = ds.order_matrix(("train", "valid"))
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    print(f"MovieLens-100k loo: {ds.n_users} users, {ds.n_items} items, "
          f"{len(ds.interactions)} interactions, {len(users)} test users")
    wanted = set(filter(None, args.rows.split(",")))
    out = earlier_rows(wanted)
    comparison = previous_comparison(wanted)
    per_user_of: dict[str, dict[str, np.ndarray]] = {}
    for name, candidates in rows(args.threads).items():
        if wanted and name not in wanted:
            continue
        if name == "recbole_sasrec" and _recbole.version() is None:
            print("recbole_sasrec: skipped, RecBole is not installed (pip install recbole, "
                  "the bench extra)")
            continue
        best = None
        t0 = time.perf_counter()
        for model in candidates:
            if isinstance(model, _recbole.RecBoleSASRec):
                model.fit(ds, checkpoint=args.recbole_checkpoint)
            else:
                model.fit(data)
            valid = evaluate_model(model, np.flatnonzero(np.diff(data.valid.indptr) > 0),
                                   data.train, data.valid, ks=[20], show_progress=False,
                                   order=data.train_order)["recall@20"].mean()
            if best is None or valid > best[1]:
                best = (model, float(valid))
        seconds = time.perf_counter() - t0
        model, valid = best
        per_user = evaluate_model(model, users, history, target, ks=KS, show_progress=False,
                                  order=order)
        row = {"row": name, "model": repr(model), "valid_recall@20": round(valid, 4),
               "fit_seconds_all_candidates": round(seconds, 1),
               "best_epoch": getattr(model, "best_epoch_", None)}
        if isinstance(model, _recbole.RecBoleSASRec):  # RecBole's own test figures too
            row["recbole_evaluator_test"] = {k: round(v, 4)
                                             for k, v in model.recbole_test_.items()}
            # its epochs: this fit's own log, or the given log of the run that saved the
            # checkpoint (then this process only ranked it: no fit time of its own)
            epochs = model.log_ if args.recbole_log is None else _recbole.read_log(
                args.recbole_log)
            row.update(epochs)
            if args.recbole_checkpoint is not None:
                row["fit_seconds_all_candidates"] = None
            row["stopped_by_hand"] = not _recbole.ran_to_the_end(
                epochs["epochs_run"], row["best_epoch"], model.epochs, model.patience)
        for k in KS:
            for metric in ("recall", "ndcg"):
                m, se = mean_se(per_user[f"{metric}@{k}"].to_numpy())
                row[f"{metric}@{k}"], row[f"{metric}@{k}_se"] = round(m, 4), round(se, 4)
        per_user_of[name] = {f"{m}@{k}": per_user[f"{m}@{k}"].to_numpy()
                             for k in KS for m in ("recall", "ndcg")}
        if "recbole_sasrec" in per_user_of and "sasrec_id" in per_user_of:
            comparison = compare(per_user_of["sasrec_id"], per_user_of["recbole_sasrec"])
        elif name == "recbole_sasrec":  # ours from the JSON: means and SEs, not paired
            ours = next((r for r in out if r["row"] == "sasrec_id"), None)
            comparison = None if ours is None else compare_means(ours, row)
        out.append(row)
        print(f"{name:18s} R@10 {row['recall@10']:.4f}±{row['recall@10_se']:.4f}  "
              f"R@20 {row['recall@20']:.4f}±{row['recall@20_se']:.4f}  "
              f"N@10 {row['ndcg@10']:.4f}  fit {seconds:.0f}s", flush=True)
        save(ds, users, args.threads, out, load_info, comparison)  # partial runs count
    print()
    print("| row | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | fit s |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['row']} | {r['recall@10']:.4f} ± {r['recall@10_se']:.4f} | "
              f"{r['recall@20']:.4f} ± {r['recall@20_se']:.4f} | {r['ndcg@10']:.4f} | "
              f"{r['ndcg@20']:.4f} | {r['fit_seconds_all_candidates'] or float('nan'):.0f} |")
    if comparison:
        paired = "paired over users" if next(iter(comparison.values()))["paired"] else \
            "from the two rows' means, not paired"
        print(f"\nsasrec_id vs recbole_sasrec ({paired}; goal: ours >= RecBole - 1 SE)")
        for key, c in comparison.items():
            print(f"  {key}: ours {c['ours']:.4f}±{c['ours_se']:.4f}  RecBole "
                  f"{c['recbole']:.4f}±{c['recbole_se']:.4f}  difference "
                  f"{c['difference']:+.4f}±{c['difference_se'] or float('nan'):.4f}  "
                  f"goal {'met' if c['at_least_recbole_minus_one_se'] else 'NOT met'}")


if __name__ == "__main__":
    main()
