"""The ``gpudeblur`` command line: deconv end to end, user errors, info, demo, plug-ins.

Most runs are in-process (``cli.main([...])`` returns the exit status);
two go through ``python -m gpudeblur`` in a subprocess to check the real
exit status and that no traceback is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tifffile

from gpudeblur import cli, psf
from gpudeblur.convolution import fftconvolve
from gpudeblur.io import read_image


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def psnr(ref, x):
    return 10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2))


@pytest.fixture(scope="module")
def blurred_case(tmp_path_factory, natural_gray):
    """A 96x96 gray image blurred by disc(2), noise 0.005, stored as 16-bit PNG."""
    d = tmp_path_factory.mktemp("deconv")
    sharp = natural_gray[:96, :96]
    b = fftconvolve(sharp, psf.disc(2.0), backend="cpu")
    b = b + np.random.default_rng(0).normal(0, 0.005, b.shape)
    b16 = np.rint(np.clip(b, 0, 1) * 65535).astype(np.uint16)
    path = d / "blurred.png"
    cv2.imwrite(str(path), b16)
    return sharp, path


def test_deconv_improves_psnr_and_keeps_16bit(tmp_path, capsys, blurred_case):
    sharp, src = blurred_case
    out = tmp_path / "out.png"
    code, stdout, err = run(["deconv", src, out, "--psf", "disc:2", "--iters", "40", "--backend", "cpu"], capsys)
    assert code == 0, err
    assert "wrote" in stdout
    restored, meta = read_image(out)
    blurred, _ = read_image(src)
    assert meta.bit_depth == 16
    gain = psnr(sharp, restored) - psnr(sharp, blurred)
    assert gain > 1.5, f"admm-tv gained only {gain:.2f} dB"


@pytest.mark.parametrize(
    "method,extra",
    [
        ("wiener", []),
        ("wiener", ["--balance", "0.01"]),
        ("inverse", ["--lam", "0.01"]),
        ("tikhonov", ["--lam", "0.002"]),
        ("rl", ["--iters", "5"]),
        ("rl-tv", ["--iters", "5", "--lam", "0.002"]),
        ("admm-tv", ["--iters", "5", "--lam", "0.0005", "--luminance", "--clip"]),
        ("admm-tv", ["--iters", "5"]),  # the colour TV of the three colour channels only
        ("admm-tv", ["--iters", "5", "--tv-channels", "separate"]),
    ],
)
def test_every_method_keeps_rgba_layout(tmp_path, capsys, natural_rgb, method, extra):
    rgb = np.rint(natural_rgb[:40, :48] * 255).astype(np.uint8)
    alpha = np.random.default_rng(1).integers(0, 256, (40, 48), dtype=np.int64).astype(np.uint8)
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.dstack([rgb[..., ::-1], alpha]))
    out = tmp_path / "out.tif"
    code, _, err = run(["deconv", src, out, "--psf", "gaussian:1.0", "--method", method, "--backend", "cpu", *extra], capsys)
    assert code == 0, err
    back = tifffile.imread(out)
    assert back.shape == (40, 48, 4) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[..., 3], alpha)  # alpha untouched
    assert np.abs(back[..., :3].astype(float) - rgb).mean() < 40  # still the same picture, RGB order kept


def test_motion_and_npy_psf_and_float_output(tmp_path, capsys, natural_gray):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, natural_gray[:48, :48].astype(np.float32))
    np.save(tmp_path / "k.npy", psf.gaussian(1.0))
    code, _, err = run(["deconv", src, tmp_path / "a.tif", "--psf", "motion:5,30", "--method", "wiener"], capsys)
    assert code == 0, err
    code, _, err = run(["deconv", src, tmp_path / "b.tif", "--psf", tmp_path / "k.npy", "--method", "tikhonov"], capsys)
    assert code == 0, err
    assert tifffile.imread(tmp_path / "b.tif").dtype == np.float32  # float in, float out
    code, _, err = run(["deconv", src, tmp_path / "c.tif", "--psf", "disc:1", "--method", "inverse", "--lam", "0"], capsys)
    assert code == 0, err  # eps = 0 (plain inverse) is allowed


def test_overwrite_flag(tmp_path, capsys, blurred_case):
    _, src = blurred_case
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    code, _, err = run(["deconv", src, out, "--psf", "disc:2", "--method", "wiener"], capsys)
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    code, _, err = run(["deconv", src, out, "--psf", "disc:2", "--method", "wiener", "--overwrite"], capsys)
    assert code == 0, err
    assert read_image(out)[0].shape == (96, 96)


# ---------------------------------------------------------------------------
# user errors: status 2, one line, nothing written
# ---------------------------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path, natural_rgb):
    d = tmp_path / "in"
    d.mkdir()
    rgb8 = np.rint(natural_rgb[:32, :32] * 255).astype(np.uint8)
    cv2.imwrite(str(d / "ok.png"), rgb8[..., ::-1])
    cv2.imwrite(str(d / "trunc.png"), rgb8)
    cv2.imwrite(str(d / "trunc.jpg"), rgb8)
    for name in ("trunc.png", "trunc.jpg"):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("hello")
    cv2.imwrite(str(d / "one.png"), np.zeros((1, 1), np.uint8))
    tifffile.imwrite(d / "i16.tif", np.zeros((8, 8), np.int16))
    tifffile.imwrite(d / "five.tif", np.zeros((8, 8, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    nan = np.full((8, 8), 0.5, np.float32)
    nan[2, 2] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    np.save(d / "zero.npy", np.zeros((3, 3)))
    np.save(d / "neg.npy", np.array([[0.5, -0.1], [0.3, 0.3]]))
    np.save(d / "psf3d.npy", np.ones((3, 3, 3)))
    (tmp_path / "exists.png").write_bytes(b"x")
    return d


BAD = {
    "missing file": ["deconv", "{d}/missing.png", "{o}/o.png", "--psf", "disc:2"],
    "input is a folder": ["deconv", "{d}", "{o}/o.png", "--psf", "disc:2"],
    "empty file": ["deconv", "{d}/empty.png", "{o}/o.png", "--psf", "disc:2"],
    "not an image": ["deconv", "{d}/text.png", "{o}/o.png", "--psf", "disc:2"],
    "truncated png": ["deconv", "{d}/trunc.png", "{o}/o.png", "--psf", "disc:2"],
    "truncated jpeg": ["deconv", "{d}/trunc.jpg", "{o}/o.png", "--psf", "disc:2"],
    "unsupported depth": ["deconv", "{d}/i16.tif", "{o}/o.png", "--psf", "disc:2"],
    "unsupported channels": ["deconv", "{d}/five.tif", "{o}/o.png", "--psf", "disc:2"],
    "one-pixel image": ["deconv", "{d}/one.png", "{o}/o.png", "--psf", "disc:0"],
    "NaN in image": ["deconv", "{d}/nan.tif", "{o}/o.tif", "--psf", "disc:1"],
    "PSF larger than image": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:40"],
    "zero-sum PSF": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "{d}/zero.npy"],
    "negative PSF": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "{d}/neg.npy"],
    "3-D PSF": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "{d}/psf3d.npy"],
    "missing PSF file": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "{d}/nope.npy"],
    "malformed PSF": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:abc"],
    "negative radius": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:-2"],
    "no PSF": ["deconv", "{d}/ok.png", "{o}/o.png"],
    "unknown method": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "magic"],
    "unknown backend": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--backend", "opencl"],
    "zero iterations": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--iters", "0"],
    "negative iterations": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--iters", "-3"],
    "zero lam": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--lam", "0"],
    "negative lam": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "tikhonov", "--lam", "-1"],
    "negative eps": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "inverse", "--lam", "-1"],
    "nan lam": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--lam", "nan"],
    "inf balance": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "wiener", "--balance", "inf"],
    "zero balance": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "wiener", "--balance", "0"],
    "iters for wiener": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "wiener", "--iters", "3"],
    "lam for rl": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "rl", "--lam", "0.1"],
    "tv channels for wiener": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--method", "wiener",
                               "--tv-channels", "joint"],
    "unknown tv channels": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--tv-channels", "both"],
    "tv channels of luma": ["deconv", "{d}/ok.png", "{o}/o.png", "--psf", "disc:2", "--luminance",
                            "--tv-channels", "joint"],
    "output exists": ["deconv", "{d}/ok.png", "{o}/exists.png", "--psf", "disc:2"],
    "output is input": ["deconv", "{d}/ok.png", "{d}/ok.png", "--psf", "disc:2", "--overwrite"],
    "output is input via ..": ["deconv", "{d}/ok.png", "{d}/../in/ok.png", "--psf", "disc:2", "--overwrite"],
    "output folder missing": ["deconv", "{d}/ok.png", "{o}/nope/o.png", "--psf", "disc:2"],
    "output extension": ["deconv", "{d}/ok.png", "{o}/o.gif", "--psf", "disc:2"],
    "16-bit jpeg": ["deconv", "{d}/ok.png", "{o}/o.jpg", "--psf", "disc:2", "--bit-depth", "16"],
    "no command": [],
    "unknown command": ["sharpen"],
}


#: A word the message of each case must contain (it names the actual problem).
EXPECT = {
    'missing file': 'not found',
    'input is a folder': 'folder',
    'empty file': 'empty',
    'not an image': 'cannot decode',
    'truncated png': 'truncated',
    'truncated jpeg': 'truncated',
    'unsupported depth': 'unsupported sample type',
    'unsupported channels': 'channel count',
    'one-pixel image': 'too small',
    'NaN in image': 'NaN',
    'PSF larger than image': 'larger than the image',
    'zero-sum PSF': 'sums to zero',
    'negative PSF': 'negative',
    '3-D PSF': '2-D',
    'missing PSF file': 'not found',
    'malformed PSF': 'malformed',
    'negative radius': 'radius',
    'no PSF': '--psf',
    'unknown method': 'invalid choice',
    'unknown backend': 'invalid choice',
    'zero iterations': '--iters',
    'negative iterations': '--iters',
    'zero lam': '--lam',
    'negative lam': '--lam',
    'negative eps': '--lam',
    'nan lam': '--lam',
    'inf balance': '--balance',
    'zero balance': '--balance',
    'iters for wiener': '--iters',
    'lam for rl': '--lam',
    'tv channels for wiener': '--tv-channels',
    'unknown tv channels': 'invalid choice',
    'tv channels of luma': '--luminance',
    'output exists': 'exists',
    'output is input': 'is the input',
    'output is input via ..': 'is the input',
    'output folder missing': 'folder does not exist',
    'output extension': 'unsupported output format',
    '16-bit jpeg': '8-bit',
    'no command': 'required',
    'unknown command': 'invalid choice',
}


def _listing(root):
    return sorted(os.path.relpath(os.path.join(dp, f), root) for dp, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("case", list(BAD))
def test_user_errors_exit_2_one_line_nothing_written(tmp_path, capsys, bad_inputs, case):
    argv = [a.format(d=bad_inputs, o=tmp_path) for a in BAD[case]]
    before = _listing(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (case, err)
    assert lines[0].startswith("gpudeblur") and "error:" in lines[0], (case, err)
    assert EXPECT[case] in lines[0], (case, err)
    assert "Traceback" not in err
    assert _listing(tmp_path) == before, case


def test_output_is_input_via_symlink(tmp_path, capsys, bad_inputs):
    link = tmp_path / "link.png"
    link.symlink_to(bad_inputs / "ok.png")
    code, _, err = run(["deconv", bad_inputs / "ok.png", link, "--psf", "disc:2", "--overwrite"], capsys)
    assert code == 2 and "is the input" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input(tmp_path, capsys, bad_inputs):
    src = bad_inputs / "ok.png"
    src.chmod(0)
    try:
        code, _, err = run(["deconv", src, tmp_path / "o.png", "--psf", "disc:2"], capsys)
    finally:
        src.chmod(0o644)
    assert code == 2 and "Permission denied" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_cuda_backend_unavailable_is_a_user_error(tmp_path, capsys, bad_inputs):
    from gpudeblur import cuda_available

    if cuda_available():
        pytest.skip("a CUDA device is present")
    code, _, err = run(["deconv", bad_inputs / "ok.png", tmp_path / "o.png", "--psf", "disc:2", "--backend", "cuda"], capsys)
    assert code == 2 and "unavailable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_check_output_path_helper(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="is the input"):
        cli.check_output_path([tmp_path / "b.png", src], src, overwrite=True)
    with pytest.raises(FileExistsError):
        cli.check_output_path(None, src, overwrite=False)
    assert cli.check_output_path(None, src, overwrite=True) == str(src)
    assert cli.check_output_path(src, tmp_path / "m.npy", False, kind="array") == str(tmp_path / "m.npy")
    with pytest.raises(ValueError, match="unsupported output format"):
        cli.check_output_path(src, tmp_path / "m.npy", False, kind="image")


def test_api_rejects_nan_and_inf():
    import gpudeblur

    img = np.full((16, 16), 0.5)
    img[3, 3] = np.inf
    for fn in (gpudeblur.wiener, gpudeblur.admm_tv, gpudeblur.richardson_lucy):
        with pytest.raises(ValueError, match="NaN or Inf"):
            fn(img, psf.disc(1), backend="cpu")
    with pytest.raises(ValueError, match="NaN or Inf"):
        gpudeblur.wiener(np.full((16, 16), 0.5), np.full((3, 3), np.nan), backend="cpu")


def _python_m(args, cwd):
    env = dict(os.environ)
    env.pop("GPUDEBLUR_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "gpudeblur", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )


def test_subprocess_exit_status(tmp_path, bad_inputs):
    r = _python_m(["deconv", bad_inputs / "trunc.jpg", tmp_path / "o.png", "--psf", "disc:2"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("gpudeblur: error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _python_m(["deconv", bad_inputs / "ok.png", tmp_path / "o.png", "--psf", "disc:2", "--iters", "0"], tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------------------
# info, demo, help
# ---------------------------------------------------------------------------


def test_info(capsys):
    code, out, err = run(["info"], capsys)
    assert code == 0, err
    for key in ("gpudeblur", "numpy", "scipy", "numba", "opencv", "cupy", "backend", "device", "kernels"):
        assert key in out
    code, out, _ = run(["info", "--backend", "cpu"], capsys)
    assert code == 0 and "backend" in out and "cpu" in out


def test_help_and_version(capsys):
    assert run(["--help"], capsys)[0] == 0
    assert run(["deconv", "--help"], capsys)[0] == 0
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and "gpudeblur" in out


def test_demo_allinfocus_small(tmp_path, capsys, monkeypatch):
    """The main-job demo on a 160x160 crop of the bundled image (the real one uses all 384x384).

    Smaller crops are mostly border for the 51-pixel analysis window; on
    this one the estimated-map result gains 1.7 dB (26.34 vs 24.61 dB).
    """
    import gpudeblur.data
    from gpudeblur import demo

    crop = gpudeblur.data.sharp()[112:272, 112:272].astype(np.float32)
    monkeypatch.setattr(gpudeblur.data, "sharp", lambda: crop)
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--out", out, "--backend", "cpu"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(demo._SCENE_FILES)
    assert "PSNR" in stdout and "all-in-focus" in stdout and "estimated map" in stdout
    sharp = read_image(out / "sharp.png")[0]
    blurred = read_image(out / "blurred.png")[0]
    restored = read_image(out / "allinfocus.png")[0]
    assert restored.shape == sharp.shape and np.isfinite(restored).all()
    assert psnr(sharp, restored) > psnr(sharp, blurred) + 1.0
    assert read_image(out / "map_true.png")[0].shape[0] == 160  # colour map with its bar
    code, _, err = run(["demo", "--out", out, "--backend", "cpu"], capsys)
    assert code == 2 and "--overwrite" in err


def test_demo_counts_numba_compile_time():
    """The demo says how much of its time compiled Numba kernels, measured, not assumed: the
    timer sees a fresh kernel's compile and not a compiled kernel's calls; the note appears
    above the threshold only, and the CUDA backend's note names CuPy's compile."""
    import numba

    from gpudeblur import demo
    from gpudeblur._backend import get_backend

    @numba.njit(cache=False)
    def _fresh(x):
        return x + 1

    with demo.numba_compile_time() as first:
        _fresh(1)
    with demo.numba_compile_time() as again:
        _fresh(2)
    assert first[0] > 0.0 and again[0] == 0.0
    cpu = get_backend("cpu")
    assert demo._compile_note(cpu, 0.3) == ""
    assert demo._compile_note(cpu, 12.34).startswith("12.3 s of it compiling Numba kernels")
    assert demo._compile_note(cpu, 2.0, what="of the times above went into").startswith(
        "2.0 s of the times above went into compiling")

    class _Cuda:
        name = "cuda"

    assert "CuPy" in demo._compile_note(_Cuda(), 0.0) and "Numba" not in demo._compile_note(_Cuda(), 0.0)


def test_demo_scene_is_deterministic_and_layered():
    from gpudeblur import demo

    img = np.random.default_rng(5).random((60, 50, 3))
    a, ra = demo.synthesize_scene(img)
    b, rb = demo.synthesize_scene(img)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, demo.scene_map(img.shape))
    assert set(np.unique(ra)) == set(demo.SCENE_RADII)
    np.testing.assert_allclose(a * 255, np.rint(a * 255), atol=1e-4)  # 8-bit quantized


def test_demo_uniform_small(tmp_path, capsys, monkeypatch, natural_rgb):
    """The non-blind demo (--uniform) on a 64x64 crop."""
    import gpudeblur.data

    monkeypatch.setattr(gpudeblur.data, "sharp", lambda: natural_rgb[:64, :64].astype(np.float32))
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--uniform", "--out", out, "--backend", "cpu"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(
        ["sharp.png", "blurred.png", "restored.png", "restored_wiener.png", "restored_rl.png"]
    )
    assert "PSNR" in stdout and "admm-tv" in stdout
    sharp = read_image(out / "sharp.png")[0]
    assert psnr(sharp, read_image(out / "restored.png")[0]) > psnr(sharp, read_image(out / "blurred.png")[0]) + 1
    code, _, err = run(["demo", "--uniform", "--out", out, "--backend", "cpu"], capsys)
    assert code == 2 and "--overwrite" in err
    code, stdout, _ = run(["-q", "demo", "--uniform", "--out", out, "--backend", "cpu", "--overwrite"], capsys)
    # --quiet silences the status lines, not the results table (the point of the demo)
    assert code == 0 and "PSNR" in stdout and "admm-tv" in stdout and "wrote" not in stdout


def test_demo_default_folders_differ(tmp_path, capsys, monkeypatch):
    """``demo`` then ``demo --uniform`` without --out: each its own folder (both wrote
    sharp.png into ./gpudeblur-demo, so the second was refused without --overwrite)."""
    from gpudeblur import demo

    seen = []

    def stop(out_dir, *a, **k):
        seen.append(out_dir)
        raise OSError("stopped before the work")

    monkeypatch.setattr(demo, "_prepare_out", stop)
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--uniform"]):
        code, _, err = run(["demo", "--backend", "cpu", *extra], capsys)
        assert code != 0 and "stopped before the work" in err
    assert seen == ["gpudeblur-demo", "gpudeblur-demo-uniform"]
    assert seen == [demo.DEFAULT_OUT, demo.DEFAULT_OUT_UNIFORM]


def test_demo_synthesis_is_deterministic():
    from gpudeblur import demo

    img = np.random.default_rng(5).random((20, 24, 3))
    a, k = demo.synthesize(img)
    b, _ = demo.synthesize(img)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a * 255, np.rint(a * 255), atol=1e-4)  # 8-bit quantized
    assert k.shape == psf.disc(demo.RADIUS).shape


# ---------------------------------------------------------------------------
# plug-ins and helpers
# ---------------------------------------------------------------------------


def _make_plugin(tmp_path, monkeypatch, name, body):
    pkg = tmp_path / "plugpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m.startswith("plugpkg")]:
        monkeypatch.delitem(sys.modules, mod)
    return f"plugpkg.{name}"


def test_plugin_registers_subcommand(tmp_path, monkeypatch, capsys):
    mod = _make_plugin(
        tmp_path,
        monkeypatch,
        "hello",
        """
        from gpudeblur.cli import check_output_path, progress

        def register(subparsers, parents):
            p = subparsers.add_parser("hello", parents=parents, help="say hello")
            p.add_argument("--fail", action="store_true")
            p.set_defaults(func=run)

        def run(args):
            if args.fail:
                raise ValueError("hello failed on purpose")
            with progress(3, "hello") as bar:
                for i in range(3):
                    bar(i)
            print(f"hello backend={args.backend} overwrite={args.overwrite}")
            return 0
        """,
    )
    monkeypatch.setattr(cli, "_PLUGINS", ["gpudeblur.no_such_plugin_xyz", "no_such_pkg_xyz.cli", mod])
    code, out, _ = run(["hello", "--backend", "cpu", "--overwrite"], capsys)
    assert code == 0 and "hello backend=cpu overwrite=True" in out
    code, _, err = run(["hello", "--fail"], capsys)
    assert code == 2 and err.strip() == "gpudeblur: error: hello failed on purpose"


def test_broken_plugin_raises(tmp_path, monkeypatch):
    mod = _make_plugin(tmp_path, monkeypatch, "broken", "import no_such_module_at_all_xyz\n")
    monkeypatch.setattr(cli, "_PLUGINS", [mod])
    with pytest.raises(ImportError):
        cli.build_parser()


def test_real_plugins_load():
    """Every plug-in module that exists imports and registers without clashing."""
    parser = cli.build_parser()
    assert parser.prog == "gpudeblur"


def test_progress_helper():
    with cli.progress(4, "x") as bar:
        for i in range(4):
            bar(i)
        bar.update(0)
    p = cli.progress(None, "y")
    p.update(2)
    p.close()
