"""Before/after pictures of the all-in-focus job on real defocused photos (CUHK blur-detection set).

For each ``out_of_focus*.jpg`` in ``--data`` (default ``../shared/data/cuhk``) it runs
``AllInFocus()`` with its defaults (estimated map, ``mode='auto'``: ``sv-admm``, or on the CPU
``fast`` for a map read at a coarser scale than 1; ``summary.json`` says which) and, as ``gpudeblur allinfocus``
does for a JPEG, the file's compression error (``compression_noise``; ``--compression-noise
off``: without), and writes, into ``--out``
(outside the repository; the photos are not ours to ship):

- ``<name>_before_after.png``: input | output side by side;
- ``<name>_map.png``: the estimated blur map (colour bar from 0 to the larger of 8 px and its maximum);
- ``summary.json``: times per stage, the noise handed to the estimator, and the median
  estimated radius inside and outside the hand-labelled blurred region (``*_gt.png``,
  white = blurred).

Look at the pictures: halos at the in-focus/out-of-focus boundary, ringing at the image
edges. Usage::

    python bench/cuhk_allinfocus.py --out /tmp/cuhk-allinfocus [--data DIR] [--names 0223 0284] [--spread-select off]
        [--compression-noise off]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np


def main(argv=None) -> int:
    import cv2  # noqa: PLC0415

    from gpudeblur import AllInFocus  # noqa: PLC0415
    from gpudeblur.blurmap.cli import colorize  # noqa: PLC0415
    from gpudeblur.io import jpeg_compression_noise, read_image  # noqa: PLC0415

    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "cuhk"))
    ap.add_argument("--out", required=True, help="output folder (keep it outside the repository)")
    ap.add_argument("--names", nargs="*", help="image numbers, e.g. 0223 (default: all)")
    ap.add_argument("--spread-select", choices=("on", "off"), default=None,
                    help="AllInFocus(spread_select=...) (default: the pipeline's, on)")
    ap.add_argument("--compression-noise", choices=("auto", "off"), default="auto",
                    help="auto (default): AllInFocus(compression_noise=) from the JPEG's tables, as the command does")
    args = ap.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.data, "out_of_focus*.jpg")))
    if args.names:
        files = [f for f in files if any(f.endswith(f"{n}.jpg") for n in args.names)]
    if not files:
        raise SystemExit(f"no out_of_focus*.jpg found in {args.data}")
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    to8 = lambda a: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)[..., ::-1]  # noqa: E731
    for f in files:
        name = os.path.basename(f)[: -len(".jpg")]
        img, _ = read_image(f)
        gt = cv2.imread(f[: -len(".jpg")] + "_gt.png", cv2.IMREAD_GRAYSCALE)
        cn = jpeg_compression_noise(f) if args.compression_noise == "auto" else None
        pipe = AllInFocus(spread_select=None if args.spread_select is None else args.spread_select == "on",
                          compression_noise=cn)
        t0 = time.perf_counter()
        out, res = pipe.run(img)
        rec = {"time_s": time.perf_counter() - t0, "mode": res.mode, "map_scale": res.map_scale,
               "timings": res.timings, "noise": res.map_noise, "compression_noise": res.compression_noise}
        if gt is not None:
            blurred = gt > 127
            rec["radius_median_in_focus"] = float(np.median(res.radius_map[~blurred]))
            rec["radius_median_blurred"] = float(np.median(res.radius_map[blurred]))
        summary[name] = rec
        print(name, json.dumps(rec, default=float), flush=True)
        cv2.imwrite(os.path.join(args.out, f"{name}_before_after.png"), np.hstack([to8(img), to8(out)]))
        cv2.imwrite(os.path.join(args.out, f"{name}_map.png"), colorize(res.radius_map, max(8.0, float(np.max(res.radius_map))))[..., ::-1])
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
