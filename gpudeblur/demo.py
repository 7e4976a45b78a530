"""``gpudeblur demo``: the main job on a bundled scene with ground truth.

Default (all-in-focus, the main job): the bundled sharp image
(:func:`gpudeblur.data.sharp`, 384×384 RGB) is blurred with a spatially
varying disc PSF whose radius follows a fixed layered depth map
(:func:`scene_map`: an in-focus subject, r = 0; a mid-distance band,
r = 2.5; a far background, r = 5), Gaussian noise of σ = 0.001 is added
(σ² = 1e-6, the simulations of Zhu et al. 2013) with seed 0, and the
result is quantized to 8 bits. :class:`gpudeblur.AllInFocus` then
estimates the blur map from the blurred image alone and deblurs it; the
demo prints PSNR before and after against the sharp image (and the result
with the true map, for reference) and writes the pictures.

``uniform=True`` (``gpudeblur demo --uniform``): the foundation's
non-blind comparison instead: a disc PSF of radius 4 over the whole image,
σ = 0.01, restored with :func:`gpudeblur.admm_tv`, :func:`gpudeblur.wiener`
and :func:`gpudeblur.richardson_lucy`.

Use it from Python too::

    from gpudeblur import demo
    results = demo.run("demo-out", backend="cpu")
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

__all__ = ["psnr", "synthesize", "scene_map", "synthesize_scene", "run", "RADIUS", "NOISE_SIGMA", "SEED"]

RADIUS = 4.0
NOISE_SIGMA = 0.01
SEED = 0
#: Noise of the all-in-focus scene (σ² = 1e-6, as in Zhu et al.'s simulations).
SCENE_NOISE_SIGMA = 1e-3
#: Radii of the scene's layers: subject, mid-distance band, far background.
SCENE_RADII = (0.0, 2.5, 5.0)

#: Default output folders of the all-in-focus demo and of ``uniform``.
DEFAULT_OUT = "gpudeblur-demo"
DEFAULT_OUT_UNIFORM = "gpudeblur-demo-uniform"

_FILES = ("sharp.png", "blurred.png", "restored.png", "restored_wiener.png", "restored_rl.png")
_SCENE_FILES = ("sharp.png", "blurred.png", "allinfocus.png", "map_estimated.png", "map_true.png")


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


def scene_map(shape) -> np.ndarray:
    """The demo's layered radius map (pixels) for an image of ``shape[:2]``.

    An in-focus ellipse (the subject, centred a little above the middle),
    a far background (upper part) and a mid-distance band (lower part).
    """
    M, N = shape[:2]
    yy, xx = np.mgrid[:M, :N]
    yy = yy / max(M - 1, 1)
    xx = xx / max(N - 1, 1)
    r = np.full((M, N), SCENE_RADII[2])
    r[yy > 0.62] = SCENE_RADII[1]
    r[(yy - 0.45) ** 2 / 0.12 + (xx - 0.5) ** 2 / 0.05 < 1] = SCENE_RADII[0]
    return r


def synthesize_scene(sharp: np.ndarray, sigma: float = SCENE_NOISE_SIGMA, seed: int = SEED):
    """``(blurred, radius_map)``: spatially varying disc blur (:func:`scene_map`), noise, 8 bits.

    Computed on the CPU backend in float64, so the input is the same on every
    machine.
    """
    from .spatially_varying import blur_spatially_varying  # noqa: PLC0415

    rmap = scene_map(sharp.shape)
    blurred = blur_spatially_varying(np.asarray(sharp, dtype=np.float64), rmap, radius_step=0.1, backend="cpu",
                                     dtype="float64")
    rng = np.random.default_rng(seed)
    noisy = blurred + rng.normal(0.0, sigma, blurred.shape)
    quantized = np.rint(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0
    return quantized.astype(np.float32), rmap


@contextlib.contextmanager
def numba_compile_time():
    """Seconds the block spends compiling Numba kernels, in a one-item list filled on exit.

    A kernel's first call with new argument types compiles it once; later
    processes load it from Numba's disk cache (``cache=True``), which is not
    counted (Numba's event API: top-level ``numba:compile`` events, which a
    cache hit does not fire). The list stays ``[0.0]`` if the block raises.
    The CUDA backend's kernels are compiled by CuPy and are not counted.
    """
    from numba.core import event  # noqa: PLC0415

    seconds = [0.0]
    with event.install_timer("numba:compile", lambda t: seconds.__setitem__(0, t)):
        yield seconds


#: Below this much Numba compile time the demo does not mention it.
COMPILE_NOTE_MIN_S = 1.0


def _compile_note(be, numba_s: float, what: str = "of it") -> str:
    """What the demo's times include, from what this run compiled (``what``: where the seconds go)."""
    notes = []
    if numba_s >= COMPILE_NOTE_MIN_S:
        notes.append(f"{numba_s:.1f} s {what} compiling Numba kernels, once: later runs load them from the cache")
    if be.name == "cuda":
        notes.append("a first run's times include CuPy compiling the CUDA kernels, cached for later runs")
    return "; ".join(notes)


def _prepare_out(out_dir, files, overwrite, backend, verbose):
    """Check every output (existing files refused unless ``overwrite``), pick the
    backend, create ``out_dir`` before the work (a folder we cannot create fails
    early). Returns ``(out_dir, paths, backend, report)``."""
    from ._backend import get_backend  # noqa: PLC0415
    from .cli import check_output_path, say  # noqa: PLC0415

    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out is not a folder: {out_dir}")
    paths = {name: os.path.join(out_dir, name) for name in files}
    if os.path.isdir(out_dir):
        for p in paths.values():
            check_output_path(None, p, overwrite, kind="image")
    be = get_backend(backend)
    os.makedirs(out_dir, exist_ok=True)
    report = say if verbose else (lambda _msg: None)
    return out_dir, paths, be, report


def _table(verbose: bool):
    """How the demo prints its results table: always with ``verbose`` (the CLI),
    even under ``gpudeblur --quiet``, which silences status lines only."""
    return (lambda msg: print(msg, flush=True)) if verbose else (lambda _msg: None)


def run(out_dir: str | None = None, backend=None, overwrite: bool = False, verbose: bool = True,
        uniform: bool = False) -> dict:
    """Run the demo; write PNGs into ``out_dir``; return ``{name: value}`` (PSNR in dB, times in s).

    Every output is checked before any work: existing files are refused
    unless ``overwrite``; ``out_dir`` is created (before the work) if missing.
    ``uniform=True`` runs the non-blind comparison instead of the all-in-focus job.
    ``out_dir`` defaults to ``gpudeblur-demo`` (``gpudeblur-demo-uniform`` with
    ``uniform``, so that one demo after the other needs no ``overwrite``).
    """
    if out_dir is None:
        out_dir = DEFAULT_OUT_UNIFORM if uniform else DEFAULT_OUT
    if uniform:
        return _run_uniform(out_dir, backend, overwrite, verbose)
    from . import AllInFocus  # noqa: PLC0415
    from .blurmap.cli import colorize  # noqa: PLC0415
    from .data import sharp as load_sharp  # noqa: PLC0415
    from .io import output_batch, write_image  # noqa: PLC0415

    out_dir, paths, be, report = _prepare_out(out_dir, _SCENE_FILES, overwrite, backend, verbose)

    sharp = load_sharp()
    blurred, true_map = synthesize_scene(sharp)
    report(
        f"demo: {sharp.shape[1]}x{sharp.shape[0]} RGB, spatially varying disc blur (subject r=0, band r=2.5, "
        f"background r=5), noise sigma {SCENE_NOISE_SIGMA:g}, 8-bit; backend {be.name} ({be.device_name()})"
    )
    pipe = AllInFocus(backend=be, progress=lambda name: report(f"  {name} ..."))
    with numba_compile_time() as compile_s:
        t0 = time.perf_counter()
        out, res = pipe.run(blurred)
        be.synchronize()
        t_all = time.perf_counter() - t0
    out = be.to_host(out)
    ref, _ = AllInFocus(backend=be).run(blurred, radius_map=true_map)
    est = res.radius_map
    results = {
        "blurred": psnr(sharp, blurred),
        "allinfocus": psnr(sharp, out),
        "allinfocus_true_map": psnr(sharp, be.to_host(ref)),
        "map_rmse_px": float(np.sqrt(np.mean((est - true_map) ** 2))),
        "time_s": t_all,
        "numba_compile_s": compile_s[0],
    }
    note = _compile_note(be, compile_s[0])
    note = f"; {note}" if note else ""
    table = _table(verbose)
    table(f"{'image':<40}{'PSNR (dB)':>10}")
    table(f"{'blurred (input)':<40}{results['blurred']:>10.2f}")
    table(f"{'all-in-focus (' + res.mode + ', estimated map)':<40}{results['allinfocus']:>10.2f}")
    table(f"{'same, given the true map (reference)':<40}{results['allinfocus_true_map']:>10.2f}")
    table(
        f"all-in-focus: {results['allinfocus'] - results['blurred']:+.2f} dB over the blurred input in "
        f"{t_all:.1f} s (blur map {res.timings.get('blur_map', float('nan')):.1f} s, radius check "
        f"{res.timings.get('radius_check', 0.0):.1f} s, deblur "
        f"{res.timings.get('deblur', float('nan')):.1f} s{note}); estimated map RMSE {results['map_rmse_px']:.2f} px"
    )
    vmax = max(8.0, float(true_map.max()))
    pictures = (sharp, blurred, out, colorize(est, vmax), colorize(true_map, vmax))
    with output_batch():  # all pictures or none
        for name, img in zip(_SCENE_FILES, pictures):
            write_image(paths[name], np.clip(img, 0, 1) if img.dtype.kind == "f" else img, overwrite=overwrite,
                        bit_depth=8)
    report(f"wrote {', '.join(_SCENE_FILES)} to {out_dir}{os.sep}")
    return results


def _run_uniform(out_dir, backend, overwrite, verbose) -> dict:
    from . import admm_tv, richardson_lucy, wiener  # noqa: PLC0415
    from .cli import _default_iters, progress  # noqa: PLC0415
    from .data import sharp as load_sharp  # noqa: PLC0415
    from .io import output_batch, write_image  # noqa: PLC0415

    out_dir, paths, be, report = _prepare_out(out_dir, _FILES, overwrite, backend, verbose)

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
    with numba_compile_time() as compile_s:
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

    table = _table(verbose)
    table(f"{'method':<26}{'PSNR (dB)':>10}{'time (s)':>10}")
    for name, value, t in rows:
        table(f"{name:<26}{value:>10.2f}{'' if t is None else f'{t:>10.2f}'}")
    results["numba_compile_s"] = compile_s[0]
    note = _compile_note(be, compile_s[0], what="of the times above went into")
    table(f"admm-tv: {results['admm-tv'] - results['blurred']:+.2f} dB over the blurred input" + (f" ({note})" if note else ""))

    with output_batch():  # all pictures or none
        for name, img in zip(_FILES, (sharp, blurred, x_tv, x_w, x_rl)):
            write_image(paths[name], img, overwrite=overwrite, bit_depth=8)
    report(f"wrote {', '.join(_FILES)} to {out_dir}{os.sep}")
    return results
