"""Command-line faults a fresh-user review found (session 16), each checked
before any work is done and reported in one line (exit 2)."""

import os

import numpy as np
import pytest

from gpudeblur import cli
from gpudeblur.io import write_image


@pytest.fixture
def scene(tmp_path, natural_rgb):
    """A 64² image with a half-blurred map on disk: ``(src, map)``."""
    img = natural_rgb[:64, :64]
    rm = np.zeros(img.shape[:2], np.float32)
    rm[:, 32:] = 2.0
    src, mp = tmp_path / "in.png", tmp_path / "map.npy"
    write_image(src, img)
    np.save(mp, rm)
    return src, mp


def _run(capsys, *argv):
    rc = cli.main(["-q", *map(str, argv)])
    return rc, capsys.readouterr().err.strip()


def test_save_layers_checked_before_the_work_and_no_result_left(tmp_path, scene, capsys, monkeypatch):
    src, mp = scene
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = tmp_path / "o.png"
    import gpudeblur.allinfocus as A

    ran = []
    monkeypatch.setattr(A.AllInFocus, "run", lambda *a, **k: ran.append(1))
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "blind", "--save-layers", blocker / "sub")
    assert rc == 2 and "--save-layers" in err and "is a file" in err and not ran and not out.exists()
    monkeypatch.undo()
    # a side output that fails at write time leaves no OUT behind (OUT is written last)
    import gpudeblur.io as io

    real = io.write_array

    def failing(path, *a, **k):
        if str(path).endswith("m.npy"):
            raise OSError("disk full")
        return real(path, *a, **k)

    monkeypatch.setattr(io, "write_array", failing)
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "fast", "--save-map", tmp_path / "m.npy")
    assert rc == 2 and "disk full" in err and not out.exists()


def test_same_file_outputs_are_named(tmp_path, scene, capsys):
    src, mp = scene
    out = tmp_path / "y.png"
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--save-map", out)
    assert rc == 2 and "--save-map" in err and "OUT" in err and "same file" in err
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--save-map", tmp_path / "r.npy", "--report",
                   tmp_path / "r.npy")
    assert rc == 2 and "--save-map" in err and "--report" in err and "same file" in err
    rc, err = _run(capsys, "allinfocus", src, src, "--map", mp, "--overwrite")
    assert rc == 2 and "is the input file" in err and src.exists()


def test_map_that_is_not_an_npy_array(tmp_path, scene, capsys):
    src, _ = scene
    bad = tmp_path / "garbage.npy"
    bad.write_text("this is text\n")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", bad)
    assert rc == 2 and err.endswith("--map " + str(bad) + ": not a .npy array file") and "allow_pickle" not in err
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", obj)
    assert rc == 2 and "Python objects" in err and "allow_pickle" not in err


def test_negative_number_lists_are_values(tmp_path, scene, capsys):
    src, mp = scene
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map-uncertainty", "-1,3")
    assert rc == 2 and "expected one argument" not in err and "map-uncertainty" in err  # its own validation
    assert cli._join_negative_lists(["--a", "-1,3", "--b", "-.5,2", "-q", "--c", "-2"]) == \
        ["--a=-1,3", "--b=-.5,2", "-q", "--c", "-2"]
    assert cli._join_negative_lists(["--", "-1,3"]) == ["--", "-1,3"]


def test_numbers_checked_at_parse_time(tmp_path, scene, capsys, monkeypatch):
    src, _ = scene
    import gpudeblur.blurmap.estimator as E

    monkeypatch.setattr(E.BlurMapEstimator, "estimate", lambda *a, **k: pytest.fail("work started"))
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--tau", "-1")
    assert rc == 2 and "--tau" in err
    for w in ("50", "7"):
        rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--window", w)
        assert rc == 2 and "--window" in err and "odd integer >= 9" in err
        rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--window", w)
        assert rc == 2 and "--window" in err


def test_extension_lists_name_what_each_output_takes(tmp_path, scene, capsys):
    src, mp = scene
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--save-map", tmp_path / "m.bmp")
    assert rc == 2 and "--save-map" in err and ".png, .npy, .tif, .tiff" in err
    rc, err = _run(capsys, "blurmap", src, tmp_path / "q.bmp")
    assert rc == 2 and ".npy" in err and ".png" in err


def test_save_layers_outside_blind_mode_is_refused(tmp_path, scene, capsys):
    # only blind splits the image into layers: refused up front (session 18's review found
    # it silently ignored), as --layers is; nothing is created
    src, mp = scene
    layers = tmp_path / "layers"
    for mode in ("fast", "sv-admm", "auto"):
        rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", mode,
                       "--save-layers", layers)
        assert rc == 2 and "--save-layers applies to --mode blind only" in err
    assert not layers.exists() and not (tmp_path / "o.png").exists()


def test_folder_as_output(tmp_path, scene, capsys):
    src, mp = scene
    d = tmp_path / "dirout"
    d.mkdir()
    for out in (str(d), str(d) + "/"):
        rc, err = _run(capsys, "allinfocus", src, out, "--map", mp)
        assert rc == 2 and "is a folder" in err and "unsupported" not in err
        rc, err = _run(capsys, "blurmap", src, out)
        assert rc == 2 and "is a folder" in err
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--save-map", d)
    assert rc == 2 and "--save-map" in err and "is a folder" in err


def test_negative_scientific_numbers_are_values(tmp_path, scene, capsys):
    """argparse takes '-1e-3' for an option (only '-1' and '-.5' look like numbers to it)."""
    src, mp = scene
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--lam", "-1e-3")
    assert rc == 2 and "expected one argument" not in err and "--lam" in err and "must be positive" in err
    # plain negative numbers stay separate tokens: argparse already takes them as values (or positionals)
    assert cli._join_negative_lists(["--a", "-1e-3", "--b", "-2", "--c", "-.5", "--overwrite", "-3"]) == \
        ["--a=-1e-3", "--b", "-2", "--c", "-.5", "--overwrite", "-3"]


def test_folder_name_as_output_that_does_not_exist(tmp_path, scene, capsys):
    """'newdir/' (a trailing slash) names a folder even before it exists."""
    src, mp = scene
    d = str(tmp_path / "newdir") + "/"
    rc, err = _run(capsys, "allinfocus", src, d, "--map", mp)
    assert rc == 2 and "names a folder" in err and "unsupported" not in err
    rc, err = _run(capsys, "blurmap", src, d)
    assert rc == 2 and "names a folder" in err and "unsupported" not in err
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--save-map", d)
    assert rc == 2 and "--save-map" in err and "names a folder" in err
    assert not (tmp_path / "newdir").exists()


def test_save_layers_clashes_checked_before_the_work(tmp_path, scene, capsys, monkeypatch):
    src, mp = scene
    import gpudeblur.allinfocus as A

    monkeypatch.setattr(A.AllInFocus, "run", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "l.png"
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "blind", "--save-layers", out)
    assert rc == 2 and "--save-layers" in err and "OUT" in err and "same path" in err and not out.exists()
    layers = tmp_path / "L"
    layers.mkdir()
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "blind", "--save-layers", layers,
                   "--save-map", layers / "labels.npy")
    assert rc == 2 and "--save-map" in err and "is a file that --save-layers" in err
    # files of an earlier run: refused up front without --overwrite (the job would fail at its end)
    (layers / "labels.npy").write_bytes(b"old")
    rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "blind", "--save-layers", layers,
                   "--save-map", tmp_path / "m.npy")
    assert rc == 2 and "--save-layers" in err and "labels.npy" in err and "--overwrite" in err
    assert not out.exists() and not (tmp_path / "m.npy").exists()


def test_blurmap_outputs_named_and_out_written_last(tmp_path, scene, capsys, monkeypatch):
    src, _ = scene
    m = tmp_path / "m.png"
    rc, err = _run(capsys, "blurmap", src, m, "--mask", m)
    assert rc == 2 and "OUT" in err and "--mask" in err and "same file" in err and "--candidates" not in err
    k = tmp_path / "k.png"
    k.write_bytes(b"old")
    rc, err = _run(capsys, "blurmap", src, m, "--mask", k)
    assert rc == 2 and "--mask file exists" in err and k.read_bytes() == b"old"
    # a side output that fails at write time leaves no OUT behind (OUT is written last)
    import gpudeblur.io as io

    real = io.write_image

    def failing(path, *a, **k):
        if str(path).endswith("mask.png"):
            raise OSError("disk full")
        return real(path, *a, **k)

    monkeypatch.setattr(io, "write_image", failing)
    out = tmp_path / "r.npy"
    rc, err = _run(capsys, "blurmap", src, out, "--mask", tmp_path / "mask.png", "--window", "9", "--max-radius", "3",
                   "--labeling", "none", "--backend", "cpu")
    assert rc == 2 and "disk full" in err and not out.exists()


def test_max_radius_beyond_the_window_refused_before_the_work(tmp_path, scene, capsys):
    """``--max-radius 1e9`` ran out of memory (74.5 GiB) after reading the image: a radius over half the
    analysis window cannot be measured in it, and is refused when the estimator is built."""
    from gpudeblur.blurmap import BlurMapEstimator

    BlurMapEstimator(window=41, max_radius=20.5)
    with pytest.raises(ValueError, match="exceeds half the 41 px analysis window"):
        BlurMapEstimator(window=41, max_radius=21)
    src, _ = scene
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--max-radius", "1e9")
    assert rc == 2 and "max_radius" in err and "analysis window" in err and not (tmp_path / "m.npy").exists()


def test_overwritten_layers_folder_holds_one_run(tmp_path, scene, capsys):
    # an earlier run with more layers left layer7.png / kernel7.npy: with
    # --overwrite they are removed (the folder would mix two runs), other files kept
    src, mp = scene
    layers = tmp_path / "L"
    layers.mkdir()
    for name in ("layer7.png", "kernel7.npy", "labels.npy", "notes.txt"):
        (layers / name).write_bytes(b"old")
    rc = cli.main(["allinfocus", str(src), str(tmp_path / "o.png"), "--map", str(mp), "--mode", "blind",
                   "--iters", "1", "--save-layers", str(layers), "--overwrite"])
    said = capsys.readouterr().out
    assert rc == 0
    names = sorted(p.name for p in layers.iterdir())
    assert names == ["kernel1.npy", "labels.npy", "layer0.png", "layer1.png", "notes.txt"], names
    assert (layers / "notes.txt").read_bytes() == b"old" and (layers / "labels.npy").read_bytes() != b"old"
    assert "removed 2 layer file(s)" in said and "kernel7.npy" in said and "layer7.png" in said


def test_saved_layers_keep_a_16_bit_inputs_depth(tmp_path, scene, capsys):
    """--save-layers PNGs: 8 bits for an 8-bit input, 16 for a deeper one (they were always 8)."""
    import cv2

    from gpudeblur.io import read_image

    src, mp = scene
    img, _ = read_image(src)
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        inp = tmp_path / f"in{bits}.png"
        write_image(inp, img, bit_depth=bits)
        layers = tmp_path / f"L{bits}"
        rc, err = _run(capsys, "allinfocus", inp, tmp_path / f"o{bits}.png", "--map", mp, "--mode", "blind",
                       "--iters", "1", "--save-layers", layers)
        assert rc == 0, err
        for name in ("layer0.png", "layer1.png"):
            assert cv2.imread(str(layers / name), cv2.IMREAD_UNCHANGED).dtype == dtype, (bits, name)


def test_overwritten_layers_folder_keeps_other_names(tmp_path, scene, capsys):
    # a name this command never writes (layer07.png) is kept (the review of session 18;
    # an input inside the folder under a layer file's name is refused up front:
    # test_no_output_is_written_over_an_input)
    src, mp = scene
    layers = tmp_path / "L"
    layers.mkdir()
    (layers / "layer07.png").write_bytes(b"mine")
    (layers / "kernel9.npy").write_bytes(b"old")
    rc = cli.main(["allinfocus", str(src), str(tmp_path / "o.png"), "--map", str(mp), "--mode", "blind",
                   "--iters", "1", "--save-layers", str(layers), "--overwrite"])
    said = capsys.readouterr().out
    assert rc == 0 and (layers / "layer07.png").read_bytes() == b"mine"
    assert not (layers / "kernel9.npy").exists() and "removed 1 layer file(s)" in said and "kernel9.npy" in said


def test_no_output_is_written_over_an_input(tmp_path, scene, capsys, monkeypatch):
    """The CLI review of session 18: a --psf calibration file was overwritten by --report
    (allinfocus) or --candidates (blurmap), and --save-layers --overwrite wrote the
    layers over the input image or the --map file sitting in that folder."""
    from gpudeblur import psf
    from gpudeblur.blurmap import PSFCalibration

    src, mp = scene
    calib = tmp_path / "calib.npz"
    radii = np.arange(0, 6.5, 0.5)
    PSFCalibration(radii, [psf.disc(float(r)) for r in radii]).save(calib)
    before = calib.read_bytes()
    import gpudeblur.allinfocus as A

    monkeypatch.setattr(A.AllInFocus, "run", lambda *a, **k: pytest.fail("work started"))
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--psf", calib, "--report", calib,
                   "--overwrite")
    assert rc == 2 and "--report" in err and calib.read_bytes() == before
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--psf", calib, "--candidates", calib, "--overwrite")
    assert rc == 2 and "--candidates" in err and calib.read_bytes() == before
    layers = tmp_path / "L"
    layers.mkdir()
    for name, argv in (("layer0.png", lambda p: [p, tmp_path / "o.png", "--map", mp]),
                       ("labels.npy", lambda p: [src, tmp_path / "o.png", "--map", p])):
        inside = layers / name
        inside.write_bytes((src if name.endswith(".png") else mp).read_bytes())
        rc, err = _run(capsys, "allinfocus", *argv(inside), "--mode", "blind", "--save-layers", layers, "--overwrite")
        assert rc == 2 and "is a file that --save-layers" in err and "choose another folder" in err
        inside.unlink()


def test_third_review_options(tmp_path, scene, capsys):
    """Options that did not apply were accepted silently (session 18's CLI review):
    --luminance on a grey image, --tau without --mask; a wide --window named an
    internal fft_block."""
    src, mp = scene
    from gpudeblur.io import read_image

    grey = tmp_path / "grey.png"
    write_image(grey, read_image(src)[0].mean(axis=2))
    rc, err = _run(capsys, "deconv", grey, tmp_path / "d.png", "--psf", "disc:2", "--luminance")
    assert rc == 2 and "--luminance applies to colour images" in err and not (tmp_path / "d.png").exists()
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--tau", "3")
    assert rc == 2 and "--tau applies to --mask only" in err
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--window", "301")
    assert rc == 2 and "smaller than the analysis window" in err and "fft_block" not in err
    assert _run(capsys, "deconv", src, tmp_path / "m.png", "--psf", "motion:5")[0] == 0  # the angle defaults to 0


def test_jpeg_quality_option(tmp_path, scene, capsys):
    """``--jpeg-quality Q`` encodes a JPEG OUT at Q (its luminance table is libjpeg's at Q) for ``deconv`` and
    ``allinfocus``; with another OUT, or a Q outside 1-100, the command stops at once with one line (exit 2)."""
    import cv2

    from gpudeblur._jpeg import quantization_tables

    src, mp = scene

    def table(path):
        tables, (_, _, comps), _ = quantization_tables(path.read_bytes())
        return tables[comps[0][3]]

    def libjpeg(q):
        buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
        tables, (_, _, comps), _ = quantization_tables(buf)
        return tables[comps[0][3]]

    runs = {"deconv": ["deconv", src, None, "--psf", "disc:2", "--iters", "3"],
            "allinfocus": ["allinfocus", src, None, "--map", mp, "--mode", "fast"]}
    for name, argv in runs.items():
        out = tmp_path / f"{name}.jpg"
        argv = [out if a is None else a for a in argv]
        for q in ("60", None):
            rc, err = _run(capsys, *argv, *(["--jpeg-quality", q] if q else []), "--overwrite")
            assert rc == 0, err
            np.testing.assert_array_equal(table(out), libjpeg(int(q) if q else 95))
        png = tmp_path / f"{name}.png"
        rc, err = _run(capsys, *[png if a == out else a for a in argv], "--jpeg-quality", "60")
        assert rc == 2 and err.endswith(f"--jpeg-quality applies to a JPEG OUT, not {png.name}") and not png.exists()
        for bad in ("0", "101", "9.5"):
            assert cli.main([*map(str, argv), "--jpeg-quality", bad]) == 2
            assert "an integer from 1 to 100, got" in capsys.readouterr().err


def test_a_jpeg_mask_stays_binary(tmp_path, scene, capsys):
    """``blurmap --mask M.jpg`` is written at quality 100, so its pixels stay within 2 levels of 0 or 255 (JPEG
    is never lossless; at the default 95 a 64² mask had 64 grey pixels)."""
    import cv2

    src, _ = scene
    rc, err = _run(capsys, "blurmap", src, tmp_path / "m.npy", "--mask", tmp_path / "m.jpg", "--window", "31")
    assert rc == 0, err
    m = cv2.imread(str(tmp_path / "m.jpg"), cv2.IMREAD_UNCHANGED)
    assert m.ndim == 2 and (np.minimum(m, 255 - m) <= 2).all() and m.min() == 0 and m.max() == 255


# ---------------------------------------------------------------------------
# session 32: a by-running review's findings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["allinfocus", "--map", ""], ["allinfocus", "--report", ""],
                                  ["allinfocus", "--save-map", ""], ["allinfocus", "--mode", "blind", "--save-layers", ""],
                                  ["blurmap", "--mask", ""], ["blurmap", "--candidates", ""]])
def test_empty_path_options_are_refused(tmp_path, scene, capsys, argv):
    """An empty value (an unset shell variable) must not drop the option silently: ``--map ""``
    estimated the map instead, ``--report ""`` wrote nothing, both with exit 0."""
    src, _ = scene
    out = tmp_path / "o.png"
    rc, err = _run(capsys, argv[0], src, out, *argv[1:])
    assert rc == 2 and f"argument {argv[-2]}: expected a path, got an empty string" in err and not out.exists()


def test_lam_is_bounded_up_front(tmp_path, scene, capsys):
    """``--lam 1e20`` passed the check and failed after the whole run ("image to write contains
    NaN"); a weight above 1e6 (which only flattens the image) is refused at once."""
    from gpudeblur import AllInFocus
    from gpudeblur._validate import MAX_WEIGHT

    src, mp = scene
    out = tmp_path / "o.png"
    for argv in (["allinfocus", src, out, "--map", mp], ["deconv", src, out, "--psf", "disc:1"]):
        rc, err = _run(capsys, *argv, "--lam", "1e20")
        assert rc == 2 and "argument --lam: must be at most 1e+06" in err and not out.exists()
    rc, _ = _run(capsys, "allinfocus", src, out, "--map", mp, "--mode", "sv-admm", "--iters", "2", "--lam", str(MAX_WEIGHT))
    assert rc == 0 and np.isfinite(np.asarray(__import__("gpudeblur").io.read_image(out)[0])).all()
    with pytest.raises(ValueError, match="lam must be at most"):
        AllInFocus(lam=1e20)


def test_layers_outside_blind_refused_in_python():
    from gpudeblur import AllInFocus

    for mode in ("sv-admm", "fast", "auto"):
        with pytest.raises(ValueError, match="layers applies to mode 'blind' only"):
            AllInFocus(mode=mode, layers=2)
    assert AllInFocus(mode="blind", layers=2).layers == 2


def test_report_to_a_fifo_or_device_refused(tmp_path, scene, capsys):
    """``--report FIFO --overwrite`` (or a device such as /dev/null) replaced it with a regular
    file: refused before the work, the FIFO left as it was."""
    import os

    src, mp = scene
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "o.png"
    for extra in ([], ["--overwrite"]):
        rc, err = _run(capsys, "allinfocus", src, out, "--map", mp, "--report", fifo, *extra)
        assert rc == 2 and f"--report {fifo} is not a regular file" in err and not out.exists()
    assert not os.path.isfile(fifo) and os.path.exists(fifo)


def test_input_linked_into_the_layers_folder_is_not_overwritten(tmp_path, scene, capsys):
    """IN a symbolic link to ``L/layer1.png``, ``--save-layers L --overwrite`` rewrote the input
    (the check compared the link's own name)."""
    import os
    import shutil

    src, mp = scene
    (tmp_path / "L").mkdir()
    shutil.copy(src, tmp_path / "L" / "layer1.png")
    os.symlink(os.path.join("L", "layer1.png"), tmp_path / "in_link.png")
    before = (tmp_path / "L" / "layer1.png").read_bytes()
    rc, err = _run(capsys, "allinfocus", tmp_path / "in_link.png", tmp_path / "o.png", "--map", mp, "--mode", "blind",
                   "--save-layers", tmp_path / "L", "--overwrite")
    assert rc == 2 and "is a file that --save-layers" in err
    assert (tmp_path / "L" / "layer1.png").read_bytes() == before


def test_failed_write_removes_the_layers_folder_it_made(tmp_path, scene, capsys, monkeypatch):
    """A blind run whose writes fail (a full disk) left the ``--save-layers`` folder it had made,
    empty; it is removed again (a folder that was there stays)."""
    import gpudeblur.io as io

    src, mp = scene
    real = io.write_image

    def failing(path, *a, **k):
        if str(path).endswith("o.png"):
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(io, "write_image", failing)
    (tmp_path / "E").mkdir()  # the user's empty folder, named through a folder the run makes
    for folder in (tmp_path / "new" / "L", tmp_path, f"{tmp_path}/new2/../L2", f"{tmp_path}/new3/./L3/",
                   f"{tmp_path}/new4/../E"):
        rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "blind", "--iters", "1",
                       "--save-layers", folder, "--overwrite")
        assert rc == 2 and "No space left" in err
    for made in ("new", "new2", "L2", "new3", "new4"):
        assert not (tmp_path / made).exists(), made
    assert tmp_path.is_dir() and (tmp_path / "E").is_dir()
    assert not list(tmp_path.glob("layer*.png")) and not list(tmp_path.glob("*.tmp"))


def test_make_folders_lists_only_what_it_made(tmp_path, monkeypatch):
    """``new/../E`` with ``E`` there: only ``new`` is made (``E`` was listed too, and a failed run
    removed the user's empty folder); a failure part way takes back what was made."""
    from gpudeblur.allinfocus_cli import _make_folders

    monkeypatch.chdir(tmp_path)
    os.mkdir("E")
    assert _make_folders(os.path.join("new", "..", "E")) == ["new"]
    assert _make_folders("E") == [] and _make_folders(os.path.join("a", "b", ".", "c", "")) == \
        [os.path.join("a"), os.path.join("a", "b"), os.path.join("a", "b", ".", "c", "")]
    assert os.path.isdir(os.path.join("a", "b", "c"))
    with pytest.raises(OSError):
        _make_folders(os.path.join("p", "q", "x" * 300))  # the last name is too long
    assert not os.path.exists("p")
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError):
        _make_folders(os.path.join("r", "..", "f", "s"))  # f is a file
    assert not os.path.exists("r")


def test_bad_cpu_workers_variable_named(monkeypatch):
    from gpudeblur import _backend

    for bad in ("abc", "0", "-1", "2.5"):
        monkeypatch.setenv("GPUDEBLUR_CPU_WORKERS", bad)
        with pytest.raises(ValueError, match=f"GPUDEBLUR_CPU_WORKERS must be a positive integer .*got '{bad}'"):
            _backend._cpu_workers()
    monkeypatch.setenv("GPUDEBLUR_CPU_WORKERS", "3")
    assert _backend._cpu_workers() == 3


def test_psf_files_that_are_not_arrays(tmp_path, scene, capsys):
    """A text file named .npy / .npz was called "pickled data" (NumPy's guess)."""
    src, _ = scene
    (tmp_path / "p.npy").write_text("hi\n")
    (tmp_path / "c.npz").write_text("hi\n")
    rc, err = _run(capsys, "deconv", src, tmp_path / "o.png", "--psf", tmp_path / "p.npy")
    assert rc == 2 and "not a .npy array file" in err and "pickle" not in err
    rc, err = _run(capsys, "blurmap", src, tmp_path / "o.png", "--psf", tmp_path / "c.npz")
    assert rc == 2 and "not an .npz archive" in err and "pickle" not in err


def test_integer_arrays_scale_as_read_image_does(tmp_path):
    """A uint8 / uint16 array through the API gets the same float32 values as ``read_image`` of
    the same samples in a PNG (it was multiplied by float32(1/255): 126 of 256 values differed)."""
    import cv2

    from gpudeblur._backend import as_backend_array, get_backend
    from gpudeblur.io import read_image

    for a in (np.arange(256, dtype=np.uint8).reshape(16, 16), np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)):
        p = str(tmp_path / f"a{a.dtype}.png")
        cv2.imwrite(p, a)
        np.testing.assert_array_equal(as_backend_array(a, get_backend("cpu"))[0], read_image(p)[0])


def test_rl_tv_weight_below_its_divergence_bound(tmp_path, scene, capsys):
    """RL-TV's update divides by ``1 − λ·div`` (div up to ±4): from λ = 0.25 on it blows up (values
    of several hundred at 0.3, silently); refused in Python and in the CLI."""
    import gpudeblur as gd
    from gpudeblur.restoration import RL_TV_MAX_WEIGHT

    src, _ = scene
    img = np.asarray(gd.io.read_image(src)[0])
    k = gd.psf.disc(2.0)
    ok = gd.richardson_lucy_tv(img, k, num_iter=20, tv_weight=0.2)
    assert np.isfinite(ok).all()
    for lam in (RL_TV_MAX_WEIGHT, 0.5):
        with pytest.raises(ValueError, match="tv_weight of RL-TV must be below 0.25"):
            gd.richardson_lucy_tv(img, k, num_iter=2, tv_weight=lam)
    rc, err = _run(capsys, "deconv", src, tmp_path / "o.png", "--psf", "disc:2", "--method", "rl-tv", "--lam", "0.3")
    assert rc == 2 and "--lam of rl-tv must be below 0.25" in err and not (tmp_path / "o.png").exists()


def test_images_on_another_scale_warn_once_at_the_deblurring_entry(natural_rgb):
    """A float image in 0–255 (``cv2.imread(...).astype(np.float32)``) or a signed integer array
    was deblurred on its raw scale without a word (every weight and noise level assumes [0, 1]);
    the deblurring entry points warn, the forward blurs (which simulate linear light above white)
    do not, and an image in [0, 1] never does."""
    import warnings

    import gpudeblur as gd
    from gpudeblur.spatially_varying import blur_spatially_varying

    k = gd.psf.disc(1.5)
    img = natural_rgb[:48, :48]
    for bad in (img * 255, (img * 255).astype(np.int32)):
        with pytest.warns(UserWarning, match="image values exceed 2: .*divide 8-bit data by 255"):
            gd.admm_tv(bad, k, num_iter=2)
    with pytest.warns(UserWarning, match="image values exceed 2"):
        gd.AllInFocus(mode="fast").run(img * 255, radius_map=np.full(img.shape[:2], 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blur_spatially_varying(img * 4, np.full(img.shape[:2], 1.5))
        gd.admm_tv(np.clip(img * 1.05, 0, 1.05), k, num_iter=2)
        gd.AllInFocus(mode="fast").run(img, radius_map=np.full(img.shape[:2], 1.5))


def test_layer_file_linked_to_an_input_or_output_refused(tmp_path, scene, capsys):
    """Outputs are written through symbolic links, so a ``layer1.png`` in the ``--save-layers``
    folder that links back to IN (or to OUT, existing or not) would overwrite it: refused up front."""
    import os

    src, mp = scene
    (tmp_path / "L").mkdir()
    before = src.read_bytes()
    os.symlink(os.path.join("..", src.name), tmp_path / "L" / "layer1.png")
    os.symlink(os.path.join("..", "o.png"), tmp_path / "L" / "layer0.png")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "blind", "--iters", "1",
                   "--save-layers", tmp_path / "L", "--overwrite")
    assert rc == 2 and "layer0.png is a link to" in err and "would overwrite" in err
    os.remove(tmp_path / "L" / "layer0.png")
    rc, err = _run(capsys, "allinfocus", src, tmp_path / "o.png", "--map", mp, "--mode", "blind", "--iters", "1",
                   "--save-layers", tmp_path / "L", "--overwrite")
    assert rc == 2 and "layer1.png is a link to" in err
    assert src.read_bytes() == before and not (tmp_path / "o.png").exists()
