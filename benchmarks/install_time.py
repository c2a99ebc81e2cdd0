"""Time a clean install the way `make demo` (or `make test`) does it, into a throwaway venv.

Runs `make <target> VENV=<fresh folder>` from the repository root and records the wall
seconds and the CPU seconds of make and everything it ran (pip, the compiler of bytecode
if any). `--makefile` times another Makefile (e.g. an older one) the same way. Writes JSON
(date, machine, load, command) to benchmarks/results/install_time_<target>.json.

    python benchmarks/install_time.py [--target setup-core] [--makefile Makefile]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from record import run_record, write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="setup-core")
    parser.add_argument("--makefile", type=Path, default=ROOT / "Makefile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    venv = Path(tempfile.mkdtemp(prefix="lvlmrec-venv-"))
    shutil.rmtree(venv)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["make", "-f", str(args.makefile), args.target, f"VENV={venv}"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.rmtree(venv, ignore_errors=True)
    print(f"make {args.target}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    out = args.out or Path(__file__).parent / "results" / f"install_time_{args.target}.json"
    write_result(out, run_record({"target": args.target, "makefile": str(args.makefile),
                                  "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)},
                                 load_before))


if __name__ == "__main__":
    main()
