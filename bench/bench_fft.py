"""CPU FFT benchmark: ducc0 (the CPU backend's default) against scipy.fft.

Times the transforms gpudeblur's CPU time is made of, on the shapes its
pipelines use, with :mod:`gpudeblur._cpu_fft` (ducc0) and with
:mod:`scipy.fft` (``GPUDEBLUR_CPU_FFT=scipy``), the backend's worker count,
and reports medians, the speed-up and the rate in GFLOP/s (the usual FFT
count: ``2.5 N log2 N`` flops for a real transform of ``N`` points, ``5 N
log2 N`` for a complex one, per item of a batch). Writes
``bench/results/fft-<host>-<date>.{json,md}``.

Usage::

    python bench/bench_fft.py            # all cases
    python bench/bench_fft.py --quick    # skip the 12 MP grid

Cases (all float32 / complex64, C-contiguous):

- ``sv-1mp``: an RGB 1 MP photo's ``sv-admm`` grid (816×1224 padded to
  875×1280 for 8 px PSFs), forward real and inverse real transforms: the
  ADMM's normal operator makes ``2K + 2`` of them per CG step (``K`` PSFs).
- ``sv-12mp``: the same for a 12 MP photo (3000×4000, padded to 3072×4096
  plus the PSF margin: 3136×4160).
- ``gabor-512``: the blur map's Gabor bank: one complex transform of a 512²
  block, then inverse transforms of 12 filters at once. Complex transforms
  are ``scipy.fft``'s in the CPU backend too (ducc0 in fixed chunks was
  0.6–0.8× here), so both columns time the same code: a control.
- ``grey-600``: a grey 512² image's deconvolution grid.

Inverse transforms are timed as the pipelines call them: on a fresh copy of
the spectrum with ``overwrite_x=True`` (the copy is in both columns).
"""

from __future__ import annotations

import argparse
import math
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
    time_call,
    write_results,
)

from gpudeblur import _backend  # noqa: E402

# name: (kind, shape of the real / complex input, s for the inverse real transform)
CASES = {
    "sv-1mp": [("rfft2", (3, 1280, 875)), ("irfft2", (3, 1280, 875))],
    "sv-12mp": [("rfft2", (3, 4160, 3136)), ("irfft2", (3, 4160, 3136))],
    "gabor-512": [("fft2", (512, 512)), ("ifft2", (12, 512, 512))],
    "grey-600": [("rfft2", (1, 600, 600)), ("irfft2", (1, 600, 600))],
}


def _input(kind, shape, rng):
    if kind == "rfft2":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "irfft2":
        spec = shape[:-1] + (shape[-1] // 2 + 1,)
    else:
        spec = shape
    return (rng.standard_normal(spec, dtype=np.float32) + 1j * rng.standard_normal(spec, dtype=np.float32)).astype(
        np.complex64
    )


def _call(mod, kind, x, shape, kw):
    # inverse transforms as the pipelines call them: on a fresh spectrum (a product
    # of spectra) that may be overwritten; the copy is timed for both libraries
    if kind == "irfft2":
        return lambda: mod.irfft2(x.copy(), s=shape[-2:], overwrite_x=True, **kw)
    if kind == "ifft2":
        return lambda: mod.ifft2(x.copy(), overwrite_x=True, **kw)
    return lambda: getattr(mod, kind)(x, **kw)


def _flops(kind, shape):
    n = shape[-2] * shape[-1]
    batch = math.prod(shape[:-2])
    per = (2.5 if kind in ("rfft2", "irfft2") else 5.0) * n * math.log2(n)
    return per * batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 12 MP grid")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run (default: all)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    info = machine_info()
    be = _backend.get_backend("cpu")
    kw = be.fft_kwargs()
    libs = {"ducc0": _backend.cpu_fft_module("ducc0"), "scipy": _backend.cpu_fft_module("scipy")}
    rng = np.random.default_rng(0)
    rows, results = [], []
    for case, transforms in CASES.items():
        if case not in args.cases or (args.quick and case == "sv-12mp"):
            continue
        for kind, shape in transforms:
            x = _input(kind, shape, rng)
            times = {}
            for name, mod in libs.items():
                t, _ = time_call(_call(mod, kind, x, shape, kw), repeats=args.repeats, budget_s=10.0, min_repeats=3)
                times[name] = t
                log(f"{case} {kind} {shape} {name}: {t.median * 1e3:.2f} ms")
            fl = _flops(kind, shape)
            d, s = times["ducc0"].median, times["scipy"].median
            results.append({"case": case, "transform": kind, "shape": shape, "workers": kw.get("workers"),
                            "flops": fl, "ducc0": times["ducc0"], "scipy": times["scipy"]})
            rows.append([case, kind, "×".join(map(str, shape)), f"{s * 1e3:.2f}", f"{d * 1e3:.2f}", f"{s / d:.2f}×",
                         f"{fl / s / 1e9:.1f}", f"{fl / d / 1e9:.1f}"])
    finish_machine_info(info)
    md = "\n".join([
        "# CPU FFT benchmark: ducc0 against scipy.fft",
        "",
        machine_markdown(info),
        f"- FFT worker threads: {kw.get('workers')} (ducc0 uses at least 2, see `gpudeblur/_cpu_fft.py`)",
        "",
        "Medians (ms) of up to "
        f"{args.repeats} calls after one warm-up; GFLOP/s by the usual count (2.5 N log2 N real, 5 N log2 N complex).",
        "",
        markdown_table(["case", "transform", "shape", "scipy.fft ms", "ducc0 ms", "speed-up", "scipy GFLOP/s",
                        "ducc0 GFLOP/s"], rows),
    ])
    stem = result_stem("fft", info)
    pj, pm = write_results(args.out, stem, {"machine": info, "results": results}, md)
    print(md)
    log(f"wrote {pj} and {pm}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
