"""Shared timing and reporting helpers for the gpudeblur benchmarks.

Every bench script in this folder uses the same rules:

- **warm-up excluded**: one untimed call first (it compiles Numba/CUDA
  kernels and builds FFT plans for the shapes that are timed);
- **device-synchronized**: the clock starts and stops after
  ``Backend.synchronize()``, so queued GPU work is inside the interval;
- **median of repeats** (fewer repeats for slow cases, see
  :func:`time_call`);
- results go to ``bench/results/<name>-<host-or-device>-<date>.{json,md}``
  with the machine, CPU/GPU names, date, git commit and library versions.

Import from a bench script as ``from _common import ...`` (the scripts put
their own folder on ``sys.path``).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results"


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of the timed repeats (warm-up excluded)."""

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds (all threads) per repeat
    warmup_s: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times) if self.cpu_times else math.nan

    @property
    def best(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def repeats(self) -> int:
        return len(self.times)

    def as_dict(self) -> dict:
        return {
            "median_s": self.median,
            "min_s": self.best,
            "repeats": self.repeats,
            "times_s": self.times,
            "cpu_median_s": self.cpu_median,
            "cpu_times_s": self.cpu_times,
            "warmup_s": self.warmup_s,
            "note": self.note,
        }


def _noop() -> None:
    pass


def time_call(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    repeats: int = 5,
    warmup: Callable[[], object] | None | bool = True,
    budget_s: float = 30.0,
    min_repeats: int = 1,
) -> tuple[Timing, object]:
    """Time ``fn()`` between device synchronizations; return ``(Timing, last result)``.

    Besides wall time, the process CPU time of each repeat (all threads) is
    kept: on a machine shared with other jobs it tells how much work a call
    did, independent of how long it waited for a core.

    Parameters
    ----------
    fn : callable
        The work to time, called with no argument.
    sync : callable, optional
        Waits for queued device work (``Backend.synchronize``); called before
        the clock starts and before it stops.
    repeats : int
        At most this many timed calls.
    warmup : callable, bool or None
        ``True``: one untimed call of ``fn``; a callable: call that instead
        (e.g. the same function with 1 iteration, which compiles the same
        kernels and builds the same FFT plans at a fraction of the cost);
        ``False``/``None``: no warm-up.
    budget_s : float
        Stop repeating once the timed calls have used this many seconds
        (slow cases get fewer repeats), but always do ``min_repeats``.
    """
    sync = sync or _noop
    timing = Timing()
    if warmup:
        w = fn if warmup is True else warmup
        sync()
        t0 = time.perf_counter()
        w()
        sync()
        timing.warmup_s = time.perf_counter() - t0
    out = None
    spent = 0.0
    for k in range(max(1, repeats)):
        sync()
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        sync()
        dt = time.perf_counter() - t0
        timing.cpu_times.append(time.process_time() - c0)
        timing.times.append(dt)
        spent += dt
        if k + 1 >= min_repeats and spent >= budget_s:
            break
    return timing, out


# ---------------------------------------------------------------------------
# memory bandwidth (the floor of any memory-bound pass)
# ---------------------------------------------------------------------------


def copy_bandwidth(xp=np, sync: Callable[[], None] | None = None, nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Sustained copy bandwidth in GB/s (10⁹ B/s), counting read + write.

    ``copyto(dst, src)`` of two preallocated ``nbytes`` float32 arrays (so no
    page faults are timed); bandwidth = ``2 · nbytes / median time``.
    ``xp`` is numpy or cupy; pass the backend's ``synchronize`` for cupy.
    """
    sync = sync or _noop
    n = nbytes // 4
    src = xp.ones(n, dtype=xp.float32)
    dst = xp.zeros(n, dtype=xp.float32)
    xp.copyto(dst, src)  # touch both (page faults, driver warm-up)
    sync()
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        xp.copyto(dst, src)
        sync()
        ts.append(time.perf_counter() - t0)
    del src, dst
    return 2 * nbytes / statistics.median(ts) / 1e9


# ---------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the repo, ``+dirty`` when the tree has changes.

    ``$GIT_COMMIT`` wins when set: a copy of the tree (the GPU machine's) may
    carry a ``.git`` that is not the tree's commit.
    """
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def _version(mod: str) -> str | None:
    try:
        return importlib.import_module(mod).__version__
    except Exception:
        return None


def machine_info(gpu_name: str | None = None, extra_modules: Sequence[str] = ()) -> dict:
    """Host, CPU, GPU, date, commit and library versions of this run."""
    mods = ["numpy", "scipy", "ducc0", "numba", "skimage", "gpudeblur", *extra_modules]
    if "cupy" in sys.modules:
        mods.append("cupy")
    if "cucim" in sys.modules:
        mods.append("cucim")
    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_cores": cpu_cores(),
        "gpu": gpu_name,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date_utc": now.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "versions": {m: _version(m) for m in mods},
        "env": {k: os.environ[k] for k in _ENV_KEYS if k in os.environ},
        "malloc": _malloc_state(),
        "loadavg_start": _loadavg(),
    }


_ENV_KEYS = (
    "GPUDEBLUR_BACKEND",
    "GPUDEBLUR_CPU_WORKERS",
    "GPUDEBLUR_CPU_FFT",
    "GPUDEBLUR_TUNE_MALLOC",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def _malloc_state() -> str | None:
    """What ``gpudeblur.tune_cpu_allocator`` did in this process (the CLI tunes; a bench
    script runs the library as a program would: glibc's defaults unless it calls it)."""
    try:
        from gpudeblur import _allocator  # noqa: PLC0415

        return _allocator.allocator_state()
    except Exception:
        return None


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages (other processes compete for the CPU)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def finish_machine_info(info: dict) -> dict:
    """Add what is only known after the run: load average, Numba threading layer."""
    info["loadavg_end"] = _loadavg()
    try:
        import numba  # noqa: PLC0415

        info["numba_threading_layer"] = numba.threading_layer()
    except Exception:  # no parallel Numba function has run
        info["numba_threading_layer"] = None
    return info


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "unknown"


def result_stem(name: str, info: dict) -> str:
    """``<name>-<gpu name or host>-<YYYYMMDD>`` for the output files."""
    who = _slug(info["gpu"]) if info.get("gpu") else _slug(info["host"])
    return f"{name}-{who}-{info['date_utc'][:10].replace('-', '')}"


# ---------------------------------------------------------------------------
# device memory
# ---------------------------------------------------------------------------


def set_pool_limit(be, gib: float | None) -> int | None:
    """Cap CuPy's default memory pool at ``gib`` GiB (cuda only; returns the
    limit in bytes, ``None`` when not set). Allocations beyond it raise
    ``OutOfMemoryError``, and :meth:`Backend.available_memory` (hence the
    blur-map estimator's default budget) honours it: a run under the cap
    shows that the job fits a card of that size."""
    if gib is None:
        return None
    if not gib > 0:
        raise ValueError(f"pool limit must be > 0 GiB, got {gib!r} (CuPy reads 0 as 'no limit')")
    if be.name != "cuda":
        log(f"pool limit {gib:g} GiB ignored: backend {be.name} has no CuPy memory pool")
        return None
    limit = int(gib * 2**30)
    be.xp.get_default_memory_pool().set_limit(size=limit)
    return limit


class PoolPeak:
    """Context manager: peak bytes of CuPy's default memory pool while it is
    active: ``peak`` in use by arrays, ``peak_reserved`` held from the device
    (in use plus cached blocks: what must fit on a card). ``None`` on the CPU.

    A :class:`cupy.cuda.MemoryHook` samples the pool after every allocation;
    it costs a Python call per allocation, so use it on an untimed run.
    """

    def __init__(self, be):
        self.be = be
        self.peak: int | None = None
        self.peak_reserved: int | None = None
        self._hook = None

    def __enter__(self):
        if self.be.name != "cuda":
            return self
        cp = self.be.xp
        pool = cp.get_default_memory_pool()
        outer = self
        outer.peak = int(pool.used_bytes())
        outer.peak_reserved = int(pool.total_bytes())

        class _Hook(cp.cuda.MemoryHook):
            name = "gpudeblur_bench_pool_peak"

            def malloc_postprocess(self, **kwargs):
                outer.peak = max(outer.peak, int(pool.used_bytes()))
                outer.peak_reserved = max(outer.peak_reserved, int(pool.total_bytes()))

        self._hook = _Hook()
        self._hook.__enter__()
        return self

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.__exit__(*exc)
            self._hook = None
        return False


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


def fmt_s(t: float | None, approx: bool = False) -> str:
    """Seconds with 3 significant digits (ms below 1 s); ``—`` for missing."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    pre = "~" if approx else ""
    if t < 1e-3:
        return f"{pre}{t * 1e6:.3g} µs"
    if t < 1:
        return f"{pre}{t * 1e3:.3g} ms"
    return f"{pre}{t:.3g} s"


def fmt_ratio(r: float | None) -> str:
    if r is None or (isinstance(r, float) and (math.isnan(r) or math.isinf(r))):
        return "—"
    return f"{r:.2f}×" if r < 10 else f"{r:.3g}×"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def machine_markdown(info: dict) -> str:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items() if val)
    lines = [
        f"- host: `{info['host']}` — {info['platform']}, Python {info['python']}",
        f"- CPU: {info['cpu']} ({info['cpu_cores']} cores usable)",
        f"- GPU: {info['gpu'] or 'none'}",
        f"- date (UTC): {info['date_utc']}, commit `{info['commit']}`",
        f"- versions: {v}",
    ]
    if info.get("loadavg_start") is not None:
        lines.append(f"- load average (1/5/15 min) at start {info['loadavg_start']}, at end {info.get('loadavg_end')}")
    if info.get("numba_threading_layer"):
        lines.append(f"- Numba threading layer: {info['numba_threading_layer']}")
    if info.get("malloc"):
        lines.append(f"- malloc: {info['malloc']}")
    if info.get("env"):
        lines.append("- env: " + ", ".join(f"{k}={val}" for k, val in info["env"].items()))
    return "\n".join(lines)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Timing):
        return o.as_dict()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(o):
    """NaN/inf → None (strict JSON)."""
    if isinstance(o, Timing):
        o = o.as_dict()
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)) and not math.isfinite(float(o)):
        return None
    return o


def write_results(out_dir: str | Path, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pj = out_dir / f"{stem}.json"
    pm = out_dir / f"{stem}.md"
    pj.write_text(json.dumps(_finite(payload), indent=2, default=_json_default, allow_nan=False) + "\n")
    pm.write_text(markdown.rstrip() + "\n")
    return pj, pm


def log(msg: str) -> None:
    """Progress line on stderr (flushed), so stdout stays the report."""
    print(msg, file=sys.stderr, flush=True)
