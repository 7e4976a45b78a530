"""All-in-focus quality and speed benchmark (the main job).

Quality, with ground truth: sharp natural images (scikit-image data, public
domain/CC0) are blurred by a known disc-blur map — layered (in-focus subject,
two background layers) and smoothly varying (ramp 0→8 px) — synthesised with
a fine PSF bank (0.1 px steps, so the solvers' 0.5 px bank is not an
inverse crime), plus white noise σ_n² = 1e-6 (the paper's level). For every
mode we report PSNR/SSIM of the result with the TRUE map and with the
ESTIMATED map (gpudeblur.blurmap; the pipeline then treats it as uncertain,
``allinfocus.MAP_UNCERTAINTY``), the input, and the Gaussian-kernel
baseline (the same solver with Gaussian PSFs of equal second moment,
σ = r/2, instead of discs).

Speed: seconds per mode on 1 MP and 12 MP RGB (CPU, and GPU when present),
warm-up excluded, device-synchronized, median of repeats: the ``fast`` and
``sv-admm`` deconvolutions with an exact and an uncertain map, and the whole
``blind`` pipeline on a layered map (see :func:`timing`).

    python bench/bench_allinfocus.py [--size 192] [--modes fast,sv-admm,blind]
    python bench/bench_allinfocus.py --skip-quality --timing-sizes 1,12 [--timing-modes fast]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_OUT,
    finish_machine_info,
    fmt_s,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    result_stem,
    time_call,
    write_results,
)

import gpudeblur as gd  # noqa: E402
from gpudeblur.allinfocus import (MAP_UNCERTAINTY, AllInFocus, edge_cap, radius_check, saturation_mask,  # noqa: E402
                                  scaled_map_uncertainty)
from gpudeblur.spatially_varying import blur_spatially_varying, deconvolve_spatially_varying  # noqa: E402


#: ``AllInFocus(spread_select=...)`` for the sv-admm runs (``--spread-select``); None: the
#: pipeline's default
SPREAD_SELECT_OPTION = None
#: ``tv_channels`` of every sv-admm run, the Gaussian-kernel baseline's too (``--tv-channels``);
#: None: the default (``'separate'``)
TV_CHANNELS_OPTION = None


def _pipe(mode="auto", **kw):
    """``AllInFocus`` with the bench's ``--spread-select`` and ``--tv-channels`` where they apply."""
    if SPREAD_SELECT_OPTION is not None and mode not in ("fast", "blind"):
        kw["spread_select"] = SPREAD_SELECT_OPTION
    if TV_CHANNELS_OPTION is not None and mode not in ("fast", "blind"):
        kw["tv_channels"] = TV_CHANNELS_OPTION
    return AllInFocus(mode=mode, **kw)


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def ssim(a, b):
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), b, data_range=1.0, channel_axis=-1 if b.ndim == 3 else None))


def images(size):
    """The three quality photos as sharp scenes (central squares, :func:`sharp_photo`)."""
    return {name: sharp_photo(name, size, centre=True) for name in ("astronaut", "coffee", "chelsea")}


def maps(size):
    """The two ground-truth maps on a ``size`` square, or an ``(M, N)`` ``size``."""
    M, N = (size, size) if np.isscalar(size) else size
    yy, xx = np.mgrid[:M, :N].astype(np.float64)
    yy /= M - 1
    xx /= N - 1
    layered = np.full((M, N), 5.0)
    layered[yy > 0.55] = 2.5  # nearer background layer
    subject = (yy - 0.45) ** 2 / 0.09 + (xx - 0.5) ** 2 / 0.04 < 1  # in-focus ellipse
    layered[subject] = 0.0
    ramp = 8.0 * xx
    return {"layered": layered, "ramp": ramp}


def gaussian_family(r):
    return gd.psf.gaussian(r / 2.0)


def quality(size, modes, estimate=True):
    rows = []
    rng = np.random.default_rng(0)
    for iname, img in images(size).items():
        for mname, rm in maps(size).items():
            y = blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
            y = np.clip(y + 1e-3 * rng.standard_normal(y.shape), 0, 1)
            rec = {"image": iname, "map": mname, "input_psnr": psnr(y, img), "input_ssim": ssim(y, img)}
            est = None
            if estimate:
                t0 = time.perf_counter()
                # the pipeline's own estimator (coherent labeling with its small-radius
                # prior), told the simulation's noise level as the paper does
                est = np.asarray(AllInFocus(estimator_options={"noise": 1e-6}).estimate_map(y))
                rec["map_time_s"] = time.perf_counter() - t0
                rec["map_mse"] = float(np.mean((est - rm) ** 2))
            for mode in modes:
                # "true": the true map, trusted (exact weights, no checks); "hedged": the true
                # map treated as an estimate (the spread, keep-in-focus, edge cap, radius
                # check, TV weight and sv-admm's spread selection an estimated map gets), so est − hedged is what the
                # map's errors cost and hedged − true what the hedge costs
                # (blind reads the map the same way either way: no hedged run)
                hedged = rm if (est is not None and mode != "blind") else None
                for which, m in (("true", rm), ("hedged", hedged), ("est", est)):
                    if m is None:
                        continue
                    t0 = time.perf_counter()
                    out, _ = _pipe(mode).run(y, radius_map=m, map_estimated=which != "true")
                    rec[f"{mode}_{which}_psnr"] = psnr(out, img)
                    rec[f"{mode}_{which}_ssim"] = ssim(out, img)
                    rec[f"{mode}_{which}_s"] = time.perf_counter() - t0
            g = deconvolve_spatially_varying(y, rm, method="sv-admm", family=gaussian_family,
                                             tv_channels=TV_CHANNELS_OPTION)
            rec["gaussian_true_psnr"] = psnr(g, img)
            rec["gaussian_true_ssim"] = ssim(g, img)
            log(f"{iname}/{mname}: " + ", ".join(f"{k}={v:.3f}" for k, v in rec.items() if isinstance(v, float)))
            rows.append(rec)
    return rows


#: The sharp photos of the no-blur rows (scikit-image), also the noisy rows' sharp scenes.
SHARP_PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket")


def sharp_photo(name, size, centre=False):
    """A scikit-image photo as a sharp RGB scene: its top-left (``centre``: central) square, resized to
    ``size`` (area)."""
    from skimage import data
    import cv2

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.dstack([img] * 3)
    s = min(img.shape[:2])
    y0, x0 = ((img.shape[0] - s) // 2, (img.shape[1] - s) // 2) if centre else (0, 0)
    crop = img[y0 : y0 + s, x0 : x0 + s]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0


def no_blur(size, modes):
    """Sharp photos (no blur at all) through the main job with the estimated map.

    The estimator reads in-focus content as 0.5–1.5 px; a serious tool must
    hand such a photo back essentially unchanged. Rows: PSNR against the
    sharp image of the input (noise σ = 1e-3 only, so ~60 dB) and of each
    mode's result, with the pipeline's default ``keep_in_focus`` and with it
    off (same estimated map; ``blind`` keeps its in-focus layer instead: no
    such column).
    """
    rows = []
    rng = np.random.default_rng(2)
    for name in SHARP_PHOTOS:
        img = sharp_photo(name, size)
        y = np.clip(img + 1e-3 * rng.standard_normal(img.shape), 0, 1)
        rec = {"image": name, "input_psnr": psnr(y, img)}
        rm = None
        for mode in modes:
            out, res = _pipe(mode).run(y, radius_map=rm, map_estimated=True)
            rm = res.radius_map
            rec[f"{mode}_psnr"] = psnr(out, img)
            rec[f"{mode}_nokeep_psnr"] = None  # blind keeps its in-focus layer instead
            if mode != "blind":
                off, _ = _pipe(mode, keep_in_focus=False).run(y, radius_map=rm, map_estimated=True)
                rec[f"{mode}_nokeep_psnr"] = psnr(off, img)
        rec["map_median"] = float(np.median(rm))
        rec["map_q90"] = float(np.quantile(rm, 0.9))
        log(f"no blur {name}: " + ", ".join(f"{k}={v:.2f}" for k, v in rec.items() if isinstance(v, float)))
        rows.append(rec)
    return rows


def no_blur_markdown(rows, modes):
    cols = ["image", "map median / q90 (px)", "input"] + [f"{m}{w}" for m in modes for w in ("", " (keep off)")]
    body = [[r["image"], f"{r['map_median']:.2f} / {r['map_q90']:.2f}", f"{r['input_psnr']:.2f}"]
            + ["—" if r[f"{m}{k}_psnr"] is None else f"{r[f'{m}{k}_psnr']:.2f}" for m in modes for k in ("", "_nokeep")]
            for r in rows]
    return [f"\n## No blur (sharp {len(rows)} photos, σ_n = 1e-3; PSNR dB against the sharp image)\n", markdown_table(cols, body)]


#: JPEG qualities of the ``jpeg`` section.
JPEG_QUALITIES = (75, 90, 95)


def jpeg_input(size, qualities=JPEG_QUALITIES):
    """JPEG inputs: the demo scene, the three photos on the layered map (σ_n =
    1e-3) and the three photos sharp, each compressed by libjpeg (OpenCV, 4:2:0)
    at ``qualities``, through the default pipeline with and without
    ``compression_noise`` (the value the ``allinfocus`` command passes for a JPEG
    IN). ``lum_err``: the measured variance of the decoded luminance against
    the encoded one; ``estimate``: :func:`gpudeblur.io.jpeg_compression_noise`."""
    import cv2

    from gpudeblur import demo
    from gpudeblur.data import sharp as bundled
    from gpudeblur.io import jpeg_compression_noise

    rng = np.random.default_rng(0)
    ref = np.asarray(bundled(), np.float64)
    scenes = [("demo", "layered", ref, demo.synthesize_scene(ref)[0])]
    for iname, img in images(size).items():
        y = blur_spatially_varying(img, maps(size)["layered"], radius_step=0.1, dtype="float64")
        scenes.append((iname, "layered", img, np.clip(y + 1e-3 * rng.standard_normal(y.shape), 0, 1)))
    for iname, img in images(size).items():
        scenes.append((iname, "sharp", img, np.clip(img + 1e-3 * rng.standard_normal(img.shape), 0, 1)))
    rows = []
    for quality in qualities:
        for iname, mname, img, y in scenes:
            u8 = np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            data = buf.tobytes()
            yq = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
            y_in = u8.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            y_out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float64)
            v = jpeg_compression_noise(data)
            rec = {"image": iname, "map": mname, "quality": quality, "estimate": v,
                   "lum_err": float(np.mean((y_out - y_in) ** 2)) / 255.0**2, "input_psnr": psnr(yq, img)}
            for key, cn in (("off", None), ("on", v)):
                out, res = _pipe(compression_noise=cn).run(yq)
                rec[f"{key}_psnr"] = psnr(out, img)
                rec[f"{key}_map_noise"] = res.map_noise
            log(f"jpeg q{quality} {iname}/{mname}: " + ", ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                                  if isinstance(v, float)))
            rows.append(rec)
    return rows


def jpeg_markdown(rows):
    body = [[r["quality"], r["image"], r["map"], f"{r['lum_err']:.2e}", f"{r['estimate']:.2e}",
             f"{r['off_map_noise']:.1e} / {r['on_map_noise']:.1e}", f"{r['input_psnr']:.2f}", f"{r['off_psnr']:.2f}",
             f"{r['on_psnr']:.2f}", f"{r['on_psnr'] - r['off_psnr']:+.2f}"] for r in rows]
    for quality in sorted({r["quality"] for r in rows}):
        for mname in ("layered", "sharp"):
            sel = [r for r in rows if r["quality"] == quality and r["map"] == mname]
            if sel:
                mean = lambda k: float(np.mean([r[k] for r in sel]))  # noqa: E731
                body.append([quality, "**mean**", mname, "", "", "", f"{mean('input_psnr'):.2f}", f"{mean('off_psnr'):.2f}",
                             f"{mean('on_psnr'):.2f}", f"{mean('on_psnr') - mean('off_psnr'):+.2f}"])
    cols = ["quality", "image", "map", "compression error (measured)", "estimate", "map noise off / on", "input",
            "off", "on", "on − off"]
    return ["\n## JPEG input (libjpeg 4:2:0; default pipeline; PSNR dB against the sharp image; off / on: without / "
            "with `compression_noise`, the estimate from the file's tables)\n", markdown_table(cols, body)]


#: Noise σ of the ``noisy`` section.
NOISE_SIGMAS = (0.01, 0.02, 0.05)


def noisy_input(size, modes, sigmas=NOISE_SIGMAS):
    """Noisy photos: the three photos on the layered and the ramp map and sharp,
    and the no-blur rows' two other photos sharp, central squares like the
    three's (camera; rocket, a clear sky round a sharp subject), with Gaussian noise of σ = ``sigmas`` (high-ISO
    photos: 0.05 is ~13 of 255 levels), clipped to [0, 1], through the
    default pipeline (``fast`` estimates the map, ``sv-admm`` takes that map
    as estimated). Rows: PSNR dB against the sharp image, the measured noise
    σ̂ and each mode's weight (``sv-admm``'s TV, ``fast``'s gradient prior)."""
    rows = []
    imgs = images(size)
    scenes = [(iname, img, list(maps(size).items()) + [("sharp", None)]) for iname, img in imgs.items()]
    scenes += [(name, sharp_photo(name, size, centre=True), [("sharp", None)]) for name in SHARP_PHOTOS
               if name not in imgs]
    for sigma in sigmas:
        rng = np.random.default_rng(int(round(sigma * 1e4)))  # per level: a subset run draws the same noise
        for iname, img, scene_maps in scenes:
            for mname, rm in scene_maps:
                y = img if rm is None else blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
                y = np.clip(y + sigma * rng.standard_normal(y.shape), 0, 1)
                rec = {"sigma": sigma, "image": iname, "map": mname, "input_psnr": psnr(y, img)}
                est = None
                # fast estimates the map (its shrink_uninformed needs the estimator's confidence) and
                # sv-admm takes it as estimated: the same map, as the estimator is deterministic
                for mode in sorted(modes, key=lambda m: m != "fast"):
                    out, res = _pipe(mode).run(y, radius_map=est, map_estimated=True)
                    est = res.radius_map
                    rec[f"{mode}_psnr"] = psnr(out, img)
                    rec[f"{mode}_lam"], rec["noise_sigma"] = res.lam, res.noise_sigma
                    if mode == "fast":
                        rec["fast_uninformed_shrunk"] = res.uninformed_shrunk
                log(f"noisy σ={sigma:g} {iname}/{mname}: " + ", ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                                       if isinstance(v, float)))
                rows.append(rec)
    return rows


def noisy_markdown(rows, modes):
    modes = sorted(modes, key=lambda m: m != "sv-admm")
    body = []
    for sigma in sorted({r["sigma"] for r in rows}):
        sel = [r for r in rows if r["sigma"] == sigma]
        for r in sel:
            body.append([f"{sigma:g}", r["image"], r["map"], f"{r['input_psnr']:.2f}"]
                        + [f"{r[f'{m}_psnr']:.2f}" for m in modes]
                        + [f"{r['noise_sigma']:.4f}"] + [f"{r[f'{m}_lam']:.2g}" for m in modes])
        mean = lambda k: float(np.mean([r[k] for r in sel]))  # noqa: E731
        body.append([f"{sigma:g}", "**mean**", "", f"{mean('input_psnr'):.2f}"] + [f"{mean(f'{m}_psnr'):.2f}" for m in modes]
                    + [""] * (1 + len(modes)))
    cols = ["σ", "image", "map", "input"] + modes + ["σ̂"] + [f"{m} weight" for m in modes]
    return ["\n## Noisy input (Gaussian noise σ; default pipeline, estimated map; PSNR dB against the sharp image)\n",
            markdown_table(cols, body)]


def highlights(size):
    """Clipped highlights: the bench photos on the layered map with up to 25 bright
    3×3 highlights (2–6× white, bokeh sources and glints; 25 random spots, those on
    the in-focus subject skipped) and one blown-out 30×35 patch in the blurred
    layers, blurred, clipped to [0, 1], σ_n = 1e-3.

    Rows: PSNR against the clipped sharp image of the input and of ``sv-admm``
    (its result clipped to [0, 1], as an image file stores it)
    with the true and the estimated map, each with the clipped values fitted
    one-sided (``saturation``, the default) and as ordinary data (off; the edge
    cap skips the rims of clipped plateaus either way).
    """
    rows = []
    rng = np.random.default_rng(3)
    rm = maps(size)["layered"]
    M, N = rm.shape
    for name, img in images(size).items():
        s = img.copy()
        for _ in range(25):
            cy, cx = rng.integers(5, M - 5, 2)
            if rm[cy, cx] > 0:
                s[cy - 1:cy + 2, cx - 1:cx + 2] = rng.uniform(2, 6)
        s[10:40, N - 42:N - 7] = 3.0
        y = blur_spatially_varying(s, rm, radius_step=0.1, dtype="float64")
        y = np.clip(np.clip(y, 0, 1) + 1e-3 * rng.standard_normal(y.shape), 0, 1)
        truth = np.clip(s, 0, 1)
        est = np.asarray(AllInFocus(estimator_options={"noise": 1e-6}).estimate_map(y))
        rec = {"image": name, "input_psnr": psnr(y, truth), "clipped": float(np.mean(saturation_mask(y)))}
        for which, m in (("true", rm), ("est", est)):
            for sat in (True, False):
                out, _ = _pipe(saturation=sat).run(y, radius_map=m, map_estimated=which == "est")
                # clipped to [0, 1] as an image file stores it: the one-sided fit leaves values
                # above white where the highlights were
                rec[f"{which}_{'on' if sat else 'off'}_psnr"] = psnr(np.clip(out, 0, 1), truth)
        log(f"highlights {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in rec.items() if isinstance(v, float)))
        rows.append(rec)
    return rows


def highlights_markdown(rows):
    cols = ["image", "clipped", "input", "true map, off", "true map, one-sided", "est. map, off", "est. map, one-sided"]
    body = [[r["image"], f"{100 * r['clipped']:.1f} %", f"{r['input_psnr']:.2f}"]
            + [f"{r[f'{w}_{o}_psnr']:.2f}" for w in ("true", "est") for o in ("off", "on")] for r in rows]
    mean = ["mean", "", f"{np.mean([r['input_psnr'] for r in rows]):.2f}"] + [
        f"{np.mean([r[f'{w}_{o}_psnr'] for r in rows]):.2f}" for w in ("true", "est") for o in ("off", "on")]
    return ["\n## Clipped highlights (layered map, up to 25 highlights + a blown-out patch, σ_n = 1e-3; `sv-admm`, "
            "PSNR dB of the result clipped to [0, 1] against the clipped sharp image; clipped: values ≥ "
            "`SATURATION_LEVEL`; off: clipped values fitted as data)\n",
            markdown_table(cols, body + [mean])]


#: Background radii (px) of the ``depth step`` rows.
DEPTH_STEP_RADII = (8.0, 16.0)


def depth_step(size, modes, radii=DEPTH_STEP_RADII):
    """A sharp subject in a strongly blurred background: the bench photos with an in-focus
    ellipse (the middle 44 % × 60 %) in a background blurred by one disc of each of
    ``radii`` (synthesised with the 0.1 px bank), σ_n = 1e-3. Rows: PSNR of the input
    and of each mode with the true map (trusted) and the estimated map, over the whole
    image and over the background (``bg``), where a sharp layer's edges can ring."""
    rows = []
    rng = np.random.default_rng(5)
    M = N = size
    yy, xx = np.mgrid[:M, :N]
    fg = ((yy - M / 2) / (M * 0.3)) ** 2 + ((xx - N / 2) / (N * 0.22)) ** 2 <= 1
    for r in radii:
        rm = np.where(fg, 0.0, r)
        for name, img in images(size).items():
            y = blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
            y = np.clip(y + 1e-3 * rng.standard_normal(y.shape), 0, 1)
            est = np.asarray(AllInFocus().estimate_map(y))
            rec = {"image": name, "radius": r, "input_psnr": psnr(y, img), "input_bg_psnr": psnr(y[~fg], img[~fg]),
                   "map_bg_median": float(np.median(est[~fg]))}
            for mode in modes:
                for which, m in (("true", rm), ("est", est)):
                    t0 = time.perf_counter()
                    out, _ = _pipe(mode).run(y, radius_map=m, map_estimated=which == "est")
                    out = np.clip(out, 0, 1)
                    rec[f"{mode}_{which}_psnr"] = psnr(out, img)
                    rec[f"{mode}_{which}_bg_psnr"] = psnr(out[~fg], img[~fg])
                    rec[f"{mode}_{which}_s"] = time.perf_counter() - t0
            log(f"depth step {r:g} px {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in rec.items() if isinstance(v, float)))
            rows.append(rec)
    return rows


def depth_step_markdown(rows, modes):
    cols = ["radius", "image", "map median (bg)", "input"] + [f"{m} ({w})" for m in modes for w in ("true", "est")]
    cell = lambda r, k: f"{r[f'{k}_psnr']:.2f} / {r[f'{k}_bg_psnr']:.2f}"  # noqa: E731
    keys = ["input"] + [f"{m}_{w}" for m in modes for w in ("true", "est")]
    body = []
    for radius in sorted({r["radius"] for r in rows}):
        sel = [r for r in rows if r["radius"] == radius]
        body += [[f"{radius:g}", r["image"], f"{r['map_bg_median']:.1f}"] + [cell(r, k) for k in keys] for r in sel]
        mean = {f"{k}{part}": np.mean([r[f"{k}{part}"] for r in sel]) for k in keys for part in ("_psnr", "_bg_psnr")}
        body.append([f"{radius:g}", "**mean**", ""] + [cell(mean, k) for k in keys])
    return ["\n## Depth step (a sharp ellipse in a background blurred by one disc, σ_n = 1e-3; PSNR dB whole / "
            "background, results clipped to [0, 1]; true: the true map, trusted; est: the estimated map)\n",
            markdown_table(cols, body)]


#: Timed map kinds: ramp maximum (px) and the map's uncertainty. ``wide`` is
#: what a large photo with strong defocus gets: radii to 24 px, read at
#: scale 4 (``auto`` above 2 MP) and so spread by ``scaled_map_uncertainty(4)``.
TIMING_MAPS = {"exact": (8.0, (0.0, 0.0)), "uncertain": (8.0, MAP_UNCERTAINTY), "wide": (24.0, scaled_map_uncertainty(4))}


def timing(sizes_mp, modes, backends, max_cpu_svadmm_mp=4.0, max_cpu_blind_mp=4.0, map_kinds=("exact", "uncertain", "wide")):
    """Median time per mode, size and backend.

    ``fast``/``sv-admm``: the deconvolution alone on a ramp map 0→8 px, once
    with the map taken as exact and once with the uncertainty an estimated map
    gets in the pipeline, and (``wide``) on a ramp 0→24 px with the spread of
    a map read at scale 4 (:data:`TIMING_MAPS`). ``blind``: ``AllInFocus(mode='blind').run`` on the
    layered map (in-focus ellipse, 2.5 and 5 px layers; kernel start, 20
    alternations and the final deconvolution per layer, composition). The image
    is white noise (the iteration counts are fixed, so content does not change
    the work). On the CPU ``sv-admm`` and ``blind`` are skipped above
    ``max_cpu_svadmm_mp`` / ``max_cpu_blind_mp`` megapixels (1 MP takes about
    a minute / several minutes on 2 cores). With ``fast`` or ``sv-admm``
    timed, the two checks the pipeline runs on an estimated map before
    either are timed too (rows ``edge-cap`` and ``radius-check``, on the
    ramp map, and on the wide one when ``wide`` is timed)."""
    rows = []
    rng = np.random.default_rng(1)
    limits = {"sv-admm": ("--max-cpu-svadmm-mp", max_cpu_svadmm_mp), "blind": ("--max-cpu-blind-mp", max_cpu_blind_mp)}
    for mp in sizes_mp:
        side = int(round(np.sqrt(mp * 1e6 / 1.5)))
        M, N = side, int(side * 1.5)
        img = rng.random((M, N, 3)).astype(np.float32)
        # one ramp per maximum radius: 'exact', 'uncertain' and the checks' 'ramp' share the 8 px one
        tops = {TIMING_MAPS["exact"][0]} | {TIMING_MAPS[kind][0] for kind in map_kinds}
        by_top = {top: np.tile(np.linspace(0, top, N, dtype=np.float32), (M, 1)) for top in tops}
        ramps = {kind: by_top[top] for kind, (top, _) in TIMING_MAPS.items() if top in by_top}
        layered = maps((M, N))["layered"].astype(np.float32)
        for bname in backends:
            be = gd.get_backend(bname)
            x = be.xp.asarray(img)
            checks = []
            if {"fast", "sv-admm"} & set(modes):
                for kind in ["ramp"] + (["wide"] if "wide" in map_kinds else []):
                    r = be.xp.asarray(ramps["exact" if kind == "ramp" else "wide"])
                    unc = MAP_UNCERTAINTY if kind == "ramp" else TIMING_MAPS["wide"][1]
                    # warm-up on the ramp's wide end, so every filter footprint and FFT plan is made there
                    checks += [(kind, "edge-cap", lambda x=x, r=r, be=be: edge_cap(x, r, backend=be),
                                lambda x=x, r=r, be=be: edge_cap(x[:256, -256:], r[:256, -256:], backend=be)),
                               (kind, "radius-check", lambda x=x, r=r, be=be, u=unc: radius_check(x, r, map_uncertainty=u, backend=be),
                                lambda x=x, r=r, be=be, u=unc: radius_check(x[:256, -256:], r[:256, -256:], map_uncertainty=u,
                                                                              backend=be))]
            for kind, name, fn, warm in checks:
                t, _ = time_call(fn, sync=be.synchronize, repeats=3, warmup=warm, budget_s=60)
                rows.append({"megapixels": mp, "shape": [M, N, 3], "backend": bname, "mode": name, "map": kind, **t.as_dict()})
                log(f"{mp} MP {bname} {name} ({kind}): {fmt_s(t.median)}")
            for mode in modes:
                if mode in limits and bname == "cpu" and mp > limits[mode][1]:
                    log(f"{mp} MP {bname} {mode}: skipped (above {limits[mode][0]} {limits[mode][1]:g})")
                    continue
                if mode == "blind":
                    r = be.xp.asarray(layered)
                    runs = [("layers", lambda x=x, r=r, be=be: AllInFocus(mode="blind", backend=be).run(x, radius_map=r),
                             lambda x=x, r=r, be=be: AllInFocus(mode="blind", backend=be, blind_options={"n_outer": 1, "n_final": 1}).run(
                                 x[:256, :384], radius_map=r[:256, :384]))]
                else:
                    kw = {"num_iter": 1} if mode == "sv-admm" else {}
                    runs = []
                    for mapkind in map_kinds:
                        # 'uncertain'/'wide': the weights an estimated map gets in the pipeline
                        r = be.xp.asarray(ramps[mapkind])
                        unc = dict(zip(("radius_sigma", "spatial_sigma"), TIMING_MAPS[mapkind][1]))
                        runs.append((mapkind,
                                     lambda x=x, r=r, be=be, unc=unc, mode=mode: deconvolve_spatially_varying(x, r, method=mode, backend=be, **unc),
                                     lambda x=x, r=r, be=be, unc=unc, mode=mode, kw=kw: deconvolve_spatially_varying(
                                         x[:256, -256:], r[:256, -256:], method=mode, backend=be, **kw, **unc)))
                for mapkind, fn, warm in runs:
                    t, _ = time_call(fn, sync=be.synchronize, repeats=3, warmup=warm, budget_s=60)
                    rows.append({"megapixels": mp, "shape": [M, N, 3], "backend": bname, "mode": mode, "map": mapkind, **t.as_dict()})
                    log(f"{mp} MP {bname} {mode} ({mapkind} map): {fmt_s(t.median)}")
    return rows


def quality_markdown(q, modes):
    kinds = ("true", "hedged", "est")
    cols = ["image", "map", "input"] + [f"{m} ({w})" for m in modes for w in kinds if f"{m}_{w}_psnr" in q[0]] + ["gaussian (true)"]
    rows = []
    for r in q:
        row = [r["image"], r["map"], f"{r['input_psnr']:.2f} / {r['input_ssim']:.3f}"]
        for m in modes:
            for w in kinds:
                if f"{m}_{w}_psnr" in r:
                    row.append(f"{r[f'{m}_{w}_psnr']:.2f} / {r[f'{m}_{w}_ssim']:.3f}")
        row.append(f"{r['gaussian_true_psnr']:.2f} / {r['gaussian_true_ssim']:.3f}")
        rows.append(row)
    mean = ["mean", "", f"{np.mean([r['input_psnr'] for r in q]):.2f}"]
    for m in modes:
        for w in kinds:
            if f"{m}_{w}_psnr" in q[0]:
                mean.append(f"{np.mean([r[f'{m}_{w}_psnr'] for r in q]):.2f}")
    mean.append(f"{np.mean([r['gaussian_true_psnr'] for r in q]):.2f}")
    rows.append(mean)
    md = ["## Quality (PSNR dB / SSIM), σ_n² = 1e-6\n",
          "true: the true map, trusted (exact weights, no checks); hedged: the true map through the estimated "
          "map's settings (spread, keep-in-focus, edge cap, radius check, TV weight; sv-admm: spread selection); "
          "est: the estimated map.\n",
          markdown_table(cols, rows)]
    gaps = []
    for m in modes:
        if f"{m}_est_psnr" in q[0] and f"{m}_hedged_psnr" in q[0]:
            mean = {w: np.mean([r[f"{m}_{w}_psnr"] for r in q]) for w in kinds}
            gaps.append(f"{m}: est − true {mean['est'] - mean['true']:+.2f} dB (the map's errors "
                        f"{mean['est'] - mean['hedged']:+.2f}, the hedge {mean['hedged'] - mean['true']:+.2f})")
    if gaps:
        md.append("\nMean gaps: " + "; ".join(gaps) + ".")
    if "map_mse" in q[0]:
        md.append("\nBlur-map MSE (px²): " + ", ".join(f"{r['image']}/{r['map']}: {r['map_mse']:.3f}" for r in q))
    return md


def _csv(choices=None, conv=str):
    """argparse type: a comma-separated list, each item converted and (optionally) one of ``choices``."""

    def parse(text):
        try:
            items = [conv(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"malformed list {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if choices is not None and not set(items) <= set(choices):
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(choices)}, got {text!r}")
        if conv is float and not all(v > 0 for v in items):
            raise argparse.ArgumentTypeError(f"sizes must be > 0, got {text!r}")
        if conv is int and not all(1 <= v <= 100 for v in items):
            raise argparse.ArgumentTypeError(f"JPEG qualities are 1-100, got {text!r}")
        return items

    return parse


_MODES = ("fast", "sv-admm", "blind")


def build_parser() -> argparse.ArgumentParser:
    """The options, all validated here (so ``gpu_session.py --dry-run`` catches a bad value)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192, help="side of the quality images")
    ap.add_argument("--modes", type=_csv(_MODES), default=["fast", "sv-admm"], help="quality modes (default fast,sv-admm)")
    ap.add_argument("--timing-sizes", type=_csv(conv=float), default=[1.0], help="megapixels, comma-separated (e.g. 1,12)")
    ap.add_argument("--timing-modes", type=_csv(_MODES), default=list(_MODES))
    ap.add_argument("--no-estimate", action="store_true", help="true maps only")
    ap.add_argument("--max-cpu-svadmm-mp", type=float, default=4.0, help="largest size timed for sv-admm on the CPU")
    ap.add_argument("--max-cpu-blind-mp", type=float, default=4.0, help="largest size timed for blind on the CPU")
    ap.add_argument("--timing-maps", type=_csv(tuple(TIMING_MAPS)), default=list(TIMING_MAPS),
                    help="map kinds timed for fast/sv-admm")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-no-blur", action="store_true", help="skip the sharp-photo rows")
    ap.add_argument("--skip-highlights", action="store_true", help="skip the clipped-highlight rows")
    ap.add_argument("--skip-jpeg", action="store_true", help="skip the JPEG-input rows")
    ap.add_argument("--skip-noisy", action="store_true", help="skip the noisy-input rows")
    ap.add_argument("--skip-depth-step", action="store_true", help="skip the depth-step rows")
    ap.add_argument("--noise-sigmas", type=_csv(conv=float), default=list(NOISE_SIGMAS), help="noise σ of the noisy rows")
    ap.add_argument("--jpeg-qualities", type=_csv(conv=int), default=list(JPEG_QUALITIES), help="JPEG qualities")
    ap.add_argument("--spread-select", choices=("on", "off"), default=None,
                    help="AllInFocus(spread_select=...) for every sv-admm row (quality, no blur, highlights, JPEG; default: "
                    "the pipeline's, on; 'on' warns on the true-map runs, where it does not apply)")
    ap.add_argument("--tv-channels", choices=("separate", "joint"), default=None,
                    help="tv_channels of every sv-admm run and of the Gaussian-kernel baseline (default: the "
                    "pipeline's, separate)")
    ap.add_argument("--backends", type=_csv(("cpu", "cuda")), default=None,
                    help="timed backends, comma-separated (default: cpu, plus cuda when a GPU is present)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    backends = ["cpu"] + (["cuda"] if gd.cuda_available() else [])
    if args.backends is not None:
        if "cuda" in args.backends and not gd.cuda_available():
            ap.error("--backends cuda: no working CUDA device here (see 'gpudeblur info')")
        backends = args.backends
    info = machine_info(gpu_name=gd.get_backend("cuda").device_name() if "cuda" in backends else None)
    modes = args.modes
    global SPREAD_SELECT_OPTION, TV_CHANNELS_OPTION
    SPREAD_SELECT_OPTION = None if args.spread_select is None else args.spread_select == "on"
    info["spread_select"] = "default" if args.spread_select is None else args.spread_select
    TV_CHANNELS_OPTION = args.tv_channels
    info["tv_channels"] = "default" if args.tv_channels is None else args.tv_channels
    q = [] if args.skip_quality else quality(args.size, modes, estimate=not args.no_estimate)
    nb_modes = [m for m in modes if m in ("fast", "sv-admm")]
    sharp_modes = [m for m in modes if m in ("fast", "sv-admm", "blind")]  # (blind: too slow for the other rows)
    nb = [] if (args.skip_no_blur or not sharp_modes) else no_blur(256, sharp_modes)
    hl = [] if (args.skip_highlights or "sv-admm" not in modes) else highlights(args.size)
    jp = [] if args.skip_jpeg else jpeg_input(max(args.size, 256), args.jpeg_qualities)
    ns = [] if (args.skip_noisy or not nb_modes) else noisy_input(args.size, nb_modes, args.noise_sigmas)
    ds = [] if (args.skip_depth_step or not nb_modes) else depth_step(max(args.size, 256), nb_modes)
    t = [] if args.skip_timing else timing(args.timing_sizes, args.timing_modes, backends, args.max_cpu_svadmm_mp,
                                         args.max_cpu_blind_mp, args.timing_maps)
    info = finish_machine_info(info)

    md = [f"# All-in-focus benchmark\n\n{machine_markdown(info)}\n- sv-admm `spread_select`: {info['spread_select']}\n"
          f"- sv-admm `tv_channels`: {info['tv_channels']}\n"]
    if q:
        md += quality_markdown(q, modes)
    if nb:
        md += no_blur_markdown(nb, sharp_modes)
    if hl:
        md += highlights_markdown(hl)
    if jp:
        md += jpeg_markdown(jp)
    if ns:
        md += noisy_markdown(ns, nb_modes)
    if ds:
        md += depth_step_markdown(ds, nb_modes)
    if t:
        md.append("\n## Time (median s, warm-up excluded)\n")
        md.append(markdown_table(["MP", "shape", "backend", "mode", "map", "median", "repeats"],
                                 [[r["megapixels"], "×".join(map(str, r["shape"])), r["backend"], r["mode"], r.get("map", "exact"),
                                   fmt_s(r["median_s"]), r["repeats"]] for r in t]))
    text = "\n".join(md) + "\n"
    paths = write_results(args.out, result_stem("allinfocus", info), {"machine": info, "quality": q, "no_blur": nb, "highlights": hl, "jpeg": jp,
                                                                   "noisy": ns, "depth_step": ds,
                                                                   "timing": t}, text)
    print(text)
    log(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
