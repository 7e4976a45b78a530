"""Numba twin of ``kernels/labeling.cu`` (same names, same per-element math).

Memory order differs from the CUDA kernels: the CUDA kernels read
label-major arrays ``(K, M, N)`` so that adjacent threads touch adjacent
pixels; on the CPU one thread walks the K entries of a pixel, so these
twins take **pixel-major** arrays, the label axis last and contiguous:
``u, ubar, G, scratch, c``: ``(M, N, K)``; ``p``: ``(E, M, N, K)``. The
labeling solver allocates its lifted arrays in this order on the CPU
backend (``labeling._lifted_empty``) and hands (K, M, N) *views* of them to
the array code, so both backends run the same Python lines.

Checked against a host build of ``kernels/labeling.cuh`` (same inputs,
transposed) in ``tests/test_labeling.py``. ``prolong_labels`` has no CUDA
twin: on the GPU that step is array code (``labeling._prolong_labels``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(inline="always", cache=True, error_model="numpy")
def _pava_push(BS, BW, nb, val, one):
    """Push one value onto the PAVA block stack (sums ``BS``, sizes ``BW``), merging
    while the previous block's mean is below the new one (``sum_prev * w < sum *
    w_prev``, as in labeling.cuh). Returns the new number of blocks."""
    w = one
    while nb > 0 and BS[nb - 1] * w < val * BW[nb - 1]:
        val += BS[nb - 1]
        w += BW[nb - 1]
        nb -= 1
    BS[nb] = val
    BW[nb] = w
    return nb + 1


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False, error_model="numpy")
def lifted_primal(u, G, ubar, tau):
    """Lifted primal step of every pixel (``lifted_primal_at`` in labeling.cuh).

    ``u, G, ubar``: C-contiguous ``(M, N, K)``; ``tau``: ``(M, N)``.
    ``u`` <- projection of ``u - tau G`` onto ``1 >= u_1 >= ... >= u_K >= 0``
    (pool-adjacent-violators, then clip); ``ubar`` <- ``2 u_new - u_old``;
    ``G`` is clobbered (scratch: PAVA block sums; ``ubar`` holds the block
    sizes until the write-back, as in the CUDA kernel).
    """
    K = u.shape[2]
    npix = u.shape[0] * u.shape[1]
    uf = u.reshape(npix, K)
    gf = G.reshape(npix, K)
    bf = ubar.reshape(npix, K)
    tf = tau.reshape(npix)
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    two = u.dtype.type(2)
    for x in prange(npix):
        t = tf[x]
        ux = uf[x]
        gx = gf[x]
        bx = bf[x]
        nb = 0
        for k in range(K):
            nb = _pava_push(gx, bx, nb, ux[k] - t * gx[k], one)
        k = K
        for b in range(nb - 1, -1, -1):
            wb = bx[b]
            val = gx[b] / wb
            w = int(wb)
            val = min(max(val, zero), one)
            for _ in range(w):
                k -= 1
                old = ux[k]
                ux[k] = val
                bx[k] = two * val - old


@numba.njit(inline="always", cache=True)
def _edge_offset(d):
    if d == 0:
        return 0, 1
    if d == 1:
        return 1, 0
    if d == 2:
        return 1, 1
    return 1, -1


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def lifted_dual(ubar, p, W, delta, sigma):
    """Dual step of the lifted edge variables (``lifted_dual_at`` in labeling.cuh).

    ``ubar``: ``(M, N, K)``; ``p``: ``(E, M, N, K)`` updated in place;
    ``W``: ``(E, M, N)``; ``delta``: ``(K,)``. One row of pixels per task;
    the label loop is innermost and contiguous (vectorized).
    """
    E, M, N, K = p.shape
    zero = p.dtype.type(0)
    for i in prange(M):
        for d in range(E):
            di, dj = _edge_offset(d)
            i2 = i + di
            for j in range(N):
                j2 = j + dj
                pd = p[d, i, j]
                if i2 < M and j2 >= 0 and j2 < N:
                    w = W[d, i, j]
                    uc = ubar[i, j]
                    un = ubar[i2, j2]
                    for k in range(K):
                        b = w * delta[k]
                        v = pd[k] + sigma * (un[k] - uc[k])
                        pd[k] = min(max(v, -b), b)
                else:
                    for k in range(K):
                        pd[k] = zero


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False, error_model="numpy")
def lifted_primal_fused(u, ubar, scratch, c, p, tau, lb):
    """Fused primal step (``lifted_primal_fused_at`` in labeling.cuh).

    ``G = c + K^T p`` on the fly, projection of ``u - tau G`` onto the
    monotone set, ``ubar = 2 u_new - u_old``, ``lb[i, j] = min(0, min_k
    prefix sums of G)``. ``u, ubar, scratch, c``: ``(M, N, K)``; ``p``:
    ``(E, M, N, K)``; ``tau, lb``: ``(M, N)``. The same operations in the
    same order per pixel as the CUDA kernel; ``G`` and the PAVA blocks live
    in per-row buffers of length K (``scratch`` is not needed here). The
    blocks also record where they end, so the write-back is one forward
    pass over the labels instead of a loop per block (same values; 1.5x
    faster where most blocks are single labels).
    """
    E, M, N, K = p.shape
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    two = u.dtype.type(2)
    for i in prange(M):
        G = np.empty(K, dtype=u.dtype)
        BM = np.empty(K, dtype=u.dtype)
        BW = np.empty(K, dtype=u.dtype)
        BE = np.empty(K, dtype=np.int32)
        for j in range(N):
            cx = c[i, j]
            for k in range(K):
                G[k] = cx[k]
            for d in range(E):
                di, dj = _edge_offset(d)
                pd = p[d, i, j]
                for k in range(K):
                    G[k] -= pd[k]
                i0 = i - di
                j0 = j - dj
                if i0 >= 0 and j0 >= 0 and j0 < N:
                    ps = p[d, i0, j0]
                    for k in range(K):
                        G[k] += ps[k]
            ux = u[i, j]
            bx = ubar[i, j]
            t = tau[i, j]
            nb = 0
            prefix = zero
            minpref = zero
            for k in range(K):
                prefix += G[k]
                minpref = min(minpref, prefix)
                nb = _pava_push(BM, BW, nb, ux[k] - t * G[k], one)
                BE[nb - 1] = k + 1
            lb[i, j] = minpref
            b = 0
            val = min(max(BM[0] / BW[0], zero), one)
            for k in range(K):
                if k >= BE[b]:
                    b += 1
                    val = min(max(BM[b] / BW[b], zero), one)
                old = ux[k]
                ux[k] = val
                bx[k] = two * val - old


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def prolong_labels(u_c, p_c, layer, frac, u, p):
    """Fine lifted ``(u, p)`` from a coarse label level (``labeling._prolong_labels``).

    ``u[i, j, k] = u_c[i, j, layer[k]]``, ``p[d, i, j, k] = p_c[d, i, j,
    layer[k]] * frac[k]`` (``layer``: each fine layer's 0-based coarse
    layer). Pixel-major arrays: ``u_c``: ``(M, N, Kc)``, ``p_c``: ``(E, M,
    N, Kc)``, ``u``: ``(M, N, K)``, ``p``: ``(E, M, N, K)``. One row of
    pixels per task (``np.take`` with ``out=`` runs on one core: 0.93 s of a
    6 s labeling at 500², 81 labels, 2 cores).
    """
    E, M, N, K = p.shape
    for i in prange(M):
        for j in range(N):
            uc = u_c[i, j]
            ux = u[i, j]
            for k in range(K):
                ux[k] = uc[layer[k]]
            for d in range(E):
                pc = p_c[d, i, j]
                px = p[d, i, j]
                for k in range(K):
                    px[k] = pc[layer[k]] * frac[k]


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False, error_model="numpy")
def data_cost(idx, pv, kap, p_floor, floor_cost, empty_cost, out):
    """Data cost ``D = -log max(p~, p_floor)`` of the candidates, label-major (``labeling._data_cost_lmn``).

    ``idx``: ``(M, N, C)`` nearest label of each candidate, ``pv``: ``(M,
    N, C)`` its likelihood rescaled per pixel (0 = no candidate), in the
    cost's dtype; ``kap``: the label kernel (odd length, same dtype);
    ``out``: ``(L, M, N)``. The same float operations, in the same order,
    as the array code of ``labeling._likelihood_lmn`` (scatter, the larger
    candidate wins a shared label; the kernel's taps added centre first,
    then ``t = 1, 2, ...`` from below and above; the sum over labels in
    label order; division; floor): ``p~`` is non-zero only within the
    kernel's half width of a candidate, so only those labels are computed,
    and the others get ``floor_cost`` (``-log p_floor``); a pixel without
    a candidate gets ``empty_cost`` (``-log max(1/L, p_floor)``) at every
    label. Only the ``log`` is Numba's (it may differ from NumPy's in the
    last bit). The array code makes a dozen temporaries of the cost
    volume's size (2.8 s at 1000² x 81 labels on 2 cores).
    """
    L, M, N = out.shape
    C = idx.shape[2]
    h = kap.shape[0] // 2
    zero = pv.dtype.type(0)
    for i in prange(M):
        P = np.zeros(L, dtype=out.dtype)
        Pk = np.zeros(L, dtype=out.dtype)
        live = np.zeros(L, dtype=np.bool_)
        for j in range(N):
            for c in range(C):
                v = pv[i, j, c]
                if v > zero:
                    k = idx[i, j, c]
                    P[k] = max(P[k], v)
                    for l in range(max(k - h, 0), min(k + h + 1, L)):
                        live[l] = True
            S = zero
            for l in range(L):
                if live[l]:
                    acc = P[l] * kap[h]
                    for t in range(1, h + 1):
                        if t >= L or (kap[h + t] == zero and kap[h - t] == zero):
                            continue
                        if l >= t:
                            acc += kap[h - t] * P[l - t]
                        if l + t < L:
                            acc += kap[h + t] * P[l + t]
                    Pk[l] = acc
                    S += acc
            # S = 0: no usable candidate, or every tap fell off the labels or underflowed (the array code's ``empty``)
            ok = S > zero
            for l in range(L):
                if not ok:
                    out[l, i, j] = empty_cost
                elif live[l]:
                    out[l, i, j] = -np.log(max(Pk[l] / S, p_floor))
                else:
                    out[l, i, j] = floor_cost
                live[l] = False
                Pk[l] = zero
            for c in range(C):
                P[idx[i, j, c]] = zero
