"""Non-blind deconvolution: inverse, Wiener, Tikhonov, Richardson-Lucy (+TV), ADMM-TV.

The methods of ``lecture-image-deblurring.txt`` (inverse and Wiener
filtering, regularized deconvolution ``min ‖y − c∗x‖² + ‖∇x‖²``) and the
non-blind step of ``single-image-refocusing.txt``. Every function follows
the scikit-image/cuCIM convention: ``(image, psf, ...)``, gray ``(M, N)`` or
channels-last ``(M, N, C)`` input, NumPy in → NumPy out, CuPy in → CuPy out,
and a ``backend=`` argument (``'auto'``, ``'cuda'`` or ``'cpu'``).

Images are processed channels-first on an FFT grid padded per ``boundary``
(see :mod:`gpudeblur.convolution`), all channels batched in one FFT call.
Values are not clipped unless ``clip`` is given.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import psf as _psf
from ._backend import Backend, as_backend_array, get_backend, to_output
from ._validate import (check_choice, check_compression_noise, check_image, check_positive, check_positive_int,
                        split_alpha)
from .convolution import BlurOperator, from_channels_first, to_channels_first
from .operators import laplacian_otf_abs2, rfft_column_weights

__all__ = [
    "inverse_filter",
    "wiener",
    "tikhonov",
    "richardson_lucy",
    "richardson_lucy_tv",
    "admm_tv",
    "estimate_noise",
]

_REGS = ("identity", "gradient", "laplacian")

# BT.601 RGB -> YCbCr (full range, offsets dropped: linear and invertible)
_RGB2YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)


# ---------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------


class _Problem:
    """Validated input on the chosen backend, channels-first, plus its operator."""

    def __init__(self, image, psf, backend, dtype, boundary, luminance, taper=True):
        check_choice(boundary, ("reflect", "periodic", "zero"), "boundary")
        self.be: Backend = get_backend(backend, like=image)
        xp = self.be.xp
        x, self.kind = as_backend_array(image, self.be, dtype)
        check_image(x, xp, unit_range=True)
        self.ndim = x.ndim
        self.dtype = x.dtype
        k = _psf.from_array(psf)
        self.luminance = bool(luminance) and x.ndim == 3 and x.shape[2] >= 3
        x, alpha = split_alpha(x)
        #: the alpha channel, (1, M, N), passed through untouched (or None)
        self._alpha = None if alpha is None else to_channels_first(alpha)
        xc = to_channels_first(x)
        if self.luminance:
            m = xp.asarray(_RGB2YCC.astype(self.dtype))
            ycc = xp.tensordot(m, xc, axes=1)
            self._chroma = ycc[1:]
            xc = ycc[:1]
        self.y = xc
        self.op = BlurOperator(k, x.shape[:2], self.be, self.dtype, boundary=boundary, taper=taper)

    def finish(self, xc, clip):
        xp = self.be.xp
        if self.luminance:
            inv = xp.asarray(np.linalg.inv(_RGB2YCC).astype(self.dtype))
            xc = xp.tensordot(inv, xp.concatenate([xc, self._chroma], axis=0), axes=1)
        if clip is not None and clip is not False:
            lo, hi = (0.0, 1.0) if clip is True else clip
            xc = xp.clip(xc, lo, hi)
        if self._alpha is not None:  # after the clip: untouched
            xc = xp.concatenate([xc.astype(self.dtype, copy=False), self._alpha], axis=0)
        out = from_channels_first(xc.astype(self.dtype, copy=False), self.ndim)
        return to_output(out, self.kind)


def _check_clip(clip):
    if clip is None or clip is False or clip is True:
        return clip
    try:
        lo, hi = clip
        lo, hi = float(lo), float(hi)
    except Exception:
        raise ValueError(f"clip must be a bool or a (low, high) pair, got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip range must have low < high, got {clip!r}")
    return (lo, hi)


def _reg_spectrum(reg, shape, be, dtype):
    if reg == "identity":
        return be.xp.ones((shape[0], shape[1] // 2 + 1), dtype=dtype)
    if reg == "gradient":
        return laplacian_otf_abs2(shape, be.xp, dtype)
    # 'laplacian': |L|² of the 5-point Laplacian (skimage's default regularizer)
    return laplacian_otf_abs2(shape, be.xp, dtype) ** 2


def _fourier_solve(p: _Problem, denom_extra):
    """``x = IFFT( conj(H)·G / (|H|² + denom_extra) )`` on the padded grid."""
    be, op = p.be, p.op
    kw = be.fft_kwargs()
    g = be.fft.rfft2(op.extend(p.y), **kw)
    filt = op.otf.conj() / (op.otf_abs2 + denom_extra)
    return op.crop(be.fft.irfft2(g * filt, s=op.grid_shape, **kw))


# ---------------------------------------------------------------------------
# noise estimation
# ---------------------------------------------------------------------------


def estimate_noise(image, backend=None) -> float:
    """Standard deviation of additive white Gaussian noise (per channel).

    Each channel is filtered with Immerkær's (1996) 3×3
    difference-of-Laplacians mask ``N``, which cancels locally linear
    structure, leaving ``N∗noise ~ 𝒩(0, 36σ²)`` plus residual texture.
    Immerkær averages ``|N∗I|``; we take the median instead
    (``σ = median|N∗I| / (6·0.6745)``), which ignores the minority of
    pixels on edges and texture: on partially blurred photos (a sharp
    subject on a smooth background) the mean over-estimates σ several
    times, the median stays within ~15 %.

    For a multi-channel image the median is over the residuals of all
    channels together, so ``σ̂`` is the noise of one channel whether the
    channels' noise is independent (synthetic noise, raw sensors) or shared
    (a grey image stored as RGB). Averaging the channels first, as earlier
    versions did, divides independent noise by √3.
    """
    be = get_backend(backend, like=image)
    x, _ = as_backend_array(image, be)
    check_image(x, be.xp)
    xp = be.xp
    if min(x.shape[:2]) < 3:
        raise ValueError("image is too small to estimate noise (need at least 3x3)")
    g = x[..., :3] if x.ndim == 3 else x  # an alpha channel is not image
    M = g.shape[0]
    r = xp.empty((M - 2, g.shape[1] - 2) + g.shape[2:], dtype=xp.float64)  # |N ∗ g|, filled in row blocks
    step = _noise_rows(be, r[0].size)
    for i in range(0, M - 2, step):
        _immerkaer_abs(g[i:min(M - 2, i + step) + 2], r[i:i + step], xp)
    return float(xp.median(r, overwrite_input=True)) / (6.0 * 0.6745)


#: :func:`estimate_noise` filters images in row blocks of about this many
#: bytes (float64 residuals), so that only the residuals are image-sized: at
#: 45 MP RGB 2.2 GB of float64 temporaries less, on the CPU the residuals
#: 2–3x faster. A GPU takes larger blocks (a 45 MP RGB image in 4, 24
#: array operations; same bits, as any block size gives), so that its
#: memory holds the residuals and one block's temporaries rather than
#: three image-sized float64 arrays (~2 GB more at 24 MP RGB).
NOISE_BLOCK_BYTES = {"cpu": 4 << 20, "cuda": 256 << 20}


def _noise_rows(be, row_size):
    """Rows per block of :func:`estimate_noise` for residual rows of ``row_size`` values."""
    block = NOISE_BLOCK_BYTES.get(be.name)
    return 1 << 62 if block is None else max(1, block // (8 * max(1, row_size)))


def _immerkaer_abs(g, out, xp):
    """``|N ∗ g|`` (valid part) into the float64 ``out``, ``N`` Immerkær's mask.

    The mask is separable, ``[1 −2 1]ᵀ ⊗ [1 −2 1]``: two second differences in
    float64 (6 array operations instead of 17). Each value depends only on its
    3×3 neighbourhood and is formed by the same operations whatever the block,
    so row blocks give the bits of the whole image at once."""
    g = g.astype(xp.float64)
    h = g[:, :-2] - 2 * g[:, 1:-1]
    h += g[:, 2:]
    del g
    xp.subtract(h[:-2], 2 * h[1:-1], out=out)
    out += h[2:]
    xp.abs(out, out=out)


# ---------------------------------------------------------------------------
# closed-form filters
# ---------------------------------------------------------------------------


def inverse_filter(image, psf, eps=1e-3, *, boundary="reflect", luminance=False, clip=None, backend=None, dtype=None):
    """Regularized inverse filter ``X = conj(H)·G / (|H|² + eps)``.

    ``eps = 0`` is the plain inverse ``G / H`` (frequencies where
    ``|H|² <`` machine tiny are set to zero rather than divided by zero).

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    psf : (h, w) array
    eps : float
        Non-negative regularization added to ``|H|²``.
    boundary : {'reflect', 'periodic', 'zero'}
    luminance : bool
        Deconvolve only the luma of an RGB image (chroma untouched).
    clip : bool or (low, high), optional
        ``True`` clips to ``[0, 1]``.
    backend : {'auto', 'cuda', 'cpu'}, optional
    dtype : float32 or float64, optional

    Returns
    -------
    out : array like ``image`` (float)
    """
    eps = check_positive(eps, "eps", allow_zero=True)
    clip = _check_clip(clip)
    p = _Problem(image, psf, backend, dtype, boundary, luminance)
    if eps == 0:
        be, op = p.be, p.op
        kw = be.fft_kwargs()
        g = be.fft.rfft2(op.extend(p.y), **kw)
        a2 = op.otf_abs2
        tiny = np.finfo(p.dtype).tiny
        filt = be.xp.where(a2 > tiny, 1 / be.xp.where(a2 > tiny, op.otf, 1), 0)
        x = op.crop(be.fft.irfft2(g * filt, s=op.grid_shape, **kw))
    else:
        x = _fourier_solve(p, p.dtype.type(eps))
    return p.finish(x, clip)


def wiener(
    image,
    psf,
    balance=None,
    *,
    reg="laplacian",
    boundary="reflect",
    luminance=False,
    clip=None,
    backend=None,
    dtype=None,
    compression_noise=None,
):
    """Wiener–Hunt deconvolution ``X = conj(H)·G / (|H|² + balance·|R|²)``.

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    psf : (h, w) array
    balance : float or None
        Noise-to-signal balance. ``None`` chooses it from the image by
        generalized cross-validation (no noise estimate needed), scored on
        the data tapered towards their mean near the borders
        (:data:`GCV_TAPER`); on natural images with disc blur r=2–4 and
        σ=0.003–0.03 this stayed within 0.5 dB of the best balance in
        hindsight. (Those images were blurred with mirror padding, which the
        default boundary matches exactly. On crops of larger scenes, where
        no padding is exact, GCV on the untapered data chose balances far
        too small: camera 160² crops, σ = 0.003, Gaussian σ 3 −12.9 dB
        against the input where 1e-2 gives +2.9; tapered +1.9. A strong
        blur can still fall short there: disc 5 −0.2 / +0.8 dB on two
        crops, +3.3 / +2.3 at the best balance; pass ``balance``, or use
        :func:`admm_tv`.) With ``compression_noise``
        it is the larger of GCV's and the unbiased predictive risk
        estimate's (see below; both searches run, ~1.3x the time).
    reg : {'laplacian', 'gradient', 'identity'}
        ``|R|²``: squared 5-point Laplacian (as
        :func:`skimage.restoration.wiener`), ``|Dx|² + |Dy|²``, or 1
        (classical constant-NSR Wiener).
    boundary, luminance, clip, backend, dtype
        As in :func:`inverse_filter`. With ``boundary='periodic'`` and
        ``reg='laplacian'`` this equals ``skimage.restoration.wiener(...,
        clip=False)``.
    compression_noise : float, optional
        Variance (``[0, 1]`` units) of an error the image's lossy compression
        added to its luminance (:func:`gpudeblur.io.jpeg_compression_noise`,
        which ``gpudeblur deconv`` passes for a JPEG IN). Only the estimated
        ``balance`` uses it. Generalized cross-validation reads the noise
        from the residual, and a JPEG has removed the fine noise there: on
        JPEGs it chose balances 10–1000x too small and returned images
        *below* their input (ringing, amplified block edges). With this set,
        the balance minimizes the unbiased predictive risk estimate (Mallows'
        C_L) ``‖(1 − a)·G‖²/n² + 2·σ²·Σa/n`` (unnormalized DFT ``G`` of ``n``
        grid pixels, summed over the channels) for the known noise ``σ² = σ̂² +
        f·compression_noise`` per channel (``σ̂``: :func:`estimate_noise`;
        ``f`` = :data:`JPEG_COLOUR_ERROR_FACTOR` (2) for colour channels,
        which carry the chroma's error too, 1 for grey or ``luminance``), on
        the same grid, and the larger of that and GCV's is taken. The risk
        estimate trusts the model: where the PSF does not explain the photo
        (a CUHK photo, partly in focus, deconvolved with a disc of radius 3
        as a whole) the misfit it can remove outweighs the noise it lets
        through, and it ran to the grid's floor (1e-7, an output of pure
        ringing) where GCV took 0.29; on the bench below it always chose
        the larger balance. Measured (``bench/bench_deconv_jpeg.py``: five photos
        × four disc/noise cases, libjpeg 4:2:0; mean PSNR, GCV → this, best
        balance in hindsight): quality 50 18.67 → 25.65 (25.85), 75 20.88 →
        26.29 (26.50), 90 23.09 → 26.94 (27.20), 95 24.77 → 27.39 (27.60)
        dB; better in each of the 80 cases, none below its input (all with
        ``boundary='reflect'``; a photo deconvolved as periodic or
        zero-padded rings at its borders, and there both rules fail, this
        one more). Without it (on PNGs) GCV stays the better rule: the same
        rule with ``σ̂²`` alone lost 0.59 dB to the best balance on
        average, GCV 0.20.

    Returns
    -------
    out : array like ``image`` (float)
    """
    check_choice(reg, _REGS, "reg")
    clip = _check_clip(clip)
    compression_noise = check_compression_noise(compression_noise)
    p = _Problem(image, psf, backend, dtype, boundary, luminance)
    r2 = _reg_spectrum(reg, p.op.grid_shape, p.be, p.dtype)
    if balance is None:
        noise_var = None
        if compression_noise:  # per channel: a colour channel carries the chroma's error too
            share = JPEG_COLOUR_ERROR_FACTOR if p.y.shape[0] >= 3 else 1.0
            noise_var = _measured_noise_sigma(p) ** 2 + share * compression_noise
        balance = _estimated_balance(p, r2, noise_var)
    balance = check_positive(balance, "balance", allow_zero=True)
    x = _fourier_solve(p, p.dtype.type(balance) * r2)
    return p.finish(x, clip)


#: ``wiener(..., compression_noise=v)`` counts ``v`` (a JPEG's *luminance*
#: error) this many times in each colour channel's noise: a colour channel
#: also carries the chroma's error. Measured (the deconv-jpeg bench's 80
#: files, encoded against decoded): the mean per-channel RGB error is
#: 2.6–3.5× the luminance error with 4:2:0 chroma and 2.0–2.5× with 4:4:4
#: (per file 1.0–4.7×; 1.0 for grey content). As the balance's noise
#: (mean loss to the best balance, dB, at quality 50 / 75 / 90 / 95): 1×
#: 0.21 / 0.25 / 0.62 / 1.22 (up to 7.2; 3 of 80 below their input), 1.5×
#: 0.16 / 0.18 / 0.31 / 0.37, 2× 0.20 / 0.22 / 0.26 / 0.21 (at most 1.09,
#: none below its input), 3× 0.32 / 0.36 / 0.32 / 0.27. A grey image or
#: ``luminance=True`` counts ``v`` once (there 1× / 2×: 0.09 / 0.12 / 0.31
#: / 0.73 against 0.32 / 0.36 / 0.33 / 0.24 mean loss).
JPEG_COLOUR_ERROR_FACTOR = 2.0


def _estimated_balance(p: _Problem, r2, noise_var=None) -> float:
    """Balance minimizing generalized cross-validation (Golub, Heath, Wahba
    1979); with ``noise_var``, the larger of that and the balance minimizing
    the unbiased predictive risk estimate (never below GCV's: where the PSF
    does not explain the image the risk estimate runs to the grid's floor).

    For the Fourier-diagonal filter ``a(f) = |H|² / (|H|² + b·|R|²)`` the
    GCV score is ``Σ|(1 − a)·G|² / (Σ(1 − a))²``; it needs no noise
    estimate. The predictive risk estimate (Mallows' C_L; Vogel,
    *Computational Methods for Inverse Problems*, §7.1) for white noise of
    variance ``σ²`` per pixel is ``Σ|(1 − a)·G|²/n² + 2σ²·Σa/n`` up to a
    constant (``n`` grid pixels, unnormalized DFT; per channel, summed over
    the channels). Searched on a log grid over ``[1e-7, 10]`` (ratio 1.6),
    then refined (ratio 1.05) around the best point; all channels share
    ``b``.
    """
    xp, fft, op = p.be.xp, p.be.fft, p.op
    kw = p.be.fft_kwargs()

    def power(y):
        g = fft.rfft2(op.extend(y), **kw)
        return (g.real**2 + g.imag**2).sum(axis=0)

    g2 = power(_gcv_windowed(p.y, op.psf.shape, xp))
    # the predictive risk's spectrum: the data as they are (the noise level it assumes is theirs)
    g2_data = None if noise_var is None else power(p.y)
    # rfft stores half the spectrum: weight the columns that stand for two
    w = xp.broadcast_to(rfft_column_weights(op.grid_shape[1], xp, g2.dtype), g2.shape)
    h2 = op.otf_abs2
    n = op.grid_shape[0] * op.grid_shape[1]
    channels = p.y.shape[0]

    t = r2.dtype.type

    def residual(b, spec2):
        """``b`` in the working precision, ``1 − a`` and ``Σ|(1 − a)·G|²`` (on the device)."""
        b = t(b)  # the working precision on both backends (NumPy 2 would promote to float64 for an np.float64, CuPy not)
        one_minus_a = (b * r2) / (h2 + b * r2)
        return b, one_minus_a, (w * one_minus_a**2 * spec2).sum()

    def gcv(b):
        _, one_minus_a, num = residual(b, g2)
        den = (w * one_minus_a).sum()
        return float(num / (den * den))

    def risk(b):
        b, _, num = residual(b, g2_data)
        trace = (w * h2 / (h2 + b * r2)).sum()  # Σa over the whole spectrum
        num, trace = (float(v) for v in p.be.to_host(xp.stack([num, trace])))  # one device sync
        return num / (n * channels) + 2.0 * noise_var * trace  # the estimate × n / channels

    def search(score):
        grid = np.geomspace(1e-7, 10.0, 36)
        i = int(np.argmin([score(b) for b in grid]))
        fine = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 21)
        return float(fine[int(np.argmin([score(b) for b in fine]))])

    balance = search(gcv)
    return balance if noise_var is None else max(balance, search(risk))


#: Share of each side over which :func:`_estimated_balance`'s GCV sees the
#: data tapered towards their mean (a Tukey window; at least the PSF's
#: size). Where the scene goes on past the border no padding is exact, and
#: GCV read the seams' misfit as detail to keep: it chose balances 10–1000×
#: too small. Measured (session 38, ``/tmp/exp38/gcvwin.py``, scratch: three
#: photos × two 160² crops of larger images, σ = 0.003; mean / worst gain
#: over the input, GCV on the data → on the tapered data, best fixed
#: balance): Gaussian σ 3 −11.14 / −18.83 → +1.75 / +1.18 (+2.64),
#: Gaussian σ 2 −0.61 / −6.99 → +3.20 / +2.21 (+3.50), disc 3 +1.62 /
#: −3.19 → +3.38 / +2.91 (+3.92), disc 5 −3.54 / −9.10 → −0.44 / −1.94
#: (+2.94), motion 9 px at 0° +3.97 → +4.05, at 45° +2.30 → +2.95; 10 % /
#: 5 % of each side gained less. On data blurred with mirror padding (which
#: the padding matches exactly) the same within 0.02 dB (motion at 45°
#: +0.22). The filter itself is applied to the data as they are.
GCV_TAPER = 0.2


def _gcv_windowed(y, psf_shape, xp):
    """``y`` (C, M, N) tapered towards each channel's mean by a Tukey window over
    :data:`GCV_TAPER` of each side (at least the PSF's size, at most half the side)."""
    M, N = y.shape[1:]

    def tukey(n, width):
        width = min(max(int(width), 0), n // 2)
        v = np.ones(n)
        if width:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
            v[:width], v[n - width:] = ramp, ramp[::-1]
        return v

    win = tukey(M, max(psf_shape[0], GCV_TAPER * M))[:, None] * tukey(N, max(psf_shape[1], GCV_TAPER * N))[None, :]
    win = xp.asarray(win.astype(y.dtype))
    mean = y.mean(axis=(1, 2), keepdims=True)
    return mean + (y - mean) * win


def tikhonov(image, psf, lam=1e-3, *, prior="gradient", boundary="reflect", luminance=False, clip=None, backend=None, dtype=None):
    """Tikhonov deconvolution ``min ‖h∗x − y‖² + lam·‖Γx‖²`` in closed form.

    ``prior='gradient'`` (``Γ = ∇``, the lecture's
    ``min ‖y − c∗x‖² + ‖∇x‖²``) or ``'identity'``. Solved exactly on the
    periodic padded grid: ``X = conj(H)·G / (|H|² + lam·|Γ|²)``.

    Parameters are as in :func:`wiener`; ``lam`` must be positive.
    """
    lam = check_positive(lam, "lam")
    check_choice(prior, ("gradient", "identity"), "prior")
    clip = _check_clip(clip)
    p = _Problem(image, psf, backend, dtype, boundary, luminance)
    r2 = _reg_spectrum(prior, p.op.grid_shape, p.be, p.dtype)
    x = _fourier_solve(p, p.dtype.type(lam) * r2)
    return p.finish(x, clip)


# ---------------------------------------------------------------------------
# iterative methods
# ---------------------------------------------------------------------------


#: RL-TV's weight must stay below this: the multiplicative update divides by ``1 − λ·div(∇x/|∇x|)``
#: and that divergence reaches ±4 on the pixel grid, so from λ = 1/4 on the denominator can reach
#: zero (clamped at 1e-3 in the kernel: the estimate grows by up to 1000× per step).
RL_TV_MAX_WEIGHT = 0.25


def richardson_lucy(
    image,
    psf,
    num_iter=50,
    *,
    tv_weight=0.0,
    filter_epsilon=None,
    init="image",
    boundary="reflect",
    luminance=False,
    clip=None,
    callback: Callable[[int], None] | None = None,
    backend=None,
    dtype=None,
):
    """Richardson–Lucy deconvolution, optionally with TV regularization (RL-TV).

    ``x ← x · Hᵀ(y / Hx)``; with ``tv_weight = λ > 0`` the update of Dey et
    al. (2006), ``x ← x · Hᵀ(y / Hx) / (1 − λ·div(∇x/|∇x|))``, fused in one
    custom kernel (CUDA or Numba).

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
        Non-negative observation (negative values, e.g. from added noise,
        are clipped to 0 as RL's Poisson model requires).
    psf : (h, w) array
    num_iter : int
    tv_weight : float
        λ of RL-TV (0: plain RL). Typical 0.001–0.01 for images in [0, 1];
        below :data:`RL_TV_MAX_WEIGHT` (0.25), where the update's
        denominator ``1 − λ·div`` stays positive (measured, 128² photo, disc
        of 2 px, input 34.2 dB: 41.9 dB at 0.002, 27.0 at 0.05, 8.7 at 0.24,
        values up to 466 at 0.3).
    filter_epsilon : float, optional
        Where the re-blurred estimate is ``<= filter_epsilon`` the ratio is
        set to 0 (as scikit-image). Default: the dtype's smallest normal.
    init : {'image', 'flat'} or float
        Start from the observation, from 0.5 everywhere ('flat', as
        scikit-image) or from a constant.
    boundary : {'reflect', 'periodic', 'zero'}
        ``'zero'`` keeps the estimate on the image grid and zero-pads every
        convolution: the model of :func:`skimage.restoration.richardson_lucy`.
    callback : callable, optional
        Called as ``callback(i)`` after iteration ``i`` (progress bars); it
        receives no array, so it forces no device synchronization.
    luminance, clip, backend, dtype
        As in :func:`inverse_filter`.
    """
    num_iter = check_positive_int(num_iter, "num_iter")
    tv_weight = check_positive(tv_weight, "tv_weight", allow_zero=True)
    if tv_weight >= RL_TV_MAX_WEIGHT:
        raise ValueError(f"tv_weight of RL-TV must be below {RL_TV_MAX_WEIGHT:g}, got {tv_weight!r} (its update divides "
                         "by 1 − λ·div, and the divergence of unit gradients reaches ±4: the iteration blows up); "
                         "use admm_tv for strong regularization")
    clip = _check_clip(clip)
    p = _Problem(image, psf, backend, dtype, boundary, luminance)
    xp, op = p.be.xp, p.op
    kern = p.be.kernels
    t = p.dtype.type
    eps = t(np.finfo(p.dtype).tiny if filter_epsilon is None else check_positive(filter_epsilon, "filter_epsilon", allow_zero=True))
    y = xp.maximum(p.y, 0)
    if boundary != "zero":
        y = xp.maximum(op.extend(y), 0)
    if isinstance(init, str):
        check_choice(init, ("image", "flat"), "init")
        x = y.copy() if init == "image" else xp.full_like(y, 0.5)
    else:
        x = xp.full_like(y, check_positive(init, "init"))
    ratio = xp.empty_like(y)
    nxt = xp.empty_like(y)
    for i in range(num_iter):
        est = op.forward(x)
        kern.rl_ratio(y, est, ratio, eps)
        corr = op.adjoint(ratio)
        if tv_weight > 0:
            kern.rl_tv_update(x, corr, nxt, t(tv_weight), t(_TV_EPS))
            x, nxt = nxt, x
        else:
            x *= corr
        if callback is not None:
            callback(i)
    if boundary == "reflect":
        x = op.crop(x)
    return p.finish(x, clip)


_TV_EPS = 1e-3  # smoothing of |∇x| in the TV terms (images in [0, 1])


def richardson_lucy_tv(image, psf, num_iter=50, tv_weight=0.002, **kwargs):
    """Richardson–Lucy with total-variation regularization (Dey et al. 2006).

    Shorthand for :func:`richardson_lucy` with ``tv_weight``.
    """
    if not tv_weight or tv_weight <= 0:
        raise ValueError(f"tv_weight must be positive, got {tv_weight!r}")
    return richardson_lucy(image, psf, num_iter, tv_weight=tv_weight, **kwargs)


#: How a colour image's total variation treats the channels (``tv_channels=``).
TV_CHANNELS = ("joint", "separate")


def tv_dual_step(kern, x, ux, uy, wx, wy, t, isotropic, joint):
    """The ADMM-TV shrinkage step (``z = shrink(Dx + u, t)``, ``u ← Dx + u − z``, ``w = z − u``) on
    channels-first arrays ``(C, M, N)``: the channels together (``joint``, isotropic, ``C > 1``:
    colour TV, each pixel's ``2C`` gradient components shrunk by their joint norm) or each on its own."""
    if joint and isotropic and x.shape[0] > 1:
        kern.admm_tv_dual_joint(x, ux, uy, wx, wy, t)
    else:
        kern.admm_tv_dual(x, ux, uy, wx, wy, t, isotropic)


def admm_tv(
    image,
    psf,
    lam=None,
    num_iter=100,
    *,
    rho=None,
    isotropic=True,
    tv_channels=None,
    boundary="reflect",
    luminance=False,
    clip=None,
    callback: Callable[[int], None] | None = None,
    backend=None,
    dtype=None,
    compression_noise=None,
):
    """Total-variation deconvolution by ADMM.

    Solves ``min_x ½‖h∗x − y‖² + lam·TV(x)`` with the splitting ``z = Dx``
    (periodic forward differences on the padded grid):

    - x-update: ``(HᵀH + ρDᵀD) x = Hᵀy + ρDᵀ(z − u)``, exact in Fourier;
    - z-update: shrinkage of ``Dx + u`` by ``lam/ρ`` (isotropic: per-pixel
      vector shrinkage; anisotropic: soft threshold per component);
    - u-update: ``u ← u + Dx − z``.

    The z/u updates and ``Dᵀ(z − u)`` are fused custom kernels (CUDA or
    Numba): one pass over the image each.

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    psf : (h, w) array
    lam : float, optional
        TV weight. Default ``max(0.1·σ̂, 1e-5)`` with ``σ̂`` the noise
        estimate of :func:`estimate_noise` (see Notes), or
        ``max(0.1·sqrt(σ̂² + compression_noise), 1e-5)``.
    num_iter : int
    rho : float, optional
        ADMM penalty; default ``max(10·lam, 1e-4)``.
    isotropic : bool
    tv_channels : {'joint', 'separate'}, optional
        A colour image's TV: of all channels together (``'joint'``, the
        default with ``isotropic``; vectorial or colour TV, Blomgren & Chan
        1998: each pixel's gradients of every channel shrunk by their joint
        norm, so the channels share their edges), or of each channel on
        its own (``'separate'``: the default and the only choice with
        ``isotropic=False``). Measured (session 36, ``bench/bench_tv_channels.py``:
        four 256² photos, discs of radius 3 / 4 / 6 px, σ = 0.002 / 0.01 /
        0.003, the default ``lam``): joint +0.45 … +1.12 dB over separate
        in all twelve cases (mean +0.73); the bundled photo, 8 bits, disc 4
        at σ = 0.03 / 0.05, disc 2 at 0.02, disc 8 at 0.01: +0.63 / +0.33 /
        +0.09 / +0.90. A JPEG (the uniform demo's scene at quality 75 / 90
        / 95): with ``compression_noise`` (as ``gpudeblur deconv`` passes)
        level with separate (+0.04 / +0.01 / +0.07 dB), without it 0.8–1.1
        dB below separate (the weight, too low for the
        compression error, lets the joint shrinkage keep its colour
        blocks): pass ``compression_noise`` for a JPEG.
    boundary, luminance, clip, callback, backend, dtype
        As in :func:`richardson_lucy`; ``boundary='zero'`` zero-pads.
    compression_noise : float, optional
        Variance (``[0, 1]`` units) of an error the image's lossy compression
        added, which :func:`estimate_noise` cannot see (a JPEG removes the
        fine noise it measures; :func:`gpudeblur.io.jpeg_compression_noise`,
        which ``gpudeblur deconv`` passes for a JPEG IN). Only the default
        ``lam`` uses it. Measured (the bundled photo, a disc of radius 4 and
        σ = 0.01 or radius 3 and σ = 0.002, saved as JPEG): quality 75 / 90
        / 95 25.66 → 27.26 / 27.06 → 28.20 / 28.23 → 28.62 dB and 26.98 →
        28.37 / 29.44 → 29.82 / 30.70 → 30.77 dB.

    Notes
    -----
    The default ``lam`` was tuned on three natural images blurred by discs
    of radius 2, 4 and 6 with noise σ of 0.003, 0.01 and 0.03 (plus 8-bit
    quantization): the PSNR-optimal ``lam`` was 0.03–0.3·σ, mostly 0.1·σ,
    and ``lam = 0.1·σ`` stayed within 0.4 dB of the optimum in those cases.
    With ``rho = 10·lam`` ADMM reaches the PSNR of a 1000-iteration run
    within 0.02 dB after 100 iterations.
    """
    num_iter = check_positive_int(num_iter, "num_iter")
    clip = _check_clip(clip)
    compression_noise = check_compression_noise(compression_noise)
    if tv_channels is None:
        tv_channels = "joint" if isotropic else "separate"
    check_choice(tv_channels, TV_CHANNELS, "tv_channels")
    joint = tv_channels == "joint"
    if joint and not isotropic:
        raise ValueError("tv_channels='joint' needs the isotropic TV (isotropic=True)")
    p = _Problem(image, psf, backend, dtype, boundary, luminance)
    if lam is None:
        lam = _default_tv_lam(p, compression_noise or 0.0)
    lam = check_positive(lam, "lam")
    rho = check_positive(rho if rho is not None else max(_RHO_FACTOR * lam, 1e-4), "rho")
    be, op = p.be, p.op
    xp, fft = be.xp, be.fft
    kw = be.fft_kwargs()
    kern = be.kernels
    t = p.dtype.type
    y = op.extend(p.y)
    shape = op.grid_shape
    hty = fft.irfft2(fft.rfft2(y, **kw) * op.otf.conj(), s=shape, **kw).astype(p.dtype, copy=False)
    denom = op.otf_abs2 + t(rho) * laplacian_otf_abs2(shape, xp, p.dtype)
    ux = xp.zeros_like(y)
    uy = xp.zeros_like(y)
    wx = xp.zeros_like(y)
    wy = xp.zeros_like(y)
    rhs = hty.copy()
    x = y
    for i in range(num_iter):
        if i:
            kern.admm_tv_rhs(hty, wx, wy, rhs, t(rho))
        spec = fft.rfft2(rhs, **kw)
        spec /= denom
        x = op.irfft2(spec)
        tv_dual_step(kern, x, ux, uy, wx, wy, t(lam / rho), isotropic, joint)
        if callback is not None:
            callback(i)
    return p.finish(op.crop(x), clip)


_RHO_FACTOR = 10.0


def _measured_noise_sigma(p: _Problem) -> float:
    """:func:`estimate_noise`'s σ̂ of the problem's channels."""
    return estimate_noise(from_channels_first(p.y, 3 if p.y.shape[0] > 1 else 2), backend=p.be)


def _default_tv_lam(p: _Problem, compression_noise: float = 0.0) -> float:
    sigma = _measured_noise_sigma(p)
    if compression_noise:
        sigma = math.sqrt(sigma * sigma + compression_noise)
    return max(_LAM_PER_SIGMA * sigma, 1e-5)


_LAM_PER_SIGMA = 0.1
