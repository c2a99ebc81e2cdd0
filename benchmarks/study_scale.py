"""The whole pipeline on CPU at the study's scale: time and peak memory per stage.

A synthetic archive of the study's size (23,318 users, 38,493 items, 128 px images;
`--scale` shrinks both) goes through prepare, describe (the attributes describer),
encode (all-MiniLM-L6-v2 text, EfficientNet-Lite0 images: the shared image pass), the
twelve study representations (the fusions and SMORE with a fixed small number of epochs,
`--epochs`) and evaluate (full-catalog ranking for every user). Each stage runs in its
own process (`lvlmrec run --only STAGE`), so its peak memory (max RSS) is its own. Prints
one line per stage and writes JSON (date, machine, load, command) to
benchmarks/results/study_scale[_<scale>].json.

    python benchmarks/study_scale.py [--scale 1.0] [--epochs 1] [--workdir /tmp/study]
    python benchmarks/study_scale.py --config src/lvlmrec/configs/demo.yaml  # any config,
        # every stage including report, e.g. the demo's per-stage CPU time and memory

Full training is then about (epochs to convergence) x (the fit's seconds per epoch):
docs/benchmarks.md gives the extrapolation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from record import run_record, write_result

USERS, ITEMS = 23_318, 38_493
STAGES = ("prepare", "describe", "encode", "represent", "evaluate")


def study_config(scale: float, epochs: int) -> dict:
    fusion = {"epochs": epochs, "patience": epochs}
    smore = {"epochs": epochs, "patience": epochs, "eval_every": epochs}

    def s(name, kind, text=None, vision=None, params=None):
        row = {"name": name, "kind": kind}
        row.update({k: v for k, v in (("text", text), ("vision", vision), ("params", params))
                    if v is not None})
        return row

    strategies = [
        s("lvlm_text", "text", "description"),
        s("title_text", "text", "title"),
        s("title_description_text", "text", "title_description"),
        s("lvlm_vision_attention", "attention", "description", "efficientnet", fusion),
        s("lvlm_vision_concat", "concat", "description", "efficientnet"),
        s("lvlm_vision_naive", "naive", "description", "efficientnet"),
        s("title_vision_attention", "attention", "title", "efficientnet", fusion),
        s("title_vision_concat", "concat", "title", "efficientnet"),
        s("title_vision_naive", "naive", "title", "efficientnet"),
        s("gating_fusion", "gating", "title", "efficientnet", fusion),
        s("vision_only", "vision", vision="efficientnet"),
        s("smore_lvlm_vision", "smore", "description", "efficientnet", smore),
    ]
    return {
        "seed": 0,
        "dataset": {"format": "synthetic", "n_items": max(50, int(ITEMS * scale)),
                    "n_users": max(20, int(USERS * scale)), "seed": 0, "image_size": 128},
        "describe": {"backend": "attributes", "batch_size": 64},
        "encode": {"text_model": "all-MiniLM-L6-v2", "image_model": "efficientnet-lite0"},
        "represent": {"strategies": strategies},
        "evaluate": {"ks": [10, 20], "baseline": "title_text"},
    }


def run_stage(stage: str, config: Path, workdir: Path) -> dict:
    cmd = [sys.executable, "-m", "lvlmrec.cli", "run", "--config", str(config),
           "--workdir", str(workdir), "--only", stage, "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(output[-3000:])
        raise SystemExit(f"stage {stage} failed with status {proc.returncode}")
    row = {"stage": stage, "wall_s": round(wall, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    print(f"{stage:<10} {row['wall_s']:8.1f} s wall {row['cpu_s']:8.1f} s CPU "
          f"{row['peak_rss_mib']:7d} MiB peak", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("runs/study_scale"))
    parser.add_argument("--config", type=Path, help="run this config's stages instead")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.config:
        config, stages = args.config, (*STAGES, "report")
        cfg = yaml.safe_load(config.read_text())
        name = f"stages_{config.stem}"
    else:
        config, stages = args.workdir.parent / f"{args.workdir.name}.yaml", STAGES
        cfg = study_config(args.scale, args.epochs)
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        name = "study_scale" + ("" if args.scale == 1.0 else f"_{args.scale:g}")
    print(f"{cfg['dataset'].get('n_users')} users, {cfg['dataset'].get('n_items')} items, "
          f"{len(cfg['represent']['strategies'])} representations")
    rows = [run_stage(stage, config, args.workdir) for stage in stages]
    out = args.out or Path(__file__).parent / "results" / f"{name}.json"
    write_result(out, run_record({"config": str(config), "scale": args.scale,
                                  "epochs": args.epochs,
                                  "n_users": cfg["dataset"].get("n_users"),
                                  "n_items": cfg["dataset"].get("n_items"), "stages": rows,
                                  "total_wall_s": round(sum(r["wall_s"] for r in rows), 1)},
                                 load_before))


if __name__ == "__main__":
    main()
