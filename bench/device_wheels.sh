#!/usr/bin/env bash
# Fetch the wheels the GPU device lacks into .whl/ (gitignored), for a `run` call with carry [".whl"].
# The device image (Python 3.12) has CuPy, Numba, SciPy, OpenCV, pytest(-xdist), but not PyMaxflow
# (the labeling's alpha-expansion) nor ducc0 (the CPU backend's FFT). On the device, before the
# project's install:  python3 -m pip install --no-deps --no-build-isolation .whl/*.whl
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
for req in "PyMaxflow==1.3.2" "ducc0==0.42.0"; do
    python3 -m pip download "$req" --python-version 3.12 --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl --no-deps --quiet
done
ls -l .whl
