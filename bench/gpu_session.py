"""One prepared GPU session: GPU tests and every benchmark, in one call.

GPU time is rare and short (one call, ~10 minutes), so what to run is
decided here, ahead of time, not on the machine. On the device, from the
repository root::

    python3 -m pip install --no-deps --no-build-isolation -e . ; python3 bench/gpu_session.py --out "$OUT"

Steps run in order of importance (the issues' open GPU goals first), each
under its own timeout; a failing or timed-out step does not stop the next,
and no step starts once the wall budget (``--budget``, default 500 s) is
spent (none starts with less than 20 s left). Each step writes ``OUT/<step>.log`` (stdout and stderr) and its bench
results to ``OUT/results/<step>/`` (and, with ``--copy-results``, to
``bench/results/`` as well); ``OUT/summary.md`` and ``OUT/summary.json``
list every step with its exit status and time, plus the device, date and
commit.

Here (no GPU), ``python bench/gpu_session.py --dry-run`` checks that every
step's command line is accepted by its script, without running anything;
the test suite does that too, so a renamed bench option cannot break the
GPU session unnoticed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

#: bench_allinfocus's timing alone (every other section runs on the default backend, i.e. the GPU's
#: time: the clipped highlights' sv-admm rows did, in each of three steps, until session 34's rehearsal)
_TIMING_ONLY = ["--skip-quality", "--skip-no-blur", "--skip-highlights", "--skip-jpeg", "--skip-noisy", "--skip-depth-step"]

#: (name, argv after ``python``, timeout s, bench module or None). ``{out}`` is
#: replaced by the step's results folder.
STEPS = [
    # the device name, or stop here: without a working CuPy every later step would "pass" measuring nothing
    ("cuda-check", ["-c", "import sys, gpudeblur as g; ok = g.cuda_available(); "
                          "print(g.get_backend('cuda').device_name() if ok else 'no CUDA device'); sys.exit(0 if ok else 3)"],
     120, None),
    ("info", ["-m", "gpudeblur", "info"], 60, None),
    # the CuPy variants of the backend-parametrized tests (ids "[cuda...]"), the
    # RawKernel-vs-Numba checks, and the pipeline tests, whose default backend
    # ('auto') is CUDA on a GPU machine; the rest of the suite is the last step
    ("tests-cuda", ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda or test_allinfocus", "tests"],
     240, None),
    # the labeling's CUDA kernels against their Numba twins, and the blur-map tests on the GPU
    ("tests-labeling", ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda",
                        "tests/test_labeling.py", "tests/test_blurmap.py"], 150, None),
    # #3: blur map per stage, 500² (goal ≤ 0.5 s) and 12 MP (goal ≤ 5 s), with labeling
    ("blurmap-500", ["bench/bench_blurmap.py", "--backend", "cuda", "--skip-fig8", "--skip-cuhk", "--timing-size", "500",
                     "--time-labeling", "--peak-memory", "--out", "{out}"], 120, "bench_blurmap"),
    ("blurmap-12mp", ["bench/bench_blurmap.py", "--backend", "cuda", "--skip-fig8", "--skip-cuhk", "--timing-size",
                      "3000x4000", "--time-labeling", "--peak-memory", "--out", "{out}"], 150, "bench_blurmap"),
    # #4: fast mode, 1 and 12 MP (goal: 12 MP ≤ 10 s), exact and uncertain maps
    ("allinfocus-fast", ["bench/bench_allinfocus.py", *_TIMING_ONLY, "--backends", "cuda", "--timing-sizes", "1,12",
                         "--timing-modes", "fast", "--out", "{out}"],
     150, "bench_allinfocus"),
    # #3: a 24 MP photo within a 24 GB card (CuPy's pool, cuFFT work areas included, capped at 22 GiB; the
    # CUDA context, modules and library handles live outside the pool)
    ("blurmap-24mp-22gib", ["bench/bench_blurmap.py", "--backend", "cuda", "--skip-fig8", "--skip-cuhk", "--timing-size",
                            "4000x6000", "--time-labeling", "--pool-limit-gib", "22", "--peak-memory", "--out", "{out}"],
     180, "bench_blurmap"),
    # #4: what mode='auto' runs on a GPU at any size (sv-admm), 1 and 12 MP, on the uncertain map of a
    # full-resolution estimate and the wide one of a large photo's (read at scale 4); blind at 1 MP
    ("allinfocus-svadmm", ["bench/bench_allinfocus.py", *_TIMING_ONLY, "--backends", "cuda", "--timing-sizes", "1,12",
                           "--timing-modes", "sv-admm",
                           "--timing-maps", "uncertain,wide", "--out", "{out}"], 240, "bench_allinfocus"),
    ("allinfocus-blind", ["bench/bench_allinfocus.py", *_TIMING_ONLY, "--backends", "cuda", "--timing-sizes", "1",
                          "--timing-modes", "blind", "--out", "{out}"],
     150, "bench_allinfocus"),
    # #4: the main job end to end on 12 MP photos with strong defocus (map read at scale 4), fast mode
    ("large-12mp", ["bench/bench_large.py", "--backend", "cuda", "--size", "3464", "--images", "camera",
                    "--out", "{out}"], 150, "bench_large"),
    # #4: sv-admm end to end at 12 MP with spread selection (the default since session 21) and without
    ("large-12mp-svadmm", ["bench/bench_large.py", "--backend", "cuda", "--size", "3464", "--images", "camera",
                           "--mode", "sv-admm", "--no-true-map", "--warmup", "--out", "{out}"], 240, "bench_large"),
    ("large-12mp-svadmm-spread-off", ["bench/bench_large.py", "--backend", "cuda", "--size", "3464", "--images",
                                      "camera", "--mode", "sv-admm", "--no-true-map", "--spread-select", "off",
                                      "--warmup", "--out", "{out}"], 240, "bench_large"),
    # #4 beyond 12 MP: a 45 MP photo read at scale 8 (radii to 64 px), fast mode; the edge cap keeps the whole
    # image as one tile on a GPU, in strips of up to 4 GiB (session 25: ~15 k kernel launches counted, not timed)
    ("large-45mp", ["bench/bench_large.py", "--backend", "cuda", "--size", "6700", "--mult", "8", "--images", "camera",
                    "--no-true-map", "--warmup", "--out", "{out}"], 300, "bench_large"),
    # foundation: deconvolution methods on the GPU, with the RL roofline breakdown
    ("deconv", ["bench/bench_deconv.py", "--backends", "cuda", "--sizes", "512,2048,4096", "--no-reference",
                "--out", "{out}"], 180, "bench_deconv"),
    # where the labeling's time goes: phases of one 12 MP tile and its kernels against their byte floor
    ("labeling-profile", ["bench/profile_labeling.py", "--backend", "cuda", "--out", "{out}"], 120,
     "profile_labeling"),
    # the same at the size of a 12 MP map's tiles with their halo (~1 MP): session 19's 12 MP labeling did not
    # follow the 866² profile's gain
    ("labeling-profile-1mp", ["bench/profile_labeling.py", "--backend", "cuda", "--size", "1000", "--out", "{out}"],
     150, "profile_labeling"),
    # labeling energies and times (primal-dual on the GPU against the CPU references)
    # (250²: the CPU references, alpha-expansion and the exact multi-label cut, take minutes at 500²)
    ("labeling", ["bench/bench_labeling.py", "--sizes", "250", "--backends", "cpu", "cuda", "--out", "{out}"], 150,
     "bench_labeling"),
    # the accuracy experiments on the GPU (same numbers as the CPU's, within float32)
    ("blurmap-quality", ["bench/bench_blurmap.py", "--backend", "cuda", "--skip-timing", "--out", "{out}"], 150,
     "bench_blurmap"),
    # the labeling of a 12 MP map per memory budget (its tile layout: 2 / 4 (default) / 16 GiB): each tile stops at
    # its own gap, and session 20 found one tile of 16 taking 6.4 of 27.9 s
    ("labeling-budgets-12mp", ["bench/bench_blurmap.py", "--backend", "cuda", "--skip-fig8", "--skip-cuhk",
                               "--timing-size", "3000x4000", "--labeling-budgets", "2,4,16", "--out", "{out}"], 240,
     "bench_blurmap"),
    ("tests-all", ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"], 420, None),
]

#: ``--rehearse``: every step but the test steps, on the CuPy stand-in (``tests/cupy_standin``) at
#: sizes a CPU runs in seconds (option -> value, replaced or added); each step's own command
#: line otherwise, so a bench script's fault on the ``cuda`` backend shows here, not on the GPU.
REHEARSAL = {
    "blurmap-500": {"--timing-size": "96"},
    "blurmap-12mp": {"--timing-size": "72x96"},
    "allinfocus-fast": {"--timing-sizes": "0.01,0.02"},
    "blurmap-24mp-22gib": {"--timing-size": "64x96"},
    "allinfocus-svadmm": {"--timing-sizes": "0.01"},
    "allinfocus-blind": {"--timing-sizes": "0.01"},
    "large-12mp": {"--size": "160"},
    "large-12mp-svadmm": {"--size": "160"},
    "large-12mp-svadmm-spread-off": {"--size": "160"},
    "large-45mp": {"--size": "320"},
    "deconv": {"--sizes": "64", "--repeats": "1"},
    "labeling-profile": {"--size": "48", "--repeats": "1"},
    "labeling-profile-1mp": {"--size": "64", "--repeats": "1"},
    "labeling": {"--sizes": "24"},
    "blurmap-quality": {"--size": "96"},
    "labeling-budgets-12mp": {"--timing-size": "72x96"},
}
STANDIN = REPO / "tests" / "cupy_standin" / "standin_activate.py"
#: a failed step's last log lines, printed after its status line
FAILED_LOG_LINES = 20


def _rehearsal_argv(name: str, argv: list[str]) -> list[str]:
    """``argv`` with the step's :data:`REHEARSAL` options replaced (or appended)."""
    argv = list(argv)
    for opt, value in REHEARSAL.get(name, {}).items():
        if opt in argv:
            argv[argv.index(opt) + 1] = value
        else:
            argv += [opt, value]
    return argv


def _rehearsal_steps():
    """The steps a rehearsal runs: all but the test suite's (CI runs it on the stand-in)."""
    return [s for s in STEPS if s[1][:2] != ["-m", "pytest"]]


def _parser_for(module: str):
    mod = importlib.import_module(module)
    if hasattr(mod, "build_parser"):
        return mod.build_parser().parse_args
    return mod.parse_args  # bench_deconv: parses and validates


def dry_run() -> int:
    """Parse every bench step's arguments with its own parser, as run and as rehearsed; run nothing."""
    bad = 0
    unknown = set(REHEARSAL) - {s[0] for s in _rehearsal_steps()}
    for name in sorted(unknown):
        print(f"{name}: REHEARSAL names no bench step")
        bad += 1
    for (name, argv, _timeout, module), rehearse in [(s, False) for s in STEPS] + [(s, True) for s in STEPS]:
        if module is None:
            if not rehearse:
                print(f"{name}: python {' '.join(argv)}")
            continue
        what = f"{name} (rehearsal)" if rehearse else name
        args = [a.replace("{out}", "/nonexistent") for a in (_rehearsal_argv(name, argv) if rehearse else argv)[1:]]
        try:
            _parser_for(module)(args)
        except SystemExit as e:  # argparse's error exit
            print(f"{what}: REJECTED by {module} (exit {e.code}): {' '.join(args)}")
            bad += 1
            continue
        print(f"{what}: ok ({module} {' '.join(args)})")
    return 1 if bad else 0


def _commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Interrupted(Exception):
    pass


def _run_step(cmd, log, limit, env):
    """Run ``cmd`` in its own process group; on timeout or interruption kill the
    whole group (pytest and the CLIs start subprocesses). Returns the status."""
    p = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True)

    def kill_group():
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    try:
        rc = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group()
        return f"timed out after {limit:.0f} s"
    except _Interrupted:
        kill_group()
        raise
    # the step is done; anything it left behind in its group goes too
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return "ok" if rc == 0 else f"failed (exit {rc})"


def run(out: Path, budget: float, only: list[str] | None, copy_results: bool, workers: int = 1,
        rehearse: bool = False) -> int:
    """Run the steps; ``summary.json``/``summary.md`` are rewritten after every
    step (and on SIGTERM/SIGINT), so an outer time limit never loses them.
    ``rehearse``: on the CuPy stand-in at small sizes (:data:`REHEARSAL`), no test steps."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    all_steps = _rehearsal_steps() if rehearse else STEPS
    by_name = {s[0]: s for s in all_steps}
    steps = [by_name[n] for n in only] if only else list(all_steps)  # --only's order: this session's priorities
    if rehearse:
        steps = [(n, _rehearsal_argv(n, a), t, m) for n, a, t, m in steps]
    rows = [{"step": s[0], "status": "pending", "seconds": 0.0} for s in steps]
    meta = {"device": "not checked", "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "budget_s": budget, "wall_s": 0.0, "steps": rows}

    def write_summary():
        meta["wall_s"] = round(time.monotonic() - t_start, 1)
        _write_atomic(out / "summary.json", json.dumps(meta, indent=2) + "\n")
        title = "Rehearsal of the GPU session on the CuPy stand-in (no GPU)" if rehearse else "GPU session"
        md = [f"# {title}: {meta['device']}", "", f"{meta['date_utc']}, commit `{meta['commit']}`, wall "
              f"{meta['wall_s']} s of a {budget:.0f} s budget", "", "| step | status | s |", "|---|---|---|"]
        md += [f"| {r['step']} | {r['status']} | {r['seconds']} |" for r in rows]
        _write_atomic(out / "summary.md", "\n".join(md) + "\n")
        return md

    def on_signal(signum, _frame):
        raise _Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    stop = None
    try:
        write_summary()
        for (name, argv, timeout, module), row in zip(steps, rows):
            if stop is not None:
                row["status"] = stop
                continue
            left = budget - (time.monotonic() - t_start)
            if left < 20:
                row["status"] = "not started (budget spent)"
                continue
            row["status"] = "running"
            write_summary()
            t0 = time.monotonic()
            try:
                res_dir = out / "results" / name
                if module is not None:
                    res_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable] + ([str(STANDIN)] if rehearse else []) + [
                    a.replace("{out}", str(res_dir)) for a in argv]
                if workers > 1 and argv[:2] == ["-m", "pytest"]:
                    cmd += ["-n", str(workers)]  # pytest-xdist
                limit = min(timeout, left)
                with open(out / f"{name}.log", "w") as log:
                    log.write(f"$ {' '.join(cmd)}\n(timeout {limit:.0f} s)\n")
                    log.flush()
                    row["status"] = _run_step(cmd, log, limit, env)
                if name == "cuda-check":
                    lines = (out / f"{name}.log").read_text().strip().splitlines()
                    meta["device"] = lines[-1] if row["status"] == "ok" and lines else "no CUDA device"
                    if row["status"] != "ok":
                        stop = "skipped (no working CUDA device: see cuda-check.log)"
                if copy_results and module is not None:
                    for f in sorted(res_dir.glob("*")):
                        if f.is_file():
                            try:
                                shutil.copy2(f, HERE / "results" / f"{f.stem}-{name}{f.suffix}")
                            except OSError as exc:
                                row["status"] += f"; copy failed: {exc}"
            except _Interrupted:
                raise
            except Exception as exc:  # noqa: BLE001  (one step's trouble is that step's status)
                row["status"] = f"runner error: {type(exc).__name__}: {exc}"
            row["seconds"] = round(time.monotonic() - t0, 1)
            print(f"{name}: {row['status']} in {row['seconds']:.0f} s", flush=True)
            if row["status"] != "ok" and (out / f"{name}.log").is_file():
                tail = (out / f"{name}.log").read_text(errors="replace").splitlines()[-FAILED_LOG_LINES:]
                print("\n".join(f"    {line}" for line in tail), flush=True)
            write_summary()
    except _Interrupted as exc:
        for row in rows:
            if row["status"] == "running":
                row["status"] = f"interrupted ({exc})"
            elif row["status"] == "pending":
                row["status"] = "not started (interrupted)"
        write_summary()
        return 130
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print("\n".join(write_summary()))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-session"), help="output folder (default $OUT)")
    ap.add_argument("--budget", type=float, default=500.0, help="wall seconds after which no step starts")
    ap.add_argument("--only", default=None, help="comma-separated step names, run in this order (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="pytest-xdist workers for the test steps (default 1: none)")
    ap.add_argument("--copy-results", action="store_true", help="also copy each step's results into bench/results/")
    ap.add_argument("--dry-run", action="store_true", help="check every step's command line; run nothing")
    ap.add_argument("--rehearse", action="store_true",
                    help="no GPU needed: run the bench steps on the CuPy stand-in (tests/cupy_standin) at small "
                         "sizes, to catch a bench script's fault on the cuda backend before GPU time is spent")
    ap.add_argument("--list", action="store_true", help="print the steps and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, argv_, timeout, _m in STEPS:
            print(f"{name} ({timeout} s): python {' '.join(argv_)}")
        return 0
    if args.dry_run:
        return dry_run()
    only = args.only.split(",") if args.only else None
    if only:
        unknown = set(only) - {s[0] for s in STEPS}
        if unknown:
            ap.error(f"--only: unknown step(s) {', '.join(sorted(unknown))}")
        if args.rehearse:
            skipped = [n for n in only if n not in {s[0] for s in _rehearsal_steps()}]
            if skipped:
                print(f"--rehearse leaves out the test steps {', '.join(skipped)} (CI runs the suite on the stand-in)")
            only = [n for n in only if n not in skipped]
            if not only:
                ap.error("--rehearse --only: no bench step left to rehearse")
    if args.workers > 1 and importlib.util.find_spec("xdist") is None:
        ap.error("--workers needs pytest-xdist")
    if args.rehearse and args.copy_results:
        ap.error("--rehearse measures nothing worth keeping: no --copy-results")
    return run(Path(args.out), args.budget, only, args.copy_results, args.workers, args.rehearse)


if __name__ == "__main__":
    raise SystemExit(main())
