"""benchmarks/gpu_check.sh: argument handling (fast), and the whole check on a CPU (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_arguments_and_where_the_json_goes(tmp_path, monkeypatch):
    args = gpu_check.parse_args(["--tiny"])
    assert (args.items, args.llava_image_size, args.new_tokens, args.check_items) == (8, 336, 8, 8)
    args = gpu_check.parse_args([])
    assert (args.items, args.llava_image_size, args.new_tokens, args.qwen_image_size) == (
        256, 672, 150, 448)
    monkeypatch.delenv("OUT", raising=False)
    assert gpu_check.output_path(args) == ROOT / "benchmarks" / "results" / "gpu_check.json"
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.output_path(args) == tmp_path / "gpu_check.json"
    assert gpu_check.output_path(gpu_check.parse_args(["--json", "x.json"])) == Path("x.json")
    for bad in (["--skip", "vllm"], ["--items", "0"], ["--check-items", "0"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_without_a_gpu_it_asks_for_tiny(monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="pass --tiny"):
        gpu_check.main([])


@pytest.mark.slow
def test_tiny_check_runs_on_a_cpu_in_under_two_minutes(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "transformers" in proc.stdout and "torch" in proc.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    llava, qwen = report["steps"]["llava_next"], report["steps"]["qwen2_vl"]
    check = llava["token_check"]["fast_vs_generate"]
    assert check["items"] == 8 and check["identical"] == 8  # fp32 on a CPU: exact
    assert llava["generate"]["items"] == llava["fast"]["items"] == 8
    assert "verified" in qwen["fast_unsupported"] and qwen["generate"]["items"] == 8
    assert "fast" not in qwen and "error" not in llava and "error" not in qwen
    assert report["environment"]["transformers"] and report["seconds"] < 120
