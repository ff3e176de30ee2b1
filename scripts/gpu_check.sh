#!/usr/bin/env bash
# One call on a GPU machine: build with the CUDA kernels, run the whole test suite
# (CUDA tests included) and the CUDA benchmarks; results land in $OUT (or ./gpu-out).
#   scripts/gpu_check.sh            # e.g. as a device `run` command
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
SPIKEOPS_CUDA=ON scripts/setup.sh 2>&1 | tail -20 | tee "$OUT/setup.log"
.venv/bin/python -m spikeops info | tee "$OUT/info.txt"
.venv/bin/python -m pytest tests -q -rs 2>&1 | tail -40 | tee "$OUT/tests.log"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
.venv/bin/python -m spikeops bench --device cuda --json "$OUT/$gpu-$(date +%F).json" 2>&1 |
  tail -30 | tee "$OUT/bench.log"
