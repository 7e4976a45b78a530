import scipy.ndimage as _nd
import cupy as _cp


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    _cp._check_name("cupyx.scipy.ndimage", name)
    f = getattr(_nd, name)

    def g(*args, **kw):
        _cp.check_call("cupyx.scipy.ndimage", name, args, kw)
        if not isinstance(args[0], _cp.ndarray):
            raise TypeError(f"[cupy stand-in] cupyx.scipy.ndimage.{name}: expected a device array")
        args = _cp._unwrap(args, name)
        kw = {k: _cp._unwrap(v, name) for k, v in kw.items()}
        return _cp._wrap(f(*args, **kw))
    return g
