"""Non-blind deconvolution across PSF shapes: mirror-symmetric ones and slanted motion blurs.

With ``boundary='reflect'`` (the default) the blurred image is padded by its
mirror image. For a PSF equal to its left-right and up-down mirrors (a disc,
a Gaussian, an axis-aligned motion blur) that is data blurred by the same
PSF; for a slanted motion blur it is data blurred by the *mirrored* PSF, and
until session 38 the direct filters rang from the seams over the whole
image, below their input. Since then such a PSF's padding is the mirrored
image blurred once more by the PSF (:class:`gpudeblur.convolution.BlurOperator`,
``blurred_padding``). This bench measures every non-blind method on both
kinds.

Scenes: four grey photos (the bundled one's luminance, scikit-image's camera,
coffee and chelsea at half resolution; central ``--size`` squares),
each blurred (reflect boundary, as ``scipy.ndimage.convolve``) by six PSFs,
white noise σ = 0.003 seeded per photo and PSF, clipped to [0, 1]. PSNR (dB)
against the sharp photo of each method's result clipped to [0, 1], at its
defaults (Wiener's balance by GCV, the others' noise-adaptive weights;
``--iters`` for RL and ADMM-TV).

    python bench/bench_deconv_psfs.py [--size 256] [--iters 100] [--backend cpu|cuda]
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

SIZE = 256
SIGMA = 0.003
#: (label, PSF maker)
PSFS = (("disc 3", lambda: gd.psf.disc(3)),
        ("gaussian 2", lambda: gd.psf.gaussian(2)),
        ("motion 9 @ 0°", lambda: gd.psf.motion(9, 0)),
        ("motion 9 @ 45°", lambda: gd.psf.motion(9, 45)),
        ("motion 11 @ 120°", lambda: gd.psf.motion(11, 120)),
        ("motion 15 @ 20°", lambda: gd.psf.motion(15, 20)))
METHODS = ("wiener", "tikhonov", "inverse", "rl", "admm-tv")


def photos(size: int = SIZE) -> dict[str, np.ndarray]:
    from skimage import color, data

    from gpudeblur.data import sharp as bundled

    def square(a):
        a = np.asarray(a, np.float64)
        if a.ndim == 3:
            a = color.rgb2gray(a[..., :3])
        m, n = a.shape
        s = min(m, n, size)
        i, j = (m - s) // 2, (n - s) // 2
        return np.ascontiguousarray(a[i:i + s, j:j + s])

    return {"bundled": square(np.asarray(bundled(), np.float64)),
            "camera": square(data.camera()[::2, ::2] / 255.0),
            "chelsea": square(data.chelsea()[::2, ::2] / 255.0),
            "coffee": square(data.coffee()[::2, ::2] / 255.0)}


def psnr(x, ref) -> float:
    x = np.clip(np.asarray(x, np.float64), 0, 1)
    return float(10 * np.log10(1.0 / np.mean((x - ref) ** 2)))


def _method(name: str, iters: int, backend: str):
    if name == "wiener":
        return lambda y, k: gd.wiener(y, k, backend=backend)
    if name == "tikhonov":
        return lambda y, k: gd.tikhonov(y, k, backend=backend)
    if name == "inverse":
        return lambda y, k: gd.inverse_filter(y, k, backend=backend)
    if name == "rl":
        return lambda y, k: gd.richardson_lucy(y, k, num_iter=iters, backend=backend)
    return lambda y, k: gd.admm_tv(y, k, num_iter=iters, backend=backend)


def run(iters: int, backend: str, size: int = SIZE) -> list[dict]:
    from scipy import ndimage as ndi

    from gpudeblur.convolution import mirror_symmetric

    be = gd.get_backend(backend)
    rows = []
    for i, (name, ref) in enumerate(photos(size).items()):
        for j, (label, make) in enumerate(PSFS):
            k = make()
            rng = np.random.default_rng([38, i, j])
            y = np.clip(ndi.convolve(ref, k, mode="reflect") + SIGMA * rng.standard_normal(ref.shape), 0, 1)
            rec = {"image": name, "psf": label, "mirror_symmetric": mirror_symmetric(k), "input": psnr(y, ref)}
            yb = be.asarray(y.astype(np.float32))
            for m in METHODS:
                rec[m] = psnr(be.to_host(_method(m, iters, backend)(yb, k)), ref)
            log(f"{name} {label}: " + ", ".join(f"{key} {rec[key]:.2f}" for key in ("input",) + METHODS))
            rows.append(rec)
    return rows


def markdown(rows) -> list[str]:
    out = []
    for sym, what in ((True, "mirror-symmetric PSFs (the mirror padding)"),
                      (False, "slanted motion blurs (the blurred padding)")):
        sel = [r for r in rows if r["mirror_symmetric"] == sym]
        if not sel:
            continue
        means = ", ".join(f"{m} {np.mean([r[m] - r['input'] for r in sel]):+.2f}" for m in METHODS)
        worst = ", ".join(f"{m} {min(r[m] - r['input'] for r in sel):+.2f}" for m in METHODS)
        out.append(f"\n{what}: mean gain over the input {means} dB; worst {worst} dB.\n")
    out.append(markdown_table(["image", "PSF", "mirror-symmetric", "input", *METHODS],
                              [[r["image"], r["psf"], "yes" if r["mirror_symmetric"] else "no", f"{r['input']:.2f}"]
                               + [f"{r[m]:.2f}" for m in METHODS] for r in rows]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=100, help="RL and ADMM-TV iterations (default 100)")
    ap.add_argument("--size", type=int, default=SIZE, help=f"side of the photos' squares (default {SIZE})")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results)")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args(argv)
    if args.size < 48 or args.iters < 1:
        ap.error("--size must be at least 48 (the longest PSF is 15 px) and --iters at least 1")
    info = machine_info(gpu_name=gd.get_backend("cuda").device_name() if args.backend == "cuda" else None)
    rows = run(args.iters, args.backend, args.size)
    finish_machine_info(info)
    md = ["# Non-blind deconvolution across PSF shapes (reflect boundary, σ = 0.003)\n", machine_markdown(info),
          *markdown(rows)]
    stem = result_stem("deconv-psfs", info) + (f"-{args.tag}" if args.tag else "")
    write_results(Path(args.out), stem, {"machine": info, "iters": args.iters, "size": args.size,
                                         "backend": args.backend, "sigma": SIGMA, "rows": rows},
                  "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
