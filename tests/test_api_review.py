"""Faults a session-18 review of the Python API found, each test failing before
its fix: an RGBA array's alpha channel deconvolved like a colour channel;
unsigned integer images taken on a 0–255 scale (so a dark uint8 photo's
brightest pixels read as clipped highlights); ``clip`` of
``deconvolve_spatially_varying`` and the map of ``segment_in_focus``
unchecked."""

import numpy as np
import pytest

import gpudeblur as gd
from gpudeblur.allinfocus import AllInFocus
from gpudeblur.spatially_varying import blur_spatially_varying, deconvolve_spatially_varying

from conftest import to_host


@pytest.fixture
def rgba(natural_rgb):
    rgb = natural_rgb[:64, :64].astype(np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[16:48, 10:40] = 1.0
    alpha[20:30, 45:60] = 0.37  # a soft matte value
    rmap = np.zeros(rgb.shape[:2], np.float32)
    rmap[:, 32:] = 3.0
    return rgb, alpha, rmap


def _same(with_alpha, rgb_only, alpha):
    with_alpha, rgb_only = to_host(with_alpha), to_host(rgb_only)
    assert with_alpha.shape == rgb_only.shape[:2] + (4,)
    np.testing.assert_array_equal(with_alpha[..., 3], alpha)
    np.testing.assert_array_equal(with_alpha[..., :3], rgb_only)


@pytest.mark.parametrize("mode", ["fast", "sv-admm", "blind"])
def test_allinfocus_passes_alpha_through(rgba, mode):
    rgb, alpha, rmap = rgba
    kw = {"num_iter": 2} if mode != "fast" else {}
    pipe = AllInFocus(mode=mode, **kw)
    a, _ = pipe.run(np.dstack([rgb, alpha]), radius_map=rmap)
    b, _ = pipe.run(rgb, radius_map=rmap)
    _same(a, b, alpha)


def test_allinfocus_estimated_map_ignores_alpha(rgba):
    rgb, alpha, _ = rgba
    big = np.kron(rgb, np.ones((2, 2, 1), np.float32))  # 128²: the analysis window fits
    a_big = np.kron(alpha, np.ones((2, 2), np.float32))
    a, ra = AllInFocus(mode="fast").run(np.dstack([big, a_big]))
    b, rb = AllInFocus(mode="fast").run(big)
    np.testing.assert_array_equal(ra.radius_map, rb.radius_map)
    _same(a, b, a_big)


@pytest.mark.parametrize("method", ["sv-admm", "fast"])
def test_spatially_varying_passes_alpha_through(backend, rgba, method):
    rgb, alpha, rmap = rgba
    xp = backend.xp
    x = xp.asarray(np.dstack([rgb, alpha]))
    kw = {"num_iter": 3} if method == "sv-admm" else {}
    a = deconvolve_spatially_varying(x, xp.asarray(rmap), method=method, clip=True, **kw)
    b = deconvolve_spatially_varying(xp.asarray(rgb), xp.asarray(rmap), method=method, clip=True, **kw)
    _same(a, b, alpha)
    _same(blur_spatially_varying(x, xp.asarray(rmap)), blur_spatially_varying(xp.asarray(rgb), xp.asarray(rmap)),
          alpha)
    k = gd.psf.disc(2.0)
    _same(gd.fftconvolve(x, k), gd.fftconvolve(xp.asarray(rgb), k), alpha)


@pytest.mark.parametrize("fn, kw", [(gd.admm_tv, {"num_iter": 3}), (gd.wiener, {}), (gd.tikhonov, {}),
                                    (gd.richardson_lucy, {"num_iter": 3}), (gd.admm_tv, {"luminance": True,
                                                                                        "num_iter": 3})])
def test_restoration_passes_alpha_through(rgba, fn, kw):
    rgb, alpha, _ = rgba
    k = gd.psf.disc(2.0)
    _same(fn(np.dstack([rgb, alpha]), k, clip=True, **kw), fn(rgb, k, clip=True, **kw), alpha)


@pytest.mark.parametrize("crop", [True, False])
def test_blind_layer_passes_alpha_through(rgba, crop):
    """``blind_deblur_layer`` refused an RGBA image ("4 channels; supported: 1, 3") where the
    README says every deblurring function passes its alpha through; the kernel is the RGB one's."""
    from gpudeblur import blind

    rgb, alpha, rmap = rgba
    mask = (rmap > 0).astype(np.float32)
    kw = {"kernel_size": 9, "n_outer": 2, "n_admm": 3, "n_pga": 3, "n_final": 3, "crop_to_mask": crop}
    a, ka, _ = blind.blind_deblur_layer(np.dstack([rgb, alpha]), mask, **kw)
    b, kb, _ = blind.blind_deblur_layer(rgb, mask, **kw)
    _same(a, b, alpha)
    np.testing.assert_array_equal(ka, kb)
    ta = blind.init_kernel_tung(np.dstack([rgb, alpha]), mask, kernel_size=9, n_iter=3)
    tb = blind.init_kernel_tung(rgb, mask, kernel_size=9, n_iter=3)
    np.testing.assert_array_equal(ta[0], tb[0])


def test_clip_of_spatially_varying_checked_first(rgba):
    rgb, _, rmap = rgba
    for bad in ((1, 0), 1, (0, 1, 2)):
        with pytest.raises(ValueError, match="clip"):
            deconvolve_spatially_varying(rgb, rmap, clip=bad)


def test_unsigned_integer_images_are_read_on_their_full_scale(rgba):
    rgb, _, rmap = rgba
    dark = np.rint(rgb * 0.6 * 255).astype(np.uint8)  # brightest value 153: nothing is clipped
    as_float = dark.astype(np.float32) / np.float32(255)  # as the library (and read_image) scales it
    a, ra = AllInFocus(mode="sv-admm", num_iter=3).run(dark, radius_map=rmap)
    b, rb = AllInFocus(mode="sv-admm", num_iter=3).run(as_float, radius_map=rmap)
    assert ra.saturated == 0.0 == rb.saturated
    np.testing.assert_allclose(a, b, atol=1e-6)
    k = gd.psf.disc(2.0)
    np.testing.assert_allclose(gd.admm_tv(dark, k, num_iter=3), gd.admm_tv(as_float, k, num_iter=3), atol=1e-6)
    u16 = np.rint(rgb * 65535).astype(np.uint16)
    np.testing.assert_allclose(gd.wiener(u16, k), gd.wiener(u16.astype(np.float32) / np.float32(65535), k),
                               atol=1e-5)
    assert gd.admm_tv(dark, k, num_iter=3).dtype == np.float32


def test_segment_checks_its_map(rgba):
    from gpudeblur.blurmap.labeling import segment_in_focus

    rgb, _, rmap = rgba
    for bad, msg in ((np.full(rmap.shape, np.nan, np.float32), "NaN"), (rmap - 5, "negative"),
                     (rmap[:10], "shape")):
        with pytest.raises(ValueError, match=msg):
            segment_in_focus(bad, rgb)


def test_pipeline_options_checked_when_made(rgba):
    rgb, _, rmap = rgba
    cases = [({"progress": 3}, "progress must be a callable"),
             ({"backend": "gpu"}, "backend"),
             ({"estimator_options": {"backend": "cpu"}}, "AllInFocus\\(backend=...\\)"),
             ({"mode": "blind", "blind_options": {"bogus": 1}}, "unknown option.*'bogus'"),
             ({"psf_family": lambda r: np.ones(3)}, "2-D PSF"),
             ({"psf_family": lambda r: -np.ones((3, 3))}, "non-negative"),
             ({"psf_family": lambda r: 1 / 0}, "psf_family\\(0.0\\) failed: division by zero")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            AllInFocus(**kw)
    with pytest.raises(ValueError, match="map_estimated must be"):
        AllInFocus(mode="fast").run(rgb, radius_map=rmap, map_estimated="yes")
    with pytest.raises(ValueError, match="estimator_options"):
        AllInFocus(mode="fast").run(rgb[:20, :20])  # smaller than the 51 px window: says how to change it
    # a valid callable family still works
    AllInFocus(mode="fast", psf_family=gd.psf.gaussian).run(rgb, radius_map=rmap)


def test_dtype_errors_name_the_array(rgba):
    rgb, _, rmap = rgba
    with pytest.raises(TypeError, match="unsupported radius map dtype complex128"):
        AllInFocus(mode="fast").run(rgb, radius_map=rmap.astype(complex))


def test_second_review_findings(rgba):
    """The code review of these fixes: mixed-case backend names, any mapping as
    blind_options, a list mask on RGBA, (M, N, 3) masks on RGBA, the radius
    check's trials and compose_layers with RGBA / uint8, check_scale's input."""
    import types

    from gpudeblur.allinfocus import compose_layers, edge_cap
    from gpudeblur.blurmap import BlurMapEstimator
    from gpudeblur.spatially_varying import deconvolve_fast_scaled

    rgb, alpha, rmap = rgba
    x = np.dstack([rgb, alpha])
    AllInFocus(mode="fast", backend="CPU").run(rgb, radius_map=rmap)
    AllInFocus(mode="blind", blind_options=types.MappingProxyType({"n_outer": 1}))
    mask = np.zeros(x.shape, bool)
    mask[5, 5, :3] = True
    a = deconvolve_spatially_varying(x, rmap, num_iter=2, saturated=mask.tolist())
    np.testing.assert_array_equal(a[..., 3], alpha)
    np.testing.assert_array_equal(edge_cap(x, rmap, noise_sigma=1e-3, saturated=mask[..., :3]),
                                  edge_cap(x, rmap, noise_sigma=1e-3, saturated=mask))
    for (s1, f1), (s2, f2) in zip(deconvolve_fast_scaled(x, rmap, (0.5, 1.0)), deconvolve_fast_scaled(rgb, rmap, (0.5, 1.0))):
        assert s1 == s2
        _same(f1, f2, alpha)
    u8 = np.full(rgb.shape, 200, np.uint8)
    np.testing.assert_allclose(compose_layers([u8, u8], np.zeros(rmap.shape, np.int32)), 200 / 255, rtol=1e-6)
    est = BlurMapEstimator()
    for bad in (2.5, "bogus", None, 0, True):
        with pytest.raises(ValueError, match="scale must be"):
            est.check_scale((200, 200), bad)
    with pytest.raises(ValueError, match="smaller than the analysis window"):
        est.check_scale((30, 200), "auto")
    stages = []
    with pytest.raises(ValueError, match="smaller than the analysis window"):
        AllInFocus(mode="fast", progress=stages.append).run(rgb[:30])
    assert stages == []
