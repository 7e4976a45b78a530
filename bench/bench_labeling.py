"""Labeling benchmark: coherent blur-map labeling (eq. 14-16) and in-focus segmentation (eq. 17-18).

Solvers of :mod:`gpudeblur.blurmap.labeling` on the same synthetic problem
(a piecewise-constant true radius map, top-3 candidates per pixel with
holes where the top-1 is wrong, pixels without any candidate near the
truth and pixels without texture; the colors follow the regions):

- ``primal-dual`` on each backend (lifted LP, certified lower bound);
- ``alpha-expansion`` (PyMaxflow, the paper's optimizer);
- ``exact`` (Ishikawa graph, PyMaxflow; ~0.4 kB per pixel and label, so
  only up to ``--exact-max-mpix`` million pixel-labels).

It reports time (wall and process CPU), energy (one energy function for
all), the gap to the best known energy (the exact optimum when it ran, else
the best energy found) and the mean absolute error against the true map,
and writes ``bench/results/labeling-<host-or-gpu>-<date>.{json,md}``.

Usage::

    python bench/bench_labeling.py                    # 500x500, L = 81, CPU (+ CUDA if present)
    python bench/bench_labeling.py --sizes 128 256 --backends cpu
    python bench/bench_labeling.py --quick            # 128x128
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
    write_results,
)

from gpudeblur._backend import cuda_available, get_backend  # noqa: E402
from gpudeblur.blurmap import labeling as lb  # noqa: E402


def planted_problem(M, N, seed=0, hole_frac=0.25, lost_frac=0.04, flat_frac=0.03):
    """Same generator as tests/test_labeling.py, with more regions for large images."""
    rng = np.random.default_rng(seed)
    ii, jj = np.mgrid[:M, :N]
    true = np.full((M, N), 5.0)
    true[(ii - M / 2) ** 2 + (jj - N / 2) ** 2 < (min(M, N) / 3) ** 2] = 1.0
    true[: M // 4, :] = 3.0
    true[(ii > 0.7 * M) & (jj < 0.3 * N)] = 7.0
    true[(ii - 0.3 * M) ** 2 + (jj - 0.75 * N) ** 2 < (min(M, N) / 8) ** 2] = 0.0
    img = np.stack([true / 8, 0.5 - true / 16, 0.3 + 0.05 * np.sin(jj / 7.0)], axis=-1)
    img = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1)
    r = np.empty((M, N, 3))
    p = np.empty((M, N, 3))
    r[..., 0] = true + rng.normal(0, 0.15, (M, N))
    p[..., 0] = 1.0
    r[..., 1] = rng.uniform(0, 8, (M, N))
    p[..., 1] = rng.uniform(0.1, 0.6, (M, N))
    r[..., 2] = rng.uniform(0, 8, (M, N))
    p[..., 2] = rng.uniform(0.01, 0.1, (M, N))
    holes = rng.random((M, N)) < hole_frac
    wrong = rng.uniform(0, 8, (M, N))
    r[holes, 1] = r[holes, 0]
    r[holes, 0] = wrong[holes]
    p[holes, 1] = 0.5
    lost = rng.random((M, N)) < lost_frac
    r[lost, 0] = wrong[lost]
    r[lost, 1] = rng.uniform(0, 8, int(lost.sum()))
    flat = rng.random((M, N)) < flat_frac
    p[flat] = 0.0
    return r, p, img.astype(np.float32), true


def real_problem(M, N, seed=0):
    """Top-3 candidates of a real blur map: the astronaut photo (resized to M x N) blurred by a disc
    whose radius ramps 0 -> 8 px left to right, noise sigma^2 = 1e-6 (Zhu Fig. 8 setting)."""
    import cv2  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    from gpudeblur.blurmap import BlurMapEstimator  # noqa: PLC0415
    from gpudeblur.spatially_varying import blur_spatially_varying  # noqa: PLC0415

    img = cv2.resize(data.astronaut(), (N, M), interpolation=cv2.INTER_AREA) / 255.0
    true = np.tile(np.linspace(0.0, 8.0, N), (M, 1))
    y = blur_spatially_varying(img, true, radius_step=0.1, dtype="float64")
    y = np.clip(y + 1e-3 * np.random.default_rng(seed).standard_normal(y.shape), 0, 1)
    res = BlurMapEstimator(noise=1e-6, labeling=None).estimate(y, return_candidates=True)
    return (np.asarray(res.candidates, np.float64), np.asarray(res.likelihoods, np.float64),
            y.astype(np.float32), true)


def _cpu_clock():
    return time.process_time()


def run_one(fn, be):
    be.synchronize()
    t0, c0 = time.perf_counter(), _cpu_clock()
    out = fn()
    be.synchronize()
    return out, time.perf_counter() - t0, _cpu_clock() - c0


def bench_size(S, L_step, backends, methods, exact_max_mpix, max_iter, tol, seg, problem="planted"):
    r, p, img, true = (planted_problem if problem == "planted" else real_problem)(S, S)
    labels = lb.default_labels(8.0, L_step)
    rows = []
    results = []
    top1_err = float(np.abs(r[..., 0] - true).mean())
    for bname in backends:
        be = get_backend(bname)
        xp = be.xp
        rb, pb, ib = xp.asarray(r), xp.asarray(p), xp.asarray(img)
        # warm-up: compiles the Numba/CUDA kernel on a tiny problem
        lb.coherent_labeling(rb[:8, :8], pb[:8, :8], ib[:8, :8], labels=labels, method="primal-dual", max_iter=2,
                             backend=be)
        (D, t_data, c_data) = run_one(lambda: lb.data_cost_from_candidates(rb, pb, labels, backend=be), be)
        (W, t_w, c_w) = run_one(lambda: lb.edge_weights(ib, 20.0, 0.1, backend=be), be)
        log(f"[{S}x{S} L={labels.size} {bname}] data cost {t_data:.2f} s, weights {t_w:.3f} s")
        results.append(dict(size=S, labels=int(labels.size), backend=bname, method="data-cost + weights",
                            time_s=t_data + t_w, cpu_s=c_data + c_w))
        for m in methods:
            if m != "primal-dual" and bname != "cpu":
                continue  # the PyMaxflow solvers are CPU only: timed once on the cpu pass
            if m == "exact" and S * S * (labels.size - 1) > exact_max_mpix * 1e6:
                log(f"[{S}x{S}] exact skipped ({S * S * (labels.size - 1) / 1e6:.0f} M nodes > {exact_max_mpix})")
                continue
            kw = dict(max_iter=max_iter, tol=tol) if m == "primal-dual" else {}
            log(f"[{S}x{S} L={labels.size} {bname}] {m} ...")
            (lab_info, t, c) = run_one(lambda: lb.solve_multilabel(D, W, labels, m, backend=be, **kw), be)
            lab, info = lab_info
            lab = be.to_host(lab)
            err = float(np.abs(labels[lab] - true).mean())
            res = dict(size=S, labels=int(labels.size), backend=bname, method=m, time_s=t, cpu_s=c,
                       energy=info["energy"], iterations=info["iterations"], lower_bound=info.get("lower_bound"),
                       certified_gap=info.get("gap"), mae=err, top1_mae=top1_err)
            log(f"    {t:.1f} s, E = {info['energy']:.6g}, iters {info['iterations']}, "
                f"gap {info.get('gap')}, MAE {err:.4f} (top-1 {top1_err:.4f})")
            results.append(res)
        if seg:
            rm = xp.asarray(np.clip(true + np.random.default_rng(1).normal(0, 0.8, true.shape), 0, 8))
            for m in ("min-cut", "primal-dual"):
                if m == "min-cut" and bname != "cpu":
                    continue
                log(f"[{S}x{S} {bname}] segmentation {m} ...")
                (mi, t, c) = run_one(lambda: lb.segment_in_focus(rm, ib, method=m, backend=be), be)
                mask, info = mi
                acc = float((be.to_host(mask) == (true < 2.0)).mean())
                results.append(dict(size=S, labels=2, backend=bname, method=f"segment {m}", time_s=t, cpu_s=c,
                                    energy=info["energy"], iterations=info["iterations"],
                                    lower_bound=info.get("lower_bound"), certified_gap=info.get("gap"),
                                    accuracy=acc))
                log(f"    {t:.2f} s, E = {info['energy']:.6g}, iters {info['iterations']}, accuracy {acc:.4f}")
    # gaps to the best reference energy (exact when available)
    for group in ("multi", "seg"):
        sel = [x for x in results if "energy" in x and (x["method"].startswith("segment") == (group == "seg"))]
        exact = [x["energy"] for x in sel if x["method"] in ("exact", "segment min-cut")]
        best = exact[0] if exact else (min(x["energy"] for x in sel) if sel else None)
        for x in sel:
            x["ref_energy"] = best
            x["ref_is_exact"] = bool(exact)
            x["gap_to_ref_pct"] = 100.0 * (x["energy"] - best) / abs(best)
    for x in results:
        rows.append([
            f"{x['size']}²", x["labels"], x["backend"], x["method"], fmt_s(x["time_s"]), fmt_s(x["cpu_s"]),
            f"{x['energy']:.6g}" if "energy" in x else "—",
            f"{x['gap_to_ref_pct']:+.3f} %" + ("" if x.get("ref_is_exact") else " (vs best)") if "energy" in x else "—",
            f"{x['certified_gap'] * 100:.3f} %" if x.get("certified_gap") is not None else "—",
            x.get("iterations", "—"),
            f"{x['mae']:.4f} (top-1 {x['top1_mae']:.3f})" if "mae" in x else (
                f"acc {x['accuracy']:.4f}" if "accuracy" in x else "—"),
        ])
    return results, rows


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500])
    ap.add_argument("--step", type=float, default=0.1, help="label step (0.1 -> 81 labels on [0, 8])")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=["primal-dual", "alpha-expansion", "exact"])
    ap.add_argument("--exact-max-mpix", type=float, default=6.0,
                    help="run 'exact' only up to this many million graph nodes (pixels x (L-1))")
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--tol", type=float, default=None)
    ap.add_argument("--no-seg", action="store_true", help="skip the binary segmentation")
    ap.add_argument("--quick", action="store_true", help="128x128 only")
    ap.add_argument("--problem", choices=["planted", "real"], default="planted",
                    help="synthetic planted candidates, or the estimator's candidates on a blurred photo "
                         "(astronaut, disc radius ramp 0-8, sigma^2 = 1e-6)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    sizes = [128] if args.quick else args.sizes
    backends = args.backends or (["cpu", "cuda"] if cuda_available() else ["cpu"])
    gpu = get_backend("cuda").device_name() if "cuda" in backends else None
    info = machine_info(gpu_name=gpu, extra_modules=["maxflow"])
    all_results, all_rows = [], []
    for S in sizes:
        res, rows = bench_size(S, args.step, backends, args.methods, args.exact_max_mpix, args.max_iter, args.tol,
                               not args.no_seg, args.problem)
        all_results += res
        all_rows += rows
    finish_machine_info(info)
    headers = ["size", "L", "backend", "method", "wall", "CPU time", "energy", "vs reference",
               "certified gap", "iters", "MAE px / accuracy"]
    md = "\n\n".join([
        "# Labeling benchmark (eq. 14-18)",
        machine_markdown(info),
        f"Problem: {args.problem} (see `bench/bench_labeling.py`); coherent labeling with lambda0 = 20, "
        "sigma_lambda = 0.1, labels 0..8 step " + f"{args.step}; segmentation with tau = 2, lambda0 = 1000, "
        "sigma_lambda = 0.04 on a noisy radius map. 'vs reference' is the energy gap to the exact optimum "
        "(Ishikawa / min cut) where it ran, else to the best energy found; 'certified gap' is "
        "(E - lower bound) / E from the primal-dual's dual iterate. One timed run each (warm-up excluded "
        "for kernel compilation); 'CPU time' is process CPU time over all threads.",
        markdown_table(headers, all_rows),
    ])
    stem = result_stem("labeling", info)
    pj, pm = write_results(args.out, stem, dict(machine=info, results=all_results), md)
    print(md)
    log(f"wrote {pj} and {pm}")


if __name__ == "__main__":
    main()
