#!/usr/bin/env bash
# Wheels for the packages testbed needs that an offline GPU machine's image lacks (it has no registry access):
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION] [DIR]    # default: 3.12 (the image's) into .whl/ (git-ignored)
# scripts/gpu_launch.sh installs them there with --no-index; scripts/gpu_rehearse.sh makes a set for the local
# Python. All are pure Python (multiprocess ships one per Python version), so the platform tags only matter
# for pip's matching. Versions: those the tests pass with; fsspec is pinned because datasets caps it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
dir=${2:-.whl}
packages=(datasets==5.2.0 evaluate==0.4.6 submitit==1.5.4 datasketch==2.0.0 dill==0.4.1 multiprocess==0.70.19
          fsspec==2026.9.0)
mkdir -p "$dir"
rm -f "$dir"/*.whl  # one version of each: two would stop the install
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dir" "${packages[@]}"
du -ch "$dir"/*.whl | tail -1
