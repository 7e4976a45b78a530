"""Defocus blur map (Zhu et al., TIP 2013): Gabor bank, spectra/LUTs, per-pixel search, tiling, API."""

from __future__ import annotations

import ctypes
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import fftconvolve as sp_fftconvolve

from conftest import build_host_shim, ptr, to_host
from gpudeblur import psf
from gpudeblur.blurmap import BlurMapEstimator, PSFCalibration, SearchSettings, build_lut, estimate_blur_map, gabor_bank
from gpudeblur.blurmap.gabor import derivative_kernel, gabor_frequencies
from gpudeblur.blurmap.likelihood import device_lut, likelihood_search
from gpudeblur.blurmap.spectra import blur_spectra, noise_spectrum
from gpudeblur.convolution import fftconvolve
from gpudeblur._backend import get_backend


# ---------------------------------------------------------------------------
# Gabor bank (eq. 3)
# ---------------------------------------------------------------------------


def test_gabor_bank_has_60_filters_for_n41():
    b = gabor_bank(41)
    assert b.size == 60
    assert b.filters.shape == (60, 41, 41)
    a = b.freqs
    assert np.all(a % 2 == 0)
    assert np.all(np.abs(a) <= 10) and np.all(a[:, 1] >= 0)
    assert not np.any((a[:, 0] == 0) & (a[:, 1] == 0))  # no DC
    # no filter is the conjugate (negated frequency) of another
    s = {tuple(v) for v in a}
    assert not any((-v[0], -v[1]) in s for v in a)
    assert np.all(a[a[:, 1] == 0, 0] <= -2)


@pytest.mark.parametrize("n, count", [(9, 4), (21, 12), (31, 24), (41, 60)])
def test_gabor_bank_count_formula(n, count):
    # k = floor((N-1)/8) positive even values: k (2k+1) filters with a2 > 0, k with a2 = 0
    assert len(gabor_frequencies(n)) == count


def test_gabor_filters_unit_energy_near_orthogonal():
    b = gabor_bank(41)
    t = b.filters.reshape(60, -1)
    G = t.conj() @ t.T
    np.testing.assert_allclose(np.diag(G).real, 1.0, atol=1e-12)
    off = np.abs(G - np.diag(np.diag(G)))
    # Gaussian window std N/4: neighbours 2/N apart overlap by ~exp(-π²/4) ≈ 0.085
    assert off.max() < 0.1
    om = b.freqs / 41.0
    d2 = ((om[:, None, :] - om[None, :, :]) ** 2).sum(-1)
    approx = np.exp(-np.pi**2 * (41 / 4.0) ** 2 * d2)
    np.fill_diagonal(approx, 0)
    assert np.abs(off - approx).max() < 0.01
    # window is a centred, symmetric Gaussian of std N/4
    w = np.abs(b.filters[0])
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-15)
    np.testing.assert_allclose(w[20, 20 + 10] / w[20, 20], np.exp(-0.5 * (10 / 10.25) ** 2), rtol=1e-12)


def test_gabor_response_peaks_at_matching_frequency():
    b = gabor_bank(41)
    k = 37
    a1, a2 = b.freqs[k]
    yy, xx = np.mgrid[0:96, 0:96]
    img = 0.5 + 0.2 * np.cos(2 * np.pi * (a1 * xx + a2 * yy) / 41.0)
    # responses of the image itself (no derivative) at the centre pixel
    patch = img[48 - 20 : 48 + 21, 48 - 20 : 48 + 21]
    resp = np.abs((b.filters * patch[::-1, ::-1][None]).sum(axis=(1, 2))) ** 2
    assert int(np.argmax(resp)) == k


# ---------------------------------------------------------------------------
# spectra (eqs. 6, 7) and LUT fit (eq. 12)
# ---------------------------------------------------------------------------


def test_blur_spectrum_equals_direct_convolution():
    b = gabor_bank(21)
    hs = [psf.disc(0.0), psf.disc(2.3), psf.gaussian(1.7)]
    S = blur_spectra(hs, b)
    for j, h in enumerate(hs):
        direct = np.array([(np.abs(sp_fftconvolve(t, h)) ** 2).sum() for t in b.filters])
        np.testing.assert_allclose(S[j], direct, rtol=1e-10)
    np.testing.assert_allclose(S[0], 1.0, atol=1e-12)  # delta PSF: unit-energy filters
    n = noise_spectrum(b, 1e-4, vertical=False)
    direct = 1e-4 * np.array([(np.abs(sp_fftconvolve(t, derivative_kernel(False))) ** 2).sum() for t in b.filters])
    np.testing.assert_allclose(n, direct, rtol=1e-10)


@pytest.fixture(scope="module")
def disc_lut():
    return build_lut(gabor_bank(41), "disc", 8.0, 1e-4)


def test_lut_fit_error_disc(disc_lut):
    e = disc_lut.fit_error()
    # the pixelated disc has sharp spectral notches in r; the exp-polynomial
    # smooths them: small typical error, bounded worst case (relative to the
    # filter's peak over r)
    assert e["log_median"] < 0.08
    assert e["lin_rel_median"] < 2e-3
    assert e["lin_rel_max"] < 0.2
    assert disc_lut.val.shape == (801, 60)
    assert np.all(disc_lut.val > 0)


def test_lut_fit_error_gaussian_and_derivatives():
    lut = build_lut(gabor_bank(41), "gaussian", 8.0, 1e-4)
    e = lut.fit_error()
    assert e["lin_rel_max"] < 0.05
    assert e["lin_rel_median"] < 1e-5
    # tabulated derivatives agree with finite differences of the tabulated value
    r = lut.lo + lut.step * np.arange(lut.nr)
    fd1 = np.gradient(lut.val, r, axis=0)
    fd2 = np.gradient(lut.d1, r, axis=0)
    sl = slice(2, -2)
    assert np.abs(fd1[sl] - lut.d1[sl]).max() < 2e-2 * np.abs(lut.d1).max()
    assert np.abs(fd2[sl] - lut.d2[sl]).max() < 5e-2 * np.abs(lut.d2).max()


def test_calibration_family_matches_analytic_family():
    b = gabor_bank(21)
    radii = np.linspace(0, 4, 41)
    cal = PSFCalibration(radii, [psf.gaussian(r) for r in radii])
    a = build_lut(b, "gaussian", 4.0, 1e-4)
    c = build_lut(b, cal, 4.0, 1e-4)
    np.testing.assert_allclose(c.val, a.val, rtol=1e-9)
    with pytest.raises(ValueError, match="max_radius"):
        build_lut(b, cal, 6.0, 1e-4)


def test_coarse_calibration_estimates_like_the_analytic_family():
    """A lens calibration sampled every 0.5 px (as one would measure it): the LUT stays finite and the map
    matches the analytic disc family (before, 17 samples under the degree-20 fit gave LUT values of 1e155)."""
    radii = np.arange(0.0, 8.01, 0.5)
    cal = PSFCalibration(list(radii), [psf.disc(r) for r in radii])
    lut = build_lut(gabor_bank(41), cal, 8.0, 1e-6)
    ref = build_lut(gabor_bank(41), "disc", 8.0, 1e-6)
    assert np.all(np.isfinite(lut.val)) and np.abs(lut.val).max() < 2 * np.abs(ref.val).max()
    sharp = _texture(128, 0)
    rng = np.random.default_rng(0)
    for r in (2.0, 5.0):
        y = fftconvolve(sharp, psf.disc(r), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
        m_cal = BlurMapEstimator(window=41, noise=1e-6, labeling=None, psf_family=cal).estimate(y, backend="cpu")
        m_ref = BlurMapEstimator(window=41, noise=1e-6, labeling=None).estimate(y, backend="cpu")
        c = (slice(32, -32), slice(32, -32))
        assert abs(np.median(m_cal[c]) - r) < 0.2 and abs(np.median(m_cal[c]) - np.median(m_ref[c])) < 0.1


# ---------------------------------------------------------------------------
# per-pixel search: host build of blurmap.cuh vs the Numba twin
# ---------------------------------------------------------------------------


def _model_powers(lut, n_px, rng, dtype):
    """Powers drawn from the model (5): y_i ~ Exp(mean s σ_i²(r) + n_i)."""
    r = rng.uniform(0, 8, n_px)
    s = 10 ** rng.uniform(-3, -2, n_px)  # SNR 10..100 per filter
    k = np.clip(np.round(r / lut.step).astype(int), 0, lut.nr - 1)
    mean = s[:, None] * lut.val[k] + lut.noise[None]
    y = rng.exponential(1.0, mean.shape) * mean
    y[:5] = 0.0  # no texture
    return np.ascontiguousarray(y.T.astype(dtype)), r


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return build_host_shim("blurmap", tmp_path_factory.mktemp("blurmap_shim"))


def _first_filters(dl, n):
    """The LUT of the first ``n`` filters (``F mod 4 != 0`` exercises the lane sums' tails)."""
    c = np.ascontiguousarray
    return dataclasses.replace(dl, val=c(dl.val[:, :n]), d1=c(dl.d1[:, :n]), d2=c(dl.d2[:, :n]), noise=c(dl.noise[:n]))


@pytest.mark.parametrize(("dt", "nf"), [(np.float64, 60), (np.float32, 60), (np.float32, 59), (np.float32, 58),
                                        (np.float64, 57), (np.float32, 3), (np.float64, 1)])
def test_search_host_vs_numba(host, disc_lut, dt, nf):
    """The Numba twin against a host build of kernels/blurmap.cuh: the same operations in the same order
    (the four-lane sums included; both call glibc's log), so the same bits."""
    rng = np.random.default_rng(3)
    be = get_backend("cpu")
    y, _ = _model_powers(disc_lut, 300, rng, dt)
    y = np.ascontiguousarray(y[:nf])
    F, P = y.shape
    dl = _first_filters(device_lut(disc_lut, be, dt), nf)
    st = SearchSettings()
    starts = np.arange(1, 9, dtype=dt)
    r_n, l_n, s_n = likelihood_search(y, dl, starts, 1e-4, be, st)
    outs = [np.zeros((3, P), dt) for _ in range(3)]
    c = ctypes.c_float if dt == np.float32 else ctypes.c_double
    fn = host.blurmap_search_f32 if dt == np.float32 else host.blurmap_search_f64
    fn(ptr(y), ctypes.c_longlong(P), F, ptr(dl.val), ptr(dl.d1), ptr(dl.d2), ptr(dl.noise), dl.val.shape[0],
       ptr(starts), len(starts), c(dl.lo), c(dl.hi), c(dl.step), st.max_outer, st.s_iters, st.r_iters,
       c(st.tol_r), c(st.tol_s), c(st.max_step), c(st.s_floor_rel * 1e-4), c(st.merge_tol), c(st.dup_tol),
       *[ptr(o) for o in outs])
    r_h, l_h, s_h = outs
    from gpudeblur.blurmap._numba_likelihood import blurmap_search

    assert any(str(sig[0].dtype) == np.dtype(dt).name for sig in blurmap_search.signatures)
    for h, n in ((r_h, r_n), (l_h, l_n), (s_h, s_n)):
        np.testing.assert_array_equal(h, n)
    if nf > 4:
        assert len(np.unique(r_n[0].round(1))) > 30  # a real spread of radii, not one answer


def test_search_same_bits_in_a_process_that_loads_the_cache(disc_lut, tmp_path):
    """The search gives the same bits in a process that compiled it and in one that loads it from Numba's
    cache (the fast-math kernel it replaced did not: the compiling process vectorized its sums
    differently). On a clean checkout this process compiles and the child loads the cache; with a warm
    cache both load it."""
    from gpudeblur.blurmap._numba_likelihood import blurmap_search

    be = get_backend("cpu")
    y, _ = _model_powers(disc_lut, 2000, np.random.default_rng(5), np.float32)
    dl = device_lut(disc_lut, be, np.float32)
    here = likelihood_search(y, dl, np.arange(1, 9), 1e-4, be)
    np.savez(tmp_path / "in.npz", y=y, val=dl.val, d1=dl.d1, d2=dl.d2, noise=dl.noise,
             lo=dl.lo, hi=dl.hi, step=dl.step)
    code = (
        "import numpy as np\n"
        "from gpudeblur._backend import get_backend\n"
        "from gpudeblur.blurmap.likelihood import DeviceLUT, likelihood_search\n"
        "from gpudeblur.blurmap._numba_likelihood import blurmap_search\n"
        f"a = np.load({str(tmp_path / 'in.npz')!r})\n"
        "dl = DeviceLUT(a['val'], a['d1'], a['d2'], a['noise'], float(a['lo']), float(a['hi']), float(a['step']),"
        " np.dtype(np.float32))\n"
        "out = likelihood_search(a['y'], dl, np.arange(1, 9), 1e-4, get_backend('cpu'))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, *out, hits=blurmap_search.stats.cache_hits.get(blurmap_search.signatures[0], 0))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    child = np.load(tmp_path / "out.npz")
    for j, h in enumerate(here):
        np.testing.assert_array_equal(child[f"arr_{j}"], h)
    print("this process compiled:", bool(blurmap_search.stats.cache_misses), "child loaded the cache:", int(child["hits"]))


def _brute_force_profile(y, lut, r_grid, n_iter=100):
    """``max_s log p(r, s)`` (eq. 9) on a grid of r, float64 NumPy: s by iterating eq. (11) to convergence."""
    k = np.round((r_grid - lut.lo) / lut.step).astype(int)
    sg = lut.val[k]  # (R, F)
    n = lut.noise
    yy = y.T[:, None, :]  # (P, 1, F)
    s = np.maximum(((yy - n).sum(-1)) / sg.sum(-1)[None], 1e-10)  # (P, R)
    for _ in range(n_iter):
        q = s[..., None] * sg / (s[..., None] * sg + n)
        rho = q * q
        s = np.maximum((rho * (yy - n) / sg).sum(-1) / rho.sum(-1), 1e-10)
    v = s[..., None] * sg + n
    return -(yy / v + np.log(v)).sum(-1)  # (P, R)


def test_search_finds_model_radius_and_global_maximum(disc_lut):
    """Powers drawn from the model (5): the search finds the brute-force global
    maximum of the profile likelihood (9), and the true r is among the top 3."""
    rng = np.random.default_rng(5)
    be = get_backend("cpu")
    y, r_true = _model_powers(disc_lut, 400, rng, np.float64)
    dl = device_lut(disc_lut, be, np.float64)
    r, l, s = likelihood_search(y, dl, np.arange(1, 9), 1e-4, be)
    assert np.all(np.diff(l, axis=0) <= 0)  # sorted by likelihood
    assert np.all(np.isfinite(r)) and np.all(r >= 0) and np.all(r <= 8)
    # true radius among the candidates where the model is identifiable
    # (below r = 0.5 the pixelated disc is a delta; beyond ~5 px few filters see signal)
    hit = (np.abs(r - r_true[None]) < 0.3).any(axis=0)
    sel = (r_true >= 0.7) & (r_true <= 5.0)
    sel[:5] = False
    assert hit[sel].mean() > 0.85
    # global maximum: compare with a brute-force grid search (r step 0.04)
    grid = np.round(np.arange(0, 8.0001, 0.04), 6)
    prof = _brute_force_profile(y[:, 5:65], disc_lut, grid)
    best = prof.max(axis=1)
    found = l[0, 5:65]
    assert np.mean(found >= best - 0.05) > 0.9
    r_bf = grid[prof.argmax(axis=1)]
    assert np.mean((np.abs(r[:, 5:65] - r_bf[None]) < 0.1).any(axis=0)) > 0.9
    print(f"hit {hit[sel].mean():.3f}, found>=brute-0.05: {np.mean(found >= best - 0.05):.3f}, max shortfall {np.max(best - found):.3g}")


# ---------------------------------------------------------------------------
# whole estimator
# ---------------------------------------------------------------------------


def _texture(n, seed):
    """A texture whose horizontal derivative is white Gaussian (the model's prior, eq. 2)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.normal(size=(n, n)), axis=1)
    t -= t.mean(axis=1, keepdims=True)
    return 0.5 + 0.4 * t / np.abs(t).max()


@pytest.fixture(scope="module")
def estimator_lownoise():
    return BlurMapEstimator(noise=1e-6, labeling=None)


@pytest.mark.parametrize("radius", [1.5, 3.0, 5.0])
def test_recovers_uniform_disc_radius(backend, estimator_lownoise, radius):
    rng = np.random.default_rng(int(radius * 10))
    sharp = _texture(96, 0)
    blurred = fftconvolve(sharp, psf.disc(radius), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
    res = estimator_lownoise.estimate(be_array(backend, blurred), return_candidates=True, backend=backend)
    raw = to_host(res.raw_radius)
    assert raw.dtype == np.float32 and raw.shape == (96, 96)
    c = raw[24:-24, 24:-24]
    assert abs(np.median(c) - radius) < 0.3
    cand = to_host(res.candidates)[24:-24, 24:-24]
    assert (np.abs(cand - radius) < 0.3).any(axis=-1).mean() > 0.9
    p = to_host(res.likelihoods)
    assert np.all(p[..., 0] == 1) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.isfinite(to_host(res.log_likelihoods)[..., 0]))


def be_array(be, a):
    return be.xp.asarray(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_search_matches_numba(dtype):
    """The CUDA search kernel (blurmap.cu, both precisions) against its Numba twin, end to end: same
    candidates up to rounding (FMA/flush-to-zero on the device), same likelihood order."""
    from gpudeblur._backend import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA device: the CUDA search kernel is checked on the host build only")
    rng = np.random.default_rng(3)
    sharp = _texture(96, 2)
    y = fftconvolve(sharp, psf.disc(3.0), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
    kw = dict(window=21, noise=1e-5, labeling=None, dtype=dtype)
    cpu = BlurMapEstimator(**kw).estimate(y, return_candidates=True, backend="cpu")
    gpu = BlurMapEstimator(**kw).estimate(y, return_candidates=True, backend="cuda")
    rc, rg = to_host(cpu.candidates), to_host(gpu.candidates)
    assert rg.dtype == np.dtype(dtype)
    # The search stops a start at |Δr| < tol_r = 1e-3 px. In float32 the end point of that slow fixed
    # point moves by a few tol_r with the last bits of its input: on the CPU, powers perturbed by a
    # relative 1e-7 (cuFFT's rounding against pocketfft's) move 2 % of the top candidates by more than
    # 1e-3 px, none by 0.01 px (largest 0.0055 px; 1e-6 .. 1e-4: 3.6 % and 0.0087 px). The first H200
    # run (2026-12-04) found 96.3 % within 1e-3 px. float64: 1e-6 moves 0.01 % by more than 1e-3 px.
    tol = 1e-2 if dtype == np.float32 else 1e-3
    d = np.abs(rc[..., 0] - rg[..., 0])
    assert np.mean(d < tol) > 0.995, (np.mean(d < tol), float(d.max()))
    lc, lg = to_host(cpu.log_likelihoods)[..., 0], to_host(gpu.log_likelihoods)[..., 0]
    ok = d < tol
    np.testing.assert_allclose(lg[ok], lc[ok], rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-3)


def test_tiled_equals_untiled(backend):
    rng = np.random.default_rng(7)
    img = np.clip(_texture(150, 1)[:, :130] + 0.01 * rng.normal(size=(150, 130)), 0, 1)
    kw = dict(window=21, noise=1e-5, labeling=None, fft_block=64, starts=(1, 4, 7))
    big = BlurMapEstimator(memory_budget=1 << 30, **kw).estimate(img, return_candidates=True, backend=backend)
    small = BlurMapEstimator(memory_budget=1_600_000, **kw).estimate(img, return_candidates=True, backend=backend)
    assert big.info["tiles"] == 1
    assert small.info["tiles"] > 4
    # the same FFT batches in both (cuFFT may round differently for another batch count)
    assert big.info["filter_batch"] == small.info["filter_batch"]
    for a, b in [(big.candidates, small.candidates), (big.log_likelihoods, small.log_likelihoods),
                 (big.confidence, small.confidence)]:
        np.testing.assert_array_equal(to_host(a), to_host(b))


def test_filter_batch_does_not_follow_the_budget():
    """The inverse-FFT batch is FILTER_BATCH whatever the budget (only a budget too small for it shrinks it):
    a larger budget must not change the cuFFT batch, or tiled and untiled runs could differ in the last bit."""
    from gpudeblur._backend import get_backend
    from gpudeblur.blurmap.estimator import FILTER_BATCH
    from gpudeblur.blurmap.gabor import block_plan

    be = get_backend("cpu")
    plan = block_plan((600, 800), 41, 256)
    batches = []
    for budget in (56_000_000, 1 << 27, 1 << 30, 1 << 33):
        est = BlurMapEstimator(window=41, labeling=None, memory_budget=budget)
        rows, cols, fb = est._tiling(plan, est.bank.size, np.float32, be)
        batches.append((fb, len(rows) * len(cols)))
    assert est.bank.size == 60 and FILTER_BATCH == 12
    assert [b for b, _ in batches] == [12, 12, 12, 12]
    assert batches[0][1] > 1 and batches[-1][1] == 1  # the budget changes the tiling only
    tight = BlurMapEstimator(window=41, labeling=None, memory_budget=46_000_000)
    assert tight._tiling(plan, 60, np.float32, be)[2] < 12  # a budget that cannot hold 12 filters gets fewer


def test_noise_auto_is_the_measured_noise(backend):
    """noise='auto' measures each image's noise on its luminance; same map as passing that value."""
    from gpudeblur.blurmap import measure_noise
    from gpudeblur.restoration import estimate_noise

    rng = np.random.default_rng(11)
    sharp = np.repeat(_texture(72, 5)[..., None], 3, axis=-1)
    kw = dict(window=21, labeling=None, starts=(1, 3, 5))
    auto = BlurMapEstimator(noise="auto", **kw)
    seen = []
    for sigma in (2e-3, 1e-2):  # one estimator, two noise levels: nothing of the first leaks into the second
        img = np.clip(fftconvolve(sharp, psf.disc(2.0), boundary="reflect") + rng.normal(0, sigma, sharp.shape), 0, 1)
        v = measure_noise(img, backend=backend)  # (on a GPU host the default backend is CUDA)
        lum = (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)
        assert v == pytest.approx(float(estimate_noise(lum, backend="cpu")) ** 2, rel=1e-4)  # float32 luminance
        assert v > (seen[-1] if seen else 0)  # (its accuracy: test_allinfocus::test_map_noise_...)
        seen.append(v)
        assert auto.noise_for(img, backend=backend) == v
        a = auto.estimate(be_array(backend, img), return_candidates=True, backend=backend)
        b = BlurMapEstimator(noise=v, **kw).estimate(be_array(backend, img), return_candidates=True, backend=backend)
        assert a.info["noise"] == v and b.info["noise"] == v
        for x, y in [(a.candidates, b.candidates), (a.log_likelihoods, b.log_likelihoods), (a.confidence, b.confidence)]:
            np.testing.assert_array_equal(to_host(x), to_host(y))
        r, info = auto.estimate(be_array(backend, img), return_info=True, backend=backend)  # the map and its info only
        np.testing.assert_array_equal(to_host(r), to_host(a.radius))
        assert info["noise"] == v and "timings" in info
        with pytest.raises(ValueError, match="exclusive"):
            auto.estimate(img, return_info=True, return_candidates=True)
    # a clean (flat) image is floored, at the default or a given floor
    flat = np.full((48, 48), 0.5)
    assert measure_noise(flat) == 1e-6
    assert BlurMapEstimator(noise="auto", noise_floor=1e-5, **kw).noise_for(flat) == 1e-5
    assert BlurMapEstimator(noise=3e-5, **kw).noise_for(flat) == 3e-5


def test_bad_inputs():
    with pytest.raises(ValueError, match="smaller than the analysis window"):
        estimate_blur_map(np.zeros((30, 60)), labeling=None, backend="cpu")
    with pytest.raises(ValueError, match="window"):
        BlurMapEstimator(window=40)
    with pytest.raises(ValueError, match="NaN"):
        estimate_blur_map(np.full((64, 64), np.nan), labeling=None, backend="cpu")
    with pytest.raises(ValueError, match="labeling"):
        BlurMapEstimator(labeling="graphcut")
    with pytest.raises(ValueError, match="noise"):
        BlurMapEstimator(noise=0)
    with pytest.raises(ValueError, match="noise must be a positive number or 'auto'"):
        BlurMapEstimator(noise="measured")
    with pytest.raises(ValueError, match="noise_floor"):
        BlurMapEstimator(noise="auto", noise_floor=-1e-6)
    with pytest.raises(ValueError, match="too small"):
        estimate_blur_map(np.zeros((64, 64)), labeling=None, memory_budget=1000, backend="cpu")
    with pytest.raises(ValueError, match="psf_family"):
        BlurMapEstimator(psf_family="square")
    for kw, msg in ((dict(lut_step=-0.01), "lut_step"), (dict(lut_step=0), "lut_step"), (dict(sample_step=0), "sample_step"),
                    (dict(fit_degree=0), "fit_degree"), (dict(fit_degree=2.5), "fit_degree"),
                    (dict(fit_degree=True), "fit_degree")):
        with pytest.raises(ValueError, match=msg):
            BlurMapEstimator(**kw)


def test_bank_and_lut_are_built_on_first_use_after_the_cheap_checks(monkeypatch):
    """A wide window's bank and LUT take ~50 s and ~12 GB (301 px: 2812 filters): an image
    smaller than the window, or a budget too small for the bank's spectra, is refused
    before they are built; once built they equal the eager ones and are kept."""
    import gpudeblur.blurmap.estimator as E
    from gpudeblur.blurmap.gabor import bank_size

    built = []
    monkeypatch.setattr(E, "gabor_bank", lambda w: built.append(w) or gabor_bank(w))
    est = BlurMapEstimator(window=301)
    with pytest.raises(ValueError, match="smaller than the analysis window"):
        est.estimate(np.zeros((64, 64), np.float32), backend="cpu")
    with pytest.raises(ValueError, match=r"too small: .*2812 filters of the 301 px window\); use a smaller window or a larger"):
        est.estimate(np.zeros((400, 400), np.float32), backend="cpu")
    assert built == [] and est._lut is None
    assert bank_size(301) == 2812 and all(bank_size(w) == len(gabor_frequencies(w)) for w in (9, 41, 51, 99))

    est = BlurMapEstimator(window=21, max_radius=6.0, noise=1e-4)
    assert built == []
    lut = est.lut
    assert built == [21] and est.lut is lut and est.bank is est.bank and built == [21]
    ref = build_lut(gabor_bank(21), "disc", 6.0, 1e-4)
    for name in ("val", "d1", "d2", "noise", "coef"):
        np.testing.assert_array_equal(getattr(lut, name), getattr(ref, name))
    np.testing.assert_array_equal(est.bank.filters, gabor_bank(21).filters)


def test_flat_image_is_low_confidence_not_nan(backend):
    est = BlurMapEstimator(window=21, labeling=None, max_radius=6.0)
    img = be_array(backend, np.full((48, 50, 3), 0.4))
    res = est.estimate(img, return_candidates=True, backend=backend)
    r = to_host(res.radius)
    assert np.all(r == 6.0)
    assert np.all(to_host(res.confidence) == 0)
    assert res.info["no_texture_pixels"] == 48 * 50
    np.testing.assert_array_equal(to_host(res.likelihoods)[0, 0], [0, 0, 0])
    # with labeling: uniform data cost, still finite everywhere
    lab = BlurMapEstimator(window=21, labeling="primal-dual", max_radius=6.0).estimate(img, backend=backend)
    assert np.isfinite(to_host(lab)).all()


def test_rgb_uses_luminance_and_returns_callers_type(backend):
    est = BlurMapEstimator(window=21, labeling=None, starts=(2, 5))
    gray = _texture(48, 2)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    a = to_host(est.estimate(be_array(backend, gray), backend=backend))
    b = est.estimate(be_array(backend, rgb), backend=backend)
    assert type(b) is type(be_array(backend, rgb))
    # luminance of a gray RGB equals the gray image up to float32 rounding;
    # the search stops within tol_r = 1e-3 of a maximum (a flat likelihood
    # may stop a little farther at a rare pixel)
    d = np.abs(a - to_host(b))
    assert np.mean(d < 1e-2) > 0.99 and np.median(d) < 1e-3


def test_cli_writes_map_picture_candidates_and_mask(tmp_path):
    from gpudeblur.cli import main
    from gpudeblur.io import read_image, write_image

    img = np.clip(_texture(64, 3), 0, 1)
    rgb = np.repeat(img[..., None], 3, axis=-1).astype(np.float32)
    src = tmp_path / "in.png"
    write_image(src, rgb)
    base = ["blurmap", str(src), "--window", "21", "--backend", "cpu", "--max-radius", "6"]
    assert main(base + [str(tmp_path / "r.npy"), "--labeling", "none", "--candidates", str(tmp_path / "c.npz")]) == 0
    r = np.load(tmp_path / "r.npy")
    assert r.shape == (64, 64) and r.dtype == np.float32 and np.all((r >= 0) & (r <= 6))
    c = np.load(tmp_path / "c.npz")
    assert c["radius"].shape == (64, 64, 3) and c["likelihood"].shape == (64, 64, 3)
    assert main(base + [str(tmp_path / "r.png"), "--labeling", "none", "--mask", str(tmp_path / "m.png")]) == 0
    pic, _ = read_image(tmp_path / "r.png")
    assert pic.shape[0] == 64 and pic.shape[1] > 64 and pic.shape[2] == 3  # map + colour bar
    mask, _ = read_image(tmp_path / "m.png")
    assert mask.shape[:2] == (64, 64) and set(np.unique(mask)) <= {0.0, 1.0}
    # existing output without --overwrite: one-line error, status 2
    assert main(base + [str(tmp_path / "r.npy"), "--labeling", "none"]) == 2
    # --noise auto: measured on the image; anything else that is not a positive number is refused
    assert main(base + [str(tmp_path / "a.npy"), "--labeling", "none", "--noise", "auto"]) == 0
    auto = BlurMapEstimator(window=21, max_radius=6, labeling=None, noise="auto", backend="cpu")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), auto.estimate(read_image(src)[0]))
    assert main(base + [str(tmp_path / "b.npy"), "--noise", "loud"]) == 2
    assert not (tmp_path / "b.npy").exists()


def test_cli_labeling_memory_budget_tiles_the_labeling(tmp_path, capsys):
    """``blurmap --labeling-memory-budget`` reaches the labeling: a budget just below the whole
    map's need labels it in tiles, and the map equals the estimator's with the same budget."""
    from gpudeblur.blurmap.labeling import labeling_bytes_per_pixel
    from gpudeblur.cli import main
    from gpudeblur.io import read_image, write_image

    img = np.clip(_texture(160, 3), 0, 1).astype(np.float32)
    src = tmp_path / "in.png"
    write_image(src, img)
    budget = labeling_bytes_per_pixel(61, 4) * 160 * 160 - 1  # labels 0..6 by 0.1; 8-connectivity: 4 edge sets
    base = ["blurmap", str(src), "--window", "21", "--backend", "cpu", "--max-radius", "6"]
    assert main(base + [str(tmp_path / "r.npy"), "--labeling-memory-budget", str(budget)]) == 0
    est = BlurMapEstimator(window=21, max_radius=6, noise=1e-4, labeling_kwargs={"memory_budget": budget},
                           backend="cpu")
    radius, info = est.estimate(read_image(src)[0], return_info=True)
    assert info["labeling"]["tiles"] >= 2
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), to_host(radius))
    # only the primal-dual labeling has a budget; a non-positive one is refused at parse time
    assert main(base + [str(tmp_path / "n.npy"), "--labeling", "none", "--labeling-memory-budget", "1000"]) == 2
    assert main(base + [str(tmp_path / "z.npy"), "--labeling-memory-budget", "0"]) == 2
    assert not (tmp_path / "n.npy").exists() and not (tmp_path / "z.npy").exists()
    # too small for one tile: refused before the candidate stages, naming the option
    capsys.readouterr()
    assert main(base + [str(tmp_path / "s.npy"), "--labeling-memory-budget", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpudeblur: error: --labeling-memory-budget") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("method", ["primal-dual", "alpha-expansion"])
def test_labeling_integration(method):
    pytest.importorskip("gpudeblur.blurmap.labeling")
    img = _texture(48, 4)
    est = BlurMapEstimator(window=21, labeling=method, max_radius=4.0, backend="cpu")
    res = est.estimate(img, return_candidates=True)
    r = to_host(res.radius)
    assert r.dtype == np.float32 and r.shape == (48, 48)
    # labels are {0, 0.1, ..., max_radius} (Sec. IV)
    np.testing.assert_allclose(r * 10, np.round(r * 10), atol=1e-4)
    assert r.min() >= 0 and r.max() <= 4.0 + 1e-6
    assert np.isfinite(res.info["labeling"]["energy"])
    mask, info = est.segment(img, candidates=res, method="min-cut")
    assert to_host(mask).dtype == bool and to_host(mask).shape == (48, 48)


def test_resample_helpers_against_references(backend):
    """Block means against scikit-image's ``downscale_local_mean`` (edge-padded),
    linear upsampling against ``scipy.ndimage.map_coordinates`` at the block
    centres ``f·i + (f − 1)/2``."""
    from scipy.ndimage import map_coordinates
    from skimage.transform import downscale_local_mean

    from gpudeblur._resample import block_mean, upsample_linear

    xp = backend.xp
    rng = np.random.default_rng(3)
    for shape, f in [((40, 64), 2), ((41, 67), 2), ((30, 31, 3), 3), ((9, 12), 4)]:
        a = rng.standard_normal(shape).astype(np.float32)
        pad = ((0, -shape[0] % f), (0, -shape[1] % f)) + ((0, 0),) * (len(shape) - 2)
        ref = downscale_local_mean(np.pad(a, pad, mode="edge"), (f, f) + (1,) * (len(shape) - 2))
        got = to_host(block_mean(xp.asarray(a), f, xp))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-6)
        c = got if got.ndim == 2 else got[..., 0]
        up = to_host(upsample_linear(xp.asarray(c), f, shape[:2], xp))
        yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
        coords = [np.clip((yy - (f - 1) / 2) / f, 0, c.shape[0] - 1), np.clip((xx - (f - 1) / 2) / f, 0, c.shape[1] - 1)]
        assert up.shape == shape[:2] and up.dtype == np.float32
        np.testing.assert_allclose(up, map_coordinates(c.astype(np.float64), coords, order=1, mode="nearest"), atol=1e-5)
        buf = xp.full(shape[:2], np.nan, dtype=np.float32)
        assert upsample_linear(xp.asarray(c), f, shape[:2], xp, out=buf) is buf
        np.testing.assert_array_equal(to_host(buf), up)
    with pytest.raises(ValueError, match="out must be"):
        upsample_linear(xp.zeros((3, 4), np.float32), 2, (6, 8), xp, out=xp.zeros((6, 7), np.float32))
    # a one-block axis holds its value; a linear ramp of block means comes back exactly
    np.testing.assert_allclose(to_host(upsample_linear(xp.asarray(np.array([[1.0, 3.0]], np.float32)), 2, (2, 4), xp)),
                               [[1, 1.5, 2.5, 3]] * 2)
    ramp = np.tile(np.arange(48, dtype=np.float32), (8, 1))
    inner = to_host(upsample_linear(block_mean(xp.asarray(ramp), 4, xp), 4, ramp.shape, xp))[:, 2:-2]
    np.testing.assert_allclose(inner, ramp[:, 2:-2], atol=1e-5)


def test_scaled_estimate_reads_radii_beyond_max_radius(backend):
    """``scale=2`` reads a 12 px disc blur (beyond ``max_radius`` 8 at full
    resolution) and equals its definition: the estimate of the block-mean
    image, linearly upsampled, times 2."""
    from gpudeblur._resample import block_mean, upsample_linear

    rng = np.random.default_rng(12)
    sharp = _texture(192, 1)
    blurred = fftconvolve(sharp, psf.disc(12.0), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
    est = BlurMapEstimator(window=41, noise=1e-6, labeling=None)
    x = be_array(backend, blurred.astype(np.float32))
    m2, info = est.estimate(x, scale=2, return_info=True, backend=backend)
    assert info["scale"] == 2 and info["analysis_shape"] == (96, 96)
    m2 = to_host(m2)
    assert m2.shape == (192, 192) and m2.dtype == np.float32
    assert abs(np.median(m2[48:-48, 48:-48]) - 12.0) < 1.0
    assert np.median(to_host(est.estimate(x, backend=backend))[48:-48, 48:-48]) < 8.5  # full resolution: capped
    xp = backend.xp
    ref = upsample_linear(xp.asarray(est.estimate(block_mean(x, 2, xp), backend=backend)), 2, (192, 192), xp) * 2
    np.testing.assert_array_equal(m2, to_host(ref))


def test_scaled_estimate_bad_arguments():
    img = _texture(96, 2)
    est = BlurMapEstimator(window=41, labeling=None)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="scale must be an integer >= 1"):
            est.estimate(img, scale=bad)
    with pytest.raises(ValueError, match="return_candidates needs scale=1"):
        est.estimate(img, scale=2, return_candidates=True)
    with pytest.raises(ValueError, match=r"at scale 3 is 32x32, smaller than the analysis window \(41x41\)"):
        est.estimate(img, scale=3)
    with pytest.raises(ValueError, match="needs the 'disc' or 'gaussian' PSF family"):
        BlurMapEstimator(window=41, labeling=None, psf_family=lambda r: psf.disc(r)).estimate(img, scale=2)


def test_auto_scale_reads_large_blur_coarse_and_small_blur_fine(monkeypatch):
    """``scale='auto'``: a small image is looked at at scale 4 (as the window
    allows) first; a 3 px blur is then read at full resolution directly (no
    read at 2) and equals ``scale=1``, a 12 px blur (beyond scale 1's 8 px)
    is read at 2. With thresholds lowered so that 192² counts as large: a 12
    px blur stays at the coarse scale, a 3 px one goes back to 1. Non-scalable
    families are read at scale 1 only."""
    import gpudeblur.blurmap.estimator as E

    rng = np.random.default_rng(7)
    sharp = _texture(192, 3)
    est = BlurMapEstimator(window=41, noise=1e-6, labeling=None)
    big = fftconvolve(sharp, psf.disc(12.0), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
    small = fftconvolve(sharp, psf.disc(3.0), boundary="reflect") + rng.normal(0, 1e-3, sharp.shape)
    m, info = est.estimate(small, scale="auto", return_info=True)
    assert info["scale"] == 1 and info["scales"] == [4, 1]  # 192 // 4 = 48 >= the 41 px window
    np.testing.assert_array_equal(m, est.estimate(small))
    m, info = est.estimate(big, scale="auto", return_info=True)
    assert info["scale"] == 2 and info["scales"] == [4, 2]
    np.testing.assert_array_equal(m, est.estimate(big, scale=2))
    assert BlurMapEstimator(window=51, noise=1e-6, labeling=None).estimate(
        small, scale="auto", return_info=True)[1]["scales"] == [2, 1]  # 192 // 4 < 51: the look is at 2
    monkeypatch.setattr(E, "AUTO_SCALE_SMALL_START", 1)  # the rule before session 17: scale 1 only
    assert est.estimate(big, scale="auto", return_info=True)[1]["scales"] == [1]
    monkeypatch.setattr(E, "AUTO_SCALE_MIN_PIXELS", 0)
    monkeypatch.setattr(E, "AUTO_SCALE_START_PIXELS", 9000)  # 96² ≥ 9000 > 48²: start at scale 2
    m, info = est.estimate(big, scale="auto", return_info=True)
    assert info["scales"] == [2] and info["scale"] == 2
    np.testing.assert_array_equal(m, est.estimate(big, scale=2))
    m, info = est.estimate(small, scale="auto", return_info=True)
    assert info["scales"] == [2, 1] and info["scale"] == 1
    np.testing.assert_array_equal(m, est.estimate(small))
    monkeypatch.setattr(E, "AUTO_SCALE_SMALL_START", 4)  # a "large" image starts at the coarser rule's scale
    assert est.estimate(big, scale="auto", return_info=True)[1]["scales"] == [4, 2]  # (a 2-4 MP photo: 4, not 2)
    cal = BlurMapEstimator(window=41, noise=1e-6, labeling=None, psf_family=lambda r: psf.disc(r))
    assert cal.estimate(big, scale="auto", return_info=True)[1]["scales"] == [1]
    with pytest.raises(ValueError, match="return_candidates needs scale=1"):
        est.estimate(big, scale="auto", return_candidates=True)


def test_auto_scale_follows_the_informed_pixels(monkeypatch):
    """A sharp texture under a flat noisy band (a clear sky in a noisy photo): the band fits every radius
    and reads large; ``scale='auto'`` takes its quantile over the pixels with confidence ≥
    ``AUTO_SCALE_MIN_CONFIDENCE`` and reads the map at scale 1, where the quantile of all pixels went to
    scale 2 (and the sharp texture read 1.3 px instead of 0.6). With almost no informed pixels the
    quantile is taken over all of them."""
    import gpudeblur.blurmap.estimator as E

    img = _texture(192, 4)
    img[:80] = 0.5
    y = img + np.random.default_rng(3).normal(0, 0.02, img.shape)
    est = BlurMapEstimator(window=41, noise="auto", labeling=None)
    m, info = est.estimate(y, scale="auto", return_info=True)
    assert info["scales"] == [4, 1] and info["scale"] == 1
    assert info["scale_quantiles"][0] <= 8 and 0.6 < info["scale_informed"][0] < 0.95  # q ≤ 8 px: scale 1's range
    np.testing.assert_array_equal(m, est.estimate(y))
    assert np.median(m[100:]) < 1.0
    monkeypatch.setattr(E, "AUTO_SCALE_MIN_CONFIDENCE", 0.0)  # every pixel counts: the rule before session 30
    m0, info0 = est.estimate(y, scale="auto", return_info=True)
    assert info0["scales"] == [4, 2] and info0["scale_quantiles"][0] > 8 and info0["scale_informed"] == [1.0, 1.0]
    assert np.median(m0[100:]) > 1.0
    monkeypatch.setattr(E, "AUTO_SCALE_MIN_CONFIDENCE", 0.1)
    monkeypatch.setattr(E, "AUTO_SCALE_MIN_INFORMED", 0.95)  # too few informed pixels: all count
    assert est.estimate(y, scale="auto", return_info=True)[1]["scales"] == [4, 2]


def test_auto_scale_between_coarse_scales_counts_all_pixels(monkeypatch):
    """When the informed pixels' quantile is beyond full resolution's range, the quantile of all pixels
    chooses between the coarse scales (as before session 30)."""
    import gpudeblur.blurmap.estimator as E

    rng = np.random.default_rng(7)
    big = fftconvolve(_texture(192, 3), psf.disc(12.0), boundary="reflect") + rng.normal(0, 1e-3, (192, 192))
    est = BlurMapEstimator(window=41, noise=1e-6, labeling=None)
    m4 = est.estimate(big, scale=4)
    monkeypatch.setattr(E, "_informed_quantile", lambda r, c, xp: (8.5, 0.5))  # beyond 8 px: not used
    _, info = est.estimate(big, scale="auto", return_info=True)
    assert info["scale_quantiles"][0] == pytest.approx(float(np.quantile(m4, E.AUTO_SCALE_QUANTILE)))
    assert info["scale_informed"][0] == 1.0 and info["scales"] == [4, 2]
    monkeypatch.setattr(E, "_informed_quantile", lambda r, c, xp: (7.5, 0.5))  # within 8 px: full resolution
    _, info = est.estimate(big, scale="auto", return_info=True)
    assert info["scale_quantiles"] == [7.5] and info["scale_informed"] == [0.5] and info["scales"] == [4, 1]


def test_auto_scale_stops_on_a_nan_quantile(monkeypatch):
    """A NaN quantile (a map of NaN) keeps the scale read instead of reading it again for ever."""
    import gpudeblur.blurmap.estimator as E

    monkeypatch.setattr(E, "_informed_quantile", lambda r, c, xp: (float("nan"), 1.0))
    calls = []
    orig = E.BlurMapEstimator._estimate_scaled

    def spy(self, image, s, *a, **k):
        calls.append(s)
        assert len(calls) < 4, "scale='auto' loops"
        return orig(self, image, s, *a, **k)

    monkeypatch.setattr(E.BlurMapEstimator, "_estimate_scaled", spy)
    _, info = BlurMapEstimator(window=41, noise=1e-6, labeling=None).estimate(_texture(192, 3), scale="auto",
                                                                               return_info=True)
    assert calls == [4] and info["scales"] == [4] and info["scale"] == 4


def test_informed_quantile():
    from gpudeblur.blurmap.estimator import AUTO_SCALE_QUANTILE, _informed_quantile

    rng = np.random.default_rng(0)
    r = rng.uniform(0, 20, (40, 50))
    c = rng.uniform(0, 1, (40, 50))
    q, frac = _informed_quantile(r, c, np)
    keep = c >= 0.1
    assert q == pytest.approx(np.quantile(r[keep], AUTO_SCALE_QUANTILE)) and frac == pytest.approx(keep.mean())
    q, frac = _informed_quantile(r, c * 0.1, np)  # none informed
    assert q == pytest.approx(np.quantile(r, AUTO_SCALE_QUANTILE)) and frac == 1.0


@pytest.mark.parametrize("window,block", [(41, (128, 96)), (51, (200, 200)), (9, (64, 70))])
def test_filter_spectra_are_fft2_of_the_padded_filters(window, block):
    """The pruned transforms (rows pass on the filter's rows only, a few filters at a
    time) give np.fft.fft2 of the zero-padded filters bit for bit."""
    from gpudeblur.blurmap import gabor

    bank = gabor.gabor_bank(window)
    big = np.zeros((bank.size,) + block, np.complex128)
    big[:, :window, :window] = bank.filters
    want = np.fft.fft2(big)
    np.testing.assert_array_equal(gabor.filter_spectra(bank, block, np, np.complex128), want)
    np.testing.assert_array_equal(gabor.filter_spectra(bank, block, np), want.astype(np.complex64))
    k = np.random.default_rng(0).random((5, 7))
    pad = np.zeros((30, 40))
    pad[:5, :7] = k
    np.testing.assert_array_equal(gabor.corner_fft2(k, (30, 40)), np.fft.fft2(pad))


def test_estimate_returns_the_confidence():
    """``return_confidence=True`` appends the confidence map: at scale 1 the one a ``BlurMapResult``
    holds, on a scaled read the coarse confidence interpolated to the image like the radii, with
    ``'auto'`` the one of the scale it ended at; the radii are those of the plain call."""
    import gpudeblur.blurmap.estimator as E
    from gpudeblur._resample import block_mean, upsample_linear

    img = _texture(192, 4)
    img[:80] = 0.5
    y = img + np.random.default_rng(3).normal(0, 0.02, img.shape)
    est = BlurMapEstimator(window=41, noise="auto", labeling=None)
    res = est.estimate(y, return_candidates=True)
    m, c = est.estimate(y, return_confidence=True)
    np.testing.assert_array_equal(m, res.radius)
    np.testing.assert_array_equal(c, res.confidence)
    assert c[:40].max() < 0.05 and np.median(c[120:]) > 0.2  # the flat band knows nothing (0.03 / 0.27)
    m, info, c1 = est.estimate(y, return_info=True, return_confidence=True)
    np.testing.assert_array_equal(c1, c)
    assert info["noise"] == res.info["noise"]
    m2, c2 = est.estimate(y, scale=2, return_confidence=True)
    np.testing.assert_array_equal(m2, est.estimate(y, scale=2))
    coarse = est._estimate_at(block_mean(y.astype(np.float32), 2, np), True, False, None, None, analysis_scale=2).confidence
    np.testing.assert_array_equal(c2, upsample_linear(np.asarray(coarse), 2, y.shape, np))
    ma, info, ca = est.estimate(y, scale="auto", return_info=True, return_confidence=True)
    assert info["scales"] == [4, 1]
    np.testing.assert_array_equal(ma, est.estimate(y, scale="auto"))
    np.testing.assert_array_equal(ca, c)
    with pytest.raises(ValueError, match="return_confidence and return_candidates"):
        est.estimate(y, return_candidates=True, return_confidence=True)
    assert E.BlurMapEstimator.estimate.__kwdefaults__["return_confidence"] is False
