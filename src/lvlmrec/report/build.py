"""The report stage: results table (terminal, Markdown, HTML), figures, slices, case studies.

report/report.md      the table, figures (report/figures/*.png) and case studies
report/report.html    the same, self-contained: figures and thumbnails embedded as base64,
                      plain HTML + CSS, no external asset
Everything is read from results/ (written by the evaluate stage), the dataset, the
descriptions and the fitted models; nothing is recomputed except the case studies' top-10.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from lvlmrec.config import ReportConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.evaluate.cold import mark_na
from lvlmrec.evaluate.run import active_descriptions, covered_items
from lvlmrec.evaluate.stats import significance_mark
from lvlmrec.report import cold, explain, figures
from lvlmrec.report.cases import CaseStudy, build_case_studies, thumbnail
from lvlmrec.report.search import Section, fairness_sections, seed_column
from lvlmrec.workdir import Workdir, read_json, write_bytes, write_text

TABLE_COLUMNS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
VALID_NOTE = ("Means on the validation split (history = train): the only split model "
              "selection and tuning may look at (results/metrics_valid.csv).")


# --------------------------------------------------------------------------- terminal table
def load_metrics(workdir: Workdir) -> pd.DataFrame:
    if not workdir.metrics_path.is_file():
        raise StageError(f"no {workdir.metrics_path}: run `lvlmrec evaluate` first")
    return pd.read_csv(workdir.metrics_path)


def results_table(metrics: pd.DataFrame, sort_by: str = "recall@10") -> pd.DataFrame:
    """Means of the main metrics per representation; a protocol other than the full
    ranking is shown on every row."""
    cols = ["representation"] + [c for c in TABLE_COLUMNS if c in metrics] + ["n_users"]
    if "protocol" in metrics and (metrics["protocol"] != "full").any():
        cols.insert(1, "protocol")
    sort_by = sort_by if sort_by in metrics else "recall@10"
    cols += ["note"] if "note" in metrics else []
    table = metrics[cols].sort_values(sort_by, ascending=False).reset_index(drop=True)
    return mark_na(table, TABLE_COLUMNS)


def print_table(table: pd.DataFrame, console: Console, title: str = "Test results") -> None:
    t = Table(title=title)
    for col in table.columns:
        t.add_column(col, justify="left" if col in ("representation", "protocol") else "right")
    for _, row in table.iterrows():
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class Results:
    run: dict[str, Any]
    metrics: pd.DataFrame
    significance: pd.DataFrame
    slices: pd.DataFrame
    per_user: pd.DataFrame  # test split only

    @property
    def baseline(self) -> str:
        return self.run["baseline"]

    @property
    def strategies(self) -> list[dict[str, Any]]:
        """The ranked representations (a cold protocol leaves some n/a: report/cold.py)."""
        unranked = set(self.run.get("needs_interactions") or [])
        return [s for s in self.run["representations"] if s["name"] not in unranked]

    def order(self, metric: str) -> list[str]:
        """Representations, best first on `metric`."""
        rows = self.significance[self.significance["metric"] == metric]
        return rows.sort_values("mean", ascending=False)["representation"].tolist()


def load_results(workdir: Workdir) -> Results:
    out = workdir.results_dir
    needed = [workdir.run_json, workdir.metrics_path, out / "significance.csv",
              out / "slices.csv", out / "per_user.parquet"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise StageError(f"missing {', '.join(map(str, missing))}: run `lvlmrec evaluate` first")
    per_user = pd.read_parquet(out / "per_user.parquet")
    return Results(read_json(workdir.run_json), pd.read_csv(workdir.metrics_path),
                   pd.read_csv(out / "significance.csv"), pd.read_csv(out / "slices.csv"),
                   per_user[per_user["split"] == "test"])


# --------------------------------------------------------------------------- tables
def _fmt(v: float) -> str:
    return "" if pd.isna(v) else f"{v:.4f}"


def significance_table(res: Results, metrics: list[str], order: list[str]) -> pd.DataFrame:
    """mean [95% CI] and marks per main metric; relative improvement on the first metric."""
    sig = res.significance.set_index(["metric", "representation"])
    kinds = {s["name"]: s["kind"] for s in res.strategies}
    rows = []
    for name in order:
        row = {"representation": name + (" (baseline)" if name == res.baseline else ""),
               "kind": kinds.get(name, "")}
        for metric in metrics:
            r = sig.loc[(metric, name)]
            row[metric] = (f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
                           f"{significance_mark(r['p_ttest_bh'])}")
        r = sig.loc[(metrics[0], name)]
        row[f"vs baseline ({metrics[0]})"] = "" if name == res.baseline else (
            f"{r['rel_improvement'] * 100:+.1f}% [{r['rel_ci_low'] * 100:+.1f}, "
            f"{r['rel_ci_high'] * 100:+.1f}]" if pd.notna(r["rel_improvement"]) else "n/a")
        row["n_users"] = int(r["n_users"])
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_groups(strategies: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """Text-only strategies, and those on describer text grouped by title-in-prompt."""
    text_only = [s for s in strategies if s["kind"] == "text" and s.get("text")
                 and not s.get("vision")]
    prompt: dict[str, list[str]] = {}
    for s in text_only:
        flag = s.get("sources", {}).get(s["text"], {}).get("include_title")
        if flag is not None:
            key = "title in prompt" if flag else "no title in prompt"
            prompt.setdefault(key, []).append(s["name"])
    return text_only, prompt


def comparison_pair(cfg: ReportConfig, res: Results, metric: str) -> list[str]:
    names = [s["name"] for s in res.strategies]
    if cfg.compare:
        unknown = [n for n in cfg.compare if n not in names]
        if len(cfg.compare) != 2 or unknown:
            raise ConfigError(f"report.compare needs two evaluated representations; got "
                              f"{cfg.compare} (evaluated: {', '.join(names)})")
        return list(cfg.compare)
    best = next((n for n in res.order(metric) if n != res.baseline), res.baseline)
    return [res.baseline, best]


# --------------------------------------------------------------------------- build
@dataclasses.dataclass
class Figure:
    name: str
    caption: str
    png: bytes


def build_figures(res: Results, metrics: list[str], metric: str) -> tuple[list[Figure], list]:
    """The figures and the notes about panels that could not be drawn."""
    label = res.run["protocol_label"]
    order = res.order(metric)
    at_k = [m for m in metrics if m.endswith("@10")] or metrics[:2]
    figs = [
        Figure("main_performance", "Main performance: mean of each main metric per "
               "representation, bootstrap 95% CIs.",
               figures.to_png(figures.main_performance(res.significance, order, metrics,
                                                       res.baseline, label))),
        Figure("improvement", f"Relative improvement over {res.baseline} (95% CI of the ratio "
               "of means); coloured bars are significant after Benjamini-Hochberg.",
               figures.to_png(figures.improvement(res.significance, order, at_k,
                                                  res.baseline, label))),
        Figure("fusion_strategies", "Every strategy grouped by its kind (from the config); "
               "colour is the text source.",
               figures.to_png(figures.by_kind(res.significance, res.strategies, metric,
                                              res.baseline, label))),
    ]
    notes = []
    text_only, prompt = ablation_groups(res.strategies)
    if text_only:
        figs.append(Figure("ablation", "Ablation: text-only strategies by text source"
                           + ("; with and without the title in the describer's prompt."
                              if len(prompt) >= 2 else "."),
                           figures.to_png(figures.ablation(res.significance, text_only, prompt,
                                                           metric, label))))
    else:
        notes.append("No text-only strategy is configured: the ablation figure is skipped.")
    if len(prompt) < 2:
        which = next(iter(prompt), None)
        notes.append("The with/without-title-in-prompt panel needs text-only strategies on "
                     "descriptions generated both with and without the title in the prompt"
                     + (f"; this run only has descriptions with {which}" if which else "")
                     + " (`describe.include_title`): panel skipped.")
    if (res.slices["slice"] == "history_length").any():
        figs.append(Figure("slices_history", "Metric by user history length: one panel per "
                           "bin, 95% CI of each mean; bins of under 30 users are faint.",
                           figures.to_png(figures.history_slices(res.slices, order, metric,
                                                                 label, res.baseline))))
    recall = f"recall@{metric.split('@')[1]}"
    if (res.slices["metric"] == recall).any() and \
            res.slices["slice"].isin(["popularity", "cold_items"]).any():
        cold = (res.slices["bin"] == "cold").any()
        figs.append(Figure("slices_items", f"{recall} on the test targets of each item slice "
                           "only (popularity by training interactions"
                           + ("; cold = never in training)" if cold else
                              "; no test target is cold, so there is no cold panel)")
                           + ", 95% CI; bins of under 30 users are faint.",
                           figures.to_png(figures.item_slices(res.slices, order, recall,
                                                              label, res.baseline))))
    return figs, notes


def build_report(cfg: ReportConfig, workdir: Workdir, console: Console,
                 show_progress: bool = True) -> list[Path]:
    res = load_results(workdir)
    metrics = res.run["significance_metrics"]
    metric = cfg.metric if cfg.metric in metrics else metrics[0]
    if metric != cfg.metric:
        console.print(f"  [yellow]report.metric {cfg.metric!r} is not among the tested "
                      f"metrics {metrics} (evaluate.significance_metrics); using "
                      f"{metric}[/yellow]")
    steps = tqdm(total=3, desc="report", disable=not show_progress, leave=False)
    figs, notes = build_figures(res, metrics, metric)
    curves = explain.training_curves(workdir, [s["name"] for s in res.strategies])
    if curves:
        figs.append(Figure("training_curves", "Training loss and validation Recall@20 per "
                           "epoch of every trained model; the weights kept are the best "
                           "epoch's.", figures.to_png(figures.training_curves(
                               curves, res.run["protocol_label"]))))
    steps.update()
    ds = Dataset.load(workdir, features=False)
    cases: list[CaseStudy] = []
    compare = comparison_pair(cfg, res, metric)
    if cfg.n_case_studies and compare[0] != compare[1]:
        candidates = covered_items(workdir, ds.n_items) if res.run["protocol"] == "covered" \
            else None
        cases = build_case_studies(workdir, ds, res.per_user, compare, metric,
                                   cfg.n_case_studies, res.run.get("seed", 0),
                                   candidates=candidates)
    steps.update()
    table = cold.na_table_rows(seed_column(significance_table(res, metrics, res.order(metric)),
                                           res.metrics, metric), res.run)
    section = cold.cold_section(res.run, res.slices, res.significance,
                                read_json(workdir.dataset_json).get("counts", {}), metric)
    if section is not None:
        figs.append(Figure("cold_items", section.caption, section.figure))
    from lvlmrec.report.describers import DescribersSection

    page = Page(workdir, ds, res, table, figs, notes, cases, compare, metric,
                fairness_sections(workdir, res.run, metric), section,
                DescribersSection(workdir, ds, res.run),
                findings=explain.findings(res.metrics, res.strategies, metric),
                valid_table=explain.validation_table(workdir, metrics, res.order(metric)))
    outputs = [page.write_figures(), page.write_markdown(), page.write_html()]
    steps.update()
    steps.close()
    return outputs


# --------------------------------------------------------------------------- rendering
@dataclasses.dataclass
class Page:
    workdir: Workdir
    ds: Dataset
    res: Results
    table: pd.DataFrame
    figs: list[Figure]
    notes: list[str]
    cases: list[CaseStudy]
    compare: list[str]
    metric: str
    sections: list[Section] = dataclasses.field(default_factory=list)
    cold: cold.ColdSection | None = None
    describers: Any = None  # report/describers.py: who wrote the texts, the audit
    #: plain sentences on what beat what (report/explain.py)
    findings: list[str] = dataclasses.field(default_factory=list)
    #: the validation split's means (results/metrics_valid.csv)
    valid_table: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        self.descriptions = active_descriptions(self.workdir)
        self.titles = self.ds.items["title"].astype(str).tolist()
        self.images = self.ds.image_paths(self.workdir)
        self.thumbs: dict[int, bytes | None] = {}

    # ------------------------------------------------------------------ shared text
    def intro(self) -> list[str]:
        run = self.res.run
        info = read_json(self.workdir.dataset_json) if self.workdir.dataset_json.is_file() \
            else {}
        counts = info.get("counts", {})
        ci = f"percentile bootstrap over users ({run['n_bootstrap']} resamples, seed " \
             f"{run['seed']})"
        return [
            f"**Protocol: {run['protocol']}** — {run['protocol_label']}; test split "
            "(history = train + valid), "
            f"{run['n_users_evaluated']['test']:,} users evaluated.",
            f"Dataset: {counts.get('n_users', '?')} users, {counts.get('n_items', '?')} items, "
            f"{counts.get('n_interactions', '?')} interactions.",
            f"Baseline: **{self.res.baseline}**. Cells: mean [95% CI, {ci}]; marks: "
            "Benjamini-Hochberg-adjusted paired t-test against the baseline, `*` p < 0.05, "
            "`**` p < 0.01, `***` p < 0.001 (the paired randomisation test, "
            f"{run['n_permutations']} sign flips, is in `results/significance.csv`).",
        ]

    def case_note(self) -> str:
        protocol = self.res.run["protocol"]
        where = "the covered items" if protocol == "covered" else "the whole catalog"
        note = (f"Top-10 of {self.compare[0]} and {self.compare[1]} over {where}, test "
                "history masked, from the evaluator's own ranking code; hits are the user's "
                "test items.")
        if protocol == "sampled":
            note += (" The metric values quoted are the sampled protocol's (ranked within "
                     "the sampled pool), the lists are not.")
        return note

    def item_text(self, item: int, limit: int = 160) -> tuple[str, str]:
        desc = self.descriptions.get(item, "")
        if len(desc) > limit:
            desc = desc[:limit].rsplit(" ", 1)[0] + "…"
        return self.titles[item], desc

    def thumb(self, item: int) -> bytes | None:
        if item not in self.thumbs:
            self.thumbs[item] = thumbnail(self.images[item])
        return self.thumbs[item]

    # ------------------------------------------------------------------ files
    def write_figures(self) -> Path:
        """figures/*.png and figures/items/<id>.jpg (case-study thumbnails), nothing stale."""
        folder = self.workdir.figures_dir
        if folder.is_dir():
            shutil.rmtree(folder)
        for fig in self.figs:
            write_bytes(folder / f"{fig.name}.png", fig.png)
        for case in self.cases:
            items = set(case.history) | {i for top in case.tops.values() for i in top}
            for item in sorted(items):
                data = self.thumb(item)
                if data is not None:
                    write_bytes(folder / "items" / f"{item}.jpg", data)
        if self.describers is not None:
            self.describers.write_files(folder)
        return folder

    def write_markdown(self) -> Path:
        header = self.describers.header() if self.describers is not None else []
        lines = ["# lvlmrec report", "", *[f"{s}  " for s in self.intro() + header], "",
                 *[f"- {s}" for s in self.findings], "",
                 f"## Results (test split, protocol: {self.res.run['protocol']})", "",
                 self.table.map(lambda v: v.replace("*", "\\*") if isinstance(v, str)
                                else v).to_markdown(index=False), ""]
        if not self.valid_table.empty:
            lines += ["## Validation split", "", VALID_NOTE, "",
                      self.valid_table.to_markdown(index=False), ""]
        for section in self.sections:
            lines += [f"## {section.title}", "", *[f"{p}  " for p in section.paragraphs], ""]
            if section.table is not None:
                lines += [section.table.to_markdown(index=False), ""]
        if self.cold is not None:
            lines += cold.markdown(self.cold)
        if self.describers is not None:
            lines += self.describers.markdown()
        lines += ["## Figures", ""]
        for fig in self.figs:
            lines += [f"![{fig.name}](figures/{fig.name}.png)", "", f"*{fig.caption}*", ""]
        lines += [f"> {note}" for note in self.notes] + [""]
        if self.cases:
            lines += ["## Case studies", "", self.case_note(), ""]
            for case in self.cases:
                lines += self._case_markdown(case)
        path = self.workdir.report_dir / "report.md"
        write_text(path, "\n".join(lines))
        return path

    def _md_item(self, item: int, hit: bool | None = None) -> str:
        title, desc = self.item_text(item, 100)
        img = f"![](figures/items/{item}.jpg) " if self.thumb(item) else ""
        mark = " **✓ hit**" if hit else ""
        text = f"{img}{item}: {title}{mark}"
        if desc:
            text += f" — *{desc}*"
        return text.replace("|", "\\|").replace("\n", " ")

    def _case_markdown(self, case: CaseStudy) -> list[str]:
        a, b = self.compare
        lines = [f"### User {case.user_id} ({case.reason})", "",
                 f"{self.metric}: {a} {case.values[a]:.3f}, {b} {case.values[b]:.3f}; "
                 f"{len(case.targets)} test items. History ({len(case.history)} items):", "",
                 " ".join(self._md_item(i) for i in case.history[:30]), "",
                 f"| rank | {a} | {b} |", "|---|---|---|"]
        for rank, left, right in self._side_by_side(case, self._md_item):
            lines.append(f"| {rank} | {left} | {right} |")
        return lines + [""]

    def _side_by_side(self, case: CaseStudy, render) -> list[tuple[int, str, str]]:
        """(rank, cell of the first representation, cell of the second), hits marked by
        `render(item, is_hit)`; the shorter list gets empty cells."""
        tops = [case.tops[name] for name in self.compare]
        rows = []
        for rank in range(max(len(t) for t in tops)):
            cells = [render(top[rank], top[rank] in case.targets) if rank < len(top) else ""
                     for top in tops]
            rows.append((rank + 1, cells[0], cells[1]))
        return rows

    def write_html(self) -> Path:
        e = html.escape
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>lvlmrec report</title><style>{CSS}</style></head><body>",
                 "<h1>lvlmrec report</h1>"]
        if self.res.run["protocol"] != "full":
            parts.append(f"<p class='protocol'>{e(self.res.run['protocol_label'])}</p>")
        header = self.describers.header() if self.describers is not None else []
        parts += [f"<p>{_inline_markdown(e(s))}</p>" for s in self.intro() + header]
        if self.findings:
            parts.append("<ul class='findings'>" + "".join(
                f"<li>{_inline_markdown(e(s))}</li>" for s in self.findings) + "</ul>")
        parts += [f"<h2>Results (test split, protocol: {e(self.res.run['protocol'])})</h2>",
                  self.table.to_html(index=False, classes="results", border=0, escape=True)]
        if not self.valid_table.empty:
            parts += ["<h2>Validation split</h2>", f"<p>{e(VALID_NOTE)}</p>",
                      self.valid_table.to_html(index=False, classes="results", border=0,
                                               escape=True)]
        for section in self.sections:
            parts.append(f"<h2>{e(section.title)}</h2>")
            parts += [f"<p>{_inline_markdown(e(p))}</p>" for p in section.paragraphs]
            if section.table is not None:
                parts.append(section.table.to_html(index=False, classes="results", border=0,
                                                   escape=True))
        if self.cold is not None:
            parts.append(cold.html(self.cold, _inline_markdown))
        if self.describers is not None:
            parts += self.describers.html(_data_uri)
        parts.append("<h2>Figures</h2>")
        for fig in self.figs:
            parts.append(f"<figure><img alt='{e(fig.name)}' src='{_data_uri(fig.png, 'png')}'>"
                         f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        parts += [f"<p class='note'>{_inline_markdown(e(note))}</p>" for note in self.notes]
        if self.cases:
            parts += ["<h2>Case studies</h2>", f"<p>{e(self.case_note())}</p>"]
            for case in self.cases:
                parts.append(self._case_html(case))
        parts.append("</body></html>")
        path = self.workdir.report_dir / "report.html"
        write_text(path, "\n".join(parts))
        return path

    def _html_item(self, item: int, hit: bool | None = None) -> str:
        e = html.escape
        title, desc = self.item_text(item)
        data = self.thumb(item)
        img = f"<img src='{_data_uri(data, 'jpeg')}' alt=''>" if data else \
            "<div class='noimg'>no image</div>"
        cls = "item hit" if hit else "item"
        mark = "<span class='mark'>✓ hit</span>" if hit else ""
        return (f"<div class='{cls}'>{img}<div><b>{e(title)}</b> {mark}"
                f"<div class='id'>item {item}</div><div class='desc'>{e(desc)}</div></div></div>")

    def _case_html(self, case: CaseStudy) -> str:
        e = html.escape
        a, b = self.compare
        history = "".join(f"<div class='thumb'>{self._thumb_html(i)}"
                          f"<span>{e(self.titles[i])}</span></div>" for i in case.history[:30])
        rows = []
        for rank, left, right in self._side_by_side(case, self._html_item):
            rows.append(f"<tr><td class='rank'>{rank}</td><td>{left}</td>"
                        f"<td>{right}</td></tr>")
        return (f"<section class='case'><h3>User {case.user_id}</h3><p>{e(case.reason)}; "
                f"{e(self.metric)}: {e(a)} {case.values[a]:.3f}, {e(b)} {case.values[b]:.3f}; "
                f"{len(case.targets)} test items.</p>"
                f"<h4>History ({len(case.history)} items)</h4><div class='strip'>{history}</div>"
                f"<table class='tops'><colgroup><col class='rank'><col><col></colgroup>"
                f"<tr><th>rank</th><th>{e(a)}</th><th>{e(b)}</th></tr>"
                + "".join(rows) + "</table></section>")

    def _thumb_html(self, item: int) -> str:
        data = self.thumb(item)
        return f"<img src='{_data_uri(data, 'jpeg')}' alt=''>" if data else \
            "<div class='noimg'>no image</div>"


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _inline_markdown(text: str) -> str:
    """`x` -> <code>x</code>, then **x** -> <b>x</b> outside code, in escaped text."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            bold = part.split("**")
            out.append("".join(f"<b>{p}</b>" if j % 2 else p for j, p in enumerate(bold)))
    return "".join(out)


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1, h2, h3 { color: #123; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.protocol { background: #fff3cd; border: 1px solid #e0c060; padding: .6em; font-weight: bold; }
table.results { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
table.results th, table.results td { padding: 4px 8px; border-bottom: 1px solid #e4e4e4;
       text-align: right; white-space: nowrap; }
table.results td:first-child, table.results th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { font-size: 13px; color: #555; }
.note { color: #7a5b00; font-size: 13px; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; }
.thumb { width: 96px; font-size: 10px; text-align: center; }
.thumb img, .item img { width: 96px; height: 96px; object-fit: contain; background: #f6f6f6; }
.noimg { width: 96px; height: 96px; background: #eee; color: #999; font-size: 11px;
         display: flex; align-items: center; justify-content: center; }
table.tops { border-collapse: collapse; width: 100%; margin-top: .8em; table-layout: fixed; }
table.tops col.rank { width: 3.5em; }
table.tops td, table.tops th { border-bottom: 1px solid #eee; vertical-align: top;
       padding: 4px; }
table.tops td.rank { text-align: center; font-weight: bold; }
.item { display: flex; gap: 8px; font-size: 12px; padding: 3px; }
.item.hit { background: #e3f6e3; outline: 2px solid #3a3; }
.mark { color: #1a7f1a; font-weight: bold; }
.id { color: #888; font-size: 11px; } .desc { color: #444; }
.case { margin-bottom: 2.5em; }
.findings li { margin: .3em 0; }
"""
