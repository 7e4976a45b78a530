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

Beyond host arrays, it refuses what CuPy 14.2 refuses and NumPy takes (sources in each rule):
lists/tuples/other objects as ufunc operands (a 0-d NumPy array is taken by comparisons only,
as its item()), non-__call__ ufunc methods through NumPy and the ufunc methods CuPy lacks,
joins (concatenate, stack) of anything but device arrays, ``asarray`` of a sequence mixing
device arrays with other items, a non-0-d host value assigned through a basic index (CuPy's
``fill`` refuses it; an advanced index moves it), ``__index__`` (CuPy's ndarray has none:
``range(n)``, ``list[n]``; slice bounds are int()-ed as CuPy does), NumPy-only ``flags``
fields, ``astype(casting=/subok=)``, sort kinds other than 'stable', ``interp`` of a
non-contiguous x, ``searchsorted`` of a NumPy scalar. Differences left: out-of-bounds
integer-array indices raise here (CuPy wraps them), duplicate scatter indices keep NumPy's
last value (CuPy: undefined), argsort/sort default kinds follow NumPy (CuPy: always stable;
here code that needs stability gets a false alarm at most).
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


def _slice_bound(b):
    return int(b) if isinstance(b, ndarray) else b


def _key(key):
    """An index as CuPy reads it: device arrays unwrapped, NumPy/list indices allowed (moved to the
    device there), slice bounds that are device 0-d arrays int()-ed (a sync)."""
    def one(k):
        if isinstance(k, slice):
            return slice(_slice_bound(k.start), _slice_bound(k.stop), _slice_bound(k.step))
        return _unwrap(k, "index", allow_host=True)
    return tuple(one(k) for k in key) if isinstance(key, tuple) else one(key)


def _advanced(key):
    """CuPy's _prepare_slice_list: an array, list, tuple or bool among the indices is advanced."""
    for k in (key if isinstance(key, tuple) else (key,)):
        if isinstance(k, (ndarray, _np.ndarray, list, tuple, bool, _np.bool_)):
            return True
    return False


def _same_values(x, y):
    """Element-wise: would storing x or y leave the same bits? NaN equals NaN; 0.0 and -0.0
    differ; a complex value's parts are compared apart."""
    if x.dtype.kind == "c":
        return _same_values(x.real, y.real) & _same_values(x.imag, y.imag)
    if x.dtype.kind == "f":
        return ((x == y) & (_np.signbit(x) == _np.signbit(y))) | (_np.isnan(x) & _np.isnan(y))
    return x == y


def _check_scatter(a, key, value):
    """Refuse an advanced-index assignment that writes different values to one element. NumPy
    keeps the last; CuPy's scatter (``_scatter_op``, one thread per index) leaves whichever
    thread wrote last, which varies from run to run. ``a[idx] += v`` with repeated indices is
    this case too (it is ``a[idx] = a[idx] + v``, and neither library accumulates)."""
    parts = key if isinstance(key, tuple) else (key,)
    if not any(isinstance(k, (list, tuple)) or (isinstance(k, _np.ndarray) and k.dtype.kind in "iu")
               for k in parts):
        return  # slices and masks name each element once
    flat = _np.arange(a.size).reshape(a.shape)[key]
    if flat.size < 2:
        return
    vals = _np.empty(flat.shape, a.dtype)
    vals[...] = value  # assignment's own broadcasting and casting (leading unit dimensions dropped)
    order = _np.argsort(flat, axis=None, kind="stable")
    f, w = flat.ravel()[order], vals.ravel()[order]
    same = f[1:] == f[:-1]
    if same.any():
        differ = ~_same_values(w[:-1][same], w[1:][same])
        if differ.any():
            raise ValueError("[cupy stand-in] an index assignment writes different values to the same "
                             f"element ({int(differ.sum())} repeated targets): CuPy keeps an arbitrary "
                             "one (NumPy the last); use unique indices, or cupyx.scatter_add to sum")


class _Flags:
    """CuPy's ndarray.flags (cupy/_core/flags.pyx): c_contiguous, f_contiguous, owndata (and
    fnc, forc); ``flags['C_CONTIGUOUS']``, ``['F_CONTIGUOUS']``, ``['OWNDATA']``; nothing else
    (no writeable, aligned)."""

    def __init__(self, f):
        self.c_contiguous, self.f_contiguous, self.owndata = f.c_contiguous, f.f_contiguous, f.owndata
        self.fnc = self.f_contiguous and not self.c_contiguous
        self.forc = self.f_contiguous or self.c_contiguous

    def __getitem__(self, name):
        keys = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous", "OWNDATA": "owndata"}
        if name not in keys:
            raise KeyError(f"{name} is not defined for cupy.ndarray.flags")
        return getattr(self, keys[name])


def _reject_host(obj, what):
    if isinstance(obj, _np.ndarray):
        raise TypeError(f"[cupy stand-in] {what}: unsupported type numpy.ndarray (shape {obj.shape}) mixed with device arrays")


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


_PY_SCALARS = (int, float, complex, bool)
_COMPARE = {"greater", "greater_equal", "less", "less_equal", "equal", "not_equal"}


def _ufunc_operand(x, name):
    """An operand CuPy's ufuncs take (core.pyx ``__array_ufunc__``, ``_kernel._preprocess_arg``:
    a device array, a Python scalar of an exact scalar type, a NumPy scalar); a NumPy array is
    refused (0-d: taken as its ``item()`` by the comparisons only), and so is anything else (a
    list or tuple: ``CScalar`` raises 'Unsupported type')."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        if x.ndim == 0 and name in _COMPARE:
            return x.item()
        _reject_host(x, f"ufunc {name}")
    if type(x) in _PY_SCALARS or (isinstance(x, _np.generic) and x.dtype.kind in "biufc"):
        return x
    raise TypeError(f"[cupy stand-in] ufunc {name}: Unsupported type {type(x)} (CuPy takes device arrays and scalars)")


_REDUCE = {"sum", "max", "min", "mean", "any", "all", "prod", "std", "var", "argmax", "argmin", "trace", "dot"}


def _check_method(name, args, kw):
    """Arguments CuPy's ndarray methods take by name but refuse (core.pyx)."""
    if name == "astype":
        if kw.get("casting") is not None or len(args) > 2 and args[2] is not None:
            raise TypeError("[cupy stand-in] casting is not supported yet (cupy.ndarray.astype)")
        if kw.get("subok") is not None or len(args) > 3 and args[3] is not None:
            raise TypeError("[cupy stand-in] subok is not supported yet (cupy.ndarray.astype)")
    if name in ("sort", "argsort"):
        kind = kw.get("kind", args[1] if len(args) > 1 else None)
        if kind not in (None, "stable"):
            raise ValueError("[cupy stand-in] kind can only be None or 'stable'")
    if name == "fill":
        v = kw.get("value", args[0] if args else None)
        if isinstance(v, _np.ndarray) and v.ndim:
            raise ValueError("[cupy stand-in] non-scalar numpy.ndarray cannot be used for fill")


class ndarray(_Mixin):
    __array_priority__ = 100

    def __init__(self, a):
        assert isinstance(a, _np.ndarray)
        self._a = a

    # -- host conversion -------------------------------------------------
    def __array__(self, *a, **k):
        raise TypeError("[cupy stand-in] Implicit conversion to a NumPy array is not allowed. Please use `.get()`")

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

    # no __index__: CuPy's ndarray has none (range(n), list[n], operator.index(n), np.zeros(n) of a
    # device 0-d n raise TypeError there); slice bounds are int()-ed (internal.complete_slice)

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
        for i in range(self._a.shape[0]):
            yield ndarray(self._a[i, ...])  # a view (0-d for a 1-D array), as CuPy's self[i]

    def __format__(self, spec):
        _log("format", f"format() of a device array ({spec!r})")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        return "standin." + repr(self._a)

    __hash__ = None

    # -- attributes ----------------------------------------------------
    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    itemsize = property(lambda s: s._a.itemsize)
    nbytes = property(lambda s: s._a.nbytes)
    strides = property(lambda s: s._a.strides)
    flags = property(lambda s: _Flags(s._a.flags))
    device = property(lambda s: _Dev())
    T = property(lambda s: s if s._a.ndim < 2 else ndarray(s._a.T))  # CuPy: self below 2-D
    real = property(lambda s: s if s._a.dtype.kind != "c" else ndarray(s._a.real))  # CuPy: self if real
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
            _check_method(name, args, kw)
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
        return _wrap(self._a[_key(key)])

    def __setitem__(self, key, value):
        if not isinstance(value, ndarray) and not _advanced(key):
            # CuPy (_routines_indexing._scatter_op): a basic index with a non-device value is
            # y.fill(value), which refuses a non-0-d NumPy array (and a list: it becomes one)
            if isinstance(value, (list, tuple)) or (isinstance(value, _np.ndarray) and value.ndim):
                raise ValueError("[cupy stand-in] non-scalar numpy.ndarray cannot be used for fill "
                                 "(a host array assigned through a basic index: cupy.asarray it first)")
        if isinstance(value, _np.ndarray):
            _log("host-set", f"NumPy array (shape {value.shape}) assigned into a device array")
        k, v = _key(key), _unwrap(value, "setitem", allow_host=True)
        if _advanced(key):
            _check_scatter(self._a, k, v)
        self._a[k] = v

    # -- NumPy protocols -----------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        if method != "__call__":
            # CuPy's __array_ufunc__ handles calls only (np.add.reduce(dev) etc. -> TypeError)
            return NotImplemented
        ins = tuple(_weak(_ufunc_operand(i, ufunc.__name__)) for i in inputs)
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
            raise TypeError("[cupy stand-in] " + msg)
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
            return _wrap(self._uf(*[_weak(_ufunc_operand(a, self.__name__)) for a in args], **kw))
        return self._uf(*args, **kw)

    # CuPy's ufunc methods (_kernel.pyx): reduce/accumulate for add and multiply only,
    # reduceat for add only, at for the scatter ops, outer moves its operands (core.array)
    _SCATTER = {"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"}

    def _only(self, method, names):
        if self.__name__ not in names:
            raise NotImplementedError(f"[cupy stand-in] `{self.__name__}.{method}` is not supported yet (CuPy)")

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        self._only("reduce", ("add", "multiply"))
        f = array.sum if self.__name__ == "add" else array.prod
        return f(axis, dtype, out, keepdims)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        self._only("accumulate", ("add", "multiply"))
        f = array.cumsum if self.__name__ == "add" else array.cumprod
        return f(axis, dtype, out)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        self._only("reduceat", ("add",))
        return _wrap(self._uf.reduceat(array._a, _unwrap(indices, "reduceat"), axis, dtype,
                                       None if out is None else out._a))

    def at(self, a, indices, b=None):
        self._only("at", self._SCATTER)
        if not isinstance(a, ndarray):
            raise AttributeError(f"[cupy stand-in] {type(a).__name__} has no attribute '_scatter_op'")
        self._uf.at(a._a, _key(indices), _unwrap(b, "at", allow_host=True))

    def outer(self, A, B, **kw):
        A = A if isinstance(A, ndarray) else ndarray(_np.array(A))
        B = B if isinstance(B, ndarray) else ndarray(_np.array(B))
        return self(A.reshape(A.shape + (1,) * B.ndim), B.reshape((1,) * A.ndim + B.shape), **kw)

    def __getattr__(self, name):
        return getattr(self._uf, name)


_TRANSFER = {"asarray", "array", "asanyarray"}


def _leaves(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _leaves(o)
    else:
        yield obj


def _arg(args, kw, i, key, default=None):
    return args[i] if len(args) > i else kw.get(key, default)


def _check_fn(name, args, kw):
    """What CuPy's functions refuse that NumPy takes (sources cited per rule)."""
    if name in ("concatenate", "stack") and args:
        # _routines_manipulation.concatenate_method: 'Only cupy arrays can be concatenated';
        # stack: cupy.expand_dims(x) of each, which takes ndarrays only
        for x in args[0]:
            if not isinstance(x, ndarray):
                raise TypeError(f"[cupy stand-in] cupy.{name}: only cupy arrays can be joined, got {type(x).__name__}")
    if name == "where":
        cond = _arg(args, kw, 0, "condition")
        if isinstance(cond, _np.ndarray):
            _reject_host(cond, "cupy.where")  # astype works on it, the ufunc refuses it
        if (_arg(args, kw, 1, "x") is not None) and not isinstance(cond, ndarray):
            # _sorting/search.py: _where_ufunc(condition.astype('?', copy=False), x, y)
            raise AttributeError(f"[cupy stand-in] cupy.where: {type(cond).__name__} condition has no astype")
        for v in (_arg(args, kw, 1, "x"), _arg(args, kw, 2, "y")):
            if v is not None:
                _ufunc_operand(v, "where")
    if name in _TRANSFER and args and isinstance(args[0], (list, tuple)):
        # core.array: a sequence holding device arrays is joined only when every leaf is a device
        # array of one shape; otherwise numpy.array(obj) meets a device array: TypeError
        leaves = list(_leaves(args[0]))
        if any(isinstance(x, ndarray) for x in leaves):
            if not all(isinstance(x, ndarray) for x in leaves) or len({x.shape for x in leaves}) > 1:
                raise TypeError("[cupy stand-in] Implicit conversion to a NumPy array is not allowed "
                                f"(cupy.{name} of a sequence mixing device arrays with other items or shapes)")
    if name == "interp":
        x, xp_, fp = (_arg(args, kw, i, k) for i, k in enumerate(("x", "xp", "fp")))
        if xp_.ndim != 1 or fp.ndim != 1:
            raise ValueError("[cupy stand-in] xp and fp must be 1D arrays")
        if not x.flags.c_contiguous:  # _math/misc.py
            raise NotImplementedError("[cupy stand-in] Non-C-contiguous x is currently not supported (cupy.interp)")
    if name == "searchsorted":
        a, v = _arg(args, kw, 0, "a"), _arg(args, kw, 1, "v")
        if not isinstance(a, ndarray):  # _sorting/search.py _searchsorted
            raise NotImplementedError("[cupy stand-in] Only int or ndarray are supported for a")
        if not isinstance(v, (ndarray, int, float, complex)):
            raise NotImplementedError("[cupy stand-in] Only python scalars or ndarrays are supported for v")
    if name in ("sort", "argsort"):
        if _arg(args, kw, 2, "kind") not in (None, "stable"):
            raise ValueError("[cupy stand-in] kind can only be None or 'stable'")


def _fn(name, f):
    def g(*args, **kw):
        check_call("cupy", name, args, kw)
        _check_fn(name, args, kw)
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
        raise RuntimeError("[cupy stand-in] RawModule: custom CUDA kernels cannot run here")


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
