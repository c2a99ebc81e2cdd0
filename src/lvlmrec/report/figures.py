"""The report's figures, drawn from our own numbers (significance.csv, slices.csv).

The study's four figures (main performance, improvement over the baseline, fusion
strategies, ablation) plus slice plots and training curves. Every figure carries the
protocol label, and representations are grouped by what the run's config says they are
(`kind`, `text`), never by their names. Figures are FIG_WIDTH wide (the report's column at
100%) and grow downwards: one row per representation, one panel per metric or slice bin,
wrapped, so they stay legible at any number of representations.
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
    """Mean of each main metric per representation, with bootstrap 95% CIs: one panel per
    metric (two per row), representations as rows, best first; legible at any count."""
    n_cols = min(2, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig, axes = _subplots(n_rows, n_cols, figsize=(FIG_WIDTH, n_rows * _rows_height(order)),
                          sharey=True, squeeze=False)
    y = np.arange(len(order))
    for j, ax in enumerate(axes.ravel()):
        if j >= len(metrics):
            ax.set_visible(False)
            continue
        metric = metrics[j]
        rows = sig[sig["metric"] == metric].set_index("representation").loc[order]
        colours = ["#555555" if n == baseline else COLOURS[j % 10] for n in order]
        ax.barh(y, rows["mean"], xerr=_errors(rows), color=colours, capsize=2, height=0.7,
                error_kw={"elinewidth": 0.8})
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("test mean over users")
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(_labels(order, baseline), fontsize=_label_size(order))
    axes[0][0].invert_yaxis()
    fig.suptitle("Main performance (best first; grey: baseline; error bars: bootstrap 95% CI)",
                 fontsize=11)
    _footer(fig, protocol_label)
    return fig


#: every figure is this wide (inches; 1155 px at the 110 dpi of `to_png`), so the report
#: shows it at 100% in a 1200 px column and its text stays legible
FIG_WIDTH = 10.5


def _rows_height(order: list[str]) -> float:
    """Panel height for one horizontal bar per representation."""
    return 0.26 * len(order) + 1.3


def _label_size(order: list[str]) -> float:
    return 9 if len(order) <= 30 else 7.5


def _labels(order: list[str], baseline: str) -> list[str]:
    return [f"{n} (baseline)" if n == baseline else n for n in order]


def improvement(sig: pd.DataFrame, order: list[str], metrics: list[str], baseline: str,
                protocol_label: str):
    """Relative improvement over the baseline with CIs; solid bars: BH-adjusted p < 0.05.
    One panel per metric, two a row, at most FIG_WIDTH wide."""
    others = [n for n in order if n != baseline]
    n_cols = min(2, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig, axes = _subplots(n_rows, n_cols, figsize=(min(FIG_WIDTH, 3.4 * n_cols + 1.5),
                                                   n_rows * (0.38 * len(others) + 1.6)),
                          sharey=True, squeeze=False)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    y = np.arange(len(others))
    for j, (ax, metric) in enumerate(zip(axes.ravel(), metrics)):
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
        if j % n_cols == 0:
            ax.set_yticks(y)
            ax.set_yticklabels(others, fontsize=_label_size(others))
    axes[0][0].invert_yaxis()
    fig.suptitle("Improvement over the baseline (95% CI; grey: not significant, BH-adjusted "
                 "paired t-test)", fontsize=10)
    _footer(fig, protocol_label)
    return fig


def by_kind(sig: pd.DataFrame, strategies: list[dict], metric: str, baseline: str,
            protocol_label: str):
    """Every representation grouped by its strategy kind (best first within a kind); colour
    = text source. Horizontal, so names stay readable at any number of strategies."""
    rows = sig[sig["metric"] == metric].set_index("representation")
    strategies = [s for s in strategies if s["name"] in rows.index]
    kinds = list(dict.fromkeys(s["kind"] for s in strategies))
    sources = list(dict.fromkeys(s.get("text") or "none" for s in strategies))
    colour = {src: COLOURS[i % 10] for i, src in enumerate(sources)}
    n = len(strategies) + len(kinds)
    fig, ax = _subplots(figsize=(FIG_WIDTH, 0.26 * n + 1.4))
    y, ticks, labels = 0, [], []
    for kind in kinds:
        members = sorted((s for s in strategies if s["kind"] == kind),
                         key=lambda s: -rows.loc[s["name"], "mean"])
        ax.text(0, y, f"kind: {kind}", fontsize=9, fontweight="bold", va="center")
        y += 1
        for s in members:
            r = rows.loc[[s["name"]]]
            ax.barh(y, r["mean"], height=0.7, xerr=_errors(r), capsize=2,
                    color=colour[s.get("text") or "none"],
                    hatch="//" if s["name"] == baseline else None, edgecolor="white",
                    error_kw={"elinewidth": 0.8})
            ticks.append(y)
            labels.append(s["name"] + (" (baseline)" if s["name"] == baseline else ""))
            y += 1
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=_label_size(labels))
    ax.set_ylim(y - 0.4, -0.6)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in sources]
    ax.legend(handles, [f"text: {s}" for s in sources], fontsize=8, loc="lower right")
    ax.set_xlabel(f"{metric} (test mean, 95% CI)")
    ax.set_title("Strategies compared, grouped by kind (hatched: baseline)")
    ax.grid(axis="x", alpha=0.3)
    _footer(fig, protocol_label)
    return fig


def ablation(sig: pd.DataFrame, text_only: list[dict], prompt_groups: dict[str, list[str]],
             metric: str, protocol_label: str):
    """(a) text-only strategies by text source; (b) with/without the title in the prompt
    (drawn only when `prompt_groups` has both)."""
    rows = sig[sig["metric"] == metric].set_index("representation")
    panels = 2 if len(prompt_groups) >= 2 else 1
    fig, axes = _subplots(1, panels, figsize=(min(FIG_WIDTH, 5.5 * panels), 4), squeeze=False)
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


#: slice bins with fewer users than this are drawn faint: their means are too noisy to read
MIN_BIN_USERS = 30


def slice_panels(rows: pd.DataFrame, order: list[str], baseline: str, metric: str,
                 titles: dict[str, str], protocol_label: str, title: str, n_cols: int = 4):
    """One panel per bin (wrapped, `n_cols` a row): each representation's mean in that bin
    with its 95% CI as a dot and a bar, best first; a dashed line at the baseline's value.
    A bin with fewer than MIN_BIN_USERS users is drawn faint and says so in its title."""
    bins = rows.drop_duplicates("bin_order").sort_values("bin_order")
    n_cols = min(n_cols, len(bins))
    n_rows = -(-len(bins) // n_cols)
    fig, axes = _subplots(n_rows, n_cols, figsize=(FIG_WIDTH, n_rows * _rows_height(order)),
                          sharey=True, sharex=True, squeeze=False)
    y = np.arange(len(order))
    for ax, (_, b) in zip(axes.ravel(), bins.iterrows()):
        r = rows[rows["bin"] == b["bin"]].set_index("representation").reindex(order)
        faint = b["n_users"] < MIN_BIN_USERS
        alpha = 0.3 if faint else 1.0
        low = (r["value"] - r["ci_low"]).clip(lower=0).fillna(0) if "ci_low" in r else 0
        high = (r["ci_high"] - r["value"]).clip(lower=0).fillna(0) if "ci_high" in r else 0
        colours = ["#555555" if n == baseline else COLOURS[0] for n in order]
        ax.hlines(y, r["value"] - low, r["value"] + high, colors=colours, alpha=alpha, lw=1.4)
        ax.scatter(r["value"], y, c=colours, alpha=alpha, s=18, zorder=3)
        if baseline in r.index and pd.notna(r.loc[baseline, "value"]):
            ax.axvline(r.loc[baseline, "value"], color="#555555", ls="--", lw=0.8)
        ax.set_title(f"{titles.get(b['bin'], b['bin'])}\n{int(b['n_users'])} users"
                     + (" (under 30: faint)" if faint else ""), fontsize=9,
                     color="#999999" if faint else "black")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes.ravel()[len(bins):]:
        ax.set_visible(False)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(_labels(order, baseline), fontsize=_label_size(order))
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}: {metric}, mean over users with 95% CI (dashed: baseline)",
                 fontsize=11)
    _footer(fig, protocol_label)
    return fig


def history_slices(slices: pd.DataFrame, order: list[str], metric: str, protocol_label: str,
                   baseline: str = ""):
    """The metric per user-history-length bin, one panel per bin."""
    rows = slices[(slices["slice"] == "history_length") & (slices["metric"] == metric)]
    titles = {b: f"history {b}" for b in rows["bin"].unique()}
    return slice_panels(rows, order, baseline, metric, titles, protocol_label,
                        "By user history length")


def item_slices(slices: pd.DataFrame, order: list[str], metric: str, protocol_label: str,
                baseline: str = ""):
    """Recall on head/mid/tail targets, and on cold vs warm targets when some are cold (no
    cold panel otherwise: it would compare nothing)."""
    rows = slices[slices["slice"].isin(["popularity", "cold_items"])
                  & (slices["metric"] == metric)].copy()
    if not (rows["bin"] == "cold").any():
        rows = rows[rows["slice"] != "cold_items"]
    rows["bin_order"] = rows["bin_order"] + np.where(rows["slice"] == "cold_items", 10, 0)
    titles = {"head": "head targets", "mid": "mid targets", "tail": "tail targets",
              "cold": "cold targets (never in training)", "warm": "warm targets"}
    return slice_panels(rows, order, baseline, metric, titles, protocol_label,
                        "By target item popularity", n_cols=3)


def training_curves(curves: dict[str, dict], protocol_label: str):
    """Per trained model: training loss (left axis) and validation Recall@20 (right axis)
    per epoch, the kept (best) epoch marked."""
    names = list(curves)
    n_cols = min(3, len(names))
    n_rows = -(-len(names) // n_cols)
    fig, axes = _subplots(n_rows, n_cols, figsize=(FIG_WIDTH, 2.6 * n_rows + 0.6),
                          squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        c = curves[name]
        if len(c["loss"]):
            ax.plot(np.arange(len(c["loss"])), c["loss"], color=COLOURS[0], lw=1.3)
        ax.set_ylabel("training loss", color=COLOURS[0], fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        twin = ax.twinx()
        if len(c["valid_epoch"]):
            twin.plot(c["valid_epoch"], c["valid_recall"], color=COLOURS[1], lw=1.3,
                      marker="o", ms=2.5)
        twin.set_ylabel("valid Recall@20", color=COLOURS[1], fontsize=8)
        twin.tick_params(labelsize=8)
        best = c.get("best_epoch")
        if best is not None and best >= 0:
            ax.axvline(best, color="#333333", ls=":", lw=1)
            at = [v for e, v in zip(c["valid_epoch"], c["valid_recall"]) if e == best]
            if at:
                twin.plot([best], at, marker="*", ms=10, color=COLOURS[3])
        ax.set_title(f"{name} (best epoch {best})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Training curves (dotted line and star: the epoch kept, best validation "
                 "Recall@20)", fontsize=11)
    _footer(fig, protocol_label)
    return fig
