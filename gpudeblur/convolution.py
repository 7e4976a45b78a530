"""FFT convolution and the blur operator used by every deconvolution method.

Arrays inside the library are channels-first ``(C, M, N)`` so that one FFT
call transforms all channels (batched over the leading axis).

Boundary handling
-----------------
``'reflect'`` (default)
    The image is extended by half-sample symmetric padding (as
    :func:`scipy.ndimage.convolve` with ``mode='reflect'``) by at least
    the PSF support on each side, up to a 2·3·5·7-smooth FFT size. For
    deconvolution the padding is additionally *edge-tapered*: it is blended
    towards a circularly smoothed copy so that the periodic seam of the
    FFT grid is continuous and does not ring into the image. A PSF far from
    its own mirror image under both flips (a slanted motion blur;
    :func:`mirror_symmetric`) gets instead the mirror padding blurred once
    more by the PSF on the grid: the mirror image of its blurred data is
    data blurred by another PSF, which a direct deconvolution rings from.
``'periodic'``
    No padding: circular convolution on the image grid.
``'zero'``
    Zero padding (linear convolution). For Richardson-Lucy this matches
    :func:`skimage.restoration.richardson_lucy` (the estimate lives on the
    image grid and every convolution zero-pads it).
"""

from __future__ import annotations

import functools

import numpy as np

from . import psf as _psf
from ._backend import Backend, array_module, as_backend_array, get_backend, to_output
from ._validate import check_choice, check_image, join_alpha, split_alpha

__all__ = ["next_smooth_len", "psf2otf", "BlurOperator", "fftconvolve", "to_channels_first", "from_channels_first"]

BOUNDARIES = ("reflect", "periodic", "zero")


@functools.lru_cache(maxsize=4096)
def next_smooth_len(n: int) -> int:
    """Smallest integer ``>= n`` whose only prime factors are 2, 3, 5 and 7."""
    n = int(n)
    if n <= 1:
        return 1
    best = None
    p7 = 1
    while p7 < 2 * n:
        p5 = p7
        while p5 < 2 * n:
            p3 = p5
            while p3 < 2 * n:
                p2 = p3
                while p2 < n:
                    p2 *= 2
                if best is None or p2 < best:
                    best = p2
                    if best == n:
                        return n
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def to_channels_first(img):
    """``(M, N)`` -> ``(1, M, N)``; ``(M, N, C)`` -> contiguous ``(C, M, N)``."""
    xp = array_module(img)
    if img.ndim == 2:
        return img[None]
    return xp.ascontiguousarray(xp.moveaxis(img, -1, 0))


def from_channels_first(arr, ndim: int):
    xp = array_module(arr)
    if ndim == 2:
        return arr[0]
    return xp.ascontiguousarray(xp.moveaxis(arr, 0, -1))


def psf2otf(psf: np.ndarray, shape, be: Backend, dtype=np.float32, real_if_even=False):
    """Real-FFT transfer function of ``psf`` on a grid of ``shape``.

    The PSF centre ``(h // 2, w // 2)`` is moved to the origin, so that
    multiplying by the OTF is a 'same'-aligned circular convolution.

    Computed on the backend in float64. A small PSF (the usual case) is
    transformed by a separable direct DFT, ``A @ psf @ B`` in complex128
    (``A``: ``M × h``, ``B``: ``w × (N//2+1)``; phases reduced modulo the
    grid size in integers), about ``M·w·(h + N/2)`` multiply-adds instead
    of an FFT of the whole grid (which, on the host, took ~0.5–1 s per PSF
    of the spatially varying bank at 12 MP); a PSF too large for that to
    pay takes the backend's FFT of the embedded PSF. A PSF of odd size that
    is even about its centre in each axis (disc, Gaussian: the spatially
    varying banks) has a real OTF, ``C_M @ psf @ C_N`` with cosine
    matrices, at a quarter of the complex product's cost (imaginary part
    exactly 0). All equal ``numpy.fft.rfft2`` of the embedded PSF to float64
    rounding (tested). ``real_if_even``: return the cos ⊗ cos product as a real
    array (``dtype``) rather than a complex one with a zero imaginary part (the
    FFT path, whose imaginary part is rounding, stays complex).
    """
    kh, kw = psf.shape
    M, N = shape
    if kh > M or kw > N:
        raise ValueError(f"PSF ({kh}x{kw}) is larger than the grid ({M}x{N})")
    xp = be.xp
    cdt = np.complex64 if np.dtype(dtype) == np.float32 else np.complex128
    if kw * (kh + N // 2 + 1) > 2.5 * N * np.log2(max(M * N, 2)):  # direct DFT dearer than an FFT
        big = xp.zeros((M, N), dtype=xp.float64)
        big[:kh, :kw] = xp.asarray(np.asarray(psf, dtype=np.float64))
        big = xp.roll(big, (-(kh // 2), -(kw // 2)), axis=(0, 1))
        return be.fft.rfft2(big, **be.fft_kwargs()).astype(cdt)

    p64 = np.asarray(psf, dtype=np.float64)
    # a PSF even about its centre in each axis (disc, Gaussian; odd sizes) has a real
    # OTF, cos ⊗ cos: real products at a quarter of the complex ones' cost
    even = kh % 2 == 1 and kw % 2 == 1 and \
        float(np.abs(p64 - p64[::-1]).max() + np.abs(p64 - p64[:, ::-1]).max()) <= 1e-13 * float(np.abs(p64).sum())

    def dft(n, offsets, freqs):
        # exp(-2πi·f·o/n) (its real part for an even PSF) with f·o reduced mod n in integers (exact phases)
        ph = (xp.asarray(freqs, dtype=xp.int64)[:, None] * xp.asarray(offsets, dtype=xp.int64)[None, :]) % n
        return xp.cos((2 * np.pi / n) * ph.astype(xp.float64)) if even else \
            xp.exp((-2j * np.pi / n) * ph.astype(xp.float64))

    a = dft(M, np.arange(kh) - kh // 2, np.arange(M))  # (M, kh)
    b = dft(N, np.arange(kw) - kw // 2, np.arange(N // 2 + 1)).T  # (kw, N//2+1)
    k = xp.asarray(p64)
    return ((a @ (k if even else k.astype(xp.complex128))) @ b).astype(dtype if even and real_if_even else cdt)


def _pad_widths(size: int, support: int, boundary: str, extra: int) -> tuple[int, int]:
    if boundary == "periodic":
        return 0, 0
    need = size + 2 * (support + extra)
    total = next_smooth_len(need) - size
    lo = total // 2
    return lo, total - lo


class BlurOperator:
    """Convolution by a fixed PSF on a padded FFT grid, with its adjoint.

    Parameters
    ----------
    psf : (h, w) array
        Normalized PSF (see :mod:`gpudeblur.psf`).
    image_shape : (M, N)
        Spatial shape of the images it will act on.
    be : Backend
    dtype : float32 or float64
    boundary : {'reflect', 'periodic', 'zero'}
    taper : bool
        Edge-taper the padding (deconvolution); ``False`` for plain
        convolution, where symmetric padding alone is exact.
    blurred_padding : bool
        With ``boundary='reflect'`` and ``taper``, for a PSF that is not
        mirror-symmetric (:func:`mirror_symmetric`: a slanted motion blur):
        the padding is the mirrored image blurred once more by the PSF, on
        the grid (:meth:`extend`). ``False``: the mirror padding and taper for
        any PSF (a grid whose PSF only sizes the padding, as the spatially
        varying operator's).

    Notes
    -----
    ``forward``/``adjoint`` act on *grid* arrays ``(C, Mg, Ng)``; ``extend``
    takes an image onto the grid and ``crop`` takes it back. The OTF and
    the FFT shape are computed once and reused across iterations (cuFFT
    plans are cached by CuPy for the same shape).
    """

    def __init__(self, psf, image_shape, be: Backend, dtype=np.float32, boundary="reflect", taper=True, extra_pad=None,
                 blurred_padding=True):
        check_choice(boundary, BOUNDARIES, "boundary")
        self.psf = _psf.from_array(psf)
        #: whether :meth:`extend` fills the tapered reflect padding with the mirrored image blurred by the PSF
        self.blurred_padding = bool(blurred_padding) and not mirror_symmetric(self.psf)
        self.be = be
        self.dtype = np.dtype(dtype)
        self.boundary = boundary
        self.taper = taper
        M, N = int(image_shape[0]), int(image_shape[1])
        kh, kw = self.psf.shape
        if kh > M or kw > N:
            raise ValueError(f"PSF ({kh}x{kw}) is larger than the image ({M}x{N})")
        self.image_shape = (M, N)
        if extra_pad is None:
            extra_pad = max(kh, kw) // 2 if taper else 0
        self.pad = (_pad_widths(M, kh, boundary, extra_pad), _pad_widths(N, kw, boundary, extra_pad))
        self.grid_shape = (M + sum(self.pad[0]), N + sum(self.pad[1]))
        self.otf = psf2otf(self.psf, self.grid_shape, be, self.dtype)
        self._otf_conj = None
        self._abs2 = None

    # -- grid <-> image ---------------------------------------------------
    @property
    def crop_slices(self):
        (t, b), (l, r) = self.pad
        M, N = self.image_shape
        return (slice(None), slice(t, t + M), slice(l, l + N))

    def crop(self, x):
        return x[self.crop_slices]

    def extend(self, img, taper=None):
        """Put a ``(C, M, N)`` image on the FFT grid (padding per boundary).

        ``taper`` overrides the operator's setting: ``False`` gives plain
        symmetric padding (exact for synthesis by convolution).
        """
        xp = self.be.xp
        if self.boundary == "periodic":
            return img
        pw = ((0, 0),) + self.pad
        if self.boundary == "zero":
            return xp.pad(img, pw, mode="constant")
        ext = xp.pad(img, pw, mode="symmetric")
        if self.taper if taper is None else taper:
            ext = self._blurred_padding(ext, img) if self.blurred_padding else self._edge_taper(ext)
        return ext

    def _blurred_padding(self, ext, img):
        """The padding of a PSF that is not mirror-symmetric: ``H`` of the mirror-padded
        image (circular on the grid), the image itself kept.

        A mirror of blurred data is data blurred by the *mirrored* PSF; for a
        slanted motion blur that is another PSF, and a direct deconvolution
        rings from the seams over the whole image (camera 128², 9 px at 45°,
        σ = 0.003, input 24.5 dB: Wiener 19.2, Tikhonov 23.6 dB). Blurred once
        more by the PSF, the padding is data the model can explain and
        periodic on the grid (no taper needed): 27.1 / 29.1 dB, ADMM-TV
        28.5 → 32.4. A PSF close to its mirror image under one flip keeps the
        mirror padding (:data:`BLURRED_PADDING_ASYMMETRY` says why).
        """
        kw = self.be.fft_kwargs()
        spec = self.be.fft.rfft2(ext, **kw)
        spec *= self.otf
        out = self.irfft2(spec).astype(self.dtype, copy=False)
        out[self.crop_slices] = img
        return out

    def _edge_taper(self, ext):
        """Blend the padding towards a circularly smoothed copy.

        Weight 1 on the image, a raised-cosine ramp across the padding to 0
        at the grid border, where the smoothed (periodic) copy takes over so
        that the FFT grid's seam is continuous.
        """
        xp = self.be.xp
        fft = self.be.fft
        (t, b), (l, r) = self.pad
        Mg, Ng = self.grid_shape
        M, N = self.image_shape
        wy = _ramp(Mg, t, M, xp, self.dtype)
        wx = _ramp(Ng, l, N, xp, self.dtype)
        w = wy[:, None] * wx[None, :]
        sigma = max(2.0, 0.5 * min(max(t, b), max(l, r)) if min(t + b, l + r) > 0 else 2.0)
        g = _gaussian_otf(self.grid_shape, sigma, xp, self.dtype)
        kw = self.be.fft_kwargs()
        smooth = fft.irfft2(fft.rfft2(ext, **kw) * g, s=self.grid_shape, **kw).astype(self.dtype, copy=False)
        # w·ext + (1 − w)·smooth as ext += (1 − w)·(smooth − ext): in place,
        # and exact (ext unchanged) where w = 1, i.e. on the image itself
        smooth -= ext
        smooth *= 1 - w
        ext += smooth
        return ext

    # -- operators on the grid --------------------------------------------
    def irfft2(self, spec):
        """Inverse real FFT of a grid spectrum; ``spec`` is overwritten.

        On the CPU this runs as two 1-D passes: an in-place complex inverse
        FFT down the columns, then the complex-to-real pass along the rows.
        ``scipy.fft.irfft2`` allocates a hidden full-size complex temporary
        (even with ``overwrite_x=True``); for batched RGB grids that buffer is
        larger than glibc's mmap threshold, so every call page-faults it in
        afresh, which cost ~40 % of the call (bench/README.md). With ducc0
        (:mod:`gpudeblur._cpu_fft`, the default) the two passes take what its
        one ``irfft2`` takes, and both run in place.
        """
        fft = self.be.fft
        kw = self.be.fft_kwargs()
        if self.be.name == "cpu":
            spec = fft.ifft(spec, axis=-2, overwrite_x=True, **kw)
            return fft.irfft(spec, n=self.grid_shape[1], axis=-1, overwrite_x=True, **kw)
        return fft.irfft2(spec, s=self.grid_shape, overwrite_x=True, **kw)

    def _apply(self, x, transfer):
        fft = self.be.fft
        kw = self.be.fft_kwargs()
        if self.boundary == "zero":
            # linear convolution: zero-pad, circular on the grid, crop back
            x = self.be.xp.pad(x, ((0, 0),) + self.pad)
        spec = fft.rfft2(x, **kw)
        spec *= transfer  # in place: no second spectrum-sized array
        y = self.irfft2(spec)
        return self.crop(y) if self.boundary == "zero" else y

    def forward(self, x):
        """``H x`` (convolution)."""
        return self._apply(x, self.otf)

    def adjoint(self, x):
        """``Hᵀ x`` (correlation)."""
        if self._otf_conj is None:
            self._otf_conj = self.otf.conj()
        return self._apply(x, self._otf_conj)

    @property
    def otf_abs2(self):
        if self._abs2 is None:
            self._abs2 = (self.otf.real**2 + self.otf.imag**2).astype(self.dtype)
        return self._abs2


#: How far from mirror-symmetric a PSF must be, under *both* flips, for the
#: tapered reflect padding to be the blurred one (:meth:`BlurOperator.extend`):
#: :func:`mirror_asymmetry` above this left-right and up-down. Measured
#: (session 38, `/tmp/exp38/asym.py`, scratch: 160² crops of three larger
#: photos, so the scene goes on past the border; σ = 0.003; mean gain over
#: the input, Wiener / Tikhonov / ADMM-TV, mirror → blurred padding): slanted
#: motion blurs (asymmetry 0.39–0.89: 9 px at 10°, 45°, 80°; 11 at 120°;
#: 15 at 20°; 21 at 30°) gain 0.7–6.3 dB with every method (motion 9 @ 45°
#: −4.67 / −1.14 / +3.01 → +2.30 / +2.76 / +6.10); a rotated elliptical
#: Gaussian 2.5 × 1 @ 30° (0.44) +6.6 / 0.0 / 0.0, 4 × 1 @ 60° (0.62) +11.7 /
#: +0.7 / +0.6, but 2 × 1.5 @ 45° (0.17) −0.6 / −0.2 / −0.2; a one-sided
#: streak (left-right 0.8, up-down 0 or 0.33, exact under the second flip)
#: −1.1 … −1.8; Gaussians with 1e-5–1e-3 measurement noise (≤ 0.001)
#: −0.2 … −5 (Wiener's GCV balance reads the noise-free padding as a
#: cleaner image). Discs and axis-aligned motion (0) would gain 0.1–3 dB
#: on such crops but lose 0.3–0.9 dB where the data are blurred with mirror
#: padding (`bench/bench_deconv_psfs.py`): they keep the mirror padding.
BLURRED_PADDING_ASYMMETRY = 0.25


def mirror_asymmetry(psf) -> tuple[float, float]:
    """``(left-right, up-down)`` asymmetry of a (host) PSF about its centre
    ``(h // 2, w // 2)``: half the ℓ1 distance between the unit-sum PSF and its
    mirror image, 0 (symmetric) to 1 (disjoint). An even side is padded with
    a zero row or column first, so that the centre is the middle."""
    k = np.asarray(psf, dtype=np.float64)
    if k.ndim != 2 or not k.size or not k.sum() > 0:
        return 0.0, 0.0
    k = np.pad(k, ((0, 1 - k.shape[0] % 2), (0, 1 - k.shape[1] % 2))) / k.sum()
    return 0.5 * float(np.abs(k - k[:, ::-1]).sum()), 0.5 * float(np.abs(k - k[::-1, :]).sum())


def mirror_symmetric(psf, tol=BLURRED_PADDING_ASYMMETRY) -> bool:
    """Whether the mirror padding serves ``psf`` (:meth:`BlurOperator.extend`): its
    :func:`mirror_asymmetry` at most ``tol`` under one flip or the other. A mirror
    image of data blurred by ``psf`` is data blurred by the mirrored PSF; a disc,
    a Gaussian or an axis-aligned motion blur is its own mirror image, a
    slanted motion blur is not (under either flip)."""
    return min(mirror_asymmetry(psf)) <= tol


def _ramp(n_grid, start, n_img, xp, dtype):
    """1 on [start, start + n_img), raised cosine to 0 at both grid ends."""
    w = np.ones(n_grid)
    lo = start
    hi = n_grid - start - n_img
    if lo > 0:
        w[:lo] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(lo) + 0.5) / lo)
    if hi > 0:
        w[start + n_img :] = (0.5 - 0.5 * np.cos(np.pi * (np.arange(hi) + 0.5) / hi))[::-1]
    return xp.asarray(w.astype(dtype))


def _gaussian_otf(shape, sigma, xp, dtype):
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return xp.asarray(g.astype(dtype))


def fftconvolve(image, psf, boundary="reflect", backend=None, dtype=None):
    """Convolve an image with a PSF by FFT, output the size of the input.

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
        An (M, N, 4) image is RGBA: its alpha channel is returned untouched.
    psf : (h, w) array
        Normalized to sum 1 first (:func:`gpudeblur.psf.from_array`), as a PSF is.
    boundary : {'reflect', 'periodic', 'zero'}
        ``'reflect'`` equals :func:`scipy.ndimage.convolve` with
        ``mode='reflect'``; ``'zero'`` equals ``mode='constant'``;
        ``'periodic'`` equals ``mode='wrap'``.
    backend : {'auto', 'cuda', 'cpu'}, optional
    dtype : float32 or float64, optional

    Returns
    -------
    out : array of the caller's kind (NumPy or CuPy)
    """
    be = get_backend(backend, like=image)
    x, kind = as_backend_array(image, be, dtype)
    check_image(x, be.xp)
    x, alpha = split_alpha(x)
    k = _psf.from_array(psf)
    op = BlurOperator(k, x.shape[:2], be, x.dtype, boundary=boundary, taper=False)
    xc = to_channels_first(x)
    if boundary == "zero":
        y = op.forward(xc)
    else:
        y = op.crop(op.forward(op.extend(xc)))
    return to_output(join_alpha(from_channels_first(y.astype(x.dtype, copy=False), x.ndim), alpha, be.xp), kind)
