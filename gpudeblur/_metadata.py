"""Colour profile (ICC) and EXIF blocks of image files: found in the bytes read,
put into the bytes written. Used by :mod:`gpudeblur.io`.

Where they live:

=====  ===========================================  ==============================
file   ICC profile                                  EXIF
=====  ===========================================  ==============================
PNG    ``iCCP`` chunk (zlib-compressed; the first)  ``eXIf`` chunk
JPEG   ``APP2 "ICC_PROFILE\\0"`` segments (≤ 255,    ``APP1 "Exif\\0\\0"`` segment
       each ≤ 65 519 bytes of the profile)
TIFF   tag 34675 (InterColorProfile)                (not carried: a sub-IFD)
=====  ===========================================  ==============================

The EXIF block is the TIFF-structured payload (from its ``II*\\0``/``MM\\0*``
header), without JPEG's ``Exif\\0\\0`` prefix. XMP, IPTC and PNG's ``sRGB``/
``gAMA``/``cHRM`` chunks are not carried.

:func:`read_metadata` never raises for a malformed block: it leaves the
block out and describes it in its list of problems (the pixel decoder
reports files that are broken as a whole). The EXIF helpers raise
:class:`MetadataError`.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "MetadataError",
    "read_metadata",
    "icc_colour_space",
    "check_exif",
    "exif_orientation",
    "exif_upright",
    "exif_with_size",
    "jpeg_segments",
    "png_chunk",
    "png_with_metadata",
    "jpeg_with_metadata",
    "PNG_SIGNATURE",
    "MAX_ICC_BYTES",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest colour profile read (bytes); real profiles are a few kB to ~1 MB.
MAX_ICC_BYTES = 16 << 20
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
    """An ICC profile or EXIF block is present but cannot be used."""


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
    """``(type, payload, crc_ok)`` of each chunk (stops after IEND or at a truncated chunk)."""
    i, n = len(PNG_SIGNATURE), len(data)
    while i + 12 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        if i + 12 + length > n:
            return
        kind = data[i + 4 : i + 8]
        body = data[i + 4 : i + 8 + length]
        crc_ok = zlib.crc32(body) == int.from_bytes(data[i + 8 + length : i + 12 + length], "big")
        yield kind, body[4:], crc_ok
        if kind == b"IEND":
            return
        i += 12 + length


def _inflate_icc(stream: bytes) -> bytes:
    """A zlib-compressed profile, refusing more than :data:`MAX_ICC_BYTES`."""
    d = zlib.decompressobj()
    out = d.decompress(stream, MAX_ICC_BYTES + 1)
    if len(out) > MAX_ICC_BYTES:
        raise MetadataError(f"profile larger than {MAX_ICC_BYTES >> 20} MiB")
    if not d.eof:
        raise MetadataError("truncated zlib stream")
    return out


def _png_metadata(data: bytes):
    icc = exif = None
    seen_icc = seen_exif = False
    problems = []
    for kind, payload, crc_ok in _png_chunks(data):
        if kind == b"iCCP" and not seen_icc:  # only the first counts (PNG allows one)
            seen_icc = True
            # profile name (1-79 bytes), NUL, compression method 0, zlib stream
            nul = payload.find(b"\x00")
            try:
                if not crc_ok:
                    raise MetadataError("bad CRC")
                if nul < 1 or nul + 2 > len(payload) or payload[nul + 1] != 0:
                    raise MetadataError("bad iCCP header")
                icc = _inflate_icc(payload[nul + 2 :])
                _check_icc(icc)
            except (zlib.error, MetadataError) as exc:
                icc = None
                problems.append(f"colour profile (iCCP chunk): {_first_line(exc)}")
        elif kind == b"eXIf" and not seen_exif:
            seen_exif = True
            block = payload[len(_JPEG_EXIF) :] if payload.startswith(_JPEG_EXIF) else payload  # older writers
            try:
                if not crc_ok:
                    raise MetadataError("bad CRC")
                check_exif(block)
                exif = bytes(block)
            except MetadataError as exc:
                problems.append(f"EXIF (eXIf chunk): {_first_line(exc)}")
    return icc, exif, problems


def jpeg_segments(data: bytes):
    """``(marker, start, end)`` of each marker segment's payload ``data[start:end]``
    up to and including the first start-of-scan (SOS, ``0xDA``); stops early at
    anything that is not a marker, at EOI or at a segment running past the data."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        if marker == 0xD9:  # EOI before any scan
            return
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if seglen < 2 or i + 2 + seglen > n:
            return
        yield marker, i + 4, i + 2 + seglen
        if marker == 0xDA:
            return
        i += 2 + seglen


def _jpeg_metadata(data: bytes):
    chunks, counts, exif, problems = {}, set(), None, []
    bad_icc = False
    for marker, s, e in jpeg_segments(data):
        payload = data[s:e]
        if marker == 0xE2 and payload.startswith(_JPEG_ICC):
            if len(payload) < len(_JPEG_ICC) + 2:
                bad_icc = True
                continue
            seq, total = payload[len(_JPEG_ICC)], payload[len(_JPEG_ICC) + 1]
            counts.add(total)
            if seq in chunks:
                bad_icc = True
            chunks[seq] = payload[len(_JPEG_ICC) + 2 :]
        elif marker == 0xE1 and payload.startswith(_JPEG_EXIF) and exif is None:
            try:
                check_exif(payload[len(_JPEG_EXIF) :])
                exif = bytes(payload[len(_JPEG_EXIF) :])
            except MetadataError as exc:
                problems.append(f"EXIF (APP1 segment): {_first_line(exc)}")
    icc = None
    if chunks or bad_icc:
        count = counts.pop() if len(counts) == 1 else None
        if bad_icc or count is None or sorted(chunks) != list(range(1, count + 1)):
            problems.append(f"colour profile (APP2 segments): chunks {sorted(chunks)} of "
                            f"{'/'.join(map(str, sorted(counts))) or '?'}, expected 1..count once each")
        else:
            icc = b"".join(chunks[k] for k in range(1, count + 1))  # by sequence number, not file order
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


def _ifd(exif: bytes, e: str, offset: int):
    """Entries ``[(position, tag, type, count)]`` of the IFD at ``offset`` and the
    position of its next-IFD pointer."""
    if offset < 8 or offset + 2 > len(exif):
        raise MetadataError(f"IFD offset {offset} outside the block")
    (n,) = struct.unpack_from(e + "H", exif, offset)
    if offset + 2 + 12 * n + 4 > len(exif):
        raise MetadataError(f"IFD at {offset} with {n} entries runs past the block")
    entries = []
    for i in range(n):
        p = offset + 2 + 12 * i
        tag, typ, count = struct.unpack_from(e + "HHI", exif, p)
        entries.append((p, tag, typ, count))
    return entries, offset + 2 + 12 * n


def check_exif(exif: bytes) -> None:
    """Raise :class:`MetadataError` unless ``exif`` starts with a readable IFD0."""
    e, ifd0 = _header(exif)
    _ifd(exif, e, ifd0)


def _value(exif, e, p, typ):
    """A single SHORT or LONG value stored in the entry at ``p`` (else None)."""
    if typ == _SHORT:
        return struct.unpack_from(e + "H", exif, p + 8)[0]
    if typ == _LONG:
        return struct.unpack_from(e + "I", exif, p + 8)[0]
    return None


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (1-8; 1 when absent or out of range). Stored as SHORT
    by the standard; a LONG is read as its value too."""
    e, ifd0 = _header(exif)
    for p, tag, typ, count in _ifd(exif, e, ifd0)[0]:
        if tag == _TAG_ORIENTATION and count == 1:
            v = _value(exif, e, p, typ)
            return v if v is not None and 1 <= v <= 8 else 1
    return 1


def exif_upright(exif: bytes) -> bytes:
    """EXIF for pixels turned upright: Orientation 1, and no IFD1 (the embedded
    thumbnail is of the unturned, unprocessed image). The rest is kept byte
    for byte."""
    b = bytearray(exif)
    e, ifd0 = _header(b)
    entries, next_ptr = _ifd(b, e, ifd0)
    for p, tag, typ, count in entries:
        if tag == _TAG_ORIENTATION and count == 1 and typ in (_SHORT, _LONG):
            struct.pack_into(e + ("H" if typ == _SHORT else "I"), b, p + 8, 1)
    struct.pack_into(e + "I", b, next_ptr, 0)  # drop the thumbnail's IFD1
    return bytes(b)


def exif_with_size(exif: bytes, height: int, width: int) -> bytes:
    """EXIF with its PixelXDimension/PixelYDimension, where present, set to
    ``width`` × ``height`` (the image written)."""
    b = bytearray(exif)
    e, ifd0 = _header(b)
    sub = [p for p, tag, typ, count in _ifd(b, e, ifd0)[0] if tag == _TAG_EXIF_IFD and count == 1]
    if not sub:
        return bytes(b)
    for p, tag, typ, count in _ifd(b, e, struct.unpack_from(e + "I", b, sub[0] + 8)[0])[0]:
        if tag in (_TAG_PIXEL_X, _TAG_PIXEL_Y) and count == 1:
            value = width if tag == _TAG_PIXEL_X else height
            if typ == _LONG:
                struct.pack_into(e + "I", b, p + 8, value)
            elif typ == _SHORT and value < 65536:
                struct.pack_into(e + "H", b, p + 8, value)
    return bytes(b)


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """``png`` with an ``iCCP`` and an ``eXIf`` chunk right after its IHDR. A given
    profile replaces any ``iCCP``, ``sRGB``, ``gAMA`` and ``cHRM`` chunk there (a
    profile overrides them), a given EXIF any ``eXIf`` chunk."""
    if icc is None and exif is None:
        return png
    extra = b""
    drop = set()
    if icc is not None:
        extra += png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc, 9))
        drop |= {b"iCCP", b"sRGB", b"gAMA", b"cHRM"}
    if exif is not None:
        extra += png_chunk(b"eXIf", exif)
        drop.add(b"eXIf")
    out, i = [png[: len(PNG_SIGNATURE)]], len(PNG_SIGNATURE)
    for kind, payload, _ in _png_chunks(png):
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


def jpeg_with_metadata(jpeg: bytes, icc: bytes | None, exif: bytes | None) -> tuple[bytes, list[str]]:
    """``jpeg`` with an APP1 EXIF segment and APP2 ICC segments after its SOI and
    APP0 (JFIF) segments, and the list of blocks left out because JPEG cannot
    hold them (EXIF over 65 527 bytes, a profile over 255 segments)."""
    left_out = []
    if exif is not None and len(exif) + len(_JPEG_EXIF) > _JPEG_SEGMENT_MAX:
        left_out.append(f"EXIF block of {len(exif)} bytes does not fit a JPEG segment")
        exif = None
    if icc is not None and len(icc) > 255 * _ICC_CHUNK_MAX:
        left_out.append(f"colour profile of {len(icc)} bytes needs more than 255 JPEG segments")
        icc = None
    if icc is None and exif is None:
        return jpeg, left_out
    extra = b""
    if exif is not None:
        extra += _jpeg_segment(0xE1, _JPEG_EXIF + exif)
    if icc is not None:
        parts = [icc[k : k + _ICC_CHUNK_MAX] for k in range(0, len(icc), _ICC_CHUNK_MAX)]
        for seq, part in enumerate(parts, 1):
            extra += _jpeg_segment(0xE2, _JPEG_ICC + bytes([seq, len(parts)]) + part)
    i = 2  # after SOI; keep the APP0 (JFIF/JFXX) segments first, as JFIF asks
    while jpeg[i : i + 2] == b"\xff\xe0":
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    return jpeg[:i] + extra + jpeg[i:], left_out
