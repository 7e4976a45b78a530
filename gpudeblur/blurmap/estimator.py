"""Defocus blur map from a single image (Zhu, Cohen, Schiller, Milanfar, TIP 2013).

Pipeline (Sec. III):

1. luminance ``Y`` (BT.601) of the input, horizontal (or vertical)
   derivative ``g^∇`` (eq. 2), Gabor responses ``|g_i^∇[x]|²`` of the 60
   filters of :mod:`.gabor` (eq. 4) by overlap-save FFT convolution;
2. blur spectra ``σ_i²(r)`` of the PSF family (eq. 6), fitted by
   ``exp(polynomial in r)`` (eq. 12) and tabulated with derivatives; noise
   spectrum ``σ_n² σ_∇i²`` (eq. 7);
3. per pixel, the fixed-point search of Sec. III-A (eqs. 11 and 13) from
   the starts ``r0 = 1..8`` keeps the top 3 distinct local maxima
   ``(r̂_l, p̂_l)`` of the likelihood (5) — CUDA kernel or Numba twin;
4. coherent labeling (eqs. 14-16) by :func:`gpudeblur.blurmap.labeling.coherent_labeling`
   (optional; without it the map is the global maximum ``r̂_1``).

High-resolution input is processed in tiles of whole FFT blocks whose
working memory fits ``memory_budget``; a pixel's result does not depend
on the tiling (same FFT blocks, per-pixel search).

What ``p̂`` is
-------------
``likelihoods[..., l] = p̂_l / p̂_1 = exp(log p̂_l - log p̂_1)``: the
likelihood (5) at candidate ``l``, at its own optimal ``ŝ`` (eq. 9),
divided by that of the best candidate of the same pixel (so the best is 1;
a per-pixel factor does not change ``p̃_x`` of Sec. III-B, which is
normalized to sum 1). A missing candidate (fewer than 3 distinct maxima)
has ``p̂ = 0`` and repeats the best radius. ``log_likelihoods`` holds the
un-normalized ``log p̂ = -Σ_i (|g_i^∇|²/v_i + log v_i)`` (``v_i = ŝ σ_i²(r̂) +
σ_ni²``, the constant ``-F log π`` dropped).

Pixels without texture (``ŝ`` at its floor: the responses do not exceed
the noise spectrum) carry no blur information: their raw radius is set to
``max_radius`` (``r̂ = (max_radius,)*3``) with ``p̂ = (0, 0, 0)``, so the
coherent labeling gives them a uniform data cost and fills them from their
neighbours, and their ``confidence`` is 0. ``confidence = ŝ Σσ_i²(r̂) / (ŝ Σσ_i²(r̂) + Σσ_ni²)`` is the
fraction of the expected response power explained by the signal.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import threading
import time
from typing import Callable, NamedTuple

import numpy as np

from .._backend import Backend, as_backend_array, get_backend, to_output
from .._resample import block_mean, upsample_linear
from .._validate import check_choice, check_image, check_positive
from .gabor import (GaborBank, bank_size, block_plan, check_window, filter_spectra, gabor_bank, gabor_response_power,
                    padded_derivative, MAX_BLOCK)
from .likelihood import NONE, SearchSettings, device_lut, likelihood_search
from .spectra import BlurSpectrumLUT, PSFCalibration, build_lut, check_family

__all__ = ["BlurMapEstimator", "BlurMapResult", "estimate_blur_map", "measure_noise", "PSFCalibration", "SearchSettings"]

LABELING_METHODS = ("primal-dual", "alpha-expansion")
#: Gabor filters per inverse-FFT batch (fewer only when the memory budget
#: cannot hold them). Fixed, not sized from the budget, so that tiling never
#: changes the FFT batch and tiled results equal untiled ones bit for bit on
#: cuFFT as on pocketfft; 12 divides the 60 filters of the default window.
FILTER_BATCH = 12
#: Default working-memory budget on the CPU backend (bytes).
CPU_MEMORY_BUDGET = 1 << 30
#: Fraction of free device memory used by default on the cuda backend.
CUDA_MEMORY_FRACTION = 0.5
#: Default working-memory budget of the primal-dual labeling, both backends
#: (bytes; ``labeling_kwargs={'memory_budget': ...}`` overrides). About 3.6 kB
#: per pixel with 81 labels, so up to ~1.2 MP is labeled in one piece and
#: larger maps in overlapping tiles (see ``coherent_labeling``). A fixed
#: number, not a fraction of free memory, so that the tiling, hence the
#: result, does not depend on what else runs.
LABELING_MEMORY_BUDGET = 4 << 30

#: Lowest noise variance ``noise='auto'`` uses (the paper's simulations use 1e-6).
NOISE_FLOOR = 1e-6
#: Noise variances outside this range are refused: intensities live in [0, 1],
#: and below it the float32 tables underflow (1e-300 gave a map of NaN and 8s).
NOISE_RANGE = (1e-20, 1.0)
#: Spacing of the coherent labeling's radii (px): the paper's 0.1.
LABEL_STEP_PX = 0.1

#: ``estimate(scale='auto')``: images with at least this many pixels start at
#: the coarsest power-of-2 scale that keeps :data:`AUTO_SCALE_START_PIXELS`
#: pixels, if that is coarser than :data:`AUTO_SCALE_SMALL_START` (every
#: image starts there, as the window allows).
AUTO_SCALE_MIN_PIXELS = 2_000_000
#: ``scale='auto'`` starts a large image at the coarsest power-of-2 scale whose
#: image still has this many pixels (4 MP: scale 4, 0.26 MP, radii to 32 px;
#: 12 MP: scale 4, 0.75 MP; 24 MP: scale 8, 0.38 MP) ...
AUTO_SCALE_START_PIXELS = 250_000
#: ... and a smaller one at this scale, or the coarsest below it whose image
#: still holds the analysis window (a 640×431 photo: 4; 192²: 2 with the
#: pipeline's 51 px window). Blur beyond scale 1's range (``max_radius``, 8
#: px) is not seen there, it reads as small: CUHK 0284's background, ~21 px
#: at scale 4, reads 0.6 px at scale 1 and 5.6 px at scale 2. The look at
#: scale 4 costs ~4 % of the full-resolution read (1.5–3 s at 1 MP on 2 CPU
#: cores) and changes nothing where the blur fits scale 1 (docs/STATUS.md,
#: session 17); before session 17 small images were read at scale 1 only.
AUTO_SCALE_SMALL_START = 4
#: From the scale read, the map goes on to the finest scale whose range
#: (``max_radius · scale``) holds this quantile of it, if that is finer (a
#: map read at 4 whose quantile is 7 px is read again at 1, not at 2 then 1):
#: 512² scenes whose radii reach 8, 12 and 16 px (90th percentiles 5-7.4,
#: 8-11, 10-14.6 px at scale 2) deblur best at scale 1, 1-2 and 2
#: (docs/STATUS.md, session 13).
AUTO_SCALE_QUANTILE = 0.9
#: Whether the map is read at full resolution is decided by the quantile of
#: its *informed* pixels: those whose ``confidence`` (the signal fraction of
#: their response power) is at least this. A region without texture above
#: the noise (a clear sky in a noisy photo) fits every radius and reads
#: large; the estimate there says nothing about the blur, yet it drove the
#: scale: a sharp 192² photo of a rocket against the sky at noise σ = 0.02
#: was read at scale 2 (quantile 15.8 px, its 17 % of sky under 0.1), where
#: the rocket reads 3.2 px instead of 2.2 and the deblurred image fell 6 dB
#: below its input (docs/STATUS.md, session 30). If the informed pixels'
#: quantile exceeds ``max_radius`` (the blur does not fit full resolution),
#: the quantile of all pixels chooses between the coarse scales, as before:
#: there the informed rule sent large photos with smooth areas from scale 4
#: to 2 for no gain on average (bench_large: −0.22 / +0.25 dB at 4 MP) and ~5x
#: the map's time (a 12 MP photo's map 23 → 136 s on 2 CPU cores).
AUTO_SCALE_MIN_CONFIDENCE = 0.1
#: If fewer than this fraction of the pixels are informed, the quantile is
#: taken over all of them (as before session 30).
AUTO_SCALE_MIN_INFORMED = 0.1

_LUMA = (0.299, 0.587, 0.114)
#: Guards the estimators' first builds of their filter bank and LUT (rare, so one lock for all;
#: a lock attribute would stop the estimator from pickling)
_BUILD_LOCK = threading.Lock()


class BlurMapResult(NamedTuple):
    """Everything :meth:`BlurMapEstimator.estimate` computes (caller's array type).

    radius : (M, N) float
        Blur radius map in pixels (after labeling when enabled).
    raw_radius : (M, N) float
        Global maximum ``r̂_1`` per pixel (before labeling).
    candidates : (M, N, 3) float
        ``r̂_1, r̂_2, r̂_3`` (sorted by likelihood, descending).
    likelihoods : (M, N, 3) float
        ``p̂_l / p̂_1`` (see the module docstring).
    log_likelihoods : (M, N, 3) float
        ``log p̂_l`` (``-1e30`` for a missing candidate).
    confidence : (M, N) float
        Signal fraction of the response power at ``r̂_1`` in [0, 1); 0 without texture.
    info : dict
        ``noise`` (the noise variance used), ``timings`` (seconds per
        stage), ``tiles``, ``labeling`` info, ...
    """

    radius: object
    raw_radius: object
    candidates: object
    likelihoods: object
    log_likelihoods: object
    confidence: object
    info: dict


def _check_variance(value, name: str) -> float:
    v = check_positive(value, name)
    lo, hi = NOISE_RANGE
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be a variance of intensities in [0, 1], between {lo:g} and {hi:g}, got {v:g}")
    return v


def _luminance(x, xp):
    if x.ndim == 2:
        return x
    if x.shape[2] >= 3:
        w = _LUMA
        return (w[0] * x[..., 0] + w[1] * x[..., 1] + w[2] * x[..., 2]).astype(x.dtype, copy=False)
    return x[..., 0]


def _measured_noise(lum, be: Backend, floor: float) -> float:
    from ..restoration import estimate_noise

    return max(float(estimate_noise(lum, backend=be)) ** 2, floor)


def measure_noise(image, *, floor: float = NOISE_FLOOR, backend=None, dtype=np.float32) -> float:
    """Noise variance ``σ_n²`` the estimator uses for ``image`` with ``noise='auto'``.

    ``max(σ̂², floor)`` with ``σ̂`` from :func:`gpudeblur.estimate_noise`
    (Immerkær) of the luminance the estimator analyses, so it is right
    whether the colour channels' noise is independent (``σ̂ ≈ 0.67σ`` on the
    luminance) or shared (``σ̂ ≈ σ``). Measured in ``dtype`` (the estimator's
    working dtype), so passing the value back as ``noise=`` gives the same map.
    """
    be = get_backend(backend, like=image)
    x, _ = as_backend_array(image, be, np.dtype(dtype))
    check_image(x, be.xp)
    return _measured_noise(_luminance(x, be.xp), be, check_positive(floor, "floor"))


def _resolve_noise(noise, image, floor, backend, dtype) -> float:
    """``noise`` itself, or :func:`measure_noise` of ``image`` when it is ``'auto'``."""
    if isinstance(noise, str) and noise == "auto":
        return measure_noise(image, floor=floor, backend=backend, dtype=dtype)
    return float(noise)


class BlurMapEstimator:
    """Holds the settings and reusable state (filter bank, LUTs, FFT block spectra, kernels).

    Parameters
    ----------
    window : int
        Odd analysis window side ``N`` (paper: 41).
    noise : float or 'auto'
        Noise variance ``σ_n²`` for intensities in [0, 1] (paper: 1e-4 for
        real photos, 1e-6 in its simulations). ``'auto'``: measured on each
        image's luminance (:func:`measure_noise`, at least ``noise_floor``);
        the value used is :meth:`noise_for` of the image and ``info['noise']``
        of a ``return_candidates=True`` result. (With ``'auto'``, ``lut.noise``
        holds the unit noise spectrum, scaled per image.)
    noise_floor : float
        Lower bound of the measured noise with ``noise='auto'`` (1e-6).
    compression_noise : float
        Variance of an error the image's lossy compression added, which the
        measurement cannot see (0: none). With ``noise='auto'`` the noise is
        taken at least this, divided by ``scale²`` when the map is read at
        ``1/scale`` of the resolution (block means average the error out
        like white noise). The all-in-focus pipeline passes half of
        :func:`gpudeblur.io.jpeg_compression_noise` for a JPEG.
    max_radius : float
        Largest blur scale ``r`` (paper: 8). The search domain is ``[0, max_radius]``;
        at most half the window (a wider blur cannot be measured in it).
    psf_family : {'disc', 'gaussian'}, callable or PSFCalibration
        Single-parameter PSF model ``h(r)``.
    starts : iterable of float
        Initial radii of the fixed-point search (paper: 1, 2, ..., 8).
    labeling : {'primal-dual', 'alpha-expansion'} or None
        Coherent labeling method (eqs. 14-16); ``None`` returns the raw map.
    vertical_derivative : bool
        Use the vertical derivative ``[1, -1]ᵀ`` instead of the horizontal one.
    memory_budget : int, optional
        Bytes of working memory of the candidate stages (default: half the
        memory available on cuda, :meth:`Backend.available_memory`, which
        honours a CuPy pool limit; 1 GiB on the CPU). Larger images are
        processed in tiles (bit-identical to untiled as long as the budget
        holds :data:`FILTER_BATCH` filters per FFT batch, which any budget
        of more than a few tens of MB does). The labeling has its
        own budget, :data:`LABELING_MEMORY_BUDGET`.
    backend : {'auto', 'cuda', 'cpu'}, optional
    dtype : float32 (default) or float64
    settings : SearchSettings, optional
        Tolerances of the per-pixel search.
    lut_step, fit_degree, sample_step : float, int, float
        LUT resolution (0.01), degree of the exp-polynomial fit (20) and the
        ``r`` step of the PSF samples that are fitted (0.1).
    labeling_kwargs : dict, optional
        Extra arguments of ``coherent_labeling`` (``lambda0``, ``sigma_lambda``, ...).
    fft_block : int, optional
        Largest overlap-save FFT block side (default 512, or the next power
        of two ≥ 2 × ``window`` for a wider window).
    timings : bool
        Record device-synchronized stage times in ``info['timings']``.
    """

    def __init__(self, window: int = 41, noise=1e-4, max_radius: float = 8.0, psf_family="disc",
                 starts=range(1, 9), labeling: str | None = "primal-dual", vertical_derivative: bool = False,
                 memory_budget: int | None = None, backend=None, dtype=np.float32,
                 settings: SearchSettings | None = None, lut_step: float = 0.01, fit_degree: int = 20,
                 sample_step: float = 0.1, labeling_kwargs: dict | None = None, fft_block: int | None = None,
                 timings: bool = False, noise_floor: float = NOISE_FLOOR, compression_noise: float = 0.0):
        self.window = check_window(window)
        if isinstance(noise, str):
            if noise != "auto":
                raise ValueError(f"noise must be a positive number or 'auto', got {noise!r}")
            self.noise = "auto"
        else:
            self.noise = _check_variance(noise, "noise")
        self.noise_floor = _check_variance(noise_floor, "noise_floor")
        self.compression_noise = 0.0 if compression_noise == 0 else _check_variance(compression_noise,
                                                                                    "compression_noise")
        self.max_radius = check_positive(max_radius, "max_radius")
        if self.max_radius > self.window / 2:  # also keeps the label set and its tables finite
            raise ValueError(f"max_radius {self.max_radius:g} exceeds half the {self.window} px analysis window: a blur "
                             "that wide cannot be measured in it (use a larger window, or read the map at a coarser scale)")
        st = np.asarray(list(starts), dtype=np.float64).ravel()
        if st.size == 0 or not np.all(np.isfinite(st)):
            raise ValueError("starts must be a non-empty sequence of finite radii")
        self.starts = st
        if labeling is not None:
            check_choice(labeling, LABELING_METHODS, "labeling")
        self.labeling = labeling
        self.vertical_derivative = bool(vertical_derivative)
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Real)
                                          or not math.isfinite(float(memory_budget)) or int(memory_budget) <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        self.memory_budget = None if memory_budget is None else int(memory_budget)
        self.backend = backend
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.settings = settings or SearchSettings()
        self.labeling_kwargs = dict(labeling_kwargs or {})
        if self.labeling_kwargs:  # a misspelt keyword fails now, not after the minutes of the candidate stages
            allowed = set(inspect.signature(_import_labeling("coherent_labeling")).parameters) - {
                "r_cand", "p_cand", "image", "method", "backend"}
            unknown = sorted(set(self.labeling_kwargs) - allowed)
            if unknown:
                raise ValueError(f"unknown labeling_kwargs {', '.join(map(repr, unknown))}; "
                                 f"coherent_labeling takes {', '.join(sorted(allowed))}")
        if labeling is not None and "labels" not in self.labeling_kwargs and self.max_radius < LABEL_STEP_PX:
            raise ValueError(f"max_radius must be at least {LABEL_STEP_PX:g} px (the labeling's step) "
                             f"with a labeling, got {self.max_radius:g}")
        if fft_block is None:  # MAX_BLOCK, or the next power of two that holds a wide window
            fft_block = max(MAX_BLOCK, 1 << (2 * self.window - 1).bit_length())
        if isinstance(fft_block, bool) or int(fft_block) < 2 * self.window:
            raise ValueError(f"fft_block must be an integer >= 2 * window ({2 * self.window}), got {fft_block!r}")
        self.fft_block = int(fft_block)
        self.timings = bool(timings)
        lut_step = check_positive(lut_step, "lut_step")
        sample_step = check_positive(sample_step, "sample_step")
        if isinstance(fit_degree, bool) or not isinstance(fit_degree, (int, np.integer)) or fit_degree < 1:
            raise ValueError(f"fit_degree must be an integer >= 1, got {fit_degree!r}")
        check_family(psf_family, self.max_radius)  # a bad family fails here, not at the first image (no PSF built)
        # with noise='auto' the LUT holds the unit noise spectrum, scaled per image
        self._lut_args = dict(psf_family=psf_family, max_radius=self.max_radius,
                              noise=1.0 if self.noise == "auto" else self.noise, vertical=self.vertical_derivative,
                              degree=int(fit_degree), step=lut_step, sample_step=sample_step)
        self._bank: GaborBank | None = None
        self._lut: BlurSpectrumLUT | None = None
        self._dev_luts: dict = {}
        self._spectra: dict = {}
        #: the family as given (``estimate(scale=...)`` accepts 'disc' and 'gaussian' only)
        self.psf_family = psf_family

    # -- the filter bank and the LUT, built on first use ----------------------
    # (seconds for a wide window: 50 s and ~12 GB at 301 px; an image smaller
    # than the window, or a budget too small for the bank, is refused first)
    @property
    def bank(self) -> GaborBank:
        """The Gabor filter bank of eq. (3) for :attr:`window`."""
        if self._bank is None:
            with _BUILD_LOCK:  # two threads on a fresh estimator build it once
                if self._bank is None:
                    self._bank = gabor_bank(self.window)
        return self._bank

    @property
    def lut(self) -> BlurSpectrumLUT:
        """Blur-spectrum LUT of the PSF family (eqs. 6, 7, 12)."""
        if self._lut is None:
            bank = self.bank
            with _BUILD_LOCK:
                if self._lut is None:
                    self._lut = build_lut(bank, **self._lut_args)
        return self._lut

    # -- cached device state ------------------------------------------------
    def _device_lut(self, be: Backend, dtype, noise: float):
        key = (be.name, _device_id(be), np.dtype(dtype).str, noise)
        if key not in self._dev_luts:
            if len(self._dev_luts) > 4:
                self._dev_luts.clear()
            lut = self.lut
            if self.noise == "auto":  # σ_n² times the unit spectrum: what build_lut(noise=σ_n²) gives
                lut = dataclasses.replace(lut, noise=noise * lut.noise)
            dl = device_lut(lut, be, dtype)
            ssum = be.xp.asarray(lut.val.sum(axis=1).astype(dtype))
            grid = be.xp.asarray((lut.lo + lut.step * np.arange(lut.nr)).astype(dtype))
            self._dev_luts[key] = (dl, ssum, grid, float(lut.noise.sum()))
        return self._dev_luts[key]

    def noise_for(self, image, backend=None) -> float:
        """The noise variance used for ``image``: ``noise``, or measured when it is ``'auto'``."""
        return _resolve_noise(self.noise, image, self._floor(), backend if backend is not None else self.backend,
                              self.dtype)

    def _filter_spectra(self, be: Backend, block, dtype):
        cdt = np.complex64 if np.dtype(dtype) == np.float32 else np.complex128
        key = (be.name, _device_id(be), tuple(block), np.dtype(cdt).str)
        if key not in self._spectra:
            if len(self._spectra) > 4:
                self._spectra.clear()
            self._spectra[key] = filter_spectra(self.bank, block, be.xp, cdt)
        return self._spectra[key]

    def _budget(self, be: Backend) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        if be.name == "cuda":
            return int(CUDA_MEMORY_FRACTION * be.available_memory())
        return CPU_MEMORY_BUDGET

    # -- stages -----------------------------------------------------------
    def _floor(self, analysis_scale: int = 1) -> float:
        """Lower bound of a measured noise for an image read at ``1/analysis_scale``."""
        return max(self.noise_floor, self.compression_noise / analysis_scale**2)

    def candidates(self, image, backend=None, progress: Callable | None = None, *, analysis_scale: int = 1):
        """Stages 1-3: top-3 candidates per pixel, on the backend.

        ``analysis_scale``: ``image`` is a photo reduced this many times
        (block means), which divides a ``compression_noise`` floor by its
        square (:meth:`estimate` with ``scale`` sets it).

        Returns ``(be, x, kind, r, logl, s, info)``: ``x`` the validated
        image on the backend, ``kind`` the caller's array type (for
        :func:`~gpudeblur._backend.to_output`), ``r, logl, s`` of shape
        ``(3, M, N)`` (radii, log-likelihoods, ``ŝ``; see
        :func:`~gpudeblur.blurmap.likelihood.likelihood_search`).
        """
        be = get_backend(backend if backend is not None else self.backend, like=image)
        xp = be.xp
        x, kind = as_backend_array(image, be, self.dtype)
        check_image(x, xp, unit_range=True)
        M, N = int(x.shape[0]), int(x.shape[1])
        if M < self.window or N < self.window:
            raise ValueError(self._too_small(M, N))
        dt = x.dtype
        info: dict = {"timings": {}, "backend": be.name}
        tm = info["timings"]
        clock = _Clock(be, self.timings)

        clock.start()
        lum = _luminance(x, xp)
        noise = self.noise if self.noise != "auto" else _measured_noise(lum, be, self._floor(analysis_scale))
        info["noise"] = noise
        tm["noise"] = clock.stop()  # luminance and, with noise='auto', its noise
        plan = block_plan((M, N), self.window, self.fft_block)
        F = bank_size(self.window)
        self._tiling(plan, F, dt, be)  # a budget too small is refused before the bank is built
        dl, _ssum, _grid, _nsum = self._device_lut(be, dt, noise)
        spectra = self._filter_spectra(be, plan.block, dt)
        # the tiles proper: on a GPU the budget is a share of the memory left once the tables are there
        tile_rows, tile_cols, fbatch = self._tiling(plan, F, dt, be)

        clock.start()
        D = padded_derivative(lum, self.window, self.vertical_derivative, xp)
        Md = plan.nblocks[0] * plan.valid[0] + plan.halo
        Nd = plan.nblocks[1] * plan.valid[1] + plan.halo
        D = xp.pad(D, ((0, Md - D.shape[0]), (0, Nd - D.shape[1])))
        tm["derivative"] = clock.stop()

        # -- tiles of whole blocks within the budget ------------------------
        info["tiles"] = len(tile_rows) * len(tile_cols)
        info["tile_blocks"] = (len(tile_rows[0]), len(tile_cols[0]))
        info["fft_block"] = plan.block
        info["filter_batch"] = fbatch
        r_all = xp.empty((3, M, N), dtype=dt)
        l_all = xp.empty((3, M, N), dtype=dt)
        s_all = xp.empty((3, M, N), dtype=dt)
        t_gabor = 0.0
        t_like = 0.0
        ntiles = info["tiles"]
        done = 0
        Vm, Vn = plan.valid
        for rows in tile_rows:
            for cols in tile_cols:
                y0, x0 = rows[0] * Vm, cols[0] * Vn
                th = min(len(rows) * Vm, M - y0)
                tw = min(len(cols) * Vn, N - x0)
                clock.start()
                power = xp.empty((F, th, tw), dtype=dt)
                gabor_response_power(D, spectra, plan, rows, cols, be, power, fbatch)
                t_gabor += clock.stop()
                clock.start()
                outs = likelihood_search(power.reshape(F, th * tw), dl, self.starts, noise, be, self.settings)
                del power
                for a, o in zip((r_all, l_all, s_all), outs):
                    a[:, y0 : y0 + th, x0 : x0 + tw] = o.reshape(3, th, tw)
                del outs
                t_like += clock.stop()
                done += 1
                if progress is not None:
                    progress("likelihood", done, ntiles)
        tm["gabor"] = t_gabor
        tm["likelihood"] = t_like
        info["fft_count"] = {
            "forward": plan.nblocks[0] * plan.nblocks[1],
            "inverse": plan.nblocks[0] * plan.nblocks[1] * F,
            "size": plan.block,
        }
        return be, x, kind, r_all, l_all, s_all, info

    def _tiling(self, plan, F, dt, be):
        """Tiles (lists of block-row and block-column ranges) and the filter batch."""
        budget = self._budget(be)
        isz = np.dtype(dt).itemsize
        csz = 2 * isz
        Lm, Ln = plan.block
        Vm, Vn = plan.valid
        fixed = F * Lm * Ln * csz  # filter spectra on the block grid
        fixed += (plan.nblocks[0] * Vm + plan.halo) * (plan.nblocks[1] * Vn + plan.halo) * isz  # padded derivative
        per_fft = 2 * Lm * Ln * csz  # product and inverse FFT of one filter on one block
        per_px = (F + 9 + 9) * isz  # powers + kernel outputs + copies into the full maps
        avail = budget - fixed - Lm * Ln * csz
        # the filter batch does not grow with the budget: cuFFT does not promise
        # the same bits for different batch counts, and tiled and untiled runs
        # must agree exactly (it shrinks only when the budget cannot hold it)
        fb = max(1, min(F, FILTER_BATCH, int((avail - Vm * Vn * per_px) // per_fft))) if avail > 0 else 0
        need_min = fixed + Lm * Ln * csz + per_fft + Vm * Vn * per_px
        if fb < 1 or budget < need_min:
            raise ValueError(
                f"memory_budget {budget} bytes is too small: this image needs at least {need_min} bytes "
                f"({need_min / 1e9:.2g} GB: FFT block {Lm}x{Ln}, {F} filters of the {self.window} px window); use a "
                "smaller window or a larger memory_budget (memory_budget=; AllInFocus(estimator_options="
                "{'memory_budget': ...}); gpudeblur blurmap --memory-budget)"
            )
        avail_px = avail - fb * per_fft
        nb_px = max(1, int(avail_px // (Vm * Vn * per_px)))
        nbm, nbn = plan.nblocks
        # whole block rows first (wide tiles), then fewer columns
        if nb_px >= nbn:
            tm_, tn_ = min(nbm, nb_px // nbn), nbn
        else:
            tm_, tn_ = 1, nb_px
        tile_rows = [range(i, min(nbm, i + tm_)) for i in range(0, nbm, tm_)]
        tile_cols = [range(j, min(nbn, j + tn_)) for j in range(0, nbn, tn_)]
        return tile_rows, tile_cols, fb

    def estimate(self, image, *, scale: int = 1, return_candidates: bool = False, return_info: bool = False,
                 return_confidence: bool = False, backend=None, progress: Callable | None = None):
        """Blur radius map of ``image`` (``(M, N)`` gray or ``(M, N, 3)`` RGB in [0, 1]).

        Returns the ``(M, N)`` radius map (pixels, working dtype); with
        ``return_info=True`` the pair ``(radius map, info)`` (the ``info``
        dict of a :class:`BlurMapResult`: noise used, timings, tiles, ...,
        without keeping the candidate arrays); with
        ``return_candidates=True`` a :class:`BlurMapResult` (which holds
        ``info`` too; asking for both is an error). ``return_confidence=True``
        appends the ``(M, N)`` confidence map (the signal fraction of each
        pixel's response power, 0 where there is no texture above the noise;
        a scaled read's interpolated like its radii): ``(radius map,
        confidence)`` or ``(radius map, info, confidence)``.

        ``scale`` (integer ≥ 1) analyses the image at ``1/scale`` of its
        resolution (means of ``scale × scale`` blocks; the noise, window and
        labels are those of that image), then interpolates the map back to
        ``(M, N)`` linearly and multiplies its radii by ``scale``: radii up
        to ``scale · max_radius`` at ``1/scale²`` of the cost, radii below
        about ``1.5 · scale`` px no longer resolved. For ``'disc'`` and
        ``'gaussian'`` families (a disc of radius ``r`` averaged over
        ``s × s`` blocks is close to a disc of ``r/s`` once ``r/s ≳ 1.5``);
        ``info['scale']`` and ``info['analysis_shape']`` record it. Not with
        ``return_candidates`` (the candidates live on the coarse grid).

        ``scale='auto'``: the map is read first at a coarse scale ``s``:
        :data:`AUTO_SCALE_SMALL_START` (4) or less, as the analysis window
        allows, and for images of :data:`AUTO_SCALE_MIN_PIXELS` or more the
        coarsest power of 2 that keeps :data:`AUTO_SCALE_START_PIXELS`
        pixels if that is coarser (8 from 16 MP). If the :data:`AUTO_SCALE_QUANTILE` quantile
        ``q`` of that map fits a finer scale's range (``q ≤ max_radius ·
        s/2``), the map is read again at the finest scale whose range holds
        ``q``, and so on; ``q`` is taken over the informed pixels
        (confidence at least :data:`AUTO_SCALE_MIN_CONFIDENCE`: a region
        without texture above the noise fits any radius) when that puts it
        within full resolution's range (``q ≤ max_radius``), otherwise over
        all pixels. So a blur within ``max_radius`` is read
        at full resolution (the coarse look costs a few %) and a larger one
        at the finest scale whose range holds it, at a fraction of the cost
        (at scale 1 a blur far beyond ``max_radius`` reads as *small*).
        ``info['scales']`` lists the scales read, ``info['scale_quantiles']``
        and ``info['scale_informed']`` each coarse read's ``q`` and the
        fraction of pixels it was taken over. A calibrated or callable PSF
        family is always read at scale 1.
        """
        if return_info and return_candidates:
            raise ValueError("return_info and return_candidates are exclusive: the BlurMapResult has .info")
        if return_confidence and return_candidates:
            raise ValueError("return_confidence and return_candidates are exclusive: the BlurMapResult has .confidence")
        auto = isinstance(scale, str) and scale == "auto"
        if not auto and (isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1):
            raise ValueError(f"scale must be an integer >= 1 or 'auto', got {scale!r}")
        if (auto or scale > 1) and return_candidates:
            raise ValueError("return_candidates needs scale=1 (the candidates of a scaled estimate live on its coarse grid)")
        if auto:
            return self._estimate_auto(image, return_info, backend, progress, return_confidence)
        if scale > 1:
            return self._estimate_scaled(image, int(scale), return_info, backend, progress, return_confidence)
        return self._estimate_at(image, return_candidates, return_info, backend, progress,
                                 with_confidence=return_confidence)

    def _estimate_at(self, image, return_candidates, return_info, backend, progress, analysis_scale=1,
                     with_confidence=False):
        """:meth:`estimate` at the image's own resolution (``analysis_scale``: see :meth:`candidates`;
        ``with_confidence``: the confidence map appended to the result)."""
        be, x, kind, r_all, l_all, s_all, info = self.candidates(image, backend=backend, progress=progress,
                                                                 analysis_scale=analysis_scale)
        xp = be.xp
        dt = x.dtype
        clock = _Clock(be, self.timings)
        clock.start()
        noise = info["noise"]
        dl, ssum, grid, nsum = self._device_lut(be, dt, noise)
        s_floor = self.settings.s_floor_rel * noise
        flat = s_all[0] <= dt.type(2 * s_floor)
        valid = l_all > dt.type(0.5 * NONE)
        lrel = xp.where(valid, l_all - l_all[:1], dt.type(0))
        p = xp.where(valid, xp.exp(xp.minimum(lrel, 0)), dt.type(0)).astype(dt, copy=False)
        S = xp.interp(r_all[0].ravel(), grid, ssum).reshape(r_all[0].shape).astype(dt, copy=False)  # 1-D x, as cupy.interp documents
        sig = s_all[0] * S
        conf = (sig / (sig + dt.type(nsum))).astype(dt, copy=False)
        rmax = dt.type(self.lut.lo + self.lut.step * (self.lut.nr - 1))
        r_c = xp.where(flat[None], rmax, r_all)
        p = xp.where(flat[None], dt.type(0), p)  # no information: uniform data cost in the labeling
        conf = xp.where(flat, dt.type(0), conf)
        info["no_texture_pixels"] = int(flat.sum())
        raw = r_c[0]
        info["timings"]["postprocess"] = clock.stop()
        cand = xp.ascontiguousarray(xp.moveaxis(r_c, 0, -1))
        pc = xp.ascontiguousarray(xp.moveaxis(p, 0, -1))
        radius = raw
        if self.labeling is not None:
            if progress is not None:
                progress("labeling", 0, 1)
            clock.start()
            coherent_labeling = _import_labeling("coherent_labeling")
            kw = dict(self.labeling_kwargs)
            kw.setdefault("labels", np.arange(0.0, self.max_radius + 1e-9, LABEL_STEP_PX))
            kw.setdefault("max_radius", self.max_radius)
            if self.labeling == "primal-dual":
                kw.setdefault("memory_budget", LABELING_MEMORY_BUDGET)
            guide = x[..., :3] if (x.ndim == 3 and x.shape[2] >= 3) else (x[..., 0] if x.ndim == 3 else x)
            radius, linfo = coherent_labeling(cand, pc, guide, method=self.labeling, backend=be, **kw)
            radius = be.xp.asarray(radius).astype(dt, copy=False)
            info["labeling"] = linfo
            info["timings"]["labeling"] = clock.stop()
            if progress is not None:
                progress("labeling", 1, 1)
        if not return_candidates:
            return _returned(radius, info, conf, kind, return_info, with_confidence)
        return BlurMapResult(
            radius=to_output(radius, kind),
            raw_radius=to_output(raw, kind),
            candidates=to_output(cand, kind),
            likelihoods=to_output(pc, kind),
            log_likelihoods=to_output(xp.ascontiguousarray(xp.moveaxis(l_all, 0, -1)), kind),
            confidence=to_output(conf, kind),
            info=info,
        )

    def _estimate_auto(self, image, return_info, backend, progress, with_confidence=False):
        be = get_backend(backend if backend is not None else self.backend, like=image)
        x, kind = as_backend_array(image, be, self.dtype)
        check_image(x, be.xp, unit_range=True)
        M, N = int(x.shape[0]), int(x.shape[1])
        s = 1
        if self._scalable():  # the coarser of the two rules' starts (2-4 MP: 4, not 2)
            while 2 * s <= AUTO_SCALE_SMALL_START and min(M, N) // (2 * s) >= self.window:
                s *= 2
            while M * N >= AUTO_SCALE_MIN_PIXELS and (-(-M // (2 * s))) * (-(-N // (2 * s))) >= \
                    AUTO_SCALE_START_PIXELS and min(M, N) // (2 * s) >= self.window:
                s *= 2
        tried, quantiles, informed = [], [], []
        while True:
            tried.append(s)
            if s == 1:
                radius, info, conf = self._estimate_at(x, False, True, be, progress, with_confidence=True)
                break
            radius, info, conf = self._estimate_scaled(x, s, True, be, progress, with_confidence=True)
            q, frac = _informed_quantile(radius, conf, be.xp)
            if q > self.max_radius:  # between coarse scales the quantile of all pixels decides, as before
                q, frac = float(be.xp.quantile(be.xp.asarray(radius), AUTO_SCALE_QUANTILE)), 1.0
            quantiles.append(q)
            informed.append(frac)
            if not math.isfinite(q) or q > self.max_radius * s / 2:  # (a NaN map would loop forever)
                break
            while s > 1 and q <= self.max_radius * s / 2:  # the finest scale whose range holds q
                s //= 2
        info["scale"] = s
        info["scales"] = tried
        info["scale_quantiles"] = quantiles  # per coarse read: the quantile that chose the next scale
        info["scale_informed"] = informed  # ... and the fraction of informed pixels it was taken over
        return _returned(radius, info, conf, kind, return_info, with_confidence)

    def _scalable(self) -> bool:
        return isinstance(self.psf_family, str) and self.psf_family in ("disc", "gaussian")

    def _too_small(self, M: int, N: int) -> str:
        return (f"image ({M}x{N}) is smaller than the analysis window ({self.window}x{self.window}); "
                "use a smaller window (window=; AllInFocus(estimator_options={'window': ...}); --window) "
                "or a larger image")

    def _check_scalable(self) -> None:
        if not self._scalable():
            raise ValueError(f"scale > 1 needs the 'disc' or 'gaussian' PSF family, got {self.psf_family!r} "
                             "(a calibrated family is measured at full resolution)")

    def check_scale(self, shape, scale) -> None:
        """Raise the one-line error :meth:`estimate` would raise for ``scale``
        on an image of ``shape``, before any work: ``scale`` is not an integer
        ≥ 1 or ``'auto'``, the image is smaller than the analysis window (at
        scale 1, where ``'auto'`` can always end), the family cannot be read
        coarser, or the reduced image is smaller than the window."""
        auto = isinstance(scale, str) and scale == "auto"
        if not auto and (isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1):
            raise ValueError(f"scale must be an integer >= 1 or 'auto', got {scale!r}")
        M, N = int(shape[0]), int(shape[1])
        if auto or scale == 1:
            if M < self.window or N < self.window:
                raise ValueError(self._too_small(M, N))
            return
        s = int(scale)
        self._check_scalable()
        m, n = -(-M // s), -(-N // s)
        if m < self.window or n < self.window:
            raise ValueError(f"image ({M}x{N}) at scale {s} is {m}x{n}, smaller than the analysis window "
                             f"({self.window}x{self.window}); use a smaller scale")

    def _estimate_scaled(self, image, s, return_info, backend, progress, with_confidence=False):
        """:meth:`estimate` at ``scale=s``; ``with_confidence``: the confidence appended, interpolated
        to the image's grid like the radius."""
        be = get_backend(backend if backend is not None else self.backend, like=image)
        xp = be.xp
        x, kind = as_backend_array(image, be, self.dtype)
        check_image(x, xp, unit_range=True)
        self.check_scale(x.shape, s)
        M, N = int(x.shape[0]), int(x.shape[1])
        small = block_mean(x, s, xp)
        radius, info, *conf = self._estimate_at(small, False, True, be, progress, analysis_scale=s,
                                                with_confidence=with_confidence)
        conf = upsample_linear(xp.asarray(conf[0]), s, (M, N), xp) if with_confidence else None
        radius = upsample_linear(radius, s, (M, N), xp) * radius.dtype.type(s)
        info["scale"] = s
        info["analysis_shape"] = tuple(int(v) for v in small.shape[:2])
        return _returned(radius, info, conf, kind, return_info, with_confidence)

    def segment(self, image, radius_map=None, *, candidates: BlurMapResult | None = None, tau: float = 2.0,
                lambda0: float = 1000.0, sigma_lambda: float = 0.04, method: str = "primal-dual", backend=None):
        """In-focus mask (True = in focus, eqs. 17-18) via :func:`~gpudeblur.blurmap.labeling.segment_in_focus`.

        ``radius_map`` and ``candidates`` (a :class:`BlurMapResult`) default
        to :meth:`estimate` of ``image``; with candidates the data term is
        eq. (18) on ``p̃`` built from them. Returns ``(mask, info)``.
        """
        if radius_map is None and candidates is None:
            candidates = self.estimate(image, return_candidates=True, backend=backend)
        if radius_map is None:
            radius_map = candidates.radius
        segment_in_focus = _import_labeling("segment_in_focus")
        kw = {}
        if candidates is not None:
            kw = dict(r_cand=candidates.candidates, p_cand=candidates.likelihoods)
        be = backend if backend is not None else self.backend
        return segment_in_focus(radius_map, image, tau=tau, lambda0=lambda0, sigma_lambda=sigma_lambda,
                                method=method, backend=be, **kw)


def _returned(radius, info, confidence, kind, return_info, with_confidence):
    """What :meth:`BlurMapEstimator.estimate` returns: the radius map, then ``info`` and the
    confidence map where asked for (a bare array when neither is)."""
    out = (to_output(radius, kind),) + ((info,) if return_info else ()) + \
        ((to_output(confidence, kind),) if with_confidence else ())
    return out if len(out) > 1 else out[0]


def _informed_quantile(radius, confidence, xp):
    """:data:`AUTO_SCALE_QUANTILE` of ``radius`` over the pixels whose ``confidence`` is at least
    :data:`AUTO_SCALE_MIN_CONFIDENCE` (all pixels if fewer than :data:`AUTO_SCALE_MIN_INFORMED` of
    them are), and the fraction it was taken over."""
    radius, confidence = xp.asarray(radius), xp.asarray(confidence)
    informed = confidence >= confidence.dtype.type(AUTO_SCALE_MIN_CONFIDENCE)
    frac = float(informed.mean())
    if frac < AUTO_SCALE_MIN_INFORMED:
        return float(xp.quantile(radius, AUTO_SCALE_QUANTILE)), 1.0
    return float(xp.quantile(radius[informed], AUTO_SCALE_QUANTILE)), frac


def _import_labeling(name: str):
    try:
        from . import labeling  # noqa: PLC0415  (lazy: written separately)
    except ImportError as exc:
        raise ImportError(
            f"gpudeblur.blurmap.labeling is not available ({exc}); pass labeling=None for the raw top-1 map"
        ) from exc
    return getattr(labeling, name)


def _device_id(be: Backend):
    return be.xp.cuda.Device().id if be.name == "cuda" else None


class _Clock:
    """Stage timer; synchronizes the device only when timings are requested."""

    def __init__(self, be: Backend, enabled: bool):
        self.be = be
        self.enabled = enabled
        self.t0 = 0.0

    def start(self):
        if self.enabled:
            self.be.synchronize()
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if not self.enabled:
            return float("nan")
        self.be.synchronize()
        return time.perf_counter() - self.t0


def estimate_blur_map(image, *, window: int = 41, noise=1e-4, max_radius: float = 8.0, psf_family="disc",
                      starts=range(1, 9), labeling: str | None = "primal-dual", vertical_derivative: bool = False,
                      memory_budget: int | None = None, return_candidates: bool = False, backend=None,
                      progress: Callable | None = None, dtype=np.float32, **kwargs):
    """Defocus blur map of one image (Zhu et al., TIP 2013).

    Parameters
    ----------
    image : (M, N) or (M, N, 3) array
        Gray or RGB image with intensities in [0, 1] (NumPy, CuPy or DLPack).
    window : int
        Odd analysis window side (41).
    noise : float or 'auto'
        Noise variance ``σ_n²`` (1e-4), or ``'auto'``: measured on the image
        (:func:`measure_noise`).
    max_radius : float
        Largest blur radius searched (8 pixels; at most ``window / 2``).
    psf_family : {'disc', 'gaussian'}, callable or PSFCalibration
    starts : iterable of float
        Starts of the fixed-point search (1..8).
    labeling : {'primal-dual', 'alpha-expansion'} or None
        Coherent labeling (eqs. 14-16); ``None``: global-maximum map.
    vertical_derivative : bool
    memory_budget : int, optional
        Working-memory bytes (tiles beyond it).
    return_candidates : bool
        Return a :class:`BlurMapResult` instead of the map alone.
    backend : {'auto', 'cuda', 'cpu'}, optional
    progress : callable(stage, done, total), optional
    dtype : float32 or float64
    **kwargs
        Further :class:`BlurMapEstimator` arguments (``settings``, ``labeling_kwargs``, ...).

    Returns
    -------
    radius : (M, N) array (caller's array type), or BlurMapResult

    References
    ----------
    X. Zhu, S. Cohen, S. Schiller, P. Milanfar, "Estimating spatially varying
    defocus blur from a single image", IEEE TIP 22(12), 2013.
    """
    est = BlurMapEstimator(window=window, noise=noise, max_radius=max_radius, psf_family=psf_family, starts=starts,
                           labeling=labeling, vertical_derivative=vertical_derivative, memory_budget=memory_budget,
                           backend=backend, dtype=dtype, **kwargs)
    return est.estimate(image, return_candidates=return_candidates, progress=progress)
