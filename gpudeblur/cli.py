"""The ``gpudeblur`` command line.

Subcommands
-----------
``gpudeblur deconv IN OUT --psf SPEC [--method M] ...``
    Non-blind deconvolution of an image file (keeps bit depth and alpha).
``gpudeblur info``
    Versions, the backend ``auto`` picks, the GPU and its memory.
``gpudeblur demo [--out DIR] [--uniform]``
    Blur the bundled sample image, restore it, print PSNRs, write PNGs.

Every user error (missing or corrupt file, bad option value, existing
output, unavailable backend, ...) prints one line
``gpudeblur: error: <message>`` on stderr and exits with status 2, the
status argparse uses for its own errors; nothing is written then.

Plug-in subcommands
-------------------
Modules named in :data:`_PLUGINS` add further subcommands. A module that
does not exist (``importlib.util.find_spec`` returns ``None``) is skipped;
one that exists but fails to import raises (that is a bug, not a missing
feature). A plug-in module exposes::

    def register(subparsers, parents) -> None:
        p = subparsers.add_parser("blurmap", parents=parents, help="...", description="...")
        p.add_argument("input")
        ...
        p.set_defaults(func=run)

    def run(args) -> int:   # 0 on success
        ...

``parents`` holds one parent parser that provides ``--backend
{auto,cuda,cpu}`` (``args.backend``; ``None`` means ``$GPUDEBLUR_BACKEND``
or ``auto``) and ``--overwrite`` (``args.overwrite``). ``run`` raises
``ValueError``/``OSError``/``BackendUnavailableError`` for user errors;
:func:`main` turns them into the one-line message and status 2. Helpers
for plug-ins: :func:`check_output_path` (call it for every output before
any work), :func:`progress` (a tqdm bar to pass as ``callback=``),
:func:`say` (a status line on stdout) and the argparse types
:func:`positive_int`, :func:`positive_float`, :func:`finite_float`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import time
import warnings

from . import _allocator
from ._backend import BACKEND_NAMES, ENV_VAR, BackendUnavailableError

__all__ = [
    "main",
    "entry",
    "build_parser",
    "check_output_path",
    "check_output_folder",
    "check_distinct_outputs",
    "odd_window",
    "add_strip_metadata",
    "add_jpeg_quality",
    "check_jpeg_quality_option",
    "jpeg_input_error",
    "progress",
    "Progress",
    "say",
    "positive_int",
    "positive_float",
    "finite_float",
]

#: Modules that may add subcommands (skipped when they do not exist).
_PLUGINS = ["gpudeblur.blurmap.cli", "gpudeblur.allinfocus_cli"]

PROG = "gpudeblur"
EXIT_OK = 0
EXIT_USAGE = 2  # user errors, as argparse
EXIT_FAILURE = 1  # e.g. out of memory

_quiet = False


# ---------------------------------------------------------------------------
# helpers shared with plug-ins
# ---------------------------------------------------------------------------


class Progress:
    """A tqdm progress bar usable as ``callback=`` and as a context manager.

    Calling it (``bar(i)``, as the iterative solvers do after iteration
    ``i``) advances the bar by one; :meth:`update` advances by ``n``. The bar
    writes to stderr, disappears when closed, and is off when stderr is
    not a terminal or ``gpudeblur --quiet`` was given.
    """

    def __init__(self, total: int | None, desc: str = "", *, disable: bool | None = None):
        from tqdm import tqdm  # noqa: PLC0415

        if _quiet:
            disable = True
        self._bar = tqdm(
            total=total, desc=desc, unit="it", file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True
        )

    def __call__(self, i=None) -> None:
        self._bar.update(1)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str = "") -> Progress:
    """A :class:`Progress` bar of ``total`` steps labelled ``desc``.

    ``with progress(n, "rl") as bar: richardson_lucy(..., num_iter=n, callback=bar)``
    """
    return Progress(total, desc)


def say(message: str) -> None:
    """Print a status line on stdout (suppressed by ``gpudeblur --quiet``)."""
    if not _quiet:
        print(message, flush=True)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_distinct_outputs(named) -> None:
    """Refuse two outputs that are one file: ``named`` maps an option's name
    (``'OUT'``, ``'--save-map'``, ...) to its path (None: not given)."""
    items = [(k, os.fspath(v)) for k, v in named.items() if v]
    for i, (ka, a) in enumerate(items):
        for kb, b in items[i + 1:]:
            if _same_file(a, b):
                raise ValueError(f"{ka} {a} and {kb} {b} are the same file; choose different names")


def input_paths(image, map_path=None, psf=None) -> list:
    """The run's input files, for :func:`check_output_path`: the image, the
    ``--map`` file and the file a ``--psf`` calibration was loaded from
    (``PSFCalibration.source``; ``'disc'``/``'gaussian'`` name no file)."""
    calib = getattr(psf, "source", None) if not isinstance(psf, str) else None
    return [p for p in (image, map_path, calib) if p]


def check_output_path(in_path, out_path, overwrite: bool, kind: str | None = "image", *, extensions=None,
                      label: str = "output") -> str:
    """Check an output path before any work is done; return it as ``str``.

    Parameters
    ----------
    in_path : path, sequence of paths or None
        The input file(s); the output may be none of them (compared with
        :func:`os.path.samefile`, or :func:`os.path.realpath` when the
        output does not exist yet), even with ``overwrite``.
    out_path : path
    overwrite : bool
        Without it an existing output is refused.
    kind : {'image', 'array', None}
        Also check the extension: ``'image'`` for :func:`gpudeblur.io.write_image`
        (.png, .tif, .tiff, .jpg, .jpeg), ``'array'`` for
        :func:`gpudeblur.io.write_array` (.npy, .tif, .tiff), ``None``: no check.
    extensions : sequence of str, optional
        The extensions this output accepts (overrides ``kind``'s list; the
        error names exactly these).
    label : str
        How messages name this output (``'output'``, ``'--save-map'``, ...).

    Raises
    ------
    ValueError
        Output equals an input; empty path; unsupported extension.
    FileExistsError, IsADirectoryError, FileNotFoundError, PermissionError
        Output exists (without ``overwrite``), is a folder or ends in a path
        separator; its folder is missing or not writable.
    """
    from .io import _output_target, image_format, output_exists_error  # noqa: PLC0415

    if out_path is None or not os.fspath(out_path):
        raise ValueError("output path is empty")
    out = os.fspath(out_path)
    if in_path is None:
        ins = []
    elif isinstance(in_path, (str, bytes, os.PathLike)):
        ins = [in_path]
    else:
        ins = list(in_path)
    for i in ins:
        if _same_file(os.fspath(i), out):
            raise ValueError(f"{label} {out} is the input file {os.fspath(i)}; choose another output name")
    if os.path.isdir(out):
        raise IsADirectoryError(f"{label} {out} is a folder; give a file name")
    target = _output_target(out, f"{label} {out}")  # a symbolic link is written through, to its target
    if out.endswith(tuple(s for s in (os.sep, os.altsep) if s)):
        raise IsADirectoryError(f"{label} {out} names a folder (it ends in {out[-1]}); give a file name")
    if extensions is not None:
        ext = os.path.splitext(out)[1].lower()
        if ext not in extensions:
            raise ValueError(f"unsupported format for {label} {out} (extension {ext or 'none'}); use {', '.join(extensions)}")
    elif kind is not None:
        image_format(out, kind)
    link = target != out
    folder = os.path.dirname(os.path.abspath(target))
    via = f" (where the link {out} leads)" if link else ""
    if link and not os.path.isdir(folder):
        raise FileNotFoundError(f"{label} {out} is a symbolic link into a missing folder ({folder})")
    if os.path.lexists(out) and not overwrite:
        raise output_exists_error(out, label, "use --overwrite")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{label} folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{label} folder is not writable: {folder}{via}")
    return out


def check_output_folder(path, label: str) -> str:
    """Check a folder that outputs will be written into, before any work: an
    existing writable folder, or one that can be created (its nearest existing
    parent is a writable folder). Nothing is created here."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{label}: empty folder name")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{label} {path} is not a folder")
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{label} folder is not writable: {path}")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"{label} {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{label} {path} cannot be created: {parent} is not writable")
    return path


def _int_arg(text: str, ok, what: str) -> int:
    """``int(text)`` if ``ok`` of it, else argparse's error naming ``what``."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return v


def path_arg(text: str) -> str:
    """argparse type: a file or folder path, not empty (an unset shell variable must not
    silently drop the option)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _int_arg(text, lambda v: v > 0, "a positive integer")


def odd_window(text: str) -> int:
    """argparse type: an odd integer >= 9 (the analysis window of the blur map)."""
    return _int_arg(text, lambda v: v >= 9 and v % 2 == 1, "an odd integer >= 9")


def read_input(path):
    """:func:`gpudeblur.io.read_image` of a command's IN, refusing NaN or Inf samples by the file's name."""
    import numpy as np  # noqa: PLC0415

    from .io import read_image  # noqa: PLC0415

    image, meta = read_image(path)
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(f"{path} contains NaN or Inf values")
    return image, meta


#: float32's largest finite and smallest normal numbers (numpy.finfo; not imported here, for a quick --help)
_F32_MAX, _F32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38


def finite_float(text: str) -> float:
    """argparse type: a finite float."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if abs(v) > _F32_MAX:  # the work is in float32: 1e300 overflowed into NaN several warnings later
        raise argparse.ArgumentTypeError(f"must be within float32's range (±{_F32_MAX:.3g}), got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    if v < _F32_TINY:  # 0 in float32
        raise argparse.ArgumentTypeError(f"must be at least float32's smallest normal number ({_F32_TINY:.3g}), "
                                         f"got {text!r}")
    return v


def weight_float(text: str) -> float:
    """argparse type: a regularization weight, finite and at most ``MAX_WEIGHT`` (1e6; its sign is
    the caller's to check: ``inverse``'s eps may be 0)."""
    return _bounded_weight(finite_float(text), text)


def positive_weight(text: str) -> float:
    """argparse type: a regularization weight, ``> 0`` and at most ``MAX_WEIGHT``."""
    return _bounded_weight(positive_float(text), text)


def _bounded_weight(v: float, text: str) -> float:
    from ._validate import weight_too_large  # noqa: PLC0415

    too_large = weight_too_large(v, text)
    if too_large:
        raise argparse.ArgumentTypeError(too_large)
    return v


def noise_variance(text: str):
    """argparse type: a noise variance > 0, or ``auto`` (measured on the image)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as exc:
        why = "" if str(exc).startswith("expected a number") else f" ({str(exc).split(', got')[0]})"
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto'{why}, got {text!r}") from None


def psf_family(text: str):
    """argparse type: ``disc``, ``gaussian`` or a lens calibration ``.npz``
    (:meth:`gpudeblur.blurmap.PSFCalibration.load`)."""
    t = text.strip()
    if t.lower() in ("disc", "gaussian"):
        return t.lower()
    if t.lower().endswith(".npz"):
        from .blurmap.spectra import PSFCalibration  # noqa: PLC0415

        if not os.path.isfile(t):
            raise argparse.ArgumentTypeError(f"PSF calibration file not found: {t}")
        try:
            return PSFCalibration.load(t)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(f"expected disc, gaussian or a calibration .npz, got {text!r}")


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (status 2, like every user error here)."""

    def error(self, message):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} -h')\n")


def _common_parent() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=None,
        help=f"compute backend (default: ${ENV_VAR} or 'auto': CUDA when a GPU answers, else CPU)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


_METHODS = ("admm-tv", "rl", "rl-tv", "wiener", "tikhonov", "inverse")
_ITERATIVE = ("rl", "rl-tv", "admm-tv")
_COMPRESSION_NOISE_METHODS = ("admm-tv", "wiener")  # whose default weight takes a JPEG's compression error


def _add_deconv(sub, parents) -> None:
    p = sub.add_parser(
        "deconv",
        parents=parents,
        help="non-blind deconvolution of an image with a known PSF",
        description=(
            "Deconvolve IN with a known PSF and write OUT. OUT keeps the bit depth of IN (8/16-bit PNG/TIFF, "
            "float TIFF) and its alpha channel untouched; values are clipped to [0, 1] only when written "
            "as integers."
        ),
    )
    p.add_argument("input", metavar="IN", help="input image (PNG, TIFF, JPEG, ...)")
    p.add_argument("output", metavar="OUT", help="output image (.png, .tif, .tiff, .jpg, .jpeg)")
    p.add_argument(
        "--psf",
        required=True,
        metavar="SPEC",
        help="disc:RADIUS | gaussian:SIGMA | motion:LENGTH[,ANGLE] (degrees, default 0) | FILE.npy (2-D array)",
    )
    p.add_argument(
        "--method",
        choices=_METHODS,
        default="admm-tv",
        help="admm-tv (default: TV-regularized, best quality), rl (Richardson-Lucy), rl-tv (RL with TV), "
        "wiener (balance estimated unless --balance), tikhonov (gradient prior), inverse (regularized)",
    )
    p.add_argument("--iters", type=positive_int, metavar="N", help="iterations (rl, rl-tv, admm-tv)")
    p.add_argument(
        "--lam",
        type=weight_float,
        metavar="X",
        help="regularization weight: TV weight of admm-tv (default: from the noise level) and rl-tv "
        "(default 0.002), lam of tikhonov (default 1e-3), eps of inverse (default 1e-3; 0 = plain inverse)",
    )
    p.add_argument(
        "--balance", type=finite_float, metavar="B", help="wiener noise-to-signal balance (default: estimated)"
    )
    p.add_argument(
        "--tv-channels",
        choices=("joint", "separate"),
        help="admm-tv on a colour image: the channels' TV together (default: colour TV, shared edges) "
        "or each channel's on its own",
    )
    p.add_argument(
        "--compression-noise", choices=("auto", "off"), default=None,
        help="admm-tv's default --lam and wiener's estimated --balance: auto (default) adds, for a JPEG IN, the "
        "error its compression added (estimated from its quantization tables) to the measured noise, which cannot "
        "see it; off: the measured noise only (wiener: generalized cross-validation)",
    )
    p.add_argument(
        "--boundary",
        choices=("reflect", "periodic", "zero"),
        default="reflect",
        help="image boundary model (default reflect)",
    )
    p.add_argument("--luminance", action="store_true", help="deconvolve only the luma of an RGB image")
    p.add_argument("--clip", action="store_true", help="clip the result to [0, 1] (also for float TIFF output)")
    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 16, 32),
        default=None,
        help="output bit depth (default: as the input; 32 = float, TIFF only)",
    )
    add_jpeg_quality(p)
    add_strip_metadata(p)
    p.set_defaults(func=_run_deconv)


def add_jpeg_quality(p) -> None:
    """``--jpeg-quality`` for a command that writes an image (a JPEG OUT only)."""
    from .io import JPEG_QUALITY  # noqa: PLC0415

    p.add_argument("--jpeg-quality", type=lambda t: _int_arg(t, lambda v: 1 <= v <= 100, "an integer from 1 to 100"),
                   default=None, metavar="Q", help=f"quality of a JPEG OUT, 1-100 (default {JPEG_QUALITY})")


def check_jpeg_quality_option(args, out: str) -> None:
    """``--jpeg-quality`` only with a JPEG OUT (checked before any work)."""
    from .io import image_format  # noqa: PLC0415

    if args.jpeg_quality is not None and image_format(out) != "jpeg":
        raise ValueError(f"--jpeg-quality applies to a JPEG OUT, not {os.path.basename(out)}")


def jpeg_input_error(path, prog: str):
    """:func:`gpudeblur.io.jpeg_compression_noise` of a JPEG IN, saying so (a status line) when the file has no
    luminance component to judge (CMYK, RGB-coded): None then, as for any other file."""
    from .io import jpeg_compression_noise  # noqa: PLC0415

    v = jpeg_compression_noise(path)
    if v is None:
        say(f"{prog}: JPEG input without a luminance component: its compression error is not estimated")
    return v


def add_strip_metadata(p) -> None:
    """``--strip-metadata`` for a command that writes an image like its input."""
    p.add_argument("--strip-metadata", action="store_true",
                   help="write no colour profile or EXIF (default: carried over from IN)")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, backend and GPU", description="Show versions, backend and GPU.")
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=None,
        help=f"backend to report on (default: ${ENV_VAR} or 'auto')",
    )
    p.set_defaults(func=_run_info)


def _add_demo(sub, parents) -> None:
    p = sub.add_parser(
        "demo",
        parents=parents,
        help="the main job on the bundled scene: all-in-focus recovery, PSNR before/after",
        description=(
            "Blur the bundled sharp image with a spatially varying disc blur (in-focus subject r=0, "
            "mid band r=2.5, background r=5; noise sigma 0.001, 8-bit, fixed seed), recover the "
            "all-in-focus image with the estimated blur map (gpudeblur allinfocus), print PSNR before and "
            "after against the sharp image, and write the PNGs (and blur maps) to DIR. --uniform runs the "
            "non-blind comparison instead (disc r=4 everywhere, sigma 0.01; ADMM-TV, Wiener, Richardson-Lucy)."
        ),
    )
    p.add_argument("--out", type=path_arg, metavar="DIR", default=None,
                   help="output folder (default ./gpudeblur-demo; ./gpudeblur-demo-uniform with --uniform)")
    p.add_argument("--uniform", action="store_true",
                   help="non-blind deconvolution demo with one known PSF instead of the all-in-focus job")
    p.set_defaults(func=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, plug-in subcommands included."""
    from . import __version__  # noqa: PLC0415

    parser = _Parser(
        prog=PROG,
        description="gpudeblur: fast, faithful deblurring on CUDA GPUs with a Numba CPU fallback.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [_common_parent()]
    _add_deconv(sub, parents)
    _add_info(sub)
    _add_demo(sub, parents)
    for name in _PLUGINS:
        _load_plugin(name).register(sub, parents)
    return parser


def _load_plugin(name: str):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent package is missing
        spec = None
    if spec is None:
        return _NoPlugin
    return importlib.import_module(name)  # an ImportError inside the plug-in propagates


class _NoPlugin:
    @staticmethod
    def register(subparsers, parents) -> None:
        return None


# ---------------------------------------------------------------------------
# deconv
# ---------------------------------------------------------------------------


def _default_iters(fn) -> int:
    return int(inspect.signature(fn).parameters["num_iter"].default)


def _deconv_call(args):
    """``(function, kwargs, iterations or None)`` for ``args.method``; checks option combinations."""
    from . import restoration as r  # noqa: PLC0415

    m = args.method
    if args.iters is not None and m not in _ITERATIVE:
        raise ValueError(f"--iters applies to {', '.join(_ITERATIVE)} only, not to {m}")
    if args.lam is not None and m in ("wiener", "rl"):
        raise ValueError(f"--lam does not apply to {m}" + (" (use --balance)" if m == "wiener" else ""))
    if args.balance is not None and m != "wiener":
        raise ValueError(f"--balance applies to wiener only, not to {m}")
    if args.tv_channels is not None and m != "admm-tv":
        raise ValueError(f"--tv-channels applies to admm-tv only, not to {m}")
    if args.tv_channels is not None and args.luminance:
        raise ValueError("--tv-channels applies to the colour channels; --luminance deblurs one (luma) channel")
    if args.lam is not None:
        if m == "inverse" and args.lam < 0:
            raise ValueError(f"--lam (eps of inverse) must be non-negative, got {args.lam!r}")
        if m != "inverse" and args.lam <= 0:
            raise ValueError(f"--lam must be positive, got {args.lam!r}")
        from .restoration import RL_TV_MAX_WEIGHT  # noqa: PLC0415

        if m == "rl-tv" and args.lam >= RL_TV_MAX_WEIGHT:
            raise ValueError(f"--lam of rl-tv must be below {RL_TV_MAX_WEIGHT:g} (the iteration blows up), got "
                             f"{args.lam!r}; use --method admm-tv for strong regularization")
    if args.balance is not None and args.balance <= 0:
        raise ValueError(f"--balance must be positive, got {args.balance!r}")
    if args.compression_noise is not None:
        if m not in _COMPRESSION_NOISE_METHODS:
            why = f"not to {m}"
        elif m == "admm-tv" and args.lam is not None:
            why = "--lam was given"
        elif m == "wiener" and args.balance is not None:
            why = "--balance was given"
        else:
            why = None
        if why is not None:
            raise ValueError(f"--compression-noise applies to admm-tv's default --lam and wiener's estimated --balance "
                             f"only ({why})")
    kw = {}
    if m == "wiener":
        fn = r.wiener
        if args.balance is not None:
            kw["balance"] = args.balance
    elif m == "inverse":
        fn = r.inverse_filter
        if args.lam is not None:
            kw["eps"] = args.lam
    elif m == "tikhonov":
        fn = r.tikhonov
        if args.lam is not None:
            kw["lam"] = args.lam
    elif m == "rl":
        fn = r.richardson_lucy
    elif m == "rl-tv":
        fn = r.richardson_lucy_tv
        if args.lam is not None:
            kw["tv_weight"] = args.lam
    else:  # admm-tv
        fn = r.admm_tv
        if args.lam is not None:
            kw["lam"] = args.lam
        if args.tv_channels is not None:
            kw["tv_channels"] = args.tv_channels
    n = None
    if m in _ITERATIVE:
        n = args.iters if args.iters is not None else _default_iters(fn)
        kw["num_iter"] = n
    return fn, kw, n


def _run_deconv(args) -> int:
    from . import psf as psf_mod  # noqa: PLC0415
    from ._backend import get_backend  # noqa: PLC0415
    from .io import write_image  # noqa: PLC0415

    out = check_output_path(args.input, args.output, args.overwrite, kind="image")
    check_jpeg_quality_option(args, out)
    if args.bit_depth is not None:  # impossible depth for the format: fail before any work
        ext = os.path.splitext(out)[1].lower()
        if ext in (".jpg", ".jpeg") and args.bit_depth != 8:
            raise ValueError(f"JPEG stores 8-bit samples only, --bit-depth {args.bit_depth} requested")
        if ext == ".png" and args.bit_depth == 32:
            raise ValueError("PNG stores 8- or 16-bit integers only; --bit-depth 32 (float) needs .tif")
    fn, kw, n_iter = _deconv_call(args)
    image, meta = read_input(args.input)
    psf = psf_mod.from_spec(args.psf, image.shape)
    if args.luminance and image.ndim == 2:
        raise ValueError(f"--luminance applies to colour images; {args.input} is grey")
    if args.strip_metadata:
        meta = meta.stripped()
    chosen = "lam" if args.method == "admm-tv" else "balance"
    if (args.method in _COMPRESSION_NOISE_METHODS and chosen not in kw and args.compression_noise != "off"
            and meta.format == "jpeg"):
        v = jpeg_input_error(args.input, PROG)
        if v:  # 0: a lossless JPEG; None: no luminance component (measured noise only)
            kw["compression_noise"] = v
            if chosen == "lam":
                what, off = "the TV weight", "the measured noise only"
            else:
                from .restoration import JPEG_COLOUR_ERROR_FACTOR  # noqa: PLC0415

                colour = image.ndim == 3 and image.shape[2] >= 3 and not args.luminance
                what = ("the balance (predictive risk" + (f", x{JPEG_COLOUR_ERROR_FACTOR:g} in each colour channel"
                                                          if colour else "") + "; at least GCV's)")
                off = "generalized cross-validation"
            say(f"{PROG}: JPEG input: compression error ~{v:.2g} (variance) added to the measured noise for {what} "
                f"(--compression-noise off: {off})")
    be = get_backend(args.backend)
    t0 = time.perf_counter()
    common = dict(boundary=args.boundary, luminance=args.luminance, clip=True if args.clip else None, backend=be)
    if n_iter is not None:
        with progress(n_iter, args.method) as bar:
            result = fn(image, psf, callback=bar, **kw, **common)
    else:
        result = fn(image, psf, **kw, **common)
    be.synchronize()
    dt = time.perf_counter() - t0
    write_image(out, result, meta, overwrite=args.overwrite, bit_depth=args.bit_depth, jpeg_quality=args.jpeg_quality)
    it = f", {n_iter} iterations" if n_iter is not None else ""
    say(f"{PROG}: wrote {out} ({args.method}{it}, {be.name} backend, {dt:.2f} s)")
    return EXIT_OK


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------


def _dist_version(*names: str) -> str | None:
    for n in names:
        try:
            return f"{importlib.metadata.version(n)}" + (f" ({n})" if len(names) > 1 else "")
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def device_memory(be) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the current CUDA device, ``None`` on the CPU.

    Goes through ``be.xp`` (CuPy on the cuda backend): nothing here
    imports CuPy.
    """
    if be.name != "cuda":
        return None
    free, total = be.xp.cuda.runtime.memGetInfo()
    return int(free), int(total)


def _run_info(args) -> int:
    from . import __version__  # noqa: PLC0415
    from . import _backend  # noqa: PLC0415

    rows = [
        ("gpudeblur", f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})"),
        ("python", sys.version.split()[0]),
    ]
    for label, dists in [
        ("numpy", ("numpy",)),
        ("scipy", ("scipy",)),
        ("ducc0", ("ducc0",)),
        ("numba", ("numba",)),
        ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")),
        ("tifffile", ("tifffile",)),
        ("tqdm", ("tqdm",)),
        ("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")),
    ]:
        rows.append((label, _dist_version(*dists) or "not installed"))
    requested = args.backend or os.environ.get(ENV_VAR) or "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback reason is shown below instead
        be = _backend.get_backend(args.backend)
    how = "requested" if requested != "auto" else "chosen by auto"
    env = os.environ.get(ENV_VAR)
    rows.append(("backend", f"{be.name} ({how}; {ENV_VAR}={env if env else 'unset'})"))
    if be.name == "cpu":
        reason = _backend._probe_cupy()[1] if requested == "auto" else None
        if reason:
            rows.append(("cuda", f"unavailable: {reason}"))
        rows.append(("cpu workers", str(_backend._cpu_workers())))
        fft_env = os.environ.get(_backend.CPU_FFT_ENV_VAR)
        lib = "ducc0 (real; complex: scipy.fft)" if be.fft.__name__ == "gpudeblur._cpu_fft" else "scipy.fft"
        rows.append(("cpu fft", f"{lib} ({_backend.CPU_FFT_ENV_VAR}={fft_env if fft_env else 'unset'})"))
        rows.append(("malloc", _allocator.allocator_state()))
    rows.append(("device", be.device_name()))
    mem = device_memory(be)
    if mem is not None:
        free, total = mem
        rows.append(("memory", f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"))
    try:
        from ._kernels import kernel_source_dir, kernel_sources  # noqa: PLC0415

        rows.append(("kernels", f"{kernel_source_dir()} ({len(kernel_sources())} .cu files)"))
    except Exception as exc:  # informational only
        rows.append(("kernels", f"not found ({exc})"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return EXIT_OK


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------


def _run_demo(args) -> int:
    from .demo import run  # noqa: PLC0415

    run(out_dir=args.out, backend=args.backend, overwrite=args.overwrite, uniform=args.uniform)
    return EXIT_OK


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message).strip()
    if text.startswith(f"{PROG}: "):
        text = text[len(PROG) + 2 :]
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename and exc.strerror and not text.startswith(exc.strerror):
        text = f"{exc.strerror}: {exc.filename}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first


_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d)")  # "-1,3", "-.5,2", "-1e-3": a value, never an option
_ARGPARSE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # what argparse itself already takes for a number


def _join_negative_lists(argv: list[str]) -> list[str]:
    """``--opt -1,3`` -> ``--opt=-1,3``: argparse takes a token starting with
    ``-`` that is not a plain number (``-1``, ``-.5``) for an option, so a
    comma-separated list starting with a negative number, or a negative number
    in scientific notation (``-1e-3``), could only be given as ``--opt=VALUE``.
    Plain numbers are left alone (argparse takes them as values, or positionals)."""
    out: list[str] = []
    for tok in argv:
        if (out and _NEGATIVE_VALUE.match(tok) and not _ARGPARSE_NUMBER.match(tok)
                and out[-1].startswith("--") and "=" not in out[-1] and out[-1] != "--"):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 user error, 1 failure)."""
    global _quiet
    old_show = warnings.showwarning
    warnings.showwarning = _showwarning
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(_join_negative_lists(list(sys.argv[1:] if argv is None else argv)))
        except SystemExit as exc:  # --help, --version, argparse errors
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
        _quiet = bool(args.quiet)
        try:
            return int(args.func(args) or EXIT_OK)
        except (ValueError, OSError, BackendUnavailableError) as exc:
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except MemoryError as exc:  # also CuPy's OutOfMemoryError
            print(f"{PROG}: error: out of memory: {_one_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    finally:
        warnings.showwarning = old_show
        _quiet = False


def entry() -> int:
    """The ``gpudeblur`` command (and ``python -m gpudeblur``): :func:`main` in a process of
    its own, so glibc's malloc thresholds are raised and NumPy's huge-page advice is turned
    off first (gpudeblur/_allocator.py: large arrays reuse heap memory in 4 KiB pages;
    ``GPUDEBLUR_TUNE_MALLOC=0`` keeps the defaults).
    :func:`main` called from Python leaves the host program's allocator alone."""
    try:
        _allocator.tune_for_cli()
    except ValueError as exc:  # a bad GPUDEBLUR_TUNE_MALLOC: one line, exit 2, as for the other variables
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
