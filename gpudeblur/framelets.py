"""Undecimated piecewise-linear B-spline tight framelets (Daubechies, Han, Ron, Shen 2003).

The 1-D filters of the piecewise-linear B-spline framelet system

    h0 = [1, 2, 1] / 4,   h1 = √2/4 · [1, 0, −1],   h2 = [−1, 2, −1] / 4

satisfy ``|H0(ω)|² + |H1(ω)|² + |H2(ω)|² = 1``; their 3×3 = 9 tensor
products form a 2-D tight frame. The transform here is *undecimated*
(à trous: level ``l`` uses the filters dilated by ``2**(l-1)``) and
*periodic* on the last two axes, so ``WᵀW = I`` holds exactly (perfect
reconstruction, up to rounding) for any image size. The blind deblurring
of :mod:`gpudeblur.blind` applies it on an FFT grid that is already
padded and edge-tapered, so the periodic wrap costs nothing there.

Layout: ``W x`` for ``x`` of shape ``(..., M, N)`` is an array of shape
``(8·levels + 1, ..., M, N)``: the 8 high-pass bands of level 1, then of
level 2, ..., and the low-pass band of the coarsest level last.
Everything is plain array code (NumPy or CuPy, from the input's module).
"""

from __future__ import annotations

import math

from ._backend import array_module

__all__ = ["framelet_forward", "framelet_adjoint", "n_bands", "FILTERS"]

#: the three 1-D filters (taps at offsets −1, 0, +1)
FILTERS = (
    (0.25, 0.5, 0.25),
    (math.sqrt(2) / 4, 0.0, -math.sqrt(2) / 4),
    (-0.25, 0.5, -0.25),
)


def n_bands(levels: int) -> int:
    """Number of bands of a ``levels``-level transform (``8·levels + 1``)."""
    return 8 * int(levels) + 1


def _filt(x, h, step, axis, adjoint):
    """``y[n] = Σ_t h[t] x[n + (t−1)·step]`` (periodic); its adjoint flips the offsets."""
    xp = array_module(x)
    a, b, c = h
    s = -step if adjoint else step
    y = x * x.dtype.type(b) if b != 0 else None
    # x[n - s] = roll(x, s); x[n + s] = roll(x, -s)
    t0 = xp.roll(x, s, axis=axis) * x.dtype.type(a)
    t2 = xp.roll(x, -s, axis=axis) * x.dtype.type(c)
    if y is None:
        return t0 + t2
    y += t0
    y += t2
    return y


def _split(x, step):
    """One analysis level: 9 bands ``(i, j)`` = rows filtered by ``h_i``, columns by ``h_j``."""
    rows = [_filt(x, h, step, -2, False) for h in FILTERS]
    return [[_filt(r, h, step, -1, False) for h in FILTERS] for r in rows]


def framelet_forward(x, levels: int = 1):
    """Analysis ``W x``: shape ``(8·levels + 1, *x.shape)`` (see module docstring)."""
    xp = array_module(x)
    levels = int(levels)
    if levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    out = xp.empty((n_bands(levels),) + tuple(x.shape), dtype=x.dtype)
    low = x
    k = 0
    for lev in range(levels):
        bands = _split(low, 2**lev)
        for i in range(3):
            for j in range(3):
                if i == 0 and j == 0:
                    continue
                out[k] = bands[i][j]
                k += 1
        low = bands[0][0]
    out[k] = low
    return out


def framelet_adjoint(coef, levels: int = 1):
    """Synthesis ``Wᵀ c`` (the exact adjoint of :func:`framelet_forward`).

    For the tight frame ``Wᵀ W = I``, so this is also the inverse transform.
    """
    levels = int(levels)
    if coef.shape[0] != n_bands(levels):
        raise ValueError(f"coefficients have {coef.shape[0]} bands; a {levels}-level transform has {n_bands(levels)}")
    low = coef[-1]
    for lev in reversed(range(levels)):
        step = 2**lev
        base = 8 * lev
        k = base
        acc_rows = []
        for i in range(3):
            acc = None
            for j in range(3):
                band = low if (i == 0 and j == 0) else coef[k]
                if not (i == 0 and j == 0):
                    k += 1
                t = _filt(band, FILTERS[j], step, -1, True)
                acc = t if acc is None else acc + t
            acc_rows.append(_filt(acc, FILTERS[i], step, -2, True))
        low = acc_rows[0] + acc_rows[1] + acc_rows[2]
    return low
