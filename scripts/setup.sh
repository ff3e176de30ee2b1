#!/usr/bin/env bash
# Sets up ./.venv and builds spikeops into it. Safe to run again (incremental build).
#   - reuses a torch that is already importable (a CUDA torch on a GPU machine);
#     otherwise installs ${SPIKEOPS_TORCH:-torch==2.13.0}
#   - installs only the build / test tools that are missing (GPU machines have them and
#     no network), then builds with --no-build-isolation against that torch
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
  # Word-split on purpose: SPIKEOPS_TORCH may carry pip options, e.g.
  # "torch --index-url https://download.pytorch.org/whl/cpu" for a CPU-only wheel.
  # shellcheck disable=SC2086
  "${PIP[@]}" install ${SPIKEOPS_TORCH:-torch==2.13.0}
fi

# "requirement:import name" pairs; prints the requirements whose module is missing.
missing() {
  "$VPY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(r for r, m in (a.split(":") for a in sys.argv[1:])
               if importlib.util.find_spec(m) is None))
EOF
}
# cmake and ninja may come from the system instead of PyPI.
need_tools=()
if [ -n "$(missing ninja:ninja)" ] && ! command -v ninja >/dev/null 2>&1; then
  need_tools+=("ninja>=1.10")
fi
if [ -n "$(missing cmake:cmake)" ] && ! cmake --version 2>/dev/null |
    awk 'NR==1 {split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 24))}'; then
  need_tools+=("cmake>=3.24")
fi
required=$(missing "scikit-build-core>=0.10:scikit_build_core" "pybind11>=2.12:pybind11" \
  "numpy:numpy" "pytest>=7:pytest")
if [ -n "$required" ] || [ ${#need_tools[@]} -gt 0 ]; then
  # shellcheck disable=SC2086
  "${PIP[@]}" install $required ${need_tools[@]+"${need_tools[@]}"}
fi
# Demo and benchmark extras and peers: the demo needs scikit-learn, matplotlib and tqdm; the
# test suite skips the demo tests without them. SpikingJelly's pinned deps would pull
# another torch, so it comes without them (loguru is all its import needs).
optional=$(missing "scikit-learn:sklearn" "matplotlib:matplotlib" "pytest-benchmark>=4:pytest_benchmark" \
  "tqdm:tqdm" "rich:rich" "loguru:loguru")
if [ -n "$optional" ]; then
  # shellcheck disable=SC2086
  "${PIP[@]}" install $optional || echo "setup: could not install $optional (optional)"
fi
if [ -n "$(missing spikingjelly:spikingjelly)" ]; then
  "${PIP[@]}" install --no-deps "spikingjelly==2.0.0" \
    || echo "setup: SpikingJelly not installed; peer columns and parity tests will be skipped"
fi

# Parallel compile on every core; the build dir (build/) makes re-runs incremental.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  "${PIP[@]}" install --no-build-isolation --no-deps .
"$VPY" -c "import spikeops, sys; i = spikeops.info(); sys.exit(0 if i['extension_loaded'] else 1)" \
  || { echo "setup: spikeops built but its extension does not load"; exit 1; }
