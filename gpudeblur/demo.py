"""``gpudeblur demo``: blur the bundled sample image, restore it, report PSNR.

The degradation is fixed (and deterministic): the bundled sharp image
(:func:`gpudeblur.data.sharp`, 384×384 RGB) is convolved with a disc PSF of
radius 4 (reflecting boundary), Gaussian noise of σ = 0.01 is added with
seed 0, and the result is quantized to 8 bits, as a camera would store it.
It is then restored with :func:`gpudeblur.admm_tv` (default parameters:
the TV weight comes from the estimated noise level) and, for comparison,
:func:`gpudeblur.wiener` (estimated balance) and
:func:`gpudeblur.richardson_lucy` (default 50 iterations).

Use it from Python too::

    from gpudeblur import demo
    results = demo.run("demo-out", backend="cpu")
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["psnr", "synthesize", "run", "RADIUS", "NOISE_SIGMA", "SEED"]

RADIUS = 4.0
NOISE_SIGMA = 0.01
SEED = 0

_FILES = ("sharp.png", "blurred.png", "restored.png", "restored_wiener.png", "restored_rl.png")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]`` (``image`` clipped first)."""
    ref = np.asarray(reference, dtype=np.float64)
    x = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    mse = float(np.mean((x - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def synthesize(sharp: np.ndarray, radius: float = RADIUS, sigma: float = NOISE_SIGMA, seed: int = SEED):
    """``(blurred, psf)``: ``sharp`` blurred by a disc, noisy, 8-bit quantized.

    Computed on the CPU backend so that the input is the same on every
    machine.
    """
    from . import psf as psf_mod  # noqa: PLC0415
    from .convolution import fftconvolve  # noqa: PLC0415

    k = psf_mod.disc(radius)
    blurred = fftconvolve(np.asarray(sharp, dtype=np.float64), k, boundary="reflect", backend="cpu")
    rng = np.random.default_rng(seed)
    noisy = blurred + rng.normal(0.0, sigma, blurred.shape)
    quantized = np.rint(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0
    return quantized.astype(np.float32), k


def run(out_dir: str = "gpudeblur-demo", backend=None, overwrite: bool = False, verbose: bool = True) -> dict:
    """Run the demo; write PNGs into ``out_dir``; return ``{method: psnr_dB}``.

    Every output is checked before any work: existing files are refused
    unless ``overwrite``; ``out_dir`` is created (before the work) if missing.
    """
    from . import admm_tv, richardson_lucy, wiener  # noqa: PLC0415
    from ._backend import get_backend  # noqa: PLC0415
    from .cli import _default_iters, check_output_path, progress, say  # noqa: PLC0415
    from .data import sharp as load_sharp  # noqa: PLC0415
    from .io import write_image  # noqa: PLC0415

    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out is not a folder: {out_dir}")
    paths = {name: os.path.join(out_dir, name) for name in _FILES}
    if os.path.isdir(out_dir):
        for p in paths.values():
            check_output_path(None, p, overwrite, kind="image")
    be = get_backend(backend)
    os.makedirs(out_dir, exist_ok=True)  # before the work: a folder we cannot create fails early
    report = say if verbose else (lambda _msg: None)

    sharp = load_sharp()
    blurred, k = synthesize(sharp)
    report(
        f"demo: {sharp.shape[1]}x{sharp.shape[0]} RGB, disc PSF radius {RADIUS:g}, noise sigma {NOISE_SIGMA:g}, "
        f"8-bit; backend {be.name} ({be.device_name()})"
    )

    def timed(fn, *a, **kw):
        t0 = time.perf_counter()
        x = fn(*a, **kw)
        be.synchronize()
        return x, time.perf_counter() - t0

    results = {"blurred": psnr(sharp, blurred)}
    rows = [("blurred (input)", results["blurred"], None)]
    x_w, t_w = timed(wiener, blurred, k, clip=True, backend=be)
    results["wiener"] = psnr(sharp, x_w)
    rows.append(("wiener", results["wiener"], t_w))
    n_rl = _default_iters(richardson_lucy)
    with progress(n_rl, "richardson-lucy") as bar:
        x_rl, t_rl = timed(richardson_lucy, blurred, k, clip=True, callback=bar, backend=be)
    results["rl"] = psnr(sharp, x_rl)
    rows.append((f"richardson-lucy ({n_rl} it)", results["rl"], t_rl))
    n_admm = _default_iters(admm_tv)
    with progress(n_admm, "admm-tv") as bar:
        x_tv, t_tv = timed(admm_tv, blurred, k, clip=True, callback=bar, backend=be)
    results["admm-tv"] = psnr(sharp, x_tv)
    rows.append((f"admm-tv ({n_admm} it)", results["admm-tv"], t_tv))

    report(f"{'method':<26}{'PSNR (dB)':>10}{'time (s)':>10}")
    for name, value, t in rows:
        report(f"{name:<26}{value:>10.2f}{'' if t is None else f'{t:>10.2f}'}")
    report(
        f"admm-tv: {results['admm-tv'] - results['blurred']:+.2f} dB over the blurred input "
        "(times include one-off JIT/kernel compilation on the first run)"
    )

    for name, img in zip(_FILES, (sharp, blurred, x_tv, x_w, x_rl)):
        write_image(paths[name], img, overwrite=overwrite, bit_depth=8)
    report(f"wrote {', '.join(_FILES)} to {out_dir}{os.sep}")
    return results
