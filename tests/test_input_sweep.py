"""Bad input a sweep of every command's error paths found (session 26): each is
refused at once, in one line, with exit 2 (a traceback, an out-of-memory exit 1,
a meaningless result with exit 0, or a minute's work before the error, before)."""

import os
import re
import time

import numpy as np
import pytest

from gpudeblur import cli, psf
from gpudeblur.blurmap import BlurMapEstimator, PSFCalibration
from gpudeblur.io import write_image


@pytest.fixture
def src(tmp_path, natural_rgb):
    p = tmp_path / "in.png"
    write_image(p, natural_rgb[:64, :64])
    return p


def _run(capsys, *argv):
    rc = cli.main(["-q", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line_refusal(rc, err, *words):
    assert rc == 2, (rc, err)
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def _calibration(tmp_path):
    r = np.arange(0.0, 8.01, 1.0)
    return PSFCalibration(list(r), [psf.disc(v) for v in r])


def test_unreadable_or_non_numeric_calibration_files(tmp_path, src, capsys):
    good = tmp_path / "good.npz"
    _calibration(tmp_path).save(good)
    raw = good.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2],  # zipfile.BadZipFile (a traceback, exit 1, before)
        "empty": b"",  # EOFError
    }
    for name, data in files.items():
        (tmp_path / f"{name}.npz").write_bytes(data)
    crc = bytearray(raw)  # a flipped byte inside the compressed-less member: Bad CRC-32 on reading it
    at = raw.find(b"\x93NUMPY", raw.find(b"psfs.npy")) + 200
    crc[at] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(crc))
    np.savez(tmp_path / "cplx.npz", radii=np.arange(5.0), psfs=np.ones((5, 3, 3), np.complex128))
    np.savez(tmp_path / "text.npz", radii=np.array(list("abcde")), psfs=np.ones((5, 3, 3)))
    for name, words in (("truncated", ["cannot read PSF calibration", "truncated.npz"]),
                        ("empty", ["cannot read PSF calibration", "empty.npz"]),
                        ("crc", ["cannot read PSF calibration", "crc.npz", "CRC"]),
                        ("cplx", ["cplx.npz", "psfs must hold real numbers", "complex128"]),
                        ("text", ["text.npz", "radii must hold real numbers"])):
        path = tmp_path / f"{name}.npz"
        with pytest.raises(ValueError) as exc:
            PSFCalibration.load(path)
        assert all(w in str(exc.value) for w in words) and "\n" not in str(exc.value), str(exc.value)
        for command in ("blurmap", "allinfocus"):
            rc, err = _run(capsys, command, src, tmp_path / ("o.npy" if command == "blurmap" else "o.png"),
                           "--psf", path)
            _one_line_refusal(rc, err, *words)
    # one line whatever the calibration holds (the dataclass printed every PSF)
    cal = _calibration(tmp_path)
    assert repr(cal) == "PSFCalibration(9 PSFs at radii 0..8)"
    assert "good.npz" in repr(PSFCalibration.load(good)) and "\n" not in repr(PSFCalibration.load(good))
    with pytest.raises(ValueError, match=r"needs the 'disc' or 'gaussian' PSF family, got PSFCalibration\(9 PSFs"):
        BlurMapEstimator(psf_family=cal, labeling=None).check_scale((512, 512), 2)


def test_noise_variances_outside_the_range_are_refused(tmp_path, src, capsys):
    for value in (1e300, 2.0, 1e-25):
        with pytest.raises(ValueError, match="noise must be a variance of intensities in"):
            BlurMapEstimator(noise=value)
    with pytest.raises(ValueError, match="noise_floor must be a variance"):
        BlurMapEstimator(noise_floor=1e-30)
    BlurMapEstimator(noise=1.0)
    BlurMapEstimator(noise=1e-20)
    for value, words in (("1e300", ["--noise", "float32's range"]), ("2", ["noise must be a variance"]),
                         ("1e-300", ["--noise", "smallest normal"])):
        rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--noise", value)  # a map of 8s, exit 0, before
        _one_line_refusal(rc, err, *words)
        assert not (tmp_path / "m.npy").exists()


def test_command_line_numbers_stay_within_float32(tmp_path, src, capsys):
    from gpudeblur.cli import finite_float, positive_float

    assert finite_float("-3.4e38") == -3.4e38 and positive_float("1.2e-38") == 1.2e-38
    for text in ("1e39", "-1e300"):
        with pytest.raises(Exception, match="float32's range"):
            finite_float(text)
    with pytest.raises(Exception, match="smallest normal"):
        positive_float("1e-300")
    rc, err = _run(capsys, "deconv", src, tmp_path / "d.png", "--psf", "disc:2", "--method", "wiener",
                   "--balance", "1e308")  # NaN image and overflow warnings, before
    _one_line_refusal(rc, err, "--balance", "float32's range")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "a.png", "--lam", "1e300")
    _one_line_refusal(rc, err, "--lam", "float32's range")


def test_max_radius_below_the_label_step(tmp_path, src, capsys):
    with pytest.raises(ValueError, match="max_radius must be at least 0.1 px"):
        BlurMapEstimator(max_radius=0.05)
    BlurMapEstimator(max_radius=0.05, labeling=None)  # no labels needed
    BlurMapEstimator(max_radius=0.05, labeling_kwargs={"labels": np.array([0.0, 0.05])})
    t = time.perf_counter()
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--max-radius", "0.05")
    _one_line_refusal(rc, err, "max_radius must be at least 0.1 px")
    assert time.perf_counter() - t < 30  # before the candidate stages (a labels error after them, before)


def test_psf_models_refuse_supports_beyond_the_limit(tmp_path, src, capsys):
    for fn, arg, what in ((psf.disc, 1e5, "disc radius 100000"), (psf.gaussian, 1e5, "gaussian sigma 100000"),
                          (psf.motion, 1e7, "motion length 1e+07")):
        with pytest.raises(ValueError, match=re.escape(what) + f" needs a .* support, over the {psf.MAX_PSF_SIDE} px limit"):
            fn(arg)
    half = (psf.MAX_PSF_SIDE - 1) // 2
    assert psf.gaussian(1.0).shape == (9, 9) and psf.disc(2.0).shape == (5, 5)
    with pytest.raises(ValueError, match="limit"):
        psf.disc(half)  # half + 1 px from the centre: one more than the limit
    for spec, words in (("disc:100000", ["PSF (200001x200001) is larger than the image"]),  # MemoryError, exit 1,
                        ("gaussian:1e5", ["PSF (700001x700001) is larger than the image"]),  # before
                        ("motion:1e7", ["PSF (at least 1x10000001) is larger than the image"]),
                        ("motion:8000,30", ["PSF (at least 4001x6929) is larger than the image"])):  # 8001² built, before
        t = time.perf_counter()
        rc, err = _run(capsys, "deconv", src, tmp_path / "d.png", "--psf", spec)
        _one_line_refusal(rc, err, *words)
        assert time.perf_counter() - t < 5
    np.save(tmp_path / "cplx.npy", np.ones((3, 3), np.complex64))  # NumPy dropped the imaginary part, with a warning
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    for name in ("cplx", "text"):
        rc, err = _run(capsys, "deconv", src, tmp_path / "d.png", "--psf", tmp_path / f"{name}.npy")
        _one_line_refusal(rc, err, f"{name}.npy", "must hold real numbers")
    with pytest.raises(ValueError, match="psf must hold real numbers, got complex128"):
        psf.from_array(np.ones((3, 3), complex))


def test_motion_shape_bound_never_exceeds_the_built_psf():
    rng = np.random.default_rng(3)
    cases = [(L, a) for L in (0, 1, 1.5, 2, 2.5, 3, 4.5, 7, 10) for a in (0, 30, 45, 90, 135, -60, 180)]
    cases += [(float(L), float(a)) for L, a in zip(rng.uniform(0, 60, 300), rng.uniform(-360, 360, 300))]
    tight = 0
    for length, angle in cases:
        bound, shape = psf._motion_min_shape(length, angle), psf.motion(length, angle).shape
        assert bound[0] <= shape[0] and bound[1] <= shape[1], (length, angle, bound, shape)
        tight += bound == shape
    assert tight > len(cases) // 4  # a bound, but not a loose one
    # a motion PSF that fits is built as before; one a pixel too wide is refused before it is built
    assert np.array_equal(psf.from_spec("motion:60", (64, 64)), psf.motion(60))
    assert np.array_equal(psf.from_spec("motion:60,90", (61, 1)), psf.motion(60, 90))
    with pytest.raises(ValueError, match=r"PSF \(at least 1x61\) is larger than the image \(64x60\)"):
        psf.from_spec("motion:60", (64, 60))


def test_maps_that_hold_no_radii_or_radii_wider_than_the_image(tmp_path, src, capsys):
    shape = (64, 64)
    for name, arr in (("wide", np.full(shape, 5000, np.float32)), ("huge", np.full(shape, 1e6, np.float32)),
                      ("cplx", np.ones(shape, np.complex64)), ("text", np.full(shape, "a"))):
        np.save(tmp_path / f"{name}.npy", arr)
    write_image(tmp_path / "m8.png", np.full(shape, 0.5, np.float32))  # 2 px read as 0.0078, before
    write_image(tmp_path / "m16.png", np.full(shape, 0.5, np.float32), bit_depth=16)
    np.save(tmp_path / "ok.npy", np.full(shape, 2.0, np.float32))
    cases = (("wide", ["radius map reaches 5000 px, more than 64 px"]), ("huge", ["reaches 1e+06 px"]),
             ("cplx", ["cplx.npy", "must hold real numbers"]), ("text", ["text.npy", "must hold real numbers"]))
    for name, words in cases:
        t = time.perf_counter()
        rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", tmp_path / f"{name}.npy")
        _one_line_refusal(rc, err, *words)
        assert time.perf_counter() - t < 5 and not (tmp_path / "o.png").exists()
    for name, depth in (("m8.png", "an 8-bit image holds no radii"), ("m16.png", "a 16-bit image holds no radii")):
        rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", tmp_path / name)
        _one_line_refusal(rc, err, name, depth)
    write_image(tmp_path / "mf.tif", np.full(shape, 2.0, np.float32), bit_depth=32)  # a float TIFF holds radii
    assert _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", tmp_path / "mf.tif", "--mode", "fast")[0] == 0
    # the Python pipeline: disc and Gaussian maps wider than the image are refused, other families' units are theirs
    from gpudeblur import AllInFocus

    img = np.random.default_rng(1).random(shape).astype(np.float32)
    with pytest.raises(ValueError, match="radius map reaches 65 px, more than 64 px"):
        AllInFocus(mode="fast", backend="cpu").run(img, np.full(shape, 65.0, np.float32))


# ---------------------------------------------------------------------------
# all outputs or none
# ---------------------------------------------------------------------------


def _full_disk_for(monkeypatch, name):
    """Writing the temporary file of any output called ``name`` fails like a full disk."""
    import errno
    import os

    import gpudeblur.io as gio

    real = gio._write_temporary

    def write(path, data, overwrite):
        if os.path.basename(path) == name:
            tmp = real(path, data, overwrite)
            os.unlink(tmp)
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real(path, data, overwrite)

    monkeypatch.setattr(gio, "_write_temporary", write)


def test_output_batch_publishes_all_or_none(tmp_path, monkeypatch):
    import errno
    import os

    from gpudeblur.io import output_batch, write_array

    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    with pytest.raises(RuntimeError, match="boom"):
        with output_batch():
            write_array(a, np.zeros(3))
            assert not a.exists()  # written, not yet published
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == []  # no output, no temporary
    with output_batch():
        write_array(a, np.zeros(3))
        write_array(b, np.ones(3))
    assert np.load(b)[0] == 1 and sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy"]
    with pytest.raises(FileExistsError, match="output file exists"), output_batch():
        write_array(tmp_path / "c.npy", np.zeros(3))
        write_array(a, np.zeros(3))  # exists, no overwrite: refused before anything is published
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy"]
    with output_batch():  # a block inside another joins it: nothing appears before the outer one ends
        with output_batch():
            write_array(tmp_path / "n.npy", np.zeros(3))
        assert not (tmp_path / "n.npy").exists()
    (tmp_path / "n.npy").unlink()
    write_array(tmp_path / "d.npy", np.zeros(3))  # outside a batch: at once
    # publishing: a name that appeared meanwhile takes back the new files linked before it, and leaves no temporary
    with pytest.raises(FileExistsError, match="x2.npy"), output_batch():
        write_array(tmp_path / "x1.npy", np.zeros(3))
        write_array(tmp_path / "x2.npy", np.zeros(3))
        (tmp_path / "x2.npy").write_bytes(b"another process")
    assert not (tmp_path / "x1.npy").exists() and (tmp_path / "x2.npy").read_bytes() == b"another process"
    (tmp_path / "x2.npy").unlink()
    import gpudeblur.io as gio

    real_link = gio._link_new
    calls = []

    def link(tmp, path):  # the second new file cannot be linked: the first is taken back
        calls.append(path)
        if len(calls) == 2:
            raise PermissionError(errno.EACCES, "denied")
        return real_link(tmp, path)

    monkeypatch.setattr(gio, "_link_new", link)
    with pytest.raises(PermissionError), output_batch():
        write_array(tmp_path / "y1.npy", np.zeros(3))
        write_array(tmp_path / "y2.npy", np.zeros(3))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy", "d.npy"]
    # a write after its block has ended (e.g. a task started inside it) is published at once, not lost
    import contextvars

    with output_batch():
        late = contextvars.copy_context()
    late.run(write_array, tmp_path / "late.npy", np.zeros(3))
    assert (tmp_path / "late.npy").exists()
    (tmp_path / "late.npy").unlink()
    assert (tmp_path / "d.npy").exists()
    # a write error names the file (a full disk said only "[Errno 28] No space left on device")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match=r"cannot write .*e\.npy: No space left on device"):
        write_array(tmp_path / "e.npy", np.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy", "d.npy"]


def test_commands_leave_no_side_output_when_out_fails(tmp_path, src, capsys, monkeypatch):
    import os

    mp = tmp_path / "map.npy"
    np.save(mp, np.full((64, 64), 1.5, np.float32))
    _full_disk_for(monkeypatch, "o.png")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "fast",
                   "--save-map", tmp_path / "s.png", "--report", tmp_path / "r.json")
    _one_line_refusal(rc, err, "cannot write", "o.png", "No space left")
    assert sorted(os.listdir(tmp_path)) == ["in.png", "map.npy"]  # s.png and r.json were left behind, before
    _full_disk_for(monkeypatch, "m.npy")
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--labeling", "none", "--mask", tmp_path / "k.png",
                   "--candidates", tmp_path / "c.npz")
    _one_line_refusal(rc, err, "m.npy", "No space left")
    assert sorted(os.listdir(tmp_path)) == ["in.png", "map.npy"]
    monkeypatch.undo()
    rc, _ = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "fast",
                 "--save-map", tmp_path / "s.png", "--report", tmp_path / "r.json")
    assert rc == 0 and {"o.png", "s.png", "r.json"} <= set(os.listdir(tmp_path))


def test_smaller_messages_name_their_source(tmp_path, src, capsys, monkeypatch):
    import tifffile

    from gpudeblur import AllInFocus
    from gpudeblur._backend import get_backend

    nan = tmp_path / "nan.tif"
    img = np.full((64, 64), 0.5, np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(nan, img)
    for command, out in (("deconv", "o.png"), ("blurmap", "o.npy"), ("allinfocus", "o.png")):
        extra = ["--psf", "disc:2"] if command == "deconv" else []
        rc, err = _run(capsys, command, nan, tmp_path / out, *extra)
        _one_line_refusal(rc, err, "nan.tif contains NaN or Inf values")
    tifffile.imwrite(tmp_path / "u32.tif", np.zeros((64, 64), np.uint32))
    rc, err = _run(capsys, "deconv", tmp_path / "u32.tif", tmp_path / "o.png", "--psf", "disc:2")
    _one_line_refusal(rc, err, "uint32 (32-bit unsigned integer)")
    monkeypatch.setenv("GPUDEBLUR_BACKEND", "foo")
    with pytest.raises(ValueError, match=r"unknown backend 'foo' \(from \$GPUDEBLUR_BACKEND\)"):
        get_backend()
    monkeypatch.delenv("GPUDEBLUR_BACKEND")
    (tmp_path / "adir").mkdir()
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", tmp_path / "adir")
    _one_line_refusal(rc, err, "adir is a folder")
    # a PNG over OpenCV's pixel limit is not "corrupt": its size is read from the header
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    rc, err = _run(capsys, "deconv", big, tmp_path / "o.png", "--psf", "disc:2")
    _one_line_refusal(rc, err, "40000x40000 pixels, over the 1.07 gigapixels OpenCV decodes")
    # options of the pipeline's estimator and of the labeling are checked when they are given
    with pytest.raises(ValueError, match="window must be an odd integer"):
        AllInFocus(estimator_options={"window": 8})
    with pytest.raises(ValueError, match="unknown labeling_kwargs 'lamda0'"):
        AllInFocus(estimator_options={"labeling_kwargs": {"lamda0": 3.0}})
    with pytest.raises(ValueError, match="unknown labeling_kwargs 'bogus'"):
        BlurMapEstimator(labeling_kwargs={"bogus": 1})
    for bad in ("x", float("inf"), float("nan"), 0, True):
        with pytest.raises(ValueError, match="memory_budget must be a positive number of bytes"):
            BlurMapEstimator(memory_budget=bad)
    assert BlurMapEstimator(memory_budget=2**64).memory_budget == 2**64  # NumPy's isfinite refused this int
    # a pickled object in a calibration: NumPy's own words advise loading it unsafely
    np.savez(tmp_path / "obj.npz", radii=np.array([object()] * 4, dtype=object), psfs=np.ones((4, 3, 3)))
    with pytest.raises(ValueError, match=r"obj\.npz: it holds Python objects \(pickled data\), not numeric arrays"):
        PSFCalibration.load(tmp_path / "obj.npz")
    # the PSF models' limit: a support of exactly MAX_PSF_SIDE is built, one ring more is not
    half = (psf.MAX_PSF_SIDE - 1) // 2
    psf._check_side(half, "x")
    with pytest.raises(ValueError, match="over the"):
        psf._check_side(half + 1, "x")


def test_a_psf_larger_than_the_image_is_refused_before_it_is_built(tmp_path, src, capsys):
    for r in np.concatenate([np.linspace(0, 12, 241), [1e-9, 0.49999, 0.5, 2.5]]):
        assert psf.disc(r).shape == (psf.model_side("disc", r),) * 2, r
    for s in np.linspace(0, 6, 121):
        assert psf.gaussian(s).shape == (psf.model_side("gaussian", s),) * 2, s
    with pytest.raises(ValueError, match=r"PSF \(65x65\) is larger than the image \(64x48\)"):
        psf.from_spec("disc:32.5", (64, 48, 3))
    assert psf.from_spec("disc:2", (5, 5)).shape == (5, 5)
    t = time.perf_counter()
    rc, err = _run(capsys, "deconv", src, tmp_path / "d.png", "--psf", "disc:3000")  # 4.3 s to build, before
    _one_line_refusal(rc, err, "PSF (6001x6001) is larger than the image (64x64)")
    rc, err = _run(capsys, "deconv", src, tmp_path / "d.png", "--psf", "gaussian:1000")
    _one_line_refusal(rc, err, "PSF (7001x7001) is larger than the image (64x64)")
    assert time.perf_counter() - t < 2


def test_families_are_checked_against_the_estimate_only_when_a_map_is_estimated(tmp_path, src, capsys):
    """A calibration whose radii end below max_radius (8), or a callable family in other units, serves a
    given map; it is refused, before the work, only when a map would be estimated with it."""
    from gpudeblur import AllInFocus

    r = np.arange(0.0, 3.01, 0.5)
    short = PSFCalibration(list(r), [psf.disc(v) for v in r])
    cal = tmp_path / "short.npz"
    short.save(cal)
    mp = tmp_path / "m.npy"
    np.save(mp, np.full((64, 64), 1.5, np.float32))
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--psf", cal, "--map", mp, "--mode", "fast")
    assert rc == 0, err
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o2.png", "--psf", cal, "--mode", "fast")
    _one_line_refusal(rc, err, "PSFCalibration radii end at 3 < max_radius 8")
    t = time.perf_counter()
    wide = AllInFocus(psf_family=lambda s: psf.disc(s * 1000), mode="fast", keep_in_focus=False, backend="cpu")
    assert time.perf_counter() - t < 10  # 37 s building 81 PSFs up to 8000 px, then a refusal, before
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out, _ = wide.run(img, np.zeros((64, 64), np.float32))  # in focus: the bank's one PSF is a delta
    assert out.shape == img.shape and np.isfinite(out).all()


def test_demo_writes_all_pictures_or_none(tmp_path, capsys, monkeypatch):
    import os

    from gpudeblur import demo

    _full_disk_for(monkeypatch, "restored_rl.png")  # the last one written
    with pytest.raises(OSError, match="No space left"):
        demo.run(out_dir=str(tmp_path / "d"), uniform=True, verbose=False)
    assert not any(n.endswith(".png") for n in os.listdir(tmp_path / "d"))


def test_stale_layers_stay_when_the_run_fails(tmp_path, src, capsys, monkeypatch):
    """Layer files of an earlier run are removed only once this run's outputs are in place."""
    mp = tmp_path / "m.npy"
    m = np.zeros((64, 64), np.float32)
    m[:, 20:40], m[:, 40:] = 3.0, 6.0  # two out-of-focus layers by default ((6 - 2) / 2)
    np.save(mp, m)
    layers = tmp_path / "L"
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "blind", "--iters", "1",
                   "--save-layers", layers)
    assert rc == 0, err
    before = sorted(os.listdir(layers))
    assert "layer2.png" in before
    np.save(mp, np.where(m > 4, 3.0, m).astype(np.float32))  # one layer fewer
    _full_disk_for(monkeypatch, "o.png")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "blind", "--iters", "1",
                   "--save-layers", layers, "--overwrite")
    assert rc == 2 and "No space left" in err
    assert sorted(os.listdir(layers)) == before  # the earlier run's files, all of them


# ---------------------------------------------------------------------------
# valid but unusual input (a second sweep)
# ---------------------------------------------------------------------------


def test_a_cmyk_tiff_reads_as_rgb_without_an_alpha_channel(tmp_path):
    """OpenCV decodes CMYK (and other non-RGB photometrics) through libtiff's RGBA: an opaque
    alpha channel the file never had came out in every TIFF written from it."""
    import tifffile

    from gpudeblur.io import read_image

    rng = np.random.default_rng(2)
    cmyk = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cmyk.tif", cmyk, photometric="separated")
    img, meta = read_image(tmp_path / "cmyk.tif")
    assert img.shape == (20, 24, 3) and meta.alpha is None and meta.channels == 3
    c = cmyk.astype(np.float64) / 255
    rgb = (1 - c[..., :3]) * (1 - c[..., 3:])  # what libtiff's conversion gives, to its rounding
    np.testing.assert_allclose(img, rgb, atol=2 / 255)


def test_the_in_focus_mask_follows_the_map_where_the_data_term_ties(natural_rgb):
    """A flat photo carries no blur information: its map reads 0 px (in focus) and its
    mask said 'all blurred' (eq. 18's two costs tie there); the map now breaks the tie."""
    est = BlurMapEstimator(window=21, max_radius=6.0, noise=1e-4)
    flat = np.full((48, 48, 3), 0.5, np.float32)
    res = est.estimate(flat, return_candidates=True, backend="cpu")
    assert float(res.radius.max()) <= 2.0
    mask, _ = est.segment(flat, res.radius, candidates=res, method="min-cut", backend="cpu")
    assert mask.all()
    # textured pixels: eq. 18 as printed, the map not consulted
    img = natural_rgb[:64, :64]
    res = est.estimate(img, return_candidates=True, backend="cpu")
    a, _ = est.segment(img, res.radius, candidates=res, method="min-cut", backend="cpu")
    b, _ = est.segment(img, np.full(res.radius.shape, 5.0, np.float32), candidates=res, method="min-cut",
                       backend="cpu")
    from gpudeblur.blurmap.labeling import _in_focus_cost_from_lmn, _likelihood_lmn, default_labels, KAPPA

    P, _ = _likelihood_lmn(np.asarray(res.candidates), np.asarray(res.likelihoods), default_labels(),
                           np.asarray(KAPPA), np, False, np.dtype(np.float32))
    U = _in_focus_cost_from_lmn(P, default_labels(), 2.0, 1e-30, np)
    assert not (U[0] == U[1]).any()  # no tie in this crop: the map cannot change the mask
    np.testing.assert_array_equal(a, b)


def test_the_map_breaks_ties_on_each_backend(backend):
    """The tie-break of eq. 18 on each backend (CuPy with a GPU): a flat photo's mask follows its map."""
    from conftest import to_host

    est = BlurMapEstimator(window=21, max_radius=6.0, noise=1e-4)
    flat = np.full((48, 48, 3), 0.5, np.float32)
    res = est.estimate(flat, return_candidates=True, backend=backend.name)
    mask, _ = est.segment(flat, res.radius, candidates=res, method="min-cut", backend=backend.name)
    assert to_host(mask).all()
