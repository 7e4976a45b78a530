"""Input checks shared by every public function (one-line, named errors)."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np


def check_image(img, xp, name: str = "image", allow_channels=(1, 3, 4), unit_range: bool = False):
    """Validate a 2-D gray ``(M, N)`` or channels-last ``(M, N, C)`` image.

    Raises ``ValueError`` naming the problem: wrong rank, empty or
    one-pixel image, unsupported channel count, NaN/Inf values. With
    ``unit_range`` (the deblurring entry points; not the forward blurs, which
    may simulate linear light above white) a float image with values above
    :data:`IMAGE_RANGE_WARNING` gets a warning: it is on another scale.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (M, N) or 3-D (M, N, C), got shape {tuple(img.shape)}")
    if img.ndim == 3 and img.shape[2] not in allow_channels:
        raise ValueError(
            f"{name} has {img.shape[2]} channels; supported: {', '.join(map(str, allow_channels))}"
        )
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{name} is too small ({img.shape[0]}x{img.shape[1]}); need at least 2x2 pixels")
    kind = img.dtype.kind
    if kind == "f":
        # min and max in one transfer (one device sync, no boolean image): both propagate NaN,
        # and an infinity is one of them
        lo, hi = xp.stack([xp.min(img), xp.max(img)]).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or Inf values")
    elif kind not in "biu" and not bool(xp.isfinite(img).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if unit_range and kind == "f" and hi > IMAGE_RANGE_WARNING:
        # (one text, attributed to this line: shown once however many stages check the same image)
        warnings.warn(f"{name} values exceed {IMAGE_RANGE_WARNING:g}: gpudeblur's weights and noise levels assume "
                      "intensities in [0, 1]; divide 8-bit data by 255 (16-bit by 65535)", UserWarning, stacklevel=1)
    return img


#: An image whose values exceed this is taken for data on another scale (0–255 floats, a signed
#: integer array): :func:`check_image` warns. (A deblurred image overshoots 1 a little.)
IMAGE_RANGE_WARNING = 2.0


def split_alpha(img):
    """``(colour, alpha)`` of a checked channels-last image: an ``(M, N, 4)``
    image is RGB plus alpha (its fourth channel, kept ``(M, N, 1)``), which
    the deblurring functions pass through untouched; any other image has no
    alpha (None)."""
    if img.ndim == 3 and img.shape[2] == 4:
        return img[..., :3], img[..., 3:]
    return img, None


def join_alpha(out, alpha, xp):
    """``out`` with :func:`split_alpha`'s alpha appended (in ``out``'s dtype), or ``out`` when there is none."""
    if alpha is None:
        return out
    return xp.concatenate([out, alpha.astype(out.dtype, copy=False)], axis=-1)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return float(value)


#: Largest regularization weight the commands and :class:`~gpudeblur.AllInFocus` accept: far
#: beyond any useful one (a weight of 1e3 already returns a flat image), and small enough that
#: the solvers' float32 arithmetic cannot overflow (1e20 did, after the whole run).
MAX_WEIGHT = 1e6


def weight_too_large(value, given=None) -> str | None:
    """The message for a weight above :data:`MAX_WEIGHT` (``'must be at most …, got <given>'``;
    ``given`` default ``value``), or None."""
    if float(value) > MAX_WEIGHT:
        return f"must be at most {MAX_WEIGHT:g} (a larger weight only flattens the image), " \
               f"got {value if given is None else given!r}"
    return None


def check_weight(value, name: str) -> float:
    """A regularization weight: positive, finite, at most :data:`MAX_WEIGHT`."""
    v = check_positive(value, name)
    too_large = weight_too_large(value)
    if too_large:
        raise ValueError(f"{name} {too_large}")
    return v


def check_compression_noise(value) -> float | None:
    """``compression_noise`` (None, or a variance of [0, 1] intensities: ``0 <= value <= 1``)."""
    if value is None:
        return None
    v = check_positive(value, "compression_noise", allow_zero=True)
    if v > 1:
        raise ValueError(f"compression_noise is a variance of [0, 1] intensities, at most 1; got {value!r}")
    return v


def check_choice(value, choices, name: str):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(str, choices))}")
    return value
