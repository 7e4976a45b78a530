"""A strict stand-in for CuPy on the host (tests only: ``GPUDEBLUR_CUPY_STANDIN=1``, see
``tests/conftest.py``): "device" arrays wrap NumPy arrays and refuse implicit host conversion
(``np.asarray``, SciPy, OpenCV on them) and NumPy arrays mixed into device expressions, the
way CuPy does; NumPy functions called on them raise in strict mode (CuPy would dispatch
them, or fail where it has no such function), and what CuPy accepts but costs a transfer
or a sync (a NumPy index array, iteration, opt-in: every device-to-host sync) is logged.

It also holds calls to CuPy's API as read from a real CuPy (``cupy_api.json``, written by
``make_api.py``): a name CuPy lacks (in ``cupy``, ``cupyx.scipy.ndimage``,
``cupyx.scipy.fft`` or as an ``ndarray`` attribute) is an AttributeError, and a keyword a
CuPy function does not take is a TypeError, where Python can read its parameters (not for
ufuncs and most ``ndarray`` methods, which are compiled). Custom kernels run as their Numba
twins (``gpudeblur_shim.py``), and the arithmetic is NumPy's.
"""
import json as _json
import os as _os
import traceback as _tb

import numpy as _np
from numpy.lib.mixins import NDArrayOperatorsMixin as _Mixin

LOG = []
STRICT_NP_FUNCS = False  # raise instead of log for np.func(device array)
LOG_SYNCS = False  # opt-in: log device->host syncs (float/int/bool/item/tolist/get/asnumpy) with their gpudeblur line


_HERE = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))  # tests/cupy_standin
_PKG = _os.sep + "gpudeblur" + _os.sep

with open(_os.path.join(_HERE, "cupy_api.json")) as _f:
    API = _json.load(_f)
__version__ = API["cupy_version"] + "+standin"


def _check_name(module, name, where=None):
    """AttributeError for a name CuPy's ``module`` does not have."""
    names = API["ndarray"] if module == "cupy.ndarray" else API["modules"][module]
    if name not in names:
        raise AttributeError(f"[cupy stand-in] {module} has no attribute {name!r} (CuPy {API['cupy_version']})")


def check_call(module, name, args, kwargs):
    """TypeError for a call CuPy's ``module.name`` would refuse: a keyword it does not take, more
    positional arguments than it has (where its parameters are known)."""
    names = API["ndarray"] if module == "cupy.ndarray" else API["modules"][module]
    params = names.get(name)
    if params is None:
        return
    if params["kw"] is not None:
        for k in kwargs:
            if k not in params["kw"]:
                raise TypeError(f"[cupy stand-in] {module}.{name}() got an unexpected keyword argument {k!r} "
                                f"(CuPy {API['cupy_version']} takes {', '.join(params['kw'])})")
    if params["pos"] is not None and len(args) > params["pos"]:
        raise TypeError(f"[cupy stand-in] {module}.{name}() takes at most {params['pos']} positional "
                        f"arguments, got {len(args)}")


def _where():
    """``module.py:line`` of the innermost gpudeblur frame (the stand-in's own frames skipped)."""
    for fr in reversed(_tb.extract_stack()):
        if fr.filename.startswith(_HERE) or _PKG not in fr.filename:
            continue
        return f"{fr.filename.rsplit(_PKG, 1)[-1]}:{fr.lineno}"
    return "?"


def _log(kind, msg):
    LOG.append((kind, msg, _where()))


class _Dev:
    id = 0


def _reject_host(obj, what):
    if isinstance(obj, _np.ndarray):
        raise TypeError(f"[fakecupy] {what}: unsupported type numpy.ndarray (shape {obj.shape}) mixed with device arrays")


def _unwrap(obj, what, allow_host=False):
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, _np.ndarray):
        if not allow_host:
            _reject_host(obj, what)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, what, allow_host) for o in obj)
    return obj


def _wrap(obj, scalars=True):
    if isinstance(obj, _np.ndarray):
        return ndarray(obj)
    if scalars and isinstance(obj, _np.generic) and not isinstance(obj, (_np.str_, _np.bytes_)):
        return ndarray(_np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o, scalars) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o, scalars) for o in obj]
    return obj


def _weak(s):
    # CuPy 14 promotes as NumPy 2 does (NEP 50: cupy/cupy#8323, #8754): a Python scalar is weak,
    # a NumPy scalar is not (float32 array * np.float64(2) is float64), so the host's NumPy 2
    # rules are CuPy's and scalars pass unchanged (CuPy 13's value-based casting turned NumPy
    # scalars weak, which hid such upcasts)
    return s


_REDUCE = {"sum", "max", "min", "mean", "any", "all", "prod", "std", "var", "argmax", "argmin", "trace", "dot"}


class ndarray(_Mixin):
    __array_priority__ = 100

    def __init__(self, a):
        assert isinstance(a, _np.ndarray)
        self._a = a

    # -- host conversion -------------------------------------------------
    def __array__(self, *a, **k):
        raise TypeError("[fakecupy] Implicit conversion to a NumPy array is not allowed. Please use `.get()`")

    def get(self, *a, **k):
        if LOG_SYNCS:
            _log("sync", "get")
        return self._a.copy()

    def __float__(self):
        if LOG_SYNCS:
            _log("sync", "__float__")
        return float(self._a)

    def __int__(self):
        if LOG_SYNCS:
            _log("sync", "__int__")
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        _log("index", "device array used as an index (__index__)")
        return self._a.__index__()

    def __bool__(self):
        if LOG_SYNCS:
            _log("sync", "__bool__")
        return bool(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        # CuPy: ``(self[i] for i in range(len))``, views with no sync; a 0-d array refuses iteration
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        if self._a.ndim == 1:
            _log("iter", "iteration over a 1-D device array (0-d device items; a sync if each is converted)")
        for v in self._a:
            yield _wrap(v)

    def __format__(self, spec):
        _log("format", f"format() of a device array ({spec!r})")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        return "fakecupy." + repr(self._a)

    __hash__ = None

    # -- attributes ----------------------------------------------------
    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    itemsize = property(lambda s: s._a.itemsize)
    nbytes = property(lambda s: s._a.nbytes)
    strides = property(lambda s: s._a.strides)
    flags = property(lambda s: s._a.flags)
    device = property(lambda s: _Dev())
    T = property(lambda s: ndarray(s._a.T))
    real = property(lambda s: ndarray(s._a.real))
    imag = property(lambda s: ndarray(s._a.imag))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        _check_name("cupy.ndarray", name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return attr

        def method(*args, **kw):
            check_call("cupy.ndarray", name, args, kw)
            args = _unwrap(args, f"ndarray.{name}")
            kw = {k: _unwrap(v, f"ndarray.{name}") for k, v in kw.items()}
            out = attr(*args, **kw)
            if name in ("item", "tolist"):
                if LOG_SYNCS:
                    _log("sync", name)
                return out
            return _wrap(out)
        return method

    def __getitem__(self, key):
        if isinstance(key, _np.ndarray) or (isinstance(key, tuple) and any(isinstance(k, _np.ndarray) for k in key)):
            _log("host-index", "NumPy array used to index a device array")
        return _wrap(self._a[_unwrap(key, "getitem", allow_host=True)])

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray):
            _log("host-set", f"NumPy array (shape {value.shape}) assigned into a device array")
        self._a[_unwrap(key, "setitem", allow_host=True)] = _unwrap(value, "setitem", allow_host=True)

    # -- NumPy protocols -----------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        ins = tuple(_weak(_unwrap(i, f"ufunc {ufunc.__name__}")) for i in inputs)
        outs = kw.get("out")
        if outs is not None:
            kw["out"] = tuple(_unwrap(o, f"ufunc {ufunc.__name__} out") for o in outs)
        res = getattr(ufunc, method)(*ins, **kw)
        if outs is not None:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(res)

    def __array_function__(self, func, types, args, kwargs):
        msg = f"np.{func.__name__} called on a device array (CuPy dispatches it to cupy.{func.__name__} if it exists)"
        if STRICT_NP_FUNCS:
            raise TypeError("[fakecupy] " + msg)
        _log("np-func", msg)
        args = _unwrap(args, f"np.{func.__name__}")
        kwargs = {k: _unwrap(v, f"np.{func.__name__}") for k, v in kwargs.items()}
        return _wrap(func(*args, **kwargs))


class _Ufunc:
    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__

    def __call__(self, *args, **kw):
        check_call("cupy", self.__name__, args, kw)
        if not any(isinstance(a, ndarray) for a in args):
            for a in args:
                _reject_host(a, f"cupy.{self.__name__}")
            return _wrap(self._uf(*[_weak(a) for a in args], **kw))
        return self._uf(*args, **kw)

    def __getattr__(self, name):
        return getattr(self._uf, name)


_TRANSFER = {"asarray", "array", "asanyarray"}


def _fn(name, f):
    def g(*args, **kw):
        check_call("cupy", name, args, kw)
        allow = name in _TRANSFER
        args = _unwrap(args, f"cupy.{name}", allow_host=allow)
        kw = {k: _unwrap(v, f"cupy.{name}", allow_host=allow) for k, v in kw.items()}
        if name in ("asarray", "array", "asanyarray", "ascontiguousarray"):
            out = _np.array(*args, **kw) if name == "array" else getattr(_np, name)(*args, **kw)
            if name != "array" and isinstance(args[0], _np.ndarray) and out is args[0]:
                out = out.copy()  # a transfer: the device copy is not the host array
            return ndarray(_np.asarray(out))
        return _wrap(f(*args, **kw))
    g.__name__ = name
    return g


def asnumpy(x, *a, **k):
    if LOG_SYNCS and isinstance(x, ndarray):
        _log("sync", "asnumpy")
    return x._a.copy() if isinstance(x, ndarray) else _np.asarray(x)


class _MemPool:
    def free_bytes(self):
        return 0

    def get_limit(self):
        return 0

    def total_bytes(self):
        return 0

    def used_bytes(self):
        return 0

    def free_all_blocks(self):
        pass

    def set_limit(self, **k):
        pass


_POOL = _MemPool()


def get_default_memory_pool():
    return _POOL


def get_default_pinned_memory_pool():
    return _POOL


def from_dlpack(x):
    return ndarray(_np.from_dlpack(x))


class RawModule:
    def __init__(self, *a, **k):
        raise RuntimeError("[fakecupy] RawModule: custom CUDA kernels cannot run here")


from . import cuda  # noqa: E402

_cache = {}


def __getattr__(name):
    if name in _cache:
        return _cache[name]
    if name.startswith("__"):
        raise AttributeError(name)
    _check_name("cupy", name)
    obj = getattr(_np, name)
    if isinstance(obj, _np.ufunc):
        out = _Ufunc(obj)
    elif callable(obj) and not isinstance(obj, type):
        out = _fn(name, obj)
    else:
        out = obj
    _cache[name] = out
    return out
