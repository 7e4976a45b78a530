"""Integer-factor resampling on the array namespace (NumPy or CuPy): block
means down, linear interpolation back up. Used to analyse a large image at a
coarser scale (:meth:`gpudeblur.blurmap.BlurMapEstimator.estimate`,
``scale=``)."""

from __future__ import annotations

import numpy as np

__all__ = ["block_mean", "upsample_linear"]


def block_mean(a, f: int, xp):
    """Means of the ``f × f`` blocks of ``a`` (``(M, N)`` or ``(M, N, C)``),
    edge-extended to a multiple of ``f``; shape ``(⌈M/f⌉, ⌈N/f⌉[, C])``."""
    pm, pn = -a.shape[0] % f, -a.shape[1] % f
    if pm or pn:
        a = xp.pad(a, ((0, pm), (0, pn)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    M, N = a.shape[:2]
    return a.reshape((M // f, f, N // f, f) + a.shape[2:]).mean(axis=(1, 3), dtype=a.dtype)


def upsample_linear(a, f: int, shape, xp):
    """Linear interpolation of the block grid ``a`` (``(m, n)``, :func:`block_mean`
    of an array of 2-D ``shape``) at the full grid's pixel centres: block ``i``'s
    centre is at ``f·i + (f − 1)/2``; beyond the first and last centres the
    end value is held."""
    for axis, n in enumerate(shape):
        m = a.shape[axis]
        c = np.clip((np.arange(n, dtype=np.float64) - (f - 1) / 2) / f, 0, m - 1)
        i0 = np.minimum(np.floor(c).astype(np.int64), max(m - 2, 0))
        i1 = np.minimum(i0 + 1, m - 1)
        frac = xp.asarray((c - i0).astype(a.dtype)).reshape((-1, 1) if axis == 0 else (1, -1))
        lo, hi = xp.take(a, xp.asarray(i0), axis=axis), xp.take(a, xp.asarray(i1), axis=axis)
        a = lo + frac * (hi - lo)
    return a
