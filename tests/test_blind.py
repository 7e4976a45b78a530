"""Blind defocus deblurring (gpudeblur.blind) and the framelet transform.

References: closed forms (tight-frame identity, adjoint identity, group
invariance), NumPy re-implementations (hard thresholding, the kernel
objective and its finite-difference gradient), and ground truth on
synthetic data (a natural image blurred by a known disc).
"""

import ctypes

import numpy as np
import pytest
from scipy import ndimage as ndi

import gpudeblur as gd
from gpudeblur import blind as B
from gpudeblur.framelets import framelet_adjoint, framelet_forward, n_bands

from conftest import build_host_shim, ptr, to_host

RADIUS = 3.0
NOISE = 0.005


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def kerr(k, kt):
    return np.linalg.norm(k - kt) / np.linalg.norm(kt)


def embed(k, size=31):
    return B._embed_center(k, size)


@pytest.fixture(scope="module")
def small_gray():
    """96x96 natural gray image in [0, 1] (scikit-image's astronaut)."""
    from skimage import color, data

    return color.rgb2gray(data.astronaut())[50:146, 190:286].astype(np.float64)


@pytest.fixture(scope="module")
def blurred(small_gray):
    rng = np.random.default_rng(0)
    return ndi.convolve(small_gray, gd.psf.disc(RADIUS), mode="reflect") + NOISE * rng.standard_normal(small_gray.shape)


# ----------------------------------------------------------------- framelets


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_framelet_tight_frame(backend, levels):
    xp = backend.xp
    rng = np.random.default_rng(levels)
    x = xp.asarray(rng.standard_normal((2, 37, 30)))
    c = framelet_forward(x, levels)
    assert c.shape == (n_bands(levels), 2, 37, 30)
    # WᵀW = I (perfect reconstruction) and Parseval ‖Wx‖ = ‖x‖
    assert float(xp.abs(framelet_adjoint(c, levels) - x).max()) < 1e-12
    assert abs(float((c * c).sum()) - float((x * x).sum())) < 1e-10 * float((x * x).sum())
    # exact adjoint: <Wx, y> = <x, Wᵀy>
    y = xp.asarray(rng.standard_normal(c.shape))
    lhs = float((c * y).sum())
    rhs = float((x * framelet_adjoint(y, levels)).sum())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_framelet_filters_and_float32(backend):
    # one level on a delta: the 9 bands are the tensor products of h0, h1, h2
    xp = backend.xp
    x = xp.zeros((9, 9), dtype=xp.float32)
    x[4, 4] = 1
    c = to_host(framelet_forward(x, 1))
    assert c.dtype == np.float32
    h = [np.array(f) for f in gd.framelets.FILTERS]
    # band order: (i, j) row-major without (0, 0), low-pass last
    order = [(i, j) for i in range(3) for j in range(3) if (i, j) != (0, 0)] + [(0, 0)]
    for b, (i, j) in enumerate(order):
        ref = np.outer(h[i][::-1], h[j][::-1])  # analysis correlates: taps appear flipped around the delta
        np.testing.assert_allclose(c[b, 3:6, 3:6], ref, atol=1e-7)
    np.testing.assert_allclose(to_host(framelet_adjoint(framelet_forward(x, 2), 2)), to_host(x), atol=1e-6)


# ------------------------------------------------------ fused framelet kernels

CT = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}
SUFFIX = {np.float32: "f32", np.float64: "f64"}
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _shrink_ref(x, e, t):
    from gpudeblur.solvers import soft_threshold

    z = framelet_forward(x, 1) + e
    d = z.copy()
    d[:-1] = soft_threshold(z[:-1], x.dtype.type(t))
    return d, z - d


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_fused_framelet_host_vs_numba_vs_numpy(host_build_dir, dt):
    from gpudeblur import _numba_blind as nb

    lib = build_host_shim("blind", host_build_dir)
    rng = np.random.default_rng(5)
    C, M, N = 2, 23, 31
    x = rng.standard_normal((C, M, N)).astype(dt)
    e0 = (0.1 * rng.standard_normal((9, C, M, N))).astype(dt)
    d_ref, e_ref = _shrink_ref(x, e0, 0.3)
    d_h, e_h = np.empty_like(e0), e0.copy()
    getattr(lib, f"framelet_shrink_{SUFFIX[dt]}")(ptr(x), ptr(d_h), ptr(e_h), C, M, N, CT[dt](0.3))
    d_n, e_n = np.empty_like(e0), e0.copy()
    nb.framelet_shrink(x, d_n, e_n, dt(0.3))
    for a, b in ((d_h, d_ref), (e_h, e_ref), (d_n, d_ref), (e_n, e_ref)):
        np.testing.assert_allclose(a, b, atol=TOL[dt] * 10, rtol=0)
    np.testing.assert_allclose(d_h, d_n, atol=TOL[dt], rtol=0)  # max abs error host vs Numba
    out_h = np.empty_like(x)
    getattr(lib, f"framelet_adjoint_diff_{SUFFIX[dt]}")(ptr(d_ref), ptr(e0), ptr(out_h), C, M, N)
    out_n = np.empty_like(x)
    nb.framelet_adjoint_diff(d_ref, e0, out_n)
    ref = framelet_adjoint(d_ref - e0, 1)
    np.testing.assert_allclose(out_h, ref, atol=TOL[dt] * 10, rtol=0)
    np.testing.assert_allclose(out_n, ref, atol=TOL[dt] * 10, rtol=0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_fused_framelet_backend(backend, dt):
    """The backend's fused kernels (CUDA or Numba) equal the array code."""
    xp = backend.xp
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 30, 26)).astype(dt)
    e0 = (0.1 * rng.standard_normal((9, 1, 30, 26))).astype(dt)
    d_ref, e_ref = _shrink_ref(x, e0, 0.2)
    f = B._FusedFramelet(backend)
    d, e = xp.empty(e0.shape, dtype=dt), xp.asarray(e0)
    f.shrink(xp.asarray(x), d, e, 0.2)
    np.testing.assert_allclose(to_host(d), d_ref, atol=TOL[dt] * 10, rtol=0)
    np.testing.assert_allclose(to_host(e), e_ref, atol=TOL[dt] * 10, rtol=0)
    out = f.adjoint_diff(xp.asarray(d_ref), xp.asarray(e0))
    np.testing.assert_allclose(to_host(out), framelet_adjoint(d_ref - e0, 1), atol=TOL[dt] * 10, rtol=0)


def test_ustep_fused_equals_array_code(backend, small_gray, blurred):
    xp = backend.xp
    grid = B._Grid(blurred.shape, 31, backend, np.float64)
    yg = grid.op.extend(xp.asarray(blurred[None]))
    ag = grid.pad_zero(xp.ones((1,) + blurred.shape))
    K = grid.otf(xp.asarray(embed(gd.psf.disc(RADIUS))))
    u1 = B._UStep(grid, ag, yg, 0.005, "framelet", 1, fused=True).run(K, ag * yg, 10)
    u2 = B._UStep(grid, ag, yg, 0.005, "framelet", 1, fused=False).run(K, ag * yg, 10)
    assert float(xp.abs(u1 - u2).max()) < 1e-10


# ---------------------------------------------------------------- projection


def _is_d4_symmetric(k, tol):
    return all(
        np.abs(k - t).max() <= tol
        for t in (k.T, k[::-1], k[:, ::-1], k[::-1, ::-1], k.T[::-1], k.T[:, ::-1], k.T[::-1, ::-1])
    )


def test_projection_properties():
    rng = np.random.default_rng(0)
    k = embed(gd.psf.disc(4)) + 0.0005 * rng.standard_normal((31, 31))
    p, r0 = B.project_symmetric_lowrank(k, return_rank=True)
    assert p.shape == (31, 31)
    assert (p >= 0).all()
    assert abs(p.sum() - 1) < 1e-12
    assert _is_d4_symmetric(p, 1e-15)
    assert 1 <= r0 < 31
    # idempotent-ish: projecting again changes little
    p2 = B.project_symmetric_lowrank(p)
    assert np.linalg.norm(p2 - p) / np.linalg.norm(p) < 1e-2
    p3 = B.project_symmetric_lowrank(p2)
    assert np.linalg.norm(p3 - p2) < 0.2 * np.linalg.norm(p2 - p)
    # without symmetry: no symmetry imposed, still a non-negative unit-sum kernel
    q = B.project_symmetric_lowrank(k, symmetric=False)
    assert (q >= 0).all() and abs(q.sum() - 1) < 1e-12
    assert not _is_d4_symmetric(q, 1e-6)
    # without low rank: equals the symmetrized simplex projection
    q = B.project_symmetric_lowrank(k, low_rank=False)
    assert np.linalg.matrix_rank(q) > r0


@pytest.mark.parametrize("radius", [2.0, 3.0, 5.0, 8.0])
def test_projection_keeps_discs(radius):
    kd = embed(gd.psf.disc(radius))
    p = B.project_symmetric_lowrank(kd)
    assert np.linalg.norm(p - kd) / np.linalg.norm(kd) < 0.04  # r=5 loses 3 % to the 1/30 rank rule


def test_projection_rank_rule():
    # r0 = number of singular values >= σmax/30
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((31, 31)))
    s = np.array([1.0, 0.5, 0.1, 1 / 29, 1 / 31, 0.001] + [0.0] * 25)
    k = (u * s) @ u.T + 1.0  # symmetric, positive entries
    _, r0 = B.project_symmetric_lowrank(k, symmetric=False, return_rank=True)
    s_all = np.linalg.svd(k, compute_uv=False)
    assert r0 == int((s_all >= s_all[0] / 30).sum())


def test_projection_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        B.project_symmetric_lowrank(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        B.project_symmetric_lowrank(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="square"):
        B.project_symmetric_lowrank(np.ones((3, 5)))


# ------------------------------------------------------------------- k-step


def _kernel_problem(backend, img, f, lam2=0.5, dtype=np.float64):
    be = backend
    xp = be.xp
    grid = B._Grid(img.shape, 31, be, dtype)
    ag = grid.pad_zero(xp.ones((1,) + img.shape, dtype=dtype))
    ug = grid.op.extend(xp.asarray(img[None].astype(dtype)))
    fg = grid.op.extend(xp.asarray(f[None].astype(dtype)))
    return B._KernelProblem(grid, ug, ag, ag * fg, lam2), grid


def test_kernel_objective_and_gradient(backend, small_gray, blurred):
    kp, grid = _kernel_problem(backend, small_gray, blurred)
    xp = backend.xp
    k = embed(gd.psf.disc(2.0))
    # objective against an independent NumPy evaluation (ndimage convolution, wrap on the grid)
    ug = to_host(grid.op.extend(xp.asarray(small_gray[None])))[0]
    fg = to_host(kp.gdata)[0]
    ag = to_host(kp.alpha)[0]
    ref = ((ag * ndi.convolve(ug, k, mode="wrap") - fg) ** 2).sum() + 0.5 * (k**2).sum()
    val, grad = kp.value_and_grad(xp.asarray(k))
    assert abs(val - ref) < 1e-9 * ref
    # gradient against central differences
    d = np.random.default_rng(0).standard_normal((31, 31))
    eps = 1e-6
    num = (kp.objective(xp.asarray(k + eps * d)) - kp.objective(xp.asarray(k - eps * d))) / (2 * eps)
    assert abs(num - float((to_host(grad) * d).sum())) < 1e-5 * abs(num)


@pytest.mark.parametrize("accelerate", [True, False])
def test_pga_decreases_objective(backend, small_gray, blurred, accelerate):
    kp, _ = _kernel_problem(backend, small_gray, blurred, dtype=np.float32)
    kt = embed(gd.psf.disc(RADIUS))
    k0 = embed(gd.psf.disc(4.5))
    k, hist = B.pga_kernel(kp, k0, 30, accelerate=accelerate)
    assert hist[0] == pytest.approx(kp.objective(backend.xp.asarray(k0.astype(np.float32))), rel=1e-5)
    gain = 0.5 if accelerate else 0.8  # plain PGA is slower (ill-conditioned low frequencies)
    assert min(hist) < gain * hist[0]
    assert kp.objective(backend.xp.asarray(k.astype(np.float32))) == pytest.approx(min(hist), rel=1e-5)
    assert kerr(k, kt) < (0.5 if accelerate else 0.9) * kerr(k0, kt)
    # the result is feasible
    assert (k >= 0).all() and abs(k.sum() - 1) < 1e-9 and _is_d4_symmetric(k, 1e-12)
    if not accelerate:  # plain PGA with a 1/L step is monotone here
        assert all(b <= a * (1 + 1e-6) for a, b in zip(hist, hist[1:]))


# ------------------------------------------------------------------- c-step


@pytest.mark.parametrize("rule", ["exact", "paper"])
def test_weighted_hard_threshold(backend, rule):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 40, 50)) * 0.05
    r1 = rng.standard_normal((1, 40, 50)) * 0.01
    w = np.exp(-500 * np.abs(r1))
    lam3 = 0.01
    thr = lam3 * w if rule == "paper" else np.sqrt(lam3 * w)
    ref = np.where(np.abs(x) > thr, x, 0)
    xp = backend.xp
    out = B.weighted_hard_threshold(xp.asarray(x), xp.asarray(w), lam3, rule)
    np.testing.assert_array_equal(to_host(out), ref)
    # the exact rule minimizes ‖x − c‖² + λ3·Σ Λ·[c ≠ 0] pixelwise
    if rule == "exact":
        c = to_host(out)
        cost = (x - c) ** 2 + lam3 * w * (c != 0)
        alt = np.where(c != 0, 0.0, x)  # the other choice at every pixel
        cost_alt = (x - alt) ** 2 + lam3 * w * (alt != 0)
        assert (cost <= cost_alt + 1e-15).all()


def test_paper_lam2():
    k = embed(gd.psf.disc(3.0))
    printed = (-50 * np.linalg.norm(k) + 15) * 1e5
    assert B.paper_lam2(k, "paper") == pytest.approx(printed)
    assert B.paper_lam2(k) == pytest.approx(printed / 255**2)
    assert B.paper_lam2(embed(gd.psf.disc(1.0))) == 0.0  # negative formula clipped


# -------------------------------------------------------------- Algorithm 2


def test_tung_init_finds_radius(backend, blurred):
    xp = backend.xp
    k, r, info = B.init_kernel_tung(xp.asarray(blurred), None, radii=np.arange(1.0, 6.01, 0.5), n_iter=20, backend=backend.name)
    assert abs(r - RADIUS) <= 0.5
    assert k.shape == (31, 31) and abs(k.sum() - 1) < 1e-12
    e = info["errors"]
    assert (np.diff(e) > 0).mean() > 0.8  # the re-blur error grows with the radius (why argmin fails)


def _gaussian_baseline(f, kt, lam1, n_iter, be):
    sig = np.linspace(0.5, 4, 71)
    errs = [kerr(embed(gd.psf.gaussian(s)), kt) for s in sig]
    kg = embed(gd.psf.gaussian(float(sig[int(np.argmin(errs))])))
    u, _, _ = B.blind_deblur_layer(f, init_kernel=kg, n_outer=1, n_pga=1, n_admm=1, n_final=n_iter, lam1=lam1,
                                   use_c=False, backend=be)
    return kg, u


def test_blind_deblur_synthetic(backend, small_gray, blurred):
    """Paper pipeline (Tung init + Alg. 2) on a disc r=3 blur with σ=0.005 noise."""
    xp = backend.xp
    kt = embed(gd.psf.disc(RADIUS))
    lam1 = 0.002
    u, k, info = B.blind_deblur_layer(xp.asarray(blurred), n_outer=6, n_admm=20, lam1=lam1, n_final=60,
                                      init_radii=np.arange(1.0, 6.01, 0.5), backend=backend.name)
    assert type(u) is type(xp.asarray(blurred)) and u.dtype == np.float32 and u.shape == blurred.shape
    u = to_host(u)
    p_in = psnr(blurred, small_gray)
    p_out = psnr(u, small_gray)
    kg, ug = _gaussian_baseline(blurred, kt, lam1, 60, backend.name)
    p_gauss = psnr(to_host(ug), small_gray)
    # closer to the true disc than the best-fitting Gaussian (the parametric model of earlier work)
    assert kerr(k, kt) < 0.5 * kerr(kg, kt), (kerr(k, kt), kerr(kg, kt))
    assert p_out >= p_in + 2.0, (p_in, p_out)
    assert p_out > p_gauss + 0.3, (p_out, p_gauss)
    assert info["c_fraction"] < 0.05  # correct mask: the c-term stays (nearly) empty
    assert (k >= 0).all() and abs(k.sum() - 1) < 1e-9 and _is_d4_symmetric(k, 1e-12)
    assert len(info["objective"]) == 6 and abs(info["radius_init"] - RADIUS) <= 0.5


def test_blind_refines_wrong_init(backend, small_gray, blurred):
    """From a too-large disc (r=4) the k-steps move the kernel towards the truth."""
    xp = backend.xp
    kt = embed(gd.psf.disc(RADIUS))
    k0 = embed(gd.psf.disc(RADIUS + 1))
    u, k, info = B.blind_deblur_layer(xp.asarray(blurred), init_kernel=k0, n_outer=6, n_admm=20, lam1=0.002,
                                      use_c=False, n_final=20, backend=backend.name)
    assert kerr(k, kt) < 0.75 * kerr(k0, kt), (kerr(k, kt), kerr(k0, kt))
    obj = info["objective"]
    assert obj[-1] < obj[0]
    assert psnr(to_host(u), small_gray) > psnr(blurred, small_gray)


def test_c_term_absorbs_segmentation_error(small_gray):
    """Mask wrongly includes a sharp strip: c picks it up, the composite improves (ablation C)."""
    img = small_gray
    M, N = img.shape
    tm = np.zeros((M, N))
    tm[:, N // 2 :] = 1
    bad = tm.copy()
    bad[M // 4 : 3 * M // 4, N // 4 : N // 2] = 1
    strip = (bad - tm) > 0
    rng = np.random.default_rng(1)
    f = tm * ndi.convolve(img, gd.psf.disc(RADIUS), mode="reflect") + (1 - tm) * img + NOISE * rng.standard_normal(img.shape)
    kt = embed(gd.psf.disc(RADIUS))
    inner = ndi.binary_erosion(tm > 0, iterations=4)
    res = {}
    for use_c in (True, False):
        u, _, info = B.blind_deblur_layer(f, bad, init_kernel=kt, n_outer=6, n_admm=20, n_final=30, use_c=use_c, backend="cpu")
        d2 = (u - img) ** 2
        res[use_c] = (10 * np.log10(1 / d2[strip].mean()), 10 * np.log10(1 / d2[inner].mean()), info)
    c_on = res[True][2]["c"] != 0
    assert c_on[strip].mean() > 0.4 and c_on[tm > 0].mean() < 0.1
    # less damage where the mask is wrong, (almost) no loss where it is right
    assert res[True][0] > res[False][0] + 1.0, (res[True][0], res[False][0])
    assert res[True][1] > res[False][1] - 0.3, (res[True][1], res[False][1])


def test_blind_mask_rgb_and_callback(natural_rgb):
    img = natural_rgb[:64, :64]
    f = np.stack([ndi.convolve(img[..., c], gd.psf.disc(2), mode="reflect") for c in range(3)], -1)
    mask = np.zeros(f.shape[:2])
    mask[:, 20:] = 1.0
    mask[:, 16:20] = 0.5  # soft edge
    calls = []
    u, k, info = B.blind_deblur_layer(f, mask, kernel_size=15, n_outer=3, n_admm=5, n_pga=5, n_final=5,
                                      init_kernel=gd.psf.disc(2), callback=calls.append, backend="cpu")
    assert u.shape == f.shape and u.dtype == np.float32 and isinstance(u, np.ndarray)
    assert k.shape == (15, 15)
    assert calls == [0, 1, 2]
    assert info["radius_init"] is None and info["lam2"] > 0
    assert np.isfinite(u).all()


def test_crop_to_mask_matches_full_grid(small_gray):
    img = np.pad(small_gray, ((0, 40), (0, 60)), mode="reflect")
    f = ndi.convolve(img, gd.psf.disc(2), mode="reflect")
    mask = np.zeros(f.shape)
    mask[10:60, 15:70] = 1.0
    kw = dict(kernel_size=15, n_outer=3, n_admm=10, n_pga=5, n_final=20, init_kernel=gd.psf.disc(2), backend="cpu",
              dtype="float64")
    u1, k1, i1 = B.blind_deblur_layer(f, mask, crop_to_mask=True, **kw)
    u2, k2, i2 = B.blind_deblur_layer(f, mask, crop_to_mask=False, **kw)
    assert i1["box"] == ((0, 75), (0, 85)) and i2["box"] is None
    assert np.abs(k1 - k2).max() < 1e-6
    inside = mask > 0
    diff = np.abs(u1 - u2)[inside]
    assert diff.mean() < 5e-4 and diff.max() < 1e-2  # different FFT grids, ADMM not run to convergence
    assert (u1[80:] == f[80:]).all()  # outside the box: the input


def test_blind_float64_and_tv():
    from skimage import data

    img = data.camera()[200:248, 200:248] / 255.0
    f = ndi.convolve(img, gd.psf.disc(2), mode="reflect")
    u, k, _ = B.blind_deblur_layer(f, kernel_size=11, n_outer=2, n_admm=5, n_pga=3, n_final=5, prior="tv",
                                   init_kernel=gd.psf.disc(2), dtype="float64", backend="cpu")
    assert u.dtype == np.float64 and np.isfinite(u).all()


def test_blind_bad_inputs():
    f = np.random.default_rng(0).random((40, 40))
    with pytest.raises(ValueError, match="mask shape"):
        B.blind_deblur_layer(f, np.ones((40, 41)), backend="cpu")
    with pytest.raises(ValueError, match="mask values"):
        B.blind_deblur_layer(f, np.full((40, 40), 2.0), backend="cpu")
    with pytest.raises(ValueError, match="mask contains NaN"):
        B.blind_deblur_layer(f, np.full((40, 40), np.nan), backend="cpu")
    with pytest.raises(ValueError, match="mask is empty"):
        B.blind_deblur_layer(f, np.zeros((40, 40)), backend="cpu")
    with pytest.raises(ValueError, match="kernel_size"):
        B.blind_deblur_layer(f, kernel_size=30, backend="cpu")
    with pytest.raises(ValueError, match="kernel_size"):
        B.blind_deblur_layer(f, kernel_size=41, backend="cpu")
    with pytest.raises(ValueError, match="kernel_size"):
        B.blind_deblur_layer(f, kernel_size=1, backend="cpu")
    bad = f.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        B.blind_deblur_layer(bad, backend="cpu")
    with pytest.raises(ValueError, match="prior"):
        B.blind_deblur_layer(f, prior="wavelet", backend="cpu")
    with pytest.raises(ValueError, match="c_rule"):
        B.blind_deblur_layer(f, c_rule="soft", backend="cpu")
    with pytest.raises(ValueError, match="lam1"):
        B.blind_deblur_layer(f, lam1=-1, backend="cpu")
    with pytest.raises(ValueError, match="init_kernel"):
        B.blind_deblur_layer(f, init_kernel=np.ones((4, 4)), kernel_size=11, backend="cpu")
    with pytest.raises(ValueError, match="channels"):
        B.blind_deblur_layer(np.ones((40, 40, 2)), backend="cpu")
