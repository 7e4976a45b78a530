"""Spatially varying non-blind deconvolution from a blur map (Zhu et al. 2013, eq. 19).

The blur at pixel ``x`` is a PSF of radius ``r(x)`` from a one-parameter
family (disc by default). With a bank of ``K`` PSFs ``h_k`` at sampled radii
``ρ_k`` and hat-function weights ``w_k(x) = max(0, 1 − |r(x) − ρ_k| / Δ)``
(linear interpolation in ``r``; ``Σ_k w_k = 1``) the forward operator is

    H f = Σ_k w_k ⊙ (h_k ∗ f),        Hᵀ g = Σ_k h_k ⋆ (w_k ⊙ g).

Two solvers:

``'sv-admm'``
    ``min_f ½‖H f − g‖² + λ·TV(f)`` (eq. 19) by ADMM: the f-update solves
    ``(HᵀH + ρDᵀD) f = Hᵀg + ρDᵀ(z − u)`` by preconditioned conjugate
    gradients (``H`` is not diagonal in Fourier; the preconditioner is the
    exact Fourier inverse for the weight-averaged PSF), warm-started; the
    z/u updates are the fused TV kernels of :func:`gpudeblur.admm_tv`.
``'fast'``
    Per-radius closed-form deconvolution (Tikhonov with gradient prior, one
    FFT of ``g`` and one inverse FFT per radius in use) blended by
    ``w_k``. Exact where the map is locally constant over a PSF support;
    near blur discontinuities it mixes kernels.

Everything runs on the padded FFT grid of :class:`~gpudeblur.convolution.BlurOperator`
(reflect + edge taper), all channels batched; weights are computed on the
fly from the radius map, so memory is ``O(K)`` OTFs plus a few images.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import psf as _psf
from ._backend import Backend, as_backend_array, get_backend, to_output
from ._validate import check_choice, check_image, check_positive, check_positive_int
from .convolution import BlurOperator, from_channels_first, psf2otf, to_channels_first
from .operators import laplacian_otf_abs2
from .restoration import _LAM_PER_SIGMA, estimate_noise
from .solvers import conjugate_gradient

__all__ = ["SpatiallyVaryingBlur", "deconvolve_spatially_varying", "blur_spatially_varying", "check_radius_map"]

_FAMILIES = {"disc": _psf.disc, "gaussian": _psf.gaussian}


def check_radius_map(radius_map, shape, xp, name="radius map"):
    """A finite, non-negative (M, N) map matching the image's spatial shape."""
    if radius_map.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(radius_map.shape)}")
    if tuple(radius_map.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(radius_map.shape)} does not match the image {tuple(shape)}")
    if not bool(xp.isfinite(radius_map).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if bool((radius_map < 0).any()):
        raise ValueError(f"{name} has negative radii")
    return radius_map


class SpatiallyVaryingBlur:
    """The operator ``H f = Σ_k w_k ⊙ (h_k ∗ f)`` on a padded FFT grid.

    Parameters
    ----------
    radius_map : (M, N) array on ``be``
        Blur radius per pixel (pixels), non-negative.
    be : Backend
    dtype : float32 or float64
    radius_step : float
        Spacing ``Δ`` of the PSF bank (default 0.5 px).
    family : {'disc', 'gaussian'} or callable
        ``family(r) -> psf``.
    boundary : {'reflect', 'periodic'}

    Attributes
    ----------
    radii : ndarray
        Radii ``ρ_k`` of the PSFs in use (only those with non-zero weight).
    grid : BlurOperator
        Geometry (padding, extend/crop) for the largest PSF.
    """

    def __init__(self, radius_map, be: Backend, dtype=np.float32, radius_step=0.5, family="disc", boundary="reflect"):
        check_choice(boundary, ("reflect", "periodic"), "boundary")
        self.be = be
        self.dtype = np.dtype(dtype)
        xp = be.xp
        self.step = check_positive(radius_step, "radius_step")
        self.family = _FAMILIES[family] if isinstance(family, str) and family in _FAMILIES else family
        if not callable(self.family):
            raise ValueError(f"unknown PSF family {family!r}; expected 'disc', 'gaussian' or a callable")
        rmax = float(radius_map.max())
        rmin = float(radius_map.min())
        k_lo = int(math.floor(rmin / self.step))
        k_hi = int(math.ceil(rmax / self.step))
        radii = np.arange(k_lo, k_hi + 1) * self.step
        self.psfs = [self.family(float(r)) for r in radii]
        big = max(self.psfs, key=lambda k: k.shape[0] * k.shape[1])
        M, N = radius_map.shape
        self.grid = BlurOperator(big, (M, N), be, self.dtype, boundary=boundary, taper=True)
        # radius map on the grid (edge-extended), weights computed on the fly
        pad = self.grid.pad
        rg = radius_map.astype(self.dtype, copy=False)
        self.rgrid = xp.pad(rg, pad, mode="edge") if boundary == "reflect" else rg
        # keep only radii whose weight is non-zero somewhere
        keep = []
        for i, r in enumerate(radii):
            if bool((xp.abs(self.rgrid - r) < self.step).any()):
                keep.append(i)
        self.radii = radii[keep]
        self.psfs = [self.psfs[i] for i in keep]
        self.otfs = [psf2otf(k, self.grid.grid_shape, be, self.dtype) for k in self.psfs]

    @property
    def grid_shape(self):
        return self.grid.grid_shape

    def weight(self, k: int):
        """Hat weight ``w_k`` on the grid, shape ``(Mg, Ng)``."""
        xp = self.be.xp
        t = self.dtype.type
        return xp.maximum(t(0), t(1) - xp.abs(self.rgrid - t(self.radii[k])) / t(self.step))

    def mean_otf_abs2(self):
        """``|H̄|²`` of the weight-averaged PSF (for the preconditioner)."""
        acc = None
        total = float(np.prod(self.grid_shape))
        for k, otf in enumerate(self.otfs):
            share = float(self.weight(k).sum()) / total
            acc = share * otf if acc is None else acc + share * otf
        return (acc.real**2 + acc.imag**2).astype(self.dtype)

    def forward(self, f):
        """``H f`` for grid arrays ``(C, Mg, Ng)``."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        F = fft.rfft2(f, **kw)
        out = None
        for k, otf in enumerate(self.otfs):
            term = self.weight(k) * fft.irfft2(F * otf, s=self.grid_shape, **kw)
            out = term if out is None else out + term
        return out.astype(self.dtype, copy=False)

    def adjoint(self, g):
        """``Hᵀ g`` for grid arrays ``(C, Mg, Ng)``."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        acc = None
        for k, otf in enumerate(self.otfs):
            term = fft.rfft2(self.weight(k) * g, **kw) * otf.conj()
            acc = term if acc is None else acc + term
        return fft.irfft2(acc, s=self.grid_shape, **kw).astype(self.dtype, copy=False)


def _prepare(image, radius_map, backend, dtype):
    be = get_backend(backend, like=image)
    x, kind = as_backend_array(image, be, dtype)
    check_image(x, be.xp)
    r, _ = as_backend_array(radius_map, be, x.dtype, name="radius map")
    check_radius_map(r, x.shape[:2], be.xp)
    return be, x, kind, r


def blur_spatially_varying(image, radius_map, *, radius_step=0.5, family="disc", backend=None, dtype=None):
    """Apply ``H`` (synthesis of spatially varying defocus) to an image.

    Used to simulate test data and by the re-blur checks; reflect boundary.
    """
    be, x, kind, r = _prepare(image, radius_map, backend, dtype)
    op = SpatiallyVaryingBlur(r, be, x.dtype, radius_step, family)
    y = op.grid.crop(op.forward(op.grid.extend(to_channels_first(x), taper=False)))
    return to_output(from_channels_first(y, x.ndim), kind)


def deconvolve_spatially_varying(
    image,
    radius_map,
    *,
    method="sv-admm",
    lam=None,
    num_iter=30,
    cg_iter=5,
    rho=None,
    radius_step=0.5,
    family="disc",
    clip=None,
    callback: Callable[[int], None] | None = None,
    backend=None,
    dtype=None,
):
    """Deconvolve an image whose blur radius varies per pixel.

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    radius_map : (M, N) array
        Blur radius per pixel (pixels, ≥ 0), e.g. from
        :func:`gpudeblur.blurmap.estimate_blur_map`.
    method : {'sv-admm', 'fast'}
        See the module docstring.
    lam : float, optional
        TV weight (``sv-admm``) or gradient-prior weight (``fast``).
        Default: ``max(0.1·σ̂, 3e-4)`` for TV, with ``σ̂`` from
        :func:`gpudeblur.estimate_noise` (as :func:`gpudeblur.admm_tv`, plus
        a floor for the kernel-interpolation error);
        0.015 for the fast mode, whose error is dominated by the kernel
        blending rather than by noise (best value 0.01–0.03 on ramp and
        two-layer maps with σ = 0.001 and 0.01).
    num_iter : int
        ADMM iterations (``sv-admm``).
    cg_iter : int
        Conjugate-gradient iterations per f-update (warm-started).
    rho : float, optional
        ADMM penalty, default ``100·lam``.
    radius_step : float
        Spacing of the PSF bank (linear interpolation in between).
    family : {'disc', 'gaussian'} or callable
    clip : bool or (low, high), optional
    callback : callable, optional
        ``callback(i)`` after each ADMM iteration.
    backend, dtype
        As everywhere.

    Returns
    -------
    out : array like ``image``
    """
    check_choice(method, ("sv-admm", "fast"), "method")
    num_iter = check_positive_int(num_iter, "num_iter")
    cg_iter = check_positive_int(cg_iter, "cg_iter")
    be, x, kind, r = _prepare(image, radius_map, backend, dtype)
    xp = be.xp
    t = x.dtype.type
    op = SpatiallyVaryingBlur(r, be, x.dtype, radius_step, family)
    g = op.grid.extend(to_channels_first(x))
    if lam is None:
        sigma = estimate_noise(x, backend=be)
        lam = max(_LAM_PER_SIGMA * sigma, _SV_LAM_FLOOR) if method == "sv-admm" else _FAST_LAM
    lam = check_positive(lam, "lam")
    if method == "fast":
        f = _fast(op, g, lam)
    else:
        rho = check_positive(rho if rho is not None else _SV_RHO_FACTOR * lam, "rho")
        f = _sv_admm(op, g, lam, rho, num_iter, cg_iter, callback)
    out = op.grid.crop(f)
    if clip is not None and clip is not False:
        lo, hi = (0.0, 1.0) if clip is True else clip
        out = xp.clip(out, t(lo), t(hi))
    return to_output(from_channels_first(out.astype(x.dtype, copy=False), x.ndim), kind)


_FAST_LAM = 0.015
# sv-admm: the kernel bank's interpolation error acts like extra noise, so λ
# has a floor; ρ = 100·λ keeps the f-update well conditioned enough for 5
# warm-started CG steps (ρ = 10·λ needed 60×10 iterations for the same PSNR
# on layered maps). Tuned on bench/bench_allinfocus.py scenes, σ = 1e-3.
_SV_LAM_FLOOR = 3e-4
_SV_RHO_FACTOR = 100.0


def _fast(op: SpatiallyVaryingBlur, g, lam):
    be = op.be
    fft, kw = be.fft, be.fft_kwargs()
    G = fft.rfft2(g, **kw)
    d2 = laplacian_otf_abs2(op.grid_shape, be.xp, op.dtype)
    t = op.dtype.type
    out = None
    for k, otf in enumerate(op.otfs):
        filt = otf.conj() / ((otf.real**2 + otf.imag**2) + t(lam) * d2)
        term = op.weight(k) * fft.irfft2(G * filt, s=op.grid_shape, **kw)
        out = term if out is None else out + term
    return out.astype(op.dtype, copy=False)


def _sv_admm(op: SpatiallyVaryingBlur, g, lam, rho, num_iter, cg_iter, callback):
    be = op.be
    xp, fft, kw = be.xp, be.fft, be.fft_kwargs()
    kern = be.kernels
    t = op.dtype.type
    shape = op.grid_shape
    d2 = laplacian_otf_abs2(shape, xp, op.dtype)
    pre_denom = op.mean_otf_abs2() + t(rho) * d2

    def precond(v):
        return fft.irfft2(fft.rfft2(v, **kw) / pre_denom, s=shape, **kw).astype(op.dtype, copy=False)

    def normal(v):
        dv = fft.irfft2(fft.rfft2(v, **kw) * d2, s=shape, **kw)  # DᵀD v (periodic)
        return op.adjoint(op.forward(v)) + t(rho) * dv.astype(op.dtype, copy=False)

    htg = op.adjoint(g)
    ux = xp.zeros_like(g)
    uy = xp.zeros_like(g)
    wx = xp.zeros_like(g)
    wy = xp.zeros_like(g)
    rhs = htg.copy()
    f = precond(htg)  # start: deconvolution with the mean PSF
    for i in range(num_iter):
        if i:
            kern.admm_tv_rhs(htg, wx, wy, rhs, t(rho))
        f, _ = conjugate_gradient(normal, rhs, f, tol=1e-4, maxiter=cg_iter, M=precond)
        kern.admm_tv_dual(f, ux, uy, wx, wy, t(lam / rho), True)
        if callback is not None:
            callback(i)
    return f
