"""Blur map analysis scale: full resolution against 2x2 block means, and the
``'auto'`` rule (``BlurMapEstimator.estimate(scale=...)``).

Scenes: 512² crops of scikit-image photos (astronaut, camera, grass) blurred
by the quality bench's two maps (layered 0/2.5/5 px, ramp 0→8 px) times
1, 1.5 and 2 (so radii reach 8, 12 and 16 px), fine PSF bank, σ_n = 1e-3.
For each: the map estimated at scale 1 (``max_radius`` = 8 × multiplier, so
the range holds the blur) and at scale 2 (``max_radius`` 8: radii to 16 px),
map MSE, time, and the deblurred PSNR gain over the input (``sv-admm`` by
default, the estimated-map pipeline with the radius spread the pipeline
gives a map read at that scale, ``allinfocus.scaled_map_uncertainty``). The ``auto`` column applies the rule
of :meth:`~gpudeblur.blurmap.BlurMapEstimator.estimate` as it would run on
a large photo started at scale 2: keep scale 2 if the
``AUTO_SCALE_QUANTILE`` quantile of the scale-2 map exceeds ``max_radius``
(8 px), else scale 1. (Since session 17 the real ``'auto'`` looks at 512²
first at scale 4, then reads at the finest scale that holds the scale-4
map's quantile; this bench's column is the session-13 rule it was tuned on.)

    python bench/bench_map_scale.py [--modes sv-admm|fast] [--mults 1,1.5,2]

About 35 min on 2 CPU cores with ``sv-admm``, 6 min with ``fast``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_OUT, finish_machine_info, log, machine_info, machine_markdown, markdown_table, result_stem, write_results  # noqa: E402
from bench_allinfocus import maps, psnr  # noqa: E402

from gpudeblur.allinfocus import AllInFocus, scaled_map_uncertainty  # noqa: E402
from gpudeblur.blurmap.estimator import AUTO_SCALE_QUANTILE  # noqa: E402
from gpudeblur.spatially_varying import blur_spatially_varying  # noqa: E402

IMAGES = ("astronaut", "camera", "grass")


def photo(name, size=512):
    from skimage import data

    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.dstack([a] * 3)
    h, w = a.shape[:2]
    s = min(h, w, size)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return a[y0 : y0 + s, x0 : x0 + s].astype(np.float64) / 255.0


def study(mults, mode):
    rows = []
    for mult in mults:
        rng = np.random.default_rng(0)
        for name in IMAGES:
            img = photo(name)
            for mname, rm in maps(img.shape[:2]).items():
                rm = rm * mult
                y = np.clip(blur_spatially_varying(img, rm, radius_step=0.1, dtype="float64")
                            + 1e-3 * rng.standard_normal(img.shape), 0, 1)
                rec = {"image": name, "map": mname, "mult": mult, "true_max": float(rm.max()), "input_psnr": psnr(y, img)}
                for s in (1, 2):
                    opts = {"max_radius": 8.0 * max(1.0, mult)} if s == 1 else {}
                    t0 = time.perf_counter()
                    m = np.asarray(AllInFocus(map_scale=s, estimator_options=opts).estimate_map(y.astype(np.float32)))
                    rec[f"s{s}_map_s"] = time.perf_counter() - t0
                    rec[f"s{s}_map_mse"] = float(np.mean((m - rm) ** 2))
                    # the pipeline's spread for a map read at scale s (what run() uses after its own estimate)
                    out, _ = AllInFocus(mode=mode, map_uncertainty=scaled_map_uncertainty(s)).run(
                        y, radius_map=m, map_estimated=True)
                    rec[f"s{s}_gain"] = psnr(out, img) - rec["input_psnr"]
                    if s == 2:
                        rec["s2_quantile"] = float(np.quantile(m, AUTO_SCALE_QUANTILE))
                rec["auto_scale"] = 2 if rec["s2_quantile"] > 8.0 else 1
                rec["auto_gain"] = rec[f"s{rec['auto_scale']}_gain"]
                log(f"x{mult} {name}/{mname}: s1 {rec['s1_gain']:+.2f} s2 {rec['s2_gain']:+.2f} "
                    f"(q {rec['s2_quantile']:.2f}) -> auto {rec['auto_scale']}")
                rows.append(rec)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", choices=("sv-admm", "fast"), default="sv-admm")
    ap.add_argument("--mults", default="1,1.5,2", help="radius multipliers, comma-separated")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    mults = [float(v) for v in args.mults.split(",")]
    info = machine_info()
    rows = study(mults, args.modes)
    info = finish_machine_info(info)
    md = ["# Blur map analysis scale", "", machine_markdown(info), "",
          f"Deblurring: `{args.modes}` on the estimated map; gain = PSNR over the input (dB). "
          f"auto: scale 2 if the {AUTO_SCALE_QUANTILE:g} quantile of the scale-2 map exceeds 8 px, else scale 1.", ""]
    table = []
    for r in rows:
        table.append([f"{r['image']}/{r['map']}", f"{r['mult']:g} (max {r['true_max']:g})", f"{r['input_psnr']:.2f}",
                      f"{r['s1_gain']:+.2f} / {r['s1_map_mse']:.2f} / {r['s1_map_s']:.1f}",
                      f"{r['s2_gain']:+.2f} / {r['s2_map_mse']:.2f} / {r['s2_map_s']:.1f}",
                      f"{r['s2_quantile']:.2f}", r["auto_scale"], f"{r['auto_gain']:+.2f}"])
    for mult in mults:
        sel = [r for r in rows if r["mult"] == mult]
        table.append([f"**mean ×{mult:g}**", "", "", f"**{np.mean([r['s1_gain'] for r in sel]):+.2f}**",
                      f"**{np.mean([r['s2_gain'] for r in sel]):+.2f}**", "", "",
                      f"**{np.mean([r['auto_gain'] for r in sel]):+.2f}**"])
    md.append(markdown_table(["scene", "radius ×", "input dB", "scale 1: gain / map MSE px² / map s",
                              "scale 2: gain / MSE / s", "q(scale 2)", "auto", "auto gain"], table))
    text = "\n".join(md) + "\n"
    paths = write_results(args.out, result_stem("mapscale", info), {"machine": info, "mode": args.modes, "rows": rows}, text)
    print(text)
    log(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
