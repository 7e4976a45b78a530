"""Numba twins of the CUDA kernels in ``kernels/deconv.cu``.

Same names, same arguments, same per-pixel math as ``kernels/deconv.cuh``
(checked against a host build of that header in ``tests/test_kernels.py``).
Arrays are channels-first ``(C, M, N)`` and C-contiguous.
"""

from __future__ import annotations

import math
import os

# Numba's OpenMP workers spin after each parallel region by default, taking
# the cores from scipy.fft's threads that run next (RL at 512²: the ratio
# kernel measured 6.5 ms inside the loop vs 0.8 ms with passive waiting).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402

_jit = dict(parallel=True, nogil=True, cache=True, fastmath=False)


@numba.njit(inline="always", cache=True)
def _soft(v, t):
    a = abs(v) - t
    if a > 0:
        return a if v > 0 else -a
    return v * 0


@numba.njit(inline="always", cache=True)
def _unit_grad(x, i, j, M, N, eps):
    c = x[i, j]
    dx = x[i, j + 1] - c if j + 1 < N else c * 0
    dy = x[i + 1, j] - c if i + 1 < M else c * 0
    n = math.sqrt(dx * dx + dy * dy + eps * eps)
    return dx / n, dy / n


@numba.njit(**_jit)
def rl_ratio(y, est, out, eps):
    """``out = y / est`` where ``est > eps`` else 0 (flat arrays)."""
    yf = y.ravel()
    ef = est.ravel()
    of = out.ravel()
    for k in prange(yf.size):
        e = ef[k]
        of[k] = yf[k] / e if e > eps else yf[k] * 0
    return out


@numba.njit(**_jit)
def rl_tv_update(x, corr, out, lam, eps):
    """RL-TV multiplicative update (see ``rl_tv_update_at`` in deconv.cuh)."""
    C, M, N = x.shape
    one = x.dtype.type(1)
    floor = x.dtype.type(1e-3)
    for r in prange(C * M):
        c = r // M
        i = r % M
        xc = x[c]
        for j in range(N):
            gx, gy = _unit_grad(xc, i, j, M, N, eps)
            gxl = gx * 0
            gyu = gx * 0
            if j > 0:
                gxl = _unit_grad(xc, i, j - 1, M, N, eps)[0]
            if i > 0:
                gyu = _unit_grad(xc, i - 1, j, M, N, eps)[1]
            div = (gx if j + 1 < N else gx * 0) - gxl + (gy if i + 1 < M else gy * 0) - gyu
            den = max(one - lam * div, floor)
            out[c, i, j] = xc[i, j] * corr[c, i, j] / den
    return out


@numba.njit(inline="always", cache=True)
def _tv_v(x, ux, uy, c, i, j, inext, N):
    """``v = D x + u`` of channel ``c`` at ``(i, j)`` (periodic forward differences; ``tv_v_at``)."""
    jnext = j + 1 if j + 1 < N else 0
    v0 = x[c, i, j]
    return x[c, i, jnext] - v0 + ux[c, i, j], x[c, inext, j] - v0 + uy[c, i, j]


@numba.njit(inline="always", cache=True)
def _tv_dual_store(ux, uy, wx, wy, c, i, j, vx, vy, zx, zy):
    """``u <- v - z``, ``w = z - u`` at ``(c, i, j)`` (``tv_dual_store``)."""
    nx = vx - zx
    ny = vy - zy
    ux[c, i, j] = nx
    uy[c, i, j] = ny
    wx[c, i, j] = zx - nx
    wy[c, i, j] = zy - ny


@numba.njit(**_jit)
def admm_tv_dual(x, ux, uy, wx, wy, t, iso):
    """ADMM-TV dual step in place on ``ux, uy``; writes ``w = z - u``."""
    C, M, N = x.shape
    for r in prange(C * M):
        c = r // M
        i = r % M
        inext = i + 1 if i + 1 < M else 0
        for j in range(N):
            vx, vy = _tv_v(x, ux, uy, c, i, j, inext, N)
            if iso:
                n = math.sqrt(vx * vx + vy * vy)
                s = (n - t) / n if n > t else n * 0
                zx = s * vx
                zy = s * vy
            else:
                zx = _soft(vx, t)
                zy = _soft(vy, t)
            _tv_dual_store(ux, uy, wx, wy, c, i, j, vx, vy, zx, zy)


@numba.njit(**_jit)
def admm_tv_dual_joint(x, ux, uy, wx, wy, t):
    """ADMM-TV dual step of all channels of a pixel together (``admm_tv_dual_joint_at``):
    the isotropic shrinkage of the pixel's ``2C`` gradient components by their joint norm
    (vectorial / colour TV); ``u`` updated in place, ``w = z - u`` written.

    A row at a time: the squared norms summed channel by channel into a row buffer, then
    the update channel by channel, so the loops over ``j`` vectorize; per pixel the same
    operations in the same order as the header (the sum over ``c`` from 0, ``v`` formed
    again for the update), all in the arrays' dtype."""
    C, M, N = x.shape
    zero = x.dtype.type(0)
    for i in prange(M):
        inext = i + 1 if i + 1 < M else 0
        n2 = np.zeros(N, dtype=x.dtype)
        for c in range(C):
            for j in range(N):
                vx, vy = _tv_v(x, ux, uy, c, i, j, inext, N)
                n2[j] += vx * vx + vy * vy
        for j in range(N):
            n = math.sqrt(n2[j])
            n2[j] = (n - t) / n if n > t else zero  # the scale s of pixel j
        for c in range(C):
            for j in range(N):
                vx, vy = _tv_v(x, ux, uy, c, i, j, inext, N)
                _tv_dual_store(ux, uy, wx, wy, c, i, j, vx, vy, n2[j] * vx, n2[j] * vy)


@numba.njit(**_jit)
def admm_tv_rhs(b, wx, wy, out, rho):
    """``out = b + rho * Dᵀ w`` with periodic differences."""
    C, M, N = b.shape
    for r in prange(C * M):
        c = r // M
        i = r % M
        iprev = i - 1 if i > 0 else M - 1
        for j in range(N):
            jprev = j - 1 if j > 0 else N - 1
            dtw = wx[c, i, jprev] - wx[c, i, j] + wy[c, iprev, j] - wy[c, i, j]
            out[c, i, j] = b[c, i, j] + rho * dtw
    return out
