"""The report's figures, drawn from our own numbers (significance.csv, slices.csv).

The study's four figures (main performance, improvement over the baseline, fusion
strategies, ablation) plus slice plots. Every figure carries the protocol label, and
representations are grouped by what the run's config says they are (`kind`, `text`),
never by their names.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors
SIGNIFICANT = 0.05


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _rep_colours(n: int) -> list:
    """One distinct colour per representation (tab10, tab20 beyond 10, then cycling)."""
    palette = COLOURS if n <= 10 else plt.get_cmap("tab20").colors
    return [palette[i % len(palette)] for i in range(n)]


def _subplots(*args, **kwargs):
    return plt.subplots(*args, layout="constrained", **kwargs)


def _footer(fig, protocol_label: str) -> None:
    """The protocol, under everything else (the figures use constrained layout)."""
    fig.supxlabel(protocol_label, fontsize=7.5, color="#555555")


def _errors(frame: pd.DataFrame) -> np.ndarray:
    """(2, n) asymmetric error bar lengths from mean/ci_low/ci_high (0 where no CI)."""
    low = (frame["mean"] - frame["ci_low"]).fillna(0).clip(lower=0)
    high = (frame["ci_high"] - frame["mean"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def main_performance(sig: pd.DataFrame, order: list[str], metrics: list[str], baseline: str,
                     protocol_label: str):
    """Mean of each main metric per representation, with bootstrap 95% CIs."""
    fig, ax = _subplots(figsize=(max(6.5, 0.75 * len(order) * max(1, len(metrics) / 2) + 2),
                                    4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(order))
    for j, metric in enumerate(metrics):
        rows = sig[sig["metric"] == metric].set_index("representation").loc[order]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, rows["mean"], width,
               yerr=_errors(rows), capsize=2, label=metric, color=COLOURS[j % 10],
               error_kw={"elinewidth": 0.8})
    ax.set_xticks(x)
    ax.set_xticklabels([f"{n} (baseline)" if n == baseline else n for n in order],
                       rotation=35, ha="right")
    ax.set_ylabel("test metric, mean over users")
    ax.set_title("Main performance (error bars: bootstrap 95% CI)")
    ax.legend(fontsize=8, ncols=min(4, len(metrics)))
    ax.grid(axis="y", alpha=0.3)
    _footer(fig, protocol_label)
    return fig


def improvement(sig: pd.DataFrame, order: list[str], metrics: list[str], baseline: str,
                protocol_label: str):
    """Relative improvement over the baseline with CIs; solid bars: BH-adjusted p < 0.05."""
    others = [n for n in order if n != baseline]
    fig, axes = _subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.5,
                                                       0.38 * len(others) + 1.6),
                             sharey=True, squeeze=False)
    y = np.arange(len(others))
    for j, (ax, metric) in enumerate(zip(axes[0], metrics)):
        rows = sig[sig["metric"] == metric].set_index("representation").loc[others]
        rel = rows["rel_improvement"].to_numpy() * 100
        err = np.vstack([(rows["rel_improvement"] - rows["rel_ci_low"]).fillna(0).clip(lower=0),
                         (rows["rel_ci_high"] - rows["rel_improvement"]).fillna(0)
                         .clip(lower=0)]) * 100
        significant = (rows["p_ttest_bh"] < SIGNIFICANT).to_numpy()
        colours = [COLOURS[2] if s and r > 0 else COLOURS[3] if s else "#bbbbbb"
                   for s, r in zip(significant, rel)]
        ax.barh(y, np.nan_to_num(rel), xerr=err, color=colours, capsize=2,
                error_kw={"elinewidth": 0.8})
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(f"% vs {baseline}")
        ax.grid(axis="x", alpha=0.3)
        if j == 0:
            ax.set_yticks(y)
            ax.set_yticklabels(others)
    axes[0][0].invert_yaxis()
    fig.suptitle("Improvement over the baseline (95% CI; grey: not significant, BH-adjusted "
                 "paired t-test)", fontsize=10)
    _footer(fig, protocol_label)
    return fig


def by_kind(sig: pd.DataFrame, strategies: list[dict], metric: str, baseline: str,
            protocol_label: str):
    """Every representation grouped by its strategy kind; colour = text source."""
    rows = sig[sig["metric"] == metric].set_index("representation")
    kinds = list(dict.fromkeys(s["kind"] for s in strategies))
    sources = list(dict.fromkeys(s.get("text") or "none" for s in strategies))
    colour = {src: COLOURS[i % 10] for i, src in enumerate(sources)}
    fig, ax = _subplots(figsize=(max(6.5, 0.6 * len(strategies) + 1.2 * len(kinds)), 4.2))
    x, ticks, labels, centres = 0.0, [], [], []
    for kind in kinds:
        members = [s for s in strategies if s["kind"] == kind]
        members.sort(key=lambda s: -rows.loc[s["name"], "mean"])
        start = x
        for s in members:
            r = rows.loc[[s["name"]]]
            ax.bar(x, r["mean"], 0.8, yerr=_errors(r), capsize=2,
                   color=colour[s.get("text") or "none"],
                   hatch="//" if s["name"] == baseline else None, edgecolor="white",
                   error_kw={"elinewidth": 0.8})
            ticks.append(x)
            labels.append(s["name"])
            x += 1
        centres.append(((start + x - 1) / 2, kind))
        x += 0.8
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    top = ax.get_ylim()[1]
    for centre, kind in centres:
        ax.text(centre, top * 1.01, kind, ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    ax.set_ylim(0, top * 1.1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in sources]
    ax.legend(handles, [f"text: {s}" for s in sources], fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title("Strategies compared, grouped by kind (hatched: baseline)", pad=18)
    ax.grid(axis="y", alpha=0.3)
    _footer(fig, protocol_label)
    return fig


def ablation(sig: pd.DataFrame, text_only: list[dict], prompt_groups: dict[str, list[str]],
             metric: str, protocol_label: str):
    """(a) text-only strategies by text source; (b) with/without the title in the prompt
    (drawn only when `prompt_groups` has both)."""
    rows = sig[sig["metric"] == metric].set_index("representation")
    panels = 2 if len(prompt_groups) >= 2 else 1
    fig, axes = _subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    sources = list(dict.fromkeys(s["text"] for s in text_only))
    for i, src in enumerate(sources):
        members = [s["name"] for s in text_only if s["text"] == src]
        width = 0.8 / len(members)
        for j, name in enumerate(members):
            r = rows.loc[[name]]
            ax.bar(i + (j - (len(members) - 1) / 2) * width, r["mean"], width * 0.95,
                   yerr=_errors(r), capsize=3, color=COLOURS[i % 10],
                   error_kw={"elinewidth": 0.8})
            if len(members) > 1:
                ax.text(i + (j - (len(members) - 1) / 2) * width, 0, name, rotation=90,
                        ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(range(len(sources)))
    ax.set_xticklabels(sources)
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title("Text source (text-only strategies)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if panels == 2:
        ax = axes[0][1]
        for i, (group, names) in enumerate(prompt_groups.items()):
            width = 0.8 / len(names)
            for j, name in enumerate(names):
                r = rows.loc[[name]]
                ax.bar(i + (j - (len(names) - 1) / 2) * width, r["mean"], width * 0.95,
                       yerr=_errors(r), capsize=3, color=COLOURS[(i + 4) % 10],
                       error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(prompt_groups)))
        ax.set_xticklabels(list(prompt_groups))
        ax.set_title("Title in the describer's prompt", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Ablation", fontsize=11)
    _footer(fig, protocol_label)
    return fig


def history_slices(slices: pd.DataFrame, order: list[str], metric: str, protocol_label: str):
    rows = slices[(slices["slice"] == "history_length") & (slices["metric"] == metric)]
    bins = rows.drop_duplicates("bin_order").sort_values("bin_order")
    fig, ax = _subplots(figsize=(7.5, 4))
    x = {b: i for i, b in enumerate(bins["bin_order"])}
    for i, (name, colour) in enumerate(zip(order, _rep_colours(len(order)))):
        r = rows[rows["representation"] == name].sort_values("bin_order")
        ax.plot([x[b] for b in r["bin_order"]], r["value"], marker="o", lw=1.2,
                color=colour, label=name, ls="-" if i < 20 else "--")
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels([f"{b}\n({n} users)" for b, n in zip(bins["bin"], bins["n_users"])],
                       fontsize=8)
    ax.set_xlabel("history length (items the user was ranked from)")
    ax.set_ylabel(f"{metric}, mean over users in the bin")
    ax.set_title("By user history length")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(alpha=0.3)
    _footer(fig, protocol_label)
    return fig


def item_slices(slices: pd.DataFrame, order: list[str], metric: str, protocol_label: str):
    """Recall on head/mid/tail targets and on cold vs warm targets."""
    panels = [(name, slices[(slices["slice"] == name) & (slices["metric"] == metric)])
              for name in ("popularity", "cold_items")]
    panels = [(n, r) for n, r in panels if len(r)]
    fig, axes = _subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4),
                             squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels):
        bins = rows.drop_duplicates("bin_order").sort_values("bin_order")
        width = 0.8 / len(order)
        for i, (rep, colour) in enumerate(zip(order, _rep_colours(len(order)))):
            r = rows[rows["representation"] == rep].set_index("bin").reindex(bins["bin"])
            ax.bar(np.arange(len(bins)) + (i - (len(order) - 1) / 2) * width,
                   r["value"], width, color=colour, label=rep)  # n/a stays empty, never 0
        ax.set_xticks(range(len(bins)))
        ax.set_xticklabels([f"{b}\n{rng}\n({n} users)" for b, rng, n in
                            zip(bins["bin"], bins["bin_range"], bins["n_users"])], fontsize=7)
        ax.set_ylabel(f"{metric} on these targets only")
        ax.set_title("Target popularity (training interactions)" if name == "popularity"
                     else "Cold targets (never in training) vs warm", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    _footer(fig, protocol_label)
    return fig
