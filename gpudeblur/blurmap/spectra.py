"""Blur spectra, their exp-polynomial fit and look-up tables (Zhu et al. 2013, eqs. 6, 7, 12).

For a PSF family ``h(r)`` indexed by one scale ``r`` (disc radius, Gaussian
sigma, or a calibrated set of PSF samples), the blur spectrum of Gabor
filter ``t_i`` is ``σ_i²(r) = Σ_x |(h(r) ⊗ t_i)[x]|²`` (eq. 6), computed
exactly by Parseval on a zero-padded FFT grid. Each frequency's samples
are fitted by ``σ̃_i²(r) = exp(Σ_k α_{i,k} T_k(u))`` (eq. 12; ``T_k``
Chebyshev polynomials of ``u = 2 (r - r_lo)/(r_hi - r_lo) - 1``, which is
the same function space as powers of ``r`` but better conditioned), by
weighted least squares on ``log σ_i²``. The weights
``σ_i² / (σ_i² + floor · max_r σ_i²) + min_weight`` keep near-zeros of the
spectrum (where the noise term dominates the likelihood anyway) from
pulling the fit, while still constraining the tails.
The fit is resampled into look-up tables of value, first and second
derivative on a fine ``r`` grid (default step 0.01).

The noise spectrum is ``σ_ni² = σ_n² · Σ_x |∇ ⊗ t_i[x]|²`` (eq. 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .. import psf as _psf
from ..convolution import next_smooth_len
from .gabor import GaborBank, corner_fft2, derivative_kernel

__all__ = [
    "PSFCalibration",
    "BlurSpectrumLUT",
    "blur_spectra",
    "noise_spectrum",
    "fit_spectra",
    "build_lut",
    "resolve_family",
]


@dataclass(frozen=True)
class PSFCalibration:
    """User-supplied PSF samples ``psfs[k]`` at scales ``radii[k]`` (e.g. from a lens calibration)."""

    radii: Sequence[float]
    psfs: Sequence[np.ndarray]
    #: where it came from (:meth:`load` sets the file), for reports
    source: str | None = field(default=None, compare=False)

    def __post_init__(self):
        r = np.asarray(self.radii, dtype=np.float64)
        if r.ndim != 1 or r.size < 4:
            raise ValueError("PSFCalibration needs at least 4 radii")
        if len(self.psfs) != r.size:
            raise ValueError(f"PSFCalibration has {r.size} radii but {len(self.psfs)} PSFs")
        if not np.all(np.isfinite(r)) or np.any(np.diff(r) <= 0):
            raise ValueError("PSFCalibration radii must be finite and strictly increasing")
        if r[0] < 0:  # scales of blur-map radii, which are never negative
            raise ValueError(f"PSFCalibration radii must be non-negative (blur radii), got {r[0]:g}")
        for k, p in enumerate(self.psfs):  # 2-D, finite, non-negative, non-zero: fail here, naming the PSF
            _psf.from_array(p, name=f"PSFCalibration PSF {k} (r = {r[k]:g})")

    def __repr__(self) -> str:  # one line (the dataclass's repr prints every PSF: hundreds of lines in a message)
        r = np.asarray(self.radii, dtype=np.float64)
        src = f", source={self.source!r}" if self.source else ""
        return f"PSFCalibration({r.size} PSFs at radii {r[0]:g}..{r[-1]:g}{src})"

    def save(self, path, overwrite: bool = False) -> None:
        """Write ``radii`` (K,) and ``psfs`` (K, H, W; smaller PSFs zero-padded,
        centred) to an ``.npz`` file that :meth:`load` and the CLIs' ``--psf``
        read. Atomic, like every writer of the package; an existing file is
        replaced only with ``overwrite=True``."""
        import io as _io  # noqa: PLC0415
        import os  # noqa: PLC0415

        from ..io import _atomic_write  # noqa: PLC0415

        stack = _embed_centred([_psf.from_array(p, name="calibration PSF") for p in self.psfs])
        buf = _io.BytesIO()
        np.savez(buf, radii=np.asarray(self.radii, dtype=np.float64), psfs=stack)
        _atomic_write(os.fspath(path), buf.getvalue(), overwrite)

    @classmethod
    def load(cls, path) -> "PSFCalibration":
        """Read an ``.npz`` with ``radii`` (K,) and ``psfs`` (K, H, W)."""
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except FileNotFoundError:
            raise ValueError(f"PSF calibration not found: {path}") from None
        except OSError as exc:
            raise ValueError(f"cannot read PSF calibration {path}: {exc.strerror or exc}") from None
        if not magic:
            raise ValueError(f"cannot read PSF calibration {path}: empty file")
        if not magic.startswith((b"PK", b"\x93NUMPY")):  # (NumPy would call any other bytes "pickled data")
            raise ValueError(f"cannot read PSF calibration {path}: not an .npz archive (arrays 'radii' and 'psfs')")
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ValueError(f"PSF calibration not found: {path}") from None
        except Exception as exc:  # noqa: BLE001  (truncated or foreign bytes: zipfile's, pickle's, EOF errors)
            raise ValueError(f"cannot read PSF calibration {path}: {_reason(exc)}") from None
        if not hasattr(z, "files"):  # a plain .npy array
            raise ValueError(f"PSF calibration {path} must be an .npz archive with arrays 'radii' and 'psfs'")
        with z:
            if "radii" not in z.files or "psfs" not in z.files:
                raise ValueError(f"PSF calibration {path} needs arrays 'radii' and 'psfs', has {sorted(z.files)}")
            try:
                radii, psfs = np.asarray(z["radii"]), np.asarray(z["psfs"])
            except Exception as exc:  # noqa: BLE001  (a corrupt member: CRC, truncation, objects)
                raise ValueError(f"cannot read PSF calibration {path}: {_reason(exc)}") from None
        for name, a in (("radii", radii), ("psfs", psfs)):
            if a.dtype.kind not in "biuf":
                raise ValueError(f"PSF calibration {path}: {name} must hold real numbers, got {a.dtype} values")
        radii, psfs = radii.astype(np.float64), psfs.astype(np.float64)
        if radii.ndim != 1 or psfs.ndim != 3 or psfs.shape[0] != radii.size:
            raise ValueError(f"PSF calibration {path}: expected radii (K,) and psfs (K, H, W), "
                             f"got {radii.shape} and {psfs.shape}")
        try:
            return cls(list(radii), list(psfs), source=str(path))
        except ValueError as exc:
            raise ValueError(f"PSF calibration {path}: {exc}") from None

    def __call__(self, r: float) -> np.ndarray:
        """PSF at scale ``r``: linear interpolation between the two calibrated
        PSFs around it (both embedded, centres aligned at ``shape // 2``, in an
        odd support large enough for either; unit sum), clamped to the
        calibrated range. This makes a calibration a PSF family ``r -> psf``
        for the deconvolution too (:class:`gpudeblur.spatially_varying.SpatiallyVaryingBlur`,
        whose hat weights interpolate linearly in ``r`` as well)."""
        radii = np.asarray(self.radii, dtype=np.float64)
        r = float(r)
        if not np.isfinite(r):
            raise ValueError(f"PSF scale must be finite, got {r!r}")
        k = int(np.clip(np.searchsorted(radii, r, side="right") - 1, 0, radii.size - 2))
        t = float(np.clip((r - radii[k]) / (radii[k + 1] - radii[k]), 0.0, 1.0))
        a, b = _embed_centred([_psf.from_array(self.psfs[i], name="calibration PSF") for i in (k, k + 1)])
        out = (1.0 - t) * a + t * b if t > 0 else a
        return out / out.sum()


def _reason(exc: BaseException) -> str:
    """An exception in one line (its message, or its type when it has none)."""
    text = " ".join(str(exc).split())
    if "pickle" in text:  # NumPy's words suggest loading it unsafely
        return "it holds Python objects (pickled data), not numeric arrays"
    return text if text else type(exc).__name__


def _embed_centred(ks) -> np.ndarray:
    """Stack 2-D PSFs in one odd support large enough for each, centres
    (``shape // 2``, as everywhere in gpudeblur) aligned; zero-padded."""
    H = max(k.shape[0] for k in ks) | 1
    W = max(k.shape[1] for k in ks) | 1
    out = np.zeros((len(ks), H, W))
    for n, k in enumerate(ks):
        i, j = (H - k.shape[0]) // 2, (W - k.shape[1]) // 2
        out[n, i:i + k.shape[0], j:j + k.shape[1]] = k
    return out


def check_family(psf_family, max_radius: float) -> None:
    """What :func:`resolve_family` refuses, without building any PSF: an unknown
    family, or a calibration whose radii end short of ``max_radius``."""
    if isinstance(psf_family, PSFCalibration):
        r_end = float(np.asarray(psf_family.radii, dtype=np.float64)[-1])
        if r_end < max_radius - 1e-9:
            raise ValueError(f"PSFCalibration radii end at {r_end:g} < max_radius {max_radius:g}: pass max_radius "
                             f"<= {r_end:g} (CLI: --max-radius)")
    elif not (psf_family.lower() in ("disc", "gaussian") if isinstance(psf_family, str) else callable(psf_family)):
        raise ValueError(f"unknown psf_family {psf_family!r}; expected 'disc', 'gaussian', a callable or a PSFCalibration")


def resolve_family(psf_family, max_radius: float, sample_step: float = 0.1):
    """``(radii, psf_fn_or_list, lo, hi)`` for a family spec.

    ``'disc'`` (:func:`gpudeblur.psf.disc`, ``r`` = radius), ``'gaussian'``
    (:func:`gpudeblur.psf.gaussian`, ``r`` = sigma), a callable ``r -> psf``
    or a :class:`PSFCalibration` (its radii must reach ``max_radius``).
    """
    check_family(psf_family, max_radius)
    if isinstance(psf_family, PSFCalibration):
        r = np.asarray(psf_family.radii, dtype=np.float64)
        # resampled on the analytic families' grid (PSFs interpolated linearly in r):
        # the exp(polynomial) fit of eq. 12 needs that many samples (17 samples of
        # a 0.5 px calibration under a degree-20 fit gave values of 1e155)
        lo = float(r[0])
        n = int(np.floor((max_radius - lo) / sample_step + 1e-9))
        grid = lo + sample_step * np.arange(n + 1)
        if grid[-1] < max_radius - 1e-9:
            grid = np.append(grid, max_radius)
        return grid, [psf_family(float(g)) for g in grid], lo, float(max_radius)
    if isinstance(psf_family, str):
        fn: Callable = _psf.disc if psf_family.lower() == "disc" else _psf.gaussian
    else:
        fn = psf_family
    n = int(round(max_radius / sample_step))
    radii = np.linspace(0.0, n * sample_step, n + 1)
    if radii[-1] < max_radius - 1e-9:
        radii = np.append(radii, max_radius)
    return radii, [_psf.from_array(fn(float(r)), name=f"psf_family({r:g})") for r in radii], 0.0, float(max_radius)


def _energy_through(kernels: list[np.ndarray], bank: GaborBank) -> np.ndarray:
    """``Σ_x |(k ⊗ t_i)[x]|²`` for every kernel and filter, shape ``(K, F)`` (Parseval)."""
    kmax = max(max(k.shape) for k in kernels)
    L = next_smooth_len(bank.window + kmax - 1)
    T2 = np.abs(corner_fft2(bank.filters.astype(np.complex128, copy=False), (L, L))) ** 2
    out = np.empty((len(kernels), bank.size))
    for j, k in enumerate(kernels):
        H2 = np.abs(corner_fft2(np.asarray(k, dtype=np.float64), (L, L))) ** 2
        out[j] = np.tensordot(T2, H2, axes=([1, 2], [0, 1])) / (L * L)
    return out


def blur_spectra(psfs: list[np.ndarray], bank: GaborBank) -> np.ndarray:
    """Blur spectra ``σ_i²(r_k)`` of eq. (6), shape ``(K, F)``."""
    return _energy_through(psfs, bank)


def noise_spectrum(bank: GaborBank, noise: float, vertical: bool = False) -> np.ndarray:
    """``σ_ni² = σ_n² Σ_x |∇ ⊗ t_i[x]|²`` of eq. (7), shape ``(F,)``."""
    return noise * _energy_through([derivative_kernel(vertical)], bank)[0]


def fit_spectra(radii, spectra, lo, hi, degree: int = 20, floor: float = 1e-3, min_weight: float = 0.02) -> np.ndarray:
    """Chebyshev coefficients ``(degree + 1, F)`` of ``log σ̃_i²`` (eq. 12), weighted LS."""
    r = np.asarray(radii, dtype=np.float64)
    S = np.maximum(np.asarray(spectra, dtype=np.float64), 1e-300)
    deg = int(min(degree, r.size - 1))
    u = 2 * (r - lo) / (hi - lo) - 1
    V = np.polynomial.chebyshev.chebvander(u, deg)
    logS = np.log(S)
    w = S / (S + floor * S.max(axis=0)) + min_weight if floor > 0 else np.ones_like(S)
    coef = np.empty((deg + 1, S.shape[1]))
    for i in range(S.shape[1]):
        coef[:, i] = np.linalg.lstsq(V * w[:, i, None], logS[:, i] * w[:, i], rcond=None)[0]
    return coef


def eval_fit(coef, r, lo, hi):
    """Value, first and second ``r``-derivative of ``exp(Chebyshev series)``, each ``(len(r), F)``."""
    r = np.asarray(r, dtype=np.float64)
    u = 2 * (r - lo) / (hi - lo) - 1
    du = 2.0 / (hi - lo)
    C = np.polynomial.chebyshev
    p = C.chebval(u, coef).T if coef.ndim == 2 else C.chebval(u, coef)
    c1 = C.chebder(coef, axis=0)
    c2 = C.chebder(coef, 2, axis=0)
    p1 = C.chebval(u, c1).T * du
    p2 = C.chebval(u, c2).T * du * du
    v = np.exp(p)
    return v, v * p1, v * (p2 + p1 * p1)


@dataclass(frozen=True)
class BlurSpectrumLUT:
    """Look-up tables of ``σ̃_i²(r)`` and its derivatives on ``r = lo + k · step``.

    Attributes
    ----------
    val, d1, d2 : (K, F) float64 arrays
        Value, first and second derivative in ``r``; row ``k`` holds all
        filters at ``r_k`` (contiguous per ``r`` for the kernels).
    lo, hi, step : float
    noise : (F,) float64 array
        Noise spectrum ``σ_ni²`` (eq. 7).
    samples_r, samples : arrays
        The sampled spectra the fit was made from (``(S,)``, ``(S, F)``).
    coef : ((degree + 1), F) array
        Chebyshev coefficients of the fit.
    """

    val: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    lo: float
    hi: float
    step: float
    noise: np.ndarray
    samples_r: np.ndarray
    samples: np.ndarray
    coef: np.ndarray

    @property
    def nr(self) -> int:
        return int(self.val.shape[0])

    def fit_error(self) -> dict:
        """Errors of the fit at the samples: max/median ``|log σ̃² - log σ²|``
        and max ``|σ̃² - σ²| / max_r σ²`` (per filter)."""
        v, _, _ = eval_fit(self.coef, self.samples_r, self.lo, self.hi)
        S = self.samples
        lg = np.abs(np.log(v) - np.log(np.maximum(S, 1e-300)))
        lin = np.abs(v - S) / S.max(axis=0)
        return {"log_max": float(lg.max()), "log_median": float(np.median(lg)), "lin_rel_max": float(lin.max()),
                "lin_rel_median": float(np.median(lin))}


def build_lut(bank: GaborBank, psf_family="disc", max_radius: float = 8.0, noise: float = 1e-4,
              vertical: bool = False, degree: int = 20, step: float = 0.01, sample_step: float = 0.1,
              floor: float = 1e-3) -> BlurSpectrumLUT:
    """Sample, fit (eq. 12) and tabulate the blur spectra of a PSF family; add the noise spectrum (eq. 7)."""
    radii, psfs, lo, hi = resolve_family(psf_family, max_radius, sample_step)
    S = blur_spectra(psfs, bank)
    coef = fit_spectra(radii, S, lo, hi, degree=degree, floor=floor)
    n = max(2, int(round((hi - lo) / step)))
    step = (hi - lo) / n  # uniform grid that ends exactly at hi
    grid = lo + step * np.arange(n + 1)
    v, d1, d2 = eval_fit(coef, grid, lo, hi)
    return BlurSpectrumLUT(
        val=v, d1=d1, d2=d2, lo=float(lo), hi=float(hi), step=float(step),
        noise=noise_spectrum(bank, noise, vertical), samples_r=np.asarray(radii), samples=S, coef=coef,
    )
