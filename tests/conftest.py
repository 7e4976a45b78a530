"""Shared fixtures: backends, host builds of the CUDA headers, test images.

``GPUDEBLUR_CUPY_STANDIN=1`` runs the 'cuda' backend on a strict host stand-in of CuPy
(``tests/cupy_standin``; CI: ``-k cuda``): the same array code the GPU runs, on "device"
arrays that refuse implicit host conversion and host/device mixing as CuPy does.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _install_cupy_standin():
    """GPUDEBLUR_CUPY_STANDIN=1: the stand-in as ``cupy`` (refused if a CuPy was imported first)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_standin"))
    import standin_activate  # noqa: PLC0415  (tests/cupy_standin/standin_activate.py)

    standin_activate.install()


CUPY_STANDIN = os.environ.get("GPUDEBLUR_CUPY_STANDIN") == "1"
if CUPY_STANDIN:
    _install_cupy_standin()

from gpudeblur._backend import cuda_available, get_backend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
SHIMS = Path(__file__).resolve().parent / "shims"


@pytest.fixture(params=["cpu", "cuda"])
def backend(request):
    """Every backend-parametrized test runs on NumPy and, with a GPU, on CuPy."""
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no CUDA device: CuPy variant of this test not run")
    return get_backend(request.param)


def to_host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


_built: dict[str, ctypes.CDLL] = {}


def build_host_shim(name: str, tmp_dir: Path) -> ctypes.CDLL:
    """Compile ``tests/shims/<name>.cu`` (which includes ``kernels/*.cuh``)
    with nvcc into a host shared library and load it.

    Skips (saying so) when nvcc is not on PATH.
    """
    if name in _built:
        return _built[name]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH: host build of the CUDA kernel math not checked")
    out = tmp_dir / f"lib{name}.so"
    # no FMA contraction (GCC contracts by default where FMA is in the base ISA, e.g. aarch64): the
    # Numba twins are IEEE, and the search's test compares them bit for bit
    cmd = [
        nvcc, "-x", "cu", "-std=c++17", "-O2", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-ffp-contract=off",
        f"-I{KERNELS}", "-o", str(out), str(SHIMS / f"{name}.cu"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"nvcc failed on {name}.cu:\n{res.stderr}")
    lib = ctypes.CDLL(str(out))
    _built[name] = lib
    return lib


@pytest.fixture(scope="session")
def host_build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostshims")


def ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.fixture(scope="session")
def natural_gray():
    """A 128x128 natural gray image in [0, 1] (scikit-image's astronaut)."""
    from skimage import color, data

    return color.rgb2gray(data.astronaut())[40:168, 180:308].astype(np.float64)


@pytest.fixture(scope="session")
def natural_rgb():
    from skimage import data

    return (data.astronaut()[40:168, 180:308] / 255.0).astype(np.float64)


@pytest.fixture()
def deblur_lam_spy(monkeypatch):
    """``(seen, Seen)``: ``AllInFocus``'s deblurring calls (``deconvolve_spatially_varying``,
    ``deconvolve_spread_sequence``) append their ``lam`` keyword to ``seen`` and raise ``Seen``."""
    import gpudeblur.allinfocus as aif

    seen = []

    class Seen(Exception):
        pass

    def spy(*a, **kw):
        seen.append(kw.get("lam"))
        raise Seen

    monkeypatch.setattr(aif, "deconvolve_spread_sequence", spy)
    monkeypatch.setattr(aif, "deconvolve_spatially_varying", spy)
    return seen, Seen


def pytest_report_header(config):
    if CUPY_STANDIN:
        return "cuda backend: the host stand-in of CuPy (tests/cupy_standin), not a GPU"
    return None


def pytest_sessionfinish(session, exitstatus):
    """Under the stand-in: what it logged (transfers and syncs CuPy allows but that cost time)."""
    if not CUPY_STANDIN:
        return
    from collections import Counter  # noqa: PLC0415

    counts = Counter(sys.modules["cupy"].LOG)
    print("\n[cupy stand-in] log:", "empty" if not counts else f"{sum(counts.values())} entries")
    for (kind, msg, where), c in counts.most_common(40):
        print(f"  {c:6d}  {kind:10s} {where:40s} {msg}")
