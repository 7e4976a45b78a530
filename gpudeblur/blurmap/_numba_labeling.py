"""Numba twin of ``kernels/labeling.cu`` (same name, same arguments, same math).

Checked against a host build of ``kernels/labeling.cuh`` in
``tests/test_labeling.py``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def lifted_primal(u, G, ubar, tau):
    """Lifted primal step of every pixel (see ``lifted_primal_at`` in labeling.cuh).

    ``u, G, ubar``: C-contiguous ``(K, M, N)``; ``tau``: ``(M, N)``.
    ``u`` <- projection of ``u - tau G`` onto ``1 >= u_1 >= ... >= u_K >= 0``
    (pool-adjacent-violators, then clip); ``ubar`` <- ``2 u_new - u_old``;
    ``G`` is clobbered (scratch).
    """
    K = u.shape[0]
    npix = u.shape[1] * u.shape[2]
    uf = u.reshape(K, npix)
    gf = G.reshape(K, npix)
    bf = ubar.reshape(K, npix)
    tf = tau.reshape(npix)
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    two = u.dtype.type(2)
    for x in prange(npix):
        t = tf[x]
        nb = 0
        for k in range(K):
            val = uf[k, x] - t * gf[k, x]
            w = one
            while nb > 0 and gf[nb - 1, x] < val:
                pw = bf[nb - 1, x]
                val = (gf[nb - 1, x] * pw + val * w) / (pw + w)
                w += pw
                nb -= 1
            gf[nb, x] = val
            bf[nb, x] = w
            nb += 1
        k = K
        for b in range(nb - 1, -1, -1):
            val = gf[b, x]
            w = int(bf[b, x])
            val = min(max(val, zero), one)
            for _ in range(w):
                k -= 1
                old = uf[k, x]
                uf[k, x] = val
                bf[k, x] = two * val - old


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

    ``ubar``: ``(K, M, N)``; ``p``: ``(E, K, M, N)`` updated in place;
    ``W``: ``(E, M, N)``; ``delta``: ``(K,)``. Same per-element math as the
    CUDA kernel; loops ordered for streaming access on the CPU.
    """
    E, K, M, N = p.shape
    for r in prange(K * M):
        k = r // M
        i = r % M
        dk = delta[k]
        for d in range(E):
            di, dj = _edge_offset(d)
            i2 = i + di
            # valid edges: j + dj in [0, N) (branch-free inner loops)
            jlo = max(0, -dj) if i2 < M else N
            jhi = min(N, N - dj) if i2 < M else N
            for j in range(0, jlo):
                p[d, k, i, j] = 0
            for j in range(jlo, jhi):
                b = W[d, i, j] * dk
                v = p[d, k, i, j] + sigma * (ubar[k, i2, j + dj] - ubar[k, i, j])
                p[d, k, i, j] = min(max(v, -b), b)
            for j in range(max(jhi, jlo), N):
                p[d, k, i, j] = 0


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def lifted_primal_fused(u, ubar, scratch, c, p, tau, lb):
    """Fused primal step (``lifted_primal_fused_at`` in labeling.cuh).

    ``G = c + K^T p`` on the fly, projection of ``u - tau G`` onto the
    monotone set, ``ubar = 2 u_new - u_old``, ``lb[i, j] = min(0, min_k
    prefix sums of G)``. ``u, ubar, scratch, c``: ``(K, M, N)``; ``p``:
    ``(E, K, M, N)``; ``tau, lb``: ``(M, N)``.

    Same per-pixel operations in the same order as the CUDA kernel, but
    organised by blocks of 64 pixels of a row: ``G`` and the PAVA blocks
    live in buffers of shape ``(K, 64)`` (cache-resident) instead of the
    label-major global arrays; ``scratch`` is not needed here.
    """
    E, K, M, N = p.shape
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    two = u.dtype.type(2)
    JB = 64  # column block: four (K, JB) buffers stay in the L2 cache
    nblk = (N + JB - 1) // JB
    for r in prange(M * nblk):
        i = r // nblk
        ja = (r % nblk) * JB
        nj = min(JB, N - ja)
        G = np.empty((K, JB), dtype=u.dtype)
        V = np.empty((K, JB), dtype=u.dtype)
        BM = np.empty((K, JB), dtype=u.dtype)
        BW = np.empty((K, JB), dtype=u.dtype)
        for k in range(K):
            for jj in range(nj):
                G[k, jj] = c[k, i, ja + jj]
            for d in range(E):
                di, dj = _edge_offset(d)
                i0 = i - di
                for jj in range(nj):
                    G[k, jj] -= p[d, k, i, ja + jj]
                if i0 >= 0:
                    # source pixel j - dj inside the image (branch-free loop)
                    jlo = max(ja, dj)
                    jhi = min(ja + nj, N + dj)
                    for j in range(jlo, jhi):
                        G[k, j - ja] += p[d, k, i0, j - dj]
            for jj in range(nj):
                V[k, jj] = u[k, i, ja + jj] - tau[i, ja + jj] * G[k, jj]
        for jj in range(nj):
            nb = 0
            prefix = zero
            minpref = zero
            for k in range(K):
                prefix += G[k, jj]
                minpref = min(minpref, prefix)
                val = V[k, jj]
                w = one
                while nb > 0 and BM[nb - 1, jj] < val:
                    pw = BW[nb - 1, jj]
                    val = (BM[nb - 1, jj] * pw + val * w) / (pw + w)
                    w += pw
                    nb -= 1
                BM[nb, jj] = val
                BW[nb, jj] = w
                nb += 1
            lb[i, ja + jj] = minpref
            k = K
            for b in range(nb - 1, -1, -1):
                val = min(max(BM[b, jj], zero), one)
                for _ in range(int(BW[b, jj])):
                    k -= 1
                    V[k, jj] = val
        for k in range(K):
            for jj in range(nj):
                j = ja + jj
                old = u[k, i, j]
                u[k, i, j] = V[k, jj]
                ubar[k, i, j] = two * V[k, jj] - old
