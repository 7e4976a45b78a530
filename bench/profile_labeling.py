"""Where the primal-dual labeling's time goes: phases of one tile, and the kernels' bandwidth.

The 12 MP blur map at full resolution spends ~58 s of its ~61 s in the
labeling on an H200 (16 tiles of ~0.75 MP x 81 labels, 30-480 fine
iterations each; ``bench_blurmap --time-labeling``), far above what the
memory traffic of its iterations predicts. This script labels one tile
(``--size``, default 866² ≈ 12 MP / 16) with :func:`coherent_labeling`,
with every phase of ``_solve_lmn`` wrapped in device synchronizations:

- data cost (``_data_cost_lmn``), edge weights, label pruning,
  label coarsening and prolongation;
- each ``_primal_dual`` call (coarse label level, full level): time,
  iterations, ms per iteration, and how much of it the every-10-iterations
  check (threshold + energy) takes;

then times the two fused kernels of one iteration (``lifted_dual``,
``lifted_primal_fused``) on the full level's own data and final iterate
(the PAVA's merges, hence the primal kernel's time, depend on them; up to
session 19's third GPU call a synthetic state was used), and compares with
the bytes they must move at least, at the device's measured copy
bandwidth (:func:`_common.copy_bandwidth`).

Usage::

    python bench/profile_labeling.py --backend cuda            # GPU
    python bench/profile_labeling.py --backend cpu --size 200  # the same phases on the CPU
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
    copy_bandwidth,
    finish_machine_info,
    fmt_s,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    result_stem,
    time_call,
    write_results,
)
from bench_labeling import planted_problem, real_problem  # noqa: E402

from gpudeblur._backend import get_backend  # noqa: E402
from gpudeblur.blurmap import labeling as lb  # noqa: E402

#: Phases of ``_solve_lmn`` wrapped (module attribute names of labeling.py).
PHASES = ("_data_cost_lmn", "edge_weights", "_label_range", "_coarsen_labels", "_prolong_labels", "_energy_lmn",
          "_primal_dual")


class PhaseTimer:
    """Wraps module functions with synchronized timers; restores them on exit."""

    def __init__(self, be):
        self.be = be
        self.calls: list[dict] = []
        self._saved = {}
        self._depth = 0

    def __enter__(self):
        for name in PHASES:
            fn = getattr(lb, name)
            self._saved[name] = fn
            setattr(lb, name, self._wrap(name, fn))
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(lb, name, fn)

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            self.be.synchronize()
            t0 = time.perf_counter()
            self._depth += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self._depth -= 1
            self.be.synchronize()
            rec = dict(phase=name, seconds=time.perf_counter() - t0, nested=self._depth > 0)
            if name == "_primal_dual":
                D = args[0]
                _, info = out
                rec.update(labels=int(D.shape[0]), pixels=int(D.shape[1] * D.shape[2]),
                           iterations=int(info["iterations"]), gap=float(info["gap"]))
                # the last solve (the full label level) and its final iterate, for the kernel timings
                self.last_solve = (D, args[1], args[2], float(info["balance"]), info.get("state"))
            self.calls.append(rec)
            return out

        return timed


def kernel_bytes(K, MN, E, itemsize):
    """Least bytes one iteration's two kernels must move (each array touched once)."""
    dual = itemsize * K * MN * (1 + E + 2 * E)  # ubar read; W per label step; p read + write
    primal = itemsize * K * MN * (1 + E + 2 + 3 + 2)  # c; p; u r/w; ubar w (sizes), r, w; scratch w/r
    return dual, primal


def profile(size, problem, be, dtype, repeats):
    r, p, img, _ = (planted_problem if problem == "planted" else real_problem)(size, size)
    xp = be.xp
    rb, pb, ib = xp.asarray(r), xp.asarray(p), xp.asarray(img)
    labels = lb.default_labels(8.0)
    # warm-up: compiles the kernels and builds the caches on a small problem
    lb.coherent_labeling(rb[:64, :64], pb[:64, :64], ib[:64, :64], labels=labels, max_iter=20, backend=be)
    be.synchronize()
    t0 = time.perf_counter()
    with PhaseTimer(be) as pt:
        _, info = lb.coherent_labeling(rb, pb, ib, labels=labels, radius_prior=2.0, backend=be)
    be.synchronize()
    total = time.perf_counter() - t0
    rows, phases = [], []
    energy_time = sum(c["seconds"] for c in pt.calls if c["phase"] == "_energy_lmn")
    for c in pt.calls:
        if c["phase"] == "_energy_lmn":
            continue
        phases.append(c)
        extra = ""
        if c["phase"] == "_primal_dual":
            extra = (f"K = {c['labels'] - 1}, {c['iterations']} its, {1e3 * c['seconds'] / max(c['iterations'], 1):.2f}"
                     f" ms/it, gap {c['gap']:.4f}")
        rows.append([c["phase"], fmt_s(c["seconds"]), extra])
    rows.append(["(energy checks, inside the solves)", fmt_s(energy_time),
                 f"{sum(c['phase'] == '_energy_lmn' for c in pt.calls)} calls"])
    rows.append(["**coherent_labeling total**", fmt_s(total), f"label range {info.get('label_range')}"])

    # one iteration's kernels on the full label level's own data and final iterate (the
    # PAVA's merges, hence the primal kernel's time, depend on them), set up as _primal_dual does
    D, W, vals, balance, (u, P) = pt.last_solve
    E, K, M, N = P.shape
    t = np.dtype(dtype).type
    c = lb._as_lifted(be, D[1:] - D[:-1])
    ubar = lb._lifted_empty(be, (), K, M, N, dtype)
    ubar[...] = u
    scratch = lb._lifted_empty(be, (), K, M, N, dtype)
    deg = xp.zeros((M, N), dtype=dtype)
    for di, dj in lb.EDGE_OFFSETS[:E]:
        src, dst = lb._edge_slices(di, dj, M, N)
        deg[src] += 1
        deg[dst] += 1
    tau = xp.ascontiguousarray((1.0 / (balance * deg)).astype(dtype))
    W = xp.ascontiguousarray(W, dtype=dtype)
    delta = xp.asarray(np.diff(vals), dtype=dtype)
    sig = t(balance / 2.0)
    lbpix = xp.empty((M, N), dtype=dtype)
    sync = be.synchronize
    # each timed call starts from the same iterate (the kernels update u, ubar, P in place)
    u0, P0 = u.copy(), P.copy()

    def restore():
        u[...] = u0
        ubar[...] = u0
        P[...] = P0
    restore()
    td, _ = time_call(lambda: lb._lifted_dual(be, ubar, P, W, delta, sig), sync, repeats=repeats)
    variants = [("lifted_primal_fused", None)]
    if be.name == "cuda":  # the kernel's two variants
        variants = [("lifted_primal_fused, prefetch", True), ("lifted_primal_fused, no prefetch", False)]
    tps = []
    for name, pf in variants:
        restore()
        tm, _ = time_call(lambda pf=pf: lb._lifted_primal_fused(be, u, ubar, scratch, c, P, tau, lbpix, prefetch=pf),
                          sync, repeats=repeats)
        tps.append((name, tm))
    th, _ = time_call(lambda: (u > t(0.5)).sum(axis=0).astype(np.int32), sync, repeats=repeats)
    bw = copy_bandwidth(xp, sync) * 1e9  # B/s
    bd, bp = kernel_bytes(K, M * N, E, np.dtype(dtype).itemsize)
    krows = []
    kern = {}
    for name, tm, nbytes in [("lifted_dual", td, bd)] + [(n, tm, bp) for n, tm in tps] + [
            ("threshold (check)", th, 0)]:
        floor = nbytes / bw if nbytes else None
        kern[name] = dict(median_s=tm.median, bytes=nbytes, floor_s=floor)
        krows.append([name, fmt_s(tm.median), f"{nbytes / 1e9:.2f} GB" if nbytes else "—",
                      fmt_s(floor) if floor else "—", f"{tm.median / floor:.1f}x" if floor else "—"])
    lo, hi = info["label_range"]
    payload = dict(size=size, problem=problem, dtype=np.dtype(dtype).name, phases=phases, total_s=total,
                   label_range=[int(lo), int(hi)], label_steps=int(K), edges=int(E), energy_checks_s=energy_time,
                   kernels=kern,
                   copy_bandwidth_Bps=bw, info={k: v for k, v in info.items() if k != "label_index"})
    return payload, rows, krows, bw


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--size", type=int, default=866, help="tile side (default 866: ~12 MP / 16 tiles)")
    ap.add_argument("--problem", choices=["planted", "real"], default="real")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    be = get_backend(args.backend)
    info = machine_info(gpu_name=be.device_name() if be.name == "cuda" else None)
    log(f"profiling a {args.size}² {args.problem} labeling tile on {be.name}")
    payload, rows, krows, bw = profile(args.size, args.problem, be, np.float32, args.repeats)
    payload["machine"] = finish_machine_info(info)
    md = [f"# Primal-dual labeling profile, one {args.size}² tile ({args.problem} candidates, 81 labels)", "",
          machine_markdown(info), "", "## Phases (synchronized)", "",
          markdown_table(["phase", "time", "detail"], rows), "",
          f"## One iteration's kernels (the full level's data and final iterate, K = {payload['label_steps']}, "
          f"E = {payload['edges']}, float32; copy bandwidth {bw / 1e9:.0f} GB/s)", "",
          markdown_table(["kernel", "median", "least bytes", "floor", "vs floor"], krows)]
    stem = result_stem(f"labeling-profile-{args.size}", info)
    pj, pm = write_results(args.out, stem, payload, "\n".join(md))
    print("\n".join(md))
    log(f"wrote {pj} and {pm}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
