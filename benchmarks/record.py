"""The CPU-speed benchmarks' way of writing results: `benchmarks/_results.py`'s format
(date, commit, machine, load before and after, command, then the figures under "results"),
so every JSON the docs quote carries the same provenance (tests/test_docs_figures.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from _results import Load, save_results


def run_record(results: dict[str, Any], load_before: tuple[float, ...] | None = None
               ) -> dict[str, Any]:
    """`results` with the load before the measurement (`os.getloadavg()` taken then)."""
    load = Load()
    if load_before is not None:
        load.before = round(load_before[0], 2)
    return {"results": results, "load": load}


def write_result(path: str | os.PathLike, record: dict[str, Any]) -> None:
    path = Path(path)
    save_results(path.stem, record["results"], record["load"], path)
