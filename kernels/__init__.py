"""CUDA C sources of gpudeblur's custom kernels (installed as ``gpudeblur.kernels``).

Each ``*.cu`` holds thin ``__global__`` wrappers; the per-element math is in
``*.cuh`` as ``__host__ __device__`` functions so that the tests can compile
it for the host and compare it with the Numba twins.
"""
