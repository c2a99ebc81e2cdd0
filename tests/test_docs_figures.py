"""Every benchmark figure the README and docs quote comes from a committed JSON.

Convention (docs/benchmarks.md): a quoted figure is a link to the JSON its script wrote,
`[6.6 s](benchmarks/results/prepare_speed.json)` (from docs/: `../benchmarks/...`). The
test checks that each linked JSON exists with its provenance (date, machine, load,
command) and holds every number of the link's text at the quoted precision; and that a
paragraph that names a benchmark script quotes no timing, memory or speed figure outside
such a link.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]+)\]\(((?:\.\./)?benchmarks/results/[\w.-]+\.json)\)")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
#: a number with a unit of time, memory or speed: what a benchmark measures
FIGURE = re.compile(r"(?<![\w.\-])(\d[\d,]*(?:\.\d+)?)\s?(ms|s|MiB|MB|GiB|GB|items/s|img/s|x)"
                    r"(?![\w/])")
SCRIPT = re.compile(r"benchmarks/(?!results/)\w+\.py")


def _numbers(node) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [x for v in node.values() for x in _numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in _numbers(v)]
    return []


def _held(quoted: str, values: list[float]) -> bool:
    """`quoted` (as written: "18.8", "38,493", "136") equals a value rounded alike."""
    q = float(quoted.replace(",", ""))
    half = 0.5 * 10 ** -len(quoted.partition(".")[2])
    return any(abs(v - q) <= half + 1e-9 for v in values)


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n|\n(?=\|)|\n(?=- )", text) if p.strip()]


def _links():
    for doc in DOCS:
        for text, target in LINK.findall(re.sub(r"`[^`\n]*`", "", doc.read_text())):
            yield doc, text, target


@pytest.mark.parametrize("doc,text,target", list(_links()),
                         ids=lambda v: v.name if isinstance(v, Path) else str(v)[:30])
def test_linked_figures_are_in_their_json(doc, text, target):
    path = (doc.parent / target).resolve()
    assert path.is_file(), f"{doc.name}: [{text}] links to {target}, which does not exist"
    record = json.loads(path.read_text())
    for key in ("date", "machine", "load", "command", "results"):
        assert record.get(key), f"{target}: no {key!r} (write it with benchmarks/_results.py)"
    values = _numbers(record["results"])
    for number in NUMBER.findall(text):  # a link may also just name the JSON
        assert _held(number, values), f"{doc.name}: {number} in [{text}] is not in {target}"


def test_benchmark_paragraphs_quote_figures_only_through_their_json():
    problems = []
    for doc in DOCS:
        for para in _paragraphs(doc.read_text()):
            if not SCRIPT.search(para):
                continue
            bare = LINK.sub("", re.sub(r"`[^`]*`", "", para))
            for number, unit in FIGURE.findall(bare):
                problems.append(f"{doc.relative_to(ROOT)}: {number} {unit} in "
                                f"{para.strip()[:70]!r}...")
    assert not problems, "figures with no JSON behind them:\n" + "\n".join(problems)


def test_the_convention_catches_a_wrong_figure(tmp_path):
    record = {"results": {"p99_ms": 26.84, "rows": [{"n": 38493}]}}
    values = _numbers(record["results"])
    assert _held("26.8", values) and _held("38,493", values) and _held("27", values)
    assert not _held("18.8", values) and not _held("26.9", values) and not _held("38,490", values)
    para = "`benchmarks/x.py` gives p99 [26.8 ms](benchmarks/results/x.json), 4.2 s to build"
    bare = LINK.sub("", re.sub(r"`[^`]*`", "", para))
    assert FIGURE.findall(bare) == [("4.2", "s")]
