"""The description audit: how complete, varied and faithful each describer's texts are.

Per describer (`describe.describers`): coverage and failures; items/s and the seconds its
texts took (summed per item in the store, so resumed runs add up); mean words and tokens
(the text encoder's tokenizer, which truncates what it reads); distinct descriptions (the
share of items whose text is shared with another item: such items look alike to every
text representation); distinct-2 (distinct word bigrams / all bigrams); title overlap (the
share of a title's words the text repeats); and, where items carry labelled attributes,
fidelity: the share of labelled items whose text names the labelled value (the colour it
names first, any word for the category or the pattern; synonyms in `synonyms.json`; for a
structured describer, in its parsed attributes, category then colours then pattern).

Then downstream (`describer_downstream`, run by the evaluate stage): each describer's
text-only Recall@10 / NDCG@10 with bootstrap CIs, and paired tests between describers
(t-test and sign-flip, Benjamini-Hochberg across the pairs), from the per-user results
of the text-only strategies that read `description:<name>`. Everything lands in
`results/describers.csv` and `results/describer_pairs.csv`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvlmrec.config import DescribeConfig
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import ConfigError
from lvlmrec.workdir import Workdir, read_json, write_csv, write_json

FIELDS = ("colour", "category", "pattern")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@functools.cache
def synonyms() -> dict[str, dict[str, list[str]]]:
    """field -> canonical value -> words naming it (the shipped table)."""
    data = json.loads((Path(__file__).parent / "synonyms.json").read_text())
    return {f: data[f] for f in FIELDS}


@functools.cache
def _matcher(field: str) -> tuple[re.Pattern, dict[str, str]]:
    """One regex over every synonym of a field (longest first) and synonym -> value."""
    to_value = {w.lower(): v for v, words in synonyms()[field].items() for w in [v, *words]}
    words = sorted(to_value, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")s?\b")
    return pattern, to_value


def canonical(field: str, label: str) -> str:
    """A label's canonical value ("Gray" -> "grey"); unknown labels stay lower-cased."""
    label = str(label).strip().lower()
    return _matcher(field)[1].get(label, label)


def named_values(field: str, text: str) -> list[str]:
    """The values of `field` a text names, in the order it names them."""
    pattern, to_value = _matcher(field)
    return [to_value[m.group(1)] for m in pattern.finditer(text.lower())]


def fidelity(field: str, texts: Sequence[str | None], labels: Sequence[str]) -> float | None:
    """Share of labelled, described items whose text names the label: the colour named
    first (colour), any mention (category, pattern). None when no item qualifies."""
    hits = []
    for text, label in zip(texts, labels):
        if not text or label is None or not str(label).strip():
            continue
        named = named_values(field, text)
        value = canonical(field, label)
        hits.append(bool(named) and (named[0] == value if field == "colour"
                                     else value in named))
    return float(np.mean(hits)) if hits else None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def text_stats(texts: dict[int, str], titles: Sequence[str],
               tokenize: Callable[[list[str]], list[int]] | None = None) -> dict[str, Any]:
    """Length, variety and title overlap of one describer's texts (item id -> text)."""
    ids = sorted(texts)
    values = [texts[i] for i in ids]
    if not values:
        return {"mean_words": None, "mean_tokens": None, "distinct_texts": 0,
                "shared_text_share": None, "distinct_2": None, "title_overlap": None}
    words = [_words(t) for t in values]
    counts = Counter(" ".join(w) for w in words)
    shared = sum(counts[" ".join(w)] > 1 for w in words)
    bigrams = [b for w in words for b in zip(w, w[1:])]
    overlaps = []
    for i, w in zip(ids, words):
        title = set(_words(titles[i])) if i < len(titles) else set()
        if title:
            overlaps.append(len(title & set(w)) / len(title))
    n_tokens = tokenize(values) if tokenize is not None else [len(w) for w in words]
    return {
        "mean_words": float(np.mean([len(w) for w in words])),
        "mean_tokens": float(np.mean(n_tokens)),
        "distinct_texts": len(counts),
        "shared_text_share": shared / len(values),
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None,
        "title_overlap": float(np.mean(overlaps)) if overlaps else None,
    }


def audit_labels(ds: Dataset, cfg: DescribeConfig) -> dict[str, list[str]]:
    """The labelled attributes to check texts against: `describe.audit` columns, else the
    synthetic catalog's ground truth (colour, category, pattern) when present."""
    items = ds.items
    if cfg.audit:
        missing = [f"describe.audit.{f}: no items column {c!r}"
                   for f, c in cfg.audit.items() if c not in items.columns]
        if missing:
            raise ConfigError("; ".join(missing) + f" (columns: {', '.join(items.columns)})")
        return {f: items[c].fillna("").astype(str).tolist() for f, c in cfg.audit.items()}
    return {f: items[f].fillna("").astype(str).tolist() for f in FIELDS if f in items.columns}


def audit_describer(record: dict[str, Any], texts: dict[int, str], titles: Sequence[str],
                    labels: dict[str, list[str]],
                    tokenize: Callable[[list[str]], list[int]] | None = None,
                    fidelity_texts: dict[int, str] | None = None) -> dict[str, Any]:
    """One row of the audit: the describer's record, text statistics, and fidelity (of
    `fidelity_texts` when given: a structured describer's parsed attributes)."""
    n_items = int(record.get("n_items") or len(titles))
    seconds = record.get("seconds")
    row: dict[str, Any] = {
        "describer": record.get("name"), "status": record.get("status"),
        "backend": record.get("backend"), "model": record.get("model"),
        "prompt": record.get("prompt_name"), "prompt_hash": record.get("prompt_hash"),
        "n_items": n_items, "n_texts": len(texts),
        "coverage": len(texts) / n_items if n_items else None,
        "n_failed": record.get("n_failed"), "seconds": seconds,
        "items_per_second": len(texts) / seconds if seconds else None,
    }
    row.update(text_stats(texts, titles, tokenize))
    judged = texts if fidelity_texts is None else fidelity_texts
    by_item = [judged.get(i) for i in range(len(titles))]
    for field in FIELDS:
        row[f"fidelity_{field}"] = (fidelity(field, by_item, labels[field])
                                    if field in labels else None)
    return row


def text_tokenizer(model: str) -> Callable[[list[str]], list[int]] | None:
    """Token counts under the text encoder's tokenizer (local models only), else None."""
    import os

    from lvlmrec.encode.text import bundled_model_path

    try:
        path = bundled_model_path() if model == "all-MiniLM-L6-v2" else model
        if not os.path.isdir(path):
            return None
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # noqa: BLE001 - token counts fall back to words
        return None
    return lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def audit_path(workdir: Workdir) -> Path:
    return workdir.descriptions_dir / "audit.json"


def write_text_audit(workdir: Workdir, ds: Dataset, cfg: DescribeConfig,
                     records: dict[str, dict[str, Any]], text_model: str | None = None) -> Path:
    """The text part of the audit, one row per describer, to descriptions/audit.json."""
    from lvlmrec.describe.store import DescriptionStore

    labels = audit_labels(ds, cfg)
    titles = ds.items["title"].fillna("").astype(str).tolist()
    tokenize = text_tokenizer(text_model) if text_model else None
    rows = []
    with DescriptionStore(workdir.descriptions_db) as store:
        for name, record in records.items():
            texts = (store.texts(record["model"], record["prompt_hash"])
                     if record.get("prompt_hash") else {})
            if record.get("prompt_hash"):  # timing lives in the store, not in the record
                seconds = store.stats(record["model"], record["prompt_hash"])["seconds"]
                record = {**record, "seconds": round(seconds, 3)}
            parsed = None
            if record.get("structured"):
                from lvlmrec.describe.structured import render_attributes

                parsed = {i: render_attributes(json.loads(a)) for i, a in
                          store.attributes(record["model"], record["prompt_hash"]).items()}
            rows.append(audit_describer({**record, "name": name}, texts, titles, labels,
                                        tokenize, parsed))
    path = audit_path(workdir)
    write_json(path, rows)
    return path


# --------------------------------------------------------------------------- downstream
def describer_strategies(records: dict[str, dict[str, Any]],
                         strategies: Sequence[Any]) -> dict[str, str]:
    """Describer name -> the text-only strategy (mean scoring first) that reads its texts."""
    first = next(iter(records), None)
    out: dict[str, str] = {}
    ordered = sorted(strategies, key=lambda s: s.scoring != "mean")
    for name in records:
        for s in ordered:
            if s.kind == "text" and (s.text == f"description:{name}"
                                     or (name == first and s.text == "description")):
                out[name] = s.name
                break
    return out


def describer_downstream(per_user: pd.DataFrame, chosen: dict[str, str], metrics: list[str],
                         n_bootstrap: int = 1000, n_permutations: int = 2000, seed: int = 0
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per describer: mean and bootstrap CI of each metric; per pair of describers: the
    difference, paired t-test and sign-flip p-values, BH-adjusted across pairs)."""
    from lvlmrec.evaluate.stats import (
        _ci,
        benjamini_hochberg,
        bootstrap_means,
        paired_matrix,
        paired_ttest,
        sign_flip_pvalues,
    )

    names = list(chosen)
    if not names:
        return pd.DataFrame(columns=["describer"]), pd.DataFrame()
    rows = {n: {"describer": n, "strategy": chosen[n]} for n in names}
    pairs = list(itertools.combinations(names, 2))
    pair_rows = []
    for metric in metrics:
        values = paired_matrix(per_user, metric, [chosen[n] for n in names])
        draws = bootstrap_means(values, n_bootstrap, np.random.default_rng(seed))
        low, high = _ci(draws, 0.95)
        for j, n in enumerate(names):
            rows[n].update({metric: values[:, j].mean(), f"{metric}_low": low[j],
                            f"{metric}_high": high[j]})
        if not pairs:
            continue
        diffs = np.stack([values[:, names.index(a)] - values[:, names.index(b)]
                          for a, b in pairs], axis=1)
        _, p_t = paired_ttest(diffs)
        p_perm = sign_flip_pvalues(diffs, n_permutations, np.random.default_rng(seed))
        p_t_bh, p_perm_bh = benjamini_hochberg(p_t), benjamini_hochberg(p_perm)
        for k, (a, b) in enumerate(pairs):
            pair_rows.append({"metric": metric, "describer_a": a, "describer_b": b,
                              "mean_a": values[:, names.index(a)].mean(),
                              "mean_b": values[:, names.index(b)].mean(),
                              "difference": diffs[:, k].mean(), "p_ttest": p_t[k],
                              "p_ttest_bh": p_t_bh[k], "p_permutation": p_perm[k],
                              "p_permutation_bh": p_perm_bh[k], "n_users": len(values)})
    return pd.DataFrame(list(rows.values())), pd.DataFrame(pair_rows)


def describers_csv(workdir: Workdir) -> Path:
    return workdir.results_dir / "describers.csv"


def pairs_csv(workdir: Workdir) -> Path:
    return workdir.results_dir / "describer_pairs.csv"


DOWNSTREAM_METRICS = ("recall@10", "ndcg@10")
AUDIT_ORDER = ("describer", "status", "backend", "model", "prompt", "prompt_hash", "n_items",
               "n_texts", "coverage", "n_failed", "seconds", "items_per_second", "mean_words",
               "mean_tokens", "distinct_texts", "shared_text_share", "distinct_2",
               "title_overlap", "fidelity_colour", "fidelity_category", "fidelity_pattern",
               "strategy")


def write_describer_results(workdir: Workdir, strategies: Sequence[Any],
                            per_user_test: pd.DataFrame, n_bootstrap: int,
                            n_permutations: int, seed: int) -> list[Path]:
    """results/describers.csv (the audit plus downstream metrics per describer) and
    results/describer_pairs.csv; nothing when the run has no descriptions."""
    from lvlmrec.describe.run import description_sets

    path = audit_path(workdir)
    records = description_sets(workdir)
    if not path.is_file() or not records:
        return []
    audit = pd.DataFrame(read_json(path))
    chosen = describer_strategies(records, strategies)
    metrics = [m for m in DOWNSTREAM_METRICS if m in per_user_test.columns]
    down, pairs = describer_downstream(per_user_test, chosen, metrics, n_bootstrap,
                                       n_permutations, seed)
    table = audit.merge(down, on="describer", how="left") if len(down) else audit
    lead = [c for c in AUDIT_ORDER if c in table]
    table = table[lead + [c for c in table.columns if c not in lead]]
    write_csv(describers_csv(workdir), table)
    write_csv(pairs_csv(workdir), pairs)
    return [describers_csv(workdir), pairs_csv(workdir)]
