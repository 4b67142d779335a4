#!/usr/bin/env bash
# Rehearse, here, the GPU check's first run on an offline GPU machine: a venv holding only that image's packages
# (at the image's versions where they are known; torch is the 2.13.0 CPU wheel), the wheels gpu_wheels.sh
# makes, and `scripts/gpu_launch.sh --cpu --tiny` through them. CI runs it (.ci/run).
#   bash scripts/gpu_rehearse.sh [DIR]    # the venv, wheels and JSON (default: $TMPDIR/testbed-gpuimage)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${1:-${TMPDIR:-/tmp}/testbed-gpuimage}")
# torch first and pinned (a CPU wheel here, no CUDA packages). Unpinned: the image's version is not recorded,
# or (numpy 2.5.2) needs the image's Python 3.12. CI's python3 is used (3.11 here: its torch CPU wheel lies on
# disk, 3.12's is not reachable), and the wheels are made for it (multiprocess differs per Python version).
image=(torch==2.13.0 transformers==5.17.0 tokenizers==0.23.2 huggingface_hub==1.33.0 safetensors==0.8.0
       accelerate==1.15.0 numpy peft pyarrow tensorboard pandas matplotlib scipy pyyaml tqdm xxhash requests
       aiohttp cloudpickle typing-extensions packaging psutil)
python=${REHEARSE_PYTHON:-python3}
stamp="$dir/venv/.image"
want="$("$python" --version) ${image[*]}"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  rm -rf "$dir/venv"
  "$python" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --upgrade pip
  "$dir/venv/bin/pip" install -q "${image[0]}"
  "$dir/venv/bin/pip" install -q "${image[@]}"
  echo "$want" >"$stamp"
fi
venv_python="$dir/venv/bin/python"
# The image lacks these: the rehearsal is only one if the venv does too.
if "$venv_python" -I -c "import datasets" 2>/dev/null || "$venv_python" -I -c "import testbed" 2>/dev/null; then
  echo "error: $dir/venv holds datasets or testbed, which the GPU image lacks" >&2
  exit 1
fi
bash scripts/gpu_wheels.sh "$("$venv_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$dir/whl"
rm -rf "$dir/site"
PYTHON="$venv_python" GPU_WHEELS="$dir/whl" GPU_SITE="$dir/site" \
  bash scripts/gpu_launch.sh --cpu --tiny --out "$dir/gpu_check.json" --work "$dir"
