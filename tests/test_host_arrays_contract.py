"""Arrays in, arrays out, for NumPy arrays on every backend: each public array function given
NumPy inputs returns NumPy arrays also when it computes on the GPU (moved there and back).
On a machine without a GPU the CPU variant runs; CI runs the 'cuda' variant on the CuPy
stand-in (``GPUDEBLUR_CUPY_STANDIN=1``), where a NumPy array reaching CuPy unmoved fails, as
``allinfocus.spread_choice``'s did."""

import numpy as np
import pytest

import gpudeblur as gd
from gpudeblur import allinfocus as aif
from gpudeblur import blind, spatially_varying as sv
from gpudeblur.blurmap import estimate_blur_map, segment_in_focus


@pytest.fixture
def scene(natural_rgb):
    img = np.ascontiguousarray(natural_rgb[:64, :64]).astype(np.float32)
    rmap = np.zeros(img.shape[:2], np.float32)
    rmap[:, 32:] = 3.0
    y = sv.blur_spatially_varying(img, rmap, backend="cpu")
    return img, rmap, y


def _calls(img, rmap, y, be):
    k = gd.psf.disc(2.0)
    mask = (rmap > 0).astype(np.float32)
    yield "fftconvolve", lambda: gd.fftconvolve(img, k, backend=be)
    for name, fn, kw in (("wiener", gd.wiener, {}), ("tikhonov", gd.tikhonov, {}),
                         ("inverse_filter", gd.inverse_filter, {}),
                         ("richardson_lucy", gd.richardson_lucy, {"num_iter": 2}),
                         ("richardson_lucy_tv", gd.richardson_lucy_tv, {"num_iter": 2}),
                         ("admm_tv", gd.admm_tv, {"num_iter": 2})):
        yield name, (lambda fn=fn, kw=kw: fn(y, k, backend=be, **kw))
    yield "blur_spatially_varying", lambda: sv.blur_spatially_varying(img, rmap, backend=be)
    yield "deconvolve_spatially_varying fast", lambda: sv.deconvolve_spatially_varying(y, rmap, method="fast", backend=be)
    yield "deconvolve_spatially_varying sv-admm", lambda: sv.deconvolve_spatially_varying(y, rmap, num_iter=2, backend=be)
    yield "in_focus_weight", lambda: aif.in_focus_weight(rmap, 1.5, 2.5, backend=be)
    yield "uninformed_weight", lambda: aif.uninformed_weight(np.full(rmap.shape, 0.1, np.float32), backend=be)
    yield "edge_cap", lambda: aif.edge_cap(y, rmap + 2, backend=be)
    yield "radius_check", lambda: aif.radius_check(y, rmap, backend=be)
    yield "saturation_mask", lambda: aif.saturation_mask(y, backend=be)
    yield "spread_choice", lambda: aif.spread_choice(y, img, 0.03, backend=be)
    yield "compose_layers", lambda: aif.compose_layers([y, img], (rmap > 0).astype(np.int32), backend=be)
    yield "blind_deblur_layer", lambda: blind.blind_deblur_layer(y, mask, kernel_size=9, n_outer=1, n_admm=2,
                                                                n_pga=2, n_final=2, backend=be)[0]
    yield "init_kernel_tung", lambda: blind.init_kernel_tung(y, mask, kernel_size=9, n_iter=2, backend=be)[0]
    yield "segment_in_focus", lambda: segment_in_focus(rmap, y, backend=be)
    yield "estimate_blur_map", lambda: estimate_blur_map(np.kron(y, np.ones((2, 2, 1), np.float32)), window=41,
                                                         backend=be)
    yield "AllInFocus fast", lambda: gd.AllInFocus(mode="fast", backend=be).run(y, radius_map=rmap)[0]
    yield "AllInFocus sv-admm", lambda: gd.AllInFocus(mode="sv-admm", num_iter=2, backend=be).run(y, radius_map=rmap)[0]


def test_numpy_in_numpy_out(backend, scene):
    img, rmap, y = scene
    bad = []
    for name, call in _calls(img, rmap, y, backend.name):
        out = call()
        for i, o in enumerate(out if isinstance(out, tuple) else (out,)):
            if hasattr(o, "shape") and not isinstance(o, np.ndarray):
                bad.append(f"{name} [{i}]: {type(o).__module__}.{type(o).__name__}")
    assert not bad, "NumPy in, not NumPy out: " + "; ".join(bad)
