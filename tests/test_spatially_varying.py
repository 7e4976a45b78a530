"""Spatially varying deconvolution (Zhu et al. 2013, eq. 19)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import gpudeblur as gd
from gpudeblur.spatially_varying import (SpatiallyVaryingBlur, blur_spatially_varying, deconvolve_spatially_varying,
                                        deconvolve_spread_sequence)

from conftest import to_host


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def test_adjoint_identity(backend):
    rng = np.random.default_rng(0)
    r = backend.xp.asarray(rng.uniform(0, 3, (30, 40)))
    op = SpatiallyVaryingBlur(r, backend, np.float64)
    x = backend.xp.asarray(rng.standard_normal((2,) + op.grid_shape))
    y = backend.xp.asarray(rng.standard_normal((2,) + op.grid_shape))
    lhs = float((op.forward(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_weights_partition_of_unity_and_interpolate(backend):
    rng = np.random.default_rng(1)
    r = backend.xp.asarray(rng.uniform(0.2, 5.7, (16, 16)))
    op = SpatiallyVaryingBlur(r, backend, np.float64, radius_step=0.5)
    w = sum(op.weight(k) for k in range(len(op.radii)))
    np.testing.assert_allclose(to_host(w), 1.0, atol=1e-12)
    rr = sum(op.weight(k) * op.radii[k] for k in range(len(op.radii)))
    np.testing.assert_allclose(to_host(op.grid.crop(rr[None]))[0], to_host(r), atol=1e-12)


@pytest.mark.parametrize("radius", [0.0, 2.0, 3.5])
def test_constant_map_equals_plain_convolution(backend, natural_gray, radius):
    rm = np.full(natural_gray.shape, radius)
    a = to_host(blur_spatially_varying(backend.xp.asarray(natural_gray), rm, dtype="float64", backend=backend.name))
    b = ndi.convolve(natural_gray, gd.psf.disc(radius), mode="reflect")
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_constant_map_sv_admm_matches_admm_tv(natural_gray):
    k = gd.psf.disc(3)
    y = ndi.convolve(natural_gray, k, mode="reflect") + 0.005 * np.random.default_rng(2).standard_normal(natural_gray.shape)
    a = deconvolve_spatially_varying(y, np.full(y.shape, 3.0), lam=5e-4, rho=5e-3, num_iter=150, cg_iter=20, dtype="float64")
    b = gd.admm_tv(y, k, 5e-4, 300, rho=5e-3, dtype="float64")
    assert np.abs(a - b).mean() < 2e-3
    assert abs(psnr(a, natural_gray) - psnr(b, natural_gray)) < 0.1


def _two_layer(img, sigma=0.005, seed=3):
    rm = np.zeros(img.shape[:2])
    rm[:, img.shape[1] // 2 :] = 4.0
    y = blur_spatially_varying(img, rm, dtype="float64")
    y = y + sigma * np.random.default_rng(seed).standard_normal(y.shape)
    return rm, np.round(np.clip(y, 0, 1) * 255) / 255


def test_two_layers_restored_without_boundary_halo(backend, natural_gray):
    rm, y = _two_layer(natural_gray)
    out = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), rm, backend=backend.name))
    assert psnr(out, natural_gray) > psnr(y, natural_gray) + 3
    # near the blur discontinuity the error is not much worse than elsewhere
    err = np.abs(out - natural_gray)
    c = natural_gray.shape[1] // 2
    band = err[8:-8, c - 6 : c + 6].mean()
    rest = np.concatenate([err[8:-8, 8 : c - 10].ravel(), err[8:-8, c + 10 : -8].ravel()]).mean()
    assert band < 1.6 * rest, (band, rest)
    # the sharp half is left essentially as it was
    left_in = psnr(y[:, : c - 8], natural_gray[:, : c - 8])
    assert psnr(out[:, : c - 8], natural_gray[:, : c - 8]) > left_in - 1.0


def test_fast_mode_improves_and_is_cheaper(natural_rgb):
    rm, y = _two_layer(natural_rgb)
    fast = deconvolve_spatially_varying(y, rm, method="fast")
    assert fast.shape == y.shape and fast.dtype == np.float32
    assert psnr(fast, natural_rgb) > psnr(y, natural_rgb) + 1.5


def test_a_sharp_layer_in_a_strongly_blurred_one_does_not_ring(backend, natural_rgb):
    """A sharp ellipse in a 12 px background, the true map: both modes deblur the background.
    The plain per-radius blend rings from the sharp layer's edges over the whole background
    (5 dB below the input), and so did sv-admm's old start (the mean PSF's inverse of
    Hᵀg: 9.8 dB against 18.4 in, after 30 × 5 iterations); measured 21.8 (fast) and 23.4."""
    xp = backend.xp
    M, N = natural_rgb.shape[:2]
    yy, xx = np.mgrid[:M, :N]
    fg = ((yy - M / 2) / (M * 0.3)) ** 2 + ((xx - N / 2) / (N * 0.22)) ** 2 <= 1
    rm = np.where(fg, 0.0, 12.0)
    y = blur_spatially_varying(natural_rgb, rm, dtype="float64")
    y = np.clip(y + 1e-3 * np.random.default_rng(3).standard_normal(y.shape), 0, 1)

    def bg_psnr(o):
        return 10 * np.log10(1 / np.mean((np.clip(to_host(o), 0, 1) - natural_rgb)[~fg] ** 2))

    p_in = bg_psnr(y)
    fast = deconvolve_spatially_varying(xp.asarray(y), rm, method="fast", backend=backend.name)
    assert bg_psnr(fast) > p_in + 2.5, (bg_psnr(fast), p_in)
    assert bg_psnr(_plain_fast(xp.asarray(y), rm, backend.name)) < p_in - 3  # what the consistent data prevent
    sv = deconvolve_spatially_varying(xp.asarray(y), rm, backend=backend.name)
    assert bg_psnr(sv) > p_in + 4, (bg_psnr(sv), p_in)
    # the sharp layer stays sharp
    for out in (fast, sv):
        assert 10 * np.log10(1 / np.mean((to_host(out) - natural_rgb)[fg] ** 2)) > 40


def test_zero_map_leaves_image_nearly_unchanged(natural_gray):
    out = deconvolve_spatially_varying(natural_gray, np.zeros(natural_gray.shape), num_iter=10)
    assert psnr(out, natural_gray) > 40


@pytest.mark.parametrize(
    "rm,needle",
    [
        (np.zeros((10, 10)), "does not match"),
        (np.full((128, 128), np.nan), "NaN"),
        (-np.ones((128, 128)), "negative"),
        (np.zeros((128, 128, 2)), "2-D"),
    ],
)
def test_bad_maps(natural_gray, rm, needle):
    with pytest.raises(ValueError, match=needle):
        deconvolve_spatially_varying(natural_gray, rm)


# --- uncertain maps: expected misfit over a per-pixel radius distribution ---


def _quad_weights(r, radii, step, s):
    """Reference: ∫ hat_k(ρ) N(ρ; r, s²) dρ by the trapezoid rule (float64), mass below
    the first bank radius given to it (the map is clipped at 0)."""
    grid = np.linspace(r - 8 * s, r + 8 * s, 20001)
    pdf = np.exp(-0.5 * ((grid - r) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    rho = np.clip(grid, radii[0], radii[-1])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy < 2 has only trapz
    w = [trapezoid(np.maximum(0, 1 - np.abs(rho - q) / step) * pdf, grid) for q in radii]
    return np.array(w)


def test_uncertain_weights_match_quadrature_and_moments(backend):
    from gpudeblur.spatially_varying import _SIGMA_TAIL, _uncertain_weights

    rng = np.random.default_rng(4)
    rm = rng.uniform(0.0, 5.5, (24, 28))
    rm[0, :4] = [0.0, 0.1, 0.45, 1.3]  # near 0, where the Gaussian is clipped
    rm[23, 27] = rm.max() + 0.3  # the top, where the upper-open last entry takes the tail
    s, step = 0.4, 0.5
    radii = np.arange(0, int(np.ceil((rm.max() + _SIGMA_TAIL * s) / step)) + 1) * step
    w = to_host(_uncertain_weights(backend.xp.asarray(rm), radii, step, s, 0.0, backend, np.float64))
    assert w.min() >= 0
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    for i, j in [(0, 0), (0, 1), (0, 2), (0, 3), (5, 7), (23, 27)]:
        ref = _quad_weights(rm[i, j], radii, step, s)
        np.testing.assert_allclose(w[:, i, j], ref, atol=2e-6)
    # the last entry is upper-open: a radius beyond it keeps all its mass there
    far_top = to_host(_uncertain_weights(backend.xp.asarray(np.full((8, 8), 9.0)), np.array([0.0, 0.5, 1.0]), step, s, 0.0,
                                         backend, np.float64))
    np.testing.assert_allclose(far_top[-1], 1.0, atol=1e-12)
    # away from 0: mean r̂; second moment r̂² + s² plus the hat interpolation bias in [0, Δ²/4]
    far = rm > 4 * s + 0.01
    m1 = np.tensordot(radii, w, 1)
    m2 = np.tensordot(radii**2, w, 1)
    np.testing.assert_allclose(m1[far], rm[far], atol=1e-5)
    bias = m2[far] - rm[far] ** 2 - s**2
    assert bias.min() > -1e-4 and bias.max() < step**2 / 4 + 1e-4
    # the operator keeps the entries that matter (tails < 1e-3 dropped, the rest renormalized)
    op = SpatiallyVaryingBlur(backend.xp.asarray(rm), backend, np.float64, radius_step=step, radius_sigma=s)
    assert op.uncertain and op.radii[0] == 0.0 and op.radii[-1] >= rm.max() + 2 * s and len(op.radii) < len(radii)
    wo = np.stack([to_host(op.grid.crop(op.weight(k)[None]))[0] for k in range(len(op.radii))])
    np.testing.assert_allclose(wo.sum(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.tensordot(op.radii, wo, 1)[far], rm[far], atol=5e-3)
    assert op.grid.psf.shape == op.psfs[-1].shape  # the FFT grid is sized for the kept bank


def test_bank_step_follows_a_wide_radius_sigma(backend, natural_gray, monkeypatch):
    """A wide radius_sigma gets a coarser bank (multiples of radius_step): the
    mixture keeps its moments (mean r̂, second moment r̂² + s² + at most Δ²/4)
    and the fast deconvolution stays within 0.1 dB of the 0.5 px bank's."""
    import gpudeblur.spatially_varying as sv

    assert [sv.bank_step(0.5, s) for s in (0.0, 0.5, 1.0, 1.99, 2.0, 3.0, 4.0)] == [0.5] * 4 + [1.0, 1.5, 2.0]
    assert sv.bank_step(0.25, 2.0) == 1.0 and sv.bank_step(0.3, 2.0) == pytest.approx(0.9)
    assert sv.bank_step(0.1, 0.6) == pytest.approx(0.3)  # 0.5·0.6/0.1 = 3 despite the rounding
    with pytest.raises(ValueError, match="radius_step"):
        sv.bank_step(0.0, 2.0)
    rng = np.random.default_rng(6)
    rm = rng.uniform(9.0, 14.0, (64, 64))
    s = 2.0
    op = SpatiallyVaryingBlur(backend.xp.asarray(rm), backend, np.float64, radius_sigma=s)
    assert op.step == 1.0 and np.array_equal(op.radii, np.round(op.radii))
    w = np.stack([to_host(op.grid.crop(op.weight(k)[None]))[0] for k in range(len(op.radii))])
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.tensordot(op.radii, w, 1), rm, atol=5e-3)
    bias = np.tensordot(op.radii**2, w, 1) - rm**2 - s**2
    assert bias.min() > -0.05 and bias.max() < op.step**2 / 4 + 0.05
    # the deblurring barely notices: a 128² crop blurred by 6-10 px discs
    true = np.tile(np.linspace(6.0, 10.0, 128), (128, 1))
    y = blur_spatially_varying(natural_gray, true, dtype="float64")
    y = y + 1e-3 * np.random.default_rng(7).standard_normal(y.shape)
    kw = dict(method="fast", radius_sigma=s, spatial_sigma=6.0, dtype="float64", backend=backend.name)
    coarse = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), true, **kw))
    monkeypatch.setattr(sv, "BANK_STEP_PER_SIGMA", 0.0)  # every bank at 0.5 px
    fine = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), true, **kw))
    p_in, p_coarse, p_fine = psnr(y, natural_gray), psnr(coarse, natural_gray), psnr(fine, natural_gray)
    assert p_coarse > p_in + 1.0 and abs(p_coarse - p_fine) < 0.1, (p_in, p_coarse, p_fine)
    assert psnr(coarse, fine) > 40


@pytest.mark.parametrize("bad,needle", [(-0.1, "radius_sigma"), (4.5, "at most 4")])
def test_radius_sigma_range(backend, bad, needle):
    with pytest.raises(ValueError, match=needle):
        SpatiallyVaryingBlur(backend.xp.full((16, 16), 2.0), backend, np.float64, radius_sigma=bad)


def test_uncertain_weights_limits(backend):
    xp = backend.xp
    rm = np.random.default_rng(5).uniform(0.3, 4.0, (20, 24))
    hat = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64)
    thin = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64, radius_sigma=1e-3)
    for k, r in enumerate(thin.radii):
        if r in hat.radii:
            j = int(np.flatnonzero(hat.radii == r)[0])
            np.testing.assert_allclose(to_host(thin.weight(k)), to_host(hat.weight(j)), atol=2e-3)
        else:
            assert float(thin.weight(k).max()) < 2e-3
    # pooling a constant map changes nothing; pooling a step spreads it over both sides
    const = xp.full((20, 24), 2.2)
    a = SpatiallyVaryingBlur(const, backend, np.float64, radius_sigma=0.3)
    b = SpatiallyVaryingBlur(const, backend, np.float64, radius_sigma=0.3, spatial_sigma=2.0)
    assert list(a.radii) == list(b.radii)
    for k in range(len(a.radii)):
        np.testing.assert_allclose(to_host(a.weight(k)), to_host(b.weight(k)), atol=1e-12)
    step_map = np.zeros((20, 24))
    step_map[:, 12:] = 4.0
    p = SpatiallyVaryingBlur(xp.asarray(step_map), backend, np.float64, spatial_sigma=2.0)
    w4 = to_host(p.grid.crop(p.weight(int(np.flatnonzero(p.radii == 4.0)[0]))[None]))[0]
    assert 0.3 < w4[10, 11] < 0.5 and 0.5 < w4[10, 12] < 0.7 and w4[10, 2] < 1e-6 and w4[10, 22] > 1 - 1e-6


def test_pool_block():
    from gpudeblur.spatially_varying import pool_block

    assert [pool_block(s) for s in (0.0, 3.0, 5.99, 6.0, 12.0, 192.0)] == [1, 1, 1, 2, 4, 64]
    with pytest.raises(ValueError, match="spatial_sigma"):
        pool_block(-1.0)


def _block_and_exact_weights(backend, rm, rs, ss):
    import math

    from gpudeblur.spatially_varying import _uncertain_weights

    xp = backend.xp
    op = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64, radius_sigma=rs, spatial_sigma=ss, grid_weights=False)
    radii = np.arange(0, int(math.ceil((rm.max() + 4 * rs) / op.step)) + 1) * op.step
    ref = to_host(_uncertain_weights(xp.asarray(rm), radii, op.step, rs, ss, backend, np.float64))
    w = np.zeros_like(ref)
    for k, r in enumerate(op.radii):
        w[int(round(r / op.step))] = to_host(op.weight_image(k))
    assert w.min() >= 0
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    return radii, w, ref


@pytest.mark.parametrize("rs, ss", [(2.0, 12.0), (1.0, 6.0), (0.5, 6.5)])
def test_block_weights_match_the_exact_weights(backend, rs, ss):
    """A wide pooling computes the weights on blocks (pool_block) and interpolates them
    back: against the exact weights (``_uncertain_weights`` at every pixel) on a map
    with a ramp, a cone (radii capped near an edge) and a step, each entry is within
    0.005 and the mean radius within 0.08 px (without the pooling's variance
    correction the mean radius is off by 0.11 px at (2, 12)). A depth step inside a
    block is exact (two-point quadrature): block means alone put 0.13 of the weight
    on radii between the two sides."""
    from gpudeblur.spatially_varying import _BlockWeights, pool_block

    assert pool_block(ss) > 1
    yy, xx = np.mgrid[:96, :120].astype(np.float64)
    rm = np.minimum(20 * xx / 119, 0.8 * np.abs(yy - 40))
    rm[70:, :30] = 15.0
    radii, w, ref = _block_and_exact_weights(backend, rm, rs, ss)
    err = np.abs(w - ref)
    assert err.max() < 5e-3 and err.mean() < 3e-4, (err.max(), err.mean())
    mean_err = np.abs(np.tensordot(radii, w, 1) - np.tensordot(radii, ref, 1))
    assert mean_err.max() < 0.08 and mean_err.mean() < 0.015, (mean_err.max(), mean_err.mean())
    step = np.full((96, 96), 1.0)
    step[:, 49:] = 8.0  # inside the 4 px block of columns 48–51
    radii, w, ref = _block_and_exact_weights(backend, step, rs, ss)
    assert np.abs(w - ref).max() < 3e-3, np.abs(w - ref).max()
    # hat weights (radius_sigma 0) are kinked at the bank radii: computed at the pixels
    hat = SpatiallyVaryingBlur(backend.xp.asarray(rm), backend, np.float64, spatial_sigma=ss, grid_weights=False)
    assert not isinstance(hat._w_image, _BlockWeights)


def test_block_weights_on_a_small_map_with_a_huge_pooling(backend):
    """The block size follows the pooling the map can hold (its σ is capped to the map's
    size), not the σ asked for: 3e4 px on a 64² map is the 64² map's widest pooling."""
    rm = np.full((64, 64), 1.0)
    rm[:, 32:] = 6.0
    radii, w, ref = _block_and_exact_weights(backend, rm, 0.5, 3e4)
    assert np.abs(w - ref).max() < 0.02, np.abs(w - ref).max()


def test_uncertain_normal_operator_is_the_expected_misfit(backend):
    """⟨N x, x⟩ = Σ_k Σ_pixels w_k (h_k ⊛ x)² with the convolutions by SciPy (periodic)."""
    rng = np.random.default_rng(6)
    rm = rng.uniform(0.5, 3.0, (24, 28))
    op = SpatiallyVaryingBlur(backend.xp.asarray(rm), backend, np.float64, boundary="periodic",
                              radius_sigma=0.4, spatial_sigma=1.5)
    assert op.grid_shape == rm.shape
    x = rng.standard_normal((1,) + rm.shape)
    y = rng.standard_normal((1,) + rm.shape)
    nx = to_host(op.normal(backend.xp.asarray(x)))
    ny = to_host(op.normal(backend.xp.asarray(y)))
    ref = sum(float((to_host(op.weight(k)) * ndi.convolve(x[0], h, mode="wrap") ** 2).sum()) for k, h in enumerate(op.psfs))
    assert abs(float((nx * x).sum()) - ref) < 1e-10 * ref
    assert abs(float((nx * y).sum()) - float((x * ny).sum())) < 1e-10 * abs(ref)
    # its right-hand side Σ_k h_kᵀ(w_k g) is the adjoint
    g = rng.standard_normal((1,) + rm.shape)
    rhs = sum(float((ndi.correlate(to_host(op.weight(k)) * g[0], h, mode="wrap") * x[0]).sum()) for k, h in enumerate(op.psfs))
    assert abs(float((to_host(op.adjoint(backend.xp.asarray(g))) * x).sum()) - rhs) < 1e-9 * abs(ref)


def test_uncertain_preconditioner_exact_for_constant_map(backend):
    op = SpatiallyVaryingBlur(backend.xp.full((30, 26), 2.3), backend, np.float64, boundary="periodic", radius_sigma=0.5)
    v = backend.xp.asarray(np.random.default_rng(7).standard_normal((2,) + op.grid_shape))
    fft, kw = backend.fft, backend.fft_kwargs()
    via_symbol = fft.irfft2(fft.rfft2(v, **kw) * op.normal_otf_abs2(), s=op.grid_shape, **kw)
    np.testing.assert_allclose(to_host(via_symbol), to_host(op.normal(v)), atol=1e-12)


def test_uncertain_map_survives_an_overestimated_radius(natural_gray):
    """A map 0.6 px too large rings with the exact data term (below the input); the expected
    misfit over radius_sigma 0.5 stays well above the input."""
    r = np.full(natural_gray.shape, 2.0)
    y = blur_spatially_varying(natural_gray, r, dtype="float64")
    y = y + 1e-3 * np.random.default_rng(8).standard_normal(y.shape)
    wrong = np.full(natural_gray.shape, 2.6)
    exact = deconvolve_spatially_varying(y, wrong, lam=3e-4)
    unc = deconvolve_spatially_varying(y, wrong, lam=3e-4, radius_sigma=0.5, spatial_sigma=3.0)
    p_in, p_exact, p_unc = psnr(y, natural_gray), psnr(exact, natural_gray), psnr(unc, natural_gray)
    assert p_exact < p_in < p_unc - 1.0 and p_unc > p_exact + 2.0, (p_in, p_exact, p_unc)
    fast = deconvolve_spatially_varying(y, wrong, method="fast", radius_sigma=0.5, spatial_sigma=3.0)
    assert psnr(fast, natural_gray) > p_in


@pytest.mark.parametrize("rs, ss", [(0.5, 2.0), (1.0, 12.0)])
def test_fast_mode_blends_by_the_uncertain_weights(backend, natural_gray, rs, ss):
    """fast = Σ_k w_k ⊙ (per-radius Tikhonov result of h_k ∗ g + g − H g), with the uncertain
    weights, built by hand (also with weights on 4 px blocks, pool_block, which fast interpolates
    one entry at a time)."""
    from gpudeblur.convolution import from_channels_first, to_channels_first
    from gpudeblur.operators import laplacian_otf_abs2

    xp = backend.xp
    rm = np.where(np.arange(128)[None, :] < 64, 1.0, 3.2) * np.ones((128, 1))
    y = blur_spatially_varying(natural_gray, rm, dtype="float64")
    lam = 0.015
    out = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, method="fast", lam=lam, radius_sigma=rs, spatial_sigma=ss,
                                               dtype="float64", backend=backend.name))
    op = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64, radius_sigma=rs, spatial_sigma=ss)
    g = op.grid.extend(to_channels_first(xp.asarray(y)))
    G = backend.fft.rfft2(g)
    d2 = laplacian_otf_abs2(op.grid_shape, xp, np.float64)
    hg = sum(op.weight(k) * backend.fft.irfft2(G * otf, s=op.grid_shape) for k, otf in enumerate(op.otfs))
    R = G - backend.fft.rfft2(hg)
    ref = plain = 0
    for k, otf in enumerate(op.otfs):
        filt = otf.conj() / (abs(otf) ** 2 + lam * d2)
        ref = ref + op.weight(k) * backend.fft.irfft2((G * otf + R) * filt, s=op.grid_shape)
        plain = plain + op.weight(k) * backend.fft.irfft2(G * filt, s=op.grid_shape)
    ref = to_host(from_channels_first(op.grid.crop(ref), 2))
    np.testing.assert_allclose(out, ref, atol=1e-10)
    plain = to_host(from_channels_first(op.grid.crop(plain), 2))
    np.testing.assert_allclose(to_host(_plain_fast(xp.asarray(y), rm, backend.name, lam=lam, radius_sigma=rs,
                                                   spatial_sigma=ss, dtype="float64")), plain, atol=1e-10)
    assert np.abs(plain - out).max() > 1e-3
    hat = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, method="fast", lam=lam, dtype="float64", backend=backend.name))
    assert np.abs(hat - out).max() > 1e-3  # and that is not the plain hat blend


@pytest.mark.parametrize("uncertainty, step", [((0.0, 0.0), 0.5), ((0.0, 0.0), 0.7), ((0.5, 3.0), 0.5), ((2.0, 6.0), 0.5),
                                                   ((2.0, 12.0), 0.5)])
def test_weights_on_the_image_equal_the_grid_weights_cropped(backend, uncertainty, step):
    """grid_weights=False (the fast mode: no padded copy of the weight stack) gives the
    same weights on the grid and on the image, and the OTFs made one at a time are the kept ones."""
    rng = np.random.default_rng(9)
    rm = backend.xp.asarray(np.clip(rng.uniform(-1, 9, (70, 90)), 0, None))
    rs, ss = uncertainty
    on_grid = SpatiallyVaryingBlur(rm, backend, np.float32, step, radius_sigma=rs, spatial_sigma=ss)
    on_image = SpatiallyVaryingBlur(rm, backend, np.float32, step, radius_sigma=rs, spatial_sigma=ss, grid_weights=False)
    assert (on_image._w is None) and (on_image._w_image is None) == (rs == ss == 0)
    assert len(on_grid.radii) == len(on_image.radii) > 3
    for k in range(len(on_grid.radii)):
        wg = to_host(on_grid.weight(k))
        np.testing.assert_array_equal(to_host(on_image.weight(k)), wg)
        np.testing.assert_array_equal(to_host(on_image.weight_image(k)), to_host(on_grid.grid.crop(on_grid.weight(k)[None])[0]))
        np.testing.assert_array_equal(to_host(on_grid.weight_image(k)), to_host(on_image.weight_image(k)))
        np.testing.assert_array_equal(to_host(on_image.otf(k)), to_host(on_grid.otfs[k]))
    assert on_image._otfs is None  # nothing kept until the solvers ask


@pytest.mark.parametrize("uncertainty", [(0.0, 0.0), (0.5, 3.0), (2.0, 12.0)])
def test_fast_rgb_equals_its_channels_alone(backend, natural_rgb, uncertainty):
    """``fast`` blends each colour channel as it blends a grey image (the blend runs a
    channel at a time): RGB against three grey calls, to float32 rounding (the
    batched FFTs round differently), and the channels in their places."""
    xp = backend.xp
    M, N = natural_rgb.shape[:2]
    rm = np.tile(np.linspace(0, 6, N), (M, 1))
    y = blur_spatially_varying(natural_rgb, rm) + 1e-3 * np.random.default_rng(1).standard_normal(natural_rgb.shape)
    y[..., 1] = y[..., 1][::-1]  # channels unlike each other: a swap or a dropped channel shows
    rs, ss = uncertainty
    rgb = to_host(deconvolve_spatially_varying(xp.asarray(y), xp.asarray(rm), method="fast", radius_sigma=rs,
                                               spatial_sigma=ss, backend=backend.name))
    for c in range(3):
        grey = to_host(deconvolve_spatially_varying(xp.asarray(np.ascontiguousarray(y[..., c])), xp.asarray(rm),
                                                    method="fast", radius_sigma=rs, spatial_sigma=ss,
                                                    backend=backend.name))
        np.testing.assert_allclose(rgb[..., c], grey, atol=1e-5)
        assert np.abs(rgb[..., c] - y[..., c]).max() > 1e-2  # deblurred, not passed through


def test_accumulate_blends_channels_and_plain_arrays():
    """``_accumulate``: ``(C, M, N)`` results with ``(M, N)`` weights a channel at a time,
    and arrays of one shape (or weights that broadcast another way) as a whole; the
    same bits as ``out + wk * u`` summed in order."""
    from gpudeblur.spatially_varying import _accumulate

    rng = np.random.default_rng(2)
    for shape, wshape in (((3, 5, 7), (5, 7)), ((1, 5, 7), (5, 7)), ((5, 7), (5, 7)), ((3, 5, 7), (3, 5, 7)),
                          ((3, 5, 7), (1, 5, 7))):
        us = [rng.random(shape, dtype=np.float32) for _ in range(3)]
        ws = [rng.random(wshape, dtype=np.float32) for _ in range(3)]
        out = tmp = None
        ref = None
        for w, u in zip(ws, us):
            out, tmp = _accumulate(out, w, u[..., ::1], tmp, np)
            ref = w * u if ref is None else ref + w * u
        np.testing.assert_array_equal(out, ref)


def _plain_fast(image, rm, backend=None, lam=0.015, radius_sigma=0.0, spatial_sigma=0.0, family="disc", dtype=None):
    """A separate ``fast`` call (``deconvolve_spatially_varying(method='fast')``'s path) with
    the plain blend of the per-radius deconvolutions of ``g`` (``_fast(consistent=False)``):
    what :func:`deconvolve_fast_scaled`'s trials are. ``lam``: the trials' weight."""
    from gpudeblur._backend import to_output
    from gpudeblur.convolution import from_channels_first, to_channels_first
    from gpudeblur.spatially_varying import _fast, _prepare

    be, x, kind, r = _prepare(image, rm, backend, dtype)
    op = SpatiallyVaryingBlur(r, be, x.dtype, 0.5, family, radius_sigma=radius_sigma, spatial_sigma=spatial_sigma,
                              grid_weights=False)
    G = be.fft.rfft2(op.grid.extend(to_channels_first(x)), **be.fft_kwargs())
    return to_output(from_channels_first(_fast(op, G, lam, consistent=False).astype(x.dtype, copy=False), x.ndim), kind)


@pytest.mark.parametrize("uncertainty", [(0.0, 0.0), (0.5, 3.0), (2.0, 6.0)])
def test_fast_scaled_equals_separate_fast_calls(backend, natural_rgb, uncertainty):
    """The radius check's shared trials: each scale's result is the separate
    ``fast`` call's plain blend (``_fast(consistent=False)``) away from the border (the separate call's grid is padded
    for that scale's own largest PSF, so the Wiener tails see another
    extension within a few PSF widths of the border), bit for bit where the
    grids coincide (exact map, largest scale), and as good against the truth.
    The map starts at 2 px, so the scales' banks start at different radii
    (a per-radius cache keyed by bank position would mix them up)."""
    from gpudeblur.spatially_varying import deconvolve_fast_scaled

    xp = backend.xp
    M, N = natural_rgb.shape[:2]
    rm = np.tile(np.linspace(2, 6, N), (M, 1))
    y = blur_spatially_varying(natural_rgb, rm) + 1e-3 * np.random.default_rng(0).standard_normal(natural_rgb.shape)
    rs, ss = uncertainty
    scales = (0.5, 0.8, 1.0)
    trials = list(deconvolve_fast_scaled(xp.asarray(y), xp.asarray(rm), scales, radius_sigma=rs, spatial_sigma=ss,
                                         backend=backend.name))
    assert [s for s, _ in trials] == list(scales)
    for s, f in trials:
        assert isinstance(f, type(xp.asarray(y))) and f.shape == y.shape and f.dtype == np.float32
        f = to_host(f)
        ref = to_host(_plain_fast(xp.asarray(y), xp.asarray(rm * s), backend.name, radius_sigma=rs,
                                  spatial_sigma=ss))
        if s == 1.0 and rs == 0:
            np.testing.assert_array_equal(f, ref)
            continue
        d = np.abs(f - ref)
        m = 30 if rs < 2 else 50  # a wide spread's tails widen the border zone
        assert d[m:-m, m:-m].max() < 2e-3, (s, d[m:-m, m:-m].max())
        assert psnr(f, ref) > 45
        assert abs(psnr(np.clip(f, 0, 1), natural_rgb) - psnr(np.clip(ref, 0, 1), natural_rgb)) < 0.05
    # a 2-D image, scales in any order
    (s1, a), (s2, b) = deconvolve_fast_scaled(natural_rgb[..., 0], rm, (1.0, 0.5))
    assert (s1, s2) == (1.0, 0.5) and a.shape == b.shape == rm.shape and np.abs(a - b).max() > 1e-2
    for bad, needle in (((), "scales"), ((0.5, 0.0), "scale"), ((np.nan,), "scale")):
        with pytest.raises(ValueError, match=needle):
            deconvolve_fast_scaled(y, rm, bad)  # checked on the call, not at the first result


def test_fast_scaled_grid_fits_small_images_and_any_family():
    """The shared grid is padded for the largest bank PSF that fits the image: on a
    16² image an uncertain 6 px map's far tail (a 17² disc) is dropped by the banks,
    so the trials (and the radius check) run as the separate calls do; a family
    whose size is not monotone in the radius gets the grid of its largest PSF."""
    from gpudeblur.allinfocus import radius_check
    from gpudeblur.spatially_varying import deconvolve_fast_scaled

    rng = np.random.default_rng(4)
    img = rng.random((16, 16))
    rm = np.where(np.arange(16)[None, :] < 8, 6.0, 3.0) * np.ones((16, 1))
    for s, f in deconvolve_fast_scaled(img, rm, (0.5, 1.0), radius_sigma=0.5, spatial_sigma=3):
        ref = _plain_fast(img, rm * s, radius_sigma=0.5, spatial_sigma=3)
        assert np.isfinite(f).all() and f.shape == ref.shape
    assert radius_check(img, rm).shape == rm.shape
    big = gd.psf.disc(8.0)

    def odd(r):  # the widest PSF at the smallest radius
        return big if r < 1 else gd.psf.disc(r)

    M, N = 96, 96
    y = rng.random((M, N))
    rmap = np.tile(np.linspace(0, 4, N), (M, 1))
    (_, f), = deconvolve_fast_scaled(y, rmap, (0.5,), family=odd)
    ref = _plain_fast(y, rmap * 0.5, family=odd)
    np.testing.assert_array_equal(f, ref)  # the same grid as the separate call


@pytest.mark.parametrize("kw,needle", [({"radius_sigma": -0.1}, "radius_sigma"), ({"spatial_sigma": np.nan}, "spatial_sigma")])
def test_bad_uncertainty(natural_gray, kw, needle):
    with pytest.raises(ValueError, match=needle):
        deconvolve_spatially_varying(natural_gray, np.ones(natural_gray.shape), **kw)


# ---------------------------------------------------------------------------
# clipped highlights: values left out of the data term, one-sided fit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("uncertain", [False, True])
def test_excluded_values_normal_operator(backend, uncertain):
    """With values excluded (m = 0 there): ⟨N x, x⟩ = Σ_k Σ m w_k (h_k ⊛ x)² (uncertain) or
    ‖√m H x‖² (exact), N symmetric, right-hand side Hᵀ(m g), preconditioner shares = means of m w_k."""
    rng = np.random.default_rng(16)
    rm = rng.uniform(0.5, 3.0, (24, 28))
    kw = dict(radius_sigma=0.4, spatial_sigma=1.5) if uncertain else {}
    op = SpatiallyVaryingBlur(backend.xp.asarray(rm), backend, np.float64, boundary="periodic", **kw)
    mask = rng.random((2,) + rm.shape) < 0.2
    op.exclude(backend.xp.asarray(mask))
    m = (~mask).astype(float)
    x = rng.standard_normal((2,) + rm.shape)
    y = rng.standard_normal((2,) + rm.shape)
    nx = to_host(op.normal(backend.xp.asarray(x)))
    ny = to_host(op.normal(backend.xp.asarray(y)))
    w = [to_host(op.weight(k)) for k in range(len(op.psfs))]
    conv = [[ndi.convolve(x[c], h, mode="wrap") for c in range(2)] for h in op.psfs]
    if uncertain:
        ref = sum(float((m[c] * w[k] * conv[k][c] ** 2).sum()) for k in range(len(w)) for c in range(2))
    else:
        hx = [sum(w[k] * conv[k][c] for k in range(len(w))) for c in range(2)]
        ref = sum(float((m[c] * hx[c] ** 2).sum()) for c in range(2))
    assert abs(float((nx * x).sum()) - ref) < 1e-10 * ref
    assert abs(float((nx * y).sum()) - float((x * ny).sum())) < 1e-10 * abs(ref)
    g = rng.standard_normal((2,) + rm.shape)
    np.testing.assert_allclose(to_host(op.data_rhs(backend.xp.asarray(g))),
                               to_host(op.adjoint(backend.xp.asarray(m * g))), atol=1e-12)
    np.testing.assert_allclose(op._shares(), [float((m * wk).mean()) for wk in w], rtol=1e-12)
    if not uncertain:  # preconditioner symbol m̄·|H̄|², H̄ the OTF of the m-weighted mean PSF
        shares = [float((m * wk).mean()) for wk in w]
        hbar = sum(sh * to_host(otf) for sh, otf in zip(shares, op.otfs)) / sum(shares)
        np.testing.assert_allclose(to_host(op.mean_otf_abs2()), sum(shares) * np.abs(hbar) ** 2, rtol=1e-10, atol=1e-14)
    op.exclude(None)  # back to the full data term
    np.testing.assert_allclose(to_host(op.data_rhs(backend.xp.asarray(g))), to_host(op.adjoint(backend.xp.asarray(g))))


def _clipped_scene(natural_gray, seed=4):
    """The gray photo with 3×3 highlights at 2–6× white and a blown-out patch, blurred
    by a two-layer map (0 | 4 px), clipped to [0, 1], σ_n = 1e-3."""
    rng = np.random.default_rng(seed)
    s = natural_gray.astype(np.float64).copy()
    M, N = s.shape
    rm = np.zeros((M, N))
    rm[:, N // 2:] = 4.0
    for _ in range(12):
        cy, cx = rng.integers(4, M - 4), rng.integers(N // 2 + 4, N - 4)
        s[cy - 1:cy + 2, cx - 1:cx + 2] = rng.uniform(2, 6)
    s[6:20, N - 24:N - 8] = 3.0
    y = blur_spatially_varying(s, rm, dtype="float64")
    y = np.clip(np.clip(y, 0, 1) + 1e-3 * rng.standard_normal(y.shape), 0, 1)
    return rm, y, np.clip(s, 0, 1)


def test_clipped_highlights_fit_one_sided(backend, natural_gray):
    """A blurred photo with clipped highlights: the one-sided fit of the clipped values
    beats fitting them as data (measured on the 96² crop: +3.3 dB exact, +1.6 dB uncertain),
    and a blown-out plateau stays white instead of being filled in grey."""
    rm, y, truth = _clipped_scene(natural_gray)
    sat = gd.allinfocus.saturation_mask(y)
    assert 0.01 < sat.mean() < 0.2
    xp = backend.xp
    N = y.shape[1]
    for kw, gain, core in (({}, 2.0, 0.3), ({"radius_sigma": 0.5, "spatial_sigma": 3.0}, 1.0, 0.9)):
        plain = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, lam=3e-4, backend=backend.name, **kw))
        one_sided = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, lam=3e-4, saturated=xp.asarray(sat),
                                                         backend=backend.name, **kw))
        a, b = psnr(np.clip(one_sided, 0, 1), truth), psnr(np.clip(plain, 0, 1), truth)
        assert a > b + gain, (kw, a, b)
        # the plateau's core: the plain fit undershoots far below 0 (measured −0.38 / −0.1),
        # the one-sided fit stays bright (0.51 / 0.995: the exact map's converges slowly)
        assert plain[9:17, N - 21:N - 11].min() < 0, kw
        assert one_sided[9:17, N - 21:N - 11].min() > core, kw
        assert one_sided[sat].max() <= y[sat].max() + 1e-6  # capped at the clipped level there
    # the active set: the solver's model H f reaches every clipped value (on the grid, before
    # the output cap; measured 0 % more than 0.05 below, 8 % when they are only left out)
    from gpudeblur.convolution import to_channels_first
    from gpudeblur.spatially_varying import _saturated_grid, _sv_admm

    op = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64)
    g = op.grid.extend(to_channels_first(xp.asarray(y)))
    sg = _saturated_grid(xp.asarray(sat), xp.asarray(y), op, backend)
    f, _ = _sv_admm(op, g, 3e-4, 3e-2, 30, 5, None, sg)
    assert float((op.forward(f)[sg] < g[sg] - 0.05).mean()) < 0.01
    # an (M, N) mask on an RGB image stands for all its channels
    rgb = np.dstack([y, y ** 1.1, y ** 0.9])
    s2 = gd.allinfocus.saturation_mask(rgb).any(axis=2)
    a = deconvolve_spatially_varying(rgb, rm, num_iter=3, saturated=s2)
    b = deconvolve_spatially_varying(rgb, rm, num_iter=3, saturated=np.repeat(s2[..., None], 3, axis=2))
    np.testing.assert_array_equal(a, b)
    # nothing clipped: the mask changes nothing (same code path)
    none = np.zeros(y.shape, bool)
    a = deconvolve_spatially_varying(np.clip(y, 0, 0.9), rm, num_iter=3)
    b = deconvolve_spatially_varying(np.clip(y, 0, 0.9), rm, num_iter=3, saturated=none)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw, needle", [
    (dict(method="fast", saturated=np.zeros((64, 64), bool)), "saturated needs method 'sv-admm'"),
    (dict(saturated=np.zeros((64, 63), bool)), "saturated mask shape"),
    (dict(saturated=np.zeros((64, 64))), "boolean mask"),
])
def test_bad_saturated(kw, needle):
    y = np.random.default_rng(0).random((64, 64))
    with pytest.raises(ValueError, match=needle):
        deconvolve_spatially_varying(y, np.ones((64, 64)), **kw)


def _three_layer(img, seed=4):
    rm = np.zeros(img.shape[:2])
    rm[:, img.shape[1] // 3:] = 2.5
    rm[:, 2 * img.shape[1] // 3:] = 4.0
    y = blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
    return rm, np.clip(y + 1e-3 * np.random.default_rng(seed).standard_normal(y.shape), 0, 1)


@pytest.mark.parametrize("spatial", [0.0, 3.0])
def test_spread_sequence_continues_one_admm_run(backend, natural_rgb, spatial):
    """Equal spreads: the second solve continues the first exactly (its state carries over whole),
    so (4, 3) iterations equal one 7-iteration solve; the first result is the plain solve."""
    rm, y = _three_layer(natural_rgb[:96, :96])
    xp = backend.xp
    kw = dict(spatial_sigma=spatial, backend=backend.name)
    a, b = deconvolve_spread_sequence(xp.asarray(y), rm, (0.5, 0.5), num_iter=(4, 3), **kw)
    np.testing.assert_array_equal(to_host(a), to_host(deconvolve_spatially_varying(xp.asarray(y), rm, radius_sigma=0.5,
                                                                                   num_iter=4, **kw)))
    np.testing.assert_array_equal(to_host(b), to_host(deconvolve_spatially_varying(xp.asarray(y), rm, radius_sigma=0.5,
                                                                                   num_iter=7, **kw)))
    seen = []
    deconvolve_spread_sequence(xp.asarray(y), rm, (0.5, 0.5, 0.0), num_iter=(2, 1, 2), callback=seen.append, **kw)
    assert seen == [0, 1, 2, 3, 4]  # the iterations count on across the solves


def test_spread_sequence_warm_start_on_another_grid(backend, natural_rgb):
    """A narrower spread has a smaller bank, so another FFT grid: the state moves over through the
    image, and 5 warm-started iterations land nearer the narrow problem's solution than 5 from
    the cold start (measured RMS to a 100-iteration solve 0.0035 against 0.0056 on this crop)."""
    rm, y = _three_layer(natural_rgb[:96, :96])
    xp = backend.xp
    grids = [SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float32, radius_sigma=s, spatial_sigma=3.0).grid.pad
             for s in (0.5, 0.1)]
    assert grids[0] != grids[1]
    kw = dict(spatial_sigma=3.0, backend=backend.name)
    ref = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, radius_sigma=0.1, num_iter=100, **kw))
    wide, warm = (to_host(a) for a in deconvolve_spread_sequence(xp.asarray(y), rm, (0.5, 0.1), num_iter=(15, 5),
                                                                  **kw))
    cold = to_host(deconvolve_spatially_varying(xp.asarray(y), rm, radius_sigma=0.1, num_iter=5, **kw))

    def rms(a):
        return float(np.sqrt(np.mean((a - ref) ** 2)))

    assert rms(warm) < 0.8 * rms(cold) and rms(warm) < 0.5 * rms(wide), (rms(warm), rms(cold), rms(wide))
    assert warm.shape == y.shape and warm.dtype == np.float32


def test_spread_sequence_keeps_a_coarse_bank_step(monkeypatch, natural_rgb):
    """A narrower spread after a wide one keeps the wide one's coarse bank step (1 px for a
    2 px spread) instead of refining it to ``radius_step``; a wider one after a narrow one coarsens."""
    import gpudeblur.spatially_varying as sv

    rm, y = _three_layer(natural_rgb[:64, :64, 0])
    steps = []

    class Spy(sv.SpatiallyVaryingBlur):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            steps.append(self.step)

    monkeypatch.setattr(sv, "SpatiallyVaryingBlur", Spy)
    deconvolve_spread_sequence(y, 3 * rm, (2.0, 0.4), num_iter=(1, 1), spatial_sigma=3.0)
    assert steps == [1.0, 1.0]
    steps.clear()
    deconvolve_spread_sequence(y, 3 * rm, (0.4, 2.0), num_iter=(1, 1), spatial_sigma=3.0)
    assert steps == [0.5, 1.0]
    steps.clear()
    deconvolve_spatially_varying(y, 3 * rm, radius_sigma=0.4, spatial_sigma=3.0, num_iter=1)
    assert steps == [0.5]


def test_spread_sequence_clipped_values_and_rgba(monkeypatch, natural_rgb):
    """The clipped-value mask applies to every solve (the output cap too): a continued solve
    starts one-sided, leaving out only the clipped values its start already reaches; ``clip``
    and an alpha channel apply to each output."""
    import gpudeblur.spatially_varying as sv

    rm, y = _three_layer(natural_rgb[:64, :64])
    y = y.copy()
    y[2:10, 2:10] = 1.0
    y[30:40, 50:60] = 1.0
    sat = gd.allinfocus.saturation_mask(y)
    excluded = []
    real_exclude = sv.SpatiallyVaryingBlur.exclude

    def spy(self, mask):
        excluded.append((self, int(mask.sum())))
        return real_exclude(self, mask)

    monkeypatch.setattr(sv.SpatiallyVaryingBlur, "exclude", spy)
    # equal spreads: one grid, so the counts compare
    deconvolve_spread_sequence(y, rm, (0.5, 0.5), num_iter=(3, 3), spatial_sigma=3.0, saturated=sat)
    monkeypatch.undo()
    outs = deconvolve_spread_sequence(y, rm, (0.5, 0.1), num_iter=(3, 3), spatial_sigma=3.0, saturated=sat)
    assert all(float(o[sat].max()) <= 1.0 + 1e-6 for o in outs)
    # each 3-iteration solve: one exclusion at its start, updates after its iterations 1 and 2
    assert len(excluded) == 6
    first, second = [n for _, n in excluded[:3]], [n for _, n in excluded[3:]]
    n_sat = int(np.broadcast_to(sat[..., None], y.shape).sum()) if sat.ndim == 2 else int(sat.sum())
    assert first[0] >= n_sat  # a cold start leaves every clipped value out (padding included) ...
    assert 0 < second[0] < first[0]  # ... a continued one only those its start already reaches
    clipped = deconvolve_spread_sequence(y, rm, (0.5, 0.1), num_iter=(3, 3), spatial_sigma=3.0, clip=(0.2, 0.8))
    assert all(float(o.min()) >= 0.2 - 1e-6 and float(o.max()) <= 0.8 + 1e-6 for o in clipped)
    assert all(float(o.max()) > 0.8 - 1e-6 for o in clipped)  # (the clip did act on each)
    ref = deconvolve_spatially_varying(y, rm, radius_sigma=0.5, spatial_sigma=3.0, num_iter=3, saturated=sat)
    np.testing.assert_array_equal(outs[0], ref)
    alpha = np.random.default_rng(1).random(y.shape[:2])
    rgba = np.dstack([y, alpha])
    for o in deconvolve_spread_sequence(rgba, rm, (0.5, 0.1), num_iter=(2, 2), spatial_sigma=3.0):
        assert o.shape == rgba.shape and np.array_equal(o[..., 3], alpha.astype(o.dtype))


@pytest.mark.parametrize("sigmas, iters, needle", [
    ((0.5, 0.1), (15,), "one length"),
    ((), (), "non-empty"),
    ("0.5", (1,), "sequences"),
    (0.5, (1,), "sequences"),
    ((0.5, -0.1), (2, 2), "radius_sigma"),
    ((0.5, 0.1), (2, 0), "num_iter"),
])
def test_bad_spread_sequence(sigmas, iters, needle):
    y = np.random.default_rng(0).random((48, 48))
    with pytest.raises(ValueError, match=needle):
        deconvolve_spread_sequence(y, np.ones((48, 48)), sigmas, num_iter=iters)


@pytest.mark.parametrize("uncertain", [False, True])
@pytest.mark.parametrize("excluded", [False, True])
def test_normal_operator_with_a_regularizer_symbol(backend, uncertain, excluded):
    """``normal(x, reg)`` = ``normal(x)`` + the periodic operator of ``reg`` (here ρ|D|², so
    ``ρ DᵀD x`` by SciPy's wrap-around differences), sharing the transforms; without
    ``reg`` it is unchanged (the same bits as before the option)."""
    from gpudeblur.operators import laplacian_otf_abs2

    rng = np.random.default_rng(23)
    rm = rng.uniform(0.5, 3.0, (24, 28))
    kw = dict(radius_sigma=0.4, spatial_sigma=1.5) if uncertain else {}
    xp = backend.xp
    op = SpatiallyVaryingBlur(xp.asarray(rm), backend, np.float64, boundary="periodic", **kw)
    if excluded:
        op.exclude(xp.asarray(rng.random((2,) + rm.shape) < 0.2))
    x = rng.standard_normal((2,) + rm.shape)
    rho = 0.7
    reg = rho * laplacian_otf_abs2(op.grid_shape, xp, np.float64)
    got = to_host(op.normal(xp.asarray(x), reg))
    dtd = np.stack([ndi.correlate(ndi.convolve(x[c], [[1, -1]], mode="wrap"), [[1, -1]], mode="wrap")
                    + ndi.correlate(ndi.convolve(x[c], [[1], [-1]], mode="wrap"), [[1], [-1]], mode="wrap")
                    for c in range(2)])
    np.testing.assert_allclose(got, to_host(op.normal(xp.asarray(x))) + rho * dtd, atol=1e-12)
    # without reg: the data term alone, the composition of the operator's own forward and adjoint
    if not uncertain:
        np.testing.assert_array_equal(to_host(op.normal(xp.asarray(x))),
                                      to_host(op.adjoint(op._masked(op.forward(xp.asarray(x))))))


def test_tikhonov_real_filter_equals_the_complex_one(backend):
    """An even PSF's real OTF (``psf2otf(real_if_even=True)``) takes the real filter
    ``H · (1 / (H² + prior))``: the values of the complex formula to a few eps (on this
    project's VM to the bit, which depends on how NumPy divides complex numbers, so not
    asserted), for disc and Gaussian PSFs and both dtypes; an asymmetric PSF keeps the
    complex OTF."""
    from gpudeblur.convolution import psf2otf
    from gpudeblur.operators import laplacian_otf_abs2
    from gpudeblur.spatially_varying import _tikhonov

    rng = np.random.default_rng(0)
    xp = backend.xp
    for dt in (np.float32, np.float64):
        shape = (48, 62)
        g = xp.asarray(rng.random((3,) + shape).astype(dt))
        G = backend.fft.rfft2(g, **backend.fft_kwargs())
        prior = dt(3e-3) * laplacian_otf_abs2(shape, xp, dt)
        for psf in (gd.psf.disc(2.5), gd.psf.gaussian(1.5), gd.psf.disc(0.0)):
            real = psf2otf(psf, shape, backend, dt, real_if_even=True)
            cplx = psf2otf(psf, shape, backend, dt)
            assert real.dtype == dt and cplx.dtype.kind == "c"
            np.testing.assert_array_equal(to_host(real), to_host(cplx).real)
            got = to_host(_tikhonov(G.copy(), real, prior, shape, backend))
            ref = to_host(_tikhonov(G.copy(), cplx, prior, shape, backend))
            np.testing.assert_allclose(got, ref, rtol=0, atol=4 * np.finfo(dt).eps * np.abs(ref).max())
    odd = np.pad(gd.psf.disc(2.0), ((0, 0), (0, 1)))
    odd[2, -1] = 0.01
    assert psf2otf(odd, (48, 62), backend, np.float32, real_if_even=True).dtype.kind == "c"


@pytest.mark.parametrize("method", ["sv-admm", "fast"])
def test_default_weight_follows_the_noise(backend, natural_gray, method):
    """``lam=None``: ``max(0.1·σ̂, 3e-4)`` (TV) or ``max(1.5·σ̂, 0.015)`` (``fast``'s prior) with σ̂ =
    ``estimate_noise`` of the input (the same output as that weight given), and on a noisy photo (σ = 0.05) the
    noise-scaled prior of ``fast`` gains over its old fixed 0.015 (here input 24.30, 0.015 24.05, now 27.06 dB)."""
    from gpudeblur.spatially_varying import FAST_LAM_PER_SIGMA, default_lam

    assert default_lam("sv-admm", 1e-3) == 3e-4 and default_lam("sv-admm", 0.05) == pytest.approx(5e-3)
    assert default_lam("fast", 1e-3) == 0.015 and default_lam("fast", 0.05) == pytest.approx(FAST_LAM_PER_SIGMA * 0.05)
    M, N = natural_gray.shape
    rm = np.zeros((M, N))
    rm[:, N // 2:] = 3.0
    y = blur_spatially_varying(natural_gray, rm, radius_step=0.1, dtype="float64")
    y = np.clip(y + 0.05 * np.random.default_rng(3).standard_normal(y.shape), 0, 1)
    s = float(gd.estimate_noise(y))
    kw = {"num_iter": 3} if method == "sv-admm" else {}
    out = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), rm, method=method, backend=backend.name, **kw))
    ref = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), rm, method=method, lam=default_lam(method, s),
                                               backend=backend.name, **kw))
    np.testing.assert_array_equal(out, ref)
    if method == "fast":
        old = to_host(deconvolve_spatially_varying(backend.xp.asarray(y), rm, method=method, lam=0.015,
                                                   backend=backend.name))
        new = psnr(out, natural_gray)
        assert new > psnr(old, natural_gray) + 1.0 and new > psnr(y, natural_gray) + 0.5, (new, psnr(old, natural_gray))


def _periodic_differences(m):
    """Dense periodic forward differences of an ``m × m`` grid: rows x then y, columns the pixels."""
    n = m * m
    idx = np.arange(n).reshape(m, m)
    D = np.zeros((2 * n, n))
    D[idx.ravel(), np.roll(idx, -1, 1).ravel()] += 1
    D[n + idx.ravel(), np.roll(idx, -1, 0).ravel()] += 1
    D[idx.ravel(), idx.ravel()] -= 1
    D[n + idx.ravel(), idx.ravel()] -= 1
    return D


def _dense_tv_minimizer(Q, c, D, lam, n):
    """``(objective, f)``: the minimizer ``f`` of ``½fᵀQf − cᵀf + λ·Σ_x |(Df)_x|₂`` (the norm over the
    rows of ``D`` that belong to pixel ``x``: ``D``'s rows are groups of ``n``, one per gradient
    component) by dense Chambolle–Pock (f-prox ``(I + τQ)⁻¹``, the dual projected onto ``|p_x|₂ ≤ λ``),
    certified by its duality gap."""
    rows = D.shape[0] // n

    def objective(f):
        d = (D @ f.ravel()).reshape(rows, n)
        return 0.5 * f.ravel() @ Q @ f.ravel() - c @ f.ravel() + lam * np.sqrt((d**2).sum(0)).sum()

    tau, sig = 1.0, 0.99 / 8
    A = np.linalg.inv(np.eye(Q.shape[0]) + tau * Q)
    f = np.zeros(Q.shape[0])
    fb, p = f.copy(), np.zeros((rows, n))
    for _ in range(15000):
        p += sig * (D @ fb).reshape(rows, n)
        p /= np.maximum(1, np.sqrt((p**2).sum(0)) / lam)
        f_old = f
        f = A @ (f - tau * (D.T @ p.ravel()) + tau * c)
        fb = 2 * f - f_old
    v = c - D.T @ p.ravel()
    gap = objective(f) - (-0.5 * v @ np.linalg.solve(Q, v))
    assert -1e-12 <= gap < 1e-9  # the reference is the minimizer (to rounding)
    return objective, f


@pytest.mark.parametrize("uncertainty", [(0.0, 0.0), (0.5, 2.0)])
def test_sv_admm_reaches_the_minimizer_of_eq19(uncertainty):
    """On a 12² periodic grid with a two-radius map, ``sv-admm``'s ADMM (the library's CG tolerance, ρ = 100λ)
    approaches the minimizer of ``½‖Hf − g‖² + λ·Σ|∇f|₂`` (the expected misfit for an uncertain map) found by an
    independent dense Chambolle–Pock solve, certified by its duality gap. Measured: 300 iterations reach the
    reference's objective to 2.2e-6 / 5.1e-7 (max |Δf| 4.5e-3 / 1.1e-4); 30 to 1.2e-3 / 1.3e-6."""
    from gpudeblur.spatially_varying import _sv_admm

    be = gd.get_backend("cpu")
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:12, :12]
    sharp = ((xx > 3) & (xx < 9) & (yy > 2) & (yy < 8)) * 0.8 + 0.1
    rmap = np.where(xx < 6, 0.4, 1.5)
    lam = 2e-3
    op = SpatiallyVaryingBlur(rmap, be, np.float64, 0.5, "disc", "periodic", *uncertainty)
    assert op.grid_shape == (12, 12)
    n = 144
    g = op.forward(sharp[None].astype(np.float64)) + 0.01 * rng.standard_normal((1, 12, 12))
    # dense normal matrix, right-hand side and periodic forward differences
    Q = np.stack([op.normal(e.reshape(1, 12, 12))[0].ravel() for e in np.eye(n)], 1)
    c = op.data_rhs(g).ravel()
    D = _periodic_differences(12)

    objective, f = _dense_tv_minimizer(Q, c, D, lam, n)
    out, _ = _sv_admm(op, g, lam, 100 * lam, 300, 5, None)
    assert objective(out) - objective(f) < 1e-5
    np.testing.assert_allclose(out.ravel(), f, atol=1e-2)


def test_sv_admm_colour_tv_reaches_the_minimizer_of_eq19():
    """``joint=True`` (``tv_channels='joint'``): eq. 19 with the colour TV ``λ·Σ_x sqrt(Σ_c |∇f_c|²)`` on a
    12² periodic grid, three channels, a two-radius map: ``sv-admm`` reaches the minimizer found by an
    independent dense Chambolle–Pock solve (joint projection of each pixel's 2C dual components), which
    the per-channel TV's solution does not."""
    from gpudeblur.spatially_varying import _sv_admm

    be = gd.get_backend("cpu")
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:12, :12]
    box = ((xx > 3) & (xx < 9) & (yy > 2) & (yy < 8)).astype(np.float64)
    sharp = np.stack([0.8 * box + 0.1, 0.5 * box + 0.2, 0.3 * (xx > 5) + 0.4])
    rmap = np.where(xx < 6, 0.4, 1.5)
    lam = 2e-3
    op = SpatiallyVaryingBlur(rmap, be, np.float64, 0.5, "disc", "periodic")
    n, C = 144, 3
    g = op.forward(sharp) + 0.01 * rng.standard_normal((C, 12, 12))
    Q1 = np.stack([op.normal(e.reshape(1, 12, 12))[0].ravel() for e in np.eye(n)], 1)
    Q = np.kron(np.eye(C), Q1)  # the same operator on each channel
    c = op.data_rhs(g).ravel()
    D = np.kron(np.eye(C), _periodic_differences(12))  # rows: channel, direction, pixel

    objective, f = _dense_tv_minimizer(Q, c, D, lam, n)
    out, _ = _sv_admm(op, g, lam, 100 * lam, 300, 5, None, joint=True)
    assert objective(out) - objective(f) < 1e-5
    np.testing.assert_allclose(out.ravel(), f, atol=1e-2)
    sep, _ = _sv_admm(op, g, lam, 100 * lam, 300, 5, None, joint=False)
    assert objective(sep) - objective(f) > 1e-4


def test_tv_channels_options(natural_rgb):
    """``tv_channels``: None is ``'separate'`` (the same bits), ``'joint'`` changes a colour result,
    ``'joint'`` with the fast mode (no TV) and unknown values are errors."""
    y = natural_rgb[:40, :40]
    rm = np.full(y.shape[:2], 2.0)
    a = deconvolve_spatially_varying(y, rm, num_iter=3)
    np.testing.assert_array_equal(a, deconvolve_spatially_varying(y, rm, num_iter=3, tv_channels="separate"))
    assert np.abs(a - deconvolve_spatially_varying(y, rm, num_iter=3, tv_channels="joint")).max() > 1e-4
    with pytest.raises(ValueError, match="needs method 'sv-admm'"):
        deconvolve_spatially_varying(y, rm, method="fast", tv_channels="joint")
    with pytest.raises(ValueError, match="tv_channels"):
        deconvolve_spatially_varying(y, rm, tv_channels="both")


def test_fast_refuses_the_iterative_settings():
    """``num_iter``, ``cg_iter``, ``rho`` and ``callback`` do nothing in the fast mode (a closed form): given,
    they are an error, not silently ignored; their defaults still serve sv-admm."""
    img = np.random.default_rng(0).random((24, 24))
    rm = np.full(img.shape, 2.0)
    for kw, words in (({"num_iter": 3}, "num_iter applies"), ({"cg_iter": 2}, "cg_iter applies"),
                      ({"rho": 1.0}, "rho applies"), ({"callback": print}, "callback applies"),
                      ({"num_iter": 3, "rho": 1.0}, "num_iter, rho apply")):
        with pytest.raises(ValueError, match=f"{words} to method 'sv-admm' only"):
            deconvolve_spatially_varying(img, rm, method="fast", **kw)
    seen = []
    deconvolve_spatially_varying(img, rm, num_iter=2, callback=seen.append)
    assert seen == [0, 1]
    np.testing.assert_array_equal(deconvolve_spatially_varying(img, rm, num_iter=2),
                                  deconvolve_spatially_varying(img, rm, num_iter=2, cg_iter=5))
