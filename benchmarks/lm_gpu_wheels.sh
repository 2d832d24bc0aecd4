#!/usr/bin/env bash
# Wheels the GPU machine lacks for benchmarks/qlora.py (it has torch, transformers, peft, accelerate):
# bitsandbytes (CUDA build, manylinux x86_64), liger-kernel, and the engine's own small dependencies
# (sqlite-utils and its dependencies, platformdirs). Downloaded into .whl/ (git-ignored) for Python 3.12;
# the total must stay under 64 MiB to travel with the working tree.
#
#   bash benchmarks/lm_gpu_wheels.sh            # here (network to PyPI)
#   pip install --no-index --no-deps .whl/*.whl # there, then: python benchmarks/qlora.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY_VERSION:-3.12}
mkdir -p .whl
pip download --dest .whl --only-binary=:all: --no-deps \
    --python-version "$PY" --implementation cp \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any \
    "bitsandbytes>=0.45" "liger-kernel>=0.5" \
    "sqlite-utils>=3.37" sqlite-fts4 click click-default-group tabulate python-dateutil six pluggy \
    "platformdirs>=4"
ls -l .whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total: $((total / 1024 / 1024)) MiB in $(ls .whl/*.whl | wc -l) wheels"
if [ "$total" -ge $((64 * 1024 * 1024)) ]; then
    echo "too large to carry (64 MiB limit)" >&2
    exit 1
fi
