"""The compression error of a JPEG input (``gpudeblur.io.jpeg_compression_noise``)
and how the main job uses it.

References: Pillow reads the quantization tables independently; the
error itself is measured by encoding a known image with OpenCV's libjpeg
and comparing its decoded luminance with the luminance that was encoded.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from gpudeblur import AllInFocus, cli
from gpudeblur._jpeg import _ZIGZAG, quantization_tables
from gpudeblur.allinfocus import COMPRESSION_NOISE_SHARE, NOISE_FLOOR
from gpudeblur.io import jpeg_compression_noise, write_image


def _photos():
    from skimage import data

    astro = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    camera = np.repeat(cv2.resize(data.camera(), (256, 256), interpolation=cv2.INTER_AREA)[..., None], 3, -1)
    blurred = cv2.GaussianBlur(astro, (0, 0), 2.0)  # a defocused photo: few high frequencies left
    rng = np.random.default_rng(0)
    noisy = lambda x: np.clip(x + rng.normal(0, 0.3, x.shape), 0, 255).round().astype(np.uint8)  # noqa: E731
    return {"astronaut": noisy(astro), "camera": noisy(camera), "blurred": noisy(blurred)}


def _encode(rgb, quality, **params):
    flags = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for k, v in params.items():
        flags += [getattr(cv2, k), v]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), flags)
    assert ok
    return buf.tobytes()


def _luminance_error(rgb, data):
    """Measured variance of decoded Y minus the Y that was encoded ([0, 1] units)."""
    y0 = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    y = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    return float(np.mean((y - y0) ** 2)) / 255.0**2


def test_zigzag_order():
    # the first positions of JPEG's zigzag scan (ITU T.81 Figure 5), as row-major indices
    assert _ZIGZAG[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert _ZIGZAG[-3:].tolist() == [55, 62, 63] and sorted(_ZIGZAG) == list(range(64))


@pytest.mark.parametrize("quality", [10, 50, 75, 95, 100])
@pytest.mark.parametrize("params", [{}, {"IMWRITE_JPEG_PROGRESSIVE": 1},
                                    {"IMWRITE_JPEG_SAMPLING_FACTOR": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}])
def test_tables_match_pillow(quality, params):
    Image = pytest.importorskip("PIL.Image")
    data = _encode(_photos()["astronaut"], quality, **params)
    tables, frame, adobe = quantization_tables(data)
    ref = Image.open(io.BytesIO(data)).quantization  # row-major, as ours
    assert sorted(tables) == sorted(ref)
    for k in ref:
        assert np.array_equal(tables[k].ravel(), np.asarray(ref[k], float)), k
    assert frame[1] == 8 and len(frame[2]) == 3 and frame[2][0][3] == 0  # luminance first, table 0
    assert adobe is None


@pytest.mark.parametrize("name", ["astronaut", "camera", "blurred"])
def test_estimate_brackets_the_measured_error(name):
    """Stated tolerance: at least 0.9× and at most 5× the measured luminance error
    (an over-estimate by design; most on blurred photos), and decreasing with quality."""
    rgb = _photos()[name]
    last = np.inf
    for quality in (30, 50, 75, 90, 95):
        data = _encode(rgb, quality)
        est, true = jpeg_compression_noise(data), _luminance_error(rgb, data)
        assert 0.9 * true <= est <= 5.0 * true, (quality, est, true)
        assert est < last
        last = est


def test_grey_file_and_path_and_orientation(tmp_path):
    rgb = _photos()["camera"]
    grey = _encode(rgb[..., 0], 75)  # a one-component JPEG
    assert len(quantization_tables(grey)[1][2]) == 1
    colour = _encode(rgb, 75)
    v = jpeg_compression_noise(grey)
    assert v == pytest.approx(jpeg_compression_noise(colour), rel=0.05)  # grey RGB: the same luminance
    p = tmp_path / "g.jpg"
    p.write_bytes(grey)
    assert jpeg_compression_noise(p) == v and jpeg_compression_noise(str(p)) == v
    Image = pytest.importorskip("PIL.Image")
    # an EXIF Orientation does not move the blocks (the estimate reads the stored grid)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.open(io.BytesIO(colour)).save(buf, "JPEG", qtables="keep", subsampling="keep", exif=exif.tobytes())
    assert jpeg_compression_noise(buf.getvalue()) == pytest.approx(jpeg_compression_noise(colour), rel=0.02)


def test_not_a_jpeg_or_no_luminance(tmp_path):
    ok, png = cv2.imencode(".png", np.zeros((16, 16), np.uint8))
    assert jpeg_compression_noise(png.tobytes()) is None
    assert jpeg_compression_noise(b"\xff\xd8\xff\xd9") is None  # no frame
    assert quantization_tables(b"GIF89a") is None
    frame = bytes([8, 0, 16, 0, 16, 1, 1, 0x11, 0])  # 8-bit, 16x16, one component
    lossless = b"\xff\xd8\xff\xc3" + (2 + len(frame)).to_bytes(2, "big") + frame + b"\xff\xd9"
    assert jpeg_compression_noise(lossless) == 0.0  # a lossless frame quantizes nothing
    assert jpeg_compression_noise(_encode(_photos()["camera"][:6, :6], 50)) is None  # no whole 8x8 block
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(buf, "JPEG")
    assert jpeg_compression_noise(buf.getvalue()) is None  # four components: no luminance to judge
    rgb = Image.fromarray(_photos()["camera"][:64, :64])
    buf = io.BytesIO()
    try:
        rgb.save(buf, "JPEG", keep_rgb=True)  # stored as R, G, B (Adobe transform 0): no luminance either
    except TypeError:  # Pillow < 10.2
        pytest.skip("this Pillow cannot write an RGB-coded JPEG")
    assert jpeg_compression_noise(buf.getvalue()) is None
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=75)
    assert jpeg_compression_noise(buf.getvalue()) > 0


def test_sixteen_bit_tables():
    Image = pytest.importorskip("PIL.Image")
    table = [300 + i for i in range(64)]  # steps above 255 need 16-bit DQT entries
    buf = io.BytesIO()
    Image.fromarray(_photos()["camera"][:64, :64, 0]).save(buf, "JPEG", qtables=[table])
    tables, frame, _ = quantization_tables(buf.getvalue())
    assert np.array_equal(tables[0].ravel(), np.asarray(Image.open(buf).quantization[0], float))
    assert tables[0].max() == 363


def test_pipeline_raises_the_map_noise():
    rgb = _photos()["blurred"][:96, :96] / 255.0
    plain = AllInFocus(mode="fast")
    assert plain.map_noise(rgb) < 1e-5
    v = 1e-4
    pipe = AllInFocus(mode="fast", compression_noise=v)
    assert pipe.map_noise(rgb) == pytest.approx(COMPRESSION_NOISE_SHARE * v)
    # explicit estimator options win (and the result then records no compression_noise); a higher floor holds
    for opts in ({"compression_noise": 2e-6}, {"noise": 3e-6}):
        _, r = AllInFocus(mode="fast", compression_noise=v, estimator_options=opts).run(rgb)
        assert r.compression_noise is None and r.map_noise < 1e-5
    assert AllInFocus(compression_noise=v, estimator_options={"compression_noise": 2e-6}).map_noise(rgb) < 1e-5
    assert AllInFocus(compression_noise=v, estimator_options={"noise": 3e-6}).map_noise(rgb) == 3e-6
    assert AllInFocus(compression_noise=v, estimator_options={"noise_floor": 3e-4}).map_noise(rgb) == 3e-4
    assert AllInFocus(compression_noise=0.0).map_noise(rgb) == plain.map_noise(rgb)
    assert AllInFocus(compression_noise=1e-9)._noise_floor() == NOISE_FLOOR
    _, res = pipe.run(rgb)
    assert res.compression_noise == v and res.map_noise == pytest.approx(COMPRESSION_NOISE_SHARE * v)
    assert res.report()["compression_noise"] == v
    with pytest.warns(UserWarning, match="compression_noise sets up the map's estimate; not used with a given map"):
        _, res = pipe.run(rgb, radius_map=np.zeros(rgb.shape[:2]))
    assert res.compression_noise is None and res.map_noise is None  # a given map: nothing estimated
    for bad in (-1e-4, 2.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="compression_noise"):
            AllInFocus(compression_noise=bad)


def test_pipeline_raises_the_tv_weight_for_a_compression_error(deblur_lam_spy):
    """``sv-admm`` on an estimated map takes ``max(ESTIMATED_MAP_LAM, COMPRESSION_LAM_PER_SIGMA·sqrt(v))`` where
    the map used ``compression_noise`` ``v``; a given weight, a given noise or the unchecked weight are left alone."""
    import gpudeblur.allinfocus as aif

    seen, Seen = deblur_lam_spy
    rgb = _photos()["blurred"][:64, :64] / 255.0
    opts = {"window": 31, "labeling": None}
    cases = [({"compression_noise": 4e-4}, aif.COMPRESSION_LAM_PER_SIGMA * 0.02),
             ({"compression_noise": 4e-4, "spread_select": False}, aif.COMPRESSION_LAM_PER_SIGMA * 0.02),
             ({"compression_noise": 1e-6}, aif.ESTIMATED_MAP_LAM),  # below the floor
             ({}, aif.ESTIMATED_MAP_LAM),
             ({"compression_noise": 4e-4, "lam": 2e-4}, 2e-4),  # a given weight wins
             ({"compression_noise": 4e-4, "radius_check": False}, aif.UNCHECKED_MAP_LAM),
             ({"compression_noise": 4e-4, "estimator_options": dict(opts, noise=1e-5)}, aif.ESTIMATED_MAP_LAM)]
    assert aif.COMPRESSION_LAM_PER_SIGMA * 0.02 > aif.ESTIMATED_MAP_LAM
    for kw, expect in cases:
        kw.setdefault("estimator_options", opts)
        with pytest.raises(Seen):
            AllInFocus(mode="sv-admm", **kw).run(rgb)
        assert seen.pop() == pytest.approx(expect, rel=1e-12), kw
    with pytest.raises(Seen):  # fast has no TV weight: its own noise-adaptive default, whatever v
        AllInFocus(mode="fast", compression_noise=4e-4, estimator_options=opts).run(rgb)
    assert seen.pop() == 0.015
    with pytest.raises(Seen), pytest.warns(UserWarning, match="not used with a given map"):
        # a caller's map, even called estimated, did not use v (and says so)
        AllInFocus(mode="sv-admm", compression_noise=4e-4).run(rgb, radius_map=np.full(rgb.shape[:2], 2.0),
                                                               map_estimated=True)
    assert seen.pop() == aif.ESTIMATED_MAP_LAM


def test_estimator_divides_the_compression_floor_by_the_scale():
    from gpudeblur.blurmap import BlurMapEstimator

    rgb = _photos()["blurred"][:128, :128] / 255.0
    c = 4e-4
    est = BlurMapEstimator(window=31, noise="auto", labeling=None, compression_noise=c)
    assert est.noise_for(rgb) == pytest.approx(c)
    _, info = est.estimate(rgb, return_info=True)
    assert info["noise"] == pytest.approx(c)
    _, info = est.estimate(rgb, scale=2, return_info=True)  # 2 x 2 means: a quarter of the variance
    assert info["noise"] == pytest.approx(c / 4)
    plain = BlurMapEstimator(window=31, noise="auto", labeling=None).estimate(rgb, scale=2, return_info=True)[1]
    assert plain["noise"] < c / 40  # the measurement alone does not see it
    assert BlurMapEstimator(noise=1e-4, compression_noise=c).noise_for(rgb) == 1e-4  # a given noise is used as given
    for bad in (-1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="compression_noise"):
            BlurMapEstimator(compression_noise=bad)


def test_cli_uses_a_jpeg_inputs_tables(tmp_path, capsys):
    rgb = _photos()["blurred"][:96, :96]
    data = _encode(rgb, 75)
    (tmp_path / "in.jpg").write_bytes(data)
    write_image(tmp_path / "in.png", rgb / 255.0)
    v = jpeg_compression_noise(data)

    def run(src, *extra):
        rc = cli.main(["allinfocus", str(tmp_path / src), str(tmp_path / "o.png"), "--mode", "fast", "--overwrite",
                       "--report", str(tmp_path / "r.json"), *extra])
        assert rc == 0
        return json.loads((tmp_path / "r.json").read_text()), capsys.readouterr().out

    rep, err = run("in.jpg")
    assert rep["compression_noise"] == pytest.approx(v) and rep["map_noise"] >= COMPRESSION_NOISE_SHARE * v * 0.999
    assert "JPEG input: compression error" in err and "TV weight" not in err  # fast has none
    from gpudeblur.allinfocus import COMPRESSION_LAM_PER_SIGMA, ESTIMATED_MAP_LAM

    lam = COMPRESSION_LAM_PER_SIGMA * np.sqrt(v)
    assert lam > ESTIMATED_MAP_LAM
    _, err = run("in.jpg", "--mode", "sv-admm", "--iters", "2")
    assert f"sv-admm's TV weight is {lam:.2g} (not 0.0003)" in err
    for extra in (["--lam", "1e-3"], ["--radius-check", "off"]):  # a given weight, the unchecked one: as they are
        _, err = run("in.jpg", "--mode", "sv-admm", "--iters", "2", *extra)
        assert "JPEG input" in err and "TV weight" not in err, extra
    (tmp_path / "q99.jpg").write_bytes(_encode(rgb, 99))  # 0.05·√v below 3e-4: the weight stays
    assert COMPRESSION_LAM_PER_SIGMA * np.sqrt(jpeg_compression_noise(tmp_path / "q99.jpg")) < ESTIMATED_MAP_LAM
    _, err = run("q99.jpg", "--mode", "sv-admm", "--iters", "2")
    assert "JPEG input: compression error" in err and "TV weight" not in err
    rep, err = run("in.jpg", "--compression-noise", "off")
    assert rep["compression_noise"] is None and rep["map_noise"] < COMPRESSION_NOISE_SHARE * v
    assert "JPEG input" not in err
    rep, err = run("in.png")
    assert rep["compression_noise"] is None and "JPEG input" not in err
    rep, err = run("in.jpg", "--noise", "1e-4")  # a given noise is used as given: nothing estimated or announced
    assert rep["compression_noise"] is None and rep["map_noise"] == 1e-4 and "JPEG input" not in err
    np.save(tmp_path / "m.npy", np.zeros(rgb.shape[:2], np.float32))
    rc = cli.main(["-q", "allinfocus", str(tmp_path / "in.jpg"), str(tmp_path / "o.png"), "--overwrite",
                   "--map", str(tmp_path / "m.npy"), "--compression-noise", "auto"])
    assert rc == 2 and "--compression-noise applies to an estimated map" in capsys.readouterr().err


def test_blurmap_cli_floors_an_auto_noise_for_a_jpeg(tmp_path, capsys):
    rgb = _photos()["blurred"][:64, :64]
    data = _encode(rgb, 75)
    (tmp_path / "in.jpg").write_bytes(data)
    floor = COMPRESSION_NOISE_SHARE * jpeg_compression_noise(data)
    for noise, expect in (("auto", floor), ("1e-4", 1e-4)):  # a given variance is used as given
        rc = cli.main(["blurmap", str(tmp_path / "in.jpg"), str(tmp_path / "m.npy"), "--window", "31", "--labeling", "none",
                       "--noise", noise, "--overwrite"])
        out = capsys.readouterr().out
        assert rc == 0 and f"noise {expect:.3g}," in out, out
        assert ("JPEG input" in out) == (noise == "auto")


def _blurred_jpeg():
    """A 128² photo blurred by a disc of radius 3, σ = 0.01 noise, saved at quality 75:
    ``(sharp, psf, decoded image, compression_noise estimate)``."""
    import gpudeblur as gd
    from gpudeblur import psf

    sharp = cv2.resize(_photos()["astronaut"], (128, 128), interpolation=cv2.INTER_AREA) / 255.0
    k = psf.disc(3.0)
    blurred = np.clip(gd.fftconvolve(sharp, k) + np.random.default_rng(1).normal(0, 0.01, sharp.shape), 0, 1)
    data = _encode(np.rint(blurred * 255).astype(np.uint8), 75)
    y = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] / 255.0
    return sharp, k, y, jpeg_compression_noise(data)


def test_admm_tv_default_weight_counts_the_compression_error():
    import gpudeblur as gd

    sharp, k, y, v = _blurred_jpeg()
    sigma = gd.estimate_noise(y)
    assert sigma**2 < v / 4  # the measurement misses most of it
    with_v = gd.admm_tv(y, k, compression_noise=v)
    assert np.array_equal(with_v, gd.admm_tv(y, k, lam=0.1 * np.sqrt(sigma**2 + v)))
    assert np.array_equal(gd.admm_tv(y, k, compression_noise=0.0), gd.admm_tv(y, k))
    assert np.array_equal(gd.admm_tv(y, k, lam=1e-3, compression_noise=v), gd.admm_tv(y, k, lam=1e-3))  # given wins
    psnr = lambda x: 10 * np.log10(1 / np.mean((np.clip(x, 0, 1) - sharp) ** 2))  # noqa: E731
    assert psnr(with_v) > psnr(gd.admm_tv(y, k)) + 0.5, (psnr(with_v), psnr(gd.admm_tv(y, k)))
    for bad in (-1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="compression_noise"):
            gd.admm_tv(y, k, compression_noise=bad)


def _tapered(y, k, share=0.2):
    """``y`` (M, N, C) tapered towards each channel's mean for the GCV score: a raised cosine over ``share`` of
    each side (at least the PSF's size, at most half the side), sample centres at half steps."""
    def ramp(n, width):
        width = min(max(int(width), 0), n // 2)
        v = np.ones(n)
        for i in range(width):
            v[i] = v[n - 1 - i] = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / width)
        return v

    M, N = y.shape[:2]
    w = np.outer(ramp(M, max(k.shape[0], share * M)), ramp(N, max(k.shape[1], share * N)))[..., None]
    mean = y.mean(axis=(0, 1), keepdims=True)
    return mean + (y - mean) * w


def _balance_reference(y, k, noise_var=None):
    """Float64 NumPy reference of ``wiener``'s estimated balance on a periodic image: full 2-D DFTs, the PSF
    and the 5-point Laplacian circularly centred at the origin; generalized cross-validation
    ``Σ|(1 − a)G|² / (Σ(1 − a))²`` (of the data as given: pass them tapered, :func:`_tapered`, as ``wiener``
    scores them), or with ``noise_var`` the predictive risk ``Σ|(1 − a)G|²/n² + 2σ²Σa/n`` (per channel,
    summed), minimized on the documented grid (36 points over [1e-7, 10], then 21 around the best)."""
    M, N, C = y.shape

    def otf(kernel):
        pad = np.zeros((M, N))
        h, w = kernel.shape
        pad[:h, :w] = kernel
        return np.fft.fft2(np.roll(pad, (-(h // 2), -(w // 2)), axis=(0, 1)))

    h2 = np.abs(otf(k)) ** 2
    r2 = np.abs(otf(np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float))) ** 2  # |R|² of the Laplacian
    g2 = sum(np.abs(np.fft.fft2(y[..., c])) ** 2 for c in range(C))
    n = M * N

    def score(b):
        a = h2 / (h2 + b * r2)
        if noise_var is None:
            return ((1 - a) ** 2 * g2).sum() / (1 - a).sum() ** 2
        return ((1 - a) ** 2 * g2).sum() / n**2 + C * 2 * noise_var * a.sum() / n

    grid = np.geomspace(1e-7, 10.0, 36)
    i = int(np.argmin([score(b) for b in grid]))
    fine = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, 35)], 21)
    return float(fine[int(np.argmin([score(b) for b in fine]))])


def _jpeg_balance_reference(y, k, noise_var, y_gcv=None):
    """``wiener(..., compression_noise=)``'s balance: the larger of the predictive risk's (on the data) and GCV's
    (on the data tapered, ``y_gcv``; default :func:`_tapered` of a periodic image)."""
    return max(_balance_reference(y, k, noise_var), _balance_reference(_tapered(y, k) if y_gcv is None else y_gcv, k))


def test_wiener_balance_counts_the_compression_error():
    import gpudeblur as gd

    sharp, k, y, v = _blurred_jpeg()
    # the balance is the predictive-risk minimizer for σ̂² + 2v in each colour channel (float64, periodic: the
    # reference's grid), for σ̂² + v in a grey one, or GCV's where that is larger
    from gpudeblur.restoration import JPEG_COLOUR_ERROR_FACTOR

    assert JPEG_COLOUR_ERROR_FACTOR == 2.0
    for img, share in ((y, 2.0), (y[..., 1:2], 1.0)):
        b = _jpeg_balance_reference(img, k, gd.estimate_noise(img) ** 2 + share * v)
        got = gd.wiener(img, k, boundary="periodic", dtype="float64", compression_noise=v)
        assert np.array_equal(got, gd.wiener(img, k, b, boundary="periodic", dtype="float64")), share
    # luminance=True: the luma channel, v once
    luma = y @ np.array([0.299, 0.587, 0.114])
    b = _jpeg_balance_reference(luma[..., None], k, gd.estimate_noise(luma) ** 2 + v)
    kw = dict(boundary="periodic", dtype="float64", luminance=True)
    assert np.array_equal(gd.wiener(y, k, compression_noise=v, **kw), gd.wiener(y, k, b, **kw))
    # 'reflect': the score lives on the padded grid (n = the grid's pixels, not the image's)
    from gpudeblur._backend import get_backend
    from gpudeblur.convolution import BlurOperator

    op = BlurOperator(k, y.shape[:2], get_backend("cpu"), np.float64, boundary="reflect")
    grid = np.moveaxis(op.extend(np.moveaxis(y, -1, 0)), 0, -1)
    grid_gcv = np.moveaxis(op.extend(np.moveaxis(_tapered(y, k), -1, 0)), 0, -1)  # tapered, then padded
    assert grid.shape[0] > y.shape[0]
    nv = gd.estimate_noise(y) ** 2 + 2 * v
    assert _balance_reference(grid, k, nv) > _balance_reference(grid_gcv, k)  # here the risk estimate decides
    b = _jpeg_balance_reference(grid, k, nv, grid_gcv)
    kw = dict(boundary="reflect", dtype="float64")
    assert np.array_equal(gd.wiener(y, k, compression_noise=v, **kw), gd.wiener(y, k, b, **kw))
    # 0 is generalized cross-validation as before; a given balance wins
    assert np.array_equal(gd.wiener(y, k, compression_noise=0.0), gd.wiener(y, k))
    assert np.array_equal(gd.wiener(y, k, 1e-3, compression_noise=v), gd.wiener(y, k, 1e-3))
    psnr = lambda x: 10 * np.log10(1 / np.mean((np.clip(x, 0, 1) - sharp) ** 2))  # noqa: E731
    gcv, upre = psnr(gd.wiener(y, k)), psnr(gd.wiener(y, k, compression_noise=v))
    assert gcv < psnr(y) < upre - 1.0, (psnr(y), gcv, upre)  # GCV rings below the input; this gains
    for bad in (-1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="compression_noise"):
            gd.wiener(y, k, compression_noise=bad)


def test_wiener_balance_never_below_gcv_where_the_psf_is_wrong():
    """Half of the photo in focus, deconvolved with the other half's disc as a whole: the risk estimate, which
    trusts the model, runs towards the grid's floor; the balance then is GCV's."""
    import gpudeblur as gd
    from gpudeblur import psf

    sharp = cv2.resize(_photos()["camera"], (128, 128), interpolation=cv2.INTER_AREA) / 255.0
    k = psf.disc(3.0)
    y = np.asarray(gd.fftconvolve(sharp, k))
    y[:, :64] = sharp[:, :64]
    data = _encode(np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8), 90)
    y = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] / 255.0
    v = jpeg_compression_noise(data)
    nv = gd.estimate_noise(y) ** 2 + 2 * v
    assert _balance_reference(y, k, nv) < _balance_reference(_tapered(y, k), k) / 3
    kw = dict(boundary="periodic", dtype="float64")
    assert np.array_equal(gd.wiener(y, k, compression_noise=v, **kw), gd.wiener(y, k, **kw))


def test_deconv_cli_uses_a_jpeg_inputs_tables(tmp_path, capsys):
    rgb = _photos()["blurred"][:64, :64]
    (tmp_path / "in.jpg").write_bytes(_encode(rgb, 75))
    base = ["deconv", str(tmp_path / "in.jpg"), str(tmp_path / "o.png"), "--psf", "disc:2", "--overwrite",
            "--iters", "5"]
    assert cli.main(base) == 0 and "JPEG input: compression error" in capsys.readouterr().out
    assert cli.main(base + ["--compression-noise", "off"]) == 0 and "JPEG input" not in capsys.readouterr().out
    # the estimate reaches the solver: float outputs equal the API's with and without it
    import gpudeblur as gd
    from gpudeblur import psf
    from gpudeblur.io import read_image

    y = read_image(tmp_path / "in.jpg")[0]
    k = psf.from_spec("disc:2", y.shape)
    for extra, cn in (([], jpeg_compression_noise(tmp_path / "in.jpg")), (["--compression-noise", "off"], None)):
        argv = ["-q", "deconv", str(tmp_path / "in.jpg"), str(tmp_path / "o.tif"), "--psf", "disc:2", "--overwrite",
                "--iters", "5", "--bit-depth", "32", *extra]
        assert cli.main(argv) == 0
        ref = gd.admm_tv(y, k, num_iter=5, compression_noise=cn)
        assert np.array_equal(read_image(tmp_path / "o.tif")[0], ref.astype(np.float32)), extra
    assert cli.main(base + ["--lam", "1e-3"]) == 0 and "JPEG input" not in capsys.readouterr().out  # a given weight
    for extra, why in ((["--method", "rl", "--compression-noise", "off"], "not to rl"),
                       (["--lam", "1e-3", "--compression-noise", "auto"], "--lam was given")):
        assert cli.main(["-q"] + base + extra) == 2
        err = capsys.readouterr().err
        assert "--compression-noise applies to admm-tv's default --lam and wiener's estimated --balance only" in err
        assert why in err


def test_deconv_cli_wiener_on_a_jpeg(tmp_path, capsys):
    import gpudeblur as gd
    from gpudeblur import psf
    from gpudeblur.io import read_image

    rgb = _photos()["blurred"][:64, :64]
    (tmp_path / "in.jpg").write_bytes(_encode(rgb, 75))
    y = read_image(tmp_path / "in.jpg")[0]
    k = psf.from_spec("disc:2", y.shape)
    base = ["deconv", str(tmp_path / "in.jpg"), str(tmp_path / "o.tif"), "--psf", "disc:2", "--method", "wiener",
            "--overwrite", "--bit-depth", "32"]
    for extra, cn in (([], jpeg_compression_noise(tmp_path / "in.jpg")), (["--compression-noise", "off"], None)):
        assert cli.main(base + extra) == 0
        assert ("balance (predictive risk, x2 in each colour channel; at least GCV's)" in capsys.readouterr().out) \
            == (cn is not None)
        ref = gd.wiener(y, k, compression_noise=cn)
        assert np.array_equal(read_image(tmp_path / "o.tif")[0], ref.astype(np.float32)), extra
    assert cli.main(base + ["--luminance"]) == 0  # the luma alone: v once
    out = capsys.readouterr().out
    assert "balance (predictive risk; at least GCV's)" in out and "x2" not in out
    assert cli.main(base + ["--balance", "1e-3"]) == 0 and "JPEG input" not in capsys.readouterr().out
    assert cli.main(["-q"] + base + ["--balance", "1e-3", "--compression-noise", "auto"]) == 2
    assert "(--balance was given)" in capsys.readouterr().err


def test_every_command_says_when_a_jpeg_has_no_luminance(tmp_path, capsys):
    """A JPEG stored as R, G, B has no luminance to judge: ``deconv`` (admm-tv, wiener), ``blurmap --noise auto``
    and ``allinfocus`` say so in one status line and go on with the measured noise."""
    Image = pytest.importorskip("PIL.Image")
    photo = Image.fromarray(_photos()["blurred"][:64, :64])
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG")
    sources = [tmp_path / "cmyk.jpg"]
    try:
        photo.save(tmp_path / "rgb.jpg", "JPEG", keep_rgb=True)
        sources.append(tmp_path / "rgb.jpg")
    except TypeError:  # Pillow < 10.2 writes no RGB-coded JPEG: the CMYK one only
        pass
    line = "JPEG input without a luminance component"
    for src in map(str, sources):
        runs = [["deconv", src, str(tmp_path / "a.png"), "--psf", "disc:2", "--iters", "3"],
                ["deconv", src, str(tmp_path / "w.png"), "--psf", "disc:2", "--method", "wiener"],
                ["blurmap", src, str(tmp_path / "m.npy"), "--window", "31", "--labeling", "none", "--noise", "auto"],
                ["allinfocus", src, str(tmp_path / "o.png"), "--mode", "fast", "--window", "31"]]
        for argv in runs:
            assert cli.main(argv + ["--overwrite"]) == 0, argv
            out = capsys.readouterr().out
            assert out.count(line) == 1 and "compression error ~" not in out, (argv, out)
