#!/usr/bin/env bash
# The GPU check's one command on an offline GPU machine (Python 3.12 and torch with CUDA, no package registry,
# nothing installed between loans; this checkout copied there with the wheels of `bash scripts/gpu_wheels.sh`
# carried in .whl/):
#   bash scripts/gpu_launch.sh [gpu_check.py arguments]      # e.g. --cpu --tiny; with $OUT set, writes there
# Installs the wheels with --no-index into a folder of its own (nothing else changes), puts that folder and
# this checkout on PYTHONPATH (no install of testbed), checks every import before any work, then runs the check.
# PYTHON, GPU_WHEELS and GPU_SITE choose the interpreter, the wheels and that folder (gpu_rehearse.sh sets them).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-.whl}
site=${GPU_SITE:-/tmp/testbed-site}
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl
else
  echo "no wheels in $wheels (bash scripts/gpu_wheels.sh makes them): using what $python has" >&2
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$python" scripts/check_imports.py
if [[ -z "${OUT:-}" ]]; then
  exec "$python" scripts/gpu_check.py "$@"
fi
# The JSON, its table (gpu_check.txt) and the whole log into $OUT.
"$python" scripts/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
