"""Benchmark of the defocus blur-map estimator (Zhu et al., TIP 2013).

1. The simulated experiment of the paper's Fig. 8: natural sharp images
   (scikit-image: grass, astronaut, coffee, chelsea, gravel; the coherent
   labeling, slow on 2 cores, runs on the first ``--label-images``) blurred by a disc PSF whose radius varies smoothly over
   [0, 8] (a diagonal ramp; spatially varying blur rendered by blending
   the images blurred with radii 0, 0.5, ..., 8 with linear weights in r),
   white noise of variance 1e-6. Reports the blur-map MSE (paper: 0.022)
   of the raw global-maximum map and of the coherent labeling (when
   ``gpudeblur.blurmap.labeling`` exists), how often the global maximum is
   right (|r̂_1 - r*| < 0.5) and how often the true radius is among the top
   3 where the global maximum is not.
2. The CUHK photos in ``/work/shared/data/cuhk`` (if present): F-measure and
   IoU of the in-focus mask (``segment_in_focus``) against ``*_gt.png``
   (white = blurred), next to the same numbers for the thresholded
   ``*_hifst.png`` maps (Otsu threshold, bright = in focus). Our mask is
   eq. (17)-(18) with p̃ from the raw candidates, solved by exact min cut
   (the coherent labeling of a 640 x 480 photo takes minutes on 2 cores).
3. Time per stage at 500 x 500 (warm-up excluded, device-synchronized).

Run: ``python bench/bench_blurmap.py [--size 256] [--no-labeling] [--skip-cuhk] [--skip-timing]``.
Writes JSON + Markdown to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    PoolPeak,
    fmt_s,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    result_stem,
    set_pool_limit,
    write_results,
)

from gpudeblur import fftconvolve, psf  # noqa: E402
from gpudeblur._backend import get_backend  # noqa: E402
from gpudeblur.cli import positive_float  # noqa: E402
from gpudeblur.blurmap import BlurMapEstimator  # noqa: E402

CUHK = "/work/shared/data/cuhk"


def sharp_images(size: int):
    from skimage import data  # noqa: PLC0415

    ims = {
        "grass": data.grass() / 255.0,  # texture-rich (gray)
        "astronaut": data.astronaut() / 255.0,
        "coffee": data.coffee() / 255.0,
        "chelsea": data.chelsea() / 255.0,
        "gravel": data.gravel() / 255.0,  # texture-rich (gray)
    }
    out = {}
    for k, im in ims.items():
        M, N = im.shape[:2]
        y0, x0 = (M - size) // 2, (N - size) // 2
        out[k] = np.ascontiguousarray(im[y0 : y0 + size, x0 : x0 + size]).astype(np.float64)
    return out


def true_map(size: int, rmax: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return rmax * (xx + yy) / (2.0 * (size - 1))


def spatially_varying_disc(img: np.ndarray, rmap: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Blend images blurred by discs of radii 0, step, ..., max with linear weights in r."""
    radii = np.arange(0, rmap.max() + step + 1e-9, step)
    out = np.zeros_like(img)
    for k, r in enumerate(radii):
        w = np.clip(1.0 - np.abs(rmap - r) / step, 0, 1)
        if not w.any():
            continue
        b = fftconvolve(img, psf.disc(r), boundary="reflect", dtype=np.float64)
        out += (w[..., None] if img.ndim == 3 else w) * b
    return out


def fig8_experiment(size: int, labeling: bool, backend, label_images: int = 1) -> dict:
    rng = np.random.default_rng(0)
    rtrue = true_map(size)
    rows = {}
    for idx, (name, im) in enumerate(sharp_images(size).items()):
        lab_this = labeling and idx < label_images
        est = BlurMapEstimator(noise=1e-6, labeling="primal-dual" if lab_this else None, timings=True,
                               backend=backend)
        blurred = spatially_varying_disc(im, rtrue)
        blurred = blurred + rng.normal(0, 1e-3, blurred.shape)
        t0 = time.perf_counter()
        res = est.estimate(blurred.astype(np.float32), return_candidates=True)
        dt = time.perf_counter() - t0
        be = get_backend(backend)
        raw = be.to_host(res.raw_radius).astype(np.float64)
        cand = be.to_host(res.candidates).astype(np.float64)
        pl = be.to_host(res.likelihoods)
        ok1 = np.abs(raw - rtrue) < 0.5
        in3 = ((np.abs(cand - rtrue[..., None]) < 0.5) & (pl > 0)).any(axis=-1)
        m = 20  # half window: the border pixels see reflected data
        inner = (slice(m, -m), slice(m, -m))
        row = {
            "mse_raw": float(np.mean((raw - rtrue) ** 2)),
            "mse_raw_inner": float(np.mean((raw[inner] - rtrue[inner]) ** 2)),
            "global_max_right": float(ok1.mean()),
            "true_in_top3_where_global_wrong": float(in3[~ok1].mean()) if (~ok1).any() else float("nan"),
            "true_in_top3": float(in3.mean()),
            "time_s": dt,
            "timings": res.info["timings"],
        }
        if lab_this:
            lab = be.to_host(res.radius).astype(np.float64)
            row["mse_labeled"] = float(np.mean((lab - rtrue) ** 2))
            row["mse_labeled_inner"] = float(np.mean((lab[inner] - rtrue[inner]) ** 2))
        rows[name] = row
        log(f"fig8 {name}: {row}")
    return rows


def _otsu(x):
    import cv2  # noqa: PLC0415

    u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return u8 > t


def _scores(pred, gt):
    tp = np.sum(pred & gt)
    fp = np.sum(pred & ~gt)
    fn = np.sum(~pred & gt)
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    f = 2 * prec * rec / max(prec + rec, 1e-12)
    iou = tp / max(tp + fp + fn, 1)
    return {"precision": float(prec), "recall": float(rec), "f_measure": float(f), "iou": float(iou)}


def cuhk_experiment(labeling: bool, backend) -> dict:
    from gpudeblur.io import read_image  # noqa: PLC0415

    rows = {}
    files = sorted(f for f in glob.glob(os.path.join(CUHK, "*.jpg")))
    est = BlurMapEstimator(labeling=None, timings=True, backend=backend)
    for f in files:
        stem = f[:-4]
        name = os.path.basename(stem)
        img, _ = read_image(f)
        gt, _ = read_image(stem + "_gt.png")
        gt = gt if gt.ndim == 2 else gt[..., 0]
        in_focus_gt = gt < 0.5  # white = blurred
        t0 = time.perf_counter()
        res = est.estimate(img[..., :3], return_candidates=True)
        row = {"shape": list(img.shape[:2]), "time_estimate_s": time.perf_counter() - t0, "timings": res.info["timings"]}
        be = get_backend(backend)
        raw = be.to_host(res.raw_radius)
        row["raw_threshold_tau2"] = _scores(raw <= 2.0, in_focus_gt)
        if labeling:
            # eq. (17)-(18) with p~ from the raw candidates (no coherent labeling first), exact min cut
            t0 = time.perf_counter()
            mask, _ = est.segment(img[..., :3], res.raw_radius, candidates=res, method="min-cut")
            row["time_segment_s"] = time.perf_counter() - t0
            row["ours_segment_in_focus"] = _scores(be.to_host(mask).astype(bool), in_focus_gt)
        hp = stem + "_hifst.png"
        if os.path.exists(hp):
            h, _ = read_image(hp)
            h = h if h.ndim == 2 else h[..., 0]
            row["hifst_otsu"] = _scores(_otsu(h), in_focus_gt)
        rows[name] = row
        log(f"cuhk {name}: {row}")
    return rows


def stage_timing(size, backend, time_labeling: bool = False, peak_memory: bool = False, labeling_budgets=()) -> dict:
    """Stage times at ``size`` (an int: square crop of astronaut; ``(M, N)``: astronaut
    resized to that shape, e.g. 3000x4000 for 12 MP), ramp map 0-8.

    ``labeling_budgets`` (GiB): the labeling again with each memory budget
    (its tile layout), to see what the tile size does to the total time:
    each tile stops at its own certified gap, so a few hard tiles can
    dominate (``out['labeling_budgets']``)."""
    from skimage import data  # noqa: PLC0415

    if isinstance(size, int):
        img = data.astronaut()[:size, :size] / 255.0
        rmap = true_map(size)
    else:
        import cv2  # noqa: PLC0415

        M, N = size
        img = cv2.resize(data.astronaut(), (N, M), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        yy, xx = np.mgrid[0:M, 0:N].astype(np.float32)
        rmap = 8.0 * (xx / (N - 1) + yy / (M - 1)) / 2.0
    b = spatially_varying_disc(img, rmap).astype(np.float32)
    be = get_backend(backend)
    if be.name == "cuda":  # the test image was made on the GPU: its cached blocks would count against a pool limit
        be.xp.get_default_memory_pool().free_all_blocks()
    est = BlurMapEstimator(labeling=None, timings=True, backend=backend)
    est.estimate(b[:96, :96])  # warm-up: compiles the kernels
    be = get_backend(backend)
    be.synchronize()
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = est.estimate(b, return_candidates=True)
    be.synchronize()
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    out = {"size": size, "total_s": total, "process_cpu_s": cpu, "load_avg": os.getloadavg(), "stages": res.info["timings"], "fft_count": res.info["fft_count"],
           "tiles": res.info["tiles"], "device": be.device_name()}
    if peak_memory and be.name == "cuda":
        # one more, untimed run: the pool hook costs a Python call per allocation
        del res
        with PoolPeak(be) as pk:
            res = est.estimate(b, return_candidates=True)
            be.synchronize()
        out["pool_peak_bytes"] = pk.peak
        out["pool_peak_reserved_bytes"] = pk.peak_reserved
    t_lut = time.perf_counter()
    BlurMapEstimator(labeling=None, backend=backend).lut  # noqa: B018  (built on first use since session 26)
    out["stages"]["lut_build(init)"] = time.perf_counter() - t_lut
    from gpudeblur.blurmap.estimator import LABELING_MEMORY_BUDGET  # noqa: PLC0415
    from gpudeblur.blurmap.labeling import coherent_labeling  # noqa: PLC0415

    if time_labeling:
        t0 = time.perf_counter()
        _, linfo = coherent_labeling(res.candidates, res.likelihoods, b, max_radius=8.0, method="primal-dual",
                                     memory_budget=LABELING_MEMORY_BUDGET, backend=backend)
        be.synchronize()
        out["stages"]["labeling(primal-dual)"] = time.perf_counter() - t0
        out["labeling"] = {k: linfo[k] for k in ("energy", "lower_bound", "gap", "iterations", "levels",
                                                 "level_iterations", "label_steps", "label_iterations",
                                                 "label_range", "tiles", "tile_gaps", "tile_iterations",
                                                 "tile_label_iterations", "tile_seconds", "tile_shapes") if k in linfo}
    if labeling_budgets and not time_labeling:  # warm-up: compile the labeling's kernels outside the timings
        coherent_labeling(res.candidates[:96, :96], res.likelihoods[:96, :96], b[:96, :96], max_radius=8.0,
                          method="primal-dual", backend=backend)
        be.synchronize()
    for gib in labeling_budgets:
        t0 = time.perf_counter()
        _, linfo = coherent_labeling(res.candidates, res.likelihoods, b, max_radius=8.0, method="primal-dual",
                                     memory_budget=int(gib * 2**30), backend=backend)
        be.synchronize()
        secs = time.perf_counter() - t0
        label_its = linfo.get("tile_label_iterations", [linfo.get("label_iterations", [linfo["iterations"]])])
        out.setdefault("labeling_budgets", []).append({
            "budget_gib": gib, "seconds": secs, "tiles": linfo.get("tiles", 1), "energy": linfo["energy"],
            "fine_iterations": int(sum(it[0] for it in label_its)),
            "coarse_iterations": int(sum(sum(it[1:]) for it in label_its)),
            "slowest_tile_s": max(linfo.get("tile_seconds", [linfo["time"]])),
            "tile_label_iterations": label_its})
    log(f"timing {size}: {out}")
    return out


def _timing_size(text: str):
    """argparse type: ``N`` (a square crop of the 512² photo, int) or ``MxN`` (a resized photo, tuple;
    also ``N`` above 512, which the crop cannot give)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MxN, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 64:
        raise argparse.ArgumentTypeError(f"expected N or MxN with sides >= 64, got {text!r}")
    if len(parts) == 1:
        return parts[0] if parts[0] <= 512 else (parts[0], parts[0])
    return tuple(parts)


def _budgets(text: str):
    """argparse type: a comma list of positive GiB values."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of GiB, got {text!r}") from None
    if not vals or not all(np.isfinite(v) and v * 2**30 >= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive, finite GiB values (at least 1 byte), got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--timing-size", type=_timing_size, default=500,
                    help="side of the square timing image, or MxN (e.g. 3000x4000)")
    ap.add_argument("--no-labeling", action="store_true")
    ap.add_argument("--skip-fig8", action="store_true")
    ap.add_argument("--skip-cuhk", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--label-images", type=int, default=2, help="Fig. 8 images that also get the coherent labeling")
    ap.add_argument("--time-labeling", action="store_true")
    ap.add_argument("--pool-limit-gib", type=positive_float, default=None,
                    help="cuda: cap CuPy's memory pool (e.g. 22 to show a 24 GB card suffices)")
    ap.add_argument("--peak-memory", action="store_true", help="cuda: one more untimed run measuring the pool's peak")
    ap.add_argument("--labeling-budgets", type=_budgets, default=(),
                    help="comma list of GiB: the labeling again with each memory budget (tile layout)")
    ap.add_argument("--out", default=None)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    labeling = not args.no_labeling
    be = get_backend(args.backend)
    limit = set_pool_limit(be, args.pool_limit_gib)
    info = machine_info(gpu_name=be.device_name() if be.name == "cuda" else None)
    payload = {"machine": info, "backend": be.name, "labeling": labeling, "pool_limit_bytes": limit}
    md = ["# Blur map (Zhu et al. 2013) benchmark", "", machine_markdown(info), ""]
    if not args.skip_fig8:
        rows = fig8_experiment(args.size, labeling, be, args.label_images)
        payload["fig8"] = rows
        hdr = ["image", "MSE raw (all)", "MSE raw (inner)", "global max right", "true in top-3 where global wrong"]
        if labeling:
            hdr += ["MSE labeled (all)", "MSE labeled (inner)"]
        tab = []
        for k, r in rows.items():
            line = [k, f"{r['mse_raw']:.3f}", f"{r['mse_raw_inner']:.3f}", f"{r['global_max_right']:.3f}",
                    f"{r['true_in_top3_where_global_wrong']:.3f}"]
            if labeling:
                line += [f"{r['mse_labeled']:.3f}", f"{r['mse_labeled_inner']:.3f}"] if "mse_labeled" in r else ["—", "—"]
            tab.append(line)
        md += [f"## Fig. 8 simulation ({args.size}x{args.size}, disc radius ramp 0..8, noise 1e-6; paper MSE 0.022)", "",
               markdown_table(hdr, tab), "", "'right' = within 0.5 px; inner = 20 px border excluded.", ""]
    if not args.skip_cuhk and os.path.isdir(CUHK):
        rows = cuhk_experiment(labeling, be)
        payload["cuhk"] = rows
        tab = []
        for k, r in rows.items():
            for meth in ("ours_segment_in_focus", "labeled_threshold_tau2", "raw_threshold_tau2", "hifst_otsu"):
                if meth in r:
                    s = r[meth]
                    tab.append([k, meth, f"{s['f_measure']:.3f}", f"{s['iou']:.3f}", f"{s['precision']:.3f}",
                                f"{s['recall']:.3f}"])
        md += ["## CUHK in-focus segmentation (in-focus class; GT white = blurred)", "",
               markdown_table(["image", "method", "F-measure", "IoU", "precision", "recall"], tab), "",
               "ours_segment_in_focus = eq. (17)-(18) with p~ from the raw top-3 candidates, exact min cut; "
               "raw_threshold_tau2 = raw map <= 2 px; hifst_otsu = *_hifst.png (bright = sharp), Otsu threshold.", ""]
    if not args.skip_timing:
        t = stage_timing(args.timing_size, be, args.time_labeling, args.peak_memory, args.labeling_budgets)
        payload["timing"] = t
        tab = [[k, fmt_s(v)] for k, v in t["stages"].items()]
        tab.append(["total (candidates, no labeling)", fmt_s(t["total_s"])])
        if "labeling(primal-dual)" in t["stages"]:
            tab.append(["**total (candidates + labeling)**", fmt_s(t["total_s"] + t["stages"]["labeling(primal-dual)"])])
        shape = t["size"] if isinstance(t["size"], (list, tuple)) else (t["size"], t["size"])
        md += [f"## Time per stage, {shape[0]}x{shape[1]} ({t['device']})", "", markdown_table(["stage", "time"], tab),
               "", f"FFTs: {t['fft_count']}; process CPU time {t['process_cpu_s']:.1f} s "
               f"(wall x cores when the machine is idle); load average during the run {t['load_avg']}", ""]
        if "labeling" in t:
            md += [f"Labeling (primal-dual, L = 81): {t['labeling']}", ""]
        if t.get("labeling_budgets"):
            rows = [[f"{r['budget_gib']:g} GiB", str(r["tiles"]), fmt_s(r["seconds"]), fmt_s(r["slowest_tile_s"]),
                     str(r["fine_iterations"]), str(r["coarse_iterations"]), f"{r['energy']:.6g}"]
                    for r in t["labeling_budgets"]]
            md += ["### Labeling by memory budget (tile layout)", "",
                   markdown_table(["budget", "tiles", "time", "slowest tile", "fine its (sum)", "coarse its (sum)",
                                   "energy"], rows), ""]
        if limit is not None or "pool_peak_bytes" in t:
            lim = "none" if limit is None else f"{limit / 2**30:.1f} GiB"
            if t.get("pool_peak_bytes") is not None:
                peak = (f"{t['pool_peak_bytes'] / 2**30:.2f} GiB in use, {t['pool_peak_reserved_bytes'] / 2**30:.2f} GiB "
                        "reserved")
            else:
                peak = "not measured"
            md += [f"CuPy pool limit: {lim}; peak of the pool during the candidate stages: {peak}; tiles: {t['tiles']}",
                   ""]
    stem = result_stem("blurmap", info)
    pj, pm = write_results(args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"), stem,
                           payload, "\n".join(md))
    print("\n".join(md))
    log(f"wrote {pj} and {pm}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
