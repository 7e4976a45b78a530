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
        raise TypeError("[cupy stand-in shim] numpy.ndarray passed to a CUDA kernel launch (CuPy refuses it)")
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


def _admm_tv_dual_joint(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    x, ux, uy, wx, wy, M, N, C, t = args
    nk.admm_tv_dual_joint(_h(x), _h(ux), _h(uy), _h(wx), _h(wy), t)


def _admm_tv_rhs(grid, block, args):
    from gpudeblur import _numba_kernels as nk

    b, wx, wy, out, M, N, rho = args
    nk.admm_tv_rhs(_h(b), _h(wx), _h(wy), _h(out), rho)


_TWINS = {
    "rl_ratio_kernel": _rl_ratio,
    "rl_tv_update_kernel": _rl_tv_update,
    "admm_tv_dual_kernel": _admm_tv_dual,
    "admm_tv_dual_joint_kernel": _admm_tv_dual_joint,
    "admm_tv_rhs_kernel": _admm_tv_rhs,
    "blurmap_search_kernel": _blurmap_search,
    "lifted_primal_kernel": _lifted_primal,
    "lifted_dual_kernel": _lifted_dual,
    "lifted_primal_fused_kernel": _lifted_primal_fused,
    "framelet_shrink_kernel": _framelet_shrink,
    "framelet_adjoint_diff_kernel": _framelet_adjoint_diff,
}


_INT = {"int": np.dtype(np.int32), "long long": np.dtype(np.int64)}


def _signatures(filename):
    """``{kernel: [(ctype, is_pointer, is_const), ...]}`` of the ``__global__`` templates
    defined in ``kernels/filename`` (the parameter list CuPy's RawModule launch packs to)."""
    import re

    src = (_k.kernel_source_dir() / filename).read_text()
    out = {}
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{", src):
        params = []
        for p in m.group(2).split(","):
            words = [w for w in p.replace("*", " * ").split() if w != "__restrict__"]
            ptr = "*" in words
            const = "const" in words
            base = [w for w in words if w not in ("const", "*")][:-1]  # drop the parameter name
            params.append((" ".join(base), ptr, const))
        out[m.group(1)] = params
    return out


def _check_abi(name, sig, want, args):
    """What CuPy's launch packs must be what the kernel reads: one argument per parameter; a
    pointer parameter gets a C-contiguous device array of the kernel's T; an ``int`` a NumPy
    int32, a ``long long`` an int64 (CuPy packs a NumPy scalar by its own size: an int64 sent to
    an ``int`` shifts every later parameter), a ``T`` a NumPy scalar of T."""
    if len(args) != len(sig):
        raise TypeError(f"[cupy stand-in shim] {name} takes {len(sig)} arguments, launched with {len(args)}")
    for i, (a, (ctype, ptr, _const)) in enumerate(zip(args, sig)):
        if ptr:
            if not isinstance(a, cupy.ndarray):
                raise TypeError(f"[cupy stand-in shim] {name}: argument {i} ({ctype}*) is a {type(a).__name__}, not a device array")
            if a.dtype != (want if ctype == "T" else np.dtype(ctype)):
                raise TypeError(f"[cupy stand-in shim] {name}: argument {i} ({ctype}*) is a {a.dtype} array")
            if not a._a.flags.c_contiguous:
                raise ValueError(f"[cupy stand-in shim] {name}: argument {i} is not C-contiguous (the kernel reads a raw pointer)")
        else:
            exp = want if ctype == "T" else _INT.get(ctype)
            if exp is None:
                raise TypeError(f"[cupy stand-in shim] {name}: parameter {i} of C type {ctype!r} not known to the shim")
            if not isinstance(a, np.generic) or a.dtype != exp:
                got = a.dtype if isinstance(a, np.generic) else type(a).__name__
                raise TypeError(f"[cupy stand-in shim] {name}: argument {i} ({ctype}) is a {got}, not a {exp} scalar")


def _check_no_overlap(name, sig, args):
    """A kernel reading a ``const`` array at other pixels than it writes races when that array is
    also one it writes (CUDA blocks run in any order; the sequential twin hides it)."""
    if name in _ELEMENTWISE:
        return
    ins = [a for a, (_, ptr, const) in zip(args, sig) if ptr and const]
    outs = [a for a, (_, ptr, const) in zip(args, sig) if ptr and not const]
    for i, a in enumerate(outs):
        for b in ins + outs[i + 1:]:
            if np.shares_memory(_h(a), _h(b)):
                raise ValueError(f"[cupy stand-in shim] {name}: an output array overlaps another array argument")


def _cover(name, grid, block, n, axis):
    g = grid[axis] if len(grid) > axis else 1
    b = block[axis] if len(block) > axis else 1
    if g * b < n:
        raise ValueError(f"[cupy stand-in shim] {name}: launch covers {g}x{b} threads along {'xyz'[axis]}, needs {n}")


def _planes(name, grid, block, C):
    """Kernels that take the plane from blockIdx.z with no bound check: grid z must be C exactly."""
    if (grid[2] if len(grid) > 2 else 1) != C or (block[2] if len(block) > 2 else 1) != 1:
        raise ValueError(f"[cupy stand-in shim] {name}: grid z {grid} / block {block} for {C} planes (blockIdx.z is the plane, unchecked)")


def _size(name, a, n, what):
    if a.size != n:
        raise ValueError(f"[cupy stand-in shim] {name}: {what} has {a.size} elements, the kernel reads {n}")


def _check_layout(name, grid, block, args):
    """The index ranges each kernel of kernels/*.cu reads and writes, given its scalar arguments,
    against the arrays' sizes (the Numba twins take shapes from the arrays, and would compute a
    right answer from arrays the CUDA kernel over- or under-reads), and the launch's coverage."""
    if name == "rl_ratio_kernel":
        y, est, out, n, _ = args
        for a, w in ((y, "y"), (est, "est"), (out, "out")):
            _size(name, a, int(n), w)
    elif name in ("rl_tv_update_kernel", "admm_tv_dual_kernel", "admm_tv_rhs_kernel"):
        arrays = [a for a in args if isinstance(a, cupy.ndarray)]
        M, N = (int(v) for v in args[len(arrays):len(arrays) + 2])
        C = max(arrays[0].size // max(M * N, 1), 1)
        for a in arrays:
            _size(name, a, C * M * N, "an array")
        _planes(name, grid, block, C)
        _cover(name, grid, block, N, 0), _cover(name, grid, block, M, 1)
        if arrays[0].shape[-2:] != (M, N):
            raise ValueError(f"[cupy stand-in shim] {name}: M, N = {M}, {N} for arrays of shape {arrays[0].shape}")
    elif name == "admm_tv_dual_joint_kernel":  # one thread per pixel, the C planes in a loop
        arrays = args[:5]
        M, N, C = (int(v) for v in args[5:8])
        for a in arrays:
            _size(name, a, C * M * N, "an array")
        if arrays[0].shape != (C, M, N):
            raise ValueError(f"[cupy stand-in shim] {name}: C, M, N = {C}, {M}, {N} for arrays of shape {arrays[0].shape}")
        _cover(name, grid, block, N, 0), _cover(name, grid, block, M, 1)
        _planes(name, grid, block, 1)  # blockIdx.z unused: a deeper grid would update each pixel again
    elif name == "blurmap_search_kernel":
        power, P, F, val, d1, d2, noise, K, st, nst = args[:10]
        P, F, K, nst = int(P), int(F), int(K), int(nst)
        _size(name, power, F * P, "power")
        for a, w in ((val, "lut_val"), (d1, "lut_d1"), (d2, "lut_d2")):
            _size(name, a, K * F, w)
        _size(name, noise, F, "noise"), _size(name, st, nst, "starts")
        for a, w in zip(args[-3:], ("r_out", "l_out", "s_out")):
            _size(name, a, 3 * P, w)
        _cover(name, grid, block, P, 0)
    elif name == "lifted_primal_kernel":
        u, G, ubar, tau, npix, K = args
        for a, w in ((u, "u"), (G, "G"), (ubar, "ubar")):
            _size(name, a, int(K) * int(npix), w)
        _size(name, tau, int(npix), "tau")
    elif name == "lifted_dual_kernel":
        ubar, P, W, delta, K, M, N, E, _ = args
        K, M, N, E = int(K), int(M), int(N), int(E)
        _size(name, ubar, K * M * N, "ubar"), _size(name, P, E * K * M * N, "p")
        _size(name, W, E * M * N, "W"), _size(name, delta, K, "delta")
        _cover(name, grid, block, N, 0), _cover(name, grid, block, M, 1), _cover(name, grid, block, K, 2)
    elif name == "lifted_primal_fused_kernel":
        u, ubar, scratch, c, P, tau, lb, K, M, N, E, _ = args
        K, M, N, E = int(K), int(M), int(N), int(E)
        for a, w in ((u, "u"), (ubar, "ubar"), (scratch, "scratch"), (c, "c")):
            _size(name, a, K * M * N, w)
        _size(name, P, E * K * M * N, "p"), _size(name, tau, M * N, "tau"), _size(name, lb, M * N, "lb")
        _cover(name, grid, block, N, 0), _cover(name, grid, block, M, 1)
    elif name in ("framelet_shrink_kernel", "framelet_adjoint_diff_kernel"):
        arrays = [a for a in args if isinstance(a, cupy.ndarray)]
        C, M, N = (int(v) for v in args[len(arrays):len(arrays) + 3])
        x_or_out = arrays[0] if name == "framelet_shrink_kernel" else arrays[2]
        bands = arrays[1:3] if name == "framelet_shrink_kernel" else arrays[:2]
        _size(name, x_or_out, C * M * N, "x/out")
        for a in bands:
            _size(name, a, 9 * C * M * N, "a band array (9 bands)")
        _cover(name, grid, block, N, 0), _cover(name, grid, block, M, 1), _planes(name, grid, block, C)
    else:
        raise RuntimeError(f"[cupy stand-in shim] no layout rule for {name}")


#: kernels that read each input at the index they write only (an output may alias an input)
_ELEMENTWISE = {"rl_ratio_kernel"}


def _cuda_function(be, filename, name, dtype):
    if name not in _TWINS:
        raise RuntimeError(f"[cupy stand-in shim] no Numba twin mapped for {filename}:{name}")
    twin = _TWINS[name]
    want = np.dtype(dtype)
    sig = _signatures(filename).get(name)
    if sig is None:
        raise RuntimeError(f"[cupy stand-in shim] {filename} defines no __global__ {name}")

    def launch(grid, block, args):
        # a raw kernel reads its float pointers as the type it was compiled for: another float
        # type (an upcast to float64 on the way) is read as garbage on a GPU, silently
        # and CuPy passes a Python int as a 64-bit integer, a Python float as a double, whatever the
        # kernel's parameter: scalars go as NumPy scalars of the kernel's types
        for i, a in enumerate(args):
            if isinstance(a, cupy.ndarray) and a.dtype.kind in "fc" and a.dtype != want:
                raise TypeError(f"[cupy stand-in shim] {name} compiled for {want} got a {a.dtype} array (argument {i})")
            if not isinstance(a, (cupy.ndarray, np.generic)):
                raise TypeError(f"[cupy stand-in shim] {name}: argument {i} is a Python {type(a).__name__}, not a NumPy scalar")
            if isinstance(a, np.floating) and a.dtype != want:
                raise TypeError(f"[cupy stand-in shim] {name} compiled for {want} got a {a.dtype} scalar (argument {i})")
        _check_abi(name, sig, want, args)
        _check_no_overlap(name, sig, args)
        _check_layout(name, tuple(grid), tuple(block), args)
        return twin(grid, block, args)
    return launch


def install():
    _k.cuda_function = _cuda_function
    # modules that imported cuda_function lazily do `from .._kernels import cuda_function` at call time: patched above


install()
