"""Report sections on how fair the comparison is: searched params, seed spread, ties.

- Hyperparameter search: for each representation that searched, the params chosen on
  validation, the validation score and the number of trials (results/search.csv).
- Seeds: with several run seeds, mean ± standard deviation over seeds beside the
  bootstrap CI (the CI is over users; the std is over refits with other seeds).
- Ties at K: how many test users had their K-th and (K+1)-th scores tied, so that the
  seeded tie-break decided part of the top K; a representation above `TIE_FLAG` is
  flagged.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

from lvlmrec.workdir import Workdir

#: share of users with a tie at the cut-off above which a representation is flagged
TIE_FLAG = 0.10


@dataclasses.dataclass
class Section:
    title: str
    paragraphs: list[str]
    table: pd.DataFrame | None = None


def seed_column(table: pd.DataFrame, metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """With several seeds, `mean ± std` over seeds of `metric` beside its CI column."""
    std_col = f"{metric}_std"
    if std_col not in metrics or "n_seeds" not in metrics or metric not in table:
        return table
    rows = metrics.set_index("representation")
    cells = []
    for shown in table["representation"]:
        name = shown.removesuffix(" (baseline)")
        r = rows.loc[name]
        cells.append(f"{r[metric]:.4f} ± {r[std_col]:.4f} ({int(r['n_seeds'])} seeds)"
                     if int(r["n_seeds"]) > 1 else "fitted once (deterministic)")
    out = table.copy()
    out.insert(out.columns.get_loc(metric) + 1, f"{metric} mean ± std over seeds", cells)
    return out


def search_section(workdir: Workdir, run: dict) -> Section | None:
    path = workdir.results_dir / "search.csv"
    if not path.is_file():
        return None
    trials = pd.read_csv(path)
    if trials.empty:
        return None
    searched = {r["name"]: r.get("search") or {} for r in run["representations"]}
    rows = []
    for name, group in trials.groupby("representation", sort=False):
        best = group[group["best"]].iloc[0]
        params = json.loads(best["params"])
        keys = searched.get(name, {}).get("searched") or list(params)
        rows.append({"representation": name,
                     "chosen params": ", ".join(f"{k}={params[k]}" for k in keys),
                     f"validation {best['metric']}": f"{best['value']:.4f}",
                     "trials": len(group),
                     "failed": int((group["error"].fillna("") != "").sum())})
    return Section("Hyperparameter search", [
        "Each searched representation fitted one model per trial on the training split "
        "and scored it on the validation split (history = train); the best trial's model "
        "is the one evaluated above, as fitted (no refit). The test split was not read. "
        "Every trial is in `results/search.csv`."], pd.DataFrame(rows))


def ties_section(workdir: Workdir, run: dict, metric: str) -> Section | None:
    path = workdir.results_dir / "ties.csv"
    if not path.is_file():
        return None
    k = int(metric.split("@")[1])
    ties = pd.read_csv(path)
    ties = ties[(ties["split"] == "test") & (ties["k"] == k)]
    if ties.empty:
        return None
    tie = run.get("tie_break", {})
    rows, flagged = [], []
    for _, r in ties.iterrows():
        flag = r["share_tied"] > TIE_FLAG
        if flag:
            flagged.append(r["representation"])
        rows.append({"representation": r["representation"],
                     f"users tied at K={k}": f"{int(r['n_tied']):,} of {int(r['n_users']):,}",
                     "share": f"{r['share_tied'] * 100:.1f}%",
                     "flag": f"more than {TIE_FLAG:.0%}" if flag else ""})
    paragraphs = [
        f"A user is tied at K={k} when the K-th and (K+1)-th best scores are equal, so the "
        "tie-break chose which items made the top K. Ties are broken by a seeded "
        f"permutation of item ids (seed {tie.get('seed', '?')}, in `results/run.json`), "
        "never by the lower id. Counts for every K are in `results/ties.csv`."]
    if flagged:
        paragraphs.append(f"**Flagged**: {', '.join(flagged)}: scores tied at the cut-off "
                          f"for more than {TIE_FLAG:.0%} of users, so {metric} depends "
                          "partly on the tie-break.")
    return Section(f"Ties at the cut-off (K={k})", paragraphs, pd.DataFrame(rows))


def fairness_sections(workdir: Workdir, run: dict, metric: str) -> list[Section]:
    """The sections above that apply to this run, in report order."""
    sections = [search_section(workdir, run), ties_section(workdir, run, metric)]
    seeds = run.get("seeds") or []
    if len(seeds) > 1:
        sections.append(Section("Seeds", [
            f"Every seeded representation was fitted with each of the seeds {seeds} (the "
            "chosen params for a searched one); deterministic ones once. Per-user metrics "
            "are averaged over seeds before the bootstrap and the paired tests; the "
            "results table shows the mean ± standard deviation over seeds beside the CI. "
            "Per-seed means are in `results/seeds.csv`."]))
    return [s for s in sections if s is not None]
