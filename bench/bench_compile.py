"""First-run compile time of the CPU backend's Numba kernels.

Numba compiles a kernel on its first call with new argument types and keeps
the machine code in its on-disk cache (``cache=True``), so a fresh install
pays the compile once per kernel and dtype: in the first ``gpudeblur demo``
(README), in every CI run, and after each upgrade. This script measures it
per job, each in a fresh process with an empty cache folder
(``NUMBA_CACHE_DIR``):

- ``cold``: the job's first call in a process whose cache is empty (compile
  and run), with the compile seconds of each kernel (Numba's
  ``numba:compile`` events, top level only; ``inline='always'`` helpers are
  part of their caller);
- ``cached``: the same job's first call in a second process on the cache the
  first one wrote (loading the machine code, and run);
- ``warm``: the second call in that process (run only).

A kernel the second process compiles again (its cache was not used) is
named in the table: it would cost every later run its compile.

``cold − warm`` is what a first run pays for compiling; ``cached − warm`` is
what every later process pays for loading.

Jobs (small synthetic scenes, so the run time stays small against the
compile): ``blurmap-f32``/``blurmap-f64`` (the blur map: Gabor bank,
likelihood search, labeling) and ``sv-admm``, ``fast``, ``blind``
(``AllInFocus`` on a given map). Writes ``bench/results/compile-<host>-<date>
.{json,md}``.

Usage::

    python bench/bench_compile.py                     # all jobs, 1 cold run each
    python bench/bench_compile.py --jobs blurmap-f32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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

JOBS = ("blurmap-f32", "blurmap-f64", "sv-admm", "fast", "blind")
SIZE = 128


def _scene(size: int):
    """A textured scene blurred by a disc of 3 px on its right half; its true map."""
    from gpudeblur.convolution import fftconvolve  # noqa: PLC0415
    from gpudeblur.psf import disc  # noqa: PLC0415

    rng = np.random.default_rng(0)
    sharp = rng.random((size // 8, size // 8)).repeat(8, axis=0).repeat(8, axis=1)
    sharp = 0.5 * sharp + 0.5 * np.add.outer(np.sin(np.arange(size) / 3.0), np.cos(np.arange(size) / 5.0)) / 4 + 0.25
    sharp = sharp.astype(np.float32)
    blurred = sharp.copy()
    blurred[:, size // 2:] = fftconvolve(sharp, disc(3.0), boundary="reflect", backend="cpu")[:, size // 2:]
    blurred = np.clip(blurred + rng.normal(0, 1e-3, blurred.shape).astype(np.float32), 0, 1)
    true_map = np.zeros_like(blurred)
    true_map[:, size // 2:] = 3.0
    return blurred, true_map


def _job(name: str, size: int):
    """A callable running the job once."""
    blurred, true_map = _scene(size)
    if name.startswith("blurmap"):
        from gpudeblur.blurmap import BlurMapEstimator  # noqa: PLC0415

        dt = np.float32 if name.endswith("f32") else np.float64
        est = BlurMapEstimator(dtype=dt, backend="cpu")
        return lambda: est.estimate(blurred.astype(dt))
    from gpudeblur.allinfocus import AllInFocus  # noqa: PLC0415

    aif = AllInFocus(mode=name, backend="cpu")
    return lambda: aif.run(blurred, true_map)


def _child(name: str, size: int, calls: int) -> None:
    """Run the job ``calls`` times in this process; print one JSON line."""
    from numba.core import event as ev  # noqa: PLC0415

    class _Compiles(ev.Listener):
        def __init__(self):
            self.stack, self.top = [], {}

        def on_start(self, event):
            d = event.data or {}
            disp = d.get("dispatcher")
            name = getattr(getattr(disp, "py_func", None), "__qualname__", "?")
            mod = getattr(getattr(disp, "py_func", None), "__module__", "?")
            self.stack.append((time.perf_counter(), f"{mod}.{name}"))

        def on_end(self, event):
            t0, name = self.stack.pop()
            if not self.stack:
                self.top[name] = self.top.get(name, 0.0) + time.perf_counter() - t0

    run = _job(name, size)
    listener = _Compiles()
    ev.register("numba:compile", listener)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, "compiles": listener.top}))


def _spawn(name: str, size: int, calls: int, cache_dir: str, timeout: float) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    cmd = [sys.executable, __file__, "--child", name, "--size", str(size), "--calls", str(calls)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name}: no result within {timeout:g} s") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{name}: child failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    ap.add_argument("--repeats", type=int, default=1, help="cold runs per job (fresh cache each); medians reported")
    ap.add_argument("--size", type=int, default=SIZE, help="side of the synthetic scene (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per process (default %(default)g)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.size, args.calls)
        return 0

    info = machine_info()
    results, rows = [], []
    for name in args.jobs:
        cold, cached, warm, kernels, recompiled = [], [], [], [], {}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="gpudeblur-numba-") as cache:
                c = _spawn(name, args.size, 1, cache, args.timeout)
                w = _spawn(name, args.size, 2, cache, args.timeout)
            cold.append(c["times"][0])
            cached.append(w["times"][0])
            warm.append(w["times"][1])
            kernels.append(c["compiles"])
            # a kernel compiled again by the process that has the cache: not cached (a fault)
            for k, v in w["compiles"].items():
                recompiled[k] = max(recompiled.get(k, 0.0), v)
        if recompiled:
            log(f"{name}: compiled again with the cache present (not cached?): {sorted(recompiled)}")
        med = {k: float(np.median(v)) for k, v in (("cold", cold), ("cached", cached), ("warm", warm))}
        names = sorted({k for d in kernels for k in d})
        per_kernel = {k: float(np.median([d.get(k, 0.0) for d in kernels])) for k in names}
        top = sorted(per_kernel.items(), key=lambda kv: -kv[1])
        log(f"{name}: cold {med['cold']:.2f} s, cached {med['cached']:.2f} s, warm {med['warm']:.2f} s; "
            + ", ".join(f"{k.rsplit('.', 1)[-1]} {v:.2f}" for k, v in top[:4]))
        results.append({"job": name, "cold_s": cold, "cached_s": cached, "warm_s": warm, "compile_s": per_kernel,
                        "compiled_again_s": recompiled,
                        **{f"{k}_median_s": v for k, v in med.items()}})
        rows.append([name, f"{med['cold']:.2f}", f"{med['cached']:.2f}", f"{med['warm']:.2f}",
                     f"{med['cold'] - med['warm']:.2f}",
                     "; ".join(f"{k.rsplit('.', 1)[-1]} {v:.2f}" for k, v in top if v >= 0.1),
                     ", ".join(k.rsplit(".", 1)[-1] for k in sorted(recompiled)) or "none"])
    finish_machine_info(info)
    md = "\n".join([
        "# First-run compile time of the Numba kernels (CPU backend)",
        "",
        machine_markdown(info),
        f"- scene: {args.size}² synthetic (half blurred by a 3 px disc); cold runs per job: {args.repeats} (medians)",
        "",
        "cold: first call, empty Numba cache (compile + run); cached: first call of a second process on that cache; "
        "warm: its second call. Kernels: compile seconds per top-level Numba dispatcher in the cold run (≥ 0.1 s).",
        "",
        markdown_table(["job", "cold s", "cached s", "warm s", "cold − warm s", "compile s per kernel",
                        "compiled again with the cache"], rows),
    ])
    stem = result_stem("compile", info)
    pj, pm = write_results(args.out, stem, {"machine": info, "size": args.size, "results": results}, md)
    print(md)
    log(f"wrote {pj} and {pm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
