#!/usr/bin/env bash
# One call on a GPU machine: build with the CUDA kernels, run the CUDA tests and the CUDA
# benchmarks; logs and the benchmark JSON land in $OUT (or ./gpu-out).
#   scripts/gpu_check.sh [test files...]    # e.g. as a device `run` command
# Knobs: SANITIZE="tests/test_x.py[::name] ..." first runs those under compute-sanitizer
# memcheck (without the caching allocator, which hides small out-of-bounds accesses);
# BLOCKING=1 sets CUDA_LAUNCH_BLOCKING; PROFILE=1; BENCH=0; BENCH_OPS; BENCH_ARGS;
# BENCH_TIMEOUT. pytest runs with faulthandler, so a crash names the test it died in.
# The lent GPU machines have no network: pip never reaches an index (PIP_NO_INDEX), and
# optional peers (SpikingJelly, fla) come as wheels in .whl/ when the caller carries them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
# The image's python3 is itself a venv holding the CUDA torch: a venv made from it would not
# see that torch, so .venv simply points at it (the machine is thrown away afterwards).
if ! .venv/bin/python -c "import torch" 2>/dev/null && python3 -c "import torch" 2>/dev/null; then
  rm -rf .venv
  ln -s "$(python3 -c 'import sys; print(sys.prefix)')" .venv
fi
start=$(date +%s)
SPIKEOPS_CUDA=ON scripts/setup.sh >"$OUT/setup.log" 2>&1 || { tail -60 "$OUT/setup.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
.venv/bin/python -m spikeops info | tee "$OUT/info.txt"
[ "${BLOCKING:-0}" = 1 ] && export CUDA_LAUNCH_BLOCKING=1
if [ -n "${SANITIZE:-}" ]; then
  # shellcheck disable=SC2086
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 400 compute-sanitizer --tool memcheck \
    --error-exitcode 9 .venv/bin/python -m pytest ${SANITIZE} -m cuda -x -q -rfE --tb=short \
    -p no:cacheprovider >"$OUT/sanitizer.log" 2>&1
  echo "compute-sanitizer rc=$?"; grep -E "ERROR SUMMARY|Invalid|passed|failed" "$OUT/sanitizer.log" | tail -20
fi
# Each test file in its own process, so a crash in one does not hide the others' results.
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(ls tests/test_*.py)
: >"$OUT/tests.log"
for f in "${files[@]}"; do
  timeout 240 .venv/bin/python -X faulthandler -m pytest "$f" -m cuda -q -rfE --tb=short \
    --timeout 120 -p no:cacheprovider \
    >>"$OUT/tests.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || echo "FAILED($rc): $f" | tee -a "$OUT/tests.log"
done
grep -E "passed|failed|FAILED|Error" "$OUT/tests.log" | tail -40
if [ -n "${PROFILE:-}" ]; then
  timeout 180 .venv/bin/python scripts/gpu_profile.py 2>&1 | tee "$OUT/profile.log" | tail -60
fi
[ "${BENCH:-1}" = 0 ] && exit 0
# The gated (not yet GPU-validated) ops refuse CUDA tensors without this; the bench measures
# them anyway (their tests above say whether they are right).
export SPIKEOPS_UNVALIDATED_CUDA=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
# BENCH_OPS: space-separated name patterns (one run and one JSON each); all entries if unset.
# shellcheck disable=SC2086
for op in ${BENCH_OPS:-all}; do
  [ "$op" = all ] && op=""
  timeout ${BENCH_TIMEOUT:-240} .venv/bin/python -m spikeops bench --device cuda ${BENCH_ARGS:-} ${op:+--op "$op"} \
    --json "$OUT/$gpu-$(date +%F)${op:+-$op}.json" >"$OUT/bench${op:+-$op}.log" 2>&1
  echo "bench $op rc=$?"; sed -n '/^┏/,$p' "$OUT/bench${op:+-$op}.log" | tail -25
done
