"""Colour profile (ICC) and EXIF blocks of image files: found in the bytes read,
put into the bytes written. Used by :mod:`gpudeblur.io`.

Where they live:

=====  ===========================================  ==============================
file   ICC profile                                  EXIF
=====  ===========================================  ==============================
PNG    ``iCCP`` chunk (zlib-compressed)             ``eXIf`` chunk
JPEG   ``APP2 "ICC_PROFILE\\0"`` segments (≤ 255,    ``APP1 "Exif\\0\\0"`` segment
       each ≤ 65 519 bytes of the profile)
TIFF   tag 34675 (InterColorProfile)                (not carried: a sub-IFD)
=====  ===========================================  ==============================

The EXIF block is the TIFF-structured payload (from its ``II*\\0``/``MM\\0*``
header), without JPEG's ``Exif\\0\\0`` prefix. Every parser here returns
``None`` for a block that is absent and raises :class:`MetadataError` for one
that is present but malformed; none of them decodes pixels.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "MetadataError",
    "read_metadata",
    "icc_colour_space",
    "exif_upright",
    "exif_orientation",
    "png_chunk",
    "png_with_metadata",
    "jpeg_with_metadata",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_ICC = b"ICC_PROFILE\x00"
_JPEG_EXIF = b"Exif\x00\x00"
#: Largest JPEG segment payload (the 2-byte length counts itself).
_JPEG_SEGMENT_MAX = 65533
_ICC_CHUNK_MAX = _JPEG_SEGMENT_MAX - len(_JPEG_ICC) - 2  # 65 519
_TAG_ORIENTATION = 0x0112
_TAG_EXIF_IFD = 0x8769
_TAG_PIXEL_X, _TAG_PIXEL_Y = 0xA002, 0xA003
_SHORT, _LONG = 3, 4


class MetadataError(ValueError):
    """An ICC profile or EXIF block is present but cannot be parsed."""


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def read_metadata(data: bytes, fmt: str) -> tuple[bytes | None, bytes | None, list[str]]:
    """``(icc_profile, exif, problems)`` of a file's bytes; ``fmt`` is
    ``'png'``, ``'jpeg'`` or ``'tiff'`` (anything else: nothing). A block that
    cannot be parsed is left out and described in ``problems``."""
    readers = {"png": _png_metadata, "jpeg": _jpeg_metadata, "tiff": _tiff_metadata}
    if fmt not in readers:
        return None, None, []
    return readers[fmt](data)


def _png_chunks(data: bytes):
    """``(type, payload)`` of each chunk (stops at IEND or a truncated chunk)."""
    i, n = len(_PNG_SIGNATURE), len(data)
    while i + 8 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if i + 12 + length > n:
            return
        yield kind, data[i + 8 : i + 8 + length]
        if kind == b"IEND":
            return
        i += 12 + length


def _png_metadata(data: bytes):
    icc = exif = None
    problems = []
    for kind, payload in _png_chunks(data):
        if kind == b"iCCP" and icc is None:
            # profile name (1-79 bytes), NUL, compression method 0, zlib stream
            nul = payload.find(b"\x00")
            try:
                if nul < 1 or nul + 2 > len(payload) or payload[nul + 1] != 0:
                    raise MetadataError("bad iCCP header")
                icc = zlib.decompress(payload[nul + 2 :])
                _check_icc(icc)
            except (zlib.error, MetadataError) as exc:
                icc = None
                problems.append(f"colour profile (iCCP chunk): {_first_line(exc)}")
        elif kind == b"eXIf" and exif is None:
            try:
                _check_exif(payload)
                exif = bytes(payload)
            except MetadataError as exc:
                problems.append(f"EXIF (eXIf chunk): {_first_line(exc)}")
    return icc, exif, problems


def _jpeg_segments(data: bytes):
    """``(marker, payload)`` of each marker segment before the first scan."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:
            i += 2
            continue
        if marker == 0xDA:  # start of scan: no more header segments
            return
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if seglen < 2 or i + 2 + seglen > n:
            return
        yield marker, data[i + 4 : i + 2 + seglen]
        i += 2 + seglen


def _jpeg_metadata(data: bytes):
    chunks, exif, problems = {}, None, []
    count = None
    for marker, payload in _jpeg_segments(data):
        if marker == 0xE2 and payload.startswith(_JPEG_ICC) and len(payload) >= len(_JPEG_ICC) + 2:
            seq, total = payload[len(_JPEG_ICC)], payload[len(_JPEG_ICC) + 1]
            count = total if count is None else count
            chunks.setdefault(seq, payload[len(_JPEG_ICC) + 2 :])
        elif marker == 0xE1 and payload.startswith(_JPEG_EXIF) and exif is None:
            try:
                _check_exif(payload[len(_JPEG_EXIF) :])
                exif = bytes(payload[len(_JPEG_EXIF) :])
            except MetadataError as exc:
                problems.append(f"EXIF (APP1 segment): {_first_line(exc)}")
    icc = None
    if chunks:
        if count is None or count == 0 or sorted(chunks) != list(range(1, count + 1)):
            problems.append(f"colour profile (APP2 segments): chunks {sorted(chunks)} of {count}, expected 1..{count}")
        else:
            icc = b"".join(chunks[k] for k in range(1, count + 1))
            try:
                _check_icc(icc)
            except MetadataError as exc:
                icc = None
                problems.append(f"colour profile (APP2 segments): {_first_line(exc)}")
    return icc, exif, problems


def _tiff_metadata(data: bytes):
    import io  # noqa: PLC0415

    import tifffile  # noqa: PLC0415

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            tag = tif.pages[0].tags.get(34675)
            icc = None if tag is None else bytes(tag.value)
    except Exception:  # the pixel decoder reports unreadable files; no profile here
        return None, None, []
    if icc is None:
        return None, None, []
    try:
        _check_icc(icc)
    except MetadataError as exc:
        return None, None, [f"colour profile (TIFF tag 34675): {_first_line(exc)}"]
    return icc, None, []


def _first_line(exc) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else type(exc).__name__


def _check_icc(icc: bytes) -> None:
    """An ICC profile's header: at least 128 bytes, ``acsp`` signature, declared
    size equal to the data's."""
    if len(icc) < 128 or icc[36:40] != b"acsp":
        raise MetadataError("not an ICC profile (no 'acsp' signature)")
    size = int.from_bytes(icc[:4], "big")
    if size != len(icc):
        raise MetadataError(f"ICC profile declares {size} bytes but has {len(icc)}")


def icc_colour_space(icc: bytes) -> str:
    """The profile's data colour space (``'RGB'``, ``'GRAY'``, ``'CMYK'``, ...)."""
    return icc[16:20].decode("latin-1").strip()


# ---------------------------------------------------------------------------
# EXIF (TIFF-structured)
# ---------------------------------------------------------------------------


def _header(exif: bytes) -> tuple[str, int]:
    """Byte order (``'<'`` or ``'>'``) and offset of the first IFD."""
    if exif[:4] == b"II*\x00":
        e = "<"
    elif exif[:4] == b"MM\x00*":
        e = ">"
    else:
        raise MetadataError("no TIFF header")
    if len(exif) < 8:
        raise MetadataError("truncated TIFF header")
    return e, struct.unpack_from(e + "I", exif, 4)[0]


def _ifd_entries(exif: bytes, e: str, offset: int):
    """``(position, tag, type, count)`` of each entry of the IFD at ``offset``."""
    if offset < 8 or offset + 2 > len(exif):
        raise MetadataError(f"IFD offset {offset} outside the block")
    (n,) = struct.unpack_from(e + "H", exif, offset)
    if offset + 2 + 12 * n > len(exif):
        raise MetadataError(f"IFD at {offset} with {n} entries runs past the block")
    for i in range(n):
        p = offset + 2 + 12 * i
        tag, typ, count = struct.unpack_from(e + "HHI", exif, p)
        yield p, tag, typ, count


def _check_exif(exif: bytes) -> None:
    e, ifd0 = _header(exif)
    for _ in _ifd_entries(exif, e, ifd0):
        pass


def exif_upright(exif: bytes, height: int, width: int) -> bytes:
    """EXIF for pixels already turned upright: Orientation set to 1 (top-left)
    and the EXIF pixel dimensions, where present, set to ``width`` × ``height``.
    Everything else is kept byte for byte."""
    b = bytearray(exif)
    e, ifd0 = _header(b)
    exif_ifd = None
    for p, tag, typ, count in list(_ifd_entries(b, e, ifd0)):
        if tag == _TAG_ORIENTATION and typ == _SHORT and count == 1:
            struct.pack_into(e + "H", b, p + 8, 1)
        elif tag == _TAG_EXIF_IFD and count == 1:
            exif_ifd = struct.unpack_from(e + "I", b, p + 8)[0]
    if exif_ifd is not None:
        for p, tag, typ, count in list(_ifd_entries(b, e, exif_ifd)):
            if tag in (_TAG_PIXEL_X, _TAG_PIXEL_Y) and count == 1:
                value = width if tag == _TAG_PIXEL_X else height
                if typ == _LONG:
                    struct.pack_into(e + "I", b, p + 8, value)
                elif typ == _SHORT and value < 65536:
                    struct.pack_into(e + "H", b, p + 8, value)
    return bytes(b)


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (1-8; 1 when absent)."""
    e, ifd0 = _header(exif)
    for p, tag, typ, count in _ifd_entries(exif, e, ifd0):
        if tag == _TAG_ORIENTATION and typ == _SHORT and count == 1:
            return struct.unpack_from(e + "H", exif, p + 8)[0]
    return 1


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """``png`` with an ``iCCP`` and an ``eXIf`` chunk after its IHDR (any ``sRGB``,
    ``gAMA``, ``cHRM``, ``iCCP`` or ``eXIf`` chunk there is replaced: a profile
    overrides them)."""
    if icc is None and exif is None:
        return png
    extra = b""
    if icc is not None:
        extra += png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc, 9))
    if exif is not None:
        extra += png_chunk(b"eXIf", exif)
    drop = {b"eXIf"} if icc is None else {b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"eXIf"}
    out, i = [png[: len(_PNG_SIGNATURE)]], len(_PNG_SIGNATURE)
    for kind, payload in _png_chunks(png):
        whole = png[i : i + 12 + len(payload)]
        i += 12 + len(payload)
        if kind in drop:
            continue
        out.append(whole)
        if kind == b"IHDR":
            out.append(extra)
    return b"".join(out)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def jpeg_with_metadata(jpeg: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """``jpeg`` with an APP1 EXIF segment and APP2 ICC segments after its SOI and
    APP0 (JFIF) segments. Raises :class:`MetadataError` when a block is too
    large for JPEG (EXIF over 65 527 bytes, a profile over 255 segments)."""
    if icc is None and exif is None:
        return jpeg
    extra = b""
    if exif is not None:
        if len(exif) + len(_JPEG_EXIF) > _JPEG_SEGMENT_MAX:
            raise MetadataError(f"EXIF block of {len(exif)} bytes does not fit a JPEG segment")
        extra += _jpeg_segment(0xE1, _JPEG_EXIF + exif)
    if icc is not None:
        parts = [icc[k : k + _ICC_CHUNK_MAX] for k in range(0, len(icc), _ICC_CHUNK_MAX)]
        if len(parts) > 255:
            raise MetadataError(f"colour profile of {len(icc)} bytes needs more than 255 JPEG segments")
        for seq, part in enumerate(parts, 1):
            extra += _jpeg_segment(0xE2, _JPEG_ICC + bytes([seq, len(parts)]) + part)
    i = 2  # after SOI; keep the APP0 (JFIF/JFXX) segments first, as JFIF asks
    while jpeg[i : i + 2] == b"\xff\xe0":
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    return jpeg[:i] + extra + jpeg[i:]
