"""Write ``cupy_api.json``: the names (and keyword parameters, where Python can read them) of the
CuPy API that the stand-in offers, read from a real CuPy. Importing CuPy needs no GPU.

    python -m venv /tmp/cupyvenv && /tmp/cupyvenv/bin/pip install cupy-cuda13x numpy scipy
    /tmp/cupyvenv/bin/python tests/cupy_standin/make_api.py
"""
import inspect
import json
import os
import re
import sys

# the real CuPy, not the stand-in beside this script
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import cupy  # noqa: E402
import cupyx.scipy.fft  # noqa: E402
import cupyx.scipy.ndimage  # noqa: E402

assert not os.path.abspath(cupy.__file__).startswith(_HERE), "this needs a real CuPy"


def _doc_signature(obj):
    """The signature Cython embeds as the docstring's first line (``name(self, a, b=1, *c) -> T``;
    ufuncs: ``sqrt(x, /, out=None, \\*, casting=...)``), or None."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    line = doc.splitlines()[0] if doc else ""
    m = re.match(r"^[\w.]+(\(.*\))(\s*->.*)?$", line)
    if not m:
        return None
    scope = {}
    try:
        exec(f"def _f{m.group(1).replace(chr(92), '')}: pass", {}, scope)  # noqa: S102 (CuPy's own docstrings)
    except SyntaxError:
        return None
    return inspect.signature(scope["_f"])


def _params(obj):
    """``{"kw": names a call may pass by keyword (None: any, it takes **kwargs), "pos": how many
    positional arguments it takes (None: any number)}`` (``self`` not counted), or None where
    the signature cannot be read."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = _doc_signature(obj)
        if sig is None:
            return None
    ps = [p for p in sig.parameters.values() if p.name != "self"]
    kw = None if any(p.kind == p.VAR_KEYWORD for p in ps) else \
        [p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    pos = None if any(p.kind == p.VAR_POSITIONAL for p in ps) else \
        sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in ps)
    return {"kw": kw, "pos": pos}


def _module(mod):
    return {n: (_params(getattr(mod, n)) if callable(getattr(mod, n)) else None)
            for n in sorted(dir(mod)) if not n.startswith("_")}


api = {
    "cupy_version": cupy.__version__,
    "modules": {name: _module(mod) for name, mod in (("cupy", cupy), ("cupyx.scipy.ndimage", cupyx.scipy.ndimage),
                                                      ("cupyx.scipy.fft", cupyx.scipy.fft))},
    "ndarray": {n: (_params(getattr(cupy.ndarray, n)) if callable(getattr(cupy.ndarray, n)) else None)
                for n in sorted(dir(cupy.ndarray)) if not n.startswith("_")},
}
out = os.path.join(_HERE, "cupy_api.json")
with open(out, "w") as f:
    json.dump(api, f, indent=0, sort_keys=True)
    f.write("\n")
print(f"wrote {out}: CuPy {cupy.__version__}, " + ", ".join(f"{k} {len(v)}" for k, v in api["modules"].items())
      + f", ndarray {len(api['ndarray'])}")
