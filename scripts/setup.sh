#!/usr/bin/env bash
# Sets up ./.venv and builds spikeops into it. Safe to run again (incremental build).
#   - reuses a torch that is already importable (a CUDA torch on a GPU machine);
#     otherwise installs ${SPIKEOPS_TORCH:-torch==2.13.0}
#   - builds with --no-build-isolation against that torch
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  # System site-packages stay visible so a preinstalled (CUDA) torch is used as it is.
  "$PYTHON" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
PIP=("$VPY" -m pip --disable-pip-version-check -q)

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: no importable torch; installing ${SPIKEOPS_TORCH:-torch==2.13.0}"
  "${PIP[@]}" install "${SPIKEOPS_TORCH:-torch==2.13.0}"
fi
"${PIP[@]}" install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" "ninja>=1.10" \
  numpy "pytest>=7" "pytest-benchmark>=4" tqdm rich
# Peers for the benchmarks and the parity tests; SpikingJelly's pinned deps would pull
# another torch, so it comes without them (loguru is all its import needs).
"${PIP[@]}" install --no-deps "spikingjelly==2.0.0" loguru \
  || echo "setup: SpikingJelly not installed; peer columns and parity tests will be skipped"
# Parallel compile on every core; the build dir (build/) makes re-runs incremental.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  "${PIP[@]}" install --no-build-isolation --no-deps .
"$VPY" -c "import spikeops, sys; i = spikeops.info(); sys.exit(0 if i['extension_loaded'] else 1)" \
  || { echo "setup: spikeops built but its extension does not load"; exit 1; }
