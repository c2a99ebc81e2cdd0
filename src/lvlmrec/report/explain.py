"""Report sections that explain the numbers: plain sentences on what beat what, the
validation table, and the trained models' curves.

Everything here reads files only (results/*.csv, models/<name>/model.json and state.npz
with pickles refused); no model class is imported.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lvlmrec.workdir import Workdir

#: representations that read item content (embeddings of text or images)
CONTENT_KINDS = {"text", "vision", "content", "naive", "concat", "attention", "gating",
                 "cross_attention"}
#: baselines that read no content at all; a content row below them is worth a sentence
NON_CONTENT_BASELINES = ("popularity",)


def findings(metrics: pd.DataFrame, strategies: list[dict], metric: str) -> list[str]:
    """Plain sentences: the best row, and a baseline that beats the content rows."""
    if metric not in metrics or metrics.empty:
        return []
    value = metrics.set_index("representation")[metric]
    kinds = {s["name"]: s["kind"] for s in strategies}
    best = value.idxmax()
    out = [f"Best on {metric}: **{best}** ({value[best]:.4f}, kind {kinds.get(best, '?')})."]
    content = value[[n for n in value.index if kinds.get(n) in CONTENT_KINDS]]
    for name in value.index:
        if kinds.get(name) not in NON_CONTENT_BASELINES or content.empty:
            continue
        beaten = content[content < value[name]]
        top = content.idxmax()
        if len(beaten) == len(content):
            out.append(
                f"**{name} beats every content representation**: {metric} {value[name]:.4f} "
                f"against {content[top]:.4f} for the best of them ({top}). Recommending what "
                "is popular does better here than any item content: the content signals (or "
                "their encoders) do not capture what these users choose; compare with the "
                "collaborative rows, and look at the slices below.")
        elif len(beaten):
            out.append(f"{name} ({value[name]:.4f}) beats {len(beaten)} of {len(content)} "
                       f"content representations on {metric}.")
    return out


def validation_table(workdir: Workdir, metrics: list[str], order: list[str]) -> pd.DataFrame:
    """metrics_valid.csv: the validation split's means (what model selection may look at)."""
    path = workdir.results_dir / "metrics_valid.csv"
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path)
    cols = ["representation"] + [m for m in metrics if m in table] + \
        [c for c in ("n_users",) if c in table]
    table = table[cols].set_index("representation")
    table = table.reindex([n for n in order if n in table.index]
                          + [n for n in table.index if n not in order])
    return table.reset_index().map(lambda v: f"{v:.4f}" if isinstance(v, float) else v)


def training_curves(workdir: Workdir, names: list[str]) -> dict[str, dict]:
    """Loss per epoch, validation Recall@20 per evaluated epoch and the best epoch of every
    trained model among `names` (those whose saved state has a loss history)."""
    out = {}
    for name in names:
        folder = workdir.model_dir(name)
        try:
            meta = json.loads((folder / "model.json").read_text())
            with np.load(folder / "state.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError):
            continue
        state = {**arrays, **meta.get("scalars", {})}
        loss = state.get("train_loss_", state.get("loss_history_"))
        if loss is None:
            continue
        if "valid_history_" in state:
            valid = np.asarray(state["valid_history_"], dtype=np.float64).reshape(-1, 2)
            epochs, recall = valid[:, 0].astype(int).tolist(), valid[:, 1].tolist()
        else:
            recall = list(state.get("valid_recall_", []))
            epochs = list(range(len(recall)))
        best = state.get("best_epoch_")
        out[name] = {"loss": np.asarray(loss, dtype=np.float64).ravel().tolist(),
                     "valid_epoch": epochs, "valid_recall": recall,
                     "best_epoch": None if best is None else int(best)}
    return out
