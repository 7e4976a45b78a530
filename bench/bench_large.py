"""The main job on large photos with strong defocus (the ``map_scale='auto'`` path).

Scenes: scikit-image photos (camera, coffee, rocket by default), square
crops upscaled to ``--size`` px (bicubic) as the sharp images, blurred by
the quality bench's two maps times ``--mult`` (layered 0 / 7.5 / 15 px and
a ramp 0→24 px at the default 3), fine PSF bank, σ_n = 1e-3. At 2048²
(4 MP) the pipeline's ``'auto'`` reads such a map at scale 4 and deblurs it
with that scale's spread (``allinfocus.scaled_map_uncertainty``). For each
scene: the input's PSNR, ``AllInFocus(mode=...).run(y)`` with every
default (map estimated, checks on): PSNR, the scale used, the map's MSE and
the stage times; and the true map through the same pipeline (same spread,
same checks) as the reference for the estimate. Results are clipped to
[0, 1] (as the inputs are) before the PSNR.

    python bench/bench_large.py [--size 2048] [--mode fast] [--backend cpu|cuda] [--warmup] [--no-true-map]
                                [--trace-memory]

``--trace-memory`` (CPU) also reports each stage's peak of NumPy's traced
allocations (``tracemalloc``; the job's own arrays, not the process's RSS;
the times then include the tracing's small overhead).

``--warmup`` runs the first scene's job once, untimed, before the timed
runs (the GPU's kernel compilation and FFT plans; the CPU's Numba JIT is
cached). ``--mode blind`` and ``auto`` time those modes end to end too.

About 9 min on 2 CPU cores at 2048² with ``fast``.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_OUT, finish_machine_info, log, machine_info, machine_markdown, markdown_table, result_stem, write_results  # noqa: E402
from bench_allinfocus import maps, psnr  # noqa: E402

import gpudeblur as gd  # noqa: E402
from gpudeblur.allinfocus import AllInFocus  # noqa: E402
from gpudeblur.spatially_varying import blur_spatially_varying  # noqa: E402

IMAGES = ("camera", "coffee", "rocket")
STAGES = ("blur_map", "edge_cap", "radius_check", "deblur")


def photo(name, size):
    """A square centre crop of a scikit-image photo, upscaled (bicubic) to ``size`` px, RGB in [0, 1]."""
    import cv2
    from skimage import data

    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.dstack([a] * 3)
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    return np.clip(cv2.resize(a, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0, 0, 1)


class _StagePeaks:
    """``AllInFocus(progress=...)`` callback: the traced peak (GB) of each stage since the previous one."""

    def __init__(self):
        self.peaks, self.stage = {}, "start"
        tracemalloc.reset_peak()

    def __call__(self, name):
        self.close()
        self.stage = name

    def close(self):
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), tracemalloc.get_traced_memory()[1] / 1e9)
        tracemalloc.reset_peak()


def study(names, size, mult, mode, backend, warmup=False, true_map=True, spread_select=None, trace_memory=False):
    be = gd.get_backend(backend)
    opts = {} if spread_select is None or mode in ("fast", "blind") else {"spread_select": spread_select}
    rows = []
    rng = np.random.default_rng(0)
    for name in names:
        img = photo(name, size)
        for mname, rm in maps(img.shape[:2]).items():
            rm = (rm * mult).astype(np.float32)
            y = np.clip(blur_spatially_varying(img, rm, radius_step=0.25)
                        + (1e-3 * rng.standard_normal(img.shape)).astype(np.float32), 0, 1)
            rec = {"image": name, "map": mname, "true_max": float(rm.max()), "input_psnr": psnr(y, img)}
            if warmup and not rows:
                AllInFocus(mode=mode, backend=be, **opts).run(be.xp.asarray(y))
                be.synchronize()
            peaks = _StagePeaks() if trace_memory else None
            t0 = time.perf_counter()
            out, res = AllInFocus(mode=mode, backend=be, progress=peaks, **opts).run(be.xp.asarray(y))
            be.synchronize()
            rec["total_s"] = time.perf_counter() - t0
            if peaks is not None:
                peaks.close()
                rec["stage_peak_gb"] = peaks.peaks
            rec.update({f"{k}_s": res.timings.get(k) for k in STAGES})
            rec["psnr"] = psnr(np.clip(be.to_host(out), 0, 1), img)
            rec["map_scale"] = res.map_scale
            rec["map_mse"] = float(np.mean((res.radius_map - rm) ** 2))
            rec["mode"] = res.mode
            rec["map_uncertainty"] = None if res.map_uncertainty is None else list(res.map_uncertainty)
            rec["true_map_psnr"] = None
            if true_map:
                ropts = dict(opts) if res.mode == "sv-admm" else {}
                if res.map_uncertainty is not None:
                    ropts["map_uncertainty"] = res.map_uncertainty
                ref, _ = AllInFocus(mode=res.mode, backend=be, **ropts).run(
                    be.xp.asarray(y), be.xp.asarray(rm), map_estimated=True)
                rec["true_map_psnr"] = psnr(np.clip(be.to_host(ref), 0, 1), img)
            ref_txt = "" if rec["true_map_psnr"] is None else f" (true map {rec['true_map_psnr']:.2f})"
            log(f"{name}/{mname}: input {rec['input_psnr']:.2f} -> {rec['psnr']:.2f} dB{ref_txt}, {rec['mode']}, "
                f"scale {rec['map_scale']}, map MSE {rec['map_mse']:.1f} px², {rec['total_s']:.1f} s")
            rows.append(rec)
    return rows


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the square scenes (px)")
    ap.add_argument("--mult", type=float, default=3.0, help="multiplier of the quality bench's maps (3: radii to 24 px)")
    ap.add_argument("--images", default=",".join(IMAGES), help="scikit-image photos, comma-separated")
    ap.add_argument("--mode", choices=("fast", "sv-admm", "blind", "auto"), default="fast")
    ap.add_argument("--warmup", action="store_true", help="run the first scene once, untimed, first")
    ap.add_argument("--no-true-map", action="store_true", help="skip the true-map reference runs")
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--spread-select", choices=("on", "off"), default=None,
                    help="AllInFocus(spread_select=...) when sv-admm runs (default: the pipeline's, on)")
    ap.add_argument("--trace-memory", action="store_true",
                    help="CPU: each stage's peak of traced NumPy allocations (tracemalloc)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.trace_memory and args.backend != "cpu":
        ap.error("--trace-memory traces NumPy's allocations: CPU only")
    info = machine_info(gpu_name=gd.get_backend("cuda").device_name() if args.backend == "cuda" else None)
    spread = None if args.spread_select is None else args.spread_select == "on"
    if args.trace_memory:
        tracemalloc.start()
    rows = study(args.images.split(","), args.size, args.mult, args.mode, args.backend, warmup=args.warmup,
                 true_map=not args.no_true_map, spread_select=spread, trace_memory=args.trace_memory)
    tracemalloc.stop()
    info = finish_machine_info(info)
    md = ["# The main job on large photos with strong defocus", "", machine_markdown(info), "",
          f"{args.size}² scenes, maps × {args.mult:g}, σ_n = 1e-3, `AllInFocus(mode='{args.mode}')` with defaults on "
          f"`{args.backend}` (map estimated with `map_scale='auto'`); 'true map': the true map through the same pipeline "
          "(same spread and checks). PSNR in dB; times in s" + (" (after an untimed warm-up run)" if args.warmup else "")
          + "." + ("" if spread is None else f" `spread_select={spread}`."), ""]
    table = []
    for r in rows:
        tm = "—" if r["true_map_psnr"] is None else f"{r['true_map_psnr']:.2f}"
        table.append([f"{r['image']}/{r['map']}", r["mode"], f"{r['true_max']:g}", f"{r['input_psnr']:.2f}",
                      f"{r['psnr']:.2f}", tm, r["map_scale"], f"{r['map_mse']:.1f}", f"{r['total_s']:.1f}",
                      " / ".join("—" if r[f"{k}_s"] is None else f"{r[f'{k}_s']:.1f}" for k in STAGES)])
    mean = {k: np.mean([r[k] for r in rows]) for k in ("input_psnr", "psnr", "total_s")}
    tm = "—" if rows[0]["true_map_psnr"] is None else f"**{np.mean([r['true_map_psnr'] for r in rows]):.2f}**"
    table.append(["**mean**", "", "", f"**{mean['input_psnr']:.2f}**", f"**{mean['psnr']:.2f}**",
                  tm, "", "", f"**{mean['total_s']:.1f}**", ""])
    md.append(markdown_table(["scene", "mode", "max radius", "input", "estimated map", "true map", "map scale", "map MSE px²",
                              "total", " / ".join(STAGES)], table))
    if args.trace_memory:
        md += ["", "Traced peak of NumPy's allocations per stage (GB; `tracemalloc`, the job's arrays, not the "
               "process's RSS; the input image is held throughout):", ""]
        names = list(dict.fromkeys(k for r in rows for k in r["stage_peak_gb"]))
        md.append(markdown_table(["scene"] + names, [[f"{r['image']}/{r['map']}"] + [
            f"{r['stage_peak_gb'][k]:.2f}" if k in r["stage_peak_gb"] else "—" for k in names] for r in rows]))
    text = "\n".join(md) + "\n"
    name = "large" + ("" if args.mode == "fast" else f"-{args.mode}") + ("" if args.size == 2048 else f"-{args.size}") \
        + ("" if spread is None else f"-spread-{args.spread_select}")
    stem = result_stem(name, info)  # mode and size in the name: one GPU call runs several
    paths = write_results(args.out, stem, {"machine": info, "size": args.size, "mult": args.mult,
                                                                  "mode": args.mode, "backend": args.backend, "rows": rows}, text)
    print(text)
    log(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
