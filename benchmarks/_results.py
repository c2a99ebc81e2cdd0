"""Where benchmark figures live: `benchmarks/results/<name>.json`, with their provenance.

Every figure the README or docs quote comes from one of these files (tests/test_docs_figures.py
checks it): the script writes its numbers together with the date, the machine, how loaded
it was, and the exact command, so a reader can tell what was measured where and rerun it.

    from _results import Load, save_results
    load = Load()                       # before the measurement: samples the load average
    ...
    save_results("serve_latency", {"p99_ms": ...}, load)
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Load:
    """The 1-minute load average before and after a measurement: a loaded machine's
    timings are noisier and slower, and the JSON says so."""

    def __init__(self) -> None:
        self.before = _loadavg()
        self.started = time.time()

    def summary(self) -> dict[str, Any]:
        after = _loadavg()
        cores = os.cpu_count() or 1
        worst = max(x for x in (self.before, after) if x is not None) if (
            self.before is not None or after is not None) else None
        return {"loadavg_1m_before": self.before, "loadavg_1m_after": after, "cpu_count": cores,
                "under_load": worst is not None and worst > 0.5 * cores,
                "seconds": round(time.time() - self.started, 1)}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What ran it: CPU model and count, memory, GPU (when torch sees one), Python."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=RESULTS_DIR.parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_results(name: str, results: dict[str, Any], load: Load | None = None,
                 path: Path | None = None) -> Path:
    """Write `results` (the figures, plain numbers) with their provenance; returns the path."""
    path = path or RESULTS_DIR / f"{name}.json"
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(RESULTS_DIR.parent.parent)
    except ValueError:
        pass
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", shlex.quote(str(script)),
                             *map(shlex.quote, sys.argv[1:])]),
        "commit": _commit(),
        "machine": machine(),
        "load": load.summary() if load is not None else None,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {path}")
    return path
