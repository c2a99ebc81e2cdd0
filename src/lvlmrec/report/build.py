"""The report stage: the results table (terminal and Markdown) and the figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lvlmrec.config import ReportConfig  # noqa: E402
from lvlmrec.errors import StageError  # noqa: E402
from lvlmrec.workdir import Workdir, atomic_path, read_json, write_text  # noqa: E402

TABLE_COLUMNS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def load_metrics(workdir: Workdir) -> pd.DataFrame:
    if not workdir.metrics_path.is_file():
        raise StageError(f"no {workdir.metrics_path}: run `lvlmrec evaluate` first")
    return pd.read_csv(workdir.metrics_path)


def results_table(metrics: pd.DataFrame, sort_by: str = "recall@10") -> pd.DataFrame:
    cols = ["representation"] + [c for c in TABLE_COLUMNS if c in metrics] + ["n_users"]
    return metrics[cols].sort_values(sort_by, ascending=False).reset_index(drop=True)


def print_table(table: pd.DataFrame, console: Console, title: str = "Test results") -> None:
    t = Table(title=title)
    for col in table.columns:
        t.add_column(col, justify="left" if col == "representation" else "right")
    for _, row in table.iterrows():
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def bar_chart(table: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(table) + 2), 4))
    x = range(len(table))
    width = 0.4
    ax.bar([i - width / 2 for i in x], table["recall@10"], width, label="Recall@10")
    ax.bar([i + width / 2 for i in x], table["ndcg@10"], width, label="NDCG@10")
    ax.set_xticks(list(x))
    ax.set_xticklabels(table["representation"], rotation=35, ha="right")
    ax.set_ylabel("test metric (mean over users)")
    ax.set_title("Recall@10 and NDCG@10 by representation")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def build_report(cfg: ReportConfig, workdir: Workdir, console: Console) -> list[Path]:
    metrics = load_metrics(workdir)
    table = results_table(metrics, cfg.metric if cfg.metric in metrics else "recall@10")
    fig_path = bar_chart(table, workdir.figures_dir / "main_performance.png")
    info = read_json(workdir.dataset_json) if workdir.dataset_json.is_file() else {}
    counts = info.get("counts", {})
    lines = [
        "# lvlmrec report",
        "",
        f"Dataset: {counts.get('n_users', '?')} users, {counts.get('n_items', '?')} items, "
        f"{counts.get('n_interactions', '?')} interactions. Full ranking over the whole "
        "catalog for every user; history masked; test split.",
        "",
        table.to_markdown(index=False, floatfmt=".4f"),
        "",
        f"![Recall@10 and NDCG@10](figures/{fig_path.name})",
        "",
    ]
    report_md = workdir.report_dir / "report.md"
    write_text(report_md, "\n".join(lines))
    return [report_md, fig_path]
