"""Colour TV against per-channel TV in ``admm_tv`` (``tv_channels='joint'`` / ``'separate'``).

``admm_tv`` on a colour image shrinks, by default since session 36, each
pixel's gradients of all channels together (vectorial or colour TV,
Blomgren & Chan 1998): the channels share their edges, where the
per-channel TV lets each channel's edge move on its own and its noise
build colour fringes. This bench measures what that gains, at the default
TV weight (``0.1·σ̂``, tuned per channel in session 3) and at 0.7× it.

Scenes: four photos (the bundled one's top-left 256² and scikit-image's
astronaut, coffee and chelsea as 256² squares), each blurred by a disc
(radius 4 / 3 / 6 px with white noise σ 0.01 / 0.002 / 0.003, the noise
seeded per photo and case; reflect boundary, not quantized). PSNR (dB)
against the sharp photo.

    python bench/bench_tv_channels.py [--iters 100] [--size 256] [--backend cpu|cuda]
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

CASES = ((4, 0.01), (3, 0.002), (6, 0.003))
SIZE = 256


def photos(size: int = SIZE) -> dict[str, np.ndarray]:
    from skimage import data

    from gpudeblur.data import sharp as bundled

    def square(a):
        m, n = a.shape[:2]
        s = min(m, n, size)
        i, j = (m - s) // 2, (n - s) // 2
        return np.ascontiguousarray(a[i:i + s, j:j + s])

    return {"bundled": np.asarray(bundled(), np.float64)[:size, :size],
            "astronaut": square(data.astronaut()[::2, ::2] / 255.0),
            "coffee": square(data.coffee()[::2, ::2] / 255.0),
            "chelsea": square(data.chelsea()[::2, ::2] / 255.0)}


def psnr(x, ref) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - ref) ** 2)))


def run(iters: int, backend: str, size: int = SIZE) -> list[dict]:
    rows = []
    for i, (name, ref) in enumerate(photos(size).items()):
        for j, (radius, sigma) in enumerate(CASES):
            rng = np.random.default_rng([36, i, j])
            k = gd.psf.disc(radius)
            y = np.asarray(gd.fftconvolve(ref, k, boundary="reflect")) + sigma * rng.standard_normal(ref.shape)
            y = np.clip(y, 0, 1).astype(np.float32)
            lam = gd.estimate_noise(y) * 0.1
            rec = {"image": name, "radius": radius, "sigma": sigma, "input": psnr(y, ref)}
            for key, tv, f in (("separate", "separate", 1.0), ("joint", "joint", 1.0), ("joint_07", "joint", 0.7)):
                lam_k = None if f == 1.0 else max(f * lam, 1e-5)
                rec[key] = psnr(gd.admm_tv(y, k, lam_k, iters, tv_channels=tv, backend=backend), ref)
            log(f"{name} disc {radius} σ {sigma}: " + ", ".join(
                f"{key} {rec[key]:.2f}" for key in ("input", "separate", "joint", "joint_07")))
            rows.append(rec)
    return rows


def markdown(rows) -> list[str]:
    d = [r["joint"] - r["separate"] for r in rows]
    d7 = [r["joint_07"] - r["separate"] for r in rows]
    out = [f"\njoint − separate at the default weight: {min(d):+.2f} … {max(d):+.2f} dB, mean {np.mean(d):+.2f}; "
           f"at 0.7× the weight: {min(d7):+.2f} … {max(d7):+.2f}, mean {np.mean(d7):+.2f}.\n"]
    out.append(markdown_table(
        ["image", "disc", "σ", "input", "separate (0.1·σ̂)", "joint (0.1·σ̂)", "joint (0.07·σ̂)"],
        [[r["image"], r["radius"], r["sigma"]] + [f"{r[c]:.2f}" for c in ("input", "separate", "joint", "joint_07")]
         for r in rows]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=100, help="ADMM iterations (admm_tv's default 100)")
    ap.add_argument("--size", type=int, default=SIZE, help=f"side of the photos' squares (default {SIZE})")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results)")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args(argv)
    if args.size < 32 or args.iters < 1:
        ap.error("--size must be at least 32 and --iters at least 1")
    info = machine_info(gpu_name=gd.get_backend("cuda").device_name() if args.backend == "cuda" else None)
    rows = run(args.iters, args.backend, args.size)
    finish_machine_info(info)
    md = ["# Colour TV against per-channel TV (`admm_tv`)\n", machine_markdown(info), *markdown(rows)]
    stem = result_stem("tv-channels", info) + (f"-{args.tag}" if args.tag else "")
    write_results(Path(args.out), stem, {"machine": info, "iters": args.iters, "size": args.size,
                                         "backend": args.backend, "rows": rows},
                  "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
