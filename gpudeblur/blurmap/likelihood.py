"""Per-pixel likelihood search (Zhu et al. 2013, Sec. III-A, eqs. 5, 11, 13).

Dispatches to the CUDA kernel ``blurmap_search_kernel`` of
``kernels/blurmap.cu`` on the ``cuda`` backend and to its Numba twin
:func:`gpudeblur.blurmap._numba_likelihood.blurmap_search` on the ``cpu``
backend. Both run the same per-pixel math (``kernels/blurmap.cuh``) in the
same order: every sum over the filters in four interleaved lanes, so the
CPU result does not depend on how a compiler vectorizes it.

Cost per pixel and start (F filters): one moment estimate (2F), per
alternation ``≤ s_iters`` fixed-point sweeps of eq. (11) (≈ 8F flops, F
divisions each), one ``E`` evaluation (F logs), ``≤ r_iters`` Newton steps
(≈ 15F flops + 1 or more ``E`` evaluations each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._backend import Backend
from .spectra import BlurSpectrumLUT

__all__ = ["SearchSettings", "DeviceLUT", "device_lut", "likelihood_search", "NONE"]

#: Log-likelihood of a missing candidate (``GD_BLURMAP_NONE`` in blurmap.cuh).
NONE = -1e30


@dataclass(frozen=True)
class SearchSettings:
    """Knobs of the fixed-point search (defaults: paper's scheme, our tolerances).

    max_outer : alternations ``s`` (eq. 11) ↔ ``r`` (eq. 13) per start.
    s_iters : fixed-point sweeps of eq. (11) per alternation.
    r_iters : safeguarded Newton steps on eq. (13) per alternation.
    tol_r : stop a start when ``|Δr| < tol_r`` pixels.
    tol_s : relative tolerance of the ``s`` fixed point.
    max_step : largest ``r`` step (pixels).
    merge_tol : maxima closer than this (pixels) are one candidate.
    dup_tol : a start that comes this close to an already found maximum stops
        (it would converge to it); a cost saving only.
    s_floor_rel : ``s`` is kept ``>= s_floor_rel · noise`` (no texture → floor).
    """

    max_outer: int = 30
    s_iters: int = 3
    r_iters: int = 3
    tol_r: float = 1e-3
    tol_s: float = 1e-4
    max_step: float = 0.5
    merge_tol: float = 0.1
    dup_tol: float = 0.05
    s_floor_rel: float = 1e-6


@dataclass(frozen=True)
class DeviceLUT:
    """LUT arrays on a backend in the working dtype."""

    val: object
    d1: object
    d2: object
    noise: object
    lo: float
    hi: float
    step: float
    dtype: np.dtype


def device_lut(lut: BlurSpectrumLUT, be: Backend, dtype=np.float32) -> DeviceLUT:
    xp = be.xp
    dt = np.dtype(dtype)
    c = lambda a: xp.asarray(np.ascontiguousarray(a, dtype=dt))  # noqa: E731
    hi = lut.lo + lut.step * (lut.nr - 1)
    return DeviceLUT(c(lut.val), c(lut.d1), c(lut.d2), c(lut.noise), float(lut.lo), float(hi), float(lut.step), dt)


def likelihood_search(power, dl: DeviceLUT, starts, noise: float, be: Backend, settings: SearchSettings = SearchSettings(), out=None):
    """Top-3 local maxima of the likelihood (5) per pixel.

    Parameters
    ----------
    power : (F, P) array on ``be`` (C-contiguous, LUT dtype)
        Gabor response powers ``|g_i^∇[x]|²``.
    dl : DeviceLUT
    starts : sequence of float
        Initial radii ``r0``.
    noise : float
        ``σ_n²`` (sets the floor of ``s``).
    out : tuple of three (3, P) arrays, optional

    Returns
    -------
    r, logl, s : (3, P) arrays
        Candidate radii sorted by log-likelihood ``log p̂ = -E`` (descending;
        :data:`NONE` where fewer than 3 distinct maxima exist, the radius then
        repeats the best one) and their ``ŝ``.
    """
    xp = be.xp
    dt = dl.dtype
    F, P = power.shape
    if dl.val.shape[1] != F:
        raise ValueError(f"power has {F} filters but the LUT has {dl.val.shape[1]}")
    if out is None:
        out = tuple(xp.empty((3, P), dtype=dt) for _ in range(3))
    r_out, l_out, s_out = out
    st = np.asarray(list(starts), dtype=dt)
    if st.size == 0:
        raise ValueError("starts is empty")
    t = dt.type
    s_floor = settings.s_floor_rel * noise
    if be.name == "cuda":
        from .._kernels import cuda_function  # noqa: PLC0415

        f = cuda_function(be, "blurmap.cu", "blurmap_search_kernel", dt)
        # the kernel indexes raw pointers: C-contiguous arrays of the LUT dtype only
        power = xp.ascontiguousarray(power, dtype=dt)
        for o in (r_out, l_out, s_out):
            if o.dtype != dt or not o.flags.c_contiguous or o.shape != (3, P):
                raise ValueError(f"out arrays must be C-contiguous (3, {P}) {dt} arrays")
        threads = 128
        blocks = (P + threads - 1) // threads
        if blocks:
            f((blocks,), (threads,), (
                power, np.int64(P), np.int32(F), dl.val, dl.d1, dl.d2, dl.noise, np.int32(dl.val.shape[0]),
                xp.asarray(st), np.int32(st.size), t(dl.lo), t(dl.hi), t(dl.step),
                np.int32(settings.max_outer), np.int32(settings.s_iters), np.int32(settings.r_iters),
                t(settings.tol_r), t(settings.tol_s), t(settings.max_step), t(s_floor), t(settings.merge_tol), t(settings.dup_tol),
                r_out, l_out, s_out,
            ))
        return r_out, l_out, s_out
    from ._numba_likelihood import blurmap_search  # noqa: PLC0415

    blurmap_search(
        power, dl.val, dl.d1, dl.d2, dl.noise, st, t(dl.lo), t(dl.hi), t(dl.step),
        settings.max_outer, settings.s_iters, settings.r_iters, t(settings.tol_r), t(settings.tol_s),
        t(settings.max_step), t(s_floor), t(settings.merge_tol), t(settings.dup_tol), r_out, l_out, s_out,
    )
    return r_out, l_out, s_out
