"""The report's account of who wrote the texts, and how the describers compare.

- a header: every describer (backend, model, prompt name and hash, settings), the
  encoders, the seed, the config file and the stage timings;
- a "Describers" section: the audit table (`results/describers.csv`), bar charts of
  attribute fidelity and of text-only Recall@10 per describer, the paired tests between
  describers, and a gallery of items (image, title, every describer's text side by side).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.data.schema import Dataset
from lvlmrec.describe.audit import describers_csv, pairs_csv
from lvlmrec.describe.run import description_sets
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.encode.store import embedding_meta, list_embeddings
from lvlmrec.pipeline import STAGE_NAMES
from lvlmrec.report import figures
from lvlmrec.report.cases import thumbnail
from lvlmrec.workdir import StageBook, Workdir, write_bytes

N_GALLERY = 12
AUDIT_COLUMNS = {  # column -> header, in table order
    "describer": "describer", "prompt": "prompt", "coverage": "coverage",
    "n_failed": "failed", "items_per_second": "items/s", "seconds": "seconds",
    "mean_words": "words", "mean_tokens": "tokens", "shared_text_share": "shared text",
    "distinct_2": "distinct-2", "title_overlap": "title overlap",
    "fidelity_colour": "colour fid.", "fidelity_category": "category fid.",
    "fidelity_pattern": "pattern fid.", "recall@10": "Recall@10", "ndcg@10": "NDCG@10",
}


class DescribersSection:
    """Everything the report says about describers; empty when the run has none."""

    def __init__(self, workdir: Workdir, ds: Dataset, run: dict[str, Any]):
        self.workdir, self.ds, self.run = workdir, ds, run
        self.sets = description_sets(workdir)
        path = describers_csv(workdir)
        self.audit = pd.read_csv(path) if path.is_file() else pd.DataFrame()
        path = pairs_csv(workdir)
        self.pairs = pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 \
            else pd.DataFrame()
        self.gallery = self._gallery_items()
        self.texts = self._texts()
        self.figs = self._figures()

    # ------------------------------------------------------------------ content
    def header(self) -> list[str]:
        """Markdown lines: describers, encoders, seed, config, stage timings."""
        lines = []
        for name, r in self.sets.items():
            if r.get("status") == "failed":
                lines.append(f"Describer **{name}**: {r.get('backend')} "
                             f"`{r.get('model') or 'default model'}` — failed: {r.get('error')}")
                continue
            settings = ", ".join(f"{k}={v}" for k, v in (r.get("settings") or {}).items())
            prompt = (f"prompt `{r.get('prompt_name')}` (hash `{r.get('prompt_hash')}`"
                      f"{', title in prompt' if r.get('include_title') else ''})")
            lines.append(f"Describer **{name}**: {r.get('backend')} `{r.get('model')}`, "
                         f"{prompt}; {settings}; {r.get('n_texts', 0)} texts.")
        encoders = sorted({str(m["model"]) for name in list_embeddings(self.workdir)
                           if (m := embedding_meta(self.workdir, name)) and m.get("model")})
        if encoders:
            lines.append("Encoders: " + ", ".join(f"`{e}`" for e in encoders) + ".")
        book = StageBook(self.workdir)
        timings = [(s, rec.seconds) for s in STAGE_NAMES if (rec := book.get(s))]
        lines.append(f"Seed {self.run.get('seed', '?')}; config `{self.workdir.config_path}`"
                     + ("; stage seconds (last run of each): " + ", ".join(
                         f"{s} {t:.1f}" for s, t in timings) if timings else "") + ".")
        return lines

    def _gallery_items(self) -> list[int]:
        """N_GALLERY items spread over the catalog (seeded), images first."""
        n = self.ds.n_items
        rng = np.random.default_rng(self.run.get("seed", 0))
        picks = sorted(rng.choice(n, size=min(N_GALLERY, n), replace=False).tolist())
        return [int(i) for i in picks]

    def _texts(self) -> dict[str, dict[int, str]]:
        out: dict[str, dict[int, str]] = {}
        if not self.workdir.descriptions_db.is_file():
            return out
        with DescriptionStore(self.workdir.descriptions_db, read_only=True) as store:
            for name, r in self.sets.items():
                if r.get("prompt_hash"):
                    texts = store.texts(r["model"], r["prompt_hash"])
                    out[name] = {i: texts.get(i, "") for i in self.gallery}
        return out

    def _figures(self) -> list[tuple[str, str, bytes]]:
        """(name, caption, png) of the fidelity and Recall@10 bar charts."""
        if self.audit.empty:
            return []
        out = []
        fid = [c for c in ("fidelity_colour", "fidelity_category", "fidelity_pattern")
               if c in self.audit and self.audit[c].notna().any()]
        if fid:
            out.append(("describers_fidelity", "Attribute fidelity per describer: share of "
                        "labelled items whose text names the labelled value (colour: the "
                        "first colour named).",
                        figures.to_png(describer_bars(self.audit, fid, "share of items"))))
        if "recall@10" in self.audit and self.audit["recall@10"].notna().any():
            out.append(("describers_recall", "Text-only Recall@10 per describer (test "
                        "split), bootstrap 95% CIs.",
                        figures.to_png(describer_bars(self.audit, ["recall@10"],
                                                      "Recall@10", ci=True))))
        return out

    def table(self) -> pd.DataFrame:
        cols = [c for c in AUDIT_COLUMNS if c in self.audit]
        table = self.audit[cols].rename(columns=AUDIT_COLUMNS)
        return table.map(lambda v: f"{v:.3f}" if isinstance(v, float) and not np.isnan(v)
                         else ("–" if isinstance(v, float) else v))

    def pairs_table(self) -> pd.DataFrame:
        if self.pairs.empty:
            return self.pairs
        cols = ["metric", "describer_a", "describer_b", "difference", "p_ttest_bh",
                "p_permutation_bh"]
        return self.pairs[cols].map(lambda v: f"{v:.4f}" if isinstance(v, float) else v)

    @property
    def notes(self) -> list[str]:
        out = []
        if "recall@10" not in self.audit or self.audit["recall@10"].isna().any():
            out.append("A describer without Recall@10 has no text-only strategy reading its "
                       "texts: add `{kind: text, text: description:<name>}` to "
                       "represent.strategies.")
        return out

    # ------------------------------------------------------------------ rendering
    def write_files(self, folder: Path) -> None:
        for name, _, png in self.figs:
            write_bytes(folder / f"{name}.png", png)
        for item in self.gallery:
            data = self._thumb(item)
            if data is not None:
                write_bytes(folder / "items" / f"{item}.jpg", data)

    def _thumb(self, item: int) -> bytes | None:
        return thumbnail(self.ds.image_paths(self.workdir)[item])

    def markdown(self) -> list[str]:
        if self.audit.empty:
            return []
        lines = ["## Describers", "",
                 "One row per describer (`results/describers.csv`): coverage, speed, length, "
                 "variety (shared text: share of items whose text another item also has), "
                 "title overlap, attribute fidelity, and text-only test metrics.", "",
                 self.table().to_markdown(index=False), ""]
        for name, caption, _ in self.figs:
            lines += [f"![{name}](figures/{name}.png)", "", f"*{caption}*", ""]
        if not self.pairs.empty:
            lines += ["Paired tests between describers (Benjamini-Hochberg-adjusted p-values; "
                      "`results/describer_pairs.csv`):", "",
                      self.pairs_table().to_markdown(index=False), ""]
        lines += [f"> {n}" for n in self.notes] + [""]
        names = list(self.texts)
        if names:
            lines += ["### Gallery", "", "| item | " + " | ".join(names) + " |",
                      "|---" * (len(names) + 1) + "|"]
            titles = self.ds.items["title"].astype(str)
            for item in self.gallery:
                img = f"![](figures/items/{item}.jpg)<br>" if self._thumb(item) else ""
                cells = [_md_cell(self.texts[n].get(item, "")) for n in names]
                lines.append(f"| {img}{item}: {_md_cell(titles[item])} | "
                             + " | ".join(cells) + " |")
            lines.append("")
        return lines

    def html(self, data_uri) -> list[str]:
        if self.audit.empty:
            return []
        e = html.escape
        parts = ["<h2>Describers</h2>",
                 self.table().to_html(index=False, classes="results", border=0)]
        for name, caption, png in self.figs:
            parts.append(f"<figure><img alt='{e(name)}' src='{data_uri(png, 'png')}'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        if not self.pairs.empty:
            parts += ["<p>Paired tests between describers (BH-adjusted p-values):</p>",
                      self.pairs_table().to_html(index=False, classes="results", border=0)]
        parts += [f"<p class='note'>{e(n)}</p>" for n in self.notes]
        names = list(self.texts)
        if names:
            titles = self.ds.items["title"].astype(str)
            rows = ["<tr><th>item</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"]
            for item in self.gallery:
                data = self._thumb(item)
                img = f"<img src='{data_uri(data, 'jpeg')}' alt=''>" if data else ""
                rows.append(f"<tr><td><div class='item'>{img}<div><b>{e(titles[item])}</b>"
                            f"<div class='id'>item {item}</div></div></div></td>"
                            + "".join(f"<td class='desc'>{e(self.texts[n].get(item, ''))}</td>"
                                      for n in names) + "</tr>")
            parts += ["<h3>Gallery</h3>", "<table class='tops'>" + "".join(rows) + "</table>"]
        return parts


def describer_bars(audit: pd.DataFrame, columns: list[str], ylabel: str, ci: bool = False):
    """Grouped bars: one group per describer, one bar per column (CIs when asked)."""
    fig_width = max(5.0, 1.2 * len(audit) * len(columns) + 1.5)
    fig, ax = figures._subplots(figsize=(min(figures.FIG_WIDTH, fig_width), 3.4))  # shown at 100%
    width = 0.8 / len(columns)
    x = np.arange(len(audit))
    for j, col in enumerate(columns):
        values = audit[col].astype(float).fillna(0).to_numpy()
        err = None
        if ci and f"{col}_low" in audit:
            err = np.vstack([values - audit[f"{col}_low"].fillna(0).to_numpy(),
                             audit[f"{col}_high"].fillna(0).to_numpy() - values]).clip(min=0)
        ax.bar(x + (j - (len(columns) - 1) / 2) * width, values, width, yerr=err, capsize=3,
               label=col.replace("fidelity_", ""), color=figures.COLOURS[j % 10])
    ax.set_xticks(x, audit["describer"].astype(str).tolist(), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if len(columns) > 1:
        ax.legend(fontsize=8)
    return fig


def _md_cell(text: str, limit: int = 220) -> str:
    text = str(text)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "…"
    return text.replace("|", "\\|").replace("\n", " ")

