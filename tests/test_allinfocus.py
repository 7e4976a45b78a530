"""All-in-focus pipeline with a given blur map (the estimated-map path is
covered in tests/test_blurmap.py and bench/bench_allinfocus.py)."""

import json
import warnings

import numpy as np
import pytest

from gpudeblur.allinfocus import AllInFocus, compose_layers, split_layers
from gpudeblur.spatially_varying import blur_spatially_varying

from conftest import to_host


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _scene(img, sigma=1e-3, seed=0):
    M, N = img.shape[:2]
    rm = np.zeros((M, N))
    rm[:, N // 2 :] = 3.0
    y = blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
    y = y + sigma * np.random.default_rng(seed).standard_normal(y.shape)
    return rm, np.clip(y, 0, 1)


@pytest.mark.parametrize("mode", ["fast", "sv-admm"])
def test_modes_with_true_map_improve(backend, natural_rgb, mode):
    rm, y = _scene(natural_rgb)
    out, res = AllInFocus(mode=mode, backend=backend.name).run(backend.xp.asarray(y), radius_map=rm)
    assert type(out) is type(backend.xp.asarray(y))
    assert psnr(to_host(out), natural_rgb) > psnr(y, natural_rgb) + 1.5
    assert res.radius_map.shape == rm.shape and set(res.timings) == {"blur_map", "deblur"}
    assert res.report()["mode"] == mode


def test_no_blur_returns_input_essentially_unchanged(natural_rgb):
    out, _ = AllInFocus(mode="sv-admm").run(natural_rgb, radius_map=np.zeros(natural_rgb.shape[:2]))
    assert psnr(out, natural_rgb) > 38


def test_in_focus_weight():
    from gpudeblur.allinfocus import in_focus_weight

    r = np.tile(np.linspace(0.0, 4.0, 41), (5, 1))
    a = in_focus_weight(r, 1.5, 2.5, feather=0)
    np.testing.assert_allclose(a, np.clip((2.5 - r) / 1.0, 0, 1), atol=1e-6)  # float32
    assert (a[r <= 1.5] == 1).all() and (a[r >= 2.5] == 0).all()
    # feathered: a step in the map becomes a ramp over a few pixels, in [0, 1], constant far from it
    step = np.zeros((40, 40))
    step[:, 20:] = 5.0
    f = in_focus_weight(step, 1.5, 2.5)
    assert f.min() >= 0 and f.max() <= 1
    assert np.allclose(f[:, :10], 1, atol=1e-6) and np.allclose(f[:, 30:], 0, atol=1e-6) and 0.3 < f[0, 19] < 0.7
    for bad in [(2.5, 1.5), (-1, 2), (1, np.inf), (1,), "1,2", "15", True]:
        with pytest.raises(ValueError, match="keep_in_focus"):
            in_focus_weight(r, *bad) if isinstance(bad, tuple) and len(bad) == 2 else AllInFocus(keep_in_focus=bad)
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="feather"):
            in_focus_weight(r, 1.5, 2.5, feather=bad)


@pytest.mark.parametrize("mode", ["sv-admm", "fast"])
def test_sharp_photo_comes_back_unchanged(natural_rgb, mode):
    """A photo without blur through the main job (estimated map): the in-focus regions are the input.

    The estimator reads in-focus content as 0.5-1.5 px; deconvolving it with
    such a disc over-sharpens (35 dB against the input here without
    keep_in_focus, 48 dB with it; noise 1e-3, i.e. 60 dB).
    """
    from gpudeblur.allinfocus import KEEP_IN_FOCUS

    y = np.clip(natural_rgb + 1e-3 * np.random.default_rng(0).standard_normal(natural_rgb.shape), 0, 1)
    out, res = AllInFocus(mode=mode).run(y)
    m = res.radius_map
    assert res.keep_in_focus == KEEP_IN_FOCUS
    assert res.map_noise == AllInFocus().map_noise(y) and res.report()["map_noise"] == res.map_noise
    # far (> 3 feather widths) from any pixel above lo, the output is the input
    from scipy.ndimage import maximum_filter

    inner = maximum_filter(m, size=15) <= KEEP_IN_FOCUS[0]
    assert inner.mean() > 0.2
    np.testing.assert_allclose(out[inner], y[inner], atol=1e-5)
    assert psnr(out, y) > 42
    off, _ = AllInFocus(mode=mode, keep_in_focus=False).run(y, radius_map=m, map_estimated=True)
    assert psnr(off, y) < psnr(out, y) - 5  # what it protects against


def test_split_layers_cuts_between_blur_levels():
    # three levels with very unequal counts: a quantile split would cut inside the big one
    r = np.concatenate([np.zeros(100), np.full(50, 2.5), np.full(250, 5.0)]).reshape(20, 20)
    labels, radii = split_layers(r, n_layers=2)
    assert (labels[r == 0] == 0).all() and (labels[r == 2.5] == 1).all() and (labels[r == 5] == 2).all()
    assert radii == [0.0, 2.5, 5.0]
    auto, _ = split_layers(r)
    assert auto.max() == 2  # (5 - 1) / 2 -> 2 layers
    # a ramp: near-equal ranges and counts
    r = np.concatenate([np.zeros(100), np.linspace(2, 8, 300)]).reshape(20, 20)
    labels, radii = split_layers(r, n_layers=3, in_focus_radius=1.0)
    assert (labels[r < 1] == 0).all() and set(np.unique(labels)) == {0, 1, 2, 3}
    counts = [(labels == i).sum() for i in (1, 2, 3)]
    assert max(counts) - min(counts) <= 4
    assert radii[0] == 0 and radii[1] < radii[2] < radii[3]
    auto, _ = split_layers(r)
    assert auto.max() == 3  # (8 - 1) / 2 -> 3 layers (rounded), within [1, 4]
    flat, radii = split_layers(np.zeros((5, 5)))
    assert (flat == 0).all() and radii == [0.0]
    # more layers than distinct levels: the surplus layers stay empty
    two = np.where(np.arange(36).reshape(6, 6) < 18, 2.0, 4.0)
    labels, radii = split_layers(two, n_layers=3)
    assert set(np.unique(labels)) == {1, 2} and np.isnan(radii[3])
    # levels one histogram bin apart are still told apart, each pixel with its own bin
    close = np.where(np.arange(36).reshape(6, 6) < 18, 2.0, 2.05)
    labels, radii = split_layers(close, n_layers=2)
    assert (labels[close == 2.0] == 1).all() and (labels[close == 2.05] == 2).all() and radii[1:] == [2.0, 2.05]


def test_split_layers_default_count_follows_the_distinct_radii():
    """The default count (one layer per ~2 px from the in-focus radius) is capped at the map's distinct
    out-of-focus radii: a uniform 8 px map is one layer, not 3 empty ones beside it (the surplus layers of a
    larger *given* count stay empty, and the pipeline says so)."""
    for v in (3.0, 8.0, 20.0):
        labels, radii = split_layers(np.full((16, 16), v))
        assert radii == [0.0, v] and (labels == 1).all()
    two = np.where(np.arange(64).reshape(8, 8) < 16, 0.0, np.where(np.arange(64).reshape(8, 8) < 40, 2.0, 8.0))
    labels, radii = split_layers(two)  # (8 - 1) / 2 -> 4 by spread, 2 distinct levels
    assert radii == [0.0, 2.0, 8.0] and set(np.unique(labels)) == {0, 1, 2}
    ramp = np.linspace(0, 8, 400).reshape(20, 20)  # many levels: the spread rule as before, (r_99 - 1) / 2 -> 3
    assert len(split_layers(ramp)[1]) == 1 + 3
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"layers=3: the map has 2 distinct out-of-focus radii at most; 1 layer"):
        _, res = AllInFocus(mode="blind", layers=3, blind_options={"n_outer": 1}).run(
            img, radius_map=np.where(np.arange(32 * 32).reshape(32, 32) < 512, 2.0, 4.0))
    assert np.isnan(res.layer_radii[3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default count: no empty layer, nothing to say
        _, res = AllInFocus(mode="blind", blind_options={"n_outer": 1}).run(img, radius_map=np.full((32, 32), 8.0))
    assert res.layer_radii == [0.0, 8.0] and len(res.kernels) == 1


def test_settings_of_another_mode_or_of_the_estimate_are_not_silently_ignored():
    """What the CLI refuses, the API refuses at construction (a setting the mode never reads) or warns
    about at the run (a setting of the estimate, with a given map)."""
    for kw in ({"keep_in_focus": (1.0, 2.0)}, {"keep_in_focus": False}, {"map_uncertainty": (0.5, 3.0)}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} applies to modes 'sv-admm' and 'fast'"):
            AllInFocus(mode="blind", **kw)
    for mode in ("auto", "sv-admm", "fast"):
        with pytest.raises(ValueError, match="in_focus_radius applies to mode 'blind'"):
            AllInFocus(mode=mode, in_focus_radius=2.0)
    AllInFocus(mode="blind", in_focus_radius=2.0)
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    rm = np.full((32, 32), 2.0, np.float32)
    for kw, names in (({"map_scale": 2}, "map_scale sets"), ({"estimator_options": {"window": 31}}, "estimator_options sets"),
                      ({"compression_noise": 1e-4}, "compression_noise sets"),
                      ({"map_scale": 1, "compression_noise": 1e-4}, "map_scale, compression_noise set")):
        with pytest.warns(UserWarning, match=f"{names} up the map's estimate; not used with a given map"):
            AllInFocus(mode="fast", **kw).run(img, radius_map=rm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AllInFocus(mode="fast").run(img, radius_map=rm)


def test_histogram_breaks_are_optimal():
    """The DP's thresholds reach the least within-group SSE found by brute force."""
    import itertools

    from gpudeblur.allinfocus import _histogram_breaks

    rng = np.random.default_rng(3)
    for trial in range(20):
        nb = int(rng.integers(3, 13))
        counts = rng.integers(0, 30, nb).astype(float)
        counts[rng.integers(0, nb)] += 1  # at least one occupied bin
        x = np.arange(nb) * 0.05 + 1.0
        L = int(rng.integers(1, 5))

        def total(cuts):
            g = np.searchsorted(np.asarray(cuts, dtype=int), np.arange(nb), side="right")  # group of each bin
            return sum(((x[g == i] - np.average(x[g == i], weights=counts[g == i])) ** 2 * counts[g == i]).sum()
                       for i in np.unique(g[counts > 0]))

        occ = np.flatnonzero(counts > 0)
        best = min(total([occ[c] for c in cuts]) for cuts in itertools.combinations(range(1, len(occ)), min(L, len(occ)) - 1))
        cuts = _histogram_breaks(counts, x, L)
        assert len(cuts) == min(L, len(occ)) - 1 and all(counts[c] > 0 for c in cuts)
        assert total(cuts) <= best + 1e-9


def test_compose_layers_partition_and_seam():
    M, N = 40, 40
    labels = np.zeros((M, N), np.int32)
    labels[:, 20:] = 1
    a = np.full((M, N), 0.2, np.float32)
    b = np.full((M, N), 0.8, np.float32)
    out = compose_layers([a, b], labels, feather=2.0)
    np.testing.assert_allclose(out[:, :12], 0.2, atol=1e-6)
    np.testing.assert_allclose(out[:, 28:], 0.8, atol=1e-6)
    row = out[20]
    assert (np.diff(row) >= -1e-6).all() and 0.3 < row[19] < 0.7  # smooth ramp
    same = compose_layers([a, a], labels)
    np.testing.assert_allclose(same, a, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,needle",
    [({"mode": "magic"}, "mode"), ({"layers": 0}, "layers"), ({"in_focus_radius": -1}, "in_focus_radius")],
)
def test_bad_settings(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        AllInFocus(**kwargs)


def test_bad_map(natural_rgb):
    with pytest.raises(ValueError, match="does not match"):
        AllInFocus(mode="fast").run(natural_rgb, radius_map=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="negative"):
        AllInFocus(mode="fast").run(natural_rgb, radius_map=-np.ones(natural_rgb.shape[:2]))


def test_cli_allinfocus_with_map(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli
    from gpudeblur.io import read_image, write_image

    rm, y = _scene(natural_rgb)
    src = tmp_path / "in.png"
    write_image(src, y, bit_depth=16)
    np.save(tmp_path / "map.npy", rm.astype(np.float32))
    out = tmp_path / "out.png"
    rc = cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(tmp_path / "map.npy"), "--mode", "fast",
                   "--save-map", str(tmp_path / "m.png"), "--report", str(tmp_path / "r.json")])
    assert rc == 0
    img, meta = read_image(out)
    assert meta.bit_depth == 16 and img.shape == y.shape
    assert psnr(img, natural_rgb) > psnr(y, natural_rgb) + 1
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["mode"] == "fast" and rep["radius_map"]["max"] == 3.0
    assert (tmp_path / "m.png").exists()
    # bad inputs: exit 2, nothing written
    np.save(tmp_path / "bad.npy", np.zeros((5, 5), np.float32))
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "o2.png"), "--map", str(tmp_path / "bad.npy")]) == 2
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "o3.png"), "--layers", "2"]) == 2
    assert cli.main(["-q", "allinfocus", str(src), str(out)]) == 2  # exists without --overwrite
    assert not (tmp_path / "o2.png").exists() and not (tmp_path / "o3.png").exists()


def test_map_noise_measured_given_and_floored(natural_rgb):
    from gpudeblur.allinfocus import NOISE_FLOOR
    from gpudeblur.blurmap import estimator

    assert NOISE_FLOOR == estimator.NOISE_FLOOR  # a copy, kept so that allinfocus imports blurmap lazily
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96] / 95.0
    smooth = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy * xx, 0.6 - 0.3 * yy], axis=-1)
    noisy = np.clip(smooth + 0.01 * rng.standard_normal(smooth.shape), 0, 1)
    # the estimator analyses the luminance: independent channel noise of sigma 0.01
    # leaves sigma 0.01 * |(0.299, 0.587, 0.114)| = 0.00668 there (variance 4.46e-5)
    lum_var = 0.01**2 * (0.299**2 + 0.587**2 + 0.114**2)
    v = AllInFocus().map_noise(noisy)
    assert 0.8 * lum_var < v < 1.25 * lum_var, v
    # noise shared by the channels (a grey image stored as RGB) is all in the luminance
    grey = np.clip(smooth[..., :1] + 0.01 * rng.standard_normal(smooth.shape[:2] + (1,)), 0, 1)
    v = AllInFocus().map_noise(np.repeat(grey, 3, axis=2))
    assert 0.8 * 0.01**2 < v < 1.25 * 0.01**2, v
    assert AllInFocus(estimator_options={"noise": 3e-5}).map_noise(noisy) == 3e-5
    flat = np.full((64, 64), 0.5)
    assert AllInFocus().map_noise(flat) == NOISE_FLOOR


def test_estimated_map_uses_the_radius_check_tv_weight_and_uncertainty(natural_rgb):
    from gpudeblur.allinfocus import (ESTIMATED_MAP_LAM, KEEP_IN_FOCUS, MAP_UNCERTAINTY, UNCHECKED_MAP_LAM,
                                      edge_cap, in_focus_weight, radius_check, saturation_mask)
    from gpudeblur.spatially_varying import deconvolve_spatially_varying

    rm, y = _scene(natural_rgb)
    rs, ss = MAP_UNCERTAINTY
    given, res_given = AllInFocus(num_iter=5).run(y, radius_map=rm)
    # (spread_select: test_spread_select_blends_two_solves; here the single solve it splits)
    as_est, res_est = AllInFocus(num_iter=5, spread_select=False).run(y, radius_map=rm, map_estimated=True)
    sat = saturation_mask(y)  # sv-admm fits clipped values one-sided (a few here)
    assert sat.any()
    ref_given = deconvolve_spatially_varying(y, rm, num_iter=5, saturated=sat)
    capped = edge_cap(y, rm, saturated=sat)
    scale = radius_check(y, capped)
    np.testing.assert_array_equal(res_est.radius_scale, scale)
    np.testing.assert_array_equal(res_est.deblur_map, capped * scale)
    assert res_est.report()["edge_capped_fraction"] == float((capped < rm).mean())
    ref_est = deconvolve_spatially_varying(y, capped * scale, num_iter=5, lam=ESTIMATED_MAP_LAM, radius_sigma=rs,
                                           spatial_sigma=ss, saturated=sat)
    a = in_focus_weight(capped, *KEEP_IN_FOCUS)[..., None]  # an estimated map keeps the input where it says in focus
    np.testing.assert_allclose(given, ref_given, atol=1e-6)
    np.testing.assert_allclose(as_est, a * y + (1 - a) * ref_est, atol=1e-6)
    assert np.abs(given - as_est).max() > 1e-3
    assert res_given.map_uncertainty == (0.0, 0.0) and res_est.map_uncertainty == MAP_UNCERTAINTY
    assert res_given.keep_in_focus is None and res_est.keep_in_focus == KEEP_IN_FOCUS
    assert res_given.radius_scale is None and res_given.report()["radius_check"] is None
    assert res_given.edge_capped is None and res_given.report()["edge_capped_fraction"] is None
    assert res_est.report()["radius_check"]["min_scale"] == float(scale.min())
    assert {"radius_check", "edge_cap"} <= set(res_est.timings) and "radius_check" not in res_given.timings
    assert res_est.report()["map_uncertainty"] == list(MAP_UNCERTAINTY)
    assert res_est.report()["keep_in_focus"] == list(KEEP_IN_FOCUS)
    res_est.layer_radii = [0.0, 2.0, float("nan")]  # an empty layer reports null (strict JSON)
    assert res_est.report()["layer_radii"] == [0.0, 2.0, None]
    # a map read 2x too large: the check shrinks it, the deconvolution uses cap x scale, the
    # in-focus weight follows the capped map (before the check)
    over, res_over = AllInFocus(num_iter=5, spread_select=False).run(y, radius_map=2 * rm, map_estimated=True)
    capped2 = edge_cap(y, 2 * rm, saturated=sat)
    scale2 = radius_check(y, capped2)
    assert (res_over.radius_scale < 0.9).mean() > 0.2
    np.testing.assert_array_equal(res_over.radius_scale, scale2)
    np.testing.assert_array_equal(res_over.deblur_map, capped2 * scale2)
    a2 = in_focus_weight(capped2, *KEEP_IN_FOCUS)[..., None]
    ref2 = deconvolve_spatially_varying(y, capped2 * scale2, num_iter=5, lam=ESTIMATED_MAP_LAM, radius_sigma=rs,
                                        spatial_sigma=ss, saturated=sat)
    np.testing.assert_allclose(over, a2 * y + (1 - a2) * ref2, atol=1e-6)
    # without the check: the map as it is, with the ringing-robust weight
    unchecked, res_un = AllInFocus(num_iter=5, radius_check=False, edge_cap=False, keep_in_focus=False,
                                   spread_select=False).run(
        y, radius_map=rm, map_estimated=True)
    np.testing.assert_allclose(unchecked, deconvolve_spatially_varying(y, rm, num_iter=5, lam=UNCHECKED_MAP_LAM,
                                                                       radius_sigma=rs, spatial_sigma=ss, saturated=sat), atol=1e-6)
    assert res_un.radius_scale is None
    # an explicit setting applies to any map, also for the fast mode
    exact, _ = AllInFocus(num_iter=5, map_uncertainty=(0, 0), keep_in_focus=False, radius_check=False, edge_cap=False).run(
        y, radius_map=rm, map_estimated=True)
    np.testing.assert_allclose(exact, deconvolve_spatially_varying(y, rm, num_iter=5, lam=UNCHECKED_MAP_LAM,
                                                                   saturated=sat), atol=1e-6)
    fast, res_fast = AllInFocus(mode="fast", map_uncertainty=(0.3, 2)).run(y, radius_map=rm)
    np.testing.assert_allclose(fast, deconvolve_spatially_varying(y, rm, method="fast", radius_sigma=0.3, spatial_sigma=2), atol=1e-6)
    assert res_fast.map_uncertainty == (0.3, 2.0)
    with pytest.raises(ValueError, match="radius_check"):
        AllInFocus(radius_check="no")
    with pytest.raises(ValueError, match="edge_cap"):
        AllInFocus(edge_cap=1)


def _edge_cap_reference(img, rmap, sigma, slack, window=17, factor=8.0, step=0.5):
    """edge_cap by its definition, in float64: a pixel may keep radius ρ only
    if no edge within ceil(ρ) px (disc) is steeper than slack·C·L(ρ); the
    forbidden edges of each ρ are dilated by explicit shifts."""
    from scipy.ndimage import maximum_filter, minimum_filter

    from gpudeblur.psf import disc

    lum = img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 else np.asarray(img, np.float64)
    gy, gx = np.gradient(lum)
    g = np.hypot(gx, gy)
    c = maximum_filter(lum, window, mode="nearest") - minimum_filter(lum, window, mode="nearest")
    edge = g > factor * sigma
    M, N = lum.shape
    cap = np.full(lum.shape, np.inf)
    ok = np.ones(lum.shape, bool)
    prev, lsf = 0.0, np.inf
    for j in range(1, int(np.ceil(rmap.max() / step)) + 1):
        rho = step * j
        k = disc(rho) / disc(rho).sum()
        lsf = min(lsf, max(k.sum(0).max(), k.sum(1).max()))
        bad = edge & (g > slack * c * lsf)
        kk = int(np.ceil(rho - 1e-9))
        pad = np.pad(bad, kk, mode="edge")
        near = np.zeros_like(bad)
        for dy in range(-kk, kk + 1):
            for dx in range(-kk, kk + 1):
                if dy * dy + dx * dx <= kk * kk:
                    near |= pad[kk + dy:kk + dy + M, kk + dx:kk + dx + N]
        fails = ok & near
        cap[fails] = prev
        ok &= ~fails
        prev = rho
    return np.minimum(rmap, cap)


@pytest.mark.parametrize("slack", [1.0, 1.5])
def test_edge_cap_matches_its_definition(backend, natural_rgb, slack):
    from gpudeblur.allinfocus import edge_cap

    rng = np.random.default_rng(3)
    img = natural_rgb[:48, :56]
    rmap = rng.uniform(0, 6, img.shape[:2])
    got = to_host(edge_cap(backend.xp.asarray(img), backend.xp.asarray(rmap), slack=slack, noise_sigma=1e-3,
                           backend=backend.name))
    ref = _edge_cap_reference(img, rmap, 1e-3, slack)
    assert got.dtype == np.float32 and (got <= rmap.astype(np.float32)).all()
    assert 0.05 < (ref < rmap).mean() < 0.95  # the cap binds somewhere, not everywhere
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("shape, reach, strip_bytes, finite", [
    ((40, 50), 6, None, 0.5), ((40, 50), 6, 2000, 0.5), ((5, 70), 9, 3000, 0.5), ((70, 3), 9, 100, 0.5),
    ((1, 1), 3, None, 0.5), ((33, 33), 40, 5000, 0.5), ((60, 40), 7, 2000, 0.02)])
def test_disc_minima_equal_the_footprint_filter(backend, shape, reach, strip_bytes, finite):
    """The chord decomposition against SciPy's footprint filter, bit for bit:
    strips of 16 rows and more, arrays smaller than the disc, inf values
    (sparse ones too: there the disc's tips are often the only finite value)."""
    import scipy.ndimage as ndi

    from gpudeblur.allinfocus import _disc_minima

    rng = np.random.default_rng(5)
    a = rng.random(shape).astype(np.float32)
    a[rng.random(shape) >= finite] = np.inf
    got, strips = {}, []
    for rows, minima in _disc_minima(backend.xp.asarray(a), reach, backend.xp, strip_bytes):
        strips.append(rows)
        for k, low in minima:
            got.setdefault(k, []).append(to_host(low))
    assert strips[0].start == 0 and strips[-1].stop == shape[0]
    assert all(s.stop == t.start for s, t in zip(strips, strips[1:]))
    assert (len(strips) > 1) == (strip_bytes is not None and shape[0] > 16)
    assert sorted(got) == list(range(1, reach + 1))
    for k in range(1, reach + 1):
        yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
        ref = ndi.minimum_filter(a, footprint=yy * yy + xx * xx <= k * k, mode="nearest")
        np.testing.assert_array_equal(np.concatenate(got[k]), ref)


@pytest.mark.parametrize("rows, cols", [((0, 40), (0, 50)), ((3, 20), (7, 9)), ((30, 40), (40, 50)), ((0, 1), (49, 50)),
                                        ((17, 35), (0, 50))])
def test_disc_minima_of_a_part_equal_the_whole_arrays(backend, rows, cols):
    """``rows``/``cols``: the part's minima, its discs reading the array around it (edge
    values repeated only outside the array), bit for bit, in strips of its own rows."""
    from gpudeblur.allinfocus import _disc_minima

    rng = np.random.default_rng(7)
    a = rng.random((40, 50)).astype(np.float32)
    a[rng.random(a.shape) >= 0.05] = np.inf
    xp = backend.xp
    whole = {}
    for r, minima in _disc_minima(xp.asarray(a), 9, xp):
        for k, low in minima:
            whole.setdefault(k, []).append(to_host(low))
    part, strips = {}, []
    for r, minima in _disc_minima(xp.asarray(a), 9, xp, 3000, slice(*rows), slice(*cols)):
        strips.append(r)
        for k, low in minima:
            part.setdefault(k, []).append(to_host(low))
    assert strips[0].start == rows[0] and strips[-1].stop == rows[1]
    assert all(s.stop == t.start for s, t in zip(strips, strips[1:]))
    height = max(16, 3000 // (10 * (cols[1] - cols[0]) * 4) - 2 * 9)  # the strips follow the part's width
    assert len(strips) == -(-(rows[1] - rows[0]) // height)
    for k in range(1, 10):
        np.testing.assert_array_equal(np.concatenate(part[k]), np.concatenate(whole[k])[slice(*rows), slice(*cols)])


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (40, 33), (3, 120)])
@pytest.mark.parametrize("size", [1, 3, 17, 51, 129])
def test_box_extreme_equals_scipy_filters(backend, shape, size):
    """The array-code square max/min filter against SciPy's, bit for bit: windows
    larger than the array, ties, both dtypes, a uint8 mask."""
    import scipy.ndimage as ndi

    from gpudeblur.allinfocus import _box_extreme

    rng = np.random.default_rng(size)
    for a in (rng.standard_normal(shape).astype(np.float32), rng.random(shape),
              (rng.random(shape) < 0.1).astype(np.uint8)):
        a[rng.random(shape) < 0.2] = a.flat[0]  # ties
        for maximum, ref in ((True, ndi.maximum_filter), (False, ndi.minimum_filter)):
            got = to_host(_box_extreme(backend.xp.asarray(a), size, backend.xp, maximum))
            assert got.dtype == a.dtype
            np.testing.assert_array_equal(got, ref(a, size=size, mode="nearest"))
    with pytest.raises(ValueError, match="positive odd"):
        _box_extreme(backend.xp.zeros((3, 3)), 4, backend.xp, True)


def test_edge_cap_in_strips_matches_its_definition(natural_rgb, monkeypatch):
    """A map with reaches to 12 px cut into strips of 16 rows gives the cap of the definition."""
    import gpudeblur.allinfocus as aif
    from gpudeblur.psf import disc

    rng = np.random.default_rng(4)
    img = natural_rgb[:60, :64]
    rmap = rng.uniform(0, 12, img.shape[:2])
    monkeypatch.setattr(aif, "DISC_MIN_STRIP_BYTES", 4096)
    got = aif.edge_cap(img, rmap, noise_sigma=1e-3)
    window = max(disc(np.ceil(rmap.max() / 0.5) * 0.5).shape) // 2 * 2 + 1  # the widest PSF's side
    ref = _edge_cap_reference(img, rmap, 1e-3, 1.5, window=window)
    assert 0.05 < (ref < rmap).mean() < 0.95
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_edge_cap_in_tiles_matches_its_definition(backend, natural_rgb, monkeypatch):
    """Tiles of 16 px, each with the grid radii of its own largest radius, skipped where no
    edge in reach forbids one of them, neighbours of one reach computed as one run whose discs
    read the map around it: the cap of the definition, and the same bits as the whole image as
    one tile. The scene has tiles of small radii beside large ones (an edge across the tile
    border lowers radii in it), and a flat quarter with no edges (skipped)."""
    import gpudeblur.allinfocus as aif
    from gpudeblur.psf import disc

    rng = np.random.default_rng(6)
    img = natural_rgb[:72, :88].copy()
    img[40:, 48:] = img[40:, 48:].mean(axis=(0, 1))  # flat: no edge there
    rmap = rng.uniform(0, 1.5, img.shape[:2])
    rmap[:, 40:] = rng.uniform(2, 10, (72, 48))
    rmap[20:36, :12] = 9.0  # its tiles' run is cut off from the large radii's by tiles that need no work
    calls = []
    real = aif._edge_cap_of

    def spy(bound, radii, reaches, xp, rows=None, cols=None, strip_bytes=None):
        out = real(bound, radii, reaches, xp, rows, cols, strip_bytes)
        calls.append((out.shape, len(radii)))
        return out

    monkeypatch.setattr(aif, "_edge_cap_of", spy)
    xp = backend.xp
    monkeypatch.setattr(aif, "EDGE_CAP_TILE", {})  # the whole image as one tile
    whole = to_host(aif.edge_cap(xp.asarray(img), xp.asarray(rmap), noise_sigma=1e-3, backend=backend.name))
    assert len(calls) == 1 and calls[0][0] == rmap.shape
    calls.clear()
    monkeypatch.setattr(aif, "EDGE_CAP_TILE", {"cpu": 16, "cuda": 16})
    monkeypatch.setattr(aif, "DISC_PASS_CALL_COST", 0)  # on an image this small the whole one costs less
    got = to_host(aif.edge_cap(xp.asarray(img), xp.asarray(rmap), noise_sigma=1e-3, backend=backend.name))
    ref = _edge_cap_reference(img, rmap, 1e-3, 1.5, window=max(disc(10.0).shape) // 2 * 2 + 1)
    assert 0.05 < (ref < rmap).mean() < 0.95
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_array_equal(got, whole)
    tiles = 5 * 6
    assert 0 < len(calls) < tiles  # some tiles skipped
    assert {n for _, n in calls} == {18, 20}  # each run its own grid radii (to 9 px: 18; to 10 px: 20)
    assert all(shape[0] <= 16 for shape, _ in calls) and any(shape[1] > 16 for shape, _ in calls)  # runs of tiles


@pytest.mark.parametrize("tile, budget, call_cost", [(1, None, 0), (5, None, 0), (7, None, 0), (16, None, 0),
                                                    (5, 40000, 0), (7, 8000, 0), (7, None, None)])
def test_edge_cap_tiles_equal_one_tile_on_sparse_bounds(backend, tile, budget, call_cost, monkeypatch):
    """The tiling itself on sparse bounds, where the disc's tip is often the only low value
    in reach (a tile's discs cut one row short of the map around it, or a skip test blind
    to it, shows): the same bits as one tile, on maps of small and large radii side by
    side and of zero radii (no work); runs of tiles cut by a small memory budget too, each
    run one strip of the disc pass. ``call_cost`` 0: the tiles even where the whole map in
    one pass would cost less (as here at the default, where that is what runs)."""
    import gpudeblur.allinfocus as aif
    from gpudeblur.allinfocus import _capped_in_tiles, _edge_cap_of

    if budget is not None:
        monkeypatch.setattr(aif, "DISC_MIN_STRIP_BYTES", budget)
    if call_cost is not None:
        monkeypatch.setattr(aif, "DISC_PASS_CALL_COST", call_cost)
    strips = []
    real = aif._disc_minima

    def spy(a, reach, xp, strip_bytes=None, rows=None, cols=None):
        parts = list(real(a, reach, xp, strip_bytes, rows, cols))
        run = cols is not None and cols.stop - cols.start < a.shape[1]
        rows, cols = rows or slice(0, a.shape[0]), cols or slice(0, a.shape[1])
        strips.append(((rows.start, rows.stop), len(parts)))
        h, w = rows.stop - rows.start, cols.stop - cols.start
        # a run of several tiles keeps its running minima within the budget
        assert not run or w <= tile or (reach + 1) * (h + 2 * reach) * w * 4 <= aif.DISC_MIN_STRIP_BYTES
        return iter(parts)

    monkeypatch.setattr(aif, "_disc_minima", spy)
    rng = np.random.default_rng(tile)
    xp = backend.xp
    for _ in range(4):
        M, N = rng.integers(20, 40, 2)
        bound = np.full((M, N), np.inf, np.float32)
        hit = rng.random((M, N)) < 0.01
        bound[hit] = rng.uniform(0, 4, hit.sum()).round(1)
        r = rng.uniform(0, 1, (M, N)).astype(np.float32)
        r[:, N // 2:] = rng.uniform(3, 7, (M, N - N // 2))
        r[::2, N // 2::2] = 7  # tiles of one reach there: runs
        r[: M // 3, : N // 3] = 0  # tiles with nothing to lower
        bound[0, 0] = 0  # ... with a low bound in reach
        step = 0.5
        radii = step * np.arange(1, int(np.ceil(r.max() / step)) + 1)
        reaches = np.ceil(radii - 1e-9).astype(int)
        one = np.minimum(r, to_host(_edge_cap_of(xp.asarray(bound), radii, reaches, xp)))  # the whole map's cap
        strips.clear()
        got = to_host(_capped_in_tiles(xp.asarray(bound), xp.asarray(r), radii, reaches, tile, xp))
        assert (one < r).any()
        np.testing.assert_array_equal(got, one)
        if call_cost is None:  # the default on a map this small: the whole map in one pass
            assert [s for s, _ in strips] == [(0, M)]
        else:
            assert len(strips) > 1 and all(s[1] - s[0] <= tile for s, _ in strips)
            assert all(n == 1 for _, n in strips)  # a run is one strip of the disc pass


def test_edge_cap_strip_budget_per_backend(backend, natural_rgb, monkeypatch):
    """The disc pass's strips: the CPU's budget without device memory; on a GPU a quarter
    of what is available, between the CPU's and DISC_MIN_STRIP_BYTES_GPU; the budget
    reaches the disc pass, and any budget gives the same cap."""
    import gpudeblur.allinfocus as aif

    class Stub:
        def __init__(self, avail):
            self.avail = avail

        def available_memory(self):
            return self.avail

    lo, hi = aif.DISC_MIN_STRIP_BYTES, aif.DISC_MIN_STRIP_BYTES_GPU
    assert [aif._disc_strip_bytes(Stub(a)) for a in (None, 0, 4 * lo, 8 * lo, 4 * hi, 64 * hi)] == [
        lo, lo, lo, 2 * lo, hi, hi]
    rng = np.random.default_rng(4)
    img = backend.xp.asarray(natural_rgb[:40, :48])
    rmap = backend.xp.asarray(rng.uniform(0, 6, (40, 48)))
    seen = []
    real = aif._disc_minima

    def spy(a, reach, xp, strip_bytes=None, rows=None, cols=None):
        seen.append(strip_bytes)
        return real(a, reach, xp, strip_bytes, rows, cols)

    monkeypatch.setattr(aif, "_disc_minima", spy)
    outs = []
    for budget in (1000, 1 << 40):
        monkeypatch.setattr(aif, "_disc_strip_bytes", lambda be, b=budget: b)
        outs.append(to_host(aif.edge_cap(img, rmap, noise_sigma=1e-3, backend=backend.name)))
        assert seen and set(seen) == {budget}
        seen.clear()
    assert (outs[0] < to_host(rmap)).any()
    np.testing.assert_array_equal(outs[0], outs[1])


def test_edge_cap_runs_join_tiles_of_one_reach(monkeypatch):
    """A run takes the largest reach of its tiles, so tiles join it only where that costs
    less than apart: a band of large radii beside small ones (all tiles need work) is two
    runs, not one at the large reach; with the per-call cost, a narrow map is one pass."""
    import gpudeblur.allinfocus as aif

    calls = []
    real = aif._edge_cap_of

    def spy(bound, radii, reaches, xp, rows=None, cols=None, strip_bytes=None):
        calls.append(((cols.start, cols.stop) if cols is not None else None, len(radii)))
        return real(bound, radii, reaches, xp, rows, cols, strip_bytes)

    monkeypatch.setattr(aif, "_edge_cap_of", spy)
    r = np.full((8, 64), 1.0, np.float32)
    r[:, :8] = 9.0
    bound = np.full(r.shape, 0.1, np.float32)
    radii = 0.5 * np.arange(1, 19)
    reaches = np.ceil(radii - 1e-9).astype(int)
    monkeypatch.setattr(aif, "DISC_PASS_CALL_COST", 0)
    out = aif._capped_in_tiles(bound, r, radii, reaches, 8, np)
    assert calls == [((0, 8), 18), ((8, 64), 2)]
    np.testing.assert_array_equal(out, np.minimum(r, real(bound, radii, reaches, np)))
    monkeypatch.undo()
    monkeypatch.setattr(aif, "_edge_cap_of", spy)
    calls.clear()
    narrow = np.full((400, 3), 5.0, np.float32)
    aif._capped_in_tiles(np.zeros_like(narrow), narrow, radii[:10], reaches[:10], 8, np)
    assert calls == [(None, 10)] or calls == [((0, 3), 10)]  # not 50 runs of one tile


def test_edge_cap_leaves_flat_8bit_banding_and_wide_true_blurs_alone():
    """Two ways a fixed bound went wrong (review): a flat 8-bit ramp measures
    σ̂ = 0, and its one-level steps looked like edges (25–74 % capped);
    a step blurred by a true 12–16 px disc was capped while the contrast
    window (17 px) was narrower than the blur."""
    from gpudeblur.allinfocus import edge_cap
    from gpudeblur.psf import disc

    ramp = np.round((0.5 + np.linspace(0, 7.6, 192)[None, :] / 255) * 255) / 255 * np.ones((192, 1))
    assert (edge_cap(ramp, np.full(ramp.shape, 6.0)) == 6.0).all()
    from scipy.ndimage import convolve

    for radius in (12.0, 16.0):
        step = np.zeros((96, 160))
        step[:, 80:] = 1
        y = convolve(step, disc(radius), mode="nearest") + 1e-3 * np.random.default_rng(5).standard_normal(step.shape)
        assert (edge_cap(y, np.full(step.shape, radius)) == radius).all()
    # nothing to cap, even where the noise cannot be measured (2 rows)
    tiny = np.random.default_rng(0).random((2, 40, 3))
    np.testing.assert_array_equal(edge_cap(tiny, np.zeros((2, 40))), 0)


def test_radius_check_judges_only_windows_with_gradients(natural_rgb):
    from gpudeblur.allinfocus import radius_check

    flat = np.full((64, 64), 0.5)
    np.testing.assert_array_equal(radius_check(flat, np.full(flat.shape, 4.0)), 1)
    noise = 0.5 + 1e-3 * np.random.default_rng(1).standard_normal((64, 64))
    np.testing.assert_array_equal(radius_check(noise, np.full(noise.shape, 4.0)), 1)


def test_edge_cap_lowers_a_sharp_photo_read_as_blurred_not_a_blurred_one(natural_rgb):
    """A sharp photo whose map reads 5 px everywhere gets capped near its
    edges; the same photo blurred by a 3 px disc keeps its true map."""
    from gpudeblur.allinfocus import edge_cap

    rm, y = _scene(natural_rgb)  # left half sharp, right half a 3 px disc
    wrong = np.full(rm.shape, 5.0)
    capped = edge_cap(y, wrong)
    assert (capped[:, :48] < 5).mean() > 0.5  # the sharp half cannot be 5 px
    kept = edge_cap(y, rm)
    assert (kept[:, 72:] == 3.0).mean() > 0.9  # a real 3 px blur allows 3 px
    with pytest.raises(ValueError, match="window"):
        edge_cap(y, rm, window=16)
    with pytest.raises(ValueError, match="window"):
        edge_cap(y, rm, window=1)
    with pytest.raises(ValueError, match="slack"):
        edge_cap(y, rm, slack=0)


def test_radius_check_keeps_a_right_map_and_shrinks_an_overestimated_one(backend, natural_rgb):
    """Half the image blurred by a 3 px disc. With the true map the check
    leaves the radii alone; with a map reading 2x too large (what CUHK 0223's
    walkers look like) it halves them, and the deconvolution on the checked
    map beats the one on the wrong map by far (measured: 1.0 on the blurred
    half with the true map, 0.50 median with the doubled one; PSNR input
    28.7 dB, doubled map 17.4, checked doubled map 31.9, true map 31.9)."""
    from gpudeblur.allinfocus import ESTIMATED_MAP_LAM, radius_check
    from gpudeblur.spatially_varying import deconvolve_spatially_varying

    rm, y = _scene(natural_rgb)
    yb = backend.xp.asarray(y)
    right = to_host(radius_check(yb, backend.xp.asarray(rm), backend=backend.name))
    assert right.dtype == np.float32 and right.shape == rm.shape
    assert right[:, 64:].min() > 0.95
    over = radius_check(y, 2 * rm)
    assert np.median(over[:, 64:]) < 0.6 and over.max() <= 1 and over.min() >= 0.5
    kw = dict(num_iter=10, lam=ESTIMATED_MAP_LAM, radius_sigma=0.5, spatial_sigma=3)
    wrong = deconvolve_spatially_varying(y, 2 * rm, **kw)
    checked = deconvolve_spatially_varying(y, 2 * rm * over, **kw)
    assert psnr(checked, natural_rgb) > psnr(wrong, natural_rgb) + 10
    assert psnr(checked, natural_rgb) > psnr(y, natural_rgb) + 2.5
    np.testing.assert_array_equal(over, radius_check(y, 2 * rm))  # deterministic


def test_radius_check_at_a_coarser_scale_checks_the_block_means(backend, natural_rgb):
    """``analysis_scale=f`` on a photo of f × f copies of each pixel, with the map in
    its pixels, gives the check of the original photo with the keep-in-focus range,
    spread, radii and windows divided by f, linearly upsampled (the block means
    recover the photo exactly); it still halves a map read twice too large."""
    from gpudeblur._resample import upsample_linear
    from gpudeblur.allinfocus import (KEEP_IN_FOCUS, MAP_UNCERTAINTY, RADIUS_CHECK_SMOOTH, RADIUS_CHECK_WINDOW,
                                      radius_check)

    rm, y = _scene(natural_rgb)
    y = y.astype(np.float32)
    f = 2
    big = np.kron(y, np.ones((f, f, 1), np.float32))
    rbig = np.kron(2 * rm, np.ones((f, f))) * f
    small_kw = dict(keep_in_focus=tuple(v / f for v in KEEP_IN_FOCUS), map_uncertainty=tuple(v / f for v in MAP_UNCERTAINTY),
                    window=tuple(v / f for v in RADIUS_CHECK_WINDOW), smooth=RADIUS_CHECK_SMOOTH / f)

    def expected(**kw):  # on the same backend (its FFTs round differently)
        small = to_host(radius_check(backend.xp.asarray(y), backend.xp.asarray(2 * rm), **dict(small_kw, **kw),
                                     backend=backend.name))
        return upsample_linear(small, f, big.shape[:2], np)

    xp = backend.xp
    coarse = to_host(radius_check(xp.asarray(big), xp.asarray(rbig), analysis_scale=f, backend=backend.name))
    np.testing.assert_allclose(coarse, expected(), atol=1e-6)
    assert coarse.dtype == np.float32 and coarse.shape == rbig.shape
    assert np.median(coarse[:, 2 * 64:]) < 0.6  # the blurred half's radii halved
    # a given noise level is the block means' own; a block is clipped where any of its pixels is
    np.testing.assert_array_equal(to_host(radius_check(big, rbig, analysis_scale=f, noise_sigma=0.05, backend=backend.name)),
                                  expected(noise_sigma=0.05))
    sat = np.zeros(big.shape[:2], bool)
    sat[61, 201] = True  # in the blurred half, where it changes the result
    sat_small = np.zeros(y.shape[:2], bool)
    sat_small[30, 100] = True
    masked = to_host(radius_check(big, rbig, analysis_scale=f, saturated=sat, backend=backend.name))
    np.testing.assert_array_equal(masked, expected(saturated=sat_small))
    assert not np.array_equal(masked, coarse.astype(masked.dtype))
    # the keep-in-focus range is in full-size pixels too
    kept = to_host(radius_check(big, rbig, analysis_scale=f, keep_in_focus=(10, 14), backend=backend.name))
    np.testing.assert_array_equal(kept, expected(keep_in_focus=(5, 7)))
    assert not np.array_equal(kept, coarse.astype(kept.dtype))


def test_radius_check_windows_each_judge_and_the_smallest_wins(backend, natural_rgb):
    """With several windows the check is each window's own check (smoothed), the smallest kept:
    the same bits as the single-window calls' minimum."""
    from gpudeblur.allinfocus import RADIUS_CHECK_WINDOW, radius_check

    assert len(RADIUS_CHECK_WINDOW) > 1
    rm, y = _scene(natural_rgb)
    wrong = 2 * rm
    wrong[:40, :40] = 4.0  # a small sharp corner read as blurred
    xp = backend.xp
    yb, mb = xp.asarray(y), xp.asarray(wrong)
    each = [to_host(radius_check(yb, mb, window=v, backend=backend.name)) for v in RADIUS_CHECK_WINDOW]
    multi = to_host(radius_check(yb, mb, backend=backend.name))
    np.testing.assert_array_equal(multi, np.minimum.reduce(each))
    assert not all(np.array_equal(multi, e) for e in each)  # the windows disagree on this scene
    np.testing.assert_array_equal(to_host(radius_check(yb, mb, window=RADIUS_CHECK_WINDOW[0], backend=backend.name)),
                                  each[0])


def test_radius_check_sees_a_small_region_read_as_blurred_in_a_sharp_photo():
    """A sharp photo (scikit-image's chelsea, 256², σ = 1e-3) whose map reads its smooth iris and
    its own out-of-focus corner as 3–6 px: one 40 px window judges the iris together with its
    surroundings and keeps its radius, and ``fast`` rings there in concentric bands; the smaller
    windows see it (measured: 36.1 dB against 32.4 with the 40 px window alone; input 60)."""
    import functools

    import gpudeblur.allinfocus as aif
    from skimage import data
    import cv2

    img = cv2.resize(data.chelsea()[:300, :300], (256, 256), interpolation=cv2.INTER_AREA) / 255.0
    y = np.clip(img + 1e-3 * np.random.default_rng(2).standard_normal(img.shape), 0, 1)
    out, res = AllInFocus(mode="fast").run(y)
    assert (res.radius_map > 3).mean() > 0.05  # the map does read parts of it as blurred
    one = functools.partial(aif.radius_check, window=40.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aif, "radius_check", one)
        out40, res40 = AllInFocus(mode="fast").run(y, radius_map=res.radius_map, map_estimated=True)
    assert (res40.radius_scale < 0.95).mean() < 0.01 and (res.radius_scale < 0.95).mean() > 0.05
    assert psnr(out, img) > psnr(out40, img) + 2.0


@pytest.mark.parametrize("kw, match", [({"analysis_scale": 0}, "analysis_scale"), ({"analysis_scale": 1.5}, "analysis_scale"),
                                       ({"analysis_scale": True}, "analysis_scale"),
                                       ({"analysis_scale": 2, "psf_family": lambda r: np.ones((1, 1))}, "disc"),
                                       ({"analysis_scale": 17}, "at analysis_scale 17 is 2x2, smaller than 3x3"),
                                       ({"analysis_scale": 32}, "at analysis_scale 32 is 1x1, smaller than 3x3")])
def test_radius_check_bad_analysis_scale(kw, match):
    from gpudeblur.allinfocus import radius_check

    with pytest.raises(ValueError, match=match):
        radius_check(np.zeros((32, 32)), np.ones((32, 32)), **kw)


@pytest.mark.parametrize("shape, f, r", [((3, 3), 1, 2.0), ((2, 64), 1, 0.0), ((9, 9), 3, 6.0), ((33, 47), 4, 8.0),
                                         ((5, 200), 2, 4.0)])
def test_radius_check_on_tiny_grids(shape, f, r):
    """Small grids (3 px a side at the analysis scale; 2 px at full size with radii that fit):
    a result of the map's shape within [0.5, 1], not an error from inside (the pooling's cap
    went negative on a 2 px grid)."""
    from gpudeblur.allinfocus import radius_check

    rng = np.random.default_rng(0)
    out = radius_check(rng.random(shape + (3,)), np.full(shape, r), analysis_scale=f)
    assert out.shape == shape and out.dtype == np.float32 and (out >= 0.5).all() and (out <= 1).all()


def test_pipeline_checks_radii_at_the_map_scale(monkeypatch, natural_rgb):
    """A map read at scale 2 is checked at scale 2, with the noise measured there; a map
    read at full resolution (or given) at full resolution with the pipeline's noise."""
    import gpudeblur.allinfocus as aif

    calls = []
    real = aif.radius_check

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(aif, "radius_check", spy)
    _, y = _scene(natural_rgb)
    _, res = AllInFocus(mode="fast", map_scale=2).run(y)
    assert res.map_scale == 2 and calls[0]["analysis_scale"] == 2 and calls[0]["noise_sigma"] is None
    calls.clear()
    _, res = AllInFocus(mode="fast", map_scale=1).run(y)
    assert res.map_scale == 1 and calls[0]["analysis_scale"] == 1 and calls[0]["noise_sigma"] > 0


@pytest.mark.parametrize("kw, match", [({"scales": (0.5, 0.8)}, "scales"), ({"scales": (0.8, 0.5, 1.0)}, "scales"),
                                       ({"scales": (0.0, 1.0)}, "scales"), ({"margin": 1.0}, "margin"),
                                       ({"window": 0}, "window"), ({"window": ()}, "window"),
                                       ({"window": (40, -1)}, "window"), ({"window": (40, np.nan)}, "window"),
                                       ({"keep_in_focus": (2, 1)}, "keep_in_focus")])
def test_radius_check_bad_arguments(kw, match):
    from gpudeblur.allinfocus import radius_check

    with pytest.raises(ValueError, match=match):
        radius_check(np.zeros((32, 32)), np.ones((32, 32)), **kw)
    with pytest.raises(ValueError, match="shape"):
        radius_check(np.zeros((32, 32)), np.ones((16, 32)))


@pytest.mark.parametrize("shape, sigma", [((40, 70), 3.0), ((40, 70), 40.0), ((9, 200), 8.0)])
def test_window_sum_is_a_zero_padded_gaussian_sum(shape, sigma):
    from scipy.ndimage import convolve

    from gpudeblur._backend import get_backend
    from gpudeblur.allinfocus import _window_sum
    from gpudeblur.psf import gaussian

    a = np.random.default_rng(1).random(shape)
    k = gaussian(sigma).astype(np.float64)
    cut = [min(n, (m - 1) // 2 * 2 + 1) for n, m in zip(k.shape, shape)]  # the Gaussian, cut to the image
    c = [(n - m) // 2 for n, m in zip(k.shape, cut)]
    k = k[c[0]:c[0] + cut[0], c[1]:c[1] + cut[1]]
    ref = convolve(a, k / k.sum(), mode="constant")
    np.testing.assert_allclose(_window_sum(a, sigma, get_backend("cpu")), ref, atol=1e-12)


@pytest.mark.parametrize("bad", [(0.5,), (0.5, -1), "0.5,3", (np.nan, 1), (4.5, 3), None])
def test_bad_map_uncertainty(bad):
    if bad is None:
        AllInFocus(map_uncertainty=None)  # the default: fine
        return
    with pytest.raises(ValueError, match="map_uncertainty"):
        AllInFocus(map_uncertainty=bad)


def test_estimator_gets_the_pipeline_window_and_prior(monkeypatch):
    """estimate_map builds the estimator with MAP_WINDOW and RADIUS_PRIOR unless the caller overrides them."""
    import gpudeblur.blurmap as bm
    from gpudeblur.allinfocus import MAP_WINDOW, RADIUS_PRIOR

    made, scales = [], []

    class Recorder:
        def __init__(self, **kw):
            made.append(kw)
            self.noise = kw["noise"]

        def estimate(self, image, scale=1):
            scales.append(scale)
            return np.zeros(image.shape[:2], np.float32)

    monkeypatch.setattr(bm, "BlurMapEstimator", Recorder)
    img = np.full((32, 32, 3), 0.5)
    AllInFocus(estimator_options={"noise": 1e-5}).estimate_map(img)
    assert made[-1]["window"] == MAP_WINDOW == 51
    assert made[-1]["labeling_kwargs"] == {"radius_prior": RADIUS_PRIOR}
    AllInFocus(estimator_options={"noise": 1e-5, "window": 41, "labeling_kwargs": {"radius_prior": 0.0}}).estimate_map(img)
    assert made[-1]["window"] == 41 and made[-1]["labeling_kwargs"] == {"radius_prior": 0.0}
    assert made[-1]["psf_family"] == "disc"
    AllInFocus(psf_family="gaussian", estimator_options={"noise": 1e-5}).estimate_map(img)
    assert made[-1]["psf_family"] == "gaussian"  # the estimate uses the pipeline's family
    # by default the estimator measures each image's noise itself, so one estimator serves every image
    pipe = AllInFocus()
    pipe.estimate_map(img)
    n = len(made)
    pipe.estimate_map(np.clip(img + 0.01 * np.random.default_rng(0).standard_normal(img.shape), 0, 1))
    assert len(made) == n and made[-1]["noise"] == "auto" and made[-1]["noise_floor"] == 1e-6
    assert set(scales) == {"auto"}  # the default: the estimator decides (a coarse look, then the finest scale that holds the blur)
    AllInFocus(map_scale=3).estimate_map(img)  # the analysis scale reaches the estimator
    assert scales[-1] == 3


def test_cli_allinfocus_bad_window(tmp_path, natural_rgb):
    from gpudeblur import cli
    from gpudeblur.io import write_image

    src = tmp_path / "in.png"
    write_image(src, natural_rgb[:64, :64])
    out = tmp_path / "o.png"
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--window", "40"]) == 2
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--window", "0"]) == 2
    assert not out.exists()


def _cli_inputs(tmp_path, img):
    """A small blurred scene and its map on disk: ``(src, map, out, report)`` paths."""
    from gpudeblur.io import write_image

    rm, y = _scene(img[:64, :64])
    src, mp = tmp_path / "in.png", tmp_path / "map.npy"
    write_image(src, y)
    np.save(mp, rm.astype(np.float32))
    return src, mp, tmp_path / "o.png", tmp_path / "r.json"


def test_cli_allinfocus_map_uncertainty(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["0.5"], ["0.5,x"], ["-1,3"], ["0.5,3", "--mode", "blind"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--map-uncertainty", *bad]) == 2
        assert not out.exists()
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--map-uncertainty", "0.5,3", "--iters", "3",
                     "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["map_uncertainty"] == [0.5, 3.0]


def test_cli_allinfocus_radius_check_and_edge_cap(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["maybe"], ["on", "--map", str(mp)], ["off", "--mode", "blind"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--radius-check", *bad]) == 2
        assert not out.exists()
    base = ["-q", "allinfocus", str(src), str(out), "--mode", "fast", "--report", str(rep), "--overwrite"]
    assert cli.main(base) == 0  # estimated map: checked by default
    checked = json.loads(rep.read_text())["radius_check"]
    assert set(checked) == {"scaled_fraction", "min_scale", "mean_scale"} and 0.5 <= checked["min_scale"] <= 1
    assert json.loads(rep.read_text())["edge_capped_fraction"] is not None
    assert cli.main(base + ["--radius-check", "off", "--edge-cap", "off"]) == 0
    assert json.loads(rep.read_text())["radius_check"] is None
    assert json.loads(rep.read_text())["edge_capped_fraction"] is None
    for bad in (["sometimes"], ["on", "--map", str(mp)]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--overwrite", "--edge-cap", *bad]) == 2


def test_cli_allinfocus_shrink_uninformed(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["maybe"], ["on", "--map", str(mp)], ["off", "--mode", "sv-admm"], ["on", "--mode", "blind"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--shrink-uninformed", *bad]) == 2
        assert not out.exists()
    base = ["-q", "allinfocus", str(src), str(out), "--mode", "fast", "--report", str(rep), "--overwrite"]
    assert cli.main(base) == 0  # fast on an estimated map: on by default
    assert 0 <= json.loads(rep.read_text())["uninformed_shrunk"] <= 1
    assert cli.main(base + ["--shrink-uninformed", "off"]) == 0
    assert json.loads(rep.read_text())["uninformed_shrunk"] is None


def test_cli_allinfocus_keep_in_focus(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["1.5"], ["2.5,1.5"], ["x,2"], ["1.5,2.5", "--mode", "blind"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--keep-in-focus", *bad]) == 2
        assert not out.exists()
    base = ["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--iters", "3", "--report", str(rep), "--overwrite"]
    assert cli.main(base) == 0  # a given map: off by default
    assert json.loads(rep.read_text())["keep_in_focus"] is None
    assert cli.main(base + ["--keep-in-focus", "1,2"]) == 0
    assert json.loads(rep.read_text())["keep_in_focus"] == [1.0, 2.0]
    fast = [a for a in base if a not in ("--iters", "3")]
    assert cli.main(fast + ["--keep-in-focus", "off", "--mode", "fast"]) == 0
    assert json.loads(rep.read_text())["keep_in_focus"] is None
    assert json.loads(rep.read_text())["map_noise"] is None  # a given map: no estimate
    assert cli.main(base + ["--noise", "loud"]) == 2


def test_lam_and_iters_reach_every_mode(monkeypatch, tmp_path, natural_rgb):
    """--lam/--iters are not silently dropped: blind gets them as lam1/n_outer, fast refuses iterations."""
    import gpudeblur.blind as blind
    from gpudeblur import cli

    seen = []

    def fake_layer(image, mask, **kw):
        seen.append(kw)
        return image, np.ones((3, 3)) / 9, {}

    monkeypatch.setattr(blind, "blind_deblur_layer", fake_layer)
    rm = np.zeros((32, 32), np.float32)
    rm[:, 16:] = 3.0
    img = natural_rgb[:32, :32]
    AllInFocus(mode="blind", lam=0.002, num_iter=4).run(img, radius_map=rm)
    assert seen[-1]["lam1"] == 0.002 and seen[-1]["n_outer"] == 4
    AllInFocus(mode="blind", lam=0.002, blind_options={"lam1": 0.01}).run(img, radius_map=rm)
    assert seen[-1]["lam1"] == 0.01 and "n_outer" not in seen[-1]  # explicit blind options win
    with pytest.raises(ValueError, match="num_iter does not apply to mode 'fast'"):
        AllInFocus(mode="fast", num_iter=3)
    with pytest.raises(ValueError, match="lam"):
        AllInFocus(lam=-1.0)
    src, mp, out, _rep = _cli_inputs(tmp_path, natural_rgb)
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--mode", "fast", "--iters", "3"]) == 2
    assert not out.exists()


def test_cli_estimator_options_refused_with_a_given_map(tmp_path, natural_rgb):
    """--window/--noise/--max-radius set the estimate; with --map they would be dropped silently."""
    from gpudeblur import cli

    src, mp, out, _rep = _cli_inputs(tmp_path, natural_rgb)
    for opt in (["--window", "41"], ["--noise", "1e-4"], ["--max-radius", "6"], ["--map-scale", "2"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), *opt]) == 2
        assert not out.exists()


def test_map_scale_in_the_pipeline_and_cli(tmp_path, capsys):
    """``map_scale=2`` reads a 10 px blur that the full-resolution estimate
    (``max_radius`` 8) cannot, deblurs better with it, and reports the scale;
    ``'auto'`` finds it (a look at scale 2 first, since session 17); bad
    values are refused."""
    from skimage import data

    from gpudeblur import cli
    from gpudeblur.io import write_image

    img = (data.astronaut()[100:260, 140:300] / 255.0).astype(np.float64)
    rm = np.full(img.shape[:2], 10.0)
    y = np.clip(blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
                + 1e-3 * np.random.default_rng(5).standard_normal(img.shape), 0, 1)
    full, res1 = AllInFocus(mode="fast", map_scale=1).run(y)
    half, res2 = AllInFocus(mode="fast", map_scale=2).run(y)
    auto, resa = AllInFocus(mode="fast").run(y)
    assert resa.map_scale == 2 and np.array_equal(auto, half)
    inner = (slice(40, -40),) * 2
    assert res1.map_scale == 1 and res2.map_scale == 2 and res2.report()["map_scale"] == 2
    assert res1.map_uncertainty == res2.map_uncertainty == (0.5, 3.0)  # widened from scale 4 on
    from gpudeblur.allinfocus import scaled_map_uncertainty

    assert scaled_map_uncertainty(4) == (2.0, 12.0) and scaled_map_uncertainty(16) == (4.0, 192.0)
    from gpudeblur.allinfocus import KEEP_IN_FOCUS, scaled_keep_in_focus

    assert res1.keep_in_focus == res2.keep_in_focus == KEEP_IN_FOCUS == scaled_keep_in_focus(2)  # widened from scale 4 on
    assert scaled_keep_in_focus(4) == (6.0, 10.0) and scaled_keep_in_focus(8, (1.0, 2.0)) == (16.0, 32.0)
    quarter, res4 = AllInFocus(mode="fast", map_scale=4, estimator_options={"window": 35}).run(y)
    assert res4.map_scale == 4 and res4.keep_in_focus == (6.0, 10.0) and res4.map_uncertainty == (2.0, 12.0)
    assert np.median(res1.radius_map[inner]) < 8.5 < 9.0 < np.median(res2.radius_map[inner]) < 11.0
    assert psnr(half, img) > psnr(full, img) + 1.0
    assert AllInFocus(mode="fast").run(y, radius_map=rm)[1].map_scale is None  # a given map
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="map_scale must be a positive integer"):
            AllInFocus(map_scale=bad)
    src = tmp_path / "in.png"
    write_image(src, y)
    rep = tmp_path / "r.json"
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "o.png"), "--mode", "fast", "--map-scale", "2",
                     "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["map_scale"] == 2
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "p.png"), "--map-scale", "0"]) == 2
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "p.png"), "--map-scale", "half"]) == 2
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "q.png"), "--mode", "fast", "--map-scale", "auto",
                     "--report", str(rep), "--overwrite"]) == 0
    assert json.loads(rep.read_text())["map_scale"] == 2  # auto: the look at 2 (160 // 4 < 51) sees the 10 px blur
    assert cli.main(["-q", "allinfocus", str(src), str(tmp_path / "p.png"), "--map-scale", "4"]) == 2  # 40² < window
    assert "smaller than the analysis window" in capsys.readouterr().err
    # refused before the blur-map stage is announced
    stages = []
    with pytest.raises(ValueError, match="at scale 1000 is 1x1, smaller than the analysis window"):
        AllInFocus(mode="fast", map_scale=1000, progress=stages.append).run(y)
    assert stages == []


# -- one PSF family for the estimate and the deblurring ------------------------------------------------


def test_disc_equivalent_scales():
    from gpudeblur.allinfocus import disc_equivalent

    assert disc_equivalent("disc", 1.7) == 1.7
    g = [disc_equivalent("gaussian", r) for r in (1.0, 1.5, 2.5, 4.0, 6.0)]
    assert all(a < b for a, b in zip(g, g[1:]))  # monotone
    for r, s in zip((2.5, 4.0, 6.0), g[2:]):  # equal second moments: sigma = r / 2 (continuous limit)
        assert abs(s - r / 2) < 0.1, (r, s)


def test_gaussian_family_reaches_the_deblurring(natural_rgb):
    """A Gaussian-blurred scene with its sigma map: the pipeline deblurs it with Gaussians when told so
    (before, the map went to the estimator's family but the deconvolution always used discs)."""
    img = natural_rgb[:96, :96]
    sig = np.zeros(img.shape[:2])
    sig[:, 48:] = 2.0
    y = blur_spatially_varying(img, sig, radius_step=0.1, family="gaussian", dtype="float64")
    y = np.clip(y + 1e-3 * np.random.default_rng(1).standard_normal(y.shape), 0, 1)
    p_in = psnr(y, img)
    out_g, res = AllInFocus(mode="sv-admm", psf_family="gaussian").run(y, radius_map=sig)
    out_d, _ = AllInFocus(mode="sv-admm").run(y, radius_map=sig)
    p_g, p_d = psnr(out_g, img), psnr(out_d, img)
    assert p_g > p_in + 2.0 and p_g > p_d + 1.0, (p_in, p_g, p_d)
    assert res.report()["psf_family"] == "gaussian"


def test_psf_family_checks():
    with pytest.raises(ValueError, match="psf_family"):
        AllInFocus(psf_family="airy")
    with pytest.raises(ValueError, match="same one"):
        AllInFocus(estimator_options={"psf_family": "gaussian"})
    AllInFocus(psf_family=lambda r: np.ones((1, 1)), keep_in_focus=False)  # any callable r -> psf


def test_calibration_is_a_psf_family():
    """PSFCalibration(r): the calibrated PSFs at their radii, their average halfway, clamped outside;
    centres aligned whatever the sizes' parity; usable as the deconvolution's family."""
    from gpudeblur.blurmap import PSFCalibration
    from gpudeblur.psf import disc
    from gpudeblur.spatially_varying import SpatiallyVaryingBlur
    from gpudeblur._backend import get_backend
    from gpudeblur.convolution import fftconvolve

    radii = [0.0, 1.0, 2.0, 3.0]
    even = np.zeros((4, 4))
    even[1:3, 1:3] = 0.25  # even size: centre at (2, 2) as everywhere in gpudeblur
    psfs = [disc(0.0), disc(1.0), even, disc(3.0)]
    cal = PSFCalibration(radii, psfs)
    k1 = cal(1.0)
    assert k1.shape[0] % 2 == 1 and k1.sum() == pytest.approx(1.0)
    c = k1.shape[0] // 2
    d1 = disc(1.0)
    h = d1.shape[0] // 2
    np.testing.assert_allclose(k1[c - h:c + h + 1, c - h:c + h + 1], d1 / d1.sum(), atol=1e-12)
    half = cal(2.5)
    np.testing.assert_allclose(half, 0.5 * cal(2.0) + 0.5 * cal(3.0), atol=1e-12)
    m = cal(2.0)  # the even sample embedded in odd support: centre of mass stays at the centre + 1/2 px shift rule
    ii, jj = np.indices(m.shape)
    assert (ii * m).sum() == pytest.approx(m.shape[0] // 2 - 0.5) and (jj * m).sum() == pytest.approx(m.shape[1] // 2 - 0.5)
    np.testing.assert_allclose(cal(9.0), cal(3.0))
    np.testing.assert_allclose(cal(-1.0), cal(0.0))
    # as the family of the spatially varying operator: a constant map at a calibrated radius blurs by that PSF
    img = np.random.default_rng(2).random((40, 48))
    rm = np.full(img.shape, 3.0)
    be = get_backend("cpu")
    op = SpatiallyVaryingBlur(rm, be, np.float64, family=cal, boundary="periodic")
    from gpudeblur.convolution import to_channels_first, from_channels_first
    got = from_channels_first(op.grid.crop(op.forward(op.grid.extend(to_channels_first(img), taper=False))), 2)
    want = fftconvolve(img, cal(3.0), backend="cpu", boundary="periodic", dtype=np.float64)
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_cli_allinfocus_psf(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--psf", "gaussian", "--iters", "3",
                     "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["psf_family"] == "gaussian"
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--psf", "airy", "--overwrite"]) == 2


def test_calibration_file_roundtrip_and_cli(tmp_path, natural_rgb):
    """--psf CALIB.npz: a lens calibration drives the estimate and the deblurring from the command line."""
    import json

    from gpudeblur import cli
    from gpudeblur.blurmap import PSFCalibration
    from gpudeblur.psf import disc

    radii = np.arange(0.0, 8.01, 0.5)
    cal = PSFCalibration(list(radii), [disc(r) for r in radii])
    path = tmp_path / "lens.npz"
    cal.save(path)
    back = PSFCalibration.load(path)
    np.testing.assert_allclose(back.radii, radii)
    for r in (0.0, 2.5, 3.25, 8.0):
        a, b = back(r), cal(r)  # the file pads every PSF to one (odd) size, centred
        pad = [((p - q) // 2, (p - q) // 2) for p, q in zip(a.shape, b.shape)]
        np.testing.assert_allclose(a, np.pad(b, pad), atol=1e-12)
    import os
    import stat

    from gpudeblur.io import _umask

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()  # like every writer of the package
    with pytest.raises(FileExistsError):
        cal.save(path)
    cal.save(path, overwrite=True)
    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--psf", str(path), "--iters", "3",
                     "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["psf_family"] == f"calibration {path}"  # which lens file, for the record
    # and estimating the map with it (no --map): the calibration drives both stages
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--psf", str(path), "--mode", "fast", "--overwrite",
                     "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["psf_family"] == f"calibration {path}"
    # bad files: one-line errors at parse time, exit 2, nothing written
    np.savez(tmp_path / "bad.npz", radii=radii)
    np.save(tmp_path / "plain.npy", radii)
    with open(tmp_path / "plain_named.npz", "wb") as f:  # an .npy under an .npz name
        np.save(f, radii)
    with np.load(path) as z:
        negative = z["psfs"].copy()
    negative[3, 0, 0] = -1.0
    np.savez(tmp_path / "negative.npz", radii=radii, psfs=negative)
    for bad in ("bad.npz", "missing.npz", "plain.npy", "plain_named.npz", "negative.npz"):
        out2 = tmp_path / "o2.png"
        assert cli.main(["-q", "allinfocus", str(src), str(out2), "--map", str(mp), "--psf", str(tmp_path / bad)]) == 2
        assert not out2.exists()
    with pytest.raises(ValueError, match="needs arrays 'radii' and 'psfs'"):
        PSFCalibration.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="must be an .npz"):
        PSFCalibration.load(tmp_path / "plain_named.npz")
    with pytest.raises(ValueError, match=r"negative.npz: PSFCalibration PSF 3 \(r = 1.5\) has negative values"):
        PSFCalibration.load(tmp_path / "negative.npz")
    with pytest.raises(ValueError, match="finite"):
        cal(float("nan"))
    blur_map = tmp_path / "m.npy"
    assert cli.main(["-q", "blurmap", str(src), str(blur_map), "--psf", str(path), "--labeling", "none"]) == 0
    assert np.load(blur_map).shape == natural_rgb[:64, :64].shape[:2]


def test_a_given_map_beyond_a_calibration_is_refused():
    """A calibration's PSFs are clamped to its range: a given map past its largest radius would be deblurred
    with that PSF without a word, so it is refused (by the pipeline, the deconvolution and the blur), and a
    calibration with negative radii (blur radii never are) is refused when made."""
    from gpudeblur.blurmap import PSFCalibration
    from gpudeblur.psf import disc
    from gpudeblur.spatially_varying import blur_spatially_varying, deconvolve_spatially_varying

    r = np.arange(0.0, 4.01, 0.5)
    cal = PSFCalibration(list(r), [disc(v) for v in r])
    img = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    ok = np.full((32, 32), 4.0, np.float32)
    over = ok.copy()
    over[5, 7] = 6.5
    for mode in ("fast", "sv-admm", "blind"):
        with pytest.raises(ValueError, match="radius map reaches 6.5 px, beyond the PSF calibration's largest "
                                             "radius 4 px"):
            AllInFocus(mode=mode, psf_family=cal).run(img, radius_map=over)
    AllInFocus(mode="fast", psf_family=cal).run(img, radius_map=ok)  # up to its end: fine
    for call in (lambda m: deconvolve_spatially_varying(img, m, method="fast", family=cal),
                 lambda m: blur_spatially_varying(img, m, family=cal)):
        with pytest.raises(ValueError, match="beyond the PSF calibration's largest radius"):
            call(over)
        call(ok)
    with pytest.raises(ValueError, match="radii must be non-negative"):
        PSFCalibration([-1.0, 0.0, 1.0, 2.0], [disc(0), disc(0), disc(1), disc(2)])
    # a map at exactly the last radius, which a float32 image rounds up (50.9 → 50.900002)
    from gpudeblur.psf import gaussian

    wide = PSFCalibration([0.0, 10.0, 30.0, 50.9], [gaussian(s) for s in (0.5, 1.0, 1.5, 2.0)])
    at_end = np.full((64, 64), 50.9)
    deconvolve_spatially_varying(np.zeros((64, 64), np.float32), at_end, method="fast", family=wide)
    with pytest.raises(ValueError, match="reaches 50.91 px, beyond the PSF calibration's largest radius 50.9 px"):
        deconvolve_spatially_varying(np.zeros((64, 64), np.float32), at_end + 0.01, method="fast", family=wide)


def test_a_given_map_whose_psf_outgrows_the_image_is_named():
    """Radii between half the image and its size: the pipeline names the map, with the PSF it asks for (not
    a bare "PSF (…) is larger than the image" from deep inside, or blind's kernel size); half the image less
    a pixel still runs."""
    img = np.random.default_rng(3).random((40, 48)).astype(np.float32)
    AllInFocus(mode="fast").run(img, radius_map=np.full((40, 48), 19.0, np.float32))
    for family, r, side in (("disc", 20.0, 41), ("disc", 47.5, 95), ("gaussian", 6.0, 43)):
        m = np.full((40, 48), 1.0, np.float32)
        m[3, 4] = r
        msg = f"radius map reaches {r:g} px: a {family} PSF of that radius \\({side}x{side}\\) is larger than the image \\(40x48\\)"
        for mode in ("fast", "blind"):
            with pytest.raises(ValueError, match=msg):
                AllInFocus(mode=mode, psf_family=family).run(img, radius_map=m)
    # the bank's radius above the map's (its 0.5 px steps; an uncertain map's tail): the bank names the map too
    for family, r, kw in (("gaussian", 5.42, {}), ("disc", 19.4, {"map_uncertainty": (1.0, 0.0)})):
        with pytest.raises(ValueError, match=f"radius map reaches {r:g} px: its PSF bank's widest PSF"):
            AllInFocus(mode="fast", psf_family=family, **kw).run(img[:40, :40], radius_map=np.full((40, 40), r),
                                                                  map_estimated=bool(kw))


def test_default_thresholds_for_calibrations_and_odd_families():
    """Disc-radius defaults carried to other families: a real lens (narrowest PSF wider than a 1 px disc),
    a calibration that starts at 2, and a family that never gets wide enough (an error, not a silent 16)."""
    from gpudeblur.blurmap import PSFCalibration
    from gpudeblur.psf import disc

    r = np.arange(0.0, 8.01, 0.5)
    lens = PSFCalibration(list(r), [disc(max(v, 1.2)) for v in r])  # r <= 1 share the sharpest PSF
    assert AllInFocus(psf_family=lens)._keep_default == pytest.approx((1.5, 2.5), abs=0.02)
    assert AllInFocus(psf_family=lens, mode="blind").in_focus_radius == pytest.approx(2.0)  # a 2 px disc's scale
    r2 = np.arange(2.0, 8.51, 0.5)
    from2 = PSFCalibration(list(r2), [disc(v) for v in r2])
    with pytest.warns(UserWarning, match="narrowest PSF is already wider"):
        keep = AllInFocus(psf_family=from2)._keep_default
    assert keep[0] == pytest.approx(2.0) and keep[1] == pytest.approx(2.5, abs=0.02)
    assert AllInFocus(psf_family=from2, mode="blind").in_focus_radius == pytest.approx(2.025)  # the sharpest plateau
    narrow = AllInFocus(psf_family=lambda s: disc(s / 10), mode="fast", backend="cpu")  # the default is needed
    with pytest.raises(ValueError, match="never gets as wide as a disc of radius 2.5"):  # only for an estimated map,
        narrow.run(np.zeros((64, 64), np.float32))  # and then before the map is estimated
    assert narrow._estimator is None or narrow._estimator._lut is None  # refused before the estimate
    img = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    narrow.run(img, np.full((48, 48), 20.0, np.float32))  # a given map: the input outside the range is not kept
    AllInFocus(psf_family=lambda s: disc(s / 10), keep_in_focus=(0.1, 0.2))  # explicit values need no conversion
    AllInFocus(psf_family=lambda s: disc(s / 10), keep_in_focus=False)


# ---------------------------------------------------------------------------
# clipped highlights
# ---------------------------------------------------------------------------


def test_saturation_mask():
    from gpudeblur.allinfocus import saturation_mask

    x = np.full((4, 5, 4), 0.5, np.float32)
    x[0, 0, 0] = 1.0            # red clipped
    x[1, 1, :3] = 0.996         # all colours at 0.996 ≥ 0.995
    x[2, 2, 1] = 0.99           # below the level
    x[..., 3] = 1.0             # an opaque alpha channel is not a highlight
    m = saturation_mask(x)
    assert m.dtype == bool and m.shape == x.shape
    assert m[0, 0, 0] and not m[0, 0, 1] and m[1, 1, :3].all() and not m[2, 2].any() and not m[..., 3].any()
    assert int(m.sum()) == 4
    # white point: 1 for [0, 1] images, the maximum otherwise (a 0–255 float image)
    assert saturation_mask(x[..., :3] * 255)[0, 0, 0]
    # integer arrays: the type's full scale (a dark uint8 photo has no clipped pixel)
    u = (x[..., :3] * 191).astype(np.uint8)
    assert not saturation_mask(u).any()
    u[0, 0, 1] = 255
    assert saturation_mask(u)[0, 0, 1] and int(saturation_mask(u).sum()) == 1
    assert not saturation_mask(np.full((3, 3), 0.9)).any()
    for bad in (0, 1.5, np.nan):
        with pytest.raises(ValueError, match="level"):
            saturation_mask(x, level=bad)


def test_pipeline_fits_clipped_values_one_sided(natural_rgb):
    """sv-admm (default): clipped values are fitted one-sided, as the direct call with the
    mask does; without clipped values the setting changes nothing; fast/blind refuse it."""
    from gpudeblur.allinfocus import saturation_mask
    from gpudeblur.spatially_varying import deconvolve_spatially_varying

    rm, y = _scene(natural_rgb)
    bright = np.clip(y * 1.6, 0, 1)  # ~some % of the values clipped
    sat = saturation_mask(bright)
    assert 0.005 < sat.mean() < 0.5
    out, res = AllInFocus(num_iter=4).run(bright, radius_map=rm)
    assert res.saturated == pytest.approx(float(sat.mean()))
    assert res.report()["saturated_fraction"] == pytest.approx(float(sat.mean()))
    ref = deconvolve_spatially_varying(bright, rm, num_iter=4, saturated=sat)
    np.testing.assert_array_equal(out, ref)
    off, res_off = AllInFocus(num_iter=4, saturation=False).run(bright, radius_map=rm)
    assert res_off.saturated is None and not np.array_equal(out, off)
    dim = y * 0.8  # nothing clipped: identical either way
    a, _ = AllInFocus(num_iter=3).run(dim, radius_map=rm)
    b, _ = AllInFocus(num_iter=3, saturation=False).run(dim, radius_map=rm)
    np.testing.assert_array_equal(a, b)
    for mode in ("fast", "blind"):
        with pytest.raises(ValueError, match="saturation handling needs mode 'sv-admm'"):
            AllInFocus(mode=mode, saturation=True)
        assert AllInFocus(mode=mode).saturation is False
        _, res = AllInFocus(mode=mode).run(bright, radius_map=rm)
        assert res.saturated is None  # the default is off outside sv-admm
    with pytest.raises(ValueError, match="saturation must be"):
        AllInFocus(saturation="yes")


def test_cli_allinfocus_saturation(tmp_path, natural_rgb):
    import json

    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["maybe"], ["on", "--mode", "fast"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--saturation", *bad]) == 2
        assert not out.exists()
    base = ["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--iters", "2", "--report", str(rep), "--overwrite"]
    assert cli.main(base) == 0
    assert json.loads(rep.read_text())["saturated_fraction"] is not None
    assert cli.main(base + ["--saturation", "off"]) == 0
    assert json.loads(rep.read_text())["saturated_fraction"] is None


def test_checks_ignore_clipped_highlights(natural_rgb):
    """Clipped highlights in a blurred region: without the mask the edge cap lowers the true
    radius around them (the clipped plateau under-reads the contrast) and the radius check
    shrinks it (every trial rings there); with the mask both leave the true map nearly alone."""
    from gpudeblur.allinfocus import edge_cap, radius_check, saturation_mask

    rng = np.random.default_rng(5)
    s = natural_rgb.astype(np.float64).copy()
    M, N = s.shape[:2]
    rm = np.full((M, N), 4.0)
    for _ in range(10):
        cy, cx = rng.integers(6, M - 6, 2)
        s[cy - 2:cy + 3, cx - 2:cx + 3] = rng.uniform(3, 6)
    y = blur_spatially_varying(s, rm, dtype="float64")
    y = np.clip(np.clip(y, 0, 1) + 1e-3 * rng.standard_normal(y.shape), 0, 1)
    sat = saturation_mask(y)
    assert 0.01 < sat.any(axis=2).mean() < 0.3
    plain, masked = edge_cap(y, rm), edge_cap(y, rm, saturated=sat)
    assert (plain < 4).mean() > 2 * max((masked < 4).mean(), 0.005), ((plain < 4).mean(), (masked < 4).mean())
    sc_plain, sc_masked = radius_check(y, rm), radius_check(y, rm, saturated=sat)
    assert sc_masked.mean() > 0.97 and sc_masked.mean() > sc_plain.mean()
    np.testing.assert_array_equal(edge_cap(y, rm, saturated=np.zeros((M, N), bool)), plain)  # nothing clipped
    # a value clipped in one channel counts for the pixel
    one = np.zeros_like(sat)
    one[..., 1] = sat.any(axis=2)
    np.testing.assert_array_equal(edge_cap(y, rm, saturated=one), masked)
    # the pipeline gives its clip mask to the edge cap (estimated maps), not to the radius check
    _, res = AllInFocus(mode="fast").run(y, radius_map=rm, map_estimated=True)
    assert res.edge_capped == float((masked < rm).mean()) < float((plain < rm).mean())
    np.testing.assert_array_equal(res.radius_scale, radius_check(y, masked))
    with pytest.raises(ValueError, match="saturated must be a boolean mask"):
        edge_cap(y, rm, saturated=np.zeros((M, N)))


def test_auto_mode_takes_fast_on_the_cpu_for_a_map_read_at_a_coarse_scale(monkeypatch, natural_rgb, tmp_path, capsys):
    """On the CPU 'auto' runs sv-admm only on a map it estimated at full resolution: a map read at
    a coarser scale (strong defocus) gets fast, bit for bit fast's run on the same estimate (its
    confidence included); a given map, a GPU, an explicit mode or an sv-admm option keep sv-admm."""
    import warnings

    import scipy.fft

    from gpudeblur._backend import Backend
    from gpudeblur.blurmap.estimator import BlurMapEstimator

    y = natural_rgb[:56, :64]  # the estimator's window (51) fits
    rm = np.full(y.shape[:2], 2.0, dtype=np.float32)
    rm[:, 32:] = 4.0
    calls = []

    def fake_estimate(scale_read):
        def estimate(self, image, scale=None, return_info=False, return_confidence=False, **kw):
            calls.append(return_confidence)
            info = {"noise": 1e-6, "scale": scale_read}
            conf = np.zeros(image.shape[:2], dtype=np.float32)  # the lower half: nothing known
            conf[:28] = 1.0
            return (rm.copy(), info, conf) if return_confidence else (rm.copy(), info)
        return estimate

    monkeypatch.setattr(BlurMapEstimator, "estimate", fake_estimate(2))
    out, res = AllInFocus(backend="cpu").run(y)
    assert res.mode == "fast" and res.map_scale == 2 and calls == [True]
    from gpudeblur import cli
    from gpudeblur.io import write_image

    write_image(tmp_path / "in.png", y)
    assert cli.main(["allinfocus", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--backend", "cpu"]) == 0
    assert "mode auto -> fast (the map was read at scale 2" in capsys.readouterr().out
    ref, ref_res = AllInFocus(mode="fast", backend="cpu").run(y)
    assert ref_res.mode == "fast"
    np.testing.assert_array_equal(out, ref)  # the same run as fast's: shrink_uninformed on its confidence
    assert res.report().keys() == ref_res.report().keys()
    stages = {}
    for m in ("auto", "fast"):
        stages[m] = []
        AllInFocus(mode=m, backend="cpu", progress=stages[m].append).run(y)
    assert stages["auto"] == stages["fast"] and "deblur (fast)" in stages["fast"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shrink_uninformed=True applies: no "not applied" warning
        assert AllInFocus(backend="cpu", shrink_uninformed=True).run(y)[1].mode == "fast"
    for pipe in (AllInFocus(mode="sv-admm", backend="cpu"), AllInFocus(backend="cpu", num_iter=2)):
        assert pipe.run(y)[1].mode == "sv-admm"
    assert AllInFocus(backend="cpu").run(y, radius_map=rm)[1].mode == "sv-admm"  # a given map
    calls.clear()  # an estimate declared trusted turns too: fast's trusted run, no confidence asked
    out, res = AllInFocus(backend="cpu").run(y, map_estimated=False)
    ref, ref_res = AllInFocus(mode="fast", backend="cpu").run(y, map_estimated=False)
    assert res.mode == "fast" and calls == [False, False]
    np.testing.assert_array_equal(out, ref)
    assert res.report().keys() == ref_res.report().keys()
    auto = AllInFocus(backend="cpu")
    assert auto.resolve_mode(y.shape, map_scale=2) == "fast" and auto.resolve_mode(y.shape, map_scale=1) == "sv-admm"
    assert auto.resolve_mode(y.shape, Backend("cuda", np, scipy.fft), map_scale=4) == "sv-admm"
    monkeypatch.setattr(BlurMapEstimator, "estimate", fake_estimate(1))
    calls.clear()
    out, res = AllInFocus(backend="cpu").run(y)
    ref, _ = AllInFocus(mode="sv-admm", backend="cpu").run(y)
    assert res.mode == "sv-admm" and res.map_scale == 1 and calls == [True, False]
    np.testing.assert_array_equal(out, ref)  # the confidence asked for in case is not used
    with pytest.warns(UserWarning, match="shrink_uninformed applies to 'fast'.*not applied \\(mode 'sv-admm'\\)"):
        AllInFocus(backend="cpu", shrink_uninformed=True).run(y)


def test_auto_mode_picks_sv_admm_unless_large_on_the_cpu(monkeypatch, natural_rgb):
    """mode='auto' (the default): sv-admm up to AUTO_SV_ADMM_MAX_PIXELS on the CPU and
    on a GPU, fast above on the CPU, sv-admm whenever an sv-admm option is set; the
    run is the explicit mode's, bit for bit, and the result names the mode that ran."""
    import scipy.fft

    from gpudeblur import allinfocus
    from gpudeblur._backend import Backend

    y = natural_rgb[:40, :48]
    rm = np.full(y.shape[:2], 2.0)
    monkeypatch.setattr(allinfocus, "AUTO_SV_ADMM_MAX_PIXELS", 40 * 48 - 1)
    auto = AllInFocus(backend="cpu")
    assert auto.mode == "auto" and auto.resolve_mode(y.shape) == "fast"
    assert auto.saturation is None and AllInFocus(mode="sv-admm").saturation is True
    assert auto.resolve_mode((40, 47)) == "sv-admm"
    assert auto.resolve_mode(y.shape, Backend("cuda", np, scipy.fft)) == "sv-admm"
    out, res = auto.run(y, radius_map=rm)
    ref, _ = AllInFocus(mode="fast", backend="cpu").run(y, radius_map=rm)
    assert res.mode == "fast" and res.saturated is None and res.report()["mode"] == "fast"
    np.testing.assert_array_equal(out, ref)
    for opts in ({"lam": 1e-3}, {"num_iter": 2}, {"saturation": True}):
        assert AllInFocus(backend="cpu", **opts).resolve_mode(y.shape) == "sv-admm"
    small = natural_rgb[:40, :40]
    out, res = AllInFocus(backend="cpu").run(small, radius_map=rm[:, :40])
    ref, _ = AllInFocus(mode="sv-admm", backend="cpu").run(small, radius_map=rm[:, :40])
    assert res.mode == "sv-admm" and res.saturated is not None
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="unknown mode|mode must be"):
        AllInFocus(mode="best")


def test_cli_auto_mode_says_when_it_takes_fast(monkeypatch, tmp_path, natural_rgb, capsys):
    import json

    from gpudeblur import allinfocus, cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    monkeypatch.setattr(allinfocus, "AUTO_SV_ADMM_MAX_PIXELS", 100)
    monkeypatch.setattr("gpudeblur.allinfocus_cli.AUTO_SV_ADMM_MAX_PIXELS", 100)
    assert cli.main(["allinfocus", str(src), str(out), "--map", str(mp), "--backend", "cpu", "--report", str(rep)]) == 0
    said = capsys.readouterr().out
    assert "mode auto -> fast" in said and "(fast," in said
    assert json.loads(rep.read_text())["mode"] == "fast"
    assert cli.main(["allinfocus", str(src), str(out), "--map", str(mp), "--backend", "cpu", "--iters", "2",
                     "--report", str(rep), "--overwrite"]) == 0
    assert "mode auto" not in capsys.readouterr().out and json.loads(rep.read_text())["mode"] == "sv-admm"


def test_blind_kernel_grows_for_a_wide_layer(natural_rgb):
    """A layer blurred by more than the paper's 31 x 31 kernel holds (a 16 px disc is 33 px wide) is
    estimated with a larger kernel, not refused ("kernel of shape (33, 33) does not fit in 31x31")."""
    from gpudeblur import psf
    from gpudeblur.allinfocus import BLIND_KERNEL_SIZE, blind_kernel_size

    assert blind_kernel_size(psf.disc(3.0)) == BLIND_KERNEL_SIZE == 31
    assert blind_kernel_size(psf.disc(11.0)) == 31  # 23 px: 4 px of room on each side
    assert blind_kernel_size(psf.disc(16.0)) == 33 + 8 and blind_kernel_size(psf.disc(21.0)) == 43 + 10
    assert blind_kernel_size(np.ones((4, 4))) == 31 and blind_kernel_size(np.ones((30, 30))) % 2 == 1
    M = 96
    img = np.tile(natural_rgb[:M, :M], (1, 2, 1))  # 96 x 192
    rm = np.zeros(img.shape[:2], np.float32)
    rm[:, M:] = 16.0
    y = np.clip(blur_spatially_varying(img, rm, radius_step=0.5), 0, 1)
    out, res = AllInFocus(mode="blind", num_iter=2).run(y, radius_map=rm)
    assert res.layer_radii[1] == 16.0 and res.kernels[0].shape == (41, 41)  # kernels: layers 1, 2, ...
    assert np.isfinite(out).all() and out.shape == y.shape
    np.testing.assert_allclose(res.kernels[0].sum(), 1.0, rtol=1e-6)


def test_blind_returns_a_sharp_photo_nearly_unchanged(natural_rgb):
    """The estimator reads in-focus content at 0.5–1.5 px: with the old 1 px in-focus radius three quarters of a
    sharp photo went into an out-of-focus layer and were deblurred blind (32.6 dB against the sharp image,
    from 60 dB in); at :data:`BLIND_IN_FOCUS` (2 px) it stays in focus (47.7 dB, 96 % in layer 0)."""
    from gpudeblur.allinfocus import BLIND_IN_FOCUS

    assert BLIND_IN_FOCUS == 2.0
    y = np.clip(natural_rgb + 1e-3 * np.random.default_rng(2).standard_normal(natural_rgb.shape), 0, 1)
    out, res = AllInFocus(mode="blind").run(y)
    assert res.in_focus_radius == 2.0 and (res.layer_labels == 0).mean() > 0.9
    assert psnr(out, natural_rgb) > 44


def test_blind_in_focus_radius_follows_the_map_scale_and_tung_init(monkeypatch, natural_rgb):
    """A map read at scale 4 reads in-focus content at ~5 px: blind's default in-focus radius
    becomes 6 px there (a given radius is kept); ``init_kernel=None`` (Tung's initialization)
    still runs, at the default kernel size; the kernel shrinks to fit a small image."""
    import gpudeblur.blind as blind
    from gpudeblur import psf
    from gpudeblur.allinfocus import blind_kernel_size, scaled_in_focus_radius

    assert [scaled_in_focus_radius(s) for s in (1, 2, 4, 8)] == [2.0, 2.0, 6.0, 24.0]
    assert blind_kernel_size(psf.disc(16.0), (40, 192)) == 39 and blind_kernel_size(psf.disc(3.0), (20, 20)) == 19
    assert blind_kernel_size(psf.disc(16.0), (30, 192)) == 33  # the PSF itself never shrinks
    seen = []

    def fake_layer(image, mask, **kw):
        seen.append(kw)
        return image, np.ones((3, 3)) / 9, {}

    monkeypatch.setattr(blind, "blind_deblur_layer", fake_layer)
    img = np.tile(natural_rgb, (2, 2, 1))  # 256² (the 51 px window fits scale 4)
    out, res = AllInFocus(mode="blind", map_scale=4).run(img)
    assert res.map_scale == 4 and res.in_focus_radius == 6.0 and res.report()["in_focus_radius"] == 6.0
    np.testing.assert_array_equal(res.layer_labels == 0, res.radius_map < 6.0)
    _, res1 = AllInFocus(mode="blind", map_scale=4, in_focus_radius=1.0).run(img)
    assert res1.in_focus_radius == 1.0  # given: kept
    rm = np.zeros(img.shape[:2], np.float32)
    rm[:, 128:] = 3.0
    seen.clear()
    _, res2 = AllInFocus(mode="blind", blind_options={"init_kernel": None}).run(img, radius_map=rm)
    assert res2.in_focus_radius == 2.0 and seen and all(k["init_kernel"] is None and "kernel_size" not in k for k in seen)


def test_spread_choice_takes_the_sharper_result_and_refuses_ringing(backend):
    """``spread_choice``: 1 where the narrow result's gradients are sparser (a sharper edge), 0
    where they are not (the same image, or one with ringing added beside the edge)."""
    from gpudeblur.allinfocus import spread_choice
    from scipy.ndimage import gaussian_filter

    xp = backend.xp
    M, N = 64, 96
    step = np.zeros((M, N))
    step[:, N // 2:] = 1.0
    soft = gaussian_filter(step, 2.0)
    ring = step + 0.08 * np.sin(np.arange(N) * 1.7)[None, :] * (np.abs(np.arange(N) - N // 2) < 12)[None, :]
    same = to_host(spread_choice(xp.asarray(soft), xp.asarray(soft), 0.0, backend=backend))
    assert same.shape == (M, N) and same.max() == 0
    sharper = to_host(spread_choice(xp.asarray(soft), xp.asarray(step), 0.03, backend=backend))
    assert sharper[:, N // 2 - 4 : N // 2 + 4].min() > 0.99  # at the edge, the sharp step wins
    ringing = to_host(spread_choice(xp.asarray(step), xp.asarray(ring), 0.03, backend=backend))
    assert ringing[:, N // 2 - 8 : N // 2 + 8].max() < 0.01  # ringing is never taken
    rgb = to_host(spread_choice(xp.asarray(np.dstack([soft] * 3)), xp.asarray(np.dstack([step] * 3)), 0.03,
                                backend=backend))
    assert rgb.shape == (M, N) and rgb[:, N // 2 - 4 : N // 2 + 4].min() > 0.99  # colour: judged on the luminance
    # arrays in, arrays out: NumPy images on any backend (on a GPU they were handed to CuPy
    # unmoved, which refuses them) give a NumPy weight, the same as from device arrays
    host = spread_choice(soft, step, 0.03, backend=backend)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_array_equal(host, sharper)


def _spread_scene(natural_rgb):
    img = natural_rgb[:96, :96]
    M, N = img.shape[:2]
    rm = np.zeros((M, N))
    rm[:, N // 3:] = 2.5
    rm[:, 2 * N // 3:] = 4.0
    y = np.clip(blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
                + 1e-3 * np.random.default_rng(3).standard_normal(img.shape), 0, 1)
    return img, rm, y


def test_spread_select_blends_two_solves(monkeypatch, natural_rgb):
    """By default ``sv-admm`` on an estimated map = the wide spread's solve for half the
    iterations, then a 5x narrower spread's warm-started from it for the other half, blended by
    :func:`spread_choice` after the same keep-in-focus fade; ``spread_select=False``: one
    30-iteration solve; the blend does not lose against it."""
    from gpudeblur import allinfocus as aif

    img, rm, y = _spread_scene(natural_rgb)
    est = np.clip(rm + 0.3, 0, None)  # an "estimate": the pipeline's hedged settings apply
    calls = []
    real_seq, real_one = aif.deconvolve_spread_sequence, aif.deconvolve_spatially_varying

    def spy_seq(x, r, sigmas, **kw):
        outs = real_seq(x, r, sigmas, **kw)
        calls.append(("seq", tuple(sigmas), kw, [to_host(o) for o in outs]))  # on the pipeline's backend
        return outs

    def spy_one(x, r, **kw):
        if kw.get("method") == "sv-admm":  # (the checks run fast-mode trials)
            calls.append(("one", kw["radius_sigma"], kw, None))
        return real_one(x, r, **kw)

    chosen = []
    real_choice = aif.spread_choice

    def spy_choice(wide, narrow, margin, **kw):
        chosen.append((to_host(wide), to_host(narrow), margin))
        return real_choice(wide, narrow, margin, **kw)

    monkeypatch.setattr(aif, "deconvolve_spread_sequence", spy_seq)
    monkeypatch.setattr(aif, "deconvolve_spatially_varying", spy_one)
    monkeypatch.setattr(aif, "spread_choice", spy_choice)
    stages = []
    out, res = AllInFocus(mode="sv-admm", progress=stages.append).run(y, radius_map=est, map_estimated=True)
    assert stages[-2:] == ["deblur (sv-admm)", "deblur (sv-admm, narrow spread)"]
    (kind, sigmas, kw, (wide, narrow)), = calls
    unc = res.map_uncertainty
    assert kind == "seq" and sigmas == pytest.approx((unc[0], unc[0] * aif.SPREAD_SELECT[0]))
    assert kw["num_iter"] == (15, 15) and kw["spatial_sigma"] == unc[1]
    a = aif.in_focus_weight(res.radius_map, *res.keep_in_focus)[..., None]
    wide, narrow = a * y + (1 - a) * wide, a * y + (1 - a) * narrow
    (cw, cn, margin), = chosen  # both results judged after the keep-in-focus fade
    np.testing.assert_allclose(cw, wide, atol=1e-6)
    np.testing.assert_allclose(cn, narrow, atol=1e-6)
    assert margin == aif.SPREAD_SELECT[1] and float(a.min()) < 0.5 < float(a.max())
    pick = real_choice(wide, narrow, aif.SPREAD_SELECT[1])[..., None]
    np.testing.assert_allclose(out, pick * narrow + (1 - pick) * wide, atol=1e-5)
    assert 0 < res.spread_selected < 1 and res.report()["spread_selected_fraction"] == res.spread_selected
    assert res.report()["spread_select"] == {"radius_sigmas": [pytest.approx(unc[0]), pytest.approx(unc[0] * 0.2)],
                                             "num_iter": [15, 15], "margin": aif.SPREAD_SELECT[1]}
    calls.clear()
    same, _ = AllInFocus(mode="sv-admm", spread_select=True).run(y, radius_map=est, map_estimated=True)
    np.testing.assert_array_equal(same, out)  # True: the default's settings
    calls.clear()
    off, r_off = AllInFocus(mode="sv-admm", spread_select=False).run(y, radius_map=est, map_estimated=True)
    (kind, sigma, kw, _), = calls
    assert kind == "one" and sigma == unc[0] and kw["num_iter"] == 30 and r_off.spread_selected is None
    assert r_off.report()["spread_select"] is None
    assert psnr(out, img) >= psnr(off, img) - 0.05
    calls.clear()
    AllInFocus(mode="sv-admm", num_iter=5).run(y, radius_map=est, map_estimated=True)
    assert calls[0][2]["num_iter"] == (3, 2)  # num_iter: the two solves together


def test_spread_select_not_applied_where_it_cannot_be(natural_rgb):
    """A given map, or a map uncertainty without a radius spread: the default leaves the one solve
    alone silently, an explicit ``spread_select=True`` warns; ``fast``, ``blind`` and ``'auto'``
    on a large CPU image are not affected by the default; settings checked."""
    import warnings

    img, rm, y = _spread_scene(natural_rgb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given, rg = AllInFocus(mode="sv-admm", num_iter=4).run(y, radius_map=rm)
        exact, re = AllInFocus(mode="sv-admm", num_iter=4, map_uncertainty=(0, 3)).run(y, radius_map=rm,
                                                                                      map_estimated=True)
        AllInFocus(mode="fast").run(y, radius_map=rm)
    ref, _ = AllInFocus(mode="sv-admm", num_iter=4, spread_select=False).run(y, radius_map=rm)
    np.testing.assert_array_equal(given, ref)
    ref, _ = AllInFocus(mode="sv-admm", num_iter=4, map_uncertainty=(0, 3), spread_select=False).run(
        y, radius_map=rm, map_estimated=True)
    np.testing.assert_array_equal(exact, ref)
    assert rg.spread_selected is None and re.spread_selected is None
    with pytest.warns(UserWarning, match="not applied"):
        AllInFocus(mode="sv-admm", num_iter=2, spread_select=True).run(y, radius_map=rm)
    for bad, match in (({"mode": "fast", "spread_select": True}, "needs mode"),
                       ({"spread_select": (1.0, 0.03)}, "factor and margin"),
                       ({"spread_select": "yes"}, "pair"), ({"spread_select": "00"}, "pair"),
                       ({"spread_select": True, "map_uncertainty": (0, 3)}, "radius spread")):
        with pytest.raises(ValueError, match=match):
            AllInFocus(**bad)
    for mode in ("fast", "blind"):
        AllInFocus(mode=mode)  # the default does not apply there: no error
    assert AllInFocus(backend="cpu").resolve_mode((4000, 4000)) == "fast"  # the default does not force sv-admm
    assert AllInFocus(spread_select=True, backend="cpu").resolve_mode((4000, 4000)) == "sv-admm"
    assert AllInFocus(spread_select=False).spread_select is None
    assert AllInFocus().spread_select == AllInFocus(spread_select=True).spread_select


def test_spread_select_solves_get_the_checked_map_and_settings(monkeypatch, natural_rgb):
    """The two solves get the map after the edge cap and radius check (here an over-estimated map
    that the edge cap lowers), the TV weight and the clipped-pixel mask that the single solve
    gets with ``spread_select=False``; only the spreads differ (session 20's review)."""
    from gpudeblur import allinfocus as aif

    img = natural_rgb[:96, :96].copy()
    img[2:10, 2:10] = 1.0  # clipped highlight: the saturation mask is passed
    rm = np.zeros(img.shape[:2])
    rm[:, 32:] = 1.0
    rm[:, 64:] = 1.5
    y = np.clip(blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64"), 0, 1)
    calls = []
    real_seq, real_one = aif.deconvolve_spread_sequence, aif.deconvolve_spatially_varying

    def host(kw):  # the pipeline's arrays are on its backend (CuPy on a GPU machine)
        return {k: to_host(v) if k == "saturated" and v is not None else v for k, v in kw.items()}

    def spy_seq(x, r, sigmas, **kw):
        calls.append((to_host(r).copy(), dict(host(kw), radius_sigma=tuple(sigmas))))
        return real_seq(x, r, sigmas, **kw)

    def spy_one(x, r, **kw):
        calls.append((to_host(r).copy(), host(kw)))
        return real_one(x, r, **kw)

    monkeypatch.setattr(aif, "deconvolve_spread_sequence", spy_seq)
    monkeypatch.setattr(aif, "deconvolve_spatially_varying", spy_one)
    _, res = AllInFocus(mode="sv-admm", num_iter=4).run(y, radius_map=3 * rm + 1, map_estimated=True)
    AllInFocus(mode="sv-admm", num_iter=4, spread_select=False).run(y, radius_map=3 * rm + 1, map_estimated=True)
    (r1, k1), (r2, k2) = [c for c in calls if c[1].get("method", "sv-admm") == "sv-admm"]
    assert res.edge_capped > 0.1 and not np.array_equal(r1, 3 * rm + 1)  # the checks changed the map
    np.testing.assert_array_equal(r1, r2)
    assert k1["radius_sigma"] == pytest.approx((k2["radius_sigma"], k2["radius_sigma"] * aif.SPREAD_SELECT[0]))
    assert k1["num_iter"] == (2, 2) and k2["num_iter"] == 4
    assert k1["saturated"] is not None and np.array_equal(k1["saturated"], k2["saturated"]) and k2["lam"] == k1["lam"]
    assert k1["spatial_sigma"] == k2["spatial_sigma"] and k1["family"] is k2["family"]


def test_tv_channels_reach_the_solve(monkeypatch, tmp_path, natural_rgb):
    """``tv_channels`` (default: each channel's TV on its own) reaches sv-admm's solves, spread
    selection's too, from the API and the CLI; with fast or blind it is an error."""
    from gpudeblur import allinfocus as aif
    from gpudeblur import cli

    y = natural_rgb[:48, :48]
    rm = np.full(y.shape[:2], 2.0)
    seen = []
    real_seq, real_one = aif.deconvolve_spread_sequence, aif.deconvolve_spatially_varying
    monkeypatch.setattr(aif, "deconvolve_spread_sequence",
                        lambda *a, **kw: seen.append(("seq", kw.get("tv_channels"))) or real_seq(*a, **kw))
    monkeypatch.setattr(aif, "deconvolve_spatially_varying",
                        lambda *a, **kw: seen.append((kw["method"], kw.get("tv_channels"))) or real_one(*a, **kw))
    outs = {}
    for tv in (None, "separate", "joint"):
        outs[tv] = AllInFocus(mode="sv-admm", num_iter=3, tv_channels=tv).run(y, radius_map=rm)[0]
    AllInFocus(mode="sv-admm", num_iter=2, tv_channels="joint").run(y, radius_map=rm, map_estimated=True)
    AllInFocus(mode="fast").run(y, radius_map=rm)
    assert seen == [("sv-admm", "separate"), ("sv-admm", "separate"), ("sv-admm", "joint"), ("seq", "joint"),
                    ("fast", None)]
    np.testing.assert_array_equal(outs[None], outs["separate"])
    assert np.abs(outs["joint"] - outs["separate"]).max() > 1e-4
    res = AllInFocus(mode="sv-admm", num_iter=2, tv_channels="joint").run(y, radius_map=rm)[1]
    assert res.tv_channels == res.report()["tv_channels"] == "joint"
    assert AllInFocus(mode="fast").run(y, radius_map=rm)[1].report()["tv_channels"] is None
    big = (2000, 2000)  # 'auto' on the CPU takes fast here, unless an sv-admm option is set
    assert AllInFocus(backend="cpu").resolve_mode(big) == "fast"
    assert AllInFocus(backend="cpu", tv_channels="separate").resolve_mode(big) == "fast"  # the default's value
    assert AllInFocus(backend="cpu", tv_channels="joint").resolve_mode(big) == "sv-admm"
    for mode in ("fast", "blind"):
        with pytest.raises(ValueError, match="tv_channels applies to sv-admm"):
            AllInFocus(mode=mode, tv_channels="joint")
    with pytest.raises(ValueError, match="tv_channels"):
        AllInFocus(tv_channels="both")
    src, mp, out, _ = _cli_inputs(tmp_path, natural_rgb)
    seen.clear()
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--map", str(mp), "--mode", "sv-admm", "--iters", "2",
                     "--tv-channels", "joint"]) == 0
    assert seen == [("sv-admm", "joint")]
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--overwrite", "--map", str(mp), "--mode", "fast",
                     "--tv-channels", "joint"]) == 2


def test_cli_allinfocus_spread_select(tmp_path, natural_rgb):
    from gpudeblur import cli

    src, mp, out, rep = _cli_inputs(tmp_path, natural_rgb)
    for bad in (["on", "--mode", "fast"], ["on", "--map", str(mp)], ["maybe"], ["on", "--map-uncertainty", "0,3"]):
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--spread-select", *bad]) == 2
        assert not out.exists()
    assert cli.main(["-q", "allinfocus", str(src), str(out), "--mode", "sv-admm", "--iters", "3", "--spread-select",
                     "on", "--report", str(rep)]) == 0
    assert json.loads(rep.read_text())["spread_selected_fraction"] is not None
    for flag, on in (([], True), (["--spread-select", "off"], False)):  # the default: on
        assert cli.main(["-q", "allinfocus", str(src), str(out), "--mode", "sv-admm", "--iters", "3", "--overwrite",
                         "--report", str(rep), *flag]) == 0
        r = json.loads(rep.read_text())
        assert (r["spread_selected_fraction"] is not None) == on and (r["spread_select"] is not None) == on


def test_noisy_input_is_not_made_worse(backend, natural_rgb):
    """A noisy photo (σ = 0.05, ~13 of 255 levels) through ``sv-admm`` on its estimated map: the TV weight
    follows the measured noise (``NOISE_LAM_PER_SIGMA``·σ̂); with the clean inputs' 3e-4 the noise rang and the
    result fell 3 dB below its input (21.2 against 24.2 dB; now 26.8)."""
    from gpudeblur.allinfocus import NOISE_LAM_PER_SIGMA

    _, y = _scene(natural_rgb, sigma=0.05)
    out, res = AllInFocus(mode="sv-admm", backend=backend.name).run(backend.xp.asarray(y))
    assert psnr(to_host(out), natural_rgb) > psnr(y, natural_rgb) + 1.5
    assert 0.04 < res.noise_sigma < 0.06
    assert res.lam == pytest.approx(NOISE_LAM_PER_SIGMA * res.noise_sigma, rel=1e-12)
    rep = res.report()
    assert rep["lam"] == res.lam and rep["noise_sigma"] == res.noise_sigma


def test_tv_weight_on_an_estimated_map_follows_the_noise(deblur_lam_spy, natural_rgb):
    """``sv-admm``'s TV weight on an estimated map: ``max(ESTIMATED_MAP_LAM, NOISE_LAM_PER_SIGMA·σ̂)``
    (``UNCHECKED_MAP_LAM`` in place of the first without the radius check), σ̂ = ``estimate_noise`` of the
    input, also on a caller's ``map_estimated=True`` map; on a trusted map ``max(0.1·σ̂, 3e-4)``; ``fast``'s
    prior ``max(FAST_LAM_PER_SIGMA·σ̂, 0.015)`` on any map; a given ``lam`` wins."""
    import gpudeblur.allinfocus as aif
    import gpudeblur.spatially_varying as sv
    from gpudeblur.restoration import estimate_noise

    seen, Seen = deblur_lam_spy
    _, clean = _scene(natural_rgb, sigma=1e-3)
    _, noisy = _scene(natural_rgb, sigma=0.05)
    s = float(estimate_noise(noisy.astype(np.float32)))
    assert aif.NOISE_LAM_PER_SIGMA * s > aif.UNCHECKED_MAP_LAM > aif.ESTIMATED_MAP_LAM
    assert aif.NOISE_LAM_PER_SIGMA * float(estimate_noise(clean.astype(np.float32))) < aif.ESTIMATED_MAP_LAM
    rm = np.full(natural_rgb.shape[:2], 2.0)
    opts = {"window": 31, "labeling": None}
    cases = [(noisy, {}, {}, aif.NOISE_LAM_PER_SIGMA * s),
             (noisy, {"spread_select": False}, {}, aif.NOISE_LAM_PER_SIGMA * s),
             (noisy, {"radius_check": False}, {}, aif.NOISE_LAM_PER_SIGMA * s),
             (noisy, {"radius_check": False, "edge_cap": False}, {}, aif.NOISE_LAM_PER_SIGMA * s),
             (noisy, {}, {"radius_map": rm, "map_estimated": True}, aif.NOISE_LAM_PER_SIGMA * s),
             (noisy, {"lam": 2e-4}, {}, 2e-4),
             (noisy, {}, {"radius_map": rm}, aif.NOISE_LAM_PER_SIGMA * s),  # a trusted map: the same rule
             (clean, {}, {}, aif.ESTIMATED_MAP_LAM),
             (clean, {"radius_check": False}, {}, aif.UNCHECKED_MAP_LAM),
             (noisy, {"mode": "fast"}, {}, sv.FAST_LAM_PER_SIGMA * s),
             (noisy, {"mode": "fast"}, {"radius_map": rm}, sv.FAST_LAM_PER_SIGMA * s),
             (noisy, {"mode": "fast", "lam": 0.02}, {}, 0.02),
             (clean, {"mode": "fast"}, {}, sv._FAST_LAM)]
    for img, kw, run_kw, expect in cases:
        kw = {"mode": "sv-admm", **kw}
        with pytest.raises(Seen):
            AllInFocus(estimator_options=opts, **kw).run(img, **run_kw)
        assert seen.pop() == pytest.approx(expect, rel=1e-6), (kw, run_kw)


def test_cli_says_when_the_noise_sets_the_tv_weight(tmp_path, natural_rgb, capsys):
    import json

    from gpudeblur import cli
    from gpudeblur.io import write_image

    _, y = _scene(natural_rgb, sigma=0.05)
    src, out, rep = tmp_path / "noisy.png", tmp_path / "o.png", tmp_path / "r.json"
    write_image(str(src), y, bit_depth=16)
    assert cli.main(["allinfocus", str(src), str(out), "--mode", "sv-admm", "--iters", "2", "--backend", "cpu",
                     "--report", str(rep)]) == 0
    said = capsys.readouterr().out
    r = json.loads(rep.read_text())
    assert f"noisy input (sigma ~{r['noise_sigma']:.2g}): sv-admm's TV weight was {r['lam']:.2g}" in said
    assert cli.main(["allinfocus", str(src), str(out), "--mode", "sv-admm", "--iters", "2", "--backend", "cpu",
                     "--lam", "1e-3", "--report", str(rep), "--overwrite"]) == 0
    assert "noisy input" not in capsys.readouterr().out and json.loads(rep.read_text())["lam"] == 1e-3


def test_merge_small_layers():
    """A blind layer with fewer pixels than its PSF's support joins the non-small out-of-focus layer of the nearest
    radius (its index stays, empty, radius NaN); the in-focus layer and a layer with no other to join stay."""
    from gpudeblur import psf
    from gpudeblur.allinfocus import merge_small_layers

    labels = np.zeros((40, 40), np.int32)
    labels[:, 20:] = 1  # 800 px at 2 px
    labels[2:10, 2:10] = 3  # 64 px at 6 px: under 13² = 169
    labels[30:31, 30:32] = 2  # 2 px at 4 px: under 9² = 81
    radii = [0.0, 2.0, 4.0, 6.0]
    out, r, merged = merge_small_layers(labels, radii)
    assert merged == {2: 1, 3: 1}
    assert r[:2] == radii[:2] and np.isnan(r[2]) and np.isnan(r[3])
    assert (out[labels == 3] == 1).all() and (out[labels == 2] == 1).all() and (out[labels == 0] == 0).all()
    assert (labels == 3).sum() == 64  # the input is not changed
    # a 13x13 patch at 6 px is as large as its disc: it keeps its own layer; so does one with nowhere to go
    big = labels.copy()
    big[2:15, 2:15] = 3
    assert merge_small_layers(big, radii)[2] == {2: 1}
    alone = np.where(labels == 3, 3, 0).astype(np.int32)
    assert merge_small_layers(alone, [0.0, float("nan"), float("nan"), 6.0])[2] == {}
    # another family's support: a Gaussian of σ 6 is much wider than a 6 px disc
    assert merge_small_layers(big, radii, psf.gaussian)[2] == {2: 1, 3: 1}


def test_blind_pipeline_joins_a_small_layer(monkeypatch, natural_rgb, tmp_path, capsys):
    """The blind pipeline deblurs a small layer's pixels with the layer it joined (one call, their union as mask),
    reports it, and the CLI says so."""
    import json

    import gpudeblur.blind as blind_mod
    from gpudeblur import cli
    from gpudeblur.io import write_array, write_image

    masks = []

    def fake(image, mask, **kw):
        masks.append(to_host(mask) > 0)  # a CuPy array where 'auto' is the GPU
        return image, np.ones((1, 1)), {}

    monkeypatch.setattr(blind_mod, "blind_deblur_layer", fake)
    rm = np.zeros(natural_rgb.shape[:2])
    rm[:, 64:] = 3.0
    rm[10:18, 20:28] = 6.0  # 64 px at 6 px
    out, res = AllInFocus(mode="blind", layers=2).run(natural_rgb, radius_map=rm)
    assert res.merged_layers == {2: 1} and len(masks) == 1
    assert masks[0].sum() == (rm > 0).sum() and masks[0][10:18, 20:28].all()
    assert res.report()["merged_layers"] == {"2": 1} and res.report()["layer_radii"][2] is None
    src, mp, o = tmp_path / "in.png", tmp_path / "m.npy", tmp_path / "o.png"
    write_image(str(src), natural_rgb, bit_depth=16)
    write_array(str(mp), rm.astype(np.float32))
    assert cli.main(["allinfocus", str(src), str(o), "--map", str(mp), "--mode", "blind", "--layers", "2",
                     "--backend", "cpu"]) == 0
    assert "layer 2 had fewer pixels than its kernel covers; joined to layer 1 (r~3.0 px)" in capsys.readouterr().out


def _sky_scene(natural_rgb, sigma=0.02, seed=5):
    """A noisy photo whose top 48 rows are a clear sky (flat, no texture above the noise) over a
    blurred photo: ``(sharp, noisy input)``."""
    sharp = natural_rgb.copy()
    sharp[:48] = (0.25, 0.35, 0.55)
    rm = np.full(sharp.shape[:2], 2.5)
    y = blur_spatially_varying(sharp, rm, radius_step=0.1, dtype="float64")
    return sharp, np.clip(y + sigma * np.random.default_rng(seed).standard_normal(y.shape), 0, 1)


def test_uninformed_weight_matches_its_definition(backend):
    from gpudeblur.allinfocus import UNINFORMED_CONFIDENCE, uninformed_weight

    c = np.array([[0.0, 0.05, 0.075, 0.1, 0.125], [0.15, 0.5, 1.0, np.nan, -0.1]], np.float32)
    w = to_host(uninformed_weight(backend.xp.asarray(c), 0.05, 0.15, backend=backend.name))
    ref = np.clip((0.15 - c.astype(np.float64)) / 0.1, 0, 1)
    ref[np.isnan(c)] = 1.0  # no confidence: uninformed
    np.testing.assert_allclose(w, ref, atol=1e-6)
    assert w.dtype == np.float32 and UNINFORMED_CONFIDENCE == (0.05, 0.15)
    for lo, hi in ((0.2, 0.1), (0.1, 0.1), (-0.1, 0.2), (0.1, 1.5)):
        with pytest.raises(ValueError):
            uninformed_weight(c, lo, hi)


def test_quietest_radii_against_a_full_fft():
    """:func:`quietest_radii` against the white-noise gain of the fast filter computed with a full
    complex FFT in float64: radius 0 at a low prior weight, a large radius's low-pass at a high one."""
    from gpudeblur import psf
    from gpudeblur.allinfocus import quietest_radii

    def gain(r, lam, n=128):
        k = psf.disc(r)
        pad = np.zeros((n, n))
        pad[: k.shape[0], : k.shape[1]] = k
        h = np.fft.fft2(np.roll(pad, (-(k.shape[0] // 2), -(k.shape[1] // 2)), (0, 1)))
        f = np.fft.fftfreq(n)
        d2 = 4 * np.sin(np.pi * f)[:, None] ** 2 + 4 * np.sin(np.pi * f)[None, :] ** 2
        return float(np.mean(np.abs(h) ** 2 / (np.abs(h) ** 2 + lam * d2) ** 2))

    for lam in (0.005, 0.03, 0.08):
        grid, q = quietest_radii(lam, max_radius=6, step=0.5, size=128)
        g = [gain(r, lam) for r in grid]
        ref = [grid[int(np.argmin(g[: i + 1]))] for i in range(len(grid))]
        np.testing.assert_array_equal(q, ref)
    assert quietest_radii(0.005, max_radius=8)[1].max() == 0  # a clean photo: no radius is quieter than 0
    assert quietest_radii(0.08, max_radius=8)[1][-1] >= 3  # a noisy one: a disc's low-pass is
    for bad in (dict(lam=-1.0), dict(lam=0.0), dict(lam=0.01, max_radius=-1), dict(lam=0.01, max_radius=np.nan),
                dict(lam=0.01, max_radius=np.inf), dict(lam=0.01, size=4), dict(lam=0.01, size=0)):
        with pytest.raises(ValueError):
            quietest_radii(**bad)


def test_fast_deconvolves_uninformed_pixels_with_the_quietest_radius(natural_rgb):
    """``fast`` on its own estimate deconvolves with :func:`quietest_radii`'s radius where the map's
    confidence is at most ``UNINFORMED_CONFIDENCE[0]`` (a clear sky: no texture above the noise, its
    radius a guess), moved that way by ``uninformed_weight`` between; the informed photo below is
    deblurred as before. ``sv-admm`` and a given map do not get it."""
    from gpudeblur.allinfocus import UNINFORMED_CONFIDENCE, quietest_radii, uninformed_weight

    sharp, y = _sky_scene(natural_rgb)
    on, res = AllInFocus(mode="fast").run(y)
    off, res_off = AllInFocus(mode="fast", shrink_uninformed=False).run(y)
    assert res_off.uninformed_shrunk is None and res.report()["uninformed_shrunk"] == res.uninformed_shrunk
    _, _, conf = AllInFocus()._map_estimator().estimate(y, scale=res.map_scale, return_info=True,
                                                        return_confidence=True)
    u = uninformed_weight(conf)
    assert res.uninformed_shrunk == pytest.approx(float(u.mean()), rel=1e-6)
    kept = conf <= UNINFORMED_CONFIDENCE[0]
    assert kept[:24].mean() > 0.9 and kept[64:].mean() < 0.05  # the sky (and the photo's flat lower right corner)
    np.testing.assert_array_equal(res.radius_map, res_off.radius_map)  # the same estimate ...
    r = res_off.deblur_map
    grid, q = quietest_radii(res.lam, max_radius=float(r.max()))
    quiet = q[np.clip(np.floor(r / 0.25).astype(int), 0, len(grid) - 1)]
    np.testing.assert_allclose(res.deblur_map, r - u * (r - quiet), rtol=1e-6, atol=1e-6)  # ... moved to the quietest
    assert res_off.deblur_map[kept].max() > 5 and res.deblur_map[kept].max() <= quiet[kept].max() < 5
    below = (slice(64, 100), slice(None))  # informed: deblurred as before (the radius bank now reaches 0)
    assert np.abs(on[below] - off[below]).max() < 5e-3
    assert psnr(on[below], sharp[below]) > psnr(y[below], sharp[below]) + 1.0
    _, res_sv = AllInFocus(mode="sv-admm", num_iter=2).run(y)
    assert res_sv.uninformed_shrunk is None
    _, res_given = AllInFocus(mode="fast").run(y, radius_map=res.radius_map, map_estimated=True)
    assert res_given.uninformed_shrunk is None
    with pytest.raises(ValueError, match="shrink_uninformed"):
        AllInFocus(shrink_uninformed="yes")
    for mode in ("sv-admm", "blind"):  # set explicitly where it cannot apply: refused ...
        with pytest.raises(ValueError, match="shrink_uninformed applies to mode 'fast'"):
            AllInFocus(mode=mode, shrink_uninformed=True)
        AllInFocus(mode=mode, shrink_uninformed=False)
    with pytest.warns(UserWarning, match=r"shrink_uninformed .*not applied \(the map is given\)"):  # ... or warned
        _, res_w = AllInFocus(mode="fast", shrink_uninformed=True).run(y, radius_map=res.radius_map,
                                                                       map_estimated=True)
    assert res_w.uninformed_shrunk is None
    with pytest.warns(UserWarning, match=r"not applied \(mode 'sv-admm'\)"):  # 'auto' ran sv-admm (a small image)
        AllInFocus(mode="auto", shrink_uninformed=True, num_iter=1).run(y[:48, :48],
                                                                       radius_map=res.radius_map[:48, :48])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default says nothing where it does not apply
        AllInFocus(mode="fast").run(y[:48, :48], radius_map=res.radius_map[:48, :48], map_estimated=True)


def test_fast_on_a_noisy_sky_read_large(natural_rgb, monkeypatch):
    """Where the clear sky of a sharp noisy photo reads a large radius, ``fast`` with that radius blows its
    noise up into blotches; with the quietest radius (0 at this weight; the default) the sky comes back
    smoother than the input. At a high weight the quietest radius is a disc's."""
    import gpudeblur.allinfocus as aif
    from gpudeblur.allinfocus import quietest_radii

    sharp = natural_rgb.copy()
    sharp[:80] = (0.25, 0.35, 0.55)
    y = np.clip(sharp + 0.01 * np.random.default_rng(11).standard_normal(sharp.shape), 0, 1)
    rmap = np.where(np.arange(128)[:, None] < 72, 8.0, 0.5) * np.ones((1, 128))  # the sky read as 8 px
    sky = (slice(8, 40), slice(8, -8))
    err = lambda a: float(np.mean((np.asarray(a, np.float64)[sky] - sharp[sky]) ** 2))  # noqa: E731
    import gpudeblur.blurmap.estimator as E

    real = E.BlurMapEstimator.estimate

    def read_large(self, image, **kw):  # the estimate, but the sky's radius is the guess under test
        out = real(self, image, **kw)
        return (rmap.astype(np.float32),) + tuple(out[1:]) if isinstance(out, tuple) else rmap.astype(np.float32)

    monkeypatch.setattr(E.BlurMapEstimator, "estimate", read_large)
    on, res = AllInFocus(mode="fast", radius_check=False, edge_cap=False, backend="cpu").run(y)
    off, _ = AllInFocus(mode="fast", radius_check=False, edge_cap=False, shrink_uninformed=False).run(y)
    assert res.uninformed_shrunk > 0.2
    # blotches: measured 1.44x (5.2x before session 37, when the 8 px filter also rang from the sharp lower part)
    assert err(off) > 1.25 * err(y)
    assert err(on) < 0.95 * err(y)  # radius 0: the prior's smoothing only (0.89x; the input kept: 1.0x)
    sky_px = np.zeros(rmap.shape, bool)
    sky_px[sky[0]] = True
    assert res.deblur_map[sky_px].max() == 0
    # a high weight (a noisy photo): the quietest radius is a disc's low-pass, not 0 -- exactly the table's
    grid, q = quietest_radii(0.08, max_radius=8.0)
    assert 3 <= q[-1] < 8
    _, hi = AllInFocus(mode="fast", lam=0.08, radius_check=False, edge_cap=False).run(y)
    np.testing.assert_array_equal(hi.deblur_map[sky_px], q[-1])
    # 'auto' running fast gets it; a map the caller says is not an estimate does not
    monkeypatch.setattr(aif, "AUTO_SV_ADMM_MAX_PIXELS", 0)
    _, res_auto = AllInFocus(radius_check=False, edge_cap=False, backend="cpu").run(y)  # auto: sv-admm on a GPU
    assert res_auto.mode == "fast" and res_auto.uninformed_shrunk == res.uninformed_shrunk
    _, res_trusted = AllInFocus(mode="fast", radius_check=False, edge_cap=False).run(y, map_estimated=False)
    assert res_trusted.uninformed_shrunk is None
