"""``gpudeblur allinfocus``: the main job on the command line (a CLI plug-in).

    gpudeblur allinfocus IN OUT [--map MAP.npy | --estimate] [--mode auto|sv-admm|fast|blind]
                         [--layers L] [--save-map M.png|.npy|.tif] [--save-layers DIR]
                         [--report R.json] [--lam X] [--iters N] [--map-uncertainty S,SP]
                         [--keep-in-focus LO,HI|off] [--radius-check on|off]
                         [--edge-cap on|off] [--shrink-uninformed on|off] [--saturation on|off]
                         [--spread-select on|off] [--tv-channels joint|separate]
                         [--backend ...] [--overwrite]

Every output path is checked before any work; all writes are atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

import numpy as np

from .allinfocus import AUTO_SV_ADMM_MAX_PIXELS, DEFAULT_MODE, KEEP_IN_FOCUS, MAP_UNCERTAINTY, MAP_WINDOW, MODES


def _pair(text: str, check, expected: str) -> tuple:
    """argparse helper: ``A,B`` as two finite floats passed through ``check`` (its ValueError → usage error)."""
    import argparse  # noqa: PLC0415

    from .cli import finite_float  # noqa: PLC0415

    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    try:
        return check(tuple(finite_float(v.strip()) for v in parts))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def map_scale(text: str):
    """argparse type of ``--map-scale``: ``auto`` or a positive integer."""
    from .cli import positive_int  # noqa: PLC0415

    return "auto" if text.strip().lower() == "auto" else positive_int(text)


def uncertainty_pair(text: str) -> tuple:
    """argparse type: ``S,SP``, checked as ``AllInFocus(map_uncertainty=...)`` checks it."""
    from .allinfocus import _check_uncertainty  # noqa: PLC0415

    return _pair(text, _check_uncertainty, "RADIUS_SIGMA,SPATIAL_SIGMA (e.g. 0.5,3)")


def keep_pair(text: str):
    """argparse type: ``LO,HI`` radii or ``off`` (``AllInFocus(keep_in_focus=...)``)."""
    from .allinfocus import _check_keep  # noqa: PLC0415

    if text.strip().lower() == "off":
        return False
    return _pair(text, _check_keep, "LO,HI radii (e.g. 1.5,2.5) or 'off'")


def register(subparsers, parents) -> None:
    from .cli import (add_jpeg_quality, add_strip_metadata, noise_variance, odd_window, path_arg,  # noqa: PLC0415
                      positive_float, positive_int, positive_weight, psf_family)

    p = subparsers.add_parser(
        "allinfocus",
        parents=parents,
        help="all-in-focus image from a partially defocused photo (the main job)",
        description="Estimate the defocus blur map (or read one) and remove the blur: "
        "spatially varying deconvolution (sv-admm; fast) or blind per-layer deblurring (blind). The default, auto, "
        f"is sv-admm, or on the CPU fast for images above {AUTO_SV_ADMM_MAX_PIXELS / 1e6:g} MP and for a map "
        "estimated at a coarser scale than 1 (unless --lam, --iters, --saturation on, --spread-select on or "
        "--tv-channels joint is given).",
    )
    p.add_argument("input", metavar="IN", help="input image (PNG, TIFF, JPEG)")
    p.add_argument("output", metavar="OUT", help="all-in-focus output image (.png, .tif, .jpg)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--map", type=path_arg, metavar="MAP", help="blur radius map in pixels (.npy or float .tif) instead of estimating it")
    src.add_argument("--estimate", action="store_true", help="estimate the blur map (default)")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help=f"deblurring method (default {DEFAULT_MODE}: sv-admm, or fast on the CPU above "
                   f"{AUTO_SV_ADMM_MAX_PIXELS / 1e6:g} MP or for a map estimated at a coarser scale than 1)")
    p.add_argument("--layers", type=positive_int, metavar="L", help="out-of-focus layers for --mode blind (default: from the map)")
    p.add_argument("--lam", type=positive_weight, metavar="X", help="regularization weight: TV (sv-admm), gradient prior (fast), framelet ℓ1 (blind) "
                   "(default: sv-admm 3e-4 on an estimated map, 3e-3 with --radius-check off, at least 0.1 x the "
                   "noise sigma; fast 0.015, at least 1.5 x the noise sigma; blind 0.005)")
    p.add_argument("--iters", type=positive_int, metavar="N", help="ADMM iterations (sv-admm, default 30) or alternations (blind, default 20); not for fast")
    p.add_argument("--map-uncertainty", type=uncertainty_pair, metavar="S,SP",
                   help="treat the map as uncertain: radius spread S px and neighbourhood SP px of the expected-misfit "
                   f"data term (default {MAP_UNCERTAINTY[0]:g},{MAP_UNCERTAINTY[1]:g} for an estimated map, 0,0 for --map)")
    p.add_argument("--keep-in-focus", type=keep_pair, metavar="LO,HI|off",
                   help="return the input where the map is below LO px, the deconvolution above HI, a fade between "
                   f"(sv-admm, fast; default {KEEP_IN_FOCUS[0]:g},{KEEP_IN_FOCUS[1]:g} for an estimated map, times "
                   "max(1, S²/4) for a map read at scale S, off for --map)")
    p.add_argument("--radius-check", choices=("on", "off"), default=None,
                   help="shrink the estimated map's radii where trial deconvolutions ring (sv-admm, fast; default on "
                   "for an estimated map; not with --map)")
    p.add_argument("--edge-cap", choices=("on", "off"), default=None,
                   help="lower the estimated map's radii where an edge nearby is sharper than that blur allows "
                   "(sv-admm, fast; default on for an estimated map; not with --map)")
    p.add_argument("--shrink-uninformed", choices=("on", "off"), default=None,
                   help="fast on an estimated map: where the map has no information (no texture above the noise, "
                   "e.g. a clear sky), deconvolve with the radius up to the map's that passes the least noise "
                   "(radius 0 on a clean photo, where a guessed large radius blows the noise up into blotches; "
                   "default on; not with --map)")
    p.add_argument("--spread-select", choices=("on", "off"), default=None,
                   help="sv-admm on an estimated map: solve half the iterations with the map's radius spread, then "
                   "half with a 5x narrower one warm-started from it, and keep the narrow result where it rings no "
                   "more (+0.46 dB on the quality bench at the same iteration count, 40-46%% longer on the CPU; "
                   "default on where it applies; an explicit 'on' also makes --mode auto run sv-admm on a large CPU "
                   "image; not with --map)")
    p.add_argument("--saturation", choices=("on", "off"), default=None,
                   help="fit clipped highlights (a channel >= 0.995 of white) one-sided: they count only while the "
                   "model stays below them "
                   "(sv-admm only; default on with sv-admm)")
    p.add_argument("--tv-channels", choices=("joint", "separate"), default=None,
                   help="sv-admm on a colour image: each channel's TV on its own (default) or the channels' TV "
                   "together (colour TV: shared edges; +0.3 dB with a true map on the quality bench, none with an "
                   "estimated one; sv-admm only: 'joint' makes --mode auto run it)")
    p.add_argument("--psf", type=psf_family, default="disc", metavar="disc|gaussian|CALIB.npz",
                   help="PSF family of the map and the deblurring: disc radius, Gaussian sigma, or a lens calibration "
                   ".npz with 'radii' (K,) and 'psfs' (K, H, W) (default disc)")
    p.add_argument("--max-radius", type=positive_float, default=None, metavar="R", help="largest blur radius estimated (8)")
    p.add_argument("--window", type=odd_window, default=None, metavar="N",
                   help=f"odd analysis window of the blur-map estimate (default {MAP_WINDOW}; the paper's 41)")
    p.add_argument("--noise", type=noise_variance, default=None, metavar="VAR|auto",
                   help="noise variance for the blur-map estimator (default auto: measured on the image, at least 1e-6)")
    p.add_argument("--compression-noise", choices=("auto", "off"), default=None,
                   help="auto (default): for a JPEG IN, estimate the error its compression added from the file's "
                   "quantization tables and raise the blur-map estimator's noise to half of it (the measured noise "
                   "cannot see it; the map reads the detail JPEG removed as blur) and sv-admm's default TV weight to "
                   "at least 0.05*sqrt of it; off: the measured noise only")
    p.add_argument("--map-scale", type=map_scale, default=None, metavar="S|auto",
                   help="estimate the blur map on the image reduced S times (S x S block means): radii up to S times "
                   "--max-radius at 1/S^2 of the map's cost, radii below ~1.5*S px not resolved; auto (default): "
                   "the finest power of 2 whose range holds the blur, found by a coarse read first (at 4 below 2 MP)")
    p.add_argument("--save-map", type=path_arg, metavar="M", help="write the blur map (.png colour-mapped, .npy/.tif float)")
    p.add_argument("--save-layers", type=path_arg, metavar="DIR",
                   help="write the layer labels and per-layer results (blind mode) into DIR (PNGs of 8 bits, 16 for a "
                        "deeper input)")
    p.add_argument("--report", type=path_arg, metavar="R.json", help="write a JSON report (map statistics, layers, kernels, timings)")
    add_jpeg_quality(p)
    add_strip_metadata(p)
    p.set_defaults(func=run)


def _read_map(path):
    from .io import read_image  # noqa: PLC0415

    if os.path.isdir(path):
        raise IsADirectoryError(f"--map {path} is a folder, not a map file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"map file not found: {path}")
    if path.lower().endswith(".npy"):
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"--map {path}: not a .npy array file")
        try:
            m = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError(f"--map {path}: holds Python objects, not a numeric array") from None
            raise ValueError(f"--map {path}: not a .npy array file") from None
        except Exception:  # noqa: BLE001  (truncated or foreign bytes: NumPy's own words help no one)
            raise ValueError(f"--map {path}: not a .npy array file") from None
    else:
        m, meta = read_image(path)
        if meta.dtype.kind in "ui":
            raise ValueError(f"--map {path}: {'an' if meta.bit_depth == 8 else 'a'} {meta.bit_depth}-bit image holds no "
                             "radii (read_image scales it to "
                             "[0, 1]); give the radii in pixels as .npy or a float TIFF")
    m = np.asarray(m)
    if m.dtype.kind not in "iuf":
        raise ValueError(f"--map {path}: must hold real numbers (radii in pixels), got {m.dtype} values")
    if m.ndim != 2:
        raise ValueError(f"map {path} must be 2-D, got shape {m.shape}")
    return m.astype(np.float32)


#: The files ``--save-layers DIR`` receives in blind mode (written in :func:`run`).
_LAYER_FILE = re.compile(r"labels\.npy|layer(\d+)\.png|kernel(\d+)\.npy")


def _check_layers_folder(folder: str, outputs: dict, overwrite: bool, inputs=()) -> None:
    """``--save-layers`` (blind mode) before any work: not the path of another
    output, none of the other outputs and none of the ``inputs`` (even with
    ``overwrite``) is a file it writes, and without ``overwrite`` it holds no
    layer files of an earlier run (the job would fail only at its end)."""
    from .cli import _same_file  # noqa: PLC0415

    def written_there(path) -> bool:
        return bool(_LAYER_FILE.fullmatch(os.path.basename(path))) and \
            _same_file(os.path.dirname(os.path.abspath(path)), folder)

    for path in inputs:  # (a symbolic link to one of those files too)
        if written_there(path) or written_there(os.path.realpath(path)):
            raise ValueError(f"input {path} is a file that --save-layers {folder} writes; choose another folder")
    if os.path.isdir(folder):  # a layer file there that is a link to an input or output: written through
        for f in sorted(os.listdir(folder)):
            p = os.path.join(folder, f)
            if _LAYER_FILE.fullmatch(f) and os.path.islink(p):
                for path in [*inputs, *(v for v in outputs.values() if v)]:
                    if _same_file(p, path):
                        raise ValueError(f"--save-layers {folder}: {f} is a link to {path}, which this run "
                                         "would overwrite; remove the link or choose another folder")
    for name, path in outputs.items():
        if not path:
            continue
        if _same_file(folder, path):
            raise ValueError(f"{name} {path} and --save-layers {folder} are the same path; choose different names")
        if written_there(path):
            raise ValueError(f"{name} {path} is a file that --save-layers {folder} writes; choose another name")
    if not overwrite and os.path.isdir(folder):
        old = sorted(f for f in os.listdir(folder) if _LAYER_FILE.fullmatch(f))
        if old:
            shown = ", ".join(old[:3]) + (", ..." if len(old) > 3 else "")
            raise FileExistsError(f"--save-layers {folder} already holds layer files ({shown}); "
                                  "use --overwrite to replace them")


def _remove_stale_layers(folder: str, n_layers: int, n_kernels: int, say, inputs=()) -> None:
    """After a blind run wrote its layer files into ``folder`` (``--overwrite``
    given, else :func:`_check_layers_folder` refused a folder holding any):
    remove the layer files of an earlier run with more layers, so the folder
    does not mix two runs (``layer5.png`` of a 6-layer run beside a 4-layer one).
    Only names this command writes (``layer7.png``, not ``layer07.png``), and
    never one of this run's ``inputs`` (also checked up front; this guards a
    hard link under another name)."""
    from .cli import _same_file  # noqa: PLC0415

    written = {"labels.npy"} | {f"layer{i}.png" for i in range(n_layers)} | \
        {f"kernel{i}.npy" for i in range(1, n_kernels + 1)}
    stale = []
    for f in sorted(os.listdir(folder)):
        m = _LAYER_FILE.fullmatch(f)
        if not m or f in written:  # (labels.npy is always written)
            continue
        number = m.group(1) or m.group(2)
        path = os.path.join(folder, f)
        if number != str(int(number)) or any(os.path.exists(p) and _same_file(path, p) for p in inputs):
            continue
        stale.append(f)
    for f in stale:
        os.remove(os.path.join(folder, f))
    if stale:
        say(f"allinfocus: --save-layers: removed {len(stale)} layer file(s) of an earlier run ({', '.join(stale)})")


def run(args) -> int:
    from .allinfocus import ESTIMATED_MAP_LAM, AllInFocus  # noqa: PLC0415
    from .spatially_varying import noise_lam  # noqa: PLC0415
    from .cli import (check_distinct_outputs, check_jpeg_quality_option, check_output_folder, check_output_path,  # noqa: PLC0415
                      input_paths, jpeg_input_error, read_input, say)
    from .io import ARRAY_WRITE_EXTENSIONS  # noqa: PLC0415

    ins = input_paths(args.input, args.map, psf=args.psf)  # a --psf calibration file is an input too
    out = check_output_path(ins, args.output, args.overwrite, kind="image")
    check_jpeg_quality_option(args, out)
    check_distinct_outputs({"OUT": out, "--save-map": args.save_map, "--report": args.report})
    if args.save_map:
        check_output_path(ins, args.save_map, args.overwrite, extensions=(".png",) + ARRAY_WRITE_EXTENSIONS,
                          label="--save-map")
    if args.report:
        check_output_path(ins, args.report, args.overwrite, kind=None, label="--report")
    if args.save_layers:
        if args.mode != "blind":  # the only mode that splits the image into layers
            raise ValueError("--save-layers applies to --mode blind only")
        check_output_folder(args.save_layers, "--save-layers")
        _check_layers_folder(args.save_layers, {"OUT": out, "--save-map": args.save_map, "--report": args.report},
                             args.overwrite, ins)
    est_opts = {k: v for k, v in (("max_radius", args.max_radius), ("window", args.window), ("noise", args.noise))
                if v is not None}
    estimate_only = list(est_opts) + [k for k in ("map_scale", "compression_noise") if getattr(args, k) is not None]
    if args.map and estimate_only:
        raise ValueError(f"--{estimate_only[0].replace('_', '-')} applies to an estimated map, not with --map")
    if args.iters is not None and args.mode == "fast":
        raise ValueError("--iters applies to --mode sv-admm and blind only (fast has no iterations)")
    if args.layers is not None and args.mode != "blind":
        raise ValueError("--layers applies to --mode blind only")
    if args.map_uncertainty is not None and args.mode == "blind":
        raise ValueError("--map-uncertainty applies to --mode sv-admm and fast only")
    for name in ("radius_check", "edge_cap"):
        if getattr(args, name) is not None and (args.mode == "blind" or args.map):
            raise ValueError(f"--{name.replace('_', '-')} applies to an estimated map with --mode sv-admm or fast only")
    if args.shrink_uninformed is not None and (args.mode in ("sv-admm", "blind") or args.map):
        raise ValueError("--shrink-uninformed applies to an estimated map with --mode fast (or auto) only")
    if args.spread_select is not None and (args.mode in ("fast", "blind") or args.map):
        raise ValueError("--spread-select applies to an estimated map with --mode sv-admm (or auto) only")
    if args.keep_in_focus is not None and args.mode == "blind":
        raise ValueError("--keep-in-focus applies to --mode sv-admm and fast only (blind keeps its in-focus layer)")

    def stage(name):
        say(f"allinfocus: {name} ...")

    options = dict(
        mode=args.mode,
        psf_family=args.psf,
        layers=args.layers,
        lam=args.lam,
        num_iter=args.iters,
        map_uncertainty=args.map_uncertainty,
        keep_in_focus=args.keep_in_focus,
        radius_check=args.radius_check != "off",
        edge_cap=args.edge_cap != "off",
        shrink_uninformed=None if args.shrink_uninformed is None else args.shrink_uninformed == "on",
        saturation=None if args.saturation is None else args.saturation == "on",
        spread_select=None if args.spread_select is None else args.spread_select == "on",
        tv_channels=args.tv_channels,
        map_scale=args.map_scale or "auto",
        estimator_options=est_opts,  # unset ones: the pipeline's defaults (window 51, noise auto, radius 8)
        backend=args.backend,
        progress=stage,
    )
    pipe = AllInFocus(**options)  # every option checked before IN is read
    image, meta = read_input(args.input)
    if args.strip_metadata:
        meta = meta.stripped()
    radius_map = _read_map(args.map) if args.map else None
    if radius_map is not None and radius_map.shape != image.shape[:2]:
        raise ValueError(f"map shape {radius_map.shape} does not match the image {image.shape[:2]}")
    if radius_map is None and args.compression_noise != "off" and meta.format == "jpeg" and \
            args.noise in (None, "auto"):  # a given --noise is used as given
        v = jpeg_input_error(args.input, "allinfocus")
        if v:  # 0: a lossless JPEG
            pipe = AllInFocus(**options, compression_noise=v)
            lam = pipe._estimated_map_lam()
            tv = (pipe.lam is None and pipe.radius_check and pipe.resolve_mode(image.shape) == "sv-admm"
                  and lam > ESTIMATED_MAP_LAM)
            say(f"allinfocus: JPEG input: compression error ~{v:.2g} (variance); the blur map takes its noise as at "
                "least half of it (less at a coarser map scale)"
                + (f", and sv-admm's TV weight is {lam:.2g} (not {ESTIMATED_MAP_LAM:g}) if it runs" if tv else "")
                + " (--compression-noise off: the measured noise only)")

    predicted = pipe.resolve_mode(image.shape) if args.mode == "auto" else args.mode
    if args.mode == "auto" and predicted == "fast":
        say(f"allinfocus: mode auto -> fast ({image.shape[0] * image.shape[1] / 1e6:.1f} MP on the CPU, where sv-admm "
            f"takes tens of minutes above {AUTO_SV_ADMM_MAX_PIXELS / 1e6:g} MP; --mode sv-admm forces it)")
    t0 = time.perf_counter()
    result_img, res = pipe.run(image, radius_map=radius_map)
    total = time.perf_counter() - t0
    if args.mode == "auto" and predicted != res.mode:
        say(f"allinfocus: mode auto -> {res.mode} (the map was read at scale {res.map_scale}, as for strong defocus, where "
            "on the CPU sv-admm takes ~15x fast's time for ~0.4 dB more; --mode sv-admm forces it)")
    for i, j in res.merged_layers.items():
        say(f"allinfocus: layer {i} had fewer pixels than its kernel covers; joined to layer {j} "
            f"(r~{res.layer_radii[j]:.1f} px)")
    if args.lam is None and res.noise_sigma is not None and res.lam == noise_lam(res.mode, res.noise_sigma):
        per_sigma = noise_lam(res.mode, 1.0)
        say(f"allinfocus: noisy input (sigma ~{res.noise_sigma:.2g}): {res.mode}'s "
            f"{'TV weight' if res.mode == 'sv-admm' else 'prior weight'} was {res.lam:.2g} ({per_sigma:g} x sigma; "
            "--lam sets it)")

    # all outputs or none (io.output_batch: renamed together once all are written); OUT last
    created = []  # --save-layers folders made here: removed again (if still empty) when the writes fail
    try:
        _write_outputs(args, res, out, meta, result_img, total, created)
    except BaseException:
        _remove_empty_folders(created)
        raise
    if args.save_layers:  # an earlier run's extra layers, once this run's are in place
        _remove_stale_layers(args.save_layers, len(res.layers), len(res.kernels), say, inputs=ins)
    say(f"allinfocus: wrote {out} ({res.mode}, {total:.2f} s; map radius {res.radius_map.min():.2f}–{res.radius_map.max():.2f} px)")
    return 0


def _make_folders(path: str) -> list:
    """``os.makedirs(path, exist_ok=True)``, walking the path as ``makedirs`` does; the folders
    this call made (each by its own ``os.mkdir``), outermost first. If it fails part way, they
    are removed again before the error goes on. Only folders made here are listed: in
    ``new/../E`` an existing ``E`` is not, although it did not exist before ``new`` did."""
    made = []

    def make(p):
        head, tail = os.path.split(p)
        if not tail:
            head, tail = os.path.split(head)
        if head and tail and not os.path.exists(head):
            make(head)
            if tail == os.curdir:  # makedirs: "xxx/new/." exists once "xxx/new" does
                return
        try:
            os.mkdir(p)
        except OSError:
            if not os.path.isdir(p):  # exist_ok, as makedirs: a folder that is there is fine
                raise
            return
        made.append(p)

    try:
        make(os.fspath(path))
    except BaseException:
        _remove_empty_folders(made)
        raise
    return made


def _remove_empty_folders(folders) -> None:
    """Remove ``folders`` (outermost first, as :func:`_make_folders` lists them), innermost
    first, each only if it is empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _write_outputs(args, res, out, meta, result_img, total, created) -> None:
    """Every output of ``allinfocus``, all or none (:func:`gpudeblur.io.output_batch`); folders it
    makes for ``--save-layers`` are appended to ``created``."""
    from .blurmap.cli import colorize  # noqa: PLC0415
    from .io import _atomic_write, output_batch, write_array, write_image  # noqa: PLC0415

    with output_batch():
        if args.save_map:
            if args.save_map.lower().endswith(".png"):
                write_image(args.save_map, colorize(res.radius_map, max(args.max_radius or 8.0, float(res.radius_map.max()))), overwrite=args.overwrite, bit_depth=8)
            else:
                write_array(args.save_map, res.radius_map, overwrite=args.overwrite)
        if args.save_layers:  # blind mode (checked above): there are layers
            created.extend(_make_folders(args.save_layers))
            write_array(os.path.join(args.save_layers, "labels.npy"), res.layer_labels, overwrite=args.overwrite)
            depth = 16 if (meta is not None and meta.bit_depth > 8) else 8  # a PNG keeps up to 16 bits of the input
            for i, u in enumerate(res.layers):
                write_image(os.path.join(args.save_layers, f"layer{i}.png"), np.clip(u, 0, 1), meta,
                            overwrite=args.overwrite, bit_depth=depth)
            for i, k in enumerate(res.kernels, start=1):
                write_array(os.path.join(args.save_layers, f"kernel{i}.npy"), k, overwrite=args.overwrite)
        if args.report:
            rep = res.report()
            rep["input"] = os.path.abspath(args.input)
            rep["output"] = os.path.abspath(out)
            rep["total_s"] = round(total, 4)
            _atomic_write(args.report, (json.dumps(rep, indent=2) + "\n").encode(), args.overwrite)
        write_image(out, result_img, meta, overwrite=args.overwrite, jpeg_quality=args.jpeg_quality)
