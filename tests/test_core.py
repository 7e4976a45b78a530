"""Backend layer, PSF models, FFT convolution, difference operators, CG."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import gpudeblur as gd
from gpudeblur import _backend
from gpudeblur.convolution import BlurOperator, next_smooth_len
from gpudeblur.operators import difference_otfs, div, grad, laplacian_otf_abs2
from gpudeblur.solvers import conjugate_gradient, hard_threshold, shrink_isotropic, soft_threshold

from conftest import to_host

# ------------------------------------------------------------------ backend


def test_public_names_resolve():
    """Every name in ``gpudeblur.__all__`` resolves (the lazy ones on first use), and every lazy
    function is listed (the README names ``gpudeblur.blur_spatially_varying``)."""
    import gpudeblur

    for name in gpudeblur.__all__:
        assert getattr(gpudeblur, name) is not None, name
    lazy_functions = {k for k, (_mod, attr) in gpudeblur._LAZY.items() if attr is not None}
    assert lazy_functions <= set(gpudeblur.__all__)
    from gpudeblur.spatially_varying import blur_spatially_varying

    assert gpudeblur.blur_spatially_varying is blur_spatially_varying


def test_backend_names_and_errors(monkeypatch):
    assert gd.get_backend("cpu").name == "cpu"
    assert gd.get_backend("CPU").xp is np
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        gd.get_backend("gpu")
    monkeypatch.setenv("GPUDEBLUR_BACKEND", "cpu")
    assert gd.get_backend().name == "cpu"
    monkeypatch.setenv("GPUDEBLUR_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        gd.get_backend()


def _fake_cupy(free, pool_used, pool_free, limit):
    """Enough of CuPy's namespace for Backend.available_memory (no GPU needed)."""
    from types import SimpleNamespace

    pool = SimpleNamespace(free_bytes=lambda: pool_free, used_bytes=lambda: pool_used, get_limit=lambda: limit,
                           total_bytes=lambda: pool_used + pool_free)
    runtime = SimpleNamespace(memGetInfo=lambda: (free, 80 << 30))
    return SimpleNamespace(cuda=SimpleNamespace(runtime=runtime), get_default_memory_pool=lambda: pool)


@pytest.mark.parametrize(
    "free, used, pool_free, limit, expected",
    [
        (10 << 30, 0, 0, 0, 10 << 30),  # no pool, no limit: the device's free memory
        (10 << 30, 3 << 30, 2 << 30, 0, 12 << 30),  # cached free blocks are reusable
        (60 << 30, 3 << 30, 2 << 30, 24 << 30, 19 << 30),  # the limit binds: limit - (used + cached), as CuPy checks
        (1 << 30, 3 << 30, 2 << 30, 24 << 30, 3 << 30),  # the device binds under a limit
        (60 << 30, 25 << 30, 0, 24 << 30, 0),  # over the limit: nothing left, never negative
    ],
)
def test_available_memory_honours_the_pool_limit(free, used, pool_free, limit, expected):
    be = _backend.Backend("cuda", _fake_cupy(free, used, pool_free, limit), None)
    assert be.available_memory() == expected
    from gpudeblur.blurmap.estimator import CUDA_MEMORY_FRACTION, BlurMapEstimator

    est = BlurMapEstimator.__new__(BlurMapEstimator)  # the budget rule only, no LUT build
    est.memory_budget = None
    assert est._budget(be) == int(CUDA_MEMORY_FRACTION * expected)
    assert _backend.get_backend("cpu").available_memory() is None


def test_cuda_request_without_gpu_is_an_error():
    if gd.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(gd.BackendUnavailableError, match="cuda"):
        gd.get_backend("cuda")
    with pytest.raises(gd.BackendUnavailableError):
        gd.wiener(np.ones((16, 16)), gd.psf.disc(1), 0.1, backend="cuda")


def test_auto_falls_back_with_one_warning_when_cupy_has_no_device(monkeypatch):
    if gd.cuda_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(_backend, "_probe_cupy", lambda: (None, "CuPy is installed but no CUDA device answered (test)"))
    monkeypatch.setattr(_backend.importlib.util, "find_spec", lambda name: object() if name == "cupy" else None)
    monkeypatch.setattr(_backend, "_warned_fallback", False)
    with pytest.warns(gd.GPUFallbackWarning, match="no CUDA device"):
        assert gd.get_backend("auto").name == "cpu"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gd.get_backend("auto").name == "cpu"  # warned once only


@pytest.mark.parametrize(
    "dt_in,dt_req,dt_out",
    [
        (np.uint8, None, np.float32),
        (np.uint16, None, np.float32),
        (np.float16, None, np.float32),
        (np.float64, None, np.float32),
        (np.float64, "float64", np.float64),
        (np.float32, np.float64, np.float64),
        (bool, None, np.float32),
    ],
)
def test_dtype_rules(dt_in, dt_req, dt_out):
    x = np.ones((8, 8), dtype=dt_in)
    arr, kind = _backend.as_backend_array(x, gd.get_backend("cpu"), dt_req)
    assert arr.dtype == dt_out and kind.kind == "numpy"
    with pytest.raises(ValueError, match="float32 or float64"):
        _backend.as_backend_array(x, gd.get_backend("cpu"), np.int32)
    with pytest.raises(TypeError, match="complex"):
        _backend.as_backend_array(x.astype(complex), gd.get_backend("cpu"))


class _DLPackOnly:
    """A foreign tensor exposing only the DLPack protocol (like torch)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_input_accepted():
    y = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    out = gd.fftconvolve(_DLPackOnly(y), gd.psf.disc(2))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, gd.fftconvolve(y, gd.psf.disc(2)))
    with pytest.raises(TypeError, match="image must be"):
        gd.fftconvolve({"not": "an image"}, gd.psf.disc(2))
    with pytest.raises(TypeError, match="unsupported image dtype"):
        gd.fftconvolve("not an image", gd.psf.disc(2))


def test_arrays_in_arrays_out(backend):
    xp = backend.xp
    y = xp.asarray(np.random.default_rng(0).random((20, 20)))
    out = gd.wiener(y, gd.psf.disc(1), 0.1, backend=backend.name)
    assert type(out) is type(y)


# --------------------------------------------------------------------- PSF


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_image_finds_every_non_finite_value(backend, dtype):
    """One min/max pass finds NaN and both infinities wherever they are; integers are finite."""
    import warnings

    from gpudeblur._validate import check_image

    xp = backend.xp
    base = np.random.default_rng(3).random((5, 7, 3)).astype(dtype)
    for bad in (np.nan, np.inf, -np.inf):
        for pos in ((0, 0, 0), (4, 6, 2), (2, 3, 1)):
            img = base.copy()
            img[pos] = bad
            with pytest.raises(ValueError, match="^image contains NaN or Inf values$"):
                check_image(backend.asarray(img), xp, unit_range=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_image(backend.asarray(base), xp, unit_range=True) is not None
        check_image(backend.asarray(np.full((3, 3), 255, np.uint8)), xp)
    with pytest.warns(UserWarning, match="values exceed 2"):
        check_image(backend.asarray(base * 3), xp, unit_range=True)


@pytest.mark.parametrize("r", [0, 0.3, 1, 2.5, 4, 7.75])
def test_disc(r):
    k = gd.psf.disc(r)
    assert abs(k.sum() - 1) < 1e-12 and (k >= 0).all()
    assert k.shape[0] % 2 == 1 and k.shape == k.shape[::-1]
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    if r == 0:
        assert k.shape == (1, 1)
    if r >= 2.5:  # area of the unnormalized disc ≈ πr²
        c = k.shape[0] // 2
        unnorm = k / k[c, c]
        assert abs(unnorm.sum() - np.pi * r * r) / (np.pi * r * r) < 0.03
        # second moment of a uniform disc: r²/2 per axis... E[x²+y²] = r²/2
        yy, xx = np.mgrid[-c : c + 1, -c : c + 1]
        assert abs((k * (xx**2 + yy**2)).sum() - r * r / 2) / (r * r / 2) < 0.06


def test_disc_continuous_in_radius():
    a = gd.psf.disc(3.0)
    b = gd.psf.disc(3.01)
    n = max(a.shape[0], b.shape[0])
    pa = np.pad(a, (n - a.shape[0]) // 2)
    pb = np.pad(b, (n - b.shape[0]) // 2)
    assert np.abs(pa - pb).max() < 2e-3


def test_gaussian_moments():
    k = gd.psf.gaussian(2.0)
    c = k.shape[0] // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1]
    assert abs((k * xx**2).sum() - 4.0) < 0.02
    assert gd.psf.gaussian(0).shape == (1, 1)


@pytest.mark.parametrize("angle", [0, 30, 90, 135])
def test_motion_direction_and_length(angle):
    k = gd.psf.motion(15, angle)
    ch, cw = k.shape[0] // 2, k.shape[1] // 2
    yy, xx = np.mgrid[-ch : ch + 1, -cw : cw + 1]
    th = np.radians(angle)
    along = xx * np.cos(th) - yy * np.sin(th)
    across = xx * np.sin(th) + yy * np.cos(th)
    assert (k * across**2).sum() < 0.2  # concentrated on the line
    # uniform segment of length L: variance along it ≈ (L² − 1) / 12
    assert abs((k * along**2).sum() - (15**2 - 1) / 12) < 2.5


def test_psf_spec_and_validation(tmp_path):
    np.testing.assert_array_equal(gd.psf.from_spec("disc:3"), gd.psf.disc(3))
    np.testing.assert_array_equal(gd.psf.from_spec("motion:9,45"), gd.psf.motion(9, 45))
    np.testing.assert_array_equal(gd.psf.from_spec("gaussian:1.5"), gd.psf.gaussian(1.5))
    p = tmp_path / "k.npy"
    np.save(p, np.ones((3, 5)))
    np.testing.assert_allclose(gd.psf.from_spec(str(p)), np.ones((3, 5)) / 15)
    for bad, needle in [
        ("disc:", "malformed"),
        ("disc:x", "malformed"),
        ("blob:3", "malformed"),
        ("disc:-2", "non-negative"),
        ("motion:1,2,3", "malformed"),
        (str(tmp_path / "missing.npy"), "not found"),
    ]:
        with pytest.raises(ValueError, match=needle):
            gd.psf.from_spec(bad)
    for bad, needle in [(np.zeros((3, 3)), "sums to zero"), (-np.ones((3, 3)), "negative"), (np.ones(3), "2-D"), (np.full((2, 2), np.inf), "NaN")]:
        with pytest.raises(ValueError, match=needle):
            gd.psf.from_array(bad)


# ------------------------------------------------------------- convolution


def test_next_smooth_len():
    for n in range(1, 600):
        m = next_smooth_len(n)
        assert m >= n
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        assert r == 1
        # minimal: nothing smooth in between
        assert all(next_smooth_len(j) == m for j in range(n, m + 1))


@pytest.mark.parametrize("boundary,mode", [("reflect", "reflect"), ("zero", "constant"), ("periodic", "wrap")])
def test_fftconvolve_matches_scipy(backend, boundary, mode):
    rng = np.random.default_rng(0)
    img = rng.random((37, 53, 3))
    for k in (gd.psf.disc(4.3), gd.psf.motion(9, 30), rng.random((4, 6))):
        k = k / k.sum()
        ours = to_host(gd.fftconvolve(backend.xp.asarray(img), k, boundary=boundary, dtype="float64", backend=backend.name))
        ref = np.stack([ndi.convolve(img[..., c], k, mode=mode) for c in range(3)], -1)
        np.testing.assert_allclose(ours, ref, atol=1e-12)
        o32 = to_host(gd.fftconvolve(img.astype(np.float32), k, boundary=boundary, backend=backend.name))
        assert o32.dtype == np.float32
        np.testing.assert_allclose(o32, ref, atol=2e-6)


@pytest.mark.parametrize("boundary", ["reflect", "periodic", "zero"])
def test_blur_operator_adjoint_identity(backend, boundary):
    rng = np.random.default_rng(1)
    k = rng.random((5, 7))
    op = BlurOperator(k, (30, 41), backend, np.float64, boundary=boundary)
    shape = (2, 30, 41) if boundary == "zero" else (2,) + op.grid_shape
    x = backend.xp.asarray(rng.standard_normal(shape))
    y = backend.xp.asarray(rng.standard_normal(shape))
    lhs = float((op.forward(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_extend_crop_roundtrip_and_taper_continuity(backend):
    img = backend.xp.asarray(np.random.default_rng(2).random((1, 40, 50)))
    op = BlurOperator(gd.psf.disc(3), (40, 50), backend, np.float64, boundary="reflect")
    ext = op.extend(img)
    assert ext.shape[1:] == op.grid_shape
    np.testing.assert_array_equal(to_host(op.crop(ext)), to_host(img))
    e = to_host(ext)[0]
    # the periodic seam is smooth: jump across the wrap ≤ typical neighbour jump
    seam = np.abs(e[:, 0] - e[:, -1]).mean()
    assert seam < np.abs(np.diff(to_host(img)[0], axis=1)).mean()


def test_psf_larger_than_image():
    with pytest.raises(ValueError, match="larger than the image"):
        gd.fftconvolve(np.ones((5, 5)), gd.psf.disc(4))


# -------------------------------------------------------------- operators


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_grad_div_adjoint(backend, boundary):
    rng = np.random.default_rng(3)
    xp = backend.xp
    x = xp.asarray(rng.standard_normal((2, 13, 17)))
    px = xp.asarray(rng.standard_normal((2, 13, 17)))
    py = xp.asarray(rng.standard_normal((2, 13, 17)))
    if boundary == "neumann":  # the gradient's range: zero last col/row
        px[..., -1] = 0
        py[..., -1, :] = 0
    gx, gy = grad(x, boundary)
    lhs = float((gx * px + gy * py).sum())
    rhs = -float((x * div(px, py, boundary)).sum())
    assert abs(lhs - rhs) < 1e-12 * max(1, abs(lhs))


def test_difference_otfs_match_grad():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 10))
    dx, dy = difference_otfs(x.shape, np, np.float64)
    gx, gy = grad(x, "periodic")
    np.testing.assert_allclose(np.fft.irfft2(np.fft.rfft2(x) * dx, s=x.shape), gx, atol=1e-12)
    np.testing.assert_allclose(np.fft.irfft2(np.fft.rfft2(x) * dy, s=x.shape), gy, atol=1e-12)
    np.testing.assert_allclose(laplacian_otf_abs2(x.shape, np, np.float64), np.abs(dx) ** 2 + np.abs(dy) ** 2, atol=1e-12)


# ------------------------------------------------------------------ solvers


def test_conjugate_gradient_batched_vs_direct(backend):
    rng = np.random.default_rng(5)
    xp = backend.xp
    n = 20
    mats = []
    for _ in range(3):
        a = rng.standard_normal((n, n))
        S = np.diag(np.logspace(0, 2, n))  # badly scaled: Jacobi must help
        mats.append(S @ (a @ a.T + n * np.eye(n) * (1 + _)) @ S)
    A = np.stack(mats)
    b = rng.standard_normal((3, n))
    Ad = xp.asarray(A)
    x, info = conjugate_gradient(lambda v: xp.einsum("bij,bj->bi", Ad, v), xp.asarray(b), tol=1e-12, maxiter=200)
    ref = np.stack([np.linalg.solve(A[i], b[i]) for i in range(3)])
    np.testing.assert_allclose(to_host(x), ref, rtol=1e-8, atol=1e-10)
    assert bool(to_host(info.converged).all())
    # Jacobi preconditioner converges in no more iterations
    diag = xp.asarray(np.stack([np.diag(a) for a in A]))
    x2, info2 = conjugate_gradient(lambda v: xp.einsum("bij,bj->bi", Ad, v), xp.asarray(b), tol=1e-12, maxiter=200, M=lambda r: r / diag)
    np.testing.assert_allclose(to_host(x2), ref, rtol=1e-8, atol=1e-10)
    assert int(to_host(info2.iterations).max()) < int(to_host(info.iterations).max())


def test_conjugate_gradient_warm_start_and_zero_rhs():
    A = np.diag([1.0, 2.0, 3.0])[None]
    b = np.array([[1.0, 2.0, 3.0]])
    x, info = conjugate_gradient(lambda v: np.einsum("bij,bj->bi", A, v), b, x0=np.ones((1, 3)))
    np.testing.assert_allclose(x, np.ones((1, 3)))
    assert int(info.iterations[0]) == 0
    x, info = conjugate_gradient(lambda v: np.einsum("bij,bj->bi", A, v), np.zeros((1, 3)))
    np.testing.assert_array_equal(x, 0)


def test_prox_operators_closed_forms():
    v = np.linspace(-2, 2, 81)
    t = 0.5
    # soft threshold minimizes ½(z−v)² + t|z| (check against a fine grid search)
    z = np.linspace(-3, 3, 60001)
    brute = z[np.argmin(0.5 * (z[None] - v[:, None]) ** 2 + t * np.abs(z[None]), axis=1)]
    np.testing.assert_allclose(soft_threshold(v, t), brute, atol=1e-4)
    np.testing.assert_array_equal(hard_threshold(v, t), np.where(np.abs(v) > t, v, 0))
    vx, vy = np.array([3.0, 0.1, 0.0]), np.array([4.0, 0.0, 0.0])
    zx, zy = shrink_isotropic(vx, vy, 1.0)
    np.testing.assert_allclose(zx, [3 * 4 / 5, 0, 0])
    np.testing.assert_allclose(zy, [4 * 4 / 5, 0, 0])


@pytest.mark.parametrize("shape", [(37, 50), (64, 65), (17, 17)])
@pytest.mark.parametrize("psf_shape", [(1, 1), (4, 7), (17, 17), (16, 16)])
def test_psf2otf_is_the_fft_of_the_centred_psf(backend, shape, psf_shape):
    """Equals numpy's FFT of the PSF embedded with its centre at the origin
    (a direct separable DFT for small PSFs, the backend's FFT for the 16×16
    and 17×17 ones on the 17×17 grid)."""
    from gpudeblur.convolution import psf2otf

    psf = np.random.default_rng(4).random(psf_shape)
    big = np.zeros(shape)
    big[: psf_shape[0], : psf_shape[1]] = psf
    ref = np.fft.rfft2(np.roll(big, (-(psf_shape[0] // 2), -(psf_shape[1] // 2)), axis=(0, 1)))
    got = to_host(psf2otf(psf, shape, backend, np.float64))
    assert got.dtype == np.complex128 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * psf.sum())
    got32 = to_host(psf2otf(psf, shape, backend, np.float32))
    assert got32.dtype == np.complex64
    np.testing.assert_allclose(got32, ref, rtol=0, atol=1e-6 * psf.sum())
    with pytest.raises(ValueError, match="larger than the grid"):
        psf2otf(np.ones((40, 3)), (37, 50), backend)


@pytest.mark.parametrize("shape", [(64, 90), (37, 50)])
def test_psf2otf_of_even_psfs_is_real(backend, shape):
    """A PSF even about its centre in both axes (disc, Gaussian) takes the real cos ⊗ cos
    product: equal to numpy's FFT of the centred PSF, imaginary part exactly 0; an
    asymmetric perturbation (1e-6) takes the complex product and is still exact."""
    from gpudeblur.convolution import psf2otf

    for psf in (gd.psf.disc(0.0), gd.psf.disc(3.3), gd.psf.gaussian(2.0), gd.psf.disc(8.0)):
        for p in (psf, psf + np.pad([[1e-6]], ((0, psf.shape[0] - 1), (0, psf.shape[1] - 1)))):
            kh, kw = p.shape
            big = np.zeros(shape)
            big[:kh, :kw] = p
            ref = np.fft.rfft2(np.roll(big, (-(kh // 2), -(kw // 2)), axis=(0, 1)))
            got = to_host(psf2otf(p, shape, backend, np.float64))
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * p.sum())
            assert (np.abs(got.imag).max() == 0) == (p is psf) or kh == 1

