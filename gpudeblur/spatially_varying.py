"""Spatially varying non-blind deconvolution from a blur map (Zhu et al. 2013, eq. 19).

The blur at pixel ``x`` is a PSF of radius ``r(x)`` from a one-parameter
family (disc by default). With a bank of ``K`` PSFs ``h_k`` at sampled radii
``ρ_k`` and hat-function weights ``w_k(x) = max(0, 1 − |r(x) − ρ_k| / Δ)``
(linear interpolation in ``r``; ``Σ_k w_k = 1``) the forward operator is

    H f = Σ_k w_k ⊙ (h_k ∗ f),        Hᵀ g = Σ_k h_k ⋆ (w_k ⊙ g).

An *estimated* map is off by a fraction of a pixel almost everywhere and by
more near blur boundaries; deconvolving with a disc that is too large
rings. ``radius_sigma``/``spatial_sigma`` make the operator treat the map as
uncertain: each pixel's radius is a distribution — the map's value blurred
by a Gaussian of ``radius_sigma`` px in ``r`` and pooled over a Gaussian
neighbourhood of ``spatial_sigma`` px (the local histogram of the map) —
with bank weights ``w_k(x)`` its interpolated masses, and the data term is
the *expected* misfit over it,

    E_r ‖H_r f − g‖² = Σ_k ‖√w_k ⊙ (h_k ∗ f − g)‖²,   normal operator Σ_k h_kᵀ w_k h_k.

Frequencies on which the likely radii disagree (near the zeros of the disc
spectra, where a wrong radius rings) are then left to the TV prior instead
of being inverted. With both at 0 the weights are the hat functions above
and the forward model is the interpolated ``H``; as soon as either is
positive the data term is the mixture over the bank's radii, so even a
vanishing ``radius_sigma`` is not the same model as 0 (a radius between two
bank entries is then "one or the other", not their interpolated PSF).

Two solvers:

``'sv-admm'``
    ``min_f ½‖H f − g‖² + λ·TV(f)`` (eq. 19; the expected misfit above for an
    uncertain map) by ADMM. ``TV`` is isotropic (``Σ_x |∇f(x)|₂``, per
    channel, forward differences on the padded grid): eq. 19 writes
    ``‖∇f‖₁`` without the ½, so this ``λ`` is the paper's ``λ/2`` and the
    prior does not favour edges along the axes. The f-update solves
    ``(HᵀH + ρDᵀD) f = Hᵀg + ρDᵀ(z − u)`` (``HᵀH`` → ``Σ_k h_kᵀ w_k h_k``)
    by preconditioned conjugate gradients (not diagonal in Fourier; the
    preconditioner is the exact Fourier inverse for spatially constant
    weights at their means), warm-started; the z/u updates are the fused TV
    kernels of :func:`gpudeblur.admm_tv`.
``'fast'``
    Per-radius closed-form deconvolution (Tikhonov with gradient prior)
    blended by ``w_k``. Radius ``ρ_k``'s filter deconvolves the data made
    consistent with its blur, ``h_k ∗ g + (g − H g)``: the data where the map
    reads ``ρ_k``, and where it reads another radius the input blurred by
    ``ρ_k`` (plus the residual), so a sharp layer's edges do not ring
    through a strongly blurred one (:func:`_fast`). One FFT of ``g``, one
    ``H g`` and one inverse FFT per radius in use. Exact where the map is
    locally constant over a PSF support; near blur discontinuities it mixes
    kernels.

Everything runs on the padded FFT grid of :class:`~gpudeblur.convolution.BlurOperator`
(reflect + edge taper), all channels batched; hat weights are computed on
the fly from the radius map, so memory is ``O(K)`` OTFs plus a few images;
an uncertain map's ``K`` weight maps are stored as well (~1 GB at 12 MP for
``sv-admm``; with a wide ``spatial_sigma`` they are computed on blocks of
pixels, :func:`pool_block`, and ``fast`` keeps only the blocks).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import psf as _psf
from ._backend import Backend, as_backend_array, get_backend, to_output
from ._validate import check_choice, check_image, check_positive, check_positive_int, join_alpha, split_alpha
from ._resample import block_mean, upsample_linear
from .convolution import BlurOperator, from_channels_first, psf2otf, to_channels_first
from .operators import laplacian_otf_abs2
from .restoration import _LAM_PER_SIGMA, TV_CHANNELS, _check_clip, estimate_noise, tv_dual_step
from .solvers import conjugate_gradient

__all__ = ["SpatiallyVaryingBlur", "deconvolve_spatially_varying", "deconvolve_spread_sequence", "deconvolve_fast_scaled",
           "blur_spatially_varying",
           "check_radius_map", "check_saturated", "check_uncertainty", "bank_step", "pool_block", "MAX_RADIUS_SIGMA"]

_FAMILIES = {"disc": _psf.disc, "gaussian": _psf.gaussian}


def check_radius_map(radius_map, shape, xp, name="radius map", max_radius=None, family=None, psf_fits=False):
    """A finite, non-negative (M, N) map matching the image's spatial shape (and
    nowhere above ``max_radius`` when given, nor above the largest radius of a
    :class:`~gpudeblur.blurmap.PSFCalibration` ``family``, whose PSFs are clamped
    to the calibrated range; with ``psf_fits``, nowhere so large that the disc or
    Gaussian ``family``'s PSF outgrows the image, which the deconvolution's grid
    refuses)."""
    if radius_map.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(radius_map.shape)}")
    if tuple(radius_map.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(radius_map.shape)} does not match the image {tuple(shape)}")
    if not bool(xp.isfinite(radius_map).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if bool((radius_map < 0).any()):
        raise ValueError(f"{name} has negative radii")
    if max_radius is not None and radius_map.size and float(radius_map.max()) > max_radius:
        raise ValueError(f"{name} reaches {float(radius_map.max()):g} px, more than {max_radius:g} px (a PSF that "
                         "wide is larger than the image)")
    kind = next((k for k, f in _FAMILIES.items() if family is f or (isinstance(family, str) and family == k)), None)
    if psf_fits and kind is not None and radius_map.size:
        # named here: the bank's PSF would be refused later as "PSF (…) is larger than the image"
        top = float(radius_map.max())
        side, (M, N) = _psf.model_side(kind, top), shape[:2]
        if side > M or side > N:
            raise ValueError(f"{name} reaches {top:g} px: a {kind} PSF of that radius ({side}x{side}) is larger "
                             f"than the image ({M}x{N})")
    if type(family).__name__ == "PSFCalibration" and radius_map.size:
        r_end = float(np.asarray(family.radii, dtype=np.float64)[-1])
        top = float(radius_map.max())
        if top > r_end * (1 + 1e-6) + 1e-6:  # (a float32 map rounds its last radius by up to 6e-8 of it)
            raise ValueError(f"{name} reaches {top:.7g} px, beyond the PSF calibration's largest radius {r_end:.7g} "
                             "px (those pixels would get its PSF); clip the map or calibrate larger radii")
    return radius_map


def check_saturated(saturated, image, be):
    """A clipped-value mask as a boolean array on ``be``: shape ``(M, N)`` or the
    image's (one-line ``ValueError`` otherwise)."""
    s = be.asarray(saturated)
    if s.dtype != bool:
        raise ValueError(f"saturated must be a boolean mask, got dtype {s.dtype}")
    shapes_ok = [tuple(image.shape[:2]), tuple(image.shape)]
    if image.ndim == 3 and image.shape[2] == 4:  # RGBA: a mask of the colour channels only
        shapes_ok.append(tuple(image.shape[:2]) + (3,))
    if tuple(s.shape) not in shapes_ok:
        shapes = " or ".join(map(str, shapes_ok))
        raise ValueError(f"saturated mask shape {tuple(s.shape)} must be {shapes}")
    return s


class SpatiallyVaryingBlur:
    """The operator ``H f = Σ_k w_k ⊙ (h_k ∗ f)`` on a padded FFT grid.

    Parameters
    ----------
    radius_map : (M, N) array on ``be``
        Blur radius per pixel (pixels), non-negative.
    be : Backend
    dtype : float32 or float64
    radius_step : float
        Spacing ``Δ`` of the PSF bank (default 0.5 px); for an uncertain map
        with a wide ``radius_sigma`` the bank is coarser (:func:`bank_step`).
    family : {'disc', 'gaussian'} or callable
        ``family(r) -> psf``.
    boundary : {'reflect', 'periodic'}
    radius_sigma, spatial_sigma : float
        Uncertainty of the map (module docstring).
    grid_weights : bool
        Keep an uncertain map's weights on the padded grid (default; the
        solvers use them at every step). ``False`` keeps them on the image
        only, for one blend (the fast mode: no padded copy of the stack;
        :meth:`weight_image`); :meth:`weight` then pads an entry per call.

    Attributes
    ----------
    radii : ndarray
        Radii ``ρ_k`` of the PSFs in use (only those with non-zero weight).
    grid : BlurOperator
        Geometry (padding, extend/crop) for the largest PSF.
    """

    def __init__(self, radius_map, be: Backend, dtype=np.float32, radius_step=0.5, family="disc", boundary="reflect",
                 radius_sigma=0.0, spatial_sigma=0.0, *, grid_weights=True):
        check_choice(boundary, ("reflect", "periodic"), "boundary")
        self.be = be
        self.dtype = np.dtype(dtype)
        xp = be.xp
        self.radius_sigma, self.spatial_sigma = check_uncertainty(radius_sigma, spatial_sigma)
        self.step = bank_step(radius_step, self.radius_sigma)
        #: True when the map is treated as uncertain (expected-misfit data term)
        self.uncertain = self.radius_sigma > 0 or self.spatial_sigma > 0
        self.family = _family(family)
        rg = radius_map.astype(self.dtype, copy=False)
        self.radii, w = _bank(rg, self.step, self.radius_sigma, self.spatial_sigma, be, self.dtype)
        self.psfs = [self.family(float(r)) for r in self.radii]
        big = max(self.psfs, key=lambda k: k.shape[0] * k.shape[1])
        M, N = radius_map.shape
        if big.shape[0] > M or big.shape[1] > N:  # named here, not as a bare PSF deep inside
            raise ValueError(f"radius map reaches {float(rg.max()):g} px: its PSF bank's widest PSF ({big.shape[0]}x"
                             f"{big.shape[1]}, radius {float(self.radii.max()):g}) is larger than the image ({M}x{N})")
        # (its PSF only sizes the padding: the mirror padding whatever the family)
        self.grid = BlurOperator(big, (M, N), be, self.dtype, boundary=boundary, taper=True, blurred_padding=False)
        # radius map on the grid (edge-extended); hat weights are computed on the fly
        self.rmap = rg
        self.rgrid = _on_grid(rg, self.grid, boundary, xp)
        # an uncertain map's stored weights: on the grid for the solvers, or on the image
        # only (grid_weights=False: the fast mode's one blend needs no padded copy of the stack)
        if w is not None and grid_weights and isinstance(w, _BlockWeights):
            w = w.stack()
        self._w = None if w is None or not grid_weights else _on_grid(w, self.grid, boundary, xp)
        self._w_image = w if self._w is None else None
        del w
        #: Values left out of the data term: flat indices into ``(C, Mg, Ng)``
        #: grid arrays (weight ``m = 0`` there, 1 elsewhere), or None; see :meth:`normal`
        self.excluded = None
        self._channels = 1
        self._otfs = None

    @property
    def otfs(self):
        """The bank's OTFs on the grid (built on first use and kept: the solvers reuse them)."""
        if self._otfs is None:
            self._otfs = [self.otf(k) for k in range(len(self.psfs))]
        return self._otfs

    def otf(self, k: int, real_if_even=False):
        """OTF of bank entry ``k`` on the grid (computed, not kept; see :func:`psf2otf`
        for ``real_if_even``)."""
        return psf2otf(self.psfs[k], self.grid.grid_shape, self.be, self.dtype, real_if_even)

    @property
    def grid_shape(self):
        return self.grid.grid_shape

    def weight(self, k: int):
        """Weight ``w_k`` on the grid, shape ``(Mg, Ng)`` (hat function, or the stored
        weights of an uncertain map)."""
        if self._w is not None:
            return self._w[k]
        if self._w_image is not None:
            return _on_grid(self._w_image[k], self.grid, self.grid.boundary, self.be.xp)
        return _hat(self.rgrid, self.radii[k], self.step, self.be.xp, self.dtype.type)

    def weight_image(self, k: int):
        """Weight ``w_k`` on the image only, shape ``(M, N)``: :meth:`weight` cropped."""
        if self._w_image is not None:
            return self._w_image[k]
        if self._w is not None:
            return self.grid.crop(self._w[k][None])[0]
        return _hat(self.rmap, self.radii[k], self.step, self.be.xp, self.dtype.type)

    def mean_otf_abs2(self):
        """``m̄·|H̄|²``, ``H̄`` the OTF of the weight-averaged PSF and ``m̄`` the mean
        data weight (1 without one): the preconditioner's data symbol."""
        acc = None
        shares = self._shares()
        for share, otf in zip(shares, self.otfs):
            acc = share * otf if acc is None else acc + share * otf
        a2 = acc.real**2 + acc.imag**2
        if self.excluded is not None:  # Σ_k shares = m̄ (the w_k sum to 1 per pixel)
            a2 = a2 / max(sum(shares), 1e-12)
        return a2.astype(self.dtype)

    def normal_otf_abs2(self):
        """Fourier symbol of :meth:`normal` when the weights are spatially constant
        (their means): the exact inverse there, the preconditioner otherwise."""
        if not self.uncertain:
            return self.mean_otf_abs2()
        acc = None
        for share, otf in zip(self._shares(), self.otfs):
            term = share * (otf.real**2 + otf.imag**2)
            acc = term if acc is None else acc + term
        return acc.astype(self.dtype)

    def _shares(self):
        """Mean of ``m ⊙ w_k`` over the grid (and channels), per bank entry."""
        total = float(np.prod(self.grid_shape))
        if self.excluded is None:
            return [float(self.weight(k).sum()) / total for k in range(len(self.otfs))]
        C = self._channels
        pix = self.excluded % int(total)
        shares = []
        for k in range(len(self.otfs)):
            wk = self.weight(k)  # computed on the fly for an exact map: once per entry
            shares.append((C * float(wk.sum()) - float(wk.reshape(-1)[pix].sum())) / (C * total))
        return shares

    def exclude(self, mask):
        """Leave the values where the ``(C, Mg, Ng)`` bool grid ``mask`` is True out of
        the data term (None or an all-False mask: keep all)."""
        xp = self.be.xp
        self._channels = 1 if mask is None else int(mask.shape[0])
        idx = None if mask is None else xp.flatnonzero(mask)
        self.excluded = None if idx is None or idx.size == 0 else idx

    def _masked(self, y):
        """``m ⊙ y`` for a fresh grid array ``y`` (in place: ``y`` must be C-contiguous,
        or the write through ``reshape`` would go to a copy)."""
        if self.excluded is not None:
            y.reshape(-1)[self.excluded] = 0
        return y

    def forward(self, f):
        """``H f`` for grid arrays ``(C, Mg, Ng)``."""
        return self._forward_spectrum(self.be.fft.rfft2(f, **self.be.fft_kwargs()))

    def _forward_spectrum(self, F):
        """``H f`` from ``F = rfft2(f)`` (not modified)."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        out = None
        for k, otf in enumerate(self.otfs):
            term = fft.irfft2(F * otf, s=self.grid_shape, overwrite_x=True, **kw)
            term *= self.weight(k)  # in place (fresh arrays): the same values, fewer temporaries
            out = _sum_into(out, term)
        return out.astype(self.dtype, copy=False)

    def adjoint(self, g):
        """``Hᵀ g`` for grid arrays ``(C, Mg, Ng)``."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        return fft.irfft2(self._adjoint_spectrum(g), s=self.grid_shape, overwrite_x=True,
                          **kw).astype(self.dtype, copy=False)

    def _adjoint_spectrum(self, g):
        """``rfft2(Hᵀ g)`` (a fresh array)."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        acc = None
        for k, otf in enumerate(self.otfs):
            term = fft.rfft2(self.weight(k) * g, **kw)
            term *= otf.conj()
            acc = _sum_into(acc, term)
        return acc

    def normal(self, f, reg=None):
        """Normal operator of the data term for grid arrays ``(C, Mg, Ng)``: ``HᵀH f``,
        or for an uncertain map ``Σ_k h_kᵀ (w_k ⊙ (h_k ∗ f))`` (expected misfit).
        With values :meth:`exclude`-d (weight ``m`` 0 there, 1 elsewhere;
        misfit ``‖√m ⊙ (H f − g)‖²``): ``Hᵀ(m ⊙ H f)`` and
        ``Σ_k h_kᵀ (m ⊙ w_k ⊙ (h_k ∗ f))``. The right-hand side is
        :meth:`data_rhs`; :meth:`forward` and :meth:`adjoint` stay ``H``
        and ``Hᵀ``.

        ``reg``: a real symbol on the ``rfft2`` grid (e.g. ``ρ|D|²`` of a
        periodic TV splitting) whose operator is added, ``+ irfft2(reg ⊙
        rfft2(f))``, sharing this operator's forward and inverse transform
        (two real FFTs fewer than adding it separately)."""
        fft, kw = self.be.fft, self.be.fft_kwargs()
        F = fft.rfft2(f, **kw)
        if not self.uncertain:
            y = self._masked(self._forward_spectrum(F))
            if reg is None:
                F = None  # not needed again: freed before the adjoint's transforms
            acc = self._adjoint_spectrum(y)
            del y
        else:
            acc = None
            for k, otf in enumerate(self.otfs):
                y = fft.irfft2(F * otf, s=self.grid_shape, overwrite_x=True, **kw)
                y *= self.weight(k)
                term = fft.rfft2(self._masked(y), **kw)
                term *= otf.conj()
                acc = _sum_into(acc, term)
        if reg is not None:
            F *= reg
            acc += F
        return fft.irfft2(acc, s=self.grid_shape, overwrite_x=True, **kw).astype(self.dtype, copy=False)

    def data_rhs(self, g):
        """Right-hand side of :meth:`normal`'s equations for the data ``g`` (grid arrays):
        ``Hᵀ(m ⊙ g)`` (``Σ_k h_kᵀ (m ⊙ w_k ⊙ g)`` for an uncertain map)."""
        return self.adjoint(g if self.excluded is None else self._masked(g.copy()))


def _sum_into(acc, term):
    """``acc + term`` in place (``term`` when ``acc`` is None); ``term`` is a fresh array."""
    if acc is None:
        return term
    acc += term
    return acc


#: Bank radii reach this many ``radius_sigma`` beyond the map's range.
_SIGMA_TAIL = 4.0
#: Bank entries whose weight stays below this everywhere are dropped (and
#: the rest renormalized): the far tails of the Gaussian cost FFTs, not accuracy.
_W_MIN = 1e-3
#: Largest ``radius_sigma`` accepted (px): beyond it the bank spans more than
#: ±16 px around every radius, which no defocus estimate needs.
MAX_RADIUS_SIGMA = 4.0
_GAUSS_TRUNCATE = 3.5


def _bank(rmap, step, radius_sigma, spatial_sigma, be, dtype):
    """Bank radii in use for the map ``rmap`` and, for an uncertain map, their
    weights: a ``(K, M, N)`` array, or :class:`_BlockWeights` (computed on
    blocks, :func:`pool_block`) for a wide ``spatial_sigma``; None for an
    exact map (the hat weights of ``rmap``, computed on the fly).

    The bank spans the map's range plus :data:`_SIGMA_TAIL` ``radius_sigma``
    on either side; entries whose weight is nowhere above :data:`_W_MIN`
    (uncertain) or zero everywhere (exact) are left out.
    """
    xp = be.xp
    rmax = float(rmap.max()) + _SIGMA_TAIL * radius_sigma
    rmin = max(0.0, float(rmap.min()) - _SIGMA_TAIL * radius_sigma)
    radii = np.arange(int(math.floor(rmin / step)), int(math.ceil(rmax / step)) + 1) * step
    w = None
    if radius_sigma > 0 or spatial_sigma > 0:
        # stored (K, M, N): the pooled weights are not a function of r(x) alone
        ss = min(spatial_sigma, _pool_cap(rmap.shape))  # as _uncertain_weights pools it
        # (hat weights, radius_sigma 0, have kinks at the bank radii: kept exact)
        f = pool_block(ss) if radius_sigma > 0 else 1
        if f > 1:
            w = _block_weights(rmap, radii, step, radius_sigma, ss, f, be, dtype)
        else:
            w = _uncertain_weights(rmap, radii, step, radius_sigma, spatial_sigma, be, dtype)
        peak = be.to_host(w.max(axis=(1, 2)))  # one transfer, not one per radius
        keep = [i for i in range(len(radii)) if float(peak[i]) > _W_MIN]
        if len(keep) < len(radii):
            # the tails go: a view when what is kept is one run (no copy of the stack)
            contiguous = keep == list(range(keep[0], keep[-1] + 1))
            w = w[keep[0]:keep[-1] + 1] if contiguous else w[keep]
            w /= w.sum(axis=0)  # the dropped tails (< _W_MIN each) spread back
        if f > 1:
            w = _BlockWeights(w, f, rmap.shape, xp)
    else:
        # keep only radii whose weight is non-zero somewhere
        used = be.to_host(xp.stack([(xp.abs(rmap - r) < step).any() for r in radii]))  # one transfer
        keep = [i for i in range(len(radii)) if bool(used[i])]
    return radii[keep], w


#: An uncertain map pooled over a wide neighbourhood has its weights computed
#: on blocks of ``⌊spatial_sigma / POOL_BLOCKS_PER_SIGMA⌋`` px (:func:`pool_block`).
POOL_BLOCKS_PER_SIGMA = 3.0


def pool_block(spatial_sigma):
    """Block size ``f`` (px) on which an uncertain map's bank weights are computed:
    ``⌊spatial_sigma /`` :data:`POOL_BLOCKS_PER_SIGMA` ``⌋``, at least 1.

    The pooled weights are smooth on the scale of ``spatial_sigma``, while
    each costs a table lookup and a Gaussian pooling of the whole map per
    bank entry. For ``f > 1`` the map's ``f × f`` block means get the
    ``radius_sigma`` weights, pooled by a Gaussian of
    ``sqrt(spatial_sigma² − f²/4) / f`` blocks (the block means and the
    linear interpolation back to the pixels add ``f²/12`` and ``f²/6`` px²
    of variance), and each entry is interpolated back when it is used
    (:class:`_BlockWeights`): ``f²`` times less work for the weights, and
    ``f²`` times less memory in the fast mode (``sv-admm`` stacks them at
    the pixels). Each block's radii enter as a two-point distribution with
    their mean, variance and third moment (exact for a block across a depth
    step). A map read at 4x its resolution (spread (2, 12) px) gets 4 px
    blocks; the defaults for a full-resolution estimate (0.5, 3) get 1 (the
    exact weights), and so does ``radius_sigma = 0`` (hat weights, kinked
    at the bank radii). Against the exact weights, on a 4 MP estimated map
    with spread (2, 12): largest difference 0.005, mean 1.5e-5.
    """
    return max(1, int(math.floor(check_positive(spatial_sigma, "spatial_sigma", allow_zero=True)
                                 / POOL_BLOCKS_PER_SIGMA + 1e-9)))


class _BlockWeights:
    """Bank weights ``(K, m, n)`` computed on ``f × f`` blocks of an ``(M, N)`` map
    (:func:`pool_block`): ``w[k]`` is entry ``k`` linearly interpolated to the
    pixels (:func:`~gpudeblur._resample.upsample_linear`: still a partition
    of unity, non-negative), made on each use."""

    def __init__(self, blocks, f, shape, xp):
        self.blocks, self.f, self.shape, self.xp = blocks, f, tuple(shape), xp

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, k):
        return self.get(k)

    def get(self, k, out=None):
        """Entry ``k`` at the pixels, written into ``out`` (an ``(M, N)`` buffer) if given."""
        return upsample_linear(self.blocks[k], self.f, self.shape, self.xp, out=out)

    def stack(self):
        """All entries at the pixels, ``(K, M, N)``."""
        out = self.xp.empty((len(self),) + self.shape, dtype=self.blocks.dtype)
        for k in range(len(self)):
            self.get(k, out[k])
        return out


#: An uncertain map's bank is no finer than needed: its spacing is raised to
#: the largest multiple of ``radius_step`` within this fraction of
#: ``radius_sigma`` (:func:`bank_step`). The weights are hat functions
#: smoothed by a Gaussian of ``radius_sigma`` in ``r``, so they vary on that
#: scale, while every entry costs a weight map, an FFT filtering per solve
#: step and a pooling.
BANK_STEP_PER_SIGMA = 0.5


def bank_step(radius_step, radius_sigma):
    """Spacing of the PSF bank for ``radius_step`` (the finest) and ``radius_sigma``:
    ``radius_step`` times the largest integer ``m ≥ 1`` with
    ``m · radius_step ≤`` :data:`BANK_STEP_PER_SIGMA` ``· radius_sigma``
    (so the bank stays on the same grid). Below ``radius_sigma = 4 ·
    radius_step`` (2 px at the default 0.5 px step) the step is
    ``radius_step``; a map read at 4x its resolution (``radius_sigma`` 2 px,
    :func:`gpudeblur.allinfocus.scaled_map_uncertainty`) gets a 1 px step,
    half the entries. The bank's top radius is rounded up to the coarser
    step, so on an image only a few PSF widths tall a wide
    ``radius_sigma`` can reach "PSF larger than the image" sooner."""
    radius_step = check_positive(radius_step, "radius_step")
    m = max(1, int(math.floor(BANK_STEP_PER_SIGMA * radius_sigma / radius_step + 1e-9)))
    return radius_step * m


def _on_grid(a, grid, boundary, xp):
    """A map (or a ``(K, M, N)`` stack of maps) on ``grid``'s padded FFT grid:
    edge-extended for the reflect boundary, returned unchanged for the periodic one."""
    if boundary != "reflect":
        return a
    return xp.pad(a, ((0, 0),) * (a.ndim - 2) + tuple(grid.pad), mode="edge")


def check_uncertainty(radius_sigma, spatial_sigma):
    """Validated ``(radius_sigma, spatial_sigma)``: finite, non-negative, ``radius_sigma ≤``
    :data:`MAX_RADIUS_SIGMA` (one-line ``ValueError`` otherwise)."""
    rs = check_positive(radius_sigma, "radius_sigma", allow_zero=True)
    if rs > MAX_RADIUS_SIGMA:
        raise ValueError(f"radius_sigma must be at most {MAX_RADIUS_SIGMA:g} px, got {radius_sigma!r}")
    return rs, check_positive(spatial_sigma, "spatial_sigma", allow_zero=True)


def _hat(r, rho, step, xp, t):
    """Hat weight of the bank entry at radius ``rho`` for radii ``r`` (linear interpolation)."""
    return xp.maximum(t(0), t(1) - xp.abs(r - t(rho)) / t(step))


def _gauss_hat_tables(step, sigma, n=8193):
    """``ψ(μ) = E[hat(μ + σZ)]`` and ``ψ₊(μ) = E[ramp₁(μ + σZ)]``, ``Z ~ N(0, 1)``: the
    bank's hat function and its upper-open version (0 below 0, 1 above Δ, linear
    between) smoothed by a Gaussian of ``sigma`` px, tabulated for ``xp.interp``.

    With ``R(μ) = E[max(0, μ + σZ)] = μΦ(μ/σ) + σφ(μ/σ)``,
    ``ψ = (R(μ + Δ) − 2R(μ) + R(μ − Δ))/Δ`` and ``ψ₊ = (R(μ) − R(μ − Δ))/Δ``
    exactly; both are smooth, so linear interpolation on ``n`` nodes is
    accurate to ~1e-7.
    """
    from scipy.special import ndtr

    half = step + (_SIGMA_TAIL + 3.0) * sigma
    mu = np.linspace(-half, half + step, n)

    def R(m):
        return m * ndtr(m / sigma) + sigma * np.exp(-0.5 * (m / sigma) ** 2) / np.sqrt(2 * np.pi)

    psi = (R(mu + step) - 2 * R(mu) + R(mu - step)) / step
    psi_up = (R(mu) - R(mu - step)) / step
    return mu, np.clip(psi, 0, 1), np.clip(psi_up, 0, 1)  # clip: cancellation leaves ±1e-15


def _uncertain_weights(rmap, radii, step, radius_sigma, spatial_sigma, be, dtype):
    """Bank weights ``(K, M, N)`` of an uncertain map (see the module docstring).

    Mass of the radius distribution below the first bank radius (negative
    radii, as the map is clipped at 0) goes to that radius and mass above the
    last to the last, so the weights sum to one at every pixel.
    """
    w = _point_weights(rmap, radii, step, radius_sigma, be, dtype)
    if spatial_sigma > 0:
        _pool(w, spatial_sigma, be, dtype)
    return w


def _pool_cap(shape):
    """Largest pooling σ (px) on a grid of ``shape``: its Gaussian, cut at
    ``_GAUSS_TRUNCATE`` σ, fits the grid's reflection (0 on a grid of 1 or 2 px: no pooling)."""
    return max(0.0, (math.floor((min(shape) - 1) / 2) - 1e-6) / _GAUSS_TRUNCATE)


def _pool(w, spatial_sigma, be, dtype):
    """Pool a ``(K, M, N)`` weight stack in place over a Gaussian neighbourhood (the
    local histogram; reflect), one entry at a time (an FFT of the whole stack would
    need ~4x its memory); σ at most :func:`_pool_cap`, none below 0.3 px."""
    xp = be.xp
    sig = min(spatial_sigma, _pool_cap(w.shape[1:]))
    if sig > 0.3:
        op = BlurOperator(_psf.gaussian(sig, _GAUSS_TRUNCATE), w.shape[1:], be, dtype, boundary="reflect", taper=False)
        for k in range(len(w)):
            w[k] = op.crop(op.forward(op.extend(w[k][None])))[0]
        xp.maximum(w, np.dtype(dtype).type(0), out=w)


def _block_weights(rmap, radii, step, radius_sigma, spatial_sigma, f, be, dtype):
    """:func:`_uncertain_weights` on ``f × f`` blocks (:func:`pool_block`): the
    ``(K, ⌈M/f⌉, ⌈N/f⌉)`` stack of the blocks.

    Each block's radii are replaced by a two-point distribution with their
    mean, variance and third moment (Gauss quadrature of the block's
    histogram: exact for a block of two radii, such as one across a depth
    step, and for any weight that is a cubic in ``r``); its weights are
    pooled by a Gaussian of ``sqrt(spatial_sigma² − f²/4) / f`` blocks.
    """
    xp = be.xp
    t = np.dtype(dtype).type
    r = rmap.astype(np.float64)
    m1, m2, m3 = (block_mean(v, f, xp) for v in (r, r * r, r * r * r))
    del r
    var = xp.maximum(m2 - m1 * m1, 0.0)
    sd = xp.sqrt(var)
    c3 = m3 - 3 * m1 * m2 + 2 * m1**3  # third central moment
    flat = sd <= 1e-6 * xp.maximum(xp.abs(m1), 1.0)  # one radius: both nodes at the mean
    skew = xp.where(flat, 0.0, c3 / xp.where(flat, 1.0, var * sd))
    root = xp.sqrt(skew * skew + 4)
    lo, hi = (skew - root) / 2, (skew + root) / 2  # standardized nodes; probabilities hi/root, −lo/root
    # blocks whose nodes nearly coincide (a smooth map) take one node at the mean:
    # the weights are smooth on the scale of radius_sigma (hat functions: of the step)
    two = (sd * (hi - lo) > 0.1 * radius_sigma + 0.01 * step).ravel()
    idx = xp.flatnonzero(two)
    nb = two.size
    r_lo = xp.where(two, (m1 + sd * lo).ravel(), m1.ravel())
    p_lo = xp.where(two, (hi / root).ravel(), 1.0).astype(dtype)
    nodes = xp.maximum(xp.concatenate([r_lo, (m1 + sd * hi).ravel()[idx]]), 0.0).astype(dtype)
    v = _point_weights(nodes, radii, step, radius_sigma, be, dtype)  # one lookup per entry for both nodes
    w = v[:, :nb] * p_lo
    w[:, idx] += v[:, nb:] * (-lo / root).ravel()[idx].astype(dtype)
    del v
    w = w.reshape((len(radii),) + tuple(m1.shape))
    w /= w.sum(axis=0)
    _pool(w, math.sqrt(max(spatial_sigma**2 - f * f / 4, 0.0)) / f, be, dtype)
    xp.maximum(w, t(0), out=w)
    return w


def _point_weights(rmap, radii, step, radius_sigma, be, dtype):
    """Unpooled bank weights ``(K, M, N)`` of the radii ``rmap`` spread by ``radius_sigma``."""
    xp = be.xp
    t = np.dtype(dtype).type
    K = len(radii)
    w = xp.empty((K,) + tuple(rmap.shape), dtype=dtype)
    if radius_sigma > 0:
        mu, psi, psi_up = _gauss_hat_tables(step, radius_sigma)
        psi, psi_up = xp.asarray(psi), xp.asarray(psi_up)
        # float64 once (interp computes in float64 anyway); the table moves to each bank
        # radius instead of the map to the table (no map-sized subtraction per entry)
        flat = rmap.ravel().astype(np.float64)  # cupy.interp is documented for 1-D x

        def table(tab, r0, right):
            return xp.interp(flat, xp.asarray(mu + r0), tab, left=0.0, right=right).reshape(rmap.shape)

        for k in range(1, K - 1):
            w[k] = table(psi, radii[k], 0.0)
        if K > 1:
            w[K - 1] = table(psi_up, radii[K - 2], 1.0)
    else:
        for k in range(1, K):
            w[k] = _hat(rmap, radii[k], step, xp, t)
    w[0] = t(1) - w[1:].sum(axis=0) if K > 1 else t(1)
    xp.maximum(w[0], t(0), out=w[0])
    w /= w.sum(axis=0)  # exact partition of unity despite the table's rounding
    return w


def _prepare(image, radius_map, backend, dtype, unit_range=True, family=None):
    be = get_backend(backend, like=image)
    x, kind = as_backend_array(image, be, dtype)
    check_image(x, be.xp, unit_range=unit_range)
    r, _ = as_backend_array(radius_map, be, x.dtype, name="radius map")
    check_radius_map(r, x.shape[:2], be.xp, family=family)
    return be, x, kind, r


def blur_spatially_varying(image, radius_map, *, radius_step=0.5, family="disc", backend=None, dtype=None):
    """Apply ``H`` (synthesis of spatially varying defocus) to an image.

    Used to simulate test data and by the re-blur checks; reflect boundary.
    """
    be, x, kind, r = _prepare(image, radius_map, backend, dtype, unit_range=False, family=family)  # (may exceed 1)
    x, alpha = split_alpha(x)  # RGBA: alpha untouched
    op = SpatiallyVaryingBlur(r, be, x.dtype, radius_step, family)
    y = op.grid.crop(op.forward(op.grid.extend(to_channels_first(x), taper=False)))
    return to_output(join_alpha(from_channels_first(y, x.ndim), alpha, be.xp), kind)


def deconvolve_spatially_varying(
    image,
    radius_map,
    *,
    method="sv-admm",
    lam=None,
    num_iter=None,
    cg_iter=None,
    rho=None,
    radius_step=0.5,
    family="disc",
    radius_sigma=0.0,
    spatial_sigma=0.0,
    saturated=None,
    tv_channels=None,
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
        ``max(1.5·σ̂, 0.015)`` for the fast mode, whose error at low noise
        is dominated by the kernel blending (best value 0.01–0.03 on ramp and
        two-layer maps with σ = 0.001 and 0.01) and at high noise by the
        noise (:data:`FAST_LAM_PER_SIGMA`).
    num_iter : int, optional
        ADMM iterations (``sv-admm``; default 30).
    cg_iter : int, optional
        Conjugate-gradient iterations per f-update (warm-started; ``sv-admm``,
        default 5).
    rho : float, optional
        ADMM penalty (``sv-admm``), default ``100·lam``. ``num_iter``,
        ``cg_iter``, ``rho`` and ``callback`` given with ``method='fast'`` (a
        closed-form deconvolution: none of them applies) are an error.
    radius_step : float
        Spacing of the PSF bank (linear interpolation in between); the
        finest one: with a wide ``radius_sigma`` the bank is coarser
        (:func:`bank_step`).
    family : {'disc', 'gaussian'} or callable
    radius_sigma, spatial_sigma : float
        Uncertainty of an estimated map (see the module docstring): spread
        in ``r`` (px) and neighbourhood (px) of each pixel's radius
        distribution; the data term becomes the expected misfit over it
        (``sv-admm``) and the per-radius results are blended by it
        (``fast``). 0 and 0 (default): the map is exact.
    saturated : bool array, (M, N) or like ``image``, optional
        Clipped pixels (per pixel, or per pixel and channel), ``sv-admm``
        only; e.g. :func:`gpudeblur.allinfocus.saturation_mask`. A clipped
        value only says that the blurred value reached it, so its misfit is
        one-sided: it counts while ``H f`` is below it and not above (an
        active set, updated after each of the first ADMM iterations from ``H f``; the
        expected ``H f`` for an uncertain map). Without this a clipped
        plateau cannot be fitted and rings around its edge.
    tv_channels : {'separate', 'joint'} or None
        ``sv-admm`` on a colour image: the TV of each channel on its own
        (None, the default: ``'separate'``), or of all channels together (vectorial or colour TV:
        each pixel's gradients of every channel shrunk by their joint norm,
        so the channels share their edges; Blomgren & Chan 1998; the
        default of :func:`gpudeblur.admm_tv`). One channel: the same.
        Measured on the all-in-focus quality bench (session 36,
        ``AllInFocus(tv_channels=)``): the true map 30.61 → 30.89 dB, the
        estimated map 27.72 → 27.76, sharp photos −0.1 … −0.6 dB, clipped
        highlights with the true map −0.6 dB; so not the default here.
        ``'joint'`` with ``method='fast'`` (no TV) is an error.
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
    if method == "fast":
        given = [n for n, v in (("num_iter", num_iter), ("cg_iter", cg_iter), ("rho", rho), ("callback", callback))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to method 'sv-admm' only "
                             "(fast is a closed-form per-radius deconvolution, without iterations)")
    num_iter = check_positive_int(30 if num_iter is None else num_iter, "num_iter")
    cg_iter = 5 if cg_iter is None else cg_iter
    return _deconvolve(image, radius_map, method, ((radius_sigma, num_iter),), spatial_sigma, lam, cg_iter, rho,
                       radius_step, family, saturated, tv_channels, clip, callback, backend, dtype)[0]


def deconvolve_spread_sequence(
    image,
    radius_map,
    radius_sigmas,
    *,
    num_iter=(15, 15),
    spatial_sigma=0.0,
    lam=None,
    cg_iter=5,
    rho=None,
    radius_step=0.5,
    family="disc",
    saturated=None,
    tv_channels=None,
    clip=None,
    callback: Callable[[int], None] | None = None,
    backend=None,
    dtype=None,
):
    """``sv-admm`` with each radius spread of ``radius_sigmas`` in turn, each solve
    warm-started from the one before; returns every solve's result.

    The first solve is :func:`deconvolve_spatially_varying`'s ``sv-admm``
    with ``radius_sigmas[0]`` and ``num_iter[0]`` iterations; each later one
    starts from the previous solve's state (the image, and the TV
    splitting's auxiliary and scaled dual variables) instead of the data
    and zeros, and runs ``num_iter[i]`` iterations with its own
    spread, on a bank step no finer than the previous solve's (:func:`bank_step`
    of that step: a narrower spread does not refine a wide one's coarse
    bank, which would double the cost of a map read at scale 4 for < 0.07 dB,
    session 21). Where two solves' FFT grids agree (the bank's largest PSF
    is the same) the state carries over whole, so equal spreads continue one ADMM
    run exactly (without ``saturated``, whose active set is re-formed at
    each solve's start); otherwise it is cropped to the image and put on the
    new grid as the data are. Used by ``AllInFocus(spread_select=...)``:
    15 iterations of the wide spread, then 15 of a 5x narrower one from
    there, gave the quality bench 27.72 dB where a cold 15-iteration narrow
    solve gave 27.58 and a cold 30-iteration one 27.74 (session 21).

    Parameters
    ----------
    image, radius_map
        As :func:`deconvolve_spatially_varying`.
    radius_sigmas : sequence of float
        The ``radius_sigma`` of each solve (px, ≥ 0).
    num_iter : sequence of int
        ADMM iterations of each solve (same length as ``radius_sigmas``).
    spatial_sigma, lam, cg_iter, rho, radius_step, family, saturated, tv_channels, clip, backend, dtype
        As :func:`deconvolve_spatially_varying`, the same for every solve
        (``lam``'s noise-adaptive default is measured once).
    callback : callable, optional
        ``callback(i)`` after each ADMM iteration, ``i`` counting on across
        the solves.

    Returns
    -------
    list of arrays like ``image``, one per solve
    """
    if isinstance(radius_sigmas, (str, bytes)) or isinstance(num_iter, (str, bytes)):
        raise ValueError("radius_sigmas and num_iter must be sequences of numbers")
    try:
        sigmas, iters = list(radius_sigmas), list(num_iter)
    except TypeError:
        raise ValueError(f"radius_sigmas and num_iter must be sequences, got {radius_sigmas!r} and {num_iter!r}") from None
    if not sigmas or len(sigmas) != len(iters):
        raise ValueError(f"radius_sigmas and num_iter must be non-empty and of one length, got {len(sigmas)} and "
                         f"{len(iters)}")
    iters = [check_positive_int(n, "num_iter") for n in iters]
    return _deconvolve(image, radius_map, "sv-admm", tuple(zip(sigmas, iters)), spatial_sigma, lam, cg_iter, rho,
                       radius_step, family, saturated, tv_channels, clip, callback, backend, dtype)


def _deconvolve(image, radius_map, method, stages, spatial_sigma, lam, cg_iter, rho, radius_step, family, saturated,
                tv_channels, clip, callback, backend, dtype):
    """The solves of ``stages`` (``(radius_sigma, num_iter)`` each; ``sv-admm`` warm-started
    from the previous one; ``fast`` takes one) on one image; a list of results."""
    cg_iter = check_positive_int(cg_iter, "cg_iter")
    tv_channels = "separate" if tv_channels is None else check_choice(tv_channels, TV_CHANNELS, "tv_channels")
    if tv_channels == "joint" and method == "fast":
        raise ValueError("tv_channels='joint' needs method 'sv-admm' (the fast mode has no TV)")
    be, x, kind, r = _prepare(image, radius_map, backend, dtype, family=family)
    xp = be.xp
    t = x.dtype.type
    clip = _check_clip(clip)
    x, alpha = split_alpha(x)  # RGBA: the alpha channel comes back untouched
    if alpha is not None and saturated is not None and np.ndim(saturated) == 3:
        saturated = be.asarray(saturated)[..., :3]
    if saturated is not None and method == "fast":
        raise ValueError("saturated needs method 'sv-admm' (the fast mode's per-radius filters cannot weight pixels)")
    for radius_sigma, _ in stages:  # all settings checked before the first solve
        check_uncertainty(radius_sigma, spatial_sigma)
    if lam is None:
        lam = default_lam(method, estimate_noise(x, backend=be))
    lam = check_positive(lam, "lam")
    if method == "sv-admm":
        rho = check_positive(rho if rho is not None else _SV_RHO_FACTOR * lam, "rho")
    xc = to_channels_first(x)
    outs = []
    state = None  # the previous solve's (f, ux, uy, wx, wy) and its grid
    done = 0
    step = radius_step
    for radius_sigma, num_iter in stages:
        op = SpatiallyVaryingBlur(r, be, x.dtype, step, family, radius_sigma=radius_sigma,
                                  spatial_sigma=spatial_sigma, grid_weights=method != "fast")
        step = op.step  # a later solve's bank step is no finer than this one's
        g = op.grid.extend(xc)
        sat = None if saturated is None else _saturated_grid(saturated, x, op, be)
        if method == "fast":  # one stage: neither the grid nor the channels are read again
            G = be.fft.rfft2(g, **be.fft_kwargs())
            g = xc = None
            out = _fast(op, G, lam)
            del G
        else:
            start = None
            if state is not None:
                start, grid = state
                state = None  # (the previous solve's arrays live on only as this one's start)
                if grid.pad != op.grid.pad:  # another grid: the image part, put on this one as the data are
                    start = tuple(op.grid.extend(grid.crop(a)) for a in start)
                del grid
            cb = None if callback is None else (lambda i, d=done: callback(d + i))
            f, duals = _sv_admm(op, g, lam, rho, num_iter, cg_iter, cb, sat, start=start,
                                joint=tv_channels == "joint")
            del start
            done += num_iter
            state = (f,) + duals, op.grid
            out = op.grid.crop(f)
        if sat is not None:
            # clipped in, clipped out: the data bound those values only from below, so
            # whatever the fit put above the clipped level there is unobserved
            s_img = op.grid.crop(sat)
            out = xp.where(s_img, xp.minimum(out, xc[s_img].max()), out)
        if clip is not None and clip is not False:
            lo, hi = (0.0, 1.0) if clip is True else clip
            out = xp.clip(out, t(lo), t(hi))
        outs.append(to_output(join_alpha(from_channels_first(out.astype(x.dtype, copy=False), x.ndim), alpha, xp),
                              kind))
        del op, g, sat
    return outs


def deconvolve_fast_scaled(image, radius_map, scales, *, lam=None, radius_step=0.5, family="disc", radius_sigma=0.0,
                           spatial_sigma=0.0, backend=None, dtype=None):
    """Plain ``fast`` deconvolutions of one image for the map scaled by each of ``scales``.

    Returns an iterator of ``(s, f_s)`` in the order of ``scales``, ``f_s`` the
    blend by ``s · radius_map``'s bank weights of the per-radius deconvolutions
    of the image itself: ``deconvolve_spatially_varying(image, s · radius_map,
    method='fast', ...)`` without its consistent data (:func:`_fast`; those
    depend on the scale, so they could not be shared). Computed
    together: one FFT grid (reflect boundary, padded for the largest PSF
    that any scale's bank can hold and the image can fit), one FFT of the
    image, and one filtering and inverse FFT per bank radius that any scale
    uses, however many scales use it; per scale only the bank weights and
    the blend are computed. Each result equals a separate plain blend's except
    near the image border, where the separate call's grid is padded for that
    scale's own largest PSF (the Wiener filters' tails see a different
    extension there). The per-radius results stay cached until the iterator
    is done (one image each). Used by
    :func:`gpudeblur.allinfocus.radius_check` (six scales).

    Parameters
    ----------
    image, radius_map, lam, radius_step, family, radius_sigma, spatial_sigma, backend, dtype
        As in :func:`deconvolve_spatially_varying` (``lam``: the fast mode's
        gradient-prior weight, default 0.015).
    scales : sequence of float
        Positive; checked on the call, before the iterator starts.
    """
    be, x, kind, r = _prepare(image, radius_map, backend, dtype, family=family)
    scales = [check_positive(v, "scale") for v in scales]
    if not scales:
        raise ValueError("scales must not be empty")
    lam = check_positive(_FAST_LAM if lam is None else lam, "lam")
    rs, ss = check_uncertainty(radius_sigma, spatial_sigma)
    step = bank_step(radius_step, rs)
    fam = _family(family)
    t = x.dtype.type
    rg = r.astype(x.dtype, copy=False)
    # the grid's PSF: the largest (by area, as SpatiallyVaryingBlur picks it) of the bank
    # entries any scale can hold, with the banks' own float arithmetic (rg * t(s)); entries
    # the image cannot fit are left to the banks that drop them (or fail as a separate call would)
    rmin, rmax = float(rg.min()), float(rg.max())
    lo = min(float(t(rmin) * t(s)) for s in scales)
    hi = max(float(t(rmax) * t(s)) for s in scales)
    k_lo = int(math.floor(max(0.0, lo - _SIGMA_TAIL * rs) / step))
    k_hi = int(math.ceil((hi + _SIGMA_TAIL * rs) / step))
    psfs = [fam(float(k * step)) for k in range(k_lo, k_hi + 1)]
    fits = [k for k in psfs if k.shape[0] <= rg.shape[0] and k.shape[1] <= rg.shape[1]] or psfs
    big = max(fits, key=lambda k: k.shape[0] * k.shape[1])
    grid = BlurOperator(big, rg.shape, be, x.dtype, boundary="reflect", taper=True, blurred_padding=False)
    x, alpha = split_alpha(x)  # RGBA: the alpha channel comes back untouched with every scale
    return _fast_scaled(be, x, kind, rg, scales, lam, step, rs, ss, fam, grid, alpha)


def _fast_scaled(be, x, kind, rg, scales, lam, step, rs, ss, fam, grid, alpha=None):
    """The iterator of :func:`deconvolve_fast_scaled` (arguments checked there)."""
    xp = be.xp
    t = x.dtype.type
    fft, kw = be.fft, be.fft_kwargs()
    G = fft.rfft2(grid.extend(to_channels_first(x)), **kw)
    prior = t(lam) * laplacian_otf_abs2(grid.grid_shape, xp, x.dtype)
    # the blend is only needed inside the image: the weights stay unpadded and each bank
    # radius's result is kept cropped (crop(Σ w_k ⊙ u_k) = Σ crop(w_k) ⊙ crop(u_k))
    filtered = {}  # bank radius / step -> per-radius result, (C, M, N)
    wbuf = tmp = None  # buffers reused by every entry and scale (fresh memory is slow)
    for s in scales:
        rs_map = rg * t(s)
        radii, w = _bank(rs_map, step, rs, ss, be, x.dtype)
        out = None
        for k, rho in enumerate(radii):
            key = int(round(float(rho) / step))
            if key not in filtered:
                otf = psf2otf(fam(float(rho)), grid.grid_shape, be, x.dtype, real_if_even=True)
                filtered[key] = xp.ascontiguousarray(grid.crop(_tikhonov(G, otf, prior, grid.grid_shape, be)))
            if isinstance(w, _BlockWeights):
                wk = wbuf = w.get(k, wbuf)
            else:
                wk = w[k] if w is not None else _hat(rs_map, rho, step, xp, t)
            out, tmp = _accumulate(out, wk, filtered[key], tmp, xp)
        # nothing may hold the weight stack (wk is a view of it) while the caller works
        # or the next scale's stack is built
        del w, wk, rs_map
        yield s, to_output(join_alpha(from_channels_first(out.astype(x.dtype, copy=False), x.ndim), alpha, xp), kind)


def _family(family, name="PSF family"):
    """The PSF family as a callable ``r -> PSF``: ``'disc'``, ``'gaussian'`` or a callable
    (e.g. a :class:`gpudeblur.blurmap.PSFCalibration`); ``name`` is the argument's name
    in the one-line error."""
    fam = _FAMILIES[family] if isinstance(family, str) and family in _FAMILIES else family
    if isinstance(fam, str) or not callable(fam):
        raise ValueError(f"unknown {name} {family!r}; expected 'disc', 'gaussian', a callable r -> psf "
                         "or a PSFCalibration")
    return fam


def _check_family_psfs(fam, name="PSF family") -> None:
    """A user's ``r -> psf`` callable returns 2-D, finite, non-negative PSFs with a
    positive sum (tried at r = 0 and 2); else a one-line ``ValueError`` naming it."""
    for r in (0.0, 2.0):
        try:
            k = np.asarray(fam(r), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001  (any failure of the user's function, named)
            raise ValueError(f"{name}({r}) failed: {exc}") from None
        if k.ndim != 2 or min(k.shape) < 1:
            raise ValueError(f"{name}({r}) must return a 2-D PSF array, got shape {k.shape}")
        if not np.isfinite(k).all() or (k < 0).any() or not k.sum() > 0:
            raise ValueError(f"{name}({r}) must return a finite, non-negative PSF with a positive sum")


_FAST_LAM = 0.015
#: The fast mode's default prior weight is at least this times the noise σ̂
#: (:func:`default_lam`). Measured on the bench's six blurred scenes (three
#: photos on its layered and ramp maps, 192²), mean PSNR dB, input → weights
#: 0.015 / 0.03 / 0.06 / 0.12 with the pipeline's estimated map: σ = 0.01
#: 24.11 → **26.27** / 26.09 / 25.85 / 25.57, 0.02 23.75 → 25.53 /
#: **25.62** / 25.54 / 25.34, 0.05 21.92 → 22.84 / 23.77 / 24.28 /
#: **24.46**; with the true map (weights 0.015 / 0.025 / 0.05 / 0.12) the
#: best weights are larger (0.025 / 0.05 / 0.12 at σ = 0.01 / 0.02 / 0.05)
#: and at σ = 0.001 the floor 0.015 is best (26.76 against 26.83 at
#: 0.025, 26.58 at 0.05); sharp photos prefer larger weights at every σ.
#: 1.5σ̂ follows the estimated maps' best; it is the floor for σ̂ ≤ 0.01.
FAST_LAM_PER_SIGMA = 1.5
# sv-admm: the kernel bank's interpolation error acts like extra noise, so λ
# has a floor; ρ = 100·λ keeps the f-update well conditioned enough for 5
# warm-started CG steps (ρ = 10·λ needed 60×10 iterations for the same PSNR
# on layered maps). Tuned on bench/bench_allinfocus.py scenes, σ = 1e-3.
_SV_LAM_FLOOR = 3e-4
_SV_RHO_FACTOR = 100.0


def noise_lam(method: str, noise_sigma: float) -> float:
    """The noise's share of :func:`default_lam`: ``0.1·σ̂`` (TV, ``'sv-admm'``) or
    ``FAST_LAM_PER_SIGMA·σ̂`` (the gradient prior, ``'fast'``)."""
    return (_LAM_PER_SIGMA if method == "sv-admm" else FAST_LAM_PER_SIGMA) * noise_sigma


def default_lam(method: str, noise_sigma: float) -> float:
    """Default weight of :func:`deconvolve_spatially_varying` for the input's noise σ̂ ``noise_sigma``: TV
    ``max(0.1·σ̂, 3e-4)`` for ``'sv-admm'``, the gradient prior ``max(FAST_LAM_PER_SIGMA·σ̂, 0.015)`` for
    ``'fast'`` (:func:`noise_lam` and a floor)."""
    return max(noise_lam(method, noise_sigma), _SV_LAM_FLOOR if method == "sv-admm" else _FAST_LAM)


def _fast(op: SpatiallyVaryingBlur, G, lam, consistent=True):
    """The fast mode's blend of the per-radius results from the grid's spectrum ``G``,
    on the image only (``crop(Σ w_k ⊙ u_k) = Σ crop(w_k) ⊙ crop(u_k)``): each OTF and
    each result is made, used and dropped, so only the weights are held for the
    whole bank.

    ``consistent`` (the fast mode's own): radius ``ρ_k``'s filter deconvolves
    ``h_k ∗ g + (g − H g)`` instead of ``g``: the data where the map reads ``ρ_k``
    (there ``H g ≈ h_k ∗ g``), and elsewhere the input blurred by ``ρ_k`` plus
    what ``H`` leaves unexplained. Without it each filter also deconvolves the
    regions of other radii, which its blur does not fit: a sharp layer's edges
    ring through a strongly blurred one beside it, over the whole layer (a sharp
    ellipse in a 16 px background: 3–9 dB below the input). A map on one
    bank radius skips it (the data are ``g``); a uniform map between two
    radii, or an uncertain one, changes the data a little (≤ 0.02 in the
    results). It costs one ``H g`` more: per bank entry its OTF made a second
    time, its weight on the grid and an inverse FFT, then one forward FFT
    (the deconvolution 1.4–2.3× slower), and the residual's spectrum is held
    through the bank loop (one grid spectrum more). ``False``: the plain blend of the per-radius
    deconvolutions of ``g`` (the radius check's trials,
    :func:`deconvolve_fast_scaled`, which share each radius's result among map
    scales).
    """
    be = op.be
    xp, fft, kw = be.xp, be.fft, be.fft_kwargs()
    shape = op.grid_shape
    R = None
    if consistent and len(op.psfs) > 1:
        # R = rfft2(g − H g): H g from G an entry at a time (each OTF made and dropped)
        hg = None
        for k in range(len(op.psfs)):
            term = fft.irfft2(G * op.otf(k, real_if_even=True), s=shape, overwrite_x=True, **kw)
            term *= op.weight(k)
            hg = _sum_into(hg, term)
            del term  # not held through the next entry's transform
        R = fft.rfft2(hg.astype(op.dtype, copy=False), **kw)
        del hg
        xp.subtract(G, R, out=R)
    prior = laplacian_otf_abs2(shape, xp, op.dtype)
    prior *= op.dtype.type(lam)
    out = wbuf = tmp = None
    blocks = op._w_image if isinstance(op._w_image, _BlockWeights) else None
    for k in range(len(op.psfs)):
        if blocks is not None:
            wk = wbuf = blocks.get(k, wbuf)
        else:
            wk = op.weight_image(k)
        u = op.grid.crop(_tikhonov(G, op.otf(k, real_if_even=True), prior, shape, be, R))
        out, tmp = _accumulate(out, wk, u, tmp, be.xp)
        del u  # not held while the next entry's result is made
    return out.astype(op.dtype, copy=False)


def _accumulate(out, wk, u, tmp, xp):
    """``out + wk ⊙ u`` (``wk ⊙ u`` when ``out`` is None), summed in place with the
    product in the reused buffer ``tmp``: for ``(C, M, N)`` results and ``(M, N)``
    weights a channel at a time (an ``(M, N)`` buffer); returns ``(out, tmp)``."""
    if out is None:
        return wk * u, tmp
    per_channel = out.ndim == wk.ndim + 1
    if tmp is None:
        tmp = xp.empty_like(out[0] if per_channel else out)
    for o, v in zip(out, u) if per_channel else ((out, u),):
        xp.multiply(wk, v, out=tmp)
        o += tmp
    return out, tmp


def _tikhonov(G, otf, prior, shape, be, residual=None):
    """One bank radius's closed-form deconvolution on the grid: the inverse FFT of
    ``G·conj(H) / (|H|² + prior)`` (``prior`` = λ·|D|², the gradient prior's symbol);
    with ``residual`` ``R`` that of the consistent data ``G·H + R`` instead of ``G``
    (:func:`_fast`; one complex temporary either way).

    A real ``otf`` (an even PSF's, ``psf2otf(real_if_even=True)``) takes a real
    filter, ``H · (1 / (H² + prior))``: the values NumPy's complex division by a
    real divisor gives (it multiplies by the reciprocal) but for the sign of zeros,
    at about half the time (a 12 MP RGB spectrum: 0.040 → 0.021 s per radius).
    CuPy casts a real divisor to complex and divides by its own formula, so on a
    GPU the two filters differ in the last bits (not measured on one)."""
    if otf.dtype.kind == "c":
        filt = otf.conj() / ((otf.real**2 + otf.imag**2) + prior)
    else:
        filt = otf * otf
        filt += prior
        filt = be.xp.reciprocal(filt, out=filt)
        filt *= otf
    if residual is None:
        spec = G * filt
    else:
        spec = G * otf
        spec += residual
        spec *= filt
    return be.fft.irfft2(spec, s=shape, overwrite_x=True, **be.fft_kwargs())


#: ADMM iterations after which the clipped values' active set is recomputed
#: (one ``H f`` and one ``Hᵀ`` each). Measured (192² astronaut, two-layer
#: map 0 / 2.5 / 5 px, 25 highlights and a blown-out patch, 5 % of the
#: values clipped, σ_n = 1e-3, TV 3e-4, 30 iterations; PSNR against the
#: clipped sharp image, exact / uncertain (0.5, 3) map): no mask 18.12 /
#: 19.79 dB; active set updated after every iteration 21.91 / 21.62, after
#: 1–10 the same at a third of the overhead, after 1, 2, 4, 8, 16 21.69 /
#: 21.60, every 5th 20.75 / 21.34, only after the first 18.16 / 19.81.
#: Starting from the mean-PSF inverse of *all* the data (not of the masked
#: data; the start until session 37, now the data themselves): 22.09 / 21.63. Not kept: a majorize-minimize target
#: ``max(g, H f)`` instead of the active set (21.02–21.41 / 20.55–20.69);
#: 4x the CG steps in the first 10 iterations (22.50 / 21.63, whiter
#: plateau cores, 1.5x the time); the input's value where the result is
#: below it on clipped pixels (−0.7 / −0.9 dB: a blurred highlight clips
#: over a wider area than the sharp one covers). (All measured before the
#: preconditioner used the shares of the values that count, which added
#: 0.4 dB with the true map on the bench's highlight scenes.)
_ACTIVE_SET_UPDATES = frozenset(range(1, 11))


def _saturated_grid(saturated, x, op, be):
    """The clipped-value mask as a ``(C, Mg, Ng)`` bool grid array (padded like the data), or None
    if nothing (or everything) is clipped."""
    xp = be.xp
    s = check_saturated(saturated, x, be)
    if not bool(s.any()) or bool(s.all()):  # nothing clipped, or nothing else to fit
        return None
    if s.ndim == 2 and x.ndim == 3:
        s = xp.broadcast_to(s[..., None], x.shape)
    s = xp.ascontiguousarray(to_channels_first(s))
    # padded as BlurOperator.extend pads the data
    return xp.pad(s, ((0, 0),) + tuple(op.grid.pad), mode="symmetric") if op.grid.boundary == "reflect" else s


def _sv_admm(op: SpatiallyVaryingBlur, g, lam, rho, num_iter, cg_iter, callback, sat=None, start=None, joint=False):
    """ADMM for eq. 19 on ``op``'s grid; returns ``f`` and the TV splitting's ``(ux, uy, wx, wy)``.

    ``joint``: the channels' TV together (colour TV, :func:`gpudeblur.restoration.tv_dual_step`).

    ``start``: ``(f, ux, uy, wx, wy)`` on this grid to continue from (a previous solve's
    state) instead of the data and zeros. ``f`` is only read (the CG solve
    returns a new iterate), so an earlier output cropped from it stays as it was; the
    auxiliary and dual arrays are updated in place.
    """
    be = op.be
    xp, fft, kw = be.xp, be.fft, be.fft_kwargs()
    kern = be.kernels
    t = op.dtype.type
    shape = op.grid_shape
    d2 = laplacian_otf_abs2(shape, xp, op.dtype)
    pre_denom = op.normal_otf_abs2() + t(rho) * d2

    def precond(v):
        return fft.irfft2(fft.rfft2(v, **kw) / pre_denom, s=shape, overwrite_x=True, **kw).astype(op.dtype, copy=False)

    reg = t(rho) * d2  # ρ DᵀD (periodic), added in the bank's spectral sum

    def normal(v):
        return op.normal(v, reg)

    if start is None:
        # start: the data themselves (a clipped plateau then starts bright, not at 0, which the
        # masked problem is slow to fill). Not the mean PSF's inverse of Hᵀg, the start until
        # session 37: across a large depth step that rings over the whole blurred layer, which
        # 30 × 5 iterations do not undo (256² astronaut, a sharp ellipse in a 16 px background,
        # σ = 1e-3, true map: 9.45 dB in the background against 20.01 from the data, input
        # 15.32; the quality bench's means +0.00 … +0.02 dB; docs/allinfocus.md)
        f = g.copy()
        ux = xp.zeros_like(g)
        uy = xp.zeros_like(g)
        wx = xp.zeros_like(g)
        wy = xp.zeros_like(g)
    else:
        f, ux, uy, wx, wy = start
    if sat is not None:  # first solve: clipped values out (a continued one: one-sided from its start)
        op.exclude(sat if start is None else sat & (op.forward(f) >= g))
        pre_denom = op.normal_otf_abs2() + t(rho) * d2  # the shares of the values that count (read by precond)
    htg = op.data_rhs(g)
    rhs = htg.copy()
    for i in range(num_iter):
        if sat is not None and i in _ACTIVE_SET_UPDATES:  # then one-sided: active where H f < g
            op.exclude(sat & (op.forward(f) >= g))
            htg = op.data_rhs(g)
        if i or start is not None:
            kern.admm_tv_rhs(htg, wx, wy, rhs, t(rho))
        f, _ = conjugate_gradient(normal, rhs, f, tol=1e-4, maxiter=cg_iter, M=precond)
        tv_dual_step(kern, f, ux, uy, wx, wy, t(lam / rho), True, joint)
        if callback is not None:
            callback(i)
    return f, (ux, uy, wx, wy)
