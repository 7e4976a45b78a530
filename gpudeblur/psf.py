"""Point-spread-function models.

Every PSF is returned as a float64 NumPy array that sums to one, with its
centre at index ``(h // 2, w // 2)`` (odd sizes for the models below).
PSFs are small: they are built on the host and moved to the device once
by the operators that use them.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["disc", "gaussian", "motion", "from_array", "from_spec", "model_side"]


#: Largest support side (pixels) a PSF model builds: a disc of radius ~4096 px,
#: a Gaussian of sigma ~1170 px (537 MB in float64). Beyond it the model
#: refuses at once (a radius of 1e5 asked NumPy for 596 GiB).
MAX_PSF_SIDE = 8193


def _check_side(half: int, what: str) -> None:
    side = 2 * half + 1
    if side > MAX_PSF_SIDE:
        raise ValueError(f"{what} needs a {side}x{side} support, over the {MAX_PSF_SIDE} px limit of a PSF")


def _disc_half(radius: float) -> int:
    """Half-side of :func:`disc`'s support before trimming (its outer ring has weight 0)."""
    return int(math.ceil(radius + 0.5)) if radius > 0 else 0


def _gaussian_half(sigma: float, truncate: float) -> int:
    return max(1, int(math.ceil(truncate * sigma)))


def _finish(k: np.ndarray) -> np.ndarray:
    s = k.sum()
    if not np.isfinite(s) or s <= 0:
        raise ValueError("PSF sums to zero")
    return k / s


def disc(radius: float) -> np.ndarray:
    """Pillbox (defocus) PSF of ``radius`` pixels with an anti-aliased edge.

    A pixel's weight is ``clip(radius + 0.5 - d, 0, 1)`` with ``d`` the
    distance of its centre from the PSF centre, so the PSF varies
    continuously with ``radius``; ``radius = 0`` gives a delta.

    Parameters
    ----------
    radius : float
        Non-negative radius in pixels.
    """
    radius = float(radius)
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"disc radius must be a finite non-negative number, got {radius!r}")
    half = _disc_half(radius)
    _check_side(half, f"disc radius {radius:g}")
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    d = np.hypot(x, y)
    k = np.clip(radius + 0.5 - d, 0.0, 1.0)
    if radius == 0:
        k = np.ones((1, 1))
    k = _trim(k)
    return _finish(k)


_GAUSSIAN_TRUNCATE = 3.5


def gaussian(sigma: float, truncate: float = _GAUSSIAN_TRUNCATE) -> np.ndarray:
    """Isotropic Gaussian PSF of standard deviation ``sigma`` pixels.

    The support is ``2 * ceil(truncate * sigma) + 1``; ``sigma = 0`` is a delta.
    """
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"gaussian sigma must be a finite non-negative number, got {sigma!r}")
    if sigma == 0:
        return np.ones((1, 1))
    half = _gaussian_half(sigma, truncate)
    _check_side(half, f"gaussian sigma {sigma:g}")
    t = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return _finish(np.outer(g, g))


def motion(length: float, angle: float = 0.0) -> np.ndarray:
    """Linear motion PSF: a segment of ``length`` pixels at ``angle`` degrees.

    The angle is counter-clockwise from the +x axis (image rows grow
    downwards, so positive angles point up-right). A pixel's weight is
    ``clip(1 - dist, 0, 1)`` with ``dist`` its distance to the segment,
    so the edge is anti-aliased; ``length <= 1`` gives a delta.
    """
    length = float(length)
    angle = float(angle)
    if not np.isfinite(length) or length < 0:
        raise ValueError(f"motion length must be a finite non-negative number, got {length!r}")
    if not np.isfinite(angle):
        raise ValueError(f"motion angle must be finite, got {angle!r}")
    if length <= 1:
        return np.ones((1, 1))
    half_len = (length - 1) / 2.0
    th = math.radians(angle)
    dx, dy = math.cos(th), -math.sin(th)  # rows grow downwards
    half = int(math.ceil(half_len)) + 1
    _check_side(half, f"motion length {length:g}")
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    t = np.clip(x * dx + y * dy, -half_len, half_len)
    dist = np.hypot(x - t * dx, y - t * dy)
    k = np.clip(1.0 - dist, 0.0, 1.0)
    return _finish(_trim(k))


def from_array(psf, name: str = "psf") -> np.ndarray:
    """Validate and normalize a user PSF (2-D, finite, non-negative, non-zero sum)."""
    if hasattr(psf, "get") and not isinstance(psf, np.ndarray):  # CuPy -> host
        psf = psf.get()
    k = np.asarray(psf)
    if k.dtype.kind not in "biuf":  # complex, strings, objects: no PSF (NumPy would drop or fail to convert them)
        raise ValueError(f"{name} must hold real numbers, got {k.dtype} values")
    k = k.astype(np.float64, copy=False)
    if k.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {k.shape}")
    if k.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    if (k < 0).any():
        raise ValueError(f"{name} has negative values")
    if k.sum() <= 0:
        raise ValueError(f"{name} sums to zero")
    return k / k.sum()


def model_side(kind: str, value: float) -> int:
    """Side of the square :func:`disc` (``kind='disc'``, radius) or :func:`gaussian`
    (sigma) returns, without building it (tested against the models)."""
    if value == 0:
        return 1
    if kind == "disc":
        return 2 * _disc_half(value) - 1  # the outer ring has weight 0 and is trimmed
    if kind == "gaussian":
        return 2 * _gaussian_half(value, _GAUSSIAN_TRUNCATE) + 1
    raise ValueError(f"no closed-form size for PSF kind {kind!r}")


def _motion_min_shape(length: float, angle: float = 0.0) -> tuple[int, int]:
    """A lower bound on the shape :func:`motion` returns, without building it.

    The pixel nearest each end of the segment lies within ``sqrt(1/2) < 1``
    of it, so it has weight, and the kernel is symmetric about its centre.
    """
    if length <= 1:
        return 1, 1
    half_len = (length - 1) / 2.0
    th = math.radians(angle)
    return 2 * abs(round(half_len * math.sin(th))) + 1, 2 * abs(round(half_len * math.cos(th))) + 1


def from_spec(spec: str, image_shape=None) -> np.ndarray:
    """Parse a command-line PSF description.

    ``disc:R``, ``gaussian:SIGMA``, ``motion:LENGTH[,ANGLE]`` or a path to a
    ``.npy`` file holding a 2-D array. With ``image_shape`` ``(M, N, ...)`` a
    model PSF larger than the image is refused before it is built (seconds
    for a size of thousands of pixels).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError("PSF spec is empty")
    kind, _, args = spec.partition(":")
    kind = kind.lower()
    models = {"disc": (disc, 1), "gaussian": (gaussian, 1), "motion": (motion, 2)}
    if kind in models and not spec.endswith(".npy"):
        func, max_args = models[kind]
        try:
            values = [float(a) for a in args.split(",")] if args else []
        except ValueError:
            values = []
        if not 1 <= len(values) <= max_args:
            raise ValueError(f"malformed PSF spec {spec!r}; expected disc:R, gaussian:SIGMA or motion:LENGTH[,ANGLE]")
        if image_shape is not None and kind in ("disc", "gaussian") and np.isfinite(values[0]) and values[0] >= 0:
            side, (M, N) = model_side(kind, values[0]), image_shape[:2]
            if side > M or side > N:  # the message convolution.py gives once it is built
                raise ValueError(f"PSF ({side}x{side}) is larger than the image ({M}x{N})")
        if image_shape is not None and kind == "motion" and all(np.isfinite(values)) and values[0] >= 0:
            (h, w), (M, N) = _motion_min_shape(*values), image_shape[:2]
            if h > M or w > N:  # the exact size after trimming has no closed form: a lower bound
                raise ValueError(f"PSF (at least {h}x{w}) is larger than the image ({M}x{N})")
        return func(*values)
    if spec.endswith(".npy"):
        if not os.path.isfile(spec):
            raise ValueError(f"PSF file not found: {spec}")
        with open(spec, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # (NumPy would call any other bytes "pickled data")
                raise ValueError(f"PSF file {spec}: not a .npy array file")
        try:
            arr = np.load(spec, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError(f"PSF file {spec}: holds Python objects, not a numeric array") from None
            raise ValueError(f"cannot read PSF file {spec}: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (truncated: NumPy's EOF and shape errors)
            raise ValueError(f"cannot read PSF file {spec}: {exc}") from None
        return from_array(arr, name=f"PSF file {spec}")
    raise ValueError(
        f"malformed PSF spec {spec!r}; expected disc:R, gaussian:SIGMA, motion:LENGTH[,ANGLE] or a .npy path"
    )


def _trim(k: np.ndarray) -> np.ndarray:
    """Drop all-zero border rows/columns symmetrically (keeps the centre)."""
    while k.shape[0] > 1 and not k[0].any() and not k[-1].any():
        k = k[1:-1]
    while k.shape[1] > 1 and not k[:, 0].any() and not k[:, -1].any():
        k = k[:, 1:-1]
    return k
