"""Numba twins of the CUDA kernels in ``kernels/blind.cu``.

Same names, same arguments, same per-pixel math as ``kernels/blind.cuh``
(checked against a host build of that header and against the array code
of :mod:`gpudeblur.framelets` in ``tests/test_blind.py``). Planes are
``(C, M, N)``, band arrays ``(9, C, M, N)``, C-contiguous.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

_jit = dict(parallel=True, nogil=True, cache=True, fastmath=False)

_S = math.sqrt(2.0) / 4.0
#: h_a[p]: rows a = filter, columns p = tap (offsets −1, 0, +1)
TAPS = np.array([[0.25, 0.5, 0.25], [_S, 0.0, -_S], [-0.25, 0.5, -0.25]])
#: band index of the filter pair (a, b): row-major without (0, 0), low-pass last
BAND = np.array([[8, 0, 1], [2, 3, 4], [5, 6, 7]], dtype=np.int64)


@numba.njit(**_jit)
def framelet_shrink(x, d, e, t):
    """``z = W x + e``; ``d = soft(z, t)`` (high-pass bands) or ``z`` (low-pass); ``e = z − d``."""
    C, M, N = x.shape
    h = TAPS.astype(x.dtype)
    zero = x.dtype.type(0)
    for c in range(C):
        for i in prange(M):
            v = np.empty((3, 3), dtype=x.dtype)
            row = np.empty(3, dtype=x.dtype)
            for j in range(N):
                for p in range(3):
                    r = (i + p - 1) % M
                    for q in range(3):
                        v[p, q] = x[c, r, (j + q - 1) % N]
                for a in range(3):
                    for q in range(3):
                        row[q] = h[a, 0] * v[0, q] + h[a, 1] * v[1, q] + h[a, 2] * v[2, q]
                    for b in range(3):
                        w = h[b, 0] * row[0] + h[b, 1] * row[1] + h[b, 2] * row[2]
                        band = BAND[a, b]
                        z = w + e[band, c, i, j]
                        if band == 8:
                            dn = z
                        else:
                            s = abs(z) - t
                            dn = (s if z > 0 else -s) if s > 0 else zero
                        d[band, c, i, j] = dn
                        e[band, c, i, j] = z - dn


@numba.njit(**_jit)
def framelet_adjoint_diff(d, e, out):
    """``out = Wᵀ(d − e)`` (one level, periodic)."""
    _, C, M, N = d.shape
    h = TAPS.astype(d.dtype)
    for c in range(C):
        for i in prange(M):
            rows = np.empty(3, dtype=np.int64)
            for p in range(3):
                rows[p] = (i - p + 1) % M
            for j in range(N):
                acc = d.dtype.type(0)
                for q in range(3):
                    cc = j - q + 1
                    cc = cc + N if cc < 0 else (cc - N if cc >= N else cc)
                    for p in range(3):
                        r = rows[p]
                        for a in range(3):
                            ha = h[a, p]
                            for b in range(3):
                                band = BAND[a, b]
                                acc += ha * h[b, q] * (d[band, c, r, cc] - e[band, c, r, cc])
                out[c, i, j] = acc
    return out
