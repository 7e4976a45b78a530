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


def upsample_linear(a, f: int, shape, xp, out=None):
    """Linear interpolation of the block grid ``a`` (``(m, n)``, :func:`block_mean`
    of an array of 2-D ``shape``) at the full grid's pixel centres: block ``i``'s
    centre is at ``f·i + (f − 1)/2``; beyond the first and last centres the
    end value is held. ``out``: an ``(M, N)`` array of ``a``'s dtype to write
    into (a reused buffer saves fresh memory on large images).

    Columns (on the ``m`` block rows), then rows; along each axis the pixels
    ``f·q + j`` of one phase ``j`` take one fraction and consecutive blocks,
    so each phase is a few strided slices written in place (no gathers, no
    temporaries): ``lo + frac·(hi − lo)`` per value."""
    a = _lerp_axis(a, f, shape[1], 1, xp, None)
    return _lerp_axis(a, f, shape[0], 0, xp, out)


def _lerp_axis(a, f, n, axis, xp, out):
    """:func:`upsample_linear` along one axis (0 or 1) of a 2-D ``a``, to length ``n``."""
    m = a.shape[axis]
    shape = (n, a.shape[1]) if axis == 0 else (a.shape[0], n)
    if out is None:
        out = xp.empty(shape, dtype=a.dtype)
    elif tuple(out.shape) != shape or out.dtype != a.dtype:
        raise ValueError(f"out must be a {shape} {a.dtype} array, got {tuple(out.shape)} {out.dtype}")
    if m == 1:  # one block: its value everywhere
        out[...] = a
        return out

    def sl(v, start, stop, step=1):
        return v[start:stop:step] if axis == 0 else v[:, start:stop:step]

    c = np.clip((np.arange(n, dtype=np.float64) - (f - 1) / 2) / f, 0, m - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), m - 2)
    frac = (c - i0).astype(a.dtype)
    d = sl(a, 1, m) - sl(a, 0, m - 1)  # hi − lo of each pair of neighbouring blocks
    for j in range(min(f, n)):
        xs = np.arange(j, n, f)
        # runs of consecutive blocks at one fraction (the interior, and single pixels
        # where the ends are held): one slice each
        new_run = np.ones(len(xs), dtype=bool)
        new_run[1:] = (np.diff(i0[xs]) != 1) | (frac[xs[1:]] != frac[xs[:-1]])
        starts = np.flatnonzero(new_run)
        for t0, t1 in zip(starts, list(starts[1:]) + [len(xs)]):
            k0, L = int(i0[xs[t0]]), int(t1 - t0)
            o = sl(out, int(xs[t0]), int(xs[t1 - 1]) + 1, f)
            xp.multiply(sl(d, k0, k0 + L), frac[xs[t0]], out=o)
            o += sl(a, k0, k0 + L)
    return out
