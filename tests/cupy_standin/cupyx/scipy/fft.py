import scipy.fft as _f
import cupy as _cp


def _mk(name):
    f = getattr(_f, name)

    def g(*args, **kw):
        if "workers" in kw:
            raise TypeError(f"[fakecupy] cupyx.scipy.fft.{name} has no 'workers' argument")
        if not isinstance(args[0], _cp.ndarray):
            raise TypeError(f"[fakecupy] cupyx.scipy.fft.{name}: expected a device array, got {type(args[0]).__name__}")
        args = _cp._unwrap(args, name)
        kw = {k: _cp._unwrap(v, name) for k, v in kw.items()}
        return _cp._wrap(f(*args, **kw))
    return g


for _n in ("fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn",
           "dct", "idct", "dctn", "idctn", "dst", "idst", "hfft", "ihfft", "fftshift", "ifftshift", "fftfreq", "rfftfreq",
           "next_fast_len"):
    globals()[_n] = _mk(_n) if _n not in ("fftfreq", "rfftfreq", "next_fast_len") else getattr(_f, _n)
