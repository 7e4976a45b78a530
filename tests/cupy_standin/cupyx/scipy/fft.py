import scipy.fft as _f
import cupy as _cp


def _mk(name):
    f = getattr(_f, name)

    def g(*args, **kw):
        _cp.check_call("cupyx.scipy.fft", name, args, kw)
        if not isinstance(args[0], _cp.ndarray):
            raise TypeError(f"[fakecupy] cupyx.scipy.fft.{name}: expected a device array, got {type(args[0]).__name__}")
        args = _cp._unwrap(args, name)
        kw = {k: _cp._unwrap(v, name) for k, v in kw.items()}
        return _cp._wrap(f(*args, **kw))
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
