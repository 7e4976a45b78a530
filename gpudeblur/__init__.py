"""gpudeblur: fast, faithful deblurring on CUDA GPUs with a Numba CPU fallback.

Public functions take NumPy or CuPy arrays (or DLPack tensors) and return
the same kind of array; each has a ``backend=`` argument
(``'auto'``, ``'cuda'``, ``'cpu'``; default from ``GPUDEBLUR_BACKEND``).
"""

from ._backend import BackendUnavailableError, GPUFallbackWarning, cuda_available, get_backend
from .convolution import fftconvolve
from .restoration import (
    admm_tv,
    estimate_noise,
    inverse_filter,
    richardson_lucy,
    richardson_lucy_tv,
    tikhonov,
    wiener,
)
from .solvers import conjugate_gradient
from . import psf

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "admm_tv",
    "BackendUnavailableError",
    "conjugate_gradient",
    "cuda_available",
    "estimate_noise",
    "fftconvolve",
    "get_backend",
    "GPUFallbackWarning",
    "inverse_filter",
    "psf",
    "richardson_lucy",
    "richardson_lucy_tv",
    "tikhonov",
    "wiener",
]
