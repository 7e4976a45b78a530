"""Finite-difference gradient and divergence pairs (exact adjoints).

All functions take channels-first ``(C, M, N)`` arrays (or any array whose
last two axes are the image plane) and work with NumPy or CuPy alike.

``grad``/``div`` with ``boundary='neumann'``
    Forward differences, zero on the last row/column; ``div = -gradᵀ``.
``boundary='periodic'``
    Circular forward differences (diagonal in Fourier, used by ADMM's
    closed-form x-update); ``div = -gradᵀ`` as well.
"""

from __future__ import annotations

from ._backend import array_module

__all__ = ["grad", "div", "laplacian_otf_abs2", "difference_otfs", "rfft_column_weights"]


def grad(x, boundary: str = "neumann"):
    """Forward-difference gradient ``(gx, gy)`` along the last two axes."""
    xp = array_module(x)
    if boundary == "periodic":
        gx = xp.roll(x, -1, axis=-1) - x
        gy = xp.roll(x, -1, axis=-2) - x
        return gx, gy
    if boundary != "neumann":
        raise ValueError(f"unknown boundary {boundary!r}; expected 'neumann' or 'periodic'")
    gx = xp.zeros_like(x)
    gy = xp.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


def div(gx, gy, boundary: str = "neumann"):
    """Divergence, the negative adjoint of :func:`grad` for the same boundary."""
    xp = array_module(gx)
    if boundary == "periodic":
        return gx - xp.roll(gx, 1, axis=-1) + gy - xp.roll(gy, 1, axis=-2)
    if boundary != "neumann":
        raise ValueError(f"unknown boundary {boundary!r}; expected 'neumann' or 'periodic'")
    d = xp.zeros_like(gx)
    d[..., :, 0] = gx[..., :, 0]
    d[..., :, 1:-1] = gx[..., :, 1:-1] - gx[..., :, :-2]
    d[..., :, -1] = -gx[..., :, -2]
    d[..., 0, :] += gy[..., 0, :]
    d[..., 1:-1, :] += gy[..., 1:-1, :] - gy[..., :-2, :]
    d[..., -1, :] += -gy[..., -2, :]
    return d


def difference_otfs(shape, xp, dtype):
    """rFFT transfer functions of the periodic forward differences ``(Dx, Dy)``."""
    import numpy as np

    M, N = shape
    fy = np.exp(2j * np.pi * np.fft.fftfreq(M))[:, None] - 1
    fx = np.exp(2j * np.pi * np.fft.rfftfreq(N))[None, :] - 1
    cdt = np.complex64 if np.dtype(dtype) == np.float32 else np.complex128
    dx = np.broadcast_to(fx, (M, N // 2 + 1)).astype(cdt)
    dy = np.broadcast_to(fy, (M, N // 2 + 1)).astype(cdt)
    return xp.asarray(dx), xp.asarray(dy)


def rfft_column_weights(n, xp, dtype):
    """How many spectrum columns each of an rFFT's ``n // 2 + 1`` columns stands for (grid width
    ``n``): 2, but 1 for column 0 and, for even ``n``, the last; so a sum over the full spectrum is
    ``(a * w).sum()`` of the half one."""
    w = xp.full(n // 2 + 1, 2.0, dtype=dtype)
    w[0] = 1
    if n % 2 == 0:
        w[-1] = 1
    return w


def laplacian_otf_abs2(shape, xp, dtype):
    """``|Dx|² + |Dy|²`` on the rFFT grid (the gradient prior's spectrum)."""
    import numpy as np

    M, N = shape
    wy = 4 * np.sin(np.pi * np.fft.fftfreq(M)) ** 2
    wx = 4 * np.sin(np.pi * np.fft.rfftfreq(N)) ** 2
    return xp.asarray((wy[:, None] + wx[None, :]).astype(dtype))
