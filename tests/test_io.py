"""Image IO: round trips, channel order, bit depth, alpha, atomic writes, bad files.

References are independent decoders/encoders: OpenCV's ``imread``/``imwrite``
(BGR order) and tifffile (RGB order) are used to create or check files
byte for byte, so a channel swap or a rescaling in gpudeblur.io shows up.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import tifffile

from gpudeblur.io import ImageMeta, ImageWriteWarning, read_image, write_array, write_image

MAXVAL = {8: 255, 16: 65535}
DTYPE = {8: np.uint8, 16: np.uint16}


def _samples(shape, depth, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, MAXVAL[depth] + 1, size=shape, dtype=np.int64).astype(DTYPE[depth])


def _layout_shape(layout, m=9, n=13):
    return {"gray": (m, n), "graya": (m, n, 2), "rgb": (m, n, 3), "rgba": (m, n, 4)}[layout]


def _write_reference(path, arr, layout):
    """Write RGB(A)-ordered samples with an independent encoder."""
    if path.endswith(".png"):
        if layout == "graya":
            pytest.skip("OpenCV cannot write gray+alpha PNG (covered by the round trip)")
        bgr = arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.ndim == 3 else arr
        assert cv2.imwrite(path, bgr)
    else:
        kw = {}
        if layout in ("graya", "rgba"):
            kw["extrasamples"] = ["unassalpha"]
        tifffile.imwrite(path, arr, photometric="rgb" if layout in ("rgb", "rgba") else "minisblack", **kw)


# ---------------------------------------------------------------------------
# reading and writing: exact samples, channel order, depth, alpha
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("layout", ["gray", "graya", "rgb", "rgba"])
def test_read_matches_reference_encoder(tmp_path, ext, depth, layout):
    arr = _samples(_layout_shape(layout), depth)
    path = str(tmp_path / f"ref{ext}")
    _write_reference(path, arr, layout)
    img, meta = read_image(path)
    assert img.dtype == np.float32
    assert meta.bit_depth == depth and meta.dtype == DTYPE[depth]
    color = {"gray": arr, "graya": arr[..., 0], "rgb": arr, "rgba": arr[..., :3]}[layout]
    assert img.shape == color.shape
    np.testing.assert_array_equal(np.rint(img * MAXVAL[depth]).astype(np.int64), color.astype(np.int64))
    if layout in ("graya", "rgba"):
        assert meta.alpha is not None and meta.alpha.dtype == DTYPE[depth]
        np.testing.assert_array_equal(meta.alpha, arr[..., -1])
    else:
        assert meta.alpha is None


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("layout", ["gray", "graya", "rgb", "rgba"])
def test_round_trip_is_exact(tmp_path, ext, depth, layout):
    arr = _samples(_layout_shape(layout), depth, seed=1)
    src = str(tmp_path / f"src{ext}")
    if layout == "graya" and ext == ".png":  # written by us, checked by OpenCV below
        write_image(src, arr[..., 0], ImageMeta(depth, np.dtype(DTYPE[depth]), 1, arr[..., 1]))
        dec = cv2.imread(src, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(dec[..., 0], arr[..., 0])
        np.testing.assert_array_equal(dec[..., 3], arr[..., 1])
    else:
        _write_reference(src, arr, layout)
    img, meta = read_image(src)
    dst = str(tmp_path / f"dst{ext}")
    write_image(dst, img, meta)
    img2, meta2 = read_image(dst)
    np.testing.assert_array_equal(img2, img)
    assert meta2.bit_depth == depth and meta2.channels == meta.channels
    if meta.alpha is None:
        assert meta2.alpha is None
    else:
        assert meta2.alpha.dtype == meta.alpha.dtype
        np.testing.assert_array_equal(meta2.alpha, meta.alpha)


def test_known_pixel_channel_order(tmp_path):
    """A pure red pixel is (1, 0, 0) after reading and red in the written file."""
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)  # red
    rgb[3, 4] = (0, 0, 255)  # blue
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    img, meta = read_image(tmp_path / "in.png")
    np.testing.assert_array_equal(img[1, 2], [1, 0, 0])
    np.testing.assert_array_equal(img[3, 4], [0, 0, 1])
    write_image(tmp_path / "out.png", img, meta)
    write_image(tmp_path / "out.tif", img, meta)
    bgr = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[1, 2], [0, 0, 255])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif")[1, 2], [255, 0, 0])


def test_16bit_stays_16bit_and_float_is_quantized(tmp_path):
    arr = _samples((6, 7, 3), 16)
    tifffile.imwrite(tmp_path / "in.tif", arr, photometric="rgb")
    img, meta = read_image(tmp_path / "in.tif")
    out = np.clip(img * 1.5 - 0.2, -1, 2)  # values outside [0, 1] are clipped on writing
    write_image(tmp_path / "out.png", out, meta)
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == np.uint16
    expected = np.rint(np.clip(out.astype(np.float64), 0, 1) * 65535).astype(np.uint16)
    assert np.abs(back.astype(np.int64) - expected).max() <= 1  # float32 rounding


def test_bit_depth_override_and_alpha_rescaled(tmp_path):
    arr = _samples((5, 6, 4), 8)
    cv2.imwrite(str(tmp_path / "in.png"), arr[..., [2, 1, 0, 3]])
    img, meta = read_image(tmp_path / "in.png")
    write_image(tmp_path / "out.png", img, meta, bit_depth=16)
    img2, meta2 = read_image(tmp_path / "out.png")
    assert meta2.bit_depth == 16
    np.testing.assert_array_equal(meta2.alpha, arr[..., 3].astype(np.uint16) * 257)
    np.testing.assert_allclose(img2, img, atol=1e-6)


def test_float_tiff_read_and_write(tmp_path):
    rng = np.random.default_rng(3)
    f = (rng.random((8, 9)) * 3 - 1).astype(np.float32)  # outside [0, 1] on purpose
    tifffile.imwrite(tmp_path / "f.tif", f)
    img, meta = read_image(tmp_path / "f.tif")
    assert meta.bit_depth == 32
    np.testing.assert_array_equal(img, f)  # floats as stored, not clipped
    write_image(tmp_path / "g.tif", img, meta)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "g.tif"), f)
    with pytest.warns(ImageWriteWarning, match="16-bit"):
        write_image(tmp_path / "g.png", img, meta)
    assert cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_planar_and_lzw_tiff(tmp_path):
    arr = _samples((6, 7, 3), 8, seed=4)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(arr, 2, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(np.rint(read_image(tmp_path / "planar.tif")[0] * 255), arr)
    cv2.imwrite(str(tmp_path / "lzw.tif"), arr[..., ::-1])  # OpenCV writes LZW
    np.testing.assert_array_equal(np.rint(read_image(tmp_path / "lzw.tif")[0] * 255), arr)


def test_multipage_tiff_reads_first_page_with_warning(tmp_path):
    pages = _samples((3, 5, 6), 8)
    tifffile.imwrite(tmp_path / "m.tif", pages, photometric="minisblack")
    with pytest.warns(UserWarning, match="3 pages"):
        img, _ = read_image(tmp_path / "m.tif")
    np.testing.assert_array_equal(np.rint(img * 255), pages[0])


def test_jpeg_readable(tmp_path, natural_rgb):
    rgb8 = np.rint(natural_rgb[:32, :40] * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "c.jpg"), rgb8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(tmp_path / "g.jpeg"), rgb8[..., 0], [cv2.IMWRITE_JPEG_QUALITY, 98])
    img, meta = read_image(tmp_path / "c.jpg")
    assert img.shape == (32, 40, 3) and meta.bit_depth == 8 and meta.format == "jpeg"
    assert np.abs(img * 255 - rgb8).mean() < 3  # lossy, but the channel order is right
    gray, _ = read_image(tmp_path / "g.jpeg")
    assert gray.shape == (32, 40)
    write_image(tmp_path / "o.jpg", img, meta)
    assert read_image(tmp_path / "o.jpg")[0].shape == (32, 40, 3)
    with pytest.raises(ValueError, match="8-bit"):
        write_image(tmp_path / "p.jpg", img, bit_depth=16)


def test_jpeg_quality(tmp_path, natural_rgb):
    """A JPEG is encoded at ``jpeg_quality`` (default JPEG_QUALITY, 95): its luminance table is libjpeg's at that
    quality, and its pixels equal OpenCV's encoding at it; other formats and bad values are refused."""
    from gpudeblur._jpeg import quantization_tables
    from gpudeblur.io import JPEG_QUALITY

    img = natural_rgb[:48, :64]
    rgb8 = np.rint(img * 255).astype(np.uint8)

    def table(data):
        tables, (_, _, comps), _ = quantization_tables(data)
        return tables[comps[0][3]]

    def opencv(q):
        return cv2.imencode(".jpg", rgb8[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()

    assert JPEG_QUALITY == 95
    for q, name in ((None, "d.jpg"), (40, "q40.jpeg"), (100, "q100.jpg"), (1, "q1.jpg")):
        write_image(tmp_path / name, img, jpeg_quality=q)
        data = (tmp_path / name).read_bytes()
        ref = opencv(JPEG_QUALITY if q is None else q)
        np.testing.assert_array_equal(table(data), table(ref))
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                                      cv2.imdecode(np.frombuffer(ref, np.uint8), cv2.IMREAD_COLOR))
    with pytest.raises(ValueError, match="jpeg_quality applies to JPEG outputs"):
        write_image(tmp_path / "o.png", img, jpeg_quality=90)
    for bad in (0, 101, 90.0, True, "90"):
        with pytest.raises(ValueError, match="jpeg_quality must be an integer from 1 to 100"):
            write_image(tmp_path / "o.jpg", img, jpeg_quality=bad)
    assert not (tmp_path / "o.jpg").exists() and not (tmp_path / "o.png").exists()


def test_jpeg_exif_orientation_applied(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (250, 0, 0)  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    img, _ = read_image(tmp_path / "o.jpg")
    assert img.shape == (30, 20, 3)  # displayed upright: the red band is now on top
    assert img[:5, :, 0].mean() > 0.9 and img[-5:, :, 0].mean() < 0.1


def test_jpeg_drops_alpha_with_warning(tmp_path):
    arr = _samples((5, 6, 4), 8)
    with pytest.warns(ImageWriteWarning, match="alpha"):
        write_image(tmp_path / "a.jpg", arr)
    assert cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_UNCHANGED).shape == (5, 6, 3)


def test_npy_input(tmp_path):
    a = np.random.default_rng(0).random((5, 6)).astype(np.float64)
    np.save(tmp_path / "a.npy", a)
    img, meta = read_image(tmp_path / "a.npy")
    assert img.dtype == np.float32 and meta.bit_depth == 32
    np.testing.assert_allclose(img, a, rtol=1e-7)


def test_cupy_like_input_is_moved_to_host(tmp_path):
    class FakeDeviceArray:  # has .get() like a CuPy array
        def __init__(self, a):
            self._a = a

        def get(self):
            return self._a

    write_image(tmp_path / "x.png", FakeDeviceArray(np.full((3, 4), 0.5)))
    assert cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)[0, 0] == 128


# ---------------------------------------------------------------------------
# atomic writes and overwrite protection
# ---------------------------------------------------------------------------


def test_atomic_write_no_temp_no_overwrite(tmp_path):
    p = tmp_path / "x.png"
    write_image(p, np.zeros((4, 4)))
    before = p.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    with pytest.raises(FileExistsError, match="exists"):
        write_image(p, np.ones((4, 4)))
    assert p.read_bytes() == before
    write_image(p, np.ones((4, 4)), overwrite=True)
    assert p.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "n.png", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="unsupported output format"):
        write_image(tmp_path / "n.bmpx", np.zeros((4, 4)))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", boom)
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_image(tmp_path / "n.png", np.zeros((4, 4)))
    assert os.listdir(tmp_path) == []


def test_missing_output_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        write_image(tmp_path / "nope" / "x.png", np.zeros((4, 4)))


def test_alpha_shape_must_match(tmp_path):
    meta = ImageMeta(8, np.dtype(np.uint8), 1, np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "x.png", np.zeros((4, 4)), meta)
    assert os.listdir(tmp_path) == []


def test_write_array_npy_and_tif(tmp_path):
    a = np.random.default_rng(0).random((7, 8))
    a[0, 0] = np.nan  # kept
    write_array(tmp_path / "m.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), a)
    write_array(tmp_path / "m.tif", a)
    t = tifffile.imread(tmp_path / "m.tif")
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t, a.astype(np.float32))
    with pytest.raises(FileExistsError):
        write_array(tmp_path / "m.npy", a)
    write_array(tmp_path / "m.npy", a * 2, overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), a * 2)
    with pytest.raises(ValueError, match="2-D"):
        write_array(tmp_path / "c.tif", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="unsupported output format"):
        write_array(tmp_path / "c.png", a)
    assert sorted(os.listdir(tmp_path)) == ["m.npy", "m.tif"]


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------


def _truncate(path, frac=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * frac)])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_files_rejected(tmp_path, ext, natural_rgb):
    p = str(tmp_path / f"t{ext}")
    rgb8 = np.rint(natural_rgb[:48, :48] * 255).astype(np.uint8)
    if ext == ".tif":
        tifffile.imwrite(p, rgb8, photometric="rgb")
    else:
        cv2.imwrite(p, rgb8[..., ::-1])
    read_image(p)
    _truncate(p)
    with pytest.raises(ValueError, match="(?i)truncated|cannot read|corrupt"):
        read_image(p)


def test_other_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image at all")
    with pytest.raises(ValueError, match="cannot decode"):
        read_image(tmp_path / "text.png")
    tifffile.imwrite(tmp_path / "i16.tif", np.zeros((4, 4), np.int16))
    with pytest.raises(ValueError, match="unsupported sample type int16"):
        read_image(tmp_path / "i16.tif")
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((4, 4, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ValueError, match="channel count 5"):
        read_image(tmp_path / "five.tif")
    np.save(tmp_path / "e.npy", np.zeros((0, 5)))
    with pytest.raises(ValueError, match="empty image"):
        read_image(tmp_path / "e.npy")


def _jpeg_bytes(natural_rgb):
    ok, buf = cv2.imencode(".jpg", np.rint(natural_rgb[:64, :64, ::-1] * 255).astype(np.uint8))
    assert ok
    return buf.tobytes()


def test_damaged_jpeg_and_png_reported_by_us_once(tmp_path, natural_rgb, capfd):
    """libjpeg decodes a JPEG whose scan data end early (half the file, then the end-of-image
    marker) without an error, filling the rest with garbage, and prints its complaint to stderr:
    now an error naming the file with libjpeg's words; other complaints a warning; libpng's
    error text goes into our one-line message instead of a line of its own."""
    j = _jpeg_bytes(natural_rgb)
    (tmp_path / "half.jpg").write_bytes(j[: len(j) // 2] + b"\xff\xd9")
    with pytest.raises(ValueError, match=r"half\.jpg: corrupt JPEG file, its image data end early "
                                         r"\(Corrupt JPEG data: premature end of data segment\)"):
        read_image(tmp_path / "half.jpg")
    b = bytearray(j)
    b[-2:-2] = b"\x00" * 7  # junk before the end marker: libjpeg's "extraneous bytes" complaint
    (tmp_path / "junk.jpg").write_bytes(bytes(b))
    with pytest.warns(UserWarning, match=r"junk\.jpg: the decoder reports damaged data \(Corrupt JPEG data: "
                                         r"7 extraneous bytes before marker 0xd9\)"):
        img, _ = read_image(tmp_path / "junk.jpg")
    assert img.shape == (64, 64, 3)
    from gpudeblur.io import jpeg_compression_noise

    capfd.readouterr()
    assert jpeg_compression_noise(tmp_path / "junk.jpg") > 0  # its own decode: libjpeg's words not on stderr
    assert capfd.readouterr().err == ""
    ok, png = cv2.imencode(".png", np.rint(natural_rgb[:64, :64] * 255).astype(np.uint8))
    p = bytearray(png.tobytes())
    for i in range(40):
        p[len(p) // 2 + i] ^= 0x5A
    (tmp_path / "flip.png").write_bytes(bytes(p))
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"flip\.png: .*corrupt \(libpng error: ") as info:
        read_image(tmp_path / "flip.png")
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""  # nothing of libpng's own on stderr
    (tmp_path / "ok.jpg").write_bytes(j)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact file: silent
        read_image(tmp_path / "ok.jpg")
    assert capfd.readouterr().err == ""


def test_gray_png_transparency_becomes_alpha(tmp_path):
    """A gray PNG's transparent value (tRNS chunk; OpenCV drops it) comes back as alpha, at 8, 16
    and 1 bit, and is written back (gray + alpha)."""
    from PIL import Image

    a8 = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(a8).save(tmp_path / "g8.png", transparency=128)
    img, meta = read_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(meta.alpha, np.where(a8 == 128, 0, 255))
    np.testing.assert_array_equal(img, a8 / np.float32(255))
    a16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(a16).save(tmp_path / "g16.png", transparency=40000)
    img, meta = read_image(tmp_path / "g16.png")
    assert meta.bit_depth == 16 and meta.alpha.dtype == np.uint16
    np.testing.assert_array_equal(meta.alpha, np.where(a16 == 40000, 0, 65535))
    bits = (np.arange(64).reshape(8, 8) % 2).astype(np.uint8) * 255
    Image.fromarray(bits).convert("1").save(tmp_path / "g1.png", transparency=1)
    img, meta = read_image(tmp_path / "g1.png")
    np.testing.assert_array_equal(meta.alpha, np.where(bits == 255, 0, 255))
    write_image(tmp_path / "back.png", img, meta)
    back = np.array(Image.open(tmp_path / "back.png").convert("LA"))
    np.testing.assert_array_equal(back[..., 1], meta.alpha)
    Image.fromarray(a8).save(tmp_path / "plain.png")  # no tRNS: no alpha
    assert read_image(tmp_path / "plain.png")[1].alpha is None


def test_stderr_capture_threads_and_no_temporary_folder(tmp_path, natural_rgb, monkeypatch):
    """Descriptor 2 is the process's: reads from worker threads do not redirect it (two threads
    swapping it left it on a deleted file), and a read where no temporary file can be made still
    works (nothing captured). Lines that are not the decoders' go back to stderr; libpng's metadata
    warnings are dropped (a damaged-data warning for a known-wrong sRGB profile would cry wolf)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from gpudeblur.io import _captured_stderr, _library_messages

    p = tmp_path / "ok.png"
    cv2.imwrite(str(p), np.rint(natural_rgb[:32, :32] * 255).astype(np.uint8))
    before = os.fstat(2)
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: read_image(p), range(200)))
    after = os.fstat(2)  # the same file as before (pytest's own capture file here)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert read_image(p)[0].shape == (32, 32, 3)
    monkeypatch.undo()
    with _captured_stderr() as lines:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\nsomething else\n")
    assert lines == ["libpng warning: iCCP: known incorrect sRGB profile", "something else"]


def test_library_messages_sorts_captured_lines(capfd):
    from gpudeblur.io import _library_messages

    got = _library_messages(["Corrupt JPEG data: 3 extraneous bytes", "libpng warning: eXIf: invalid", "other text"])
    assert got == ["Corrupt JPEG data: 3 extraneous bytes"]
    assert capfd.readouterr().err == "other text\n"


def test_animated_png_reads_its_first_frame_with_a_warning(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(UserWarning, match="anim.png is an animated PNG; reading its first frame only"):
        img, _ = read_image(tmp_path / "anim.png")
    np.testing.assert_array_equal(img, np.full((8, 8, 3), np.float32(10) / np.float32(255)))


def test_png_chunk_walk_survives_malformed_chunks(tmp_path):
    """A tRNS chunk cut short, a chunk length past the file's end: read as without them."""
    from gpudeblur.io import _png_chunks_before_data, _png_gray_transparent

    assert _png_gray_transparent(b"\x00", 8, np.dtype(np.uint8)) is None
    assert _png_gray_transparent(b"", 16, np.dtype(np.uint16)) is None
    assert _png_gray_transparent(b"\x01\x00", 8, np.dtype(np.uint8)) == 0  # (only the depth's bits count)
    import zlib

    def chunk(kind, body, crc=None):
        crc = zlib.crc32(kind + body) if crc is None else crc
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes(13))
    assert set(_png_chunks_before_data(head + (999).to_bytes(4, "big") + b"tRNS\x00")) == {b"IHDR"}
    assert _png_chunks_before_data(b"\x89PNG") == {}
    assert _png_chunks_before_data(head + chunk(b"tRNS", b"\x00\x80"))[b"tRNS"] == b"\x00\x80"
    assert b"tRNS" not in _png_chunks_before_data(head + chunk(b"tRNS", b"\x00\x80", crc=1))  # (libpng drops it)
    assert b"tRNS" not in _png_chunks_before_data(head + chunk(b"IDAT", b"") + chunk(b"tRNS", b"\x00\x80"))
    assert _png_gray_transparent(b"\x00\x80\x00", 8, np.dtype(np.uint8)) is None


def test_writes_refuse_special_files_and_write_through_links(tmp_path):
    """A device, FIFO or socket at the output path is refused (``os.replace`` would put a regular
    file in its place, with ``overwrite`` too: as root that replaced /dev/null); a symbolic link to
    a file is written through (the link stays, its target gets the new content, as the shell's
    ``>`` does)."""
    fifo = tmp_path / "out.npy"
    os.mkfifo(fifo)
    img = np.full((4, 4), 0.5, np.float32)
    with pytest.raises(FileExistsError, match="out.npy"):
        write_array(fifo, img)
    with pytest.raises(ValueError, match="out.npy is not a regular file"):
        write_array(fifo, img, overwrite=True)
    assert os.path.exists(fifo) and not os.path.isfile(fifo)
    target = tmp_path / "target.png"
    write_image(target, img)
    link = tmp_path / "link.png"
    os.symlink("target.png", link)
    write_image(link, np.zeros((4, 4), np.float32), overwrite=True)
    assert os.path.islink(link) and read_image(target)[0].max() == 0
    with pytest.raises(FileExistsError, match="output file exists: .*link.png"):
        write_image(link, img)  # the target exists: overwrite needed
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    # the name is taken (the CLI says the same), said as what it is: "exists" puzzled
    with pytest.raises(FileExistsError, match=r"dangling.png is a symbolic link to a missing file \(.*nowhere.png\); "
                       "pass overwrite=True to write through it"):
        write_image(tmp_path / "dangling.png", img)
    assert not (tmp_path / "nowhere.png").exists()
    from gpudeblur.cli import check_output_path

    with pytest.raises(FileExistsError, match="missing file .*use --overwrite to write through it"):
        check_output_path(None, tmp_path / "dangling.png", False, kind="image")
    write_image(tmp_path / "dangling.png", img, overwrite=True)
    assert os.path.islink(tmp_path / "dangling.png") and read_image(tmp_path / "nowhere.png")[0].shape == (4, 4)
    # a chain names its end; a loop is said to be one; a link into a missing folder is refused
    # before any work (the job ran, then the write failed naming only the folder)
    os.symlink("gone.png", tmp_path / "dl.png")
    os.symlink("dl.png", tmp_path / "chain.png")
    with pytest.raises(FileExistsError, match=r"chain.png is a symbolic link to a missing file \(.*gone.png\)"):
        write_image(tmp_path / "chain.png", img)
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(FileExistsError, match="loop.png is a symbolic link that leads to no file"):
        check_output_path(None, tmp_path / "loop.png", False, kind="image")
    os.symlink(os.path.join("nodir", "x.png"), tmp_path / "into_missing.png")
    for overwrite in (False, True):
        with pytest.raises(FileNotFoundError, match="into_missing.png is a symbolic link into a missing folder"):
            check_output_path(None, tmp_path / "into_missing.png", overwrite, kind="image")
    to_fifo = tmp_path / "to_fifo.npy"
    os.symlink("out.npy", to_fifo)
    with pytest.raises(ValueError, match="to_fifo.npy is not a regular file"):
        write_array(to_fifo, img, overwrite=True)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
def test_a_link_to_a_pipe_through_proc_is_refused_up_front(tmp_path):
    """A link to ``/proc/self/fd/N`` of a pipe (``/dev/stdout`` piped): its realpath names no file
    (``/proc/<pid>/fd/pipe:[…]``), so only the path itself, followed by the kernel, shows the pipe;
    refused before the work, with or without overwrite, not after it."""
    from gpudeblur.cli import check_output_path

    r, w = os.pipe()
    try:
        link = tmp_path / "report.json"
        os.symlink(f"/proc/self/fd/{w}", link)
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="report.json is not a regular file"):
                check_output_path(None, link, overwrite, kind=None, label="--report")
        arr = tmp_path / "map.npy"
        os.symlink(f"/proc/self/fd/{w}", arr)
        with pytest.raises(ValueError, match="map.npy is not a regular file"):  # the writers too
            write_array(arr, np.zeros(2), overwrite=True)
    finally:
        os.close(r)
        os.close(w)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_messages_are_one_line(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError) as info:
        read_image(tmp_path / "bad.tif")
    assert "\n" not in str(info.value) and "bad.tif" in str(info.value)


# ---------------------------------------------------------------------------
# bundled data
# ---------------------------------------------------------------------------


def test_bundled_sharp_image():
    from gpudeblur import data

    img = data.sharp()
    assert img.shape == (384, 384, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.1
    assert os.path.getsize(data.data_path("sharp.png")) < 400_000
    assert "public domain" in data.data_path("README.txt").read_text().lower()
