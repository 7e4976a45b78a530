"""Backend selection: the only module that imports CuPy.

Two backends exist:

``cpu``
    NumPy arrays, FFTs by ducc0 behind :mod:`scipy.fft`'s API
    (:mod:`gpudeblur._cpu_fft`; ``GPUDEBLUR_CPU_FFT=scipy`` for
    :mod:`scipy.fft` itself) with worker threads, Numba-jitted twins of
    every custom CUDA kernel.
``cuda``
    CuPy arrays, cuFFT through :mod:`cupyx.scipy.fft`, custom kernels from
    ``kernels/*.cu`` compiled lazily through :class:`cupy.RawModule`.

The backend is chosen by the ``backend=`` argument of every public function,
else by the environment variable ``GPUDEBLUR_BACKEND``, else ``auto``:
``cuda`` when CuPy imports *and* a device answers a probe, ``cpu`` otherwise
(with one warning when CuPy is installed but no device answers). Asking for
``cuda`` where none exists raises :class:`BackendUnavailableError`.

Nothing here touches the GPU at import time.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "GPUFallbackWarning",
    "FFTFallbackWarning",
    "cpu_fft_module",
    "get_backend",
    "cuda_available",
    "as_backend_array",
    "to_output",
    "is_cupy_array",
    "array_module",
]

BACKEND_NAMES = ("auto", "cuda", "cpu")
ENV_VAR = "GPUDEBLUR_BACKEND"
#: Environment variable naming the CPU backend's FFT library (:func:`cpu_fft_module`)
CPU_FFT_ENV_VAR = "GPUDEBLUR_CPU_FFT"
CPU_FFT_NAMES = ("ducc0", "scipy")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot be used on this machine."""


class GPUFallbackWarning(RuntimeWarning):
    """``auto`` fell back to the CPU although CuPy is installed."""


class FFTFallbackWarning(RuntimeWarning):
    """The CPU backend uses :mod:`scipy.fft` because ducc0 does not import."""


@functools.lru_cache(maxsize=None)
def _probe_cupy() -> tuple[Any, str | None]:
    """Import CuPy and touch a device.

    Returns ``(cupy_module, None)`` when usable, else ``(None, reason)``.
    Memoized: the probe runs at most once per process.
    """
    if importlib.util.find_spec("cupy") is None:
        return None, "CuPy is not installed"
    try:
        import cupy  # noqa: PLC0415  (the one place CuPy is imported)

        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return None, "CuPy found no CUDA device"
        cupy.empty(1, dtype=cupy.float32)  # forces a context on device 0
        return cupy, None
    except Exception as exc:  # CUDARuntimeError, ImportError of libs, ...
        return None, f"CuPy is installed but no CUDA device answered ({type(exc).__name__}: {exc})"


def cuda_available() -> bool:
    """True when CuPy imports and a CUDA device answers."""
    return _probe_cupy()[0] is not None


def _cupy_module_if_imported():
    """CuPy if it is already imported by someone (never imports it)."""
    import sys

    return sys.modules.get("cupy")


def is_cupy_array(x) -> bool:
    cp = _cupy_module_if_imported()
    return cp is not None and isinstance(x, cp.ndarray)


def array_module(x):
    """``cupy`` for a CuPy array, else ``numpy`` (never imports CuPy)."""
    return _cupy_module_if_imported() if is_cupy_array(x) else np


@dataclass(frozen=True)
class Backend:
    """An array namespace plus its FFT module and custom kernels.

    Attributes
    ----------
    name : {'cpu', 'cuda'}
    xp : module
        ``numpy`` or ``cupy``.
    fft : module
        :mod:`gpudeblur._cpu_fft` (ducc0; or ``scipy.fft``, see
        :func:`cpu_fft_module`) or ``cupyx.scipy.fft`` (same API).
    """

    name: str
    xp: Any
    fft: Any

    # -- helpers used by plain array code -----------------------------------
    def fft_kwargs(self) -> dict:
        """Keyword arguments for FFT calls (worker threads on the CPU)."""
        if self.name == "cpu":
            return {"workers": _cpu_workers()}
        return {}

    def asarray(self, x, dtype=None):
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        if self.name == "cuda":
            return self.xp.asnumpy(x)
        return np.asarray(x)

    def synchronize(self) -> None:
        """Wait for queued device work (for timers only)."""
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    @property
    def ndimage(self):
        """``scipy.ndimage`` or ``cupyx.scipy.ndimage`` (same API for the filters used here)."""
        if self.name == "cuda":
            import cupyx.scipy.ndimage  # noqa: PLC0415

            return cupyx.scipy.ndimage
        import scipy.ndimage  # noqa: PLC0415

        return scipy.ndimage

    @property
    def kernels(self):
        """Custom kernels with one signature on both backends."""
        from . import _kernels  # noqa: PLC0415  (lazy: never compile at import)

        return _kernels.kernels_for(self)

    def available_memory(self) -> int | None:
        """Bytes the next device allocations can use; ``None`` on the CPU.

        On CUDA: the device's free memory plus the free blocks CuPy's default
        memory pool already holds; when the pool has a limit
        (``cupy.get_default_memory_pool().set_limit(...)`` or
        ``CUPY_GPU_MEMORY_LIMIT``), at most ``limit − total_bytes``: CuPy
        checks the limit against everything the pool holds, cached blocks
        included, and raises rather than freeing them, so only that much is
        sure to be allocatable. A budget taken as a fraction of this
        respects a limit given to CuPy (to share a GPU, or to check that a
        job fits a smaller card); too small a value only costs more tiles.
        """
        if self.name != "cuda":
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        avail = int(free) + int(pool.free_bytes())
        limit = int(pool.get_limit())
        if limit > 0:
            avail = min(avail, max(limit - int(pool.total_bytes()), 0))
        return avail

    def device_name(self) -> str:
        if self.name == "cuda":
            props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
            name = props["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        import platform  # noqa: PLC0415

        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def _cpu_workers() -> int:
    env = os.environ.get("GPUDEBLUR_CPU_WORKERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"GPUDEBLUR_CPU_WORKERS must be a positive integer (CPU threads), got {env!r}")
        return n
    return max(1, os.cpu_count() or 1)


def cpu_fft_module(name: str | None = None):
    """The CPU backend's FFT module: ``'ducc0'`` (:mod:`gpudeblur._cpu_fft`, the
    default) or ``'scipy'`` (:mod:`scipy.fft`); ``None`` reads
    ``GPUDEBLUR_CPU_FFT``. Both have :mod:`scipy.fft`'s API; with ``'ducc0'`` the
    real transforms are ducc0's (1.0–2.8x faster on gpudeblur's grids, last bits
    rounded differently) and the complex ones stay :mod:`scipy.fft`'s. When
    ducc0 (a dependency) does not import, :mod:`scipy.fft` is used with a
    :class:`FFTFallbackWarning`."""
    if name is None:
        name = os.environ.get(CPU_FFT_ENV_VAR, "") or "ducc0"
    if not isinstance(name, str) or name.lower() not in CPU_FFT_NAMES:
        raise ValueError(f"unknown CPU FFT {name!r} ({CPU_FFT_ENV_VAR}); expected one of {', '.join(CPU_FFT_NAMES)}")
    return _cpu_fft_module(name.lower())


@functools.lru_cache(maxsize=None)
def _cpu_fft_module(name: str):
    import scipy.fft  # noqa: PLC0415

    if name == "scipy":
        return scipy.fft
    try:
        from . import _cpu_fft  # noqa: PLC0415
    except ImportError as exc:
        warnings.warn(f"gpudeblur: ducc0 does not import ({exc}); the CPU backend uses scipy.fft (slower)",
                      FFTFallbackWarning, stacklevel=4)
        return scipy.fft
    return _cpu_fft


def _cpu_backend() -> Backend:
    return _cpu_backend_with(cpu_fft_module())


@functools.lru_cache(maxsize=None)
def _cpu_backend_with(fft) -> Backend:
    return Backend("cpu", np, fft)


@functools.lru_cache(maxsize=None)
def _cuda_backend() -> Backend:
    cp, reason = _probe_cupy()
    if cp is None:
        raise BackendUnavailableError(f"backend 'cuda' requested but unavailable: {reason}")
    import cupyx.scipy.fft  # noqa: PLC0415

    return Backend("cuda", cp, cupyx.scipy.fft)


_warned_fallback = False


def get_backend(backend: str | Backend | None = None, like=None) -> Backend:
    """Resolve a backend name to a :class:`Backend`.

    Parameters
    ----------
    backend : {'auto', 'cuda', 'cpu'}, Backend or None
        ``None`` reads ``GPUDEBLUR_BACKEND`` (default ``auto``).
    like : array, optional
        With ``auto``, a CuPy array selects ``cuda`` and a NumPy array on a
        machine with a GPU still selects ``cuda`` (the data is moved once).
    """
    global _warned_fallback
    if isinstance(backend, Backend):
        return backend
    source = ""
    if backend is None:
        backend = os.environ.get(ENV_VAR, "auto") or "auto"
        source = f" (from ${ENV_VAR})"
    if not isinstance(backend, str) or backend.lower() not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}{source}; expected one of {', '.join(BACKEND_NAMES)}")
    backend = backend.lower()
    if backend == "cpu":
        return _cpu_backend()
    if backend == "cuda":
        return _cuda_backend()
    # auto
    if like is not None and is_cupy_array(like):
        return _cuda_backend()
    cp, reason = _probe_cupy()
    if cp is not None:
        return _cuda_backend()
    if importlib.util.find_spec("cupy") is not None and not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"gpudeblur: falling back to the CPU backend: {reason}", GPUFallbackWarning, stacklevel=2)
    return _cpu_backend()


# ---------------------------------------------------------------------------
# Arrays in = arrays out
# ---------------------------------------------------------------------------

def resolve_float_dtype(in_dtype, dtype=None) -> np.dtype:
    """Working float type: float32 unless ``dtype`` requests float64.

    float32 is the default precision whatever the input (GPU throughput,
    half the memory traffic); ``dtype='float64'`` requests double
    precision. float16, integer and bool inputs are promoted
    (:func:`as_backend_array` scales an unsigned integer *image* to [0, 1]
    by its type's maximum; other values are not rescaled). Complex and
    non-numeric inputs are refused.
    """
    in_dtype = np.dtype(in_dtype)
    if in_dtype.kind not in "fiub":
        raise TypeError(f"unsupported image dtype {in_dtype}; expected a real numeric type")
    if dtype is None:
        return np.dtype(np.float32)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


@dataclass(frozen=True)
class _OutputKind:
    kind: str  # 'numpy' | 'cupy'
    device: int | None = None


def _from_dlpack_like(x):
    """Convert a DLPack-capable object (e.g. a torch tensor) to numpy/cupy."""
    dev = x.__dlpack_device__()
    dev_type = int(dev[0])
    if dev_type == 1:  # kDLCPU
        return np.from_dlpack(x)
    if dev_type in (2, 3):  # kDLCUDA, kDLCUDAHost
        cp, reason = _probe_cupy()
        if cp is None:
            raise BackendUnavailableError(f"a CUDA DLPack tensor was given but {reason}")
        return cp.from_dlpack(x)
    raise TypeError(f"unsupported DLPack device type {dev_type}")


def as_backend_array(x, be: Backend, dtype=None, name: str = "image", image: bool | None = None):
    """Move ``x`` to backend ``be`` as a float array.

    An unsigned integer *image* (``image=True``; default: ``name ==
    'image'``) is scaled to [0, 1] by its type's maximum (uint8 / 255,
    uint16 / 65535), as :func:`gpudeblur.io.read_image` returns images;
    maps, masks and other arrays keep their values.

    Returns ``(array, output_kind)``; pass ``output_kind`` to
    :func:`to_output` to hand the result back as the caller's array type.
    """
    if x is None:
        raise ValueError(f"{name} is None")
    if is_cupy_array(x):
        out_kind = _OutputKind("cupy", int(x.device.id))
    elif isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        x = np.asarray(x)
        out_kind = _OutputKind("numpy")
    elif hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        x = _from_dlpack_like(x)
        out_kind = _OutputKind("cupy", int(x.device.id)) if is_cupy_array(x) else _OutputKind("numpy")
    else:
        raise TypeError(f"{name} must be a NumPy/CuPy array or DLPack tensor, got {type(x).__name__}")
    if np.dtype(x.dtype).kind not in "fiub":
        raise TypeError(f"unsupported {name} dtype {x.dtype}; expected a real numeric type")
    ft = resolve_float_dtype(x.dtype, dtype)
    # an unsigned integer image is on its type's full scale (255 for uint8): to [0, 1],
    # as read_image gives it (every tuned tolerance and weight assumes that range)
    is_image = name == "image" if image is None else bool(image)
    full_scale = np.iinfo(x.dtype).max if (is_image and x.dtype.kind == "u") else None
    # order="C": the custom kernels (CUDA raw pointers, Numba twins' ravel())
    # assume C-contiguous arrays, and arrays made with *_like from a
    # Fortran-ordered or strided input would inherit its layout. No copy for
    # the usual C-contiguous input.
    if be.name == "cuda":
        if out_kind.kind == "cupy":
            with be.xp.cuda.Device(out_kind.device):
                arr = x.astype(ft, order="C", copy=False)
        else:
            arr = be.xp.asarray(x, dtype=ft, order="C")
    else:
        if out_kind.kind == "cupy":
            x = x.get()
        arr = np.asarray(x, dtype=ft, order="C")
    if full_scale is not None:  # divided, as read_image does (the same float32 values as reading the file)
        arr = arr / ft.type(full_scale)
    return arr, out_kind


def to_output(arr, out_kind: _OutputKind):
    """Return ``arr`` as the caller's array type (NumPy or CuPy)."""
    if out_kind.kind == "numpy":
        if is_cupy_array(arr):
            return arr.get()
        return np.asarray(arr)
    cp = _cupy_module_if_imported()
    if isinstance(arr, cp.ndarray):
        return arr
    with cp.cuda.Device(out_kind.device):
        return cp.asarray(arr)

