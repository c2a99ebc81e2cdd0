"""The report explains itself: legible figures at any number of representations, slices
with CIs and counts, no empty panels, the validation table, training curves, and a plain
sentence when popularity beats the content rows."""

import io

import numpy as np
import pandas as pd
from PIL import Image

from lvlmrec.report import explain, figures
from lvlmrec.workdir import Workdir

METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def _size(fig) -> tuple[int, int]:
    return Image.open(io.BytesIO(figures.to_png(fig))).size


def _significance(names: list[str], baseline: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for metric in METRICS:
        for name in names:
            mean = float(rng.uniform(0.02, 0.3))
            rows.append({"metric": metric, "representation": name, "mean": mean,
                         "ci_low": mean - 0.01, "ci_high": mean + 0.01,
                         "rel_improvement": 0.1, "rel_ci_low": 0.0, "rel_ci_high": 0.2,
                         "p_ttest_bh": 0.01, "baseline": baseline})
    return pd.DataFrame(rows)


def _slices(names: list[str], cold: bool) -> pd.DataFrame:
    rows = []
    bins = [("history_length", "1-2", 1, 12), ("history_length", "3-5", 2, 300),
            ("popularity", "head", 0, 200), ("popularity", "tail", 2, 150),
            ("cold_items", "warm", 1, 310)] + ([("cold_items", "cold", 0, 40)] if cold else [])
    for name in names:
        for slice_, bin_, order, n in bins:
            rows.append({"representation": name, "slice": slice_, "bin": bin_,
                         "bin_order": order, "bin_range": "", "metric": "recall@10",
                         "value": 0.1, "ci_low": 0.08, "ci_high": 0.12, "n_users": n})
    return pd.DataFrame(rows)


def test_figures_stay_legible_at_any_number_of_representations():
    for n in (3, 12, 40):
        names = [f"representation_{i}" for i in range(n)]
        sig = _significance(names, names[0])
        strategies = [{"name": name, "kind": ["text", "naive", "attention", "popularity"][i % 4],
                       "text": "title"} for i, name in enumerate(names)]
        for fig in (figures.main_performance(sig, names, METRICS, names[0], "full"),
                    figures.by_kind(sig, strategies, "recall@10", names[0], "full"),
                    figures.history_slices(_slices(names, True), names, "recall@10", "full",
                                           names[0]),
                    figures.item_slices(_slices(names, True), names, "recall@10", "full",
                                        names[0])):
            width, _ = _size(fig)  # draws the figure
            # shown at 100% in the report's 1200 px column ...
            assert width <= 1200, (n, width)
            # ... with a row of at least 20 px per representation for its 7.5+ pt name
            ax = fig.axes[0]
            rows = len(ax.get_yticks())
            assert ax.get_window_extent().height / rows * 110 / fig.dpi >= 20, (n, rows)
            assert ax.get_yticklabels()[0].get_fontsize() >= 7.5


def test_every_figure_fits_the_report_column():
    """The report shows figures at up to 100% in a 1200 px column (1400 px window): a wider
    figure is shrunk and its 7 pt text drops under 10 px (docs/make_report_screenshot.py
    checks a real report in Chromium)."""
    from lvlmrec.report.cold import warm_cold_figure
    from lvlmrec.report.describers import describer_bars

    names = [f"representation_{i}" for i in range(40)]
    sig = _significance(names, names[0])
    text_only = [{"name": n, "kind": "text", "text": ["title", "description", "metadata"][i % 3]}
                 for i, n in enumerate(names[:9])]
    curves = {n: {"loss": [3.0, 2.0], "valid_epoch": [0, 1], "valid_recall": [0.1, 0.2],
                  "best_epoch": 1} for n in names[:7]}
    cold = pd.DataFrame([{"representation": n, "bin": b, "bin_order": o, "value": 0.1,
                          "ci_low": 0.05, "ci_high": 0.15, "note": ""}
                         for n in names[:24] for o, b in enumerate(["0", "1-4", "5+"])])
    audit = pd.DataFrame({"describer": [f"describer_{i}" for i in range(4)],
                          **{f"fidelity_{c}": [0.5] * 4 for c in ("colour", "category",
                                                                   "pattern", "label", "x")}})
    drawn = {
        "improvement": figures.improvement(sig, names, METRICS[:2], names[0], "full"),
        "improvement, 4 metrics": figures.improvement(sig, names, METRICS, names[0], "full"),
        "ablation": figures.ablation(sig, text_only, {"with title": names[:2],
                                                      "without": names[2:4]}, "recall@10",
                                     "full"),
        "training curves": figures.training_curves(curves, "full"),
        "cold": warm_cold_figure(cold, names[:24], set(), "recall@10", "full"),
        "describers": describer_bars(audit, [c for c in audit if c != "describer"], "share"),
    }
    for name, fig in drawn.items():
        width, _ = _size(fig)
        assert width <= 1200, (name, width)


def test_slice_panels_mark_small_bins_and_drop_an_empty_cold_panel():
    names = ["a", "b", "c"]
    fig = figures.history_slices(_slices(names, True), names, "recall@10", "full", "a")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["history 1-2\n12 users (under 30: faint)", "history 3-5\n300 users"]
    with_cold = figures.item_slices(_slices(names, True), names, "recall@10", "full", "a")
    without = figures.item_slices(_slices(names, False), names, "recall@10", "full", "a")
    panels = [ax.get_title().split("\n")[0] for ax in without.axes if ax.get_visible()]
    assert "warm targets" not in panels and not any("cold" in p for p in panels)
    assert any("cold" in ax.get_title() for ax in with_cold.axes)


def test_popularity_beating_the_content_rows_is_said_plainly():
    metrics = pd.DataFrame({"representation": ["title_text", "lvlm_text", "popularity",
                                               "itemknn"],
                            "recall@10": [0.035, 0.02, 0.098, 0.12]})
    strategies = [{"name": "title_text", "kind": "text"}, {"name": "lvlm_text", "kind": "text"},
                  {"name": "popularity", "kind": "popularity"},
                  {"name": "itemknn", "kind": "itemknn"}]
    said = explain.findings(metrics, strategies, "recall@10")
    assert said[0].startswith("Best on recall@10: **itemknn**")
    assert any("popularity beats every content representation" in s and "0.0980" in s
               and "title_text" in s for s in said)
    metrics.loc[0, "recall@10"] = 0.2
    assert not any("every content" in s for s in explain.findings(metrics, strategies,
                                                                  "recall@10"))


def test_training_curves_read_from_saved_models_without_importing_them(tmp_path):
    from lvlmrec.represent.base import Recommender

    class Trained(Recommender):
        def __init__(self, epochs: int = 3):
            self.epochs = epochs

    wd = Workdir(tmp_path)
    model = Trained()
    model.loss_history_ = np.array([3.0, 2.0, 1.5])
    model.valid_history_ = np.array([[0, 0.1], [1, 0.3], [2, 0.2]])
    model.best_epoch_ = 1
    model.save(wd.model_dir("cf"))
    fusion = Trained()
    fusion.train_loss_ = [5.0, 4.0]
    fusion.valid_recall_ = [0.2, 0.25]
    fusion.best_epoch_ = 1
    fusion.save(wd.model_dir("fusion"))
    plain = Trained()
    plain.item_vectors_ = np.ones((3, 2))
    plain.save(wd.model_dir("plain"))
    # model.json names a class that cannot be imported: the curves never need it
    for name in ("cf", "fusion", "plain"):
        path = wd.model_dir(name) / "model.json"
        path.write_text(path.read_text().replace("Trained", "NoSuchClass"))
    curves = explain.training_curves(wd, ["cf", "fusion", "plain", "missing"])
    assert set(curves) == {"cf", "fusion"}
    assert curves["cf"] == {"loss": [3.0, 2.0, 1.5], "valid_epoch": [0, 1, 2],
                            "valid_recall": [0.1, 0.3, 0.2], "best_epoch": 1}
    assert curves["fusion"]["valid_epoch"] == [0, 1]
    fig = figures.training_curves(curves, "full")
    assert _size(fig)[0] <= 1200
    assert "best epoch 1" in fig.axes[0].get_title()
