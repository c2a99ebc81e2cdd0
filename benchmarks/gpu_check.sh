#!/usr/bin/env bash
# One prepared GPU check of the describe engines, in one call of at most 8 minutes:
# versions, fast-vs-generate token agreement and timing on LLaVA-NeXT-7B (bf16, 672 px),
# Qwen2-VL-7B at 448 px through the hf backend. Random weights from configs: nothing is
# downloaded. Writes gpu_check.json to $OUT when set, else to benchmarks/results/.
#   bash benchmarks/gpu_check.sh           # on a GPU
#   bash benchmarks/gpu_check.sh --tiny    # the same code on a CPU, 2-layer models (< 2 min)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # random weights: never reach for the hub
echo "== versions"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
"$python" -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print("transformers", transformers.__version__)'
echo "== check"
# 470 s for the check itself leaves the 8-minute call room to start and write
exec timeout --signal=TERM --kill-after=10 "${GPU_CHECK_TIMEOUT:-470}" \
    "$python" "$here/gpu_check.py" "$@"
