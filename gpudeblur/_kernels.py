"""Custom kernels with one signature on both backends.

``kernels_for(backend)`` returns an object whose methods run either the CUDA
kernels of ``kernels/*.cu`` (compiled lazily, once per device and dtype,
through :class:`cupy.RawModule`) or their Numba twins in
:mod:`gpudeblur._numba_kernels`. Nothing is compiled at import.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from pathlib import Path

import numpy as np

from ._backend import Backend

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def kernel_source_dir() -> Path:
    """Folder holding the ``.cu``/``.cuh`` files (installed package data)."""
    try:
        return Path(str(importlib.resources.files("gpudeblur.kernels")))
    except ModuleNotFoundError:  # running from a source tree not installed
        return Path(__file__).resolve().parent.parent / "kernels"


def kernel_sources() -> list[Path]:
    return sorted(kernel_source_dir().glob("*.cu"))


class KernelCompileError(RuntimeError):
    """A ``.cu`` file failed to compile (the message names the file)."""


def module_source(filename: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(code, options, name_expressions)`` that :class:`cupy.RawModule` compiles for
    ``kernels/filename`` (also used by ``.ci/nvrtc_compile.py``, which compiles them with
    NVRTC as CuPy does, without a GPU)."""
    src_dir = kernel_source_dir()
    code = (src_dir / filename).read_text()
    # CuPy's on-disk kernel cache is keyed by this source string and the
    # options only, not by the headers found through -I: hash them into the
    # code, or an edited .cuh would keep loading the stale cached cubin.
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(src_dir.glob("*.cuh")))).hexdigest()
    code += f"\n// gpudeblur headers sha256 {digest}\n"
    names = tuple(f"{k}<{t}>" for k in KERNEL_NAMES[filename] for t in ("float", "double"))
    return code, ("-std=c++17", f"-I{src_dir}"), names


@functools.lru_cache(maxsize=None)
def _raw_module(filename: str, device_id: int):
    import cupy  # only reached on the cuda backend

    path = kernel_source_dir() / filename
    code, options, names = module_source(filename)
    with cupy.cuda.Device(device_id):
        try:
            mod = cupy.RawModule(code=code, options=options, name_expressions=names)
            mod.compile()
        except Exception as exc:  # CompileException
            raise KernelCompileError(f"failed to compile {path}: {exc}") from exc
    return mod


#: Templated ``__global__`` functions of each ``.cu`` file (instantiated for
#: float and double). A new kernel file registers its names here.
KERNEL_NAMES: dict[str, tuple[str, ...]] = {
    "deconv.cu": ("rl_ratio_kernel", "rl_tv_update_kernel", "admm_tv_dual_kernel", "admm_tv_dual_joint_kernel",
                  "admm_tv_rhs_kernel"),
    "labeling.cu": ("lifted_primal_kernel", "lifted_dual_kernel", "lifted_primal_fused_kernel"),
    "blurmap.cu": ("blurmap_search_kernel",),
    "blind.cu": ("framelet_shrink_kernel", "framelet_adjoint_diff_kernel"),
}


def cuda_function(be: Backend, filename: str, name: str, dtype):
    """The compiled ``name<dtype>`` kernel of ``kernels/filename`` (looked up once per device)."""
    return _function(filename, be.xp.cuda.Device().id, name, _CTYPE[np.dtype(dtype)])


@functools.lru_cache(maxsize=None)
def _function(filename: str, device_id: int, name: str, ctype: str):
    return _raw_module(filename, device_id).get_function(f"{name}<{ctype}>")


class _CudaKernels:
    """CUDA launches. The kernels index raw pointers as C-contiguous
    ``(C, M, N)`` planes, so every array argument must be C-contiguous:
    read-only inputs are made so (a no-op when they already are; views such
    as the crop of ``boundary='zero'`` are copied) and an output that is not
    is computed in a contiguous buffer and copied back.
    """

    def __init__(self, be: Backend):
        self.be = be

    def _get(self, name: str, dtype):
        return cuda_function(self.be, "deconv.cu", name, dtype)

    def _cin(self, a):
        return a if a.flags.c_contiguous else self.be.xp.ascontiguousarray(a)

    def _launch(self, name, dtype, grid, block, args):
        """Launch with C-contiguous array arguments; non-contiguous outputs are copied back."""
        xp = self.be.xp
        fixed, back = [], []
        for a in args:
            if isinstance(a, xp.ndarray):
                if a.dtype != dtype:  # the kernel is instantiated for one T: no silent reinterpretation
                    raise TypeError(f"{name}: array of dtype {a.dtype} passed to the {np.dtype(dtype)} kernel")
                if not a.flags.c_contiguous:  # an output (inputs went through _cin)
                    c = xp.ascontiguousarray(a)
                    back.append((a, c))
                    a = c
            fixed.append(a)
        self._get(name, dtype)(grid, block, tuple(fixed))
        for orig, c in back:
            orig[...] = c

    @staticmethod
    def _grid2d(shape):
        C, M, N = shape
        return ((N + 31) // 32, (M + 7) // 8, C), (32, 8, 1)

    def rl_ratio(self, y, est, out, eps):
        n = y.size
        threads = 256
        blocks = min((n + threads - 1) // threads, 65535 * 4)
        self._launch("rl_ratio_kernel", y.dtype, (blocks,), (threads,),
                     (self._cin(y), self._cin(est), out, np.int64(n), y.dtype.type(eps)))
        return out

    def rl_tv_update(self, x, corr, out, lam, eps):
        C, M, N = x.shape
        grid, block = self._grid2d(x.shape)
        t = x.dtype.type
        self._launch("rl_tv_update_kernel", x.dtype, grid, block,
                     (self._cin(x), self._cin(corr), out, np.int32(M), np.int32(N), t(lam), t(eps)))
        return out

    def admm_tv_dual(self, x, ux, uy, wx, wy, t, iso):
        C, M, N = x.shape
        grid, block = self._grid2d(x.shape)
        self._launch("admm_tv_dual_kernel", x.dtype, grid, block,
                     (self._cin(x), ux, uy, wx, wy, np.int32(M), np.int32(N), x.dtype.type(t), np.int32(bool(iso))))

    def admm_tv_dual_joint(self, x, ux, uy, wx, wy, t):
        C, M, N = x.shape
        grid, block = self._grid2d((1, M, N))  # one thread per pixel, over the C channels
        self._launch("admm_tv_dual_joint_kernel", x.dtype, grid, block,
                     (self._cin(x), ux, uy, wx, wy, np.int32(M), np.int32(N), np.int32(C), x.dtype.type(t)))

    def admm_tv_rhs(self, b, wx, wy, out, rho):
        C, M, N = b.shape
        grid, block = self._grid2d(b.shape)
        self._launch("admm_tv_rhs_kernel", b.dtype, grid, block,
                     (self._cin(b), self._cin(wx), self._cin(wy), out, np.int32(M), np.int32(N), b.dtype.type(rho)))
        return out


class _CpuKernels:
    """Thin adapter so scalar arguments get the arrays' dtype (no upcasts)."""

    def rl_ratio(self, y, est, out, eps):
        from . import _numba_kernels as nk

        return nk.rl_ratio(y, est, out, y.dtype.type(eps))

    def rl_tv_update(self, x, corr, out, lam, eps):
        from . import _numba_kernels as nk

        t = x.dtype.type
        return nk.rl_tv_update(x, corr, out, t(lam), t(eps))

    def admm_tv_dual(self, x, ux, uy, wx, wy, t, iso):
        from . import _numba_kernels as nk

        nk.admm_tv_dual(x, ux, uy, wx, wy, x.dtype.type(t), bool(iso))

    def admm_tv_dual_joint(self, x, ux, uy, wx, wy, t):
        from . import _numba_kernels as nk

        nk.admm_tv_dual_joint(x, ux, uy, wx, wy, x.dtype.type(t))

    def admm_tv_rhs(self, b, wx, wy, out, rho):
        from . import _numba_kernels as nk

        return nk.admm_tv_rhs(b, wx, wy, out, b.dtype.type(rho))


_CPU = _CpuKernels()


def kernels_for(be: Backend):
    if be.name == "cuda":
        return _cuda_kernels(be)
    return _CPU


@functools.lru_cache(maxsize=None)
def _cuda_kernels(be: Backend):
    return _CudaKernels(be)
