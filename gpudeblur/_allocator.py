"""Memory settings for large CPU arrays (glibc malloc, NumPy's huge-page advice): on in the CLI, opt-in for the library.

NumPy takes each array's memory from ``malloc``. glibc serves a request above
its mmap threshold (128 KiB at start, raised as large blocks are freed, to at
most 32 MiB) with a fresh ``mmap`` and gives it back on ``free``, and it
returns free memory at the top of the heap to the system beyond its trim
threshold. The CPU pipelines allocate arrays of a few to a few hundred MB
on every iteration (FFT outputs, products of spectra: a 1 MP RGB grid is
13 MB), so their memory is mapped, page-faulted in (and zeroed) and unmapped
again over and over: in the 1 MP ``sv-admm`` deconvolution 1.7 million page
faults took 11–13 s of kernel time, ~20 % of the process's CPU time
(``docs/STATUS.md``, session 22).

:func:`tune_cpu_allocator` raises both thresholds (``mallopt``), so freed
arrays stay in the heap and the next array of that size reuses them: the
same deconvolution then takes 0.9–1.9 s of kernel time and 25 % less wall
time, at about the same peak memory (+5 % in the 1 MP and 12 MP CLI jobs).
The cost is that memory gpudeblur frees mostly stays with the process
instead of going back to the system: free space at the heap's top up to
the trim threshold, and any free space below a live allocation whatever
its size (large arrays are no longer separate mappings, in the main
thread). A command-line run
wants that and a long-running host application may not: so the
``gpudeblur`` command applies it at start (unless
``GPUDEBLUR_TUNE_MALLOC=0``; :func:`gpudeblur.cli.main` called from Python
does not), and the library only when asked.

Only glibc has these thresholds; elsewhere (macOS, Windows, musl) they are
not changed. glibc before 2.35 accepts an mmap threshold of at most 32 MiB:
that is used there (arrays above it, e.g. a 12 MP grid, stay mappings).
Settings the user gave glibc for these thresholds
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``
with ``glibc.malloc.mmap_threshold`` or ``glibc.malloc.trim_threshold``)
are left as they are. (Only the main thread's heap takes arrays above
64 MiB; a thread's arena still maps them, which the command never does.)

On Linux it also turns off NumPy's ``madvise(MADV_HUGEPAGE)`` on arrays of
4 MiB and more (what ``NUMPY_MADVISE_HUGEPAGE=0`` does at NumPy's import;
a value the user set is kept). On the development VM (transparent huge
pages in ``madvise`` mode, the common default) a new process faults huge
pages in at 3.3 s per GiB against 0.33 s with 4 KiB pages (0.07 s for huge
pages the process had already used and freed; most likely the host backing
each huge page anew), so each process's first large arrays (the blur map's
1.6 GB of label arrays at 1 MP) cost seconds of kernel time. Off: the 1 MP
``fast`` command 25.2–25.4 → 22.9–23.3 s, ``sv-admm`` 67.3–67.7 → 62.4–63.0
s, same outputs (session 23).
On bare metal huge pages may be cheap and slightly faster in the kernels;
the per-iteration kernels measured the same either way here.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["tune_cpu_allocator", "allocator_state", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "TUNE_ENV_VAR",
           "HUGEPAGE_ENV_VAR"]

#: Requests up to this size come from the heap, not from a fresh mmap (1 GiB)
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top kept by the process, not returned (2 GiB − 1: mallopt takes an int)
TRIM_THRESHOLD = 2**31 - 1
#: ``0`` (or ``off``/``no``/``false``) keeps glibc's defaults in the command line
TUNE_ENV_VAR = "GPUDEBLUR_TUNE_MALLOC"

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OLD_GLIBC_MAX = 32 << 20
_USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

#: NumPy's own switch for its huge-page advice; when the user set it, theirs is kept
HUGEPAGE_ENV_VAR = "NUMPY_MADVISE_HUGEPAGE"

_state = "glibc defaults"
_hugepage_state = ""


def _user_settings() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(k in os.environ for k in _USER_ENV) or any(
        f"glibc.malloc.{t}" in tunables for t in ("mmap_threshold", "trim_threshold"))


def tune_cpu_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD,
                       numpy_hugepages: bool = False) -> bool:
    """Keep large arrays' memory in the process heap (glibc ``mallopt``), in 4 KiB pages.

    Makes the CPU pipelines faster (the 1 MP ``sv-admm`` deconvolution by a
    quarter) by sparing them the page faults of freshly mapped arrays; freed
    memory then stays with the process, up to ``trim_threshold`` bytes at the
    heap's top. The command line does this itself; call it once, early, in
    a program that runs gpudeblur on the CPU and can spare that memory.

    Parameters
    ----------
    mmap_threshold : int
        Requests up to this many bytes come from the heap (default 1 GiB).
    trim_threshold : int
        Free bytes at the heap's top kept rather than returned (default 2 GiB).
    numpy_hugepages : bool
        False (default): on Linux, stop NumPy advising transparent huge
        pages for new arrays (slow to fault in on virtual machines, see the
        module's notes), unless the user set ``NUMPY_MADVISE_HUGEPAGE``;
        True leaves NumPy's advice as it is.

    Returns
    -------
    bool
        True when glibc's thresholds were applied; False on a C library
        other than glibc, or when the user set glibc's malloc variables
        (theirs are kept). The huge-page advice is turned off also when
        this returns False (on Linux, unless ``numpy_hugepages`` is True or
        the user set ``NUMPY_MADVISE_HUGEPAGE``).
    """
    global _state
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(numpy_hugepages, bool):
        raise ValueError(f"numpy_hugepages must be True or False, got {numpy_hugepages!r}")
    if not numpy_hugepages:
        _numpy_hugepages_off()
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        _state = "not glibc: unchanged"
        return False
    if _user_settings():
        _state = "user's glibc settings (MALLOC_*_ / GLIBC_TUNABLES)"
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _state = "no mallopt: unchanged"
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    cap = 2**31 - 1  # mallopt takes an int
    mmap_threshold, trim_threshold = min(mmap_threshold, cap), min(trim_threshold, cap)
    # glibc before 2.35 refuses an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2): take that then
    mm = next((v for v in (mmap_threshold, min(mmap_threshold, _OLD_GLIBC_MAX)) if mallopt(_M_MMAP_THRESHOLD, v)), None)
    tr = trim_threshold if mallopt(_M_TRIM_THRESHOLD, trim_threshold) else None
    if mm is None and tr is None:
        _state = "mallopt refused: unchanged"
        return False
    parts = [f"mmap threshold {mm / 2**20:g} MiB" if mm else "mmap threshold refused",
             f"trim threshold {tr / 2**20:g} MiB" if tr else "trim threshold refused"]
    _state = f"tuned ({', '.join(parts)})"
    return True


def _numpy_hugepages_off() -> None:
    """Turn NumPy's ``MADV_HUGEPAGE`` on new arrays off (Linux; the user's ``NUMPY_MADVISE_HUGEPAGE`` wins)."""
    global _hugepage_state
    if not sys.platform.startswith("linux"):
        return
    if HUGEPAGE_ENV_VAR in os.environ:
        _hugepage_state = f"NumPy huge pages as {HUGEPAGE_ENV_VAR}={os.environ[HUGEPAGE_ENV_VAR]}"
        return
    try:  # NumPy's runtime form of the variable (numpy._core from 2.0, numpy.core before)
        from numpy._core.multiarray import _set_madvise_hugepage  # noqa: PLC0415
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage  # noqa: PLC0415
        except ImportError:
            _hugepage_state = "NumPy huge pages unchanged (no switch in this NumPy)"
            return
    _set_madvise_hugepage(False)
    _hugepage_state = "NumPy huge pages off"


def allocator_state() -> str:
    """What :func:`tune_cpu_allocator` did in this process, in words (for ``gpudeblur info``)."""
    return f"{_state}; {_hugepage_state}" if _hugepage_state else _state


def tune_for_cli() -> bool:
    """The ``gpudeblur`` command's call (:func:`gpudeblur.cli.entry`):
    :func:`tune_cpu_allocator` unless ``GPUDEBLUR_TUNE_MALLOC`` says no (``ValueError`` for a value
    that says neither)."""
    global _state
    value = os.environ.get(TUNE_ENV_VAR, "").strip().lower()
    if value in ("0", "off", "no", "false"):
        _state = f"glibc defaults ({TUNE_ENV_VAR}={os.environ[TUNE_ENV_VAR]})"
        return False
    if value not in ("", "1", "on", "yes", "true"):  # as the other variables: a typo is not taken for "on"
        raise ValueError(f"{TUNE_ENV_VAR} must be 1/on/yes/true or 0/off/no/false, got {os.environ[TUNE_ENV_VAR]!r}")
    return tune_cpu_allocator()
