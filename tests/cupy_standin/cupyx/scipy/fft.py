import scipy.fft as _f
import cupy as _cp


_C2C = {"fft", "ifft", "fft2", "ifft2", "fftn", "ifftn"}
_C2R = {"irfft", "irfft2", "irfftn", "hfft"}
_OVERWRITE_POS = {"fft": 4, "ifft": 4, "rfft": 4, "irfft": 4, "hfft": 4, "ihfft": 4,
                  "fft2": 4, "ifft2": 4, "fftn": 4, "ifftn": 4, "rfft2": 4, "irfft2": 4, "rfftn": 4, "irfftn": 4}


def _destroy_input(name, x, out):
    """``overwrite_x=True``: "the contents of x can be destroyed" (cupy/fft/_fft.py). CuPy's
    complex-to-complex transforms then run in place (``out = a``: the result *is* x's memory when
    x is a contiguous complex array of its own), and its complex-to-real ones skip the copy that
    protects x from cuFFT, which overwrites it. SciPy leaves x as it was, so code reading x after
    such a call would pass here and read garbage on a GPU: x is written (C2C on a C-contiguous x:
    the result, returned as x; otherwise NaN; stricter than CuPy where CuPy happens to copy
    first, e.g. a view through the 1-D path, which the contract does not promise)."""
    a = x._a
    if a.dtype.kind != "c":
        return out  # CuPy converts a real input to complex first (a copy): x is untouched
    if (name in _C2C and a.flags.c_contiguous and isinstance(out, _cp.ndarray) and out.shape == a.shape
            and out.dtype == a.dtype):
        a[...] = out._a
        return x  # the result aliases the input, as CuPy's `out = a`
    a[...] = float("nan")
    return out


def _mk(name):
    f = getattr(_f, name)

    def g(*args, **kw):
        _cp.check_call("cupyx.scipy.fft", name, args, kw)
        if not isinstance(args[0], _cp.ndarray):
            raise TypeError(f"[cupy stand-in] cupyx.scipy.fft.{name}: expected a device array, got {type(args[0]).__name__}")
        x = args[0]
        pos = _OVERWRITE_POS.get(name)
        overwrite = kw.get("overwrite_x", args[pos] if pos is not None and len(args) > pos else False)
        args = _cp._unwrap(args, name)
        kw = {k: _cp._unwrap(v, name) for k, v in kw.items()}
        out = _cp._wrap(f(*args, **kw))
        if overwrite and (name in _C2C or name in _C2R):
            out = _destroy_input(name, x, out)
        return out
    return g


def _plain(name):
    """Functions of sizes, not arrays: ``next_fast_len`` gives an int, ``fftfreq``/``rfftfreq`` a
    device array (as CuPy's do)."""
    f = getattr(_f, name)

    def g(*args, **kw):
        _cp.check_call("cupyx.scipy.fft", name, args, kw)
        out = f(*args, **kw)
        return _cp._wrap(out) if name != "next_fast_len" else out
    return g


for _n in ("fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn",
           "dct", "idct", "dctn", "idctn", "dst", "idst", "hfft", "ihfft", "fftshift", "ifftshift", "fftfreq", "rfftfreq",
           "next_fast_len"):
    if _n in _cp.API["modules"]["cupyx.scipy.fft"]:  # only what CuPy has
        globals()[_n] = _mk(_n) if _n not in ("fftfreq", "rfftfreq", "next_fast_len") else _plain(_n)
