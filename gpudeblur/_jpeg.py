"""How much error a JPEG file's compression added: :func:`jpeg_compression_noise`.

A JPEG stores each 8×8 block's DCT coefficients divided by the steps of a
quantization table and rounded. The decoded image therefore differs from
what was encoded by an error that the usual noise measurements do not see:
the compression removes exactly the fine-scale noise they look at (the
demo scene, σ² = 1e-6 noise, saved at quality 75 measures ~2e-6 while its
compression error is ~8e-5). Deblurring amplifies that error, and the blur
map reads its missing high frequencies as blur.

The estimate uses the file's own tables (the luminance component's DQT) and
the decoded luminance: for every frequency ``(u, v)`` with step ``q``, the
fraction ``p0`` of blocks whose coefficient decodes to zero fixes a
Laplacian ``exp(−|c|/b)`` with ``P(|c| < q/2) = p0``. A zero coefficient
lost its whole value: ``E[c² | |c| < q/2]`` of that Laplacian. A non-zero
one lost its offset from the bin centre: the same Laplacian truncated to
the bin, which is ``q²/12`` for a flat one. The mean over the 64
frequencies (the DCT is orthonormal) plus the decoder's rounding to
integers (1/12 of a level²) is the variance per pixel. A frequency that
almost no block kept says only that its coefficients lie below half a
step; its scale is bounded by its lower neighbours' (spectra of photos fall
with frequency), or the large steps of the highest frequencies would
dominate a blurred photo's estimate. The Laplacian fitted to the rare large
coefficients of smooth or blurred regions still overstates the many tiny
ones, so on clean continuous-tone photos this over-estimates: 1.2–3.6× the
measured error at qualities 10–95 (``tests/test_jpeg_noise.py`` asks
0.9–5×; synthetic or binary images more). On a noisy photo much of the
measured error is noise the compression removed, which the estimate does
not count: a blurred photo with σ = 4 levels of noise gives 0.55–0.65×
the error against what was encoded, 0.6–1.2× the decoded image's
deviation from the clean one.
"""

from __future__ import annotations

import os

import numpy as np

from . import _metadata as _md

__all__ = ["jpeg_compression_noise", "quantization_tables"]


def _zigzag() -> np.ndarray:
    """Row-major index (``8u + v``) of each position of JPEG's zigzag scan."""
    cells = [(u, v) for u in range(8) for v in range(8)]
    # anti-diagonals in turn; even ones run up-right (u falling), odd ones down-left (u rising)
    cells.sort(key=lambda c: (c[0] + c[1], c[1] if (c[0] + c[1]) % 2 == 0 else c[0]))
    return np.array([8 * u + v for u, v in cells])


_ZIGZAG = _zigzag()
#: Start-of-frame markers of DCT-coded JPEGs, and the lossless ones (no quantization).
_SOF_DCT = (0xC0, 0xC1, 0xC2, 0xC5, 0xC6, 0xC9, 0xCA, 0xCD, 0xCE)
_SOF_LOSSLESS = (0xC3, 0xC7, 0xCB, 0xCF)


def quantization_tables(data: bytes):
    """The quantization tables and frame of a JPEG, read up to the first scan.

    Returns ``(tables, frame, adobe_transform)``: ``tables`` maps a table id
    to its ``(8, 8)`` steps in row-major frequency order; ``frame`` is
    ``(marker, precision, [(component id, h, v, table id), ...])`` or None;
    ``adobe_transform`` is the APP14 "Adobe" colour transform byte or None.
    ``None`` when ``data`` is not a JPEG or a table is malformed.
    """
    if data[:2] != b"\xff\xd8":
        return None
    tables, frame, adobe = {}, None, None
    for marker, start, end in _md.jpeg_segments(data):
        seg = data[start:end]
        if marker == 0xDB:  # DQT: one or more tables
            j = 0
            while j < len(seg):
                wide, tid = seg[j] >> 4, seg[j] & 15
                size = 128 if wide else 64
                raw = np.frombuffer(seg[j + 1 : j + 1 + size], dtype=">u2" if wide else np.uint8)
                if raw.size != 64 or wide > 1:
                    return None
                t = np.empty(64)
                t[_ZIGZAG] = raw
                tables[tid] = t.reshape(8, 8)
                j += 1 + size
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(seg) >= 6:
            n = seg[5]
            if len(seg) < 6 + 3 * n:
                return None
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k]) for k in range(n)]
            frame = (marker, seg[0], comps)
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
    return tables, frame, adobe


def _laplace_zero_moment(a, b):
    """``E[c² | |c| < a]`` for a Laplacian of scale ``b``."""
    t = a / b
    return b * b * (2.0 - np.exp(-t) * (t * t + 2.0 * t + 2.0)) / -np.expm1(-t)


def _laplace_bin_error(q, b):
    """Mean squared offset from the bin centre of a Laplacian of scale ``b`` in a
    bin of width ``q`` away from zero (an exponential truncated to ``[0, q]``);
    ``q²/12`` as ``b → ∞``."""
    t = q / b
    e, den = np.exp(-t), -np.expm1(-t)
    mean = b - q * e / den
    second = b * b * (2.0 - e * (t * t + 2.0 * t + 2.0)) / den
    out = second - q * mean + q * q / 4.0
    return np.where(t > 1e-3, out, q * q / 12.0)  # a flat bin: the series' limit, without cancellation


#: A frequency whose coefficient survived in fewer blocks than this has its
#: Laplacian scale bounded by its lower neighbours' (:func:`_envelope`).
MIN_KEPT = 5


def _envelope(b, fitted):
    """Scales of frequencies that (almost) no block kept, bounded by the scales of
    the next lower frequencies (``(u-1, v)``, ``(u, v-1)``): spectra of photos
    fall with frequency. Alone, the zero fraction of such a frequency says only
    that its coefficients are below half a step, and the scale it gives grows
    with the step: high frequencies of blurred photos would dominate."""
    out = b.copy()
    for d in range(1, 15):  # anti-diagonals, low to high frequency
        for u in range(max(0, d - 7), min(7, d) + 1):
            v = d - u
            if not fitted[u, v]:
                lower = min(out[u - 1, v] if u else np.inf, out[u, v - 1] if v else np.inf)
                out[u, v] = min(out[u, v], lower)
    return out


def jpeg_compression_noise(source) -> float | None:
    """Variance of the error a JPEG's compression added to its luminance.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file, or its content.

    Returns
    -------
    float or None
        Per-pixel variance in ``[0, 1]`` intensity units (the scale of
        :func:`gpudeblur.io.read_image`), an over-estimate (see the module
        docstring); ``0.0`` for a lossless JPEG; ``None`` when ``source`` is
        not an 8-bit DCT-coded JPEG with a luminance component (other
        formats, Adobe RGB or CMYK JPEGs, a missing table).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(os.fspath(source), "rb") as f:
            data = f.read()
    parsed = quantization_tables(data)
    if parsed is None or parsed[1] is None:
        return None
    tables, (marker, precision, comps), adobe = parsed
    if marker in _SOF_LOSSLESS:
        return 0.0
    if marker not in _SOF_DCT or precision != 8 or len(comps) not in (1, 3):
        return None
    if len(comps) == 3 and (adobe == 0 or [c[0] for c in comps] == [ord("R"), ord("G"), ord("B")]):
        return None  # stored as RGB: no luminance component
    q = tables.get(comps[0][3])
    if q is None:
        return None
    import cv2  # noqa: PLC0415
    import scipy.fft  # noqa: PLC0415

    # the luminance plane as the decoder produced it (libjpeg outputs Y itself for
    # a grayscale read), on the block grid the encoder used (no EXIF rotation)
    from .io import _captured_stderr, _library_messages  # noqa: PLC0415  (io imports this module)

    with _captured_stderr() as printed:  # libjpeg's complaints: read_image reports them, once
        y = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    _library_messages(printed)  # (anything else goes back to stderr)
    if y is None or y.ndim != 2 or min(y.shape) < 8:
        return None
    M, N = y.shape[0] // 8 * 8, y.shape[1] // 8 * 8
    blocks = y[:M, :N].astype(np.float32).reshape(M // 8, 8, N // 8, 8)
    coef = scipy.fft.dctn(blocks - np.float32(128), type=2, norm="ortho", axes=(1, 3))
    n = (M // 8) * (N // 8)
    nonzero = (np.abs(coef) >= (q / 2).astype(np.float32)[None, :, None, :]).sum(axis=(0, 2))
    # the zero fraction, kept below 1 by half a block (a frequency no block kept still has a finite scale)
    p0 = np.minimum(1.0 - nonzero / n, 1.0 - 0.5 / n)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        b = np.where(p0 > 0, (q / 2) / -np.log1p(-p0), np.inf)
        b = _envelope(b, nonzero >= MIN_KEPT)
        zero = np.where(p0 > 0, _laplace_zero_moment(q / 2, b), 0.0)
        kept = np.where(np.isfinite(b), _laplace_bin_error(q, b), q * q / 12.0)
    per_frequency = p0 * zero + (1.0 - p0) * kept
    return float((per_frequency.mean() + 1.0 / 12.0) / 255.0**2)
