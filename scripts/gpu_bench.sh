#!/usr/bin/env bash
# The inference benchmark on a GPU machine that has torch but no network, no Ray and no
# diffusers (scripts/gpu_bench.py says what it measures; arguments are passed on to it).
#
# Before: put the diffusers wheel and its one missing dependency in .whl/ (ignored by git):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata
# and carry .whl to the machine. Results: benchmarks/results/<date>-gpu-<device>/ (or --out).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
python3 scripts/gpu_bench.py "$@"
