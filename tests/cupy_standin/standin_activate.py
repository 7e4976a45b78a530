"""Put the strict host stand-in of CuPy in front of any real CuPy, in this process.

``tests/conftest.py`` calls :func:`install` under ``GPUDEBLUR_CUPY_STANDIN=1``. As a script it
runs another script or module with the stand-in installed, so code outside the test suite (the
GPU session's bench steps: ``bench/gpu_session.py --rehearse``) can be run on the ``cuda``
backend without a GPU::

    python tests/cupy_standin/standin_activate.py bench/bench_large.py --backend cuda --size 128
    python tests/cupy_standin/standin_activate.py -m gpudeblur info
    python tests/cupy_standin/standin_activate.py -c "import gpudeblur; print(gpudeblur.cuda_available())"
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def install(log_syncs: bool | None = None):
    """Import the stand-in as ``cupy`` (strict: NumPy functions on device arrays raise) and map
    the project's custom kernels to their Numba twins. Refuses if a CuPy is already imported."""
    if "cupy" in sys.modules:
        raise RuntimeError("the CuPy stand-in must be installed before anything imports CuPy")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import cupy  # noqa: PLC0415

    if not os.path.abspath(cupy.__file__).startswith(HERE):
        raise RuntimeError(f"the CuPy stand-in was asked for, but cupy came from {cupy.__file__}")
    cupy.STRICT_NP_FUNCS = True  # np.func(device array) raises
    if log_syncs is None:
        log_syncs = os.environ.get("GPUDEBLUR_CUPY_STANDIN_SYNCS") == "1"
    cupy.LOG_SYNCS = log_syncs
    import gpudeblur_shim  # noqa: F401, PLC0415  (custom kernels -> their Numba twins)
    return cupy


def main(argv: list[str]) -> None:
    import runpy  # noqa: PLC0415

    if not argv or argv[0] in ("-h", "--help") or (argv[0] in ("-m", "-c") and len(argv) < 2):
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    install()
    if argv[0] in ("-c", "-m"):
        sys.path[0:0] = [os.getcwd()]  # as `python -c` / `python -m` put the current folder first
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102  (python -c)
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0:0] = [os.path.dirname(os.path.abspath(argv[0]))]
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    # this folder is sys.path[0] when run as a script: the stand-in's `cupy` is importable from here on
    main(sys.argv[1:])
