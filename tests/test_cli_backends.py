"""Every subcommand's work on the ``cuda`` backend matches the CPU's, through the command line
(reading, the pipeline, writing). Runs with a GPU, and on the CuPy stand-in
(``GPUDEBLUR_CUPY_STANDIN=1``), where it checks the CLI's cuda paths for host/device faults."""

from __future__ import annotations

import numpy as np
import pytest

from gpudeblur import blur_spatially_varying, cli, psf
from gpudeblur._backend import cuda_available
from gpudeblur.convolution import fftconvolve
from gpudeblur.io import read_image, write_image

pytestmark = pytest.mark.skipif(not cuda_available(), reason="no CUDA device: CLI CPU-vs-CUDA comparison not run")


def _psnr(a, b):
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


@pytest.fixture(scope="module")
def scene(tmp_path_factory, natural_rgb):
    """A 64x80 RGB photo, uniformly blurred (disc 2) and with a two-level map (0 | 2.5 px), 16-bit PNGs."""
    d = tmp_path_factory.mktemp("cli_backends")
    sharp = np.ascontiguousarray(natural_rgb[20:84, 24:104])
    rng = np.random.default_rng(5)
    uni = np.stack([fftconvolve(sharp[..., c], psf.disc(2.0), backend="cpu") for c in range(3)], axis=-1)
    write_image(d / "uniform.png", np.clip(uni + rng.normal(0, 2e-3, uni.shape), 0, 1), bit_depth=16)
    rmap = np.zeros(sharp.shape[:2])
    rmap[:, 40:] = 2.5
    sv = blur_spatially_varying(sharp, rmap, backend="cpu")
    write_image(d / "layered.png", np.clip(sv + rng.normal(0, 1e-3, sv.shape), 0, 1), bit_depth=16)
    np.save(d / "map.npy", rmap)
    return d


def _both(argv, out_name, tmp_path, capsys):
    """Run ``argv`` (OUT spelled ``{out}``) on each backend; return the two outputs read back."""
    outs = []
    for be in ("cpu", "cuda"):
        out = tmp_path / f"{be}-{out_name}"
        code = cli.main([str(a).replace("{out}", str(out)) for a in argv] + ["--backend", be])
        _, err = capsys.readouterr()
        assert code == 0, (be, err)
        outs.append(np.load(out) if out.suffix == ".npy" else read_image(out)[0].astype(np.float64))
    return outs


@pytest.mark.parametrize("method", ["admm-tv", "rl", "rl-tv", "wiener", "tikhonov", "inverse"])
def test_deconv_agrees(scene, tmp_path, capsys, method):
    cpu, gpu = _both(["deconv", scene / "uniform.png", "{out}", "--psf", "disc:2", "--method", method],
                     "d.png", tmp_path, capsys)
    assert cpu.shape == gpu.shape == (64, 80, 3)
    assert _psnr(cpu, gpu) > 50


@pytest.mark.parametrize("mode", ["fast", "sv-admm", "blind"])
def test_allinfocus_with_a_map_agrees(scene, tmp_path, capsys, mode):
    extra = ["--iters", "4"] if mode == "blind" else []
    cpu, gpu = _both(["allinfocus", scene / "layered.png", "{out}", "--map", scene / "map.npy", "--mode", mode,
                      *extra], "a.png", tmp_path, capsys)
    assert cpu.shape == gpu.shape == (64, 80, 3)
    # blind estimates kernels (projected gradient, SVD): float32 rounding may move them a little on a GPU
    assert _psnr(cpu, gpu) > (40 if mode == "blind" else 50)


def test_blurmap_and_estimated_allinfocus_agree(scene, tmp_path, capsys):
    cpu, gpu = _both(["blurmap", scene / "layered.png", "{out}"], "m.npy", tmp_path, capsys)
    assert cpu.shape == gpu.shape == (64, 80)
    # float32 search and labeling on a GPU: nearly every pixel reads the same radius
    assert np.mean(np.abs(cpu - gpu) <= 0.25) > 0.95
    cpu, gpu = _both(["allinfocus", scene / "layered.png", "{out}", "--estimate", "--mode", "fast"], "e.png",
                     tmp_path, capsys)
    assert _psnr(cpu, gpu) > 35
