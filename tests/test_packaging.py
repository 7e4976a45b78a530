"""The installed package ships its CUDA sources and sample data.

``python -m pytest`` run from the repository root imports ``gpudeblur``
from the source tree (the current folder comes first on ``sys.path``), so
these checks run in a subprocess started in a temporary folder: there
``import gpudeblur`` finds the *installed* package (a regular install in CI,
``pip install -e`` in development), and ``gpudeblur.kernels`` must resolve
to its package data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = r"""
import importlib.resources as r, json, gpudeblur
from gpudeblur._kernels import kernel_source_dir
k = r.files("gpudeblur.kernels")
d = r.files("gpudeblur.data")
print(json.dumps({
    "package": gpudeblur.__file__,
    "kernels": sorted(p.name for p in k.iterdir()),
    "kernel_source_dir": str(kernel_source_dir()),
    "data": sorted(p.name for p in d.iterdir()),
}))
"""


def _probe(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_installed_package_ships_kernels_and_data(tmp_path):
    info = _probe(tmp_path)
    assert "deconv.cu" in info["kernels"], info
    expected = sorted(p.name for p in (ROOT / "kernels").glob("*.cu*"))
    missing = [name for name in expected if name not in info["kernels"]]
    assert not missing, f"not installed as package data: {missing}"
    assert (Path(info["kernel_source_dir"]) / "deconv.cu").is_file()
    assert {"sharp.png", "README.txt"} <= set(info["data"]), info
