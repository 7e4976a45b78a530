"""Spatially varying deconvolution (Zhu et al. 2013, eq. 19)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import gpudeblur as gd
from gpudeblur.spatially_varying import SpatiallyVaryingBlur, blur_spatially_varying, deconvolve_spatially_varying

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
