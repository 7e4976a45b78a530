"""Numba twin of ``kernels/blurmap.cuh`` (per-pixel likelihood search, Zhu et al. 2013, Sec. III-A).

Same functions, same order of operations as the CUDA header, IEEE
arithmetic (no fast-math flags; checked against a host build of the header
in ``tests/test_blurmap.py``). Every sum over the filters runs in four
interleaved lanes (lane j takes filters j, j + 4, ...), combined as
``(l0 + l1) + (l2 + l3)``: the order is written out, so the compiler may
not choose another one. Here each sum is split in two loops: an
element-wise loop writes the per-filter terms into a per-thread buffer (it
vectorizes without reassociation) and :func:`_sum4` adds them lane by lane;
the CUDA header accumulates the same lanes in one loop. The buffers are
zero-padded to a multiple of 4 so that :func:`_sum4` has no tail branches
(same bits; the search's Numba compile 45-50 → 27-29 s per dtype, the
float32 run time unchanged, float64 +5-10 %, session 31). The per-pixel
powers are copied into a per-thread buffer first (the CUDA kernel reads
them with stride ``P`` directly; the arithmetic is the same).

The functions that hold the per-filter loops of the iterations (and
:func:`_sum4`) are inlined into the ``prange`` body of
:func:`blurmap_search` in Numba's IR on purpose: Numba marks a parallel
loop's arrays no-alias, which the element-wise loops need to vectorize, and
inlining keeps the arrays' reference counts out of the per-filter loops. The
small loop-free helpers (:func:`_lut_pos`, :func:`_lerp`, :func:`_clamp_r`,
:func:`_insert_candidate`) and :func:`_s_moment` (once per start) are
compiled as functions of their own and left to LLVM: inlining them in
Numba's IR as well made the parfor passes copy a much larger body (session
35, ``bench/bench_compile.py``: the first compile 22.7-28.8 → 11.0-11.8 s
per dtype, same bits, same run time). Leaving :func:`_sum4` to LLVM too
compiles in 9-10 s but runs 5-10 % slower; the loop functions too, about
2.5x slower (their no-alias marks are lost).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

NONE = -1e30  # log-likelihood of a missing candidate (GD_BLURMAP_NONE)

_inl = dict(inline="always", cache=True, nogil=True)  # inlined in Numba IR (see above)
_leaf = dict(cache=True, nogil=True)  # left to LLVM


@numba.njit(**_leaf)
def _lut_pos(r, lo, step, K, cst):
    # cst = [0, 1, 0.5, scratch] in the working dtype: keeps float32 math in
    # float32 (Numba promotes float32 (op) int literal to float64)
    pos = (r - lo) / step
    kk = int(pos)
    if kk < 0:
        kk = 0
    if kk > K - 2:
        kk = K - 2
    cst[3] = kk
    ff = pos - cst[3]
    if ff < cst[0]:
        ff = cst[0]
    if ff > cst[1]:
        ff = cst[1]
    return kk, ff


@numba.njit(**_leaf)
def _lerp(tab, k, f, i):
    a = tab[k, i]
    b = tab[k + 1, i]
    return a + f * (b - a)


@numba.njit(**_leaf)
def _clamp_r(r, lo, hi):
    if r < lo:
        return lo
    if r > hi:
        return hi
    return r


@numba.njit(**_inl)
def _sum4(t, zero):
    # sum in 4 interleaved lanes (lane j: terms j, j+4, ...), then (l0 + l1) + (l2 + l3); t is a
    # scratch row zero-padded to a multiple of 4 (see _search_chunk): no tail branches
    n = t.shape[0]
    n4 = n - (n & 3)
    a0 = a1 = a2 = a3 = zero
    for i in range(0, n4, 4):
        a0 += t[i]
        a1 += t[i + 1]
        a2 += t[i + 2]
        a3 += t[i + 3]
    return (a0 + a1) + (a2 + a3)


@numba.njit(**_leaf)
def _s_moment(y, val, noise, r, lo, step, s_floor, cst, t0, t1, t2, t3):
    K, F = val.shape
    k, f = _lut_pos(r, lo, step, K, cst)
    for i in range(F):
        t0[i] = y[i] - noise[i]
        t1[i] = _lerp(val, k, f, i)
    s = _sum4(t0, cst[0]) / _sum4(t1, cst[0])
    return s if s > s_floor else s_floor


@numba.njit(**_inl)
def _s_fixed_point(y, val, noise, r, s, lo, step, s_iters, tol_s, s_floor, cst, t0, t1, t2, t3):
    K, F = val.shape
    k, f = _lut_pos(r, lo, step, K, cst)
    for it in range(s_iters):
        for i in range(F):
            sg = _lerp(val, k, f, i)
            n = noise[i]
            q = s * sg / (s * sg + n)
            rho = q * q
            t0[i] = rho * (y[i] - n) / sg
            t1[i] = rho
        num = _sum4(t0, cst[0])
        den = _sum4(t1, cst[0])
        sn = num / den if den > 0 else s_floor
        if not (sn > s_floor):
            sn = s_floor
        ds = sn - s
        s = sn
        if abs(ds) <= tol_s * s:
            break
    return s


@numba.njit(**_inl)
def _neg_loglik(y, val, noise, r, s, lo, step, cst, t0, t1, t2, t3):
    K, F = val.shape
    k, f = _lut_pos(r, lo, step, K, cst)
    c = cst[1] / noise[0]
    for i in range(F):
        v = s * _lerp(val, k, f, i) + noise[i]
        t0[i] = y[i] / v
        t1[i] = v * c
    F4 = F - (F & 3)
    el = cst[0]
    for i in range(0, F4, 4):
        el += math.log((t1[i] * t1[i + 1]) * (t1[i + 2] * t1[i + 3]))
    prod = cst[1]
    for i in range(F4, F):
        prod *= t1[i]
    el += math.log(prod)
    cst[3] = F
    return _sum4(t0, cst[0]) + el + cst[3] * math.log(noise[0])


@numba.njit(**_inl)
def _r_derivs(y, val, d1t, d2t, noise, r, s, lo, step, cst, t0, t1, t2, t3):
    K, F = val.shape
    k, f = _lut_pos(r, lo, step, K, cst)
    one = cst[1]
    for i in range(F):
        sg = _lerp(val, k, f, i)
        d1 = s * _lerp(d1t, k, f, i)
        d2 = s * _lerp(d2t, k, f, i)
        iv = one / (s * sg + noise[i])
        t = y[i] * iv
        a = iv - t * iv
        b = (t + t - one) * iv * iv
        t0[i] = a * d1
        t1[i] = b * d1 * d1 + a * d2
        t2[i] = b * sg * sg
        t3[i] = b * d1 * sg + a * d1 / s
    gg = _sum4(t0, cst[0])
    hh = _sum4(t1, cst[0])
    hss = _sum4(t2, cst[0])
    hrs = _sum4(t3, cst[0])
    if hss > cst[0]:
        ks = hrs / hss
        hp = hh - hrs * ks
    else:
        ks = cst[0]
        hp = hh
    return gg, hh, ks, hp


@numba.njit(**_inl)
def _r_descent(y, val, d1t, d2t, noise, r, s, e, lo, hi, step, r_iters, tol_r, max_step, s_floor, cst, t0, t1, t2, t3):
    er = e
    half = cst[2]
    it = 0
    while it < r_iters:
        g, h, ks, hp = _r_derivs(y, val, d1t, d2t, noise, r, s, lo, step, cst, t0, t1, t2, t3)
        if hp > cst[0]:
            d = -g / hp
        else:
            d = -max_step if g > cst[0] else max_step
            ks = cst[0]
        if d > max_step:
            d = max_step
        if d < -max_step:
            d = -max_step
        rn = _clamp_r(r + d, lo, hi)
        if rn == r:
            break
        moved = False
        for bt in range(6):
            sn = s - ks * (rn - r)
            if sn < s_floor:
                sn = s_floor
            en = _neg_loglik(y, val, noise, rn, sn, lo, step, cst, t0, t1, t2, t3)
            if en <= er:
                stp = abs(rn - r)
                r = rn
                s = sn
                er = en
                moved = True
                if stp < tol_r:
                    it = r_iters
                break
            rn = r + (rn - r) * half
        if not moved:
            break
        it += 1
    return r, s, er


@numba.njit(**_leaf)
def _insert_candidate(r, l, s, cr, cl, cs, merge_tol):
    for j in range(3):
        if cl[j] > NONE and abs(cr[j] - r) < merge_tol:
            if l <= cl[j]:
                return
            cr[j] = r
            cl[j] = l
            cs[j] = s
            m = j
            while m > 0 and cl[m] > cl[m - 1]:
                cr[m], cr[m - 1] = cr[m - 1], cr[m]
                cl[m], cl[m - 1] = cl[m - 1], cl[m]
                cs[m], cs[m - 1] = cs[m - 1], cs[m]
                m -= 1
            return
    if l <= cl[2]:
        return
    m = 2
    while m > 0 and l > cl[m - 1]:
        cr[m] = cr[m - 1]
        cl[m] = cl[m - 1]
        cs[m] = cs[m - 1]
        m -= 1
    cr[m] = r
    cl[m] = l
    cs[m] = s


@numba.njit(**_inl)
def _search_pixel(y, val, d1t, d2t, noise, starts, lo, hi, step, max_outer, s_iters, r_iters,
                  tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, cr, cl, cs, cst, t0, t1, t2, t3):
    K, F = val.shape
    for j in range(3):
        cr[j] = lo
        cl[j] = NONE
        cs[j] = s_floor
    for st in range(starts.shape[0]):
        r = _clamp_r(starts[st], lo, hi)
        s = _s_moment(y, val, noise, r, lo, step, s_floor, cst, t0, t1, t2, t3)
        outer = 0
        while True:
            s = _s_fixed_point(y, val, noise, r, s, lo, step, s_iters, tol_s, s_floor, cst, t0, t1, t2, t3)
            e = _neg_loglik(y, val, noise, r, s, lo, step, cst, t0, t1, t2, t3)
            if outer >= max_outer:
                break
            rn, s, e = _r_descent(y, val, d1t, d2t, noise, r, s, e, lo, hi, step, r_iters, tol_r, max_step, s_floor, cst, t0, t1, t2, t3)
            dr = abs(rn - r)
            r = rn
            outer += 1
            if dr < tol_r:
                outer = max_outer
            for j in range(3):
                if cl[j] > NONE and abs(cr[j] - r) < dup_tol:
                    outer = max_outer
        _insert_candidate(r, -e, s, cr, cl, cs, merge_tol)
    for j in range(1, 3):
        if not (cl[j] > NONE):
            cr[j] = cr[0]
            cs[j] = cs[0]


@numba.njit(**_inl)
def _search_chunk(power, val, d1t, d2t, noise, starts, lo, hi, step, max_outer, s_iters, r_iters,
                  tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, r_out, l_out, s_out, p0, p1):
    F = power.shape[0]
    yb = np.empty(F, dtype=power.dtype)
    cr = np.empty(3, dtype=power.dtype)
    cl = np.empty(3, dtype=power.dtype)
    cs = np.empty(3, dtype=power.dtype)
    cst = np.empty(4, dtype=power.dtype)
    # the scratch rows, zero-padded to a multiple of 4: _sum4's last group adds +0.0 to the lanes
    # past F, which gives the same bits as leaving them out (a lane starts at +0.0 and so is never
    # -0.0); the helpers write only the first F entries
    tb = np.zeros((4, (F + 3) // 4 * 4), dtype=power.dtype)
    t0 = tb[0]
    t1 = tb[1]
    t2 = tb[2]
    t3 = tb[3]
    cst[0] = 0
    cst[1] = 1
    cst[2] = 0.5
    for p in range(p0, p1):
        for i in range(F):
            yb[i] = power[i, p]
        _search_pixel(yb, val, d1t, d2t, noise, starts, lo, hi, step, max_outer, s_iters, r_iters,
                      tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, cr, cl, cs, cst, t0, t1, t2, t3)
        for j in range(3):
            r_out[j, p] = cr[j]
            l_out[j, p] = cl[j]
            s_out[j, p] = cs[j]


_CHUNK = 256


@numba.njit(parallel=True, nogil=True, cache=True)
def blurmap_search(power, val, d1t, d2t, noise, starts, lo, hi, step, max_outer, s_iters, r_iters,
                   tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, r_out, l_out, s_out):
    """Top-3 likelihood maxima per pixel (the twin of the CUDA kernel: same operations, same order).

    Parameters
    ----------
    power : (F, P) float array
        Gabor response powers ``|g_i^∇|²`` of ``P`` pixels.
    val, d1t, d2t : (K, F) arrays
        LUTs of ``σ̃_i²(r)`` and its first/second derivatives at ``lo + k·step``.
    noise : (F,) array
        Noise spectrum.
    starts : (S,) array
        Initial radii.
    r_out, l_out, s_out : (3, P) arrays
        Candidate radii, log-likelihoods ``-E`` (``NONE`` when missing), ``ŝ``.
    """
    P = power.shape[1]
    nchunks = (P + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        _search_chunk(power, val, d1t, d2t, noise, starts, lo, hi, step, max_outer, s_iters, r_iters,
                      tol_r, tol_s, max_step, s_floor, merge_tol, dup_tol, r_out, l_out, s_out,
                      c * _CHUNK, min(P, (c + 1) * _CHUNK))
    return r_out, l_out, s_out
