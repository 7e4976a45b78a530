"""Image files in and out.

:func:`read_image` returns a float32 image in ``[0, 1]`` (gray ``(M, N)`` or
RGB ``(M, N, 3)``, RGB channel order) plus an :class:`ImageMeta` that
remembers the sample type and holds the alpha channel untouched;
:func:`write_image` writes a processed image back with the same bit depth
and alpha. :func:`write_array` stores float maps (``.npy`` or float32 TIFF).

Formats
-------
=========  ======================================  ==========================
format     read                                    write
=========  ======================================  ==========================
PNG        8/16-bit gray, gray+alpha, RGB, RGBA    8/16-bit (gray+alpha as RGBA)
TIFF       8/16-bit and float, 1–4 samples,        8/16-bit (deflate), float32
           contiguous or planar (tifffile;
           OpenCV for palette/LZW/JPEG TIFFs)
JPEG       8-bit gray/RGB (EXIF orientation        8-bit, quality 95 (no alpha)
           applied)
NPY        2-D/3-D arrays                          via :func:`write_array`
other      whatever OpenCV decodes (BMP, WebP, …)  —
=========  ======================================  ==========================

The format is recognized from the file's content, not its name, when
reading, and from the extension when writing.

Colour profile and EXIF: an embedded ICC profile (PNG, JPEG, TIFF) and the
EXIF block (PNG, JPEG) of the input travel in :class:`ImageMeta` and are
written into PNG and JPEG outputs, the profile into TIFF outputs too (TIFF
gets no EXIF; an :class:`ImageWriteWarning` says so; a TIFF input's EXIF
is not read). Pixels are turned upright on reading as the EXIF Orientation
(a TIFF: its own Orientation tag) says, so EXIF is carried with
Orientation 1, without its thumbnail (of the unprocessed image), and is
written with the pixel dimensions of the image written. A malformed block,
or a profile for data read as something else (CMYK converted to RGB), is
left out with a :class:`UserWarning`. XMP and IPTC are not carried. Pass
``meta.stripped()`` to write neither.

:func:`jpeg_compression_noise` estimates the error a JPEG's compression
added (from its quantization tables), which the all-in-focus pipeline
takes into account (``AllInFocus(compression_noise=...)``).

Every write is atomic: the bytes go to a temporary file in the target
folder, which is then renamed onto the target (:func:`os.replace`), so a
reader never sees a half-written file and a failure leaves nothing behind.
An existing file is replaced only with ``overwrite=True``. A symbolic link
at the target is written through (the link stays, the file it points to is
replaced, as the shell's ``>`` does); a device, pipe or socket there is
refused (the rename would put a regular file in its place).

Damaged files: OpenCV's decoders print their complaints to stderr and go on;
they are caught here. A JPEG whose scan data end early (libjpeg's "premature
end of data segment": rows are missing) is refused, any other complaint is a
:class:`UserWarning` naming the file, and libpng's error text becomes part of
the one-line error.

Errors are one-line :class:`ValueError` (bad content, unsupported layout)
or :class:`OSError` (missing file, permissions, existing output) messages
that name the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import io as _io
import os
import stat
import tempfile
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from . import _metadata as _md
from ._jpeg import jpeg_compression_noise

__all__ = [
    "ImageMeta",
    "ImageWriteWarning",
    "read_image",
    "write_image",
    "write_array",
    "output_batch",
    "image_format",
    "jpeg_compression_noise",
    "IMAGE_WRITE_EXTENSIONS",
    "ARRAY_WRITE_EXTENSIONS",
]

#: Extensions :func:`write_image` accepts (lower case).
IMAGE_WRITE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Extensions :func:`write_array` accepts (lower case).
ARRAY_WRITE_EXTENSIONS = (".npy", ".tif", ".tiff")

#: JPEG quality :func:`write_image` encodes with unless told (``jpeg_quality``; libjpeg's scale, 1–100).
JPEG_QUALITY = 95

_EXT_FORMAT = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}
_MAXVAL = {8: 255.0, 16: 65535.0}
_INT_DTYPE = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}


class ImageWriteWarning(UserWarning):
    """The output format cannot hold everything the input had (bit depth, alpha)."""


@dataclass(frozen=True, eq=False)
class ImageMeta:
    """What :func:`write_image` needs to write an image back like it was read.

    Attributes
    ----------
    bit_depth : {8, 16, 32}
        8 or 16 for unsigned integer samples, 32 for float samples.
    dtype : numpy.dtype
        Sample type in the file (``uint8``, ``uint16`` or a float type).
    channels : {1, 3}
        Colour channels of the image returned by :func:`read_image`.
    alpha : (M, N) ndarray or None
        The alpha channel exactly as stored (original dtype, unscaled).
    format : str
        ``'png'``, ``'tiff'``, ``'jpeg'``, ``'npy'`` or ``'other'``.
    path : str or None
        The file it was read from.
    icc_profile : bytes or None
        The embedded ICC colour profile, as stored.
    exif : bytes or None
        The EXIF block (TIFF-structured, from its ``II``/``MM`` header), with
        Orientation 1 (the pixels were turned upright on reading) and no
        thumbnail.
    """

    bit_depth: int
    dtype: np.dtype
    channels: int
    alpha: np.ndarray | None = None
    format: str = "other"
    path: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None

    def stripped(self) -> "ImageMeta":
        """A copy without the colour profile and EXIF block."""
        return dataclasses.replace(self, icc_profile=None, exif=None)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def read_image(path) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file as float32 in ``[0, 1]``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    image : (M, N) or (M, N, 3) float32 ndarray
        Gray or RGB (RGB channel order). Integer samples are divided by
        255 or 65535; float samples (float TIFF, ``.npy``) are returned as
        stored (not clipped).
    meta : ImageMeta
        Bit depth, sample type, the untouched alpha channel, the colour
        profile and EXIF block (a malformed one is left out with a
        :class:`UserWarning`).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        The file cannot be opened.
    ValueError
        Empty, truncated or undecodable file; unsupported sample type or
        channel count.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input is a folder, not an image file: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise type(exc)(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise ValueError(f"{path} is an empty file")
    fmt = _sniff(data)
    if fmt == "png":
        arr, order, gray_alpha = _decode_png(data, path)
    elif fmt == "jpeg":
        arr, order, gray_alpha = _decode_jpeg(data, path), "bgr", False
    elif fmt == "tiff":
        arr, order, gray_alpha = _decode_tiff(data, path)
    elif fmt == "npy":
        arr, order, gray_alpha = _decode_npy(data, path), "rgb", False
    else:
        arr, order, gray_alpha = _decode_cv(data, path, _cv2().IMREAD_UNCHANGED, "image"), "bgr", False
    icc, exif, problems = _md.read_metadata(data, fmt)
    for problem in problems:
        warnings.warn(f"{path}: unreadable {problem}; not carried to the output", UserWarning, stacklevel=2)
    if exif is not None:
        arr = _upright(arr, _md.exif_orientation(exif))
        exif = _md.exif_upright(exif)
    space = None if icc is None else _md.icc_colour_space(icc)
    if space is not None and space not in ("RGB", "GRAY"):
        warnings.warn(f"{path}: colour profile is for {space!r} data, which was converted to "
                      "RGB without it; profile not carried to the output", UserWarning, stacklevel=2)
        icc = None
    img, meta = _finish_read(arr, order, gray_alpha, fmt, path)
    if icc is None and exif is None:
        return img, meta
    return img, dataclasses.replace(meta, icc_profile=icc, exif=exif)


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels turned as the EXIF Orientation (1-8) says they are shown."""
    if orientation in (5, 6, 7, 8):
        arr = np.swapaxes(arr, 0, 1)  # transpose; then 6 = flip columns, 7 = both, 8 = flip rows
    if orientation in (2, 3, 6, 7):
        arr = arr[:, ::-1]
    if orientation in (3, 4, 7, 8):
        arr = arr[::-1]
    return np.ascontiguousarray(arr) if orientation != 1 else arr


def _sniff(data: bytes) -> str:
    if data.startswith(_md.PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    return "other"


def _cv2():
    import cv2  # noqa: PLC0415  (lazy: importing OpenCV costs ~0.2 s)

    return cv2


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own log lines (errors are reported by us, once)."""
    logging = getattr(getattr(_cv2(), "utils", None), "logging", None)
    if logging is None:
        yield
        return
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(old)


#: OpenCV's default limit on decoded pixels (OPENCV_IO_MAX_IMAGE_PIXELS overrides it)
def _cv_max_pixels() -> int:
    value = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip()
    return int(value) if value.isdigit() else 1 << 30


_CV_MAX_PIXELS = _cv_max_pixels()
_KIND_NAMES = {"i": "signed integer", "u": "unsigned integer", "f": "float", "c": "complex", "b": "boolean"}


def _png_size(data: bytes):
    """(width, height) from a PNG's IHDR chunk, or None."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


@contextlib.contextmanager
def _captured_stderr():
    """Capture what C libraries write to file descriptor 2 during the block (libjpeg's
    "Corrupt JPEG data" warnings, libpng's errors); yields a list that then holds the text's
    lines. Only in the main thread, one block at a time; where descriptor 2 cannot be
    redirected (or no temporary file can be made) nothing is captured."""
    lines: list = []
    # descriptor 2 is the process's: only the main thread redirects it, one block at a time (two
    # threads swapping it would leave it on a deleted file); elsewhere nothing is captured
    if threading.current_thread() is not threading.main_thread() or not _STDERR_LOCK.acquire(blocking=False):
        yield lines
        return
    try:
        saved = tmp = None
        try:
            saved = os.dup(2)
            tmp = tempfile.TemporaryFile()
        except OSError:  # no descriptor 2, or no temporary folder: nothing captured
            if saved is not None:
                os.close(saved)
            saved = None
        if saved is None:
            yield lines
            return
        with contextlib.suppress(Exception):
            import sys  # noqa: PLC0415

            sys.stderr.flush()
        try:
            os.dup2(tmp.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                tmp.seek(0)
                lines.extend(tmp.read().decode("utf-8", "replace").splitlines())
        finally:
            os.close(saved)
            tmp.close()
    finally:
        _STDERR_LOCK.release()


_STDERR_LOCK = threading.Lock()


#: Messages of the image libraries OpenCV decodes with (captured from stderr and reported by us)
_LIB_MESSAGE_PREFIXES = ("Corrupt JPEG data", "Premature end of JPEG file", "libpng error")
#: ... and those dropped: libpng's warnings concern metadata chunks (an sRGB profile libpng knows
#: to be wrong, an eXIf it finds invalid; ``_metadata`` reports the metadata it cannot carry)
_LIB_QUIET_PREFIXES = ("libpng warning",)


def _library_messages(lines) -> list:
    """The decoders' messages among the captured ``lines``; anything else goes back to stderr."""
    ours = [ln.strip() for ln in lines if ln.strip().startswith(_LIB_MESSAGE_PREFIXES)]
    rest = [ln for ln in lines if ln.strip() and not ln.strip().startswith(_LIB_MESSAGE_PREFIXES + _LIB_QUIET_PREFIXES)]
    if rest:
        with contextlib.suppress(OSError):
            os.write(2, ("\n".join(rest) + "\n").encode())
    return ours


def _decode_cv(data: bytes, path: str, flags: int, what: str) -> np.ndarray:
    cv2 = _cv2()
    with _quiet_opencv(), _captured_stderr() as printed:
        try:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:
            arr = None
    messages = _library_messages(printed)
    said = f" ({'; '.join(dict.fromkeys(messages))})" if messages else ""
    if arr is None:
        size = _png_size(data) if what == "PNG" else None
        if size is not None and size[0] * size[1] > _CV_MAX_PIXELS:  # OpenCV's limit, not a corrupt file
            raise ValueError(f"cannot decode {path}: {size[0]}x{size[1]} pixels, over the {_CV_MAX_PIXELS / 1e9:.2f} "
                             "gigapixels OpenCV decodes (OPENCV_IO_MAX_IMAGE_PIXELS raises it); split the image")
        raise ValueError(f"cannot decode {path}: not a supported {what} file, or the file is corrupt{said}")
    if any("premature end" in m.lower() for m in messages):  # the scan's data ran out: rows are missing
        raise ValueError(f"cannot read {path}: corrupt {what} file, its image data end early{said}")
    if messages:
        warnings.warn(f"{path}: the decoder reports damaged data{said}; the image may be corrupt", UserWarning,
                      stacklevel=4)
    return arr


def _decode_png(data: bytes, path: str):
    if data.rfind(b"IEND") == -1:
        raise ValueError(f"cannot read {path}: truncated PNG file (no IEND chunk)")
    arr = _decode_cv(data, path, _cv2().IMREAD_UNCHANGED, "PNG")
    color_type = data[25] if len(data) > 25 else -1  # IHDR colour type; 4 = gray + alpha
    gray_alpha = color_type == 4 and arr.ndim == 3 and arr.shape[2] == 4
    chunks = _png_chunks_before_data(data)
    if b"acTL" in chunks:
        warnings.warn(f"{path} is an animated PNG; reading its first frame only", UserWarning, stacklevel=4)
    if color_type == 0 and arr.ndim == 2 and arr.dtype.kind == "u":  # gray with a transparent value (tRNS)
        key = _png_gray_transparent(chunks.get(b"tRNS", b""), data[24], arr.dtype)  # (OpenCV drops it)
        if key is not None:
            full = np.iinfo(arr.dtype).max
            arr = np.dstack([arr, np.where(arr == key, 0, full).astype(arr.dtype)])
    return arr, "bgr", gray_alpha


def _png_chunks_before_data(data: bytes) -> dict:
    """``{type: data}`` of a PNG's chunks before its first IDAT (the first of each type whose
    CRC holds, as libpng discards the others; a malformed length ends the walk)."""
    import zlib  # noqa: PLC0415

    chunks: dict = {}
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND") or pos + 12 + length > len(data):
            break
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) == int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big"):
            chunks.setdefault(kind, body)
        pos += 12 + length
    return chunks


def _png_gray_transparent(trns: bytes, depth: int, dtype):
    """The transparent sample value of a gray PNG of bit ``depth`` (its tRNS chunk's data) on the
    scale OpenCV decodes to (depths below 8 expanded to 8), or None."""
    if len(trns) != 2 or depth not in (1, 2, 4, 8, 16):  # (libpng ignores a gray tRNS of another length)
        return None
    value = int.from_bytes(trns[:2], "big") & ((1 << depth) - 1)
    if depth < 8:
        value = value * 255 // ((1 << depth) - 1)
    return dtype.type(value)  # (masked to the depth: within the type)


def _jpeg_complete(data: bytes) -> bool:
    """True when the end-of-image marker follows the first scan.

    OpenCV decodes a truncated JPEG without error (the missing part comes
    out gray), so completeness is checked here: walk the marker segments
    up to the first start-of-scan, then look for EOI after it (entropy
    coded data stuffs 0xFF as FF00, so FFD9 there is a real marker; EXIF
    thumbnails live inside APP segments, which are skipped).
    """
    for marker, _, end in _md.jpeg_segments(data):
        if marker == 0xDA:  # SOS
            return data.find(b"\xff\xd9", end) != -1
    return False


def _decode_jpeg(data: bytes, path: str) -> np.ndarray:
    if not _jpeg_complete(data):
        raise ValueError(f"cannot read {path}: truncated or corrupt JPEG file (no end-of-image marker)")
    cv2 = _cv2()
    # EXIF orientation is applied by read_image, from the EXIF block it carries
    # (so that pixels and carried EXIF always agree)
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
    return _decode_cv(data, path, flags, "JPEG")


def _decode_tiff(data: bytes, path: str):
    """First page of a TIFF with tifffile; OpenCV for what tifffile cannot do."""
    import tifffile  # noqa: PLC0415

    orientation = 1
    try:
        with tifffile.TiffFile(_io.BytesIO(data)) as tif:
            page = tif.pages[0]
            tag = page.tags.get("Orientation")  # the TIFF's own tag 274 (baseline), as EXIF's for JPEG
            try:
                orientation = int(tag.value) if tag is not None else 1
            except (TypeError, ValueError):
                orientation = 1
            if not 1 <= orientation <= 8:  # not one of the eight defined values: as shot
                orientation = 1
            photometric = int(page.photometric)
            extrasamples = tuple(int(e) for e in (page.extrasamples or ()))
            if photometric not in (1, 2):  # MINISBLACK, RGB; others (palette, YCbCr, CMYK) -> OpenCV
                raise _UseOpenCV
            arr = page.asarray()
            axes = page.axes
            n_pages = len(tif.pages)
    except _UseOpenCV:
        arr = _decode_cv(data, path, _cv2().IMREAD_UNCHANGED, "TIFF")
        if arr.ndim == 3 and arr.shape[2] == 4 and not extrasamples:  # libtiff's RGBA of CMYK: an opaque alpha
            arr = arr[..., :3]  # channel the file never had
        return _upright(arr, orientation), "bgr", False
    except Exception as exc:  # TiffFileError, ValueError, zlib.error, KeyError (codec) ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "imagecodecs" in msg:  # e.g. LZW without imagecodecs: OpenCV's libtiff can
            arr = _decode_cv(data, path, _cv2().IMREAD_UNCHANGED, "TIFF")
            return arr, "bgr", False
        raise ValueError(f"cannot read TIFF {path}: {msg}") from None
    if axes == "SYX":  # planar configuration: samples first
        arr = np.moveaxis(arr, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise ValueError(f"unsupported TIFF layout in {path}: axes {axes!r}, shape {arr.shape}; expected a 2-D image")
    if n_pages > 1:
        warnings.warn(f"{path} has {n_pages} pages (images); reading the first only", UserWarning, stacklevel=3)
    gray_alpha = arr.ndim == 3 and arr.shape[2] == 2 and bool(extrasamples)
    # pixels turned upright as the Orientation tag says they are shown (outputs carry no tag)
    return _upright(arr, orientation), "rgb", gray_alpha


class _UseOpenCV(Exception):
    pass


def _decode_npy(data: bytes, path: str) -> np.ndarray:
    try:
        return np.load(_io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _finish_read(arr: np.ndarray, order: str, gray_alpha: bool, fmt: str, path: str):
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: unsupported image shape {arr.shape}; expected (M, N) or (M, N, C)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path} is an empty image ({arr.shape[0]}x{arr.shape[1]})")
    nch = 1 if arr.ndim == 2 else arr.shape[2]
    if nch not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unsupported channel count {nch}; supported: 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA)")
    dt = arr.dtype
    if dt == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
        dt = arr.dtype
    if dt == np.uint8:
        depth = 8
    elif dt == np.uint16:
        depth = 16
    elif dt.kind == "f" and dt.itemsize <= 8:
        depth = 32
    else:
        raise ValueError(
            f"{path}: unsupported sample type {dt} ({dt.itemsize * 8}-bit "
            f"{_KIND_NAMES.get(dt.kind, dt.kind)}); supported: 8/16-bit unsigned integer or float"
        )
    alpha = None
    if nch == 2:
        gray, alpha = arr[:, :, 0], arr[:, :, 1]
        color = gray
    elif nch == 4:
        alpha = arr[:, :, 3]
        color = arr[:, :, 0] if gray_alpha else arr[:, :, :3]
    else:
        color = arr
    if color.ndim == 3 and order == "bgr":
        color = color[:, :, ::-1]
    if depth == 32:
        img = np.array(color, dtype=np.float32)
    else:
        img = color.astype(np.float32) / np.float32(_MAXVAL[depth])
    img = np.ascontiguousarray(img)
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha)
        alpha.setflags(write=False)
    meta = ImageMeta(
        bit_depth=depth,
        dtype=np.dtype(dt),
        channels=1 if img.ndim == 2 else 3,
        alpha=alpha,
        format=fmt,
        path=path,
    )
    return img, meta


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def image_format(path, kind: str = "image") -> str:
    """Output format from the extension of ``path``.

    ``kind='image'`` accepts :data:`IMAGE_WRITE_EXTENSIONS`,
    ``kind='array'`` accepts :data:`ARRAY_WRITE_EXTENSIONS`; anything else
    raises a one-line ``ValueError``.
    """
    path = os.fspath(path)
    allowed = IMAGE_WRITE_EXTENSIONS if kind == "image" else ARRAY_WRITE_EXTENSIONS
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        shown = ext if ext else "none"
        raise ValueError(f"unsupported output format for {path} (extension {shown}); use {', '.join(allowed)}")
    return _EXT_FORMAT[ext]


def _to_host(x) -> np.ndarray:
    if hasattr(x, "get") and not isinstance(x, np.ndarray):  # CuPy
        x = x.get()
    return np.asarray(x)


def write_image(path, image, meta: ImageMeta | None = None, *, overwrite: bool = False, bit_depth: int | None = None,
                jpeg_quality: int | None = None):
    """Write ``image`` to ``path`` (PNG, TIFF or JPEG by extension), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    image : (M, N), (M, N, 3) or (M, N, 4) array
        Float in ``[0, 1]`` (values outside are clipped for integer
        formats; float TIFF stores them as they are), or ``uint8`` /
        ``uint16`` samples written as they are. RGB channel order; a fourth
        channel is alpha. NumPy or CuPy.
    meta : ImageMeta, optional
        From :func:`read_image`: its bit depth is used, its alpha channel
        is written back unchanged (the image must keep its size), and its
        colour profile and EXIF block are embedded (module docstring; a
        profile for another colour space than the image's, e.g. a gray one
        for an RGB image, is left out with an :class:`ImageWriteWarning`).
    overwrite : bool
        Replace an existing file. Without it an existing ``path`` raises
        :class:`FileExistsError` and nothing is written.
    bit_depth : {8, 16, 32}, optional
        Overrides ``meta``. Default: ``meta.bit_depth``, else 16 for
        ``uint16`` input, else 8. 32 (float) is TIFF only; PNG stores at
        most 16 and JPEG 8 bits (a :class:`ImageWriteWarning` says so when
        the depth comes from ``meta``; an explicit impossible ``bit_depth``
        is an error).
    jpeg_quality : int, optional
        Quality (1–100, libjpeg's scale) of a JPEG output; default
        :data:`JPEG_QUALITY` (95). An error for other formats.
    """
    path = os.fspath(path)
    fmt = image_format(path, "image")
    jpeg_quality = _check_jpeg_quality(jpeg_quality, fmt, path)
    img = _to_host(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"image to write must be (M, N), (M, N, 3) or (M, N, 4), got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image to write is empty ({img.shape[0]}x{img.shape[1]})")
    if img.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise ValueError("image to write contains NaN or Inf values")
    elif img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image to write must be float, uint8 or uint16, got {img.dtype}")

    alpha = None
    if img.ndim == 3 and img.shape[2] == 4:
        if meta is not None and meta.alpha is not None:
            raise ValueError("image has 4 channels and meta holds an alpha channel too; pass one of them")
        img, alpha = img[:, :, :3], img[:, :, 3]
    elif meta is not None and meta.alpha is not None:
        alpha = np.asarray(meta.alpha)
        if alpha.shape != img.shape[:2]:
            raise ValueError(
                f"alpha channel is {alpha.shape[0]}x{alpha.shape[1]} but the image is {img.shape[0]}x{img.shape[1]}"
            )

    depth = _choose_depth(fmt, img, meta, bit_depth)
    if fmt == "jpeg" and alpha is not None:
        warnings.warn(f"JPEG has no alpha channel: alpha not written to {path}", ImageWriteWarning, stacklevel=2)
        alpha = None
    color = _convert_samples(img, depth)
    if alpha is not None:
        alpha = _convert_samples(alpha, depth)

    icc, exif = _metadata_to_write(fmt, meta, color.shape, path)
    if fmt == "tiff":
        data = _encode_tiff(color, alpha, icc)
    elif fmt == "png":
        data = _md.png_with_metadata(_encode_cv(fmt, color, alpha, path), icc, exif)
    else:
        data, left_out = _md.jpeg_with_metadata(_encode_cv(fmt, color, alpha, path, jpeg_quality), icc, exif)
        for what in left_out:
            warnings.warn(f"{what}: not written to {path}", ImageWriteWarning, stacklevel=2)
    _atomic_write(path, data, overwrite)


def _metadata_to_write(fmt: str, meta: ImageMeta | None, shape, path: str):
    """The colour profile and EXIF block of ``meta`` that ``fmt`` can hold for
    an image of ``shape`` (EXIF with that size); what is left out gets an
    :class:`ImageWriteWarning`."""
    if meta is None:
        return None, None
    icc, exif = meta.icc_profile, meta.exif
    rgb = len(shape) == 3
    if icc is not None:
        space = _md.icc_colour_space(icc)
        if space != ("RGB" if rgb else "GRAY"):
            warnings.warn(f"colour profile is for {space!r} data but the image is {'RGB' if rgb else 'gray'}: "
                          f"profile not written to {path}", ImageWriteWarning, stacklevel=3)
            icc = None
    if exif is not None and fmt == "tiff":
        warnings.warn(f"EXIF is written to PNG and JPEG only: not written to {path}", ImageWriteWarning, stacklevel=3)
        exif = None
    if exif is not None:
        exif = bytes(exif)
        if exif.startswith(b"Exif\x00\x00"):  # as Pillow's Exif.tobytes() gives it
            exif = exif[6:]
        try:
            exif = _md.exif_with_size(exif, shape[0], shape[1])
        except _md.MetadataError as exc:
            warnings.warn(f"EXIF block is malformed ({exc}): not written to {path}", ImageWriteWarning, stacklevel=3)
            exif = None
    return icc, exif


def _choose_depth(fmt: str, img: np.ndarray, meta: ImageMeta | None, bit_depth) -> int:
    if bit_depth is not None:
        if isinstance(bit_depth, bool) or bit_depth not in (8, 16, 32):
            raise ValueError(f"bit_depth must be 8, 16 or 32, got {bit_depth!r}")
        depth = int(bit_depth)
        if fmt == "jpeg" and depth != 8:
            raise ValueError(f"JPEG stores 8-bit samples only, bit_depth={depth} requested")
        if fmt == "png" and depth == 32:
            raise ValueError("PNG stores 8- or 16-bit integers only, bit_depth=32 (float) needs .tif")
        return depth
    if meta is not None:
        depth = int(meta.bit_depth)
    elif img.dtype == np.uint16:
        depth = 16
    else:
        depth = 8
    limit = {"jpeg": 8, "png": 16, "tiff": 32}[fmt]
    if depth > limit:
        warnings.warn(
            f"{fmt.upper()} cannot store {depth}-bit {'float' if depth == 32 else 'integer'} samples: writing {limit}-bit",
            ImageWriteWarning,
            stacklevel=3,
        )
        depth = limit
    return depth


def _convert_samples(x: np.ndarray, depth: int) -> np.ndarray:
    """Samples of any supported type to the target depth (same type: unchanged)."""
    if depth == 32:
        if x.dtype.kind == "f":
            return x.astype(np.float32, copy=False)
        return x.astype(np.float32) / np.float32(_MAXVAL[8 if x.dtype == np.uint8 else 16])
    target = _INT_DTYPE[depth]
    if x.dtype == target:
        return x
    if x.dtype.kind == "f":
        y = np.clip(x, 0.0, 1.0) * _MAXVAL[depth]
        return np.rint(y).astype(target)
    if x.dtype == np.uint8:  # 8 -> 16: exact (x * 257 maps 255 to 65535)
        return x.astype(np.uint16) * np.uint16(257)
    return np.rint(x.astype(np.float64) / 257.0).astype(np.uint8)  # 16 -> 8


def _check_jpeg_quality(quality, fmt: str, path: str) -> int:
    """``write_image``'s ``jpeg_quality`` for an output of format ``fmt``: an integer in 1–100, for JPEG only
    (None: :data:`JPEG_QUALITY`)."""
    if quality is None:
        return JPEG_QUALITY
    if fmt != "jpeg":
        raise ValueError(f"jpeg_quality applies to JPEG outputs; {path} is {fmt.upper()}")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality must be an integer from 1 to 100, got {quality!r}")
    return int(quality)


def _encode_cv(fmt: str, color: np.ndarray, alpha, path: str, jpeg_quality: int = JPEG_QUALITY) -> bytes:
    cv2 = _cv2()
    if color.ndim == 3:
        bgr = color[:, :, ::-1]
    else:
        bgr = color
    if alpha is not None:
        if bgr.ndim == 2:  # gray + alpha: OpenCV writes no 2-channel PNG
            return _encode_png_gray_alpha(bgr, alpha)
        arr = np.dstack([bgr, alpha])
    else:
        arr = bgr
    arr = np.ascontiguousarray(arr)
    ext, params = (".png", []) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    with _quiet_opencv():
        ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    return buf.tobytes()


def _encode_png_gray_alpha(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    """A gray + alpha PNG (colour type 4), which OpenCV cannot write."""
    import zlib  # noqa: PLC0415

    m, n = gray.shape
    depth = 8 if gray.dtype == np.uint8 else 16
    px = np.stack([gray, alpha], axis=-1).astype(">u2" if depth == 16 else np.uint8)
    rows = np.concatenate([np.zeros((m, 1), np.uint8), px.reshape(m, -1).view(np.uint8)], axis=1)  # filter 0
    ihdr = int(n).to_bytes(4, "big") + int(m).to_bytes(4, "big") + bytes([depth, 4, 0, 0, 0])
    return (
        _md.PNG_SIGNATURE
        + _md.png_chunk(b"IHDR", ihdr)
        + _md.png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _md.png_chunk(b"IEND", b"")
    )


def _encode_tiff(color: np.ndarray, alpha, icc: bytes | None = None) -> bytes:
    import tifffile  # noqa: PLC0415

    photometric = "rgb" if color.ndim == 3 else "minisblack"
    extrasamples = None
    arr = color
    if alpha is not None:
        arr = np.dstack([color, alpha])
        extrasamples = ["unassalpha"]
    buf = _io.BytesIO()
    tifffile.imwrite(
        buf,
        np.ascontiguousarray(arr),
        photometric=photometric,
        planarconfig="contig",
        extrasamples=extrasamples,
        compression="zlib",
        metadata=None,
        iccprofile=icc,
    )
    return buf.getvalue()


def write_array(path, arr, *, overwrite: bool = False):
    """Write an array (e.g. a float blur-radius map) to ``.npy`` or TIFF, atomically.

    ``.npy`` stores any shape and dtype exactly. ``.tif``/``.tiff`` stores a
    2-D array: float64 and float16 as float32, bool as uint8, other
    numeric types as they are (deflate compressed; readable by tifffile,
    OpenCV, ImageJ/Fiji, GDAL). NaN values are kept. NumPy or CuPy input.
    """
    path = os.fspath(path)
    fmt = image_format(path, "array")
    a = _to_host(arr)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ValueError(f"cannot write array of dtype {a.dtype}; expected a numeric array")
    buf = _io.BytesIO()
    if fmt == "npy":
        np.save(buf, a, allow_pickle=False)
    else:
        import tifffile  # noqa: PLC0415

        if a.ndim != 2:
            raise ValueError(f"TIFF maps must be 2-D, got shape {a.shape}; use .npy for other shapes")
        if a.dtype.kind == "f" and a.dtype != np.float32:
            a = a.astype(np.float32)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8)
        tifffile.imwrite(buf, np.ascontiguousarray(a), photometric="minisblack", compression="zlib", metadata=None)
    _atomic_write(path, buf.getvalue(), overwrite)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it onto ``path``.

    Without ``overwrite`` the final step is a hard link, which fails
    atomically if ``path`` appeared in the meantime (where the file system
    has no hard links: a check then :func:`os.replace`). Inside
    :func:`output_batch` the rename waits for the batch's end.
    """
    if not overwrite and os.path.lexists(path):  # (a dangling link too: the name is taken)
        raise output_exists_error(path)
    path = _output_target(path)
    tmp = _write_temporary(path, data, overwrite)
    batch = _BATCH.get()
    if batch is not None and batch.add(tmp, path, overwrite):
        return
    _publish(tmp, path, overwrite)


def _output_target(path: str, what: str | None = None) -> str:
    """The file a write to ``path`` replaces: ``path``, or the file a symbolic link there
    points to (written through, as the shell's ``>`` does: the link stays). A device, pipe or
    socket there is refused (``what`` names it; default ``'output <path>'``): the rename would
    put a regular file in its place."""
    path = os.fspath(path)
    # the path itself first: the kernel follows every link, /proc's fd links too, whose
    # realpath ('/proc/<pid>/fd/pipe:[…]') names no file and would look free
    check_regular_output(path, what or f"output {path}")
    if not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    check_regular_output(target, what or f"output {path}")
    return target


def output_exists_error(path, label: str = "output", hint: str = "pass overwrite=True") -> FileExistsError:
    """The error for an output name that is taken (without overwrite); a symbolic link to a
    missing file is said to be one (``exists`` alone puzzled: the file it names is not there)."""
    path = os.fspath(path)
    if os.path.islink(path) and not os.path.exists(path):
        try:
            target = os.path.realpath(path)  # the end of a chain of links
        except (OSError, ValueError):
            target = None
        if target is None or target == os.path.abspath(path):
            return FileExistsError(f"{label} {path} is a symbolic link that leads to no file (a loop?); "
                                   "remove it or choose another name")
        return FileExistsError(f"{label} {path} is a symbolic link to a missing file ({target}); "
                               f"{hint} to write through it")
    return FileExistsError(f"{label} file exists: {path} ({hint} to replace it)")


def check_regular_output(path: str, what: str | None = None) -> None:
    """Raise ``ValueError`` if ``path`` exists (links followed) and is neither a regular file nor a
    folder (a folder is refused by the writers with its own message); ``what`` names it in the
    message (default ``'output <path>'``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # not there (yet), or not ours to look at: the write says why
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(f"{what or f'output {path}'} is not a regular file (a device, pipe or socket); "
                         "give the path of a file")


def _write_temporary(path: str, data: bytes, overwrite: bool) -> str:
    """``data`` in a new temporary file beside ``path`` (on disk, synced); its name."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"output is a folder: {path}")
    exists = os.path.lexists(path)
    if exists and not overwrite:
        raise output_exists_error(path)
    mode = 0o666 & ~_umask()
    if exists:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise type(exc)(f"cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.strerror:  # a full disk, a quota: name the file
            raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}") from None
        raise
    return tmp


def _publish(tmp: str, path: str, overwrite: bool) -> None:
    """Rename the temporary ``tmp`` onto ``path`` (removing ``tmp`` whatever happens)."""
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # after os.link the temporary name is still there


def _link_new(tmp: str, path: str) -> None:
    """Give ``tmp`` the new name ``path``: a hard link, which fails atomically if ``path``
    exists (where the file system has no hard links: a check, then a rename)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise output_exists_error(path) from None
    except OSError:  # no hard links here (FAT, some network shares)
        if os.path.lexists(path):
            raise output_exists_error(path) from None
        os.replace(tmp, path)


class _Batch:
    """Outputs written to temporaries, published together (:func:`output_batch`)."""

    def __init__(self):
        self.pending: list = []  # (temporary, path, overwrite)
        self.open = True

    def add(self, tmp, path, overwrite) -> bool:
        """Hold ``tmp`` for the batch's end; False once the batch has ended (publish at once)."""
        if not self.open:
            return False
        self.pending.append((tmp, path, overwrite))
        return True

    def discard(self) -> None:
        self.open = False
        for tmp, _path, _ow in self.pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def publish(self) -> None:
        """New files first, as hard links (each fails atomically if its name appeared meanwhile; on a
        failure the links made so far are removed: they are this batch's own new files), then the
        replacements (an old file replaced cannot be brought back; they come last, once nothing new can
        fail but a rename itself)."""
        self.open = False
        linked: list = []
        try:
            for tmp, path, overwrite in self.pending:
                if not overwrite and os.path.lexists(path):
                    raise output_exists_error(path)
            for tmp, path, overwrite in self.pending:
                if not overwrite:
                    _link_new(tmp, path)
                    linked.append(path)
            for tmp, path, overwrite in self.pending:
                if overwrite:
                    os.replace(tmp, path)
        except BaseException:
            for path in linked:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        finally:
            self.discard()  # temporaries still there (after os.link, or after a failure)


_BATCH: contextvars.ContextVar = contextvars.ContextVar("gpudeblur_output_batch", default=None)


@contextlib.contextmanager
def output_batch():
    """Write a command's outputs all or none: inside the block every writer
    (:func:`write_image`, :func:`write_array`, reports) writes its temporary
    file; at the block's end they are published together (a full disk while
    writing OUT left the side outputs written before it behind). If anything
    in the block fails, every temporary is removed and no output appears. At
    the end the new files are linked into place first (any that failed takes
    the ones linked before it away again), then the replaced ones (``overwrite``)
    are renamed over the old, which cannot be undone. A block inside another
    joins it; a write after the block has ended is published at once."""
    outer = _BATCH.get()
    if outer is not None and outer.open:
        yield  # joins the enclosing batch
        return
    batch = _Batch()
    token = _BATCH.set(batch)
    try:
        yield
    except BaseException:
        batch.discard()
        raise
    finally:
        _BATCH.reset(token)
    batch.publish()
