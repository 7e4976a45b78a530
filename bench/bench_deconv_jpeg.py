"""Non-blind deconvolution of JPEG inputs: the defaults with and without the compression error.

A JPEG removes the fine-scale noise that :func:`gpudeblur.estimate_noise`
measures and generalized cross-validation reads from the residual, so the
default weights of ``admm_tv`` (``0.1·σ̂``) and ``wiener`` (GCV) take a
compressed photo for a clean one. ``compression_noise`` (the estimate of
:func:`gpudeblur.io.jpeg_compression_noise`, which ``gpudeblur deconv``
passes for a JPEG IN) adds the compression error: ``admm_tv``'s weight
becomes ``0.1·sqrt(σ̂² + v)``, ``wiener``'s balance the minimizer of the
predictive risk estimate for the noise ``σ̂² + 2v`` per colour channel
(``σ̂² + v`` grey or luminance).

Scenes: five photos (the bundled one, scikit-image's astronaut, coffee,
chelsea at their sizes or halved, camera as RGB), each blurred by a disc
(radius 4 / 3 / 2 / 5 px with white noise σ 0.01 / 0.002 / 0.005 /
0.001; the noise seeded per photo and case, so a subset draws the same),
rounded to 8 bits and saved by libjpeg (OpenCV, 4:2:0) at each quality. PSNR (dB) of the clipped result against the sharp photo; for
``wiener`` also the best balance in hindsight on a grid (61 points,
1e-6 … 1). Quality 101 stands for the 8-bit PNG (no compression): there
the defaults run as they are.

    python bench/bench_deconv_jpeg.py [--qualities 50,75,90,95] [--methods wiener,admm-tv] [--no-best]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_OUT,
    finish_machine_info,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    result_stem,
    write_results,
)

import gpudeblur as gd  # noqa: E402
from gpudeblur.io import jpeg_compression_noise  # noqa: E402

#: (disc radius, noise σ) of the four blur cases
CASES = ((4, 0.01), (3, 0.002), (2, 0.005), (5, 0.001))
QUALITIES = (50, 75, 90, 95)
BEST_GRID = np.geomspace(1e-6, 1.0, 61)


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    from gpudeblur.data import sharp as bundled

    return {
        "bundled": np.asarray(bundled(), np.float64),
        "astronaut": data.astronaut()[::2, ::2] / 255.0,
        "coffee": data.coffee()[::2, ::2] / 255.0,
        "chelsea": data.chelsea() / 255.0,
        "camera": np.repeat(data.camera()[::2, ::2, None], 3, 2) / 255.0,
    }


def psnr(x, ref) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(np.asarray(x, np.float64), 0, 1) - ref) ** 2)))


def run(qualities, methods, best: bool, backend: str, images=None) -> list[dict]:
    import cv2

    rows = []
    for i, (name, ref) in enumerate(photos().items()):
        if images is not None and name not in images:
            continue
        for j, (radius, sigma) in enumerate(CASES):
            rng = np.random.default_rng([1, i, j])
            k = gd.psf.disc(radius)
            y = np.asarray(gd.fftconvolve(ref, k, boundary="reflect"))
            u8 = np.rint(np.clip(y + sigma * rng.standard_normal(y.shape), 0, 1) * 255).astype(np.uint8)
            for q in qualities:
                if q > 100:
                    yq, v = u8.astype(np.float32) / 255, None
                else:
                    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
                    yq = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
                    v = jpeg_compression_noise(buf.tobytes())
                rec = {"image": name, "radius": radius, "sigma": sigma, "quality": q, "estimate": v,
                       "input": psnr(yq, ref)}
                if "wiener" in methods:
                    rec["wiener_default"] = psnr(gd.wiener(yq, k, backend=backend), ref)
                    if v:
                        rec["wiener_jpeg"] = psnr(gd.wiener(yq, k, compression_noise=v, backend=backend), ref)
                    if best:
                        rec["wiener_best"] = max(psnr(gd.wiener(yq, k, b, backend=backend), ref) for b in BEST_GRID)
                if "admm-tv" in methods:
                    rec["admm_default"] = psnr(gd.admm_tv(yq, k, backend=backend), ref)
                    if v:
                        rec["admm_jpeg"] = psnr(gd.admm_tv(yq, k, compression_noise=v, backend=backend), ref)
                log(f"{name} disc {radius} σ {sigma} q{q}: " + ", ".join(
                    f"{key} {val:.2f}" for key, val in rec.items() if key not in ("sigma", "estimate")
                    and isinstance(val, float)))
                rows.append(rec)
    return rows


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return f"{np.mean(vals):.2f}" if len(vals) == len(rows) else ""


def markdown(rows, methods) -> list[str]:
    cols = ["input"]
    if "wiener" in methods:
        cols += ["wiener_default", "wiener_jpeg", "wiener_best"]
    if "admm-tv" in methods:
        cols += ["admm_default", "admm_jpeg"]
    cols = [c for c in cols if any(c in r for r in rows)]
    heads = {"input": "input", "wiener_default": "wiener GCV", "wiener_jpeg": "wiener with v",
             "wiener_best": "wiener best balance", "admm_default": "admm-tv 0.1·σ̂", "admm_jpeg": "admm-tv with v"}
    out = ["\n## Mean PSNR (dB) per quality (101: the 8-bit PNG)\n"]
    table = []
    for q in sorted({r["quality"] for r in rows}):
        rq = [r for r in rows if r["quality"] == q]
        line = [q, len(rq)] + [_mean(rq, c) for c in cols]
        for a, b in (("wiener_default", "wiener_jpeg"), ("admm_default", "admm_jpeg")):
            if a in cols and b in cols:
                d = [r[b] - r[a] for r in rq if b in r]
                line.append(f"{min(d):+.2f} … {max(d):+.2f}" if d else "")
        table.append(line)
    gains = [f"{h} gain (min … max)" for h in ("wiener", "admm-tv")
             if ("wiener_jpeg" if h == "wiener" else "admm_jpeg") in cols]
    out.append(markdown_table(["quality", "cases"] + [heads[c] for c in cols] + gains, table))
    out.append("\n## Per case\n")
    out.append(markdown_table(["image", "disc", "σ", "quality", "estimate v"] + [heads[c] for c in cols],
                              [[r["image"], r["radius"], r["sigma"], r["quality"],
                                "" if r["estimate"] is None else f"{r['estimate']:.2g}"]
                               + [f"{r[c]:.2f}" if c in r else "" for c in cols] for r in rows]))
    return out


def _qualities(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {text!r}") from None
    if not out or any(not 1 <= q <= 101 for q in out):
        raise argparse.ArgumentTypeError(f"qualities are 1 … 100, or 101 for no compression; got {text!r}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qualities", type=_qualities, default=list(QUALITIES + (101,)),
                    help="comma-separated JPEG qualities 1-100 (101: no compression, the 8-bit PNG)")
    ap.add_argument("--methods", default="wiener,admm-tv", help="comma-separated: wiener, admm-tv")
    ap.add_argument("--no-best", action="store_true", help="skip wiener's best balance in hindsight (61 solves a case)")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--images", default=None, help="comma-separated subset of bundled, astronaut, coffee, chelsea, camera")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results)")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args(argv)
    qualities = args.qualities
    methods = args.methods.split(",")
    if not methods or any(m not in ("wiener", "admm-tv") for m in methods):
        ap.error("--methods: wiener, admm-tv")
    info = machine_info(gpu_name=gd.get_backend("cuda").device_name() if args.backend == "cuda" else None)
    images = None if args.images is None else args.images.split(",")
    if images is not None and not set(images) <= {"bundled", "astronaut", "coffee", "chelsea", "camera"}:
        ap.error("--images: bundled, astronaut, coffee, chelsea, camera")
    rows = run(qualities, methods, not args.no_best, args.backend, images)
    info = finish_machine_info(info)
    text = "\n".join([f"# Non-blind deconvolution of JPEG inputs\n\n{machine_markdown(info)}\n",
                      __doc__.split("\n\n")[1].replace("\n", " ")] + markdown(rows, methods)) + "\n"
    stem = result_stem("deconv-jpeg", info) + (f"-{args.tag}" if args.tag else "")
    paths = write_results(args.out, stem, {"machine": info, "rows": rows}, text)
    print(text)
    log(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
