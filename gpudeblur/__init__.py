"""gpudeblur: fast, faithful deblurring on CUDA GPUs with a Numba CPU fallback.

Public functions take NumPy or CuPy arrays (or DLPack tensors) and return
the same kind of array; each has a ``backend=`` argument
(``'auto'``, ``'cuda'``, ``'cpu'``; default from ``GPUDEBLUR_BACKEND``).

Where each paper's method lives:

- ``gpudeblur.restoration`` — non-blind deconvolution (lecture notes:
  inverse/Wiener/Tikhonov; Richardson–Lucy, RL-TV, ADMM-TV);
- ``gpudeblur.blurmap`` — defocus blur map, coherent labeling and in-focus
  segmentation (Zhu et al. 2013);
- ``gpudeblur.spatially_varying`` — deconvolution from a blur map (Zhu eq. 19);
- ``gpudeblur.blind`` — blind per-layer defocus deblurring with symmetric
  low-rank kernels;
- ``gpudeblur.allinfocus`` — the all-in-focus pipeline (the main job).
"""

import importlib as _importlib

from . import psf
from ._allocator import tune_cpu_allocator
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

__version__ = "0.1.0"

# heavier parts load on first use (keeps `import gpudeblur` fast)
_LAZY = {
    "blurmap": ("gpudeblur.blurmap", None),
    "blind": ("gpudeblur.blind", None),
    "io": ("gpudeblur.io", None),
    "allinfocus": ("gpudeblur.allinfocus", None),
    "spatially_varying": ("gpudeblur.spatially_varying", None),
    "estimate_blur_map": ("gpudeblur.blurmap", "estimate_blur_map"),
    "BlurMapEstimator": ("gpudeblur.blurmap", "BlurMapEstimator"),
    "segment_in_focus": ("gpudeblur.blurmap", "segment_in_focus"),
    "deconvolve_spatially_varying": ("gpudeblur.spatially_varying", "deconvolve_spatially_varying"),
    "blur_spatially_varying": ("gpudeblur.spatially_varying", "blur_spatially_varying"),
    "blind_deblur_layer": ("gpudeblur.blind", "blind_deblur_layer"),
    "project_symmetric_lowrank": ("gpudeblur.blind", "project_symmetric_lowrank"),
    "init_kernel_tung": ("gpudeblur.blind", "init_kernel_tung"),
    "AllInFocus": ("gpudeblur.allinfocus", "AllInFocus"),
    "read_image": ("gpudeblur.io", "read_image"),
    "write_image": ("gpudeblur.io", "write_image"),
}


def __getattr__(name):
    try:
        mod, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpudeblur' has no attribute {name!r}") from None
    m = _importlib.import_module(mod)
    return m if attr is None else getattr(m, attr)


__all__ = [
    "__version__",
    "admm_tv",
    "AllInFocus",
    "BackendUnavailableError",
    "blind_deblur_layer",
    "blur_spatially_varying",
    "BlurMapEstimator",
    "conjugate_gradient",
    "cuda_available",
    "deconvolve_spatially_varying",
    "estimate_blur_map",
    "estimate_noise",
    "fftconvolve",
    "get_backend",
    "GPUFallbackWarning",
    "init_kernel_tung",
    "inverse_filter",
    "project_symmetric_lowrank",
    "psf",
    "read_image",
    "richardson_lucy",
    "richardson_lucy_tv",
    "segment_in_focus",
    "tikhonov",
    "tune_cpu_allocator",
    "wiener",
    "write_image",
]
