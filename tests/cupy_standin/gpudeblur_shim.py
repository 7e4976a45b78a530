"""Run gpudeblur's 'cuda' backend on the strict host stand-in of CuPy (``tests/cupy_standin``).

``tests/conftest.py`` imports this under ``GPUDEBLUR_CUPY_STANDIN=1``: custom CUDA kernels
(every ``cuda_function`` launch, so ``_kernels._CudaKernels`` runs as on a GPU) are mapped to
their Numba twins, with the CUDA memory
order converted where it differs (the labeling's lifted arrays are label-major on CUDA,
pixel-major for the Numba twins); a NumPy array passed to a kernel launch is refused, as CuPy
refuses it. Everything else is the project's own array code on stand-in device arrays.
So the kernels' own CUDA code is not exercised here (the host builds of ``kernels/*.cuh``
check its math); a CUDA-vs-Numba comparison test compares the twin with itself.
"""
from __future__ import annotations

import numpy as np

import cupy  # the stand-in

import gpudeblur._kernels as _k


def _h(a):
    """Underlying host array of a fake device array (shared memory: writes go through)."""
    if isinstance(a, cupy.ndarray):
        return a._a
    if isinstance(a, np.ndarray):
        raise TypeError("[fakecupy-shim] numpy.ndarray passed to a CUDA kernel launch (CuPy refuses it)")
    return a


def _pm(a):
    """Label-major (.., K, M, N) device array -> a pixel-major (.., M, N, K) host copy."""
    return np.ascontiguousarray(np.moveaxis(_h(a), -3, -1))


def _back(dst, pm):
    _h(dst)[...] = np.moveaxis(pm, -1, -3)


def _blurmap_search(grid, block, args):
    from gpudeblur.blurmap._numba_likelihood import blurmap_search

    (power, P, F, val, d1, d2, noise, nlut, st, nst, lo, hi, step, max_outer, s_iters, r_iters,
     tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, r_out, l_out, s_out) = args
    for a in (power, val, d1, d2, noise, st, r_out, l_out, s_out):
        assert isinstance(a, cupy.ndarray), type(a)
        assert a.flags.c_contiguous
    blurmap_search(_h(power), _h(val), _h(d1), _h(d2), _h(noise), _h(st), lo, hi, step, int(max_outer),
                   int(s_iters), int(r_iters), tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol,
                   _h(r_out), _h(l_out), _h(s_out))


def _lifted_primal(grid, block, args):
    from gpudeblur.blurmap import _numba_labeling as nl

    u, G, ubar, tau, npix, K = args
    pu, pG, pb = _pm(u), _pm(G), _pm(ubar)
    nl.lifted_primal(pu, pG, pb, _h(tau))
    _back(u, pu), _back(G, pG), _back(ubar, pb)


def _lifted_dual(grid, block, args):
    from gpudeblur.blurmap import _numba_labeling as nl

    ubar, P, W, delta, K, M, N, E, sigma = args
    pP = _pm(P)
    nl.lifted_dual(_pm(ubar), pP, _h(W), _h(delta), sigma)
    _back(P, pP)


def _lifted_primal_fused(grid, block, args):
    from gpudeblur.blurmap import _numba_labeling as nl

    u, ubar, scratch, c, P, tau, lb, K, M, N, E, prefetch = args
    pu, pb, ps = _pm(u), _pm(ubar), _pm(scratch)
    nl.lifted_primal_fused(pu, pb, ps, _pm(c), _pm(P), _h(tau), _h(lb))
    _back(u, pu), _back(ubar, pb), _back(scratch, ps)


def _framelet_shrink(grid, block, args):
    from gpudeblur import _numba_blind as nb

    x, d, e, C, M, N, t = args
    nb.framelet_shrink(_h(x), _h(d), _h(e), t)


def _framelet_adjoint_diff(grid, block, args):
    from gpudeblur import _numba_blind as nb

    d, e, out, C, M, N = args
    nb.framelet_adjoint_diff(_h(d), _h(e), _h(out))


def _rl_ratio(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    y, est, out, n, eps = args
    nk.rl_ratio(_h(y), _h(est), _h(out), eps)


def _rl_tv_update(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    x, corr, out, M, N, lam, eps = args
    nk.rl_tv_update(_h(x), _h(corr), _h(out), lam, eps)


def _admm_tv_dual(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    x, ux, uy, wx, wy, M, N, t, iso = args
    nk.admm_tv_dual(_h(x), _h(ux), _h(uy), _h(wx), _h(wy), t, bool(iso))


def _admm_tv_rhs(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    b, wx, wy, out, M, N, rho = args
    nk.admm_tv_rhs(_h(b), _h(wx), _h(wy), _h(out), rho)


_TWINS = {
    "rl_ratio_kernel": _rl_ratio,
    "rl_tv_update_kernel": _rl_tv_update,
    "admm_tv_dual_kernel": _admm_tv_dual,
    "admm_tv_rhs_kernel": _admm_tv_rhs,
    "blurmap_search_kernel": _blurmap_search,
    "lifted_primal_kernel": _lifted_primal,
    "lifted_dual_kernel": _lifted_dual,
    "lifted_primal_fused_kernel": _lifted_primal_fused,
    "framelet_shrink_kernel": _framelet_shrink,
    "framelet_adjoint_diff_kernel": _framelet_adjoint_diff,
}


def _cuda_function(be, filename, name, dtype):
    if name not in _TWINS:
        raise RuntimeError(f"[fakecupy-shim] no Numba twin mapped for {filename}:{name}")
    twin = _TWINS[name]
    want = np.dtype(dtype)

    def launch(grid, block, args):
        # a raw kernel reads its float pointers as the type it was compiled for: another float
        # type (an upcast to float64 on the way) is read as garbage on a GPU, silently
        # and CuPy passes a Python int as a 64-bit integer, a Python float as a double, whatever the
        # kernel's parameter: scalars go as NumPy scalars of the kernel's types
        for i, a in enumerate(args):
            if isinstance(a, cupy.ndarray) and a.dtype.kind in "fc" and a.dtype != want:
                raise TypeError(f"[fakecupy-shim] {name} compiled for {want} got a {a.dtype} array (argument {i})")
            if not isinstance(a, (cupy.ndarray, np.generic)):
                raise TypeError(f"[fakecupy-shim] {name}: argument {i} is a Python {type(a).__name__}, not a NumPy scalar")
            if isinstance(a, np.floating) and a.dtype != want:
                raise TypeError(f"[fakecupy-shim] {name} compiled for {want} got a {a.dtype} scalar (argument {i})")
        return twin(grid, block, args)
    return launch


def install():
    _k.cuda_function = _cuda_function
    # modules that imported cuda_function lazily do `from .._kernels import cuda_function` at call time: patched above


install()
