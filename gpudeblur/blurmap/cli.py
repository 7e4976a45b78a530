"""``gpudeblur blurmap IN OUT``: defocus blur map of an image (plug-in of :mod:`gpudeblur.cli`).

OUT ending in ``.npy``/``.tif``/``.tiff`` receives the float32 radius map
(pixels); ``.png``/``.jpg`` a colour-mapped picture with a colour bar.
``--mask MASK.png`` writes the in-focus segmentation (white = in focus),
``--candidates C.npz`` the top-3 candidates (``radius``, ``likelihood``,
``log_likelihood``, ``confidence``, ``raw_radius``).
"""

from __future__ import annotations

import io as _pyio
import os
import time

import numpy as np

__all__ = ["register", "run", "colorize"]

#: OUT extensions written as a colour-mapped picture (the others: :data:`gpudeblur.io.ARRAY_WRITE_EXTENSIONS`).
_PICTURE_EXT = (".png", ".jpg", ".jpeg")


def register(subparsers, parents) -> None:
    from ..cli import noise_variance, odd_window, path_arg, positive_float, positive_int, psf_family  # noqa: PLC0415

    p = subparsers.add_parser(
        "blurmap",
        parents=parents,
        help="estimate the defocus blur map of an image (Zhu et al. 2013)",
        description=(
            "Estimate the defocus blur radius (pixels) at every pixel of IN (Zhu, Cohen, Schiller, Milanfar, "
            "TIP 2013). OUT ending in .npy/.tif gets the float radius map, .png/.jpg a colour-mapped picture "
            "with a colour bar."
        ),
    )
    p.add_argument("input", metavar="IN", help="input image (PNG, TIFF, JPEG, ...)")
    p.add_argument("output", metavar="OUT", help="radius map (.npy, .tif, .tiff) or picture (.png, .jpg)")
    p.add_argument("--mask", type=path_arg, metavar="MASK.png", help="also write the in-focus mask (white = in focus)")
    p.add_argument("--candidates", type=path_arg, metavar="C.npz", help="also write the top-3 candidates per pixel")
    p.add_argument("--window", type=odd_window, default=41, help="odd analysis window side (default 41)")
    p.add_argument("--noise", type=noise_variance, default=1e-4,
                   help="noise variance for [0, 1] intensities (1e-4, the paper's), or 'auto': measured on the image "
                   "(for a JPEG, at least half the error its compression added, estimated from its quantization "
                   "tables)")
    p.add_argument("--max-radius", type=positive_float, default=8.0, help="largest blur radius in pixels (8)")
    p.add_argument("--psf", type=psf_family, default="disc", metavar="disc|gaussian|CALIB.npz",
                   help="PSF family: disc radius, Gaussian sigma, or a lens calibration .npz with 'radii' (K,) and "
                   "'psfs' (K, H, W) (default disc)")
    p.add_argument(
        "--labeling",
        choices=("primal-dual", "alpha-expansion", "none"),
        default="primal-dual",
        help="coherent labeling method; 'none' writes the raw global-maximum map",
    )
    p.add_argument("--vertical", action="store_true", help="use the vertical derivative")
    p.add_argument("--tau", type=positive_float, default=None, help="in-focus threshold for --mask (pixels, 2)")
    p.add_argument("--memory-budget", type=positive_int, default=None, metavar="BYTES",
                   help="working memory of the candidate stages (default: half the free GPU memory, 1 GiB on the CPU; the labeling has its own budget, --labeling-memory-budget)")
    p.add_argument("--labeling-memory-budget", type=positive_int, default=None, metavar="BYTES",
                   help="working memory of the primal-dual labeling (default 4 GiB, ~1.2 MP per piece; larger maps "
                        "are labeled in overlapping tiles). More is faster on a large GPU: a 12 MP map's labeling on "
                        "an H200 took 25 s at 4 GiB (16 tiles), 19 s at 16 GiB (4 tiles), before session 20's "
                        "coarse-to-fine default")
    p.set_defaults(func=run)


def colorize(radius, max_radius: float, bar: bool = True) -> np.ndarray:
    """Colour-mapped radius map (viridis) with a colour bar and tick labels, RGB uint8."""
    import cv2  # noqa: PLC0415

    r = np.asarray(radius, dtype=np.float32)
    M, N = r.shape
    u8 = np.clip(np.round(r / max_radius * 255), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(u8, cv2.COLORMAP_VIRIDIS)
    if not bar:
        return bgr[..., ::-1].copy()
    bw = max(12, N // 30)
    margin = max(48, N // 10)
    pad = max(4, M // 50)
    canvas = np.full((M, N + pad + bw + margin, 3), 255, np.uint8)
    canvas[:, :N] = bgr
    grad = np.linspace(255, 0, M).astype(np.uint8)[:, None].repeat(bw, axis=1)
    canvas[:, N + pad : N + pad + bw] = cv2.applyColorMap(grad, cv2.COLORMAP_VIRIDIS)
    scale = max(0.35, min(1.0, M / 600))
    nt = 5
    for k in range(nt):
        v = max_radius * k / (nt - 1)
        y = int(round((1 - k / (nt - 1)) * (M - 1)))
        x0 = N + pad + bw
        cv2.line(canvas, (x0, y), (x0 + 4, y), (0, 0, 0), 1)
        ty = min(max(y + int(5 * scale), int(12 * scale)), M - 2)
        cv2.putText(canvas, f"{v:g}", (x0 + 6, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale * 1.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas[..., ::-1].copy()


class _StageBars:
    """One progress bar per pipeline stage."""

    def __init__(self):
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from ..cli import progress  # noqa: PLC0415

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = progress(total, stage)
            bar.done = 0
        if done > bar.done:
            bar.update(done - bar.done)
            bar.done = done

    def close(self):
        for b in self.bars.values():
            b.close()


def run(args) -> int:
    from .._backend import get_backend  # noqa: PLC0415
    from ..cli import check_distinct_outputs, check_output_path, input_paths, read_input, say  # noqa: PLC0415
    from ..io import (ARRAY_WRITE_EXTENSIONS, _atomic_write, image_format, output_batch, write_array,  # noqa: PLC0415
                      write_image)
    from .estimator import BlurMapEstimator  # noqa: PLC0415

    if args.tau is not None and not args.mask:
        raise ValueError("--tau applies to --mask only (the in-focus threshold of the mask)")
    if args.labeling_memory_budget is not None and args.labeling != "primal-dual":
        raise ValueError("--labeling-memory-budget applies to --labeling primal-dual only")
    ins = input_paths(args.input, psf=args.psf)  # a --psf calibration file is an input too
    ext = os.path.splitext(args.output)[1].lower()
    out = check_output_path(ins, args.output, args.overwrite,
                            extensions=ARRAY_WRITE_EXTENSIONS + _PICTURE_EXT)  # what run() writes for each
    check_distinct_outputs({"OUT": out, "--mask": args.mask, "--candidates": args.candidates})
    mask_out = check_output_path(ins, args.mask, args.overwrite, kind="image", label="--mask") if args.mask else None
    cand_out = None
    if args.candidates:
        if not args.candidates.lower().endswith(".npz"):
            raise ValueError(f"--candidates must end in .npz, got {args.candidates}")
        cand_out = check_output_path(ins, args.candidates, args.overwrite, kind=None, label="--candidates")
    labeling = None if args.labeling == "none" else args.labeling
    image, _meta = read_input(args.input)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if args.labeling_memory_budget is not None:  # before minutes of candidate stages
        from .labeling import default_labels, label_tiles  # noqa: PLC0415

        n_labels = default_labels(args.max_radius).size  # the estimator's labels
        try:
            label_tiles(image.shape[:2], n_labels, args.labeling_memory_budget)
        except ValueError as exc:
            raise ValueError(f"--labeling-memory-budget: {exc}") from None
    be = get_backend(args.backend)
    lk = {} if args.labeling_memory_budget is None else {"memory_budget": args.labeling_memory_budget}
    floor = {}
    if args.noise == "auto" and _meta.format == "jpeg":  # as the allinfocus command does (AllInFocus.compression_noise)
        from ..allinfocus import estimator_compression_noise  # noqa: PLC0415
        from ..cli import jpeg_input_error  # noqa: PLC0415

        v = jpeg_input_error(args.input, "gpudeblur")
        if v:
            floor = {"compression_noise": estimator_compression_noise(v)}
            say(f"gpudeblur: JPEG input: compression error ~{v:.2g} (variance); the noise is taken as at least half "
                "of it")
    est = BlurMapEstimator(window=args.window, noise=args.noise, max_radius=args.max_radius, psf_family=args.psf,
                           labeling=labeling, vertical_derivative=args.vertical, memory_budget=args.memory_budget,
                           labeling_kwargs=lk, backend=be, **floor)
    bars = _StageBars()
    t0 = time.perf_counter()
    try:
        res = est.estimate(image, return_candidates=True, progress=bars)
        mask = None
        if mask_out:
            bars("segmentation", 0, 1)
            # exact min cut (PyMaxflow) on the CPU; the primal-dual solver on the GPU
            mask, _ = est.segment(image, res.radius, candidates=res, tau=2.0 if args.tau is None else args.tau,
                                  method="primal-dual" if be.name == "cuda" else "min-cut")
            bars("segmentation", 1, 1)
    finally:
        bars.close()
    be.synchronize()
    dt = time.perf_counter() - t0
    radius = be.to_host(res.radius).astype(np.float32)
    # all outputs or none (io.output_batch: renamed together once all are written); OUT last
    with output_batch():
        if mask_out:
            jq = 100 if image_format(mask_out) == "jpeg" else None  # 0/255 within 2 levels
            write_image(mask_out, (be.to_host(mask).astype(np.uint8) * 255), overwrite=args.overwrite, jpeg_quality=jq)
        if cand_out:
            buf = _pyio.BytesIO()
            np.savez_compressed(
                buf,
                radius=be.to_host(res.candidates),
                likelihood=be.to_host(res.likelihoods),
                log_likelihood=be.to_host(res.log_likelihoods),
                confidence=be.to_host(res.confidence),
                raw_radius=be.to_host(res.raw_radius),
            )
            _atomic_write(cand_out, buf.getvalue(), args.overwrite)
        if ext in ARRAY_WRITE_EXTENSIONS:
            write_array(out, radius, overwrite=args.overwrite)
        else:
            write_image(out, colorize(radius, args.max_radius), overwrite=args.overwrite)
    lab = labeling or "no labeling"
    say(f"gpudeblur: wrote {out} (blur map, {lab}, noise {res.info['noise']:.3g}, {be.name} backend, {dt:.2f} s)")
    return 0
