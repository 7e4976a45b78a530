"""The CPU backend's FFTs: :mod:`scipy.fft`'s API, computed by ducc0.

gpudeblur's CPU time is mostly FFTs (``sv-admm``: ~75 % of a 1 MP solve;
the blur map's Gabor bank, ``fast``, the blind mode). ducc0 is the
maintained successor of pocketfft, the library inside :mod:`scipy.fft`,
by the same author; on this project's grids (e.g. a ``(3, 1280, 875)``
float32 RGB grid on 2 cores) its real transforms take ~3 ms where
:mod:`scipy.fft` takes 6–9 ms (``python bench/bench_fft.py``), with the
same accuracy (relative RMS error against float64: 1.6e-7 / 1.7e-7).

This module offers the real transforms (``rfft``, ``irfft``, ``rfft2``,
``irfft2``, ``rfftn``, ``irfftn``) with :mod:`scipy.fft`'s signatures and
semantics (``s`` / ``n`` crop or zero-pad, ``axes`` / ``axis``, ``norm``,
``overwrite_x``, ``workers``; float32 stays float32, float64 stays
float64, other real types become float64 as in SciPy), so the array code
is written once against ``be.fft`` for both backends. Everything else is
:mod:`scipy.fft`'s own: the complex transforms (the blur map's Gabor bank
works on power-of-two blocks, where pocketfft is as fast or faster: 0.6–1.0×
for ducc0 here), ``fftfreq``, ``next_fast_len``, ..., and real transforms
of empty arrays or over no axis.

Determinism: ducc0's own threading rounds differently for each thread
count (the lines a thread gets decide which go through its vector path),
so a result would depend on the machine's core count. Here every
transform is a sequence of 1-D passes, each pass split into chunks that
depend only on the array's shape, and each chunk is transformed by ducc0
on one thread; ``workers`` threads (a pool; ducc0 releases the GIL) share
the chunks. A result is then the same for any ``workers`` (and any
``GPUDEBLUR_CPU_WORKERS``); it costs ~15 % against ducc0's own threading.

``GPUDEBLUR_CPU_FFT=scipy`` makes the CPU backend use :mod:`scipy.fft`
itself (to compare, or where ducc0 cannot be installed); see
:func:`gpudeblur._backend.cpu_fft_module`.
"""

from __future__ import annotations

import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import ducc0
import numpy as np
import scipy.fft as _scipy_fft

__all__ = ["rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn"]

#: ``norm`` → ducc0's ``inorm`` (0: none, 1: 1/√n, 2: 1/n) for the forward and the inverse transform
_NORMS = {None: (0, 2), "backward": (0, 2), "ortho": (1, 1), "forward": (2, 0)}
#: Elements per chunk of a pass (a chunk is whole lines; its size depends only on the shape)
_CHUNK = 1 << 18


def _threads(workers) -> int:
    if workers is None:
        return 1
    n = operator.index(workers)
    if n < 0:
        n += (os.cpu_count() or 1) + 1
        if n <= 0:
            raise ValueError(f"workers value out of range; got {workers}, must not be less than {-(os.cpu_count() or 1)}")
    if n == 0:
        raise ValueError("workers must not be zero")
    return n


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """The process's pool of ``n`` FFT threads (a forked child makes its own: the
    parent's threads do not exist there, and its pool would never run a task)."""
    key = (os.getpid(), n)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gpudeblur-fft")
    return pool


def _inorm(norm, inverse: bool) -> int:
    if norm not in _NORMS:
        raise ValueError(f'Invalid norm value {norm!r}, should be "backward", "ortho" or "forward"')
    return _NORMS[norm][int(inverse)]


def _native(x):
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def _real(x):
    x = _native(np.asarray(x))
    if np.iscomplexobj(x):
        raise TypeError("x must be a real sequence")
    if x.dtype in (np.float32, np.float64, np.longdouble):
        return x
    return x.astype(np.float32 if x.dtype == np.float16 else np.float64)


def _complex(x):
    """``x`` as a complex array, and whether it is a fresh copy."""
    x = _native(np.asarray(x))
    if x.dtype in (np.complex64, np.complex128, np.clongdouble):
        return x, False
    if x.dtype in (np.float32, np.float16):
        return x.astype(np.complex64), True
    if x.dtype == np.longdouble:
        return x.astype(np.clongdouble), True
    return x.astype(np.complex128), True


def _axes_sizes(x, s, axes):
    """Normalized ``axes`` and the sizes ``s`` along them (SciPy's rules for ``s`` and ``axes``)."""
    if s is not None and np.ndim(s) == 0:
        s = (s,)
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
        s = tuple(operator.index(n) for n in s)
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


def _pass(fn, x, out, axis, nthreads):
    """``fn(x_chunk, out_chunk)`` (a 1-D transform along ``axis``, one thread) over
    chunks of whole lines along the largest other axis; the chunks depend only on
    the shape, so the result does not depend on ``nthreads``."""
    others = [a for a in range(x.ndim) if a != axis]
    if not others:
        fn(x, out)
        return
    cax = max(others, key=lambda a: (x.shape[a], a))
    step = max(1, _CHUNK // (x.size // x.shape[cax]))  # empty arrays never get here
    n = x.shape[cax]
    if step >= n:
        fn(x, out)
        return

    def chunk(i):
        sl = (slice(None),) * cax + (slice(i, i + step),)
        fn(x[sl], out[sl])

    starts = list(range(0, n, step))
    futures = []
    if nthreads > 1:
        try:
            pool = _pool(nthreads)
            for i in starts:
                futures.append(pool.submit(chunk, i))
        except RuntimeError:  # the interpreter is shutting down: the rest runs here
            pass
    for i in starts[len(futures):]:
        chunk(i)
    for f in futures:
        f.result()


def _c2c_passes(y, axes, inverse, inorm, nthreads):
    """In-place complex passes over ``axes`` of the working array ``y``."""
    for a in axes:
        _pass(lambda u, v, a=a: ducc0.fft.c2c(u, axes=(a,), forward=not inverse, inorm=inorm, out=v, nthreads=1),
              y, y, a, nthreads)
    return y


_ONE_D = ("rfft", "irfft")


def _scipy(name, x, s, axes, norm, overwrite_x, workers):
    """SciPy's transform, for what ducc0 is not asked to do (empty arrays, no axes)."""
    fn = getattr(_scipy_fft, name)
    if name in _ONE_D:
        return fn(x, None if s is None else s[0], axes[0], norm, overwrite_x, workers)
    return fn(x, s, axes, norm, overwrite_x, workers)


def _empty(x, axes):
    return x.size == 0 or not axes


def _r2c(name, x, s, axes, norm, workers):
    nt = _threads(workers)
    inorm = _inorm(norm, False)
    x0, x = x, _real(x)
    s_given = s
    axes, s = _axes_sizes(x, s, axes)
    if _empty(x, axes):
        return _scipy(name, x0, s_given, axes, norm, False, workers)
    x, _ = _fit(x, axes, s)
    last = axes[-1]
    shape = list(x.shape)
    shape[last] = x.shape[last] // 2 + 1
    y = np.empty(shape, np.result_type(x.dtype, np.complex64))
    _pass(lambda u, v: ducc0.fft.r2c(u, axes=(last,), forward=True, inorm=inorm, out=v, nthreads=1), x, y, last, nt)
    return _c2c_passes(y, axes[-2::-1], False, inorm, nt)


def _c2r(name, x, s, axes, norm, overwrite_x, workers):
    nt = _threads(workers)
    inorm = _inorm(norm, True)
    x0, x, fresh = x, *_complex(x)
    s_given = s
    if s is None:  # SciPy's default: the input's sizes, 2 (m − 1) along the last axis
        axes, _ = _axes_sizes(x, None, axes)
        if _empty(x, axes) or x.shape[axes[-1]] < 2:
            return _scipy(name, x0, None, axes, norm, overwrite_x, workers)
        s = tuple(x.shape[a] for a in axes[:-1]) + (2 * (x.shape[axes[-1]] - 1),)
    axes, s = _axes_sizes(x, s, axes)
    if _empty(x, axes):
        return _scipy(name, x0, s_given, axes, norm, overwrite_x, workers)
    # the last axis holds s[-1] // 2 + 1 complex values (SciPy crops or zero-pads to that)
    x, padded = _fit(x, axes, s[:-1] + (s[-1] // 2 + 1,))
    own = fresh or padded or (overwrite_x and x.flags.writeable and x.flags.c_contiguous)
    last = axes[-1]
    if len(axes) > 1:
        x = _c2c_passes(x if own else np.array(x, order="C"), axes[-2::-1], True, inorm, nt)
        own = True
    shape = list(x.shape)
    shape[last] = s[-1]
    out = np.empty(shape, np.empty(0, x.dtype).real.dtype)
    _pass(lambda u, v: ducc0.fft.c2r(u, axes=(last,), lastsize=s[-1], forward=False, inorm=inorm, out=v, nthreads=1,
                                     allow_overwriting_input=own), x, out, last, nt)
    return out


def _one(n):
    return None if n is None else (n,)


def rfft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfft` by ducc0."""
    return _r2c("rfft", x, _one(n), (axis,), norm, workers)


def irfft(x, n=None, axis=-1, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfft` by ducc0."""
    return _c2r("irfft", x, _one(n), (axis,), norm, overwrite_x, workers)


def rfftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfftn` by ducc0."""
    return _r2c("rfftn", x, s, axes, norm, workers)


def irfftn(x, s=None, axes=None, norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfftn` by ducc0."""
    return _c2r("irfftn", x, s, axes, norm, overwrite_x, workers)


def rfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.rfft2` by ducc0."""
    return _r2c("rfft2", x, s, axes, norm, workers)


def irfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, workers=None):
    """:func:`scipy.fft.irfft2` by ducc0."""
    return _c2r("irfft2", x, s, axes, norm, overwrite_x, workers)


def __getattr__(name):  # fft, ifft, fft2, ifft2, fftn, ifftn, fftfreq, next_fast_len, ...: SciPy's
    if name.startswith("__"):  # not __path__ & co.: this module is not scipy.fft's package
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_scipy_fft, name)
