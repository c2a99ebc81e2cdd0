"""The report's "Cold items" section: how each representation does on items nobody had
interacted with in training, next to rare and warm ones.

Read from results/ only: the `train_interactions` slice (targets with 0, 1-4, 5+ training
interactions, Recall@K with bootstrap CIs and counts; evaluate/slices.py) and, under the
cold protocols, significance.csv (paired tests against the baseline on the cold targets,
which are then every target). Representations that cannot score unseen items show
"n/a — needs interactions", never a number.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from lvlmrec.evaluate.cold import COLD_PROTOCOLS, NA_NOTE
from lvlmrec.evaluate.stats import significance_mark
from lvlmrec.report import figures

SLICE = "train_interactions"
BIN_NAMES = {"0": "cold (0)", "1-4": "rare (1-4)", "5+": "warm (5+)"}


@dataclasses.dataclass
class ColdSection:
    intro: list[str]
    table: pd.DataFrame
    figure: bytes | None
    caption: str


def na_table_rows(table: pd.DataFrame, run: dict) -> pd.DataFrame:
    """The results table plus one row per representation left unranked by a cold
    protocol, every metric cell reading "n/a — needs interactions"."""
    names = run.get("needs_interactions") or []
    if not names:
        return table
    filler = {c: NA_NOTE for c in table.columns if c not in ("representation", "kind")}
    kinds = {s["name"]: s["kind"] for s in run["representations"]}
    rows = [{**filler, "representation": n, "kind": kinds.get(n, ""), "n_users": 0}
            for n in names]
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def cold_section(run: dict, slices: pd.DataFrame, significance: pd.DataFrame,
                 counts: dict, metric: str = "recall@10") -> ColdSection | None:
    """The section, or None when the run has no train_interactions slice."""
    recall = f"recall@{metric.split('@')[1]}"
    rows = slices[(slices["slice"] == SLICE) & (slices["metric"] == recall)] \
        if "slice" in slices else slices.iloc[:0]
    if rows.empty:
        return None
    names = [s["name"] for s in run["representations"]]
    bins = rows.drop_duplicates("bin_order").sort_values("bin_order")
    cold_protocol = run["protocol"] in COLD_PROTOCOLS
    unranked = set(run.get("needs_interactions") or [])
    table = []
    for name in names:
        row = {"representation": name + (" (baseline)" if name == run["baseline"] else "")}
        r = rows[rows["representation"] == name].set_index("bin")
        for b in bins["bin"]:
            label = f"{recall} {BIN_NAMES.get(b, b)}"
            if name in unranked or (b in r.index and _noted(r.loc[b, "note"])):
                row[label] = NA_NOTE
            elif b in r.index:
                v = r.loc[b]
                row[label] = f"{v['value']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
            else:
                row[label] = ""
        if cold_protocol:
            row[f"vs baseline ({recall}, cold)"] = _versus(significance, name, recall, run)
        table.append(row)
    n_pairs = ", ".join(f"{BIN_NAMES.get(b, b)}: {int(n):,} users, {int(t):,} targets"
                        for b, n, t in zip(bins["bin"], bins["n_users"], bins["n_targets"]))
    intro = [
        f"Catalog: {counts.get('n_items_without_interactions', 0):,} items without any "
        f"interaction, {counts.get('n_items_without_training', 0):,} without a training "
        f"interaction, {counts.get('n_cold_test_items', 0):,} cold test items "
        "(test targets nobody interacted with in train or valid).",
        f"{recall} on the test targets of each group only, mean [95% bootstrap CI over "
        f"users]; {n_pairs}.",
        ("Paired t-tests against the baseline (Benjamini-Hochberg; `*` p < 0.05, `**` "
         "p < 0.01, `***` p < 0.001) are on the cold targets, which are every target under "
         f"the {run['protocol']!r} protocol." if cold_protocol else
         "Paired tests against the baseline on cold targets come with the cold protocol "
         "(`evaluate.protocol: cold`, on a cold split)."),
        f"Representations that cannot score items unseen in training show `{NA_NOTE}`.",
    ]
    png = figures.to_png(warm_cold_figure(rows, names, unranked, recall,
                                          run["protocol_label"]))
    caption = (f"{recall} by the target's training interactions (cold = 0), per "
               "representation, with 95% CIs; n/a marks models that need interactions.")
    return ColdSection(intro, pd.DataFrame(table), png, caption)


def _versus(significance: pd.DataFrame, name: str, metric: str, run: dict) -> str:
    if name in (run.get("needs_interactions") or []):
        return NA_NOTE
    if name == run["baseline"]:
        return ""
    sig = significance[(significance["metric"] == metric)
                       & (significance["representation"] == name)]
    if sig.empty or pd.isna(sig["rel_improvement"].iloc[0]):
        return "n/a"
    r = sig.iloc[0]
    return (f"{r['rel_improvement'] * 100:+.1f}% [{r['rel_ci_low'] * 100:+.1f}, "
            f"{r['rel_ci_high'] * 100:+.1f}]{significance_mark(r['p_ttest_bh'])}")


def _noted(note) -> bool:
    return isinstance(note, str) and bool(note)


def warm_cold_figure(rows: pd.DataFrame, names: list[str], unranked: set[str], metric: str,
                     protocol_label: str):
    """Grouped bars: one group per representation, one bar per training-interaction bin;
    an n/a bin is written out, not drawn as zero."""
    bins = rows.drop_duplicates("bin_order").sort_values("bin_order")["bin"].tolist()
    fig_width = max(6.5, 0.7 * len(names) * max(1, len(bins)) / 1.5 + 2)
    fig, ax = figures._subplots(figsize=(min(figures.FIG_WIDTH, fig_width), 4.2))  # shown at 100%
    width = 0.8 / len(bins)
    x = np.arange(len(names))
    for j, (b, colour) in enumerate(zip(bins, figures.COLOURS)):
        r = rows[rows["bin"] == b].set_index("representation").reindex(names)
        pos = x + (j - (len(bins) - 1) / 2) * width
        value = r["value"].to_numpy(dtype=float)
        err = np.vstack([(r["value"] - r["ci_low"]).clip(lower=0).fillna(0),
                         (r["ci_high"] - r["value"]).clip(lower=0).fillna(0)])
        ok = ~np.isnan(value)
        ax.bar(pos[ok], value[ok], width, yerr=err[:, ok], capsize=2, color=colour,
               label=BIN_NAMES.get(b, b))
        na = np.array([n in unranked or _noted(note) for n, note in zip(names, r["note"])])
        for p in pos[~ok & na]:
            ax.text(p, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} on these targets only")
    ax.set_title("Cold vs warm targets (training interactions of the target item)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    figures._footer(fig, protocol_label)
    return fig


FIGURE_NOTE = "Figure `cold_items` (below) plots these values per representation."


def markdown(section: ColdSection) -> list[str]:
    table = section.table.map(lambda v: v.replace("*", "\\*") if isinstance(v, str) else v)
    return ["## Cold items", "", *[f"{s}  " for s in section.intro], "",
            table.to_markdown(index=False), "", FIGURE_NOTE, ""]


def html(section: ColdSection, inline) -> str:
    """`inline` renders the intro's markdown marks (report.build._inline_markdown)."""
    from html import escape

    return "\n".join(["<h2>Cold items</h2>",
                      *[f"<p>{inline(escape(s))}</p>" for s in section.intro],
                      section.table.to_html(index=False, classes="results", border=0),
                      f"<p>{inline(escape(FIGURE_NOTE))}</p>"])
