"""Deconvolution benchmark: gpudeblur CPU vs GPU vs scikit-image (vs cuCIM).

Times every non-blind method of :mod:`gpudeblur.restoration` on RGB float32
images of 512², 2048² and 4096² pixels (a natural image, scikit-image's
astronaut, upsampled, blurred by a disc of radius 5, plus a little noise),
and writes a JSON file and a markdown report to
``bench/results/deconv-<host-or-gpu>-<date>.{json,md}``.

Usage::

    python bench/bench_deconv.py                       # everything
    python bench/bench_deconv.py --quick               # 512² only, 1 repeat
    python bench/bench_deconv.py --sizes 2048 --methods richardson_lucy --backends cpu

See ``bench/README.md`` for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_OUT,
    Timing,
    copy_bandwidth,
    finish_machine_info,
    fmt_ratio,
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
from gpudeblur.convolution import BlurOperator  # noqa: E402

METHODS = ("inverse_filter", "wiener", "tikhonov", "richardson_lucy", "richardson_lucy_tv", "admm_tv")
ITERATIVE = ("richardson_lucy", "richardson_lucy_tv", "admm_tv")
WIENER_BALANCE = 1e-2  # given explicitly to both libraries (skimage requires it)
DISC_RADIUS = 5
NOISE_SIGMA = 0.005


# ---------------------------------------------------------------------------
# test image
# ---------------------------------------------------------------------------


def make_image(n: int, psf: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sharp, blurred) ``(n, n, 3)`` float32 images in [0, 1].

    scikit-image's astronaut (512², natural statistics) resampled to ``n²``
    by linear interpolation, blurred by ``psf`` (reflect boundary) with
    Gaussian noise of σ = 0.005, clipped at 0.
    """
    from scipy import ndimage
    from skimage import data

    a = data.astronaut().astype(np.float32) / 255.0
    if n != a.shape[0]:
        z = n / a.shape[0]
        a = np.stack([ndimage.zoom(a[..., c], z, order=1) for c in range(3)], axis=-1)
    a = np.clip(a[:n, :n], 0, 1).astype(np.float32)
    b = gd.fftconvolve(a, psf, boundary="reflect", backend="cpu", dtype=np.float32)
    rng = np.random.default_rng(seed)
    b = b + rng.normal(0, NOISE_SIGMA, b.shape).astype(np.float32)
    return a, np.clip(b, 0, None).astype(np.float32)


def psnr(x, ref) -> float:
    x = np.asarray(x, dtype=np.float64)
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


# ---------------------------------------------------------------------------
# the contenders
# ---------------------------------------------------------------------------


def ours(method: str, be_name: str, num_iter: int):
    """``f(img, psf, k=num_iter)`` calling gpudeblur with default settings."""
    f = getattr(gd, method)

    def run(img, psf, k=num_iter):
        if method == "wiener":
            return f(img, psf, WIENER_BALANCE, backend=be_name)
        if method in ITERATIVE:
            return f(img, psf, num_iter=k, backend=be_name)
        return f(img, psf, backend=be_name)

    return run


def skimage_impl(method: str, num_iter: int, mod):
    """Per-channel call of scikit-image / cuCIM (``mod`` = their ``restoration``), or None."""
    if method == "richardson_lucy":

        def run(img, psf, k=num_iter):
            xp = _xp_of(img)
            return xp.stack([mod.richardson_lucy(img[..., c], psf, num_iter=k, clip=False) for c in range(img.shape[2])], -1)

        return run
    if method == "wiener":

        def run(img, psf, k=None):
            xp = _xp_of(img)
            return xp.stack([mod.wiener(img[..., c], psf, WIENER_BALANCE, clip=False) for c in range(img.shape[2])], -1)

        return run
    return None


def _xp_of(a):
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def cucim_restoration():
    if importlib.util.find_spec("cucim") is None:
        return None, "cuCIM not installed"
    try:
        from cucim.skimage import restoration

        return restoration, None
    except Exception as exc:  # noqa: BLE001
        return None, f"cuCIM import failed: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# timing one case
# ---------------------------------------------------------------------------


def time_case(fn, img, psf, sync, iterative: bool, num_iter: int, repeats: int, budget: float, extrapolate_iters: int | None):
    """Time ``fn(img, psf)``; iterative methods warm up with 1 iteration.

    With ``extrapolate_iters = k`` (slow CPU cases), ``fn`` runs 1 and ``k``
    iterations and the ``num_iter`` time is ``t1 + (tk − t1)·(num_iter − 1)/(k − 1)``.
    """
    warm = (lambda: fn(img, psf, 1)) if iterative else True
    if iterative and extrapolate_iters:
        k = extrapolate_iters
        t1, _ = time_call(lambda: fn(img, psf, 1), sync, repeats=1, warmup=warm)
        tk, out = time_call(lambda: fn(img, psf, k), sync, repeats=1, warmup=False)
        per = (tk.median - t1.median) / (k - 1)
        est = t1.median + per * (num_iter - 1)
        cpu = t1.cpu_median + (tk.cpu_median - t1.cpu_median) / (k - 1) * (num_iter - 1)
        t = Timing(
            times=[est],
            cpu_times=[cpu],
            warmup_s=t1.warmup_s,
            note=f"extrapolated from 1 and {k} iterations (t1={t1.median:.3g}s, t{k}={tk.median:.3g}s)",
        )
        return t, out, True
    if iterative:
        t, out = time_call(lambda: fn(img, psf, num_iter), sync, repeats=repeats, warmup=warm, budget_s=budget)
    else:
        t, out = time_call(lambda: fn(img, psf), sync, repeats=repeats, warmup=True, budget_s=budget)
    return t, out, False


# ---------------------------------------------------------------------------
# Richardson-Lucy roofline model
# ---------------------------------------------------------------------------


def rl_model(grid_shape, channels: int, itemsize: int = 4) -> dict:
    """Flops and bytes of one RL iteration of gpudeblur on a padded grid.

    Per channel and iteration: 2 forward + 2 inverse real 2-D FFTs of the
    ``P = Mg·Ng`` grid, 2 complex spectrum × OTF products, the ratio
    ``y / Hx`` and the update ``x *= corr``.

    Flops: a complex FFT of ``P`` points costs ≈ ``5 P log2 P``; a real one
    half, ``2.5 P log2 P``. Complex multiply: 6 flops on ``P/2`` values.

    Bytes (counted as full-array passes, reads + writes, float32 = 4 B per
    real value, complex half-spectrum = 8 B · P/2 = 4 B per grid point):

    - each 2-D FFT that does not fit in cache makes ≥ 2 passes (rows, then
      columns), each reading and writing the array: 4 × 4 B · P = 16 B·P;
    - spectrum × OTF: read spectrum, read OTF, write product: 12 B·P;
    - ratio: read y, read Hx, write ratio: 12 B·P; update: read x, read
      corr, write x: 12 B·P.

    Total 4·16 + 2·12 + 12 + 12 = 112 B per grid point per channel.
    """
    Mg, Ng = grid_shape
    P = Mg * Ng
    fft_flops = 4 * 2.5 * P * math.log2(P)
    cmul_flops = 2 * 6 * Mg * (Ng // 2 + 1)
    elem_flops = 2 * P
    b = (4 * 16 + 2 * 12 + 12 + 12) * P * itemsize / 4
    return {
        "grid": [Mg, Ng],
        "flops_per_iter": channels * (fft_flops + cmul_flops + elem_flops),
        "fft_flops_per_iter": channels * fft_flops,
        "bytes_per_iter": channels * b,
        "passes_model": "4 FFTs x 16 B/pt + 2 cmul x 12 + ratio 12 + update 12 = 112 B per grid point per channel",
    }


def rl_breakdown(be, n: int, psf, repeats: int = 3) -> dict:
    """Median time of each pass of one RL iteration (same calls as restoration.py)."""
    xp, fft = be.xp, be.fft
    kw = be.fft_kwargs()
    op = BlurOperator(psf, (n, n), be, np.float32, boundary="reflect")
    shape = op.grid_shape
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.random((3,) + shape, dtype=np.float32) + 0.1)
    y = xp.asarray(rng.random((3,) + shape, dtype=np.float32) + 0.1)
    ratio = xp.empty_like(x)
    X = fft.rfft2(x, **kw)
    sync = be.synchronize
    kern = be.kernels
    est = fft.irfft2(X, s=shape, **kw)
    cases = {
        "rfft2 (3 ch)": lambda: fft.rfft2(x, **kw),
        "irfft2 (3 ch)": lambda: fft.irfft2(X, s=shape, **kw),
        "spectrum * otf": lambda: X * op.otf,
        "otf.conj()": lambda: op.otf.conj(),
        "ratio kernel": lambda: kern.rl_ratio(y, est, ratio, np.float32(1e-30)),
        "x *= corr": lambda: x.__imul__(y),
        "copy (x.copy())": lambda: x.copy(),
    }
    out = {}
    for name, f in cases.items():
        t, _ = time_call(f, sync, repeats=repeats, warmup=True, budget_s=5)
        out[name] = t.median
    per_iter = 2 * out["rfft2 (3 ch)"] + 2 * out["irfft2 (3 ch)"] + 2 * out["spectrum * otf"] + out["otf.conj()"] + out["ratio kernel"] + out["x *= corr"]
    out["sum of passes of one iteration"] = per_iter
    return out


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None, help="comma-separated square sizes (default 512,2048,4096; --quick: 512)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--backends", default="cpu,cuda", help="comma-separated: cpu, cuda (cuda skipped without a device)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 5; --quick: 1)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls after which a case stops repeating")
    p.add_argument("--iters", type=int, default=100, help="iterations of RL, RL-TV and ADMM-TV (default 100)")
    p.add_argument("--quick", action="store_true", help="512² only, 1 repeat: a smoke run of every code path")
    p.add_argument("--no-reference", action="store_true", help="skip scikit-image and cuCIM")
    p.add_argument("--skimage-max-size", type=int, default=4096, help="largest size timed with scikit-image")
    p.add_argument(
        "--extrapolate-above",
        type=int,
        default=2048,
        help="CPU iterative methods on larger images run 1 and --extrapolate-iters iterations and are extrapolated "
        "(marked ~); 0 disables",
    )
    p.add_argument("--extrapolate-iters", type=int, default=10)
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-pass RL breakdown")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results)")
    p.add_argument("--tag", default="", help="suffix for the output file names")
    a = p.parse_args(argv)
    a.sizes = [int(s) for s in (a.sizes or ("512" if a.quick else "512,2048,4096")).split(",") if s]
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    bad = [b for b in a.backends if b not in ("cpu", "cuda")]
    if bad:
        p.error(f"unknown backend(s) {', '.join(bad)}; choose from cpu, cuda")
    if a.repeats is None:
        a.repeats = 1 if a.quick else 5
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    psf = gd.psf.disc(DISC_RADIUS)
    psf32 = psf.astype(np.float32)

    use_cuda = "cuda" in a.backends and gd.cuda_available()
    notes = []
    if "cuda" in a.backends and not use_cuda:
        notes.append("CUDA backend requested but no CUDA device/CuPy available: GPU columns are empty.")
        log("bench_deconv: no CUDA device, GPU timings skipped")
    cp = None
    gpu_name = None
    be_gpu = None
    if use_cuda:
        be_gpu = gd.get_backend("cuda")
        cp = be_gpu.xp
        gpu_name = be_gpu.device_name()
    be_cpu = gd.get_backend("cpu")

    sk_mod = None
    if not a.no_reference:
        import skimage.restoration as sk_mod  # noqa: PLC0415
    cucim_mod, cucim_why = (None, "no GPU") if not use_cuda else cucim_restoration()
    if use_cuda and cucim_mod is None:
        notes.append(f"cuCIM column empty: {cucim_why}.")
    if a.no_reference:
        cucim_mod = None

    info = machine_info(gpu_name)
    log(f"bench_deconv: {info['cpu']} ({info['cpu_cores']} cores), GPU {gpu_name or 'none'}, commit {info['commit']}")

    bw = {"cpu_copy_GBps": copy_bandwidth(np)}
    if use_cuda:
        bw["gpu_copy_GBps"] = copy_bandwidth(cp, be_gpu.synchronize, nbytes=1024 * 2**20)
    log("copy bandwidth: " + ", ".join(f"{k}={v:.1f}" for k, v in bw.items()))

    results = []
    breakdowns = {}
    for n in a.sizes:
        log(f"--- {n}x{n} RGB ---")
        sharp, blurred = make_image(n, psf)
        blurred_dev = cp.asarray(blurred) if use_cuda else None
        psf_dev = cp.asarray(psf32) if use_cuda else None
        for m in a.methods:
            it = m in ITERATIVE
            row = {"method": m, "size": n, "iters": a.iters if it else None}
            extrap = a.extrapolate_iters if (it and a.extrapolate_above and n > a.extrapolate_above) else None
            if "cpu" in a.backends:
                t, out, approx = time_case(ours(m, "cpu", a.iters), blurred, psf, None, it, a.iters, a.repeats, a.budget, extrap)
                row["ours_cpu"] = dict(t.as_dict(), approx=approx)
                row["psnr_ours"] = psnr(out, sharp) if not approx else None
                log(f"{m:20s} ours cpu    {fmt_s(t.median, approx)} x{t.repeats}")
            if use_cuda:
                t, out, _ = time_case(ours(m, "cuda", a.iters), blurred_dev, psf, be_gpu.synchronize, it, a.iters, a.repeats, a.budget, None)
                row["ours_gpu"] = dict(t.as_dict(), approx=False)
                row["psnr_ours_gpu"] = psnr(cp.asnumpy(out), sharp)
                log(f"{m:20s} ours gpu    {fmt_s(t.median)} x{t.repeats}")
                # end to end: NumPy in, NumPy out (host<->device copies included), plans already warm
                f = ours(m, "cuda", a.iters)
                te, _ = time_call(lambda: f(blurred, psf), be_gpu.synchronize, repeats=1, warmup=False)
                row["ours_gpu_e2e"] = dict(te.as_dict(), approx=False)
                log(f"{m:20s} ours gpu e2e {fmt_s(te.median)}")
            if sk_mod is not None and n <= a.skimage_max_size:
                f = skimage_impl(m, a.iters, sk_mod)
                if f is not None:
                    ex = extrap if m == "richardson_lucy" else None
                    reps = 1 if (it and n >= 2048) else a.repeats
                    t, out, approx = time_case(f, blurred, psf32, None, it, a.iters, reps, a.budget, ex)
                    row["skimage"] = dict(t.as_dict(), approx=approx)
                    row["psnr_skimage"] = psnr(out, sharp) if not approx else None
                    log(f"{m:20s} skimage     {fmt_s(t.median, approx)} x{t.repeats}")
            if cucim_mod is not None:
                f = skimage_impl(m, a.iters, cucim_mod)
                if f is not None:
                    t, _, _ = time_case(f, blurred_dev, psf_dev, be_gpu.synchronize, it, a.iters, a.repeats, a.budget, None)
                    row["cucim"] = dict(t.as_dict(), approx=False)
                    log(f"{m:20s} cucim       {fmt_s(t.median)} x{t.repeats}")
            results.append(row)
        if "richardson_lucy" in a.methods and not a.no_breakdown:
            if "cpu" in a.backends:
                breakdowns[f"cpu-{n}"] = rl_breakdown(be_cpu, n, psf)
            if use_cuda:
                breakdowns[f"cuda-{n}"] = rl_breakdown(be_gpu, n, psf)
        sharp = blurred = blurred_dev = None  # free before the next size

    finish_machine_info(info)
    roof = roofline(results, a, bw, psf, use_cuda)
    payload = {
        "benchmark": "deconv",
        "machine": info,
        "settings": {
            "sizes": a.sizes,
            "methods": a.methods,
            "backends": a.backends,
            "iters": a.iters,
            "repeats": a.repeats,
            "budget_s": a.budget,
            "psf": f"disc:{DISC_RADIUS}",
            "noise_sigma": NOISE_SIGMA,
            "wiener_balance": WIENER_BALANCE,
            "extrapolate_above": a.extrapolate_above,
            "extrapolate_iters": a.extrapolate_iters,
        },
        "bandwidth": bw,
        "results": results,
        "rl_roofline": roof,
        "rl_breakdown_s": breakdowns,
        "notes": notes,
    }
    md = render_markdown(info, a, results, roof, breakdowns, bw, notes)
    stem = result_stem("deconv", info) + (f"-{a.tag}" if a.tag else "")
    pj, pm = write_results(a.out, stem, payload, md)
    print(md)
    log(f"wrote {pj} and {pm}")
    return 0


def roofline(results, a, bw, psf, use_cuda) -> list[dict]:
    rows = []
    for r in results:
        if r["method"] != "richardson_lucy":
            continue
        n = r["size"]
        grid = BlurOperator(psf, (n, n), gd.get_backend("cpu"), np.float32, boundary="reflect").grid_shape
        model = rl_model(grid, 3)
        for key, bwkey in (("ours_cpu", "cpu_copy_GBps"), ("ours_gpu", "gpu_copy_GBps")):
            if key not in r or bwkey not in bw:
                continue
            t_iter = r[key]["median_s"] / a.iters
            floor_iter = model["bytes_per_iter"] / (bw[bwkey] * 1e9)
            rows.append(
                dict(
                    model,
                    size=n,
                    backend=key.split("_")[1],
                    approx=r[key].get("approx", False),
                    time_per_iter_s=t_iter,
                    gflops=model["flops_per_iter"] / t_iter / 1e9,
                    fft_gflops=model["fft_flops_per_iter"] / t_iter / 1e9,
                    effective_GBps=model["bytes_per_iter"] / t_iter / 1e9,
                    bandwidth_GBps=bw[bwkey],
                    floor_per_iter_s=floor_iter,
                    floor_total_s=floor_iter * a.iters,
                    x_above_floor=t_iter / floor_iter,
                )
            )
    return rows


def _cell(r, key):
    if key not in r:
        return "—"
    d = r[key]
    return f"{fmt_s(d['median_s'], d.get('approx'))} [{d['repeats']}]"


def _ratio(r, num, den, cpu=False):
    if num not in r or den not in r:
        return "—"
    rr = fmt_ratio(r[num]["median_s"] / r[den]["median_s"])
    if cpu:
        rr += " / " + fmt_ratio(r[num]["cpu_median_s"] / r[den]["cpu_median_s"])
    return ("~" + rr) if (r[num].get("approx") or r[den].get("approx")) and not rr.startswith("—") else rr


def render_markdown(info, a, results, roof, breakdowns, bw, notes) -> str:
    out = [f"# Deconvolution benchmark — {info['gpu'] or info['host']} — {info['date_utc'][:10]}", "", machine_markdown(info), ""]
    out.append(
        f"RGB float32 images (astronaut upsampled), disc PSF r={DISC_RADIUS}, noise σ={NOISE_SIGMA}; "
        f"iterative methods {a.iters} iterations; Wiener balance {WIENER_BALANCE} for both libraries. "
        "gpudeblur with its defaults (reflect boundary + edge taper, all channels in one batched FFT); "
        "scikit-image / cuCIM per channel (`richardson_lucy(..., num_iter, clip=False)`, `wiener(..., clip=False)`, "
        "zero/periodic boundary). Times are medians of the timed repeats [count in brackets], warm-up excluded, "
        "device-synchronized; GPU 'device' times take CuPy arrays in and out (no transfers), 'e2e' takes NumPy in/out. "
        "'core-s' compares process CPU time (all threads): on a shared machine it measures work done, "
        "independent of waiting for a core. `~` = extrapolated from 1 and "
        f"{a.extrapolate_iters} iterations (CPU, sizes > {a.extrapolate_above}). Ratios > 1 mean gpudeblur is faster."
    )
    out.append("")
    headers = [
        "method",
        "size",
        "ours CPU",
        "ours GPU (device)",
        "ours GPU (e2e)",
        "skimage CPU",
        "cuCIM GPU",
        "CPU vs skimage (wall / core-s)",
        "GPU vs our CPU",
        "GPU vs cuCIM",
        "PSNR dB ours / skimage",
    ]
    rows = []
    for r in results:
        ps = r.get("psnr_ours")
        pk = r.get("psnr_skimage")
        ptxt = f"{ps:.2f}" if ps else ("—" if r.get("psnr_ours_gpu") is None else f"{r['psnr_ours_gpu']:.2f} (GPU)")
        ptxt += f" / {pk:.2f}" if pk else " / —"
        rows.append(
            [
                r["method"],
                f"{r['size']}²",
                _cell(r, "ours_cpu"),
                _cell(r, "ours_gpu"),
                _cell(r, "ours_gpu_e2e"),
                _cell(r, "skimage"),
                _cell(r, "cucim"),
                _ratio(r, "skimage", "ours_cpu", cpu=True),
                _ratio(r, "ours_cpu", "ours_gpu"),
                _ratio(r, "cucim", "ours_gpu"),
                ptxt,
            ]
        )
    out += [markdown_table(headers, rows), ""]

    if roof:
        out += ["## Richardson-Lucy roofline", ""]
        out.append(
            "Model per iteration and channel on the padded grid of P points: 2 forward + 2 inverse real 2-D FFTs "
            "(2.5·P·log2 P flops each), 2 spectrum×OTF products, ratio and update. Bytes: each 2-D FFT ≥ 2 passes "
            "(rows, columns) reading + writing the array (16 B/pt), spectrum×OTF 12 B/pt, ratio 12, update 12 → "
            "112 B per grid point per channel. Floor = bytes / measured copy bandwidth "
            + ", ".join(f"{k.replace('_copy_GBps', '').upper()} {v:.1f} GB/s" for k, v in bw.items())
            + " (read + write counted)."
        )
        out.append("")
        h = ["backend", "size", "grid", "GFLOP/iter", "GB/iter", "time/iter", "GFLOP/s (all)", "effective GB/s", "floor/iter", "× above floor"]
        rr = [
            [
                x["backend"],
                f"{x['size']}²",
                f"{x['grid'][0]}×{x['grid'][1]}",
                f"{x['flops_per_iter'] / 1e9:.2f}",
                f"{x['bytes_per_iter'] / 1e9:.2f}",
                fmt_s(x["time_per_iter_s"], x["approx"]),
                f"{x['gflops']:.1f}",
                f"{x['effective_GBps']:.1f}",
                fmt_s(x["floor_per_iter_s"]),
                f"{x['x_above_floor']:.1f}×",
            ]
            for x in roof
        ]
        out += [markdown_table(h, rr), ""]
    if breakdowns:
        out += ["## Richardson-Lucy: time of each pass of one iteration (3 channels, reflect grid)", ""]
        keys = list(breakdowns)
        names = list(next(iter(breakdowns.values())))
        out += [markdown_table(["pass"] + keys, [[nm] + [fmt_s(breakdowns[k][nm]) for k in keys] for nm in names]), ""]
        out.append(
            "One iteration = 2 × rfft2 + 2 × irfft2 + 2 × spectrum·otf + otf.conj() + ratio + update "
            "(the calls of `richardson_lucy` in `gpudeblur/restoration.py`); the difference to the measured time per "
            "iteration is allocation (page faults) and Python overhead."
        )
        out.append("")
    if notes:
        out += ["## Notes", ""] + [f"- {x}" for x in notes] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
