"""The CPU backend's ducc0 real FFTs against :mod:`scipy.fft` (same API, same values)."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.fft as sfft

from gpudeblur import _backend

pytest.importorskip("ducc0")  # a dependency; a device image may lack it (then the backend warns and uses scipy.fft)
from gpudeblur import _cpu_fft as dfft  # noqa: E402

RNG = np.random.default_rng(7)


def _real(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def _cplx(shape, dtype):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dtype)


def _close(got, want, dtype):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    tol = 2e-6 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-13
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


# (function name, input kind, shape, keyword arguments)
CASES = [
    ("rfft2", "r", (3, 40, 31), {}),
    ("rfft2", "r", (40, 31), {"s": (32, 40)}),  # crop one axis, zero-pad the other
    ("rfft2", "r", (2, 40, 31), {"axes": (0, 2)}),
    ("irfft2", "c", (3, 40, 16), {"s": (40, 31)}),
    ("irfft2", "c", (3, 40, 16), {}),
    ("irfft2", "c", (40, 16), {"s": (50, 20)}),  # pads the complex input, crops its last axis
    ("irfft2", "c", (40, 16), {"s": (30, 40)}),
    ("fft2", "c", (2, 33, 20), {}),
    ("fft2", "r", (33, 20), {"s": (40, 16)}),
    ("ifft2", "c", (2, 33, 20), {}),
    ("fft", "c", (5, 27), {"axis": 0}),
    ("ifft", "c", (5, 27), {"n": 30}),
    ("rfft", "r", (5, 27), {"n": 20}),
    ("irfft", "c", (5, 14), {}),
    ("irfft", "c", (5, 14), {"n": 27}),
    ("irfft", "c", (5, 14), {"n": 40, "axis": -1}),
    ("fftn", "c", (4, 6, 10), {"axes": (0, 2)}),
    ("ifftn", "c", (4, 6, 10), {}),
    ("rfftn", "r", (4, 6, 10), {"s": (8, 9)}),
    ("irfftn", "c", (4, 6, 6), {"s": (4, 6, 10)}),
]


@pytest.mark.parametrize("name,kind,shape,kw", CASES)
@pytest.mark.parametrize("precision", ["single", "double"])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_matches_scipy(name, kind, shape, kw, precision, norm):
    rdt, cdt = (np.float32, np.complex64) if precision == "single" else (np.float64, np.complex128)
    x = _real(shape, rdt) if kind == "r" else _cplx(shape, cdt)
    keep = x.copy()
    got = getattr(dfft, name)(x, norm=norm, workers=2, **kw)
    want = getattr(sfft, name)(x, norm=norm, **kw)
    _close(got, want, rdt)
    np.testing.assert_array_equal(x, keep)  # the input is left alone without overwrite_x


@pytest.mark.parametrize("name", ["ifft", "ifft2", "irfft", "irfft2", "fft2"])
def test_overwrite_x_returns_the_transform(name):
    x = _cplx((3, 24, 13), np.complex64)
    want = getattr(sfft, name)(x)
    got = getattr(dfft, name)(x.copy(), overwrite_x=True, workers=2)
    _close(got, want, np.float32)


def test_dtypes_follow_scipy():
    for dt in (np.float16, np.float32, np.float64, np.int32, np.uint8, bool):
        x = (RNG.random((6, 8)) * 4).astype(dt)
        assert dfft.rfft2(x).dtype == sfft.rfft2(x).dtype, dt
        assert dfft.fft2(x).dtype == sfft.fft2(x).dtype, dt
    with pytest.raises(TypeError):
        dfft.rfft2(_cplx((4, 4), np.complex64))


def test_strided_input():
    x = _real((3, 64, 50), np.float32)[:, ::2, 1:]
    _close(dfft.rfft2(x, workers=2), sfft.rfft2(x), np.float32)


@pytest.mark.parametrize("shape", [(3, 600, 500), (1, 1100, 513), (16, 160, 160)])
def test_same_bits_for_any_worker_count(shape):
    """Fixed chunks, one ducc0 thread each: the bits do not depend on ``workers``
    (ducc0's own threading gives other bits for 1, 2, 3, ... threads; these shapes
    are large enough to be split into chunks)."""
    x = _real(shape, np.float32)
    X = dfft.rfft2(x, workers=1)
    Z = dfft.ifft2(X, workers=1)
    for w in (None, 2, 3, 4, 7, -1):
        np.testing.assert_array_equal(dfft.rfft2(x, workers=w), X)
        np.testing.assert_array_equal(dfft.irfft2(X, s=shape[1:], workers=w), dfft.irfft2(X, s=shape[1:], workers=1))
        np.testing.assert_array_equal(dfft.ifft2(X, workers=w), Z)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_pool():
    """A child forked after the parent used the FFT pool still transforms (the
    parent's pool threads do not exist in the child)."""
    x = _real((3, 600, 500), np.float32)
    want = dfft.rfft2(x, workers=2)
    code = (
        "import os, sys, numpy as np\n"
        "from gpudeblur import _cpu_fft as d\n"
        "x = np.random.default_rng(1).standard_normal((3, 600, 500)).astype(np.float32)\n"
        "X = d.rfft2(x, workers=2)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if np.array_equal(d.rfft2(x, workers=2), X) else 3)\n"
        "_, st = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(st))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert want.shape == (3, 600, 251)


def test_works_while_the_interpreter_shuts_down():
    """A thread still transforming after the main thread returned (the pool refuses
    new work then): the chunks run in the calling thread, same bits."""
    code = (
        "import threading, time, numpy as np\n"
        "from gpudeblur import _cpu_fft as d\n"
        "x = np.random.default_rng(1).standard_normal((3, 600, 500)).astype(np.float32)\n"
        "want = d.rfft2(x, workers=1)\n"
        "def job():\n"
        "    time.sleep(0.5)\n"
        "    ok = np.array_equal(d.rfft2(x, workers=2), want)\n"
        "    print('ok' if ok else 'differ', flush=True)\n"
        "threading.Thread(target=job).start()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_module_is_not_scipys_package():
    with pytest.raises(AttributeError):
        dfft.__path__  # noqa: B018


def test_passes_are_split_into_chunks():
    """The determinism above needs more than one chunk per pass on these shapes."""
    seen = []
    real = dfft._pass

    def spy(fn, x, out, axis, nthreads):
        calls = []
        real(lambda u, v: (calls.append(u.shape), fn(u, v)), x, out, axis, nthreads)
        seen.append(len(calls))

    dfft._pass = spy
    try:
        dfft.rfft2(_real((3, 600, 500), np.float32), workers=2)
    finally:
        dfft._pass = real
    assert len(seen) == 2 and min(seen) > 1


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (3, 0, 5), (2, 1)])
def test_degenerate_shapes_as_scipy(shape):
    for name in ("fft2", "ifft2", "irfft2", "fftn", "irfftn"):
        x = np.ones(shape, np.complex64)
        try:
            want = getattr(sfft, name)(x)
        except ValueError:
            with pytest.raises(ValueError):
                getattr(dfft, name)(x)
            continue
        got = getattr(dfft, name)(x)
        assert got.shape == want.shape and got.dtype == want.dtype
    assert dfft.fftn(np.ones((3, 4)), axes=()).shape == sfft.fftn(np.ones((3, 4)), axes=()).shape


def test_big_endian_input_keeps_precision():
    x = _real((6, 8), np.float32)
    got = dfft.rfft2(x.astype(">f4"))
    assert got.dtype == np.complex64
    _close(got, sfft.rfft2(x), np.float32)
    assert dfft.irfft2(got.astype(">c8")).dtype == np.float32


def test_overwrite_x_on_read_only_inverse_real():
    X = _cplx((6, 5), np.complex64)
    X.flags.writeable = False
    _close(dfft.irfft2(X, overwrite_x=True), sfft.irfft2(X), np.float32)
    _close(dfft.irfft(X, overwrite_x=True), sfft.irfft(X), np.float32)


def test_bad_arguments_as_scipy():
    x = _real((8, 8), np.float32)
    for kw in ({"norm": "bogus"}, {"workers": 0}, {"workers": -100}, {"axes": (0, 0)}, {"axes": (0, 5)}, {"s": (4,)},
               {"s": (0, 4)}):
        with pytest.raises(ValueError):
            sfft.rfft2(x, **kw)
        with pytest.raises(ValueError):
            dfft.rfft2(x, **kw)


def test_other_names_are_scipys():
    """Complex transforms stay pocketfft's (as fast on the Gabor bank's power-of-two blocks)."""
    for name in ("fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "fftfreq", "next_fast_len"):
        assert getattr(dfft, name) is getattr(sfft, name)
    assert dfft.rfft2 is not sfft.rfft2


def test_backend_fft_choice(monkeypatch):
    monkeypatch.delenv(_backend.CPU_FFT_ENV_VAR, raising=False)
    assert _backend.get_backend("cpu").fft is dfft
    monkeypatch.setenv(_backend.CPU_FFT_ENV_VAR, "scipy")
    assert _backend.get_backend("cpu").fft is sfft
    monkeypatch.setenv(_backend.CPU_FFT_ENV_VAR, "DUCC0")
    assert _backend.get_backend("cpu").fft is dfft
    monkeypatch.setenv(_backend.CPU_FFT_ENV_VAR, "fftw")
    with pytest.raises(ValueError, match="GPUDEBLUR_CPU_FFT"):
        _backend.get_backend("cpu")


def test_missing_ducc0_warns_and_uses_scipy():
    """Without ducc0 the CPU backend says so once and runs on scipy.fft."""
    code = (
        "import sys, warnings; sys.modules['ducc0'] = None\n"
        "from gpudeblur import _backend\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    be = _backend.get_backend('cpu')\n"
        "import scipy.fft\n"
        "assert be.fft is scipy.fft, be.fft\n"
        "assert [x.category.__name__ for x in w] == ['FFTFallbackWarning'], [str(x.message) for x in w]\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != _backend.CPU_FFT_ENV_VAR}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pipeline_close_on_either_fft(monkeypatch):
    """The same deconvolution on ducc0 and on scipy.fft agrees to float32 rounding."""
    from gpudeblur.spatially_varying import deconvolve_spatially_varying

    img = np.clip(_real((48, 56), np.float32) * 0.1 + 0.5, 0, 1)
    rmap = np.linspace(0, 3, 56, dtype=np.float32)[None, :].repeat(48, 0)
    outs = []
    for name in ("ducc0", "scipy"):
        monkeypatch.setenv(_backend.CPU_FFT_ENV_VAR, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            outs.append(deconvolve_spatially_varying(img, rmap, num_iter=5, backend="cpu"))
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
