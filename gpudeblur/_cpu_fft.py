"""The CPU backend's FFTs: :mod:`scipy.fft`'s API, computed by ducc0.

gpudeblur's CPU time is mostly FFTs (``sv-admm``: ~75 % of a 1 MP solve;
the blur map's Gabor bank, ``fast``, the blind mode). ducc0 is the
maintained successor of pocketfft, the library inside :mod:`scipy.fft`,
by the same author; on this project's grids (e.g. a ``(3, 1280, 875)``
float32 RGB grid on 2 cores) its real transforms take 2.7 / 3.6 ms where
:mod:`scipy.fft` takes 4–7 / 6–9 ms (``bench/README.md``), with the same
accuracy (relative RMS error against float64: 1.6e-7 / 1.7e-7).

This module offers the transforms gpudeblur calls, with :mod:`scipy.fft`'s
signatures and semantics (``s`` / ``n`` crop or zero-pad, ``axes`` /
``axis``, ``norm``, ``overwrite_x``, ``workers``; float32 stays float32,
float64 stays float64, other real types become float64 as in SciPy), so
the array code is written once against ``be.fft`` for both backends.
Anything else (``fftfreq``, ``next_fast_len``, ...) is :mod:`scipy.fft`'s.

Determinism: ducc0 gives bit-identical results for any number of threads
from two up, but a single-threaded multi-axis transform rounds differently;
so every call uses at least two threads, and a result does not depend on
the machine's core count (``GPUDEBLUR_CPU_WORKERS`` included).

``GPUDEBLUR_CPU_FFT=scipy`` makes the CPU backend use :mod:`scipy.fft`
itself (to compare, or where ducc0 cannot be installed); see
:func:`gpudeblur._backend.cpu_fft_module`.
"""

from __future__ import annotations

import operator
import os

import ducc0
import numpy as np
import scipy.fft as _scipy_fft

__all__ = ["fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2", "fftn", "ifftn", "rfftn", "irfftn"]

#: ``norm`` → ducc0's ``inorm`` (0: none, 1: 1/√n, 2: 1/n) for the forward and the inverse transform
_NORMS = {None: (0, 2), "backward": (0, 2), "ortho": (1, 1), "forward": (2, 0)}


def _threads(workers) -> int:
    if workers is None:
        n = 1
    else:
        n = operator.index(workers)
        if n < 0:
            n += (os.cpu_count() or 1) + 1
        if n <= 0:
            raise ValueError("workers must not be zero")
    return max(2, n)  # one thread rounds multi-axis transforms differently (module docstring)


def _inorm(norm, inverse: bool) -> int:
    if norm not in _NORMS:
        raise ValueError(f'Invalid norm value {norm!r}, should be "backward", "ortho" or "forward"')
    return _NORMS[norm][int(inverse)]


def _real(x):
    x = np.asarray(x)
    if np.iscomplexobj(x):
        raise TypeError("x must be a real sequence")
    if x.dtype in (np.float32, np.float64, np.longdouble):
        return x, False
    return x.astype(np.float32 if x.dtype == np.float16 else np.float64), True


def _complex(x):
    x = np.asarray(x)
    if x.dtype in (np.complex64, np.complex128, np.clongdouble):
        return x, False
    if x.dtype in (np.float32, np.float16):
        return x.astype(np.complex64), True
    if x.dtype == np.longdouble:
        return x.astype(np.clongdouble), True
    return x.astype(np.complex128), True


def _axes_sizes(x, s, axes):
    """Normalized ``axes`` and the sizes ``s`` along them (SciPy's rules for ``s`` and ``axes``)."""
    if axes is None:
        axes = tuple(range(x.ndim)) if s is None else tuple(range(x.ndim - len(s), x.ndim))
    else:
        axes = tuple(operator.index(a) for a in np.atleast_1d(axes))
    nd = x.ndim
    if any(a < -nd or a >= nd for a in axes):
        raise ValueError("axes exceeds dimensionality of input")
    axes = tuple(a % nd for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError("all axes must be unique")
    if s is None:
        s = tuple(x.shape[a] for a in axes)
    else:
        s = tuple(operator.index(n) for n in np.atleast_1d(s))
        if len(s) != len(axes):
            raise ValueError("when given, axes and shape arguments have to be of the same length")
        if any(n < 1 for n in s):
            raise ValueError(f"invalid number of data points ({min(s)}) specified")
    return axes, s


def _fit(x, axes, sizes):
    """``x`` cropped or zero-padded at the end of ``axes`` to ``sizes``; a fresh array flag."""
    if all(x.shape[a] == n for a, n in zip(axes, sizes)):
        return x, False
    crop = [slice(None)] * x.ndim
    pad = [(0, 0)] * x.ndim
    for a, n in zip(axes, sizes):
        crop[a] = slice(0, min(n, x.shape[a]))
        pad[a] = (0, max(0, n - x.shape[a]))
    return np.pad(x[tuple(crop)], pad), True


def _c2c(x, s, axes, norm, overwrite_x, workers, inverse):
    x, fresh = _complex(x)
    axes, s = _axes_sizes(x, s, axes)
    x, padded = _fit(x, axes, s)
    own = fresh or padded or overwrite_x
    out = x if own and x.flags.writeable else None
    return ducc0.fft.c2c(x, axes=axes, forward=not inverse, inorm=_inorm(norm, inverse), out=out,
                         nthreads=_threads(workers))


def _r2c(x, s, axes, norm, workers):
    x, _ = _real(x)
    axes, s = _axes_sizes(x, s, axes)
    x, _ = _fit(x, axes, s)
    return ducc0.fft.r2c(x, axes=axes, forward=True, inorm=_inorm(norm, False), nthreads=_threads(workers))


def _c2r(x, s, axes, norm, overwrite_x, workers):
    x, fresh = _complex(x)
    if s is None:
        axes, _ = _axes_sizes(x, None, axes)
        s = tuple(x.shape[a] for a in axes[:-1]) + (2 * (x.shape[axes[-1]] - 1),)
    axes, s = _axes_sizes(x, s, axes)
    # the last axis holds s[-1] // 2 + 1 complex values (SciPy crops or zero-pads to that)
    x, padded = _fit(x, axes, s[:-1] + (s[-1] // 2 + 1,))
    return ducc0.fft.c2r(x, axes=axes, lastsize=s[-1], forward=False, inorm=_inorm(norm, True),
                         nthreads=_threads(workers), allow_overwriting_input=fresh or padded or overwrite_x)


def _one(n):
    return None if n is None else (n,)


def fft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.fft` by ducc0."""
    return _c2c(x, _one(n), (axis,), norm, overwrite_x, workers, False)


def ifft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.ifft` by ducc0."""
    return _c2c(x, _one(n), (axis,), norm, overwrite_x, workers, True)


def rfft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfft` by ducc0."""
    return _r2c(x, _one(n), (axis,), norm, workers)


def irfft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfft` by ducc0."""
    return _c2r(x, _one(n), (axis,), norm, overwrite_x, workers)


def fftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.fftn` by ducc0."""
    return _c2c(x, s, axes, norm, overwrite_x, workers, False)


def ifftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.ifftn` by ducc0."""
    return _c2c(x, s, axes, norm, overwrite_x, workers, True)


def rfftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfftn` by ducc0."""
    return _r2c(x, s, axes, norm, workers)


def irfftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfftn` by ducc0."""
    return _c2r(x, s, axes, norm, overwrite_x, workers)


def fft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.fft2` by ducc0."""
    return _c2c(x, s, axes, norm, overwrite_x, workers, False)


def ifft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.ifft2` by ducc0."""
    return _c2c(x, s, axes, norm, overwrite_x, workers, True)


def rfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfft2` by ducc0."""
    return _r2c(x, s, axes, norm, workers)


def irfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfft2` by ducc0."""
    return _c2r(x, s, axes, norm, overwrite_x, workers)


def __getattr__(name):  # fftfreq, rfftfreq, fftshift, next_fast_len, ...: SciPy's
    return getattr(_scipy_fft, name)
