# gpudeblur on a CUDA 13 runtime image, with CuPy (cupy-cuda13x).
#
#   docker build -t gpudeblur .
#   docker run --rm --gpus all gpudeblur info
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/data" \
#       gpudeblur deconv in.png out.png --psf disc:3
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/data" gpudeblur demo --out /data/demo
#
# Each --rm container starts with empty kernel caches, so every run compiles
# again (Numba's CPU kernels: ~40 s before the demo's first result on 2 cores;
# CuPy's CUDA kernels: seconds). A named volume keeps them between runs:
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v gpudeblur-cache:/tmp/gpudeblur-cache \
#       -v "$PWD:/data" gpudeblur allinfocus in.png out.png
# (a new volume takes the image folder's mode, 1777, so any --user can write it).
#
# The runtime image carries the CUDA libraries CuPy loads (cuFFT, NVRTC for
# the custom kernels in kernels/*.cu, compiled on first use). The host needs
# an NVIDIA driver for CUDA 13 and the NVIDIA Container Toolkit (--gpus).
# Without a GPU the same image runs on the CPU backend (with a warning).
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Ubuntu 24.04's Python is "externally managed" (PEP 668): install into a venv.
RUN python3 -m venv /opt/gpudeblur
ENV PATH=/opt/gpudeblur/bin:$PATH

WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY gpudeblur ./gpudeblur
COPY kernels ./kernels
RUN pip install --upgrade pip \
    && pip install ".[cuda13]" \
    && cd / && rm -rf /tmp/src \
    && python -c "import importlib.resources as r; assert r.files('gpudeblur.kernels').joinpath('deconv.cu').is_file()"

# Caches writable by any --user: Numba's compiled CPU kernels, CuPy's compiled CUDA kernels.
ENV NUMBA_CACHE_DIR=/tmp/gpudeblur-cache/numba \
    CUPY_CACHE_DIR=/tmp/gpudeblur-cache/cupy
RUN mkdir -p /tmp/gpudeblur-cache && chmod 1777 /tmp/gpudeblur-cache

WORKDIR /data
ENTRYPOINT ["gpudeblur"]
CMD ["--help"]
