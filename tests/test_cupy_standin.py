"""The CuPy stand-in itself (``GPUDEBLUR_CUPY_STANDIN=1``; skipped otherwise): it must refuse
what CuPy refuses, or the CI pass on it proves nothing."""

import numpy as np
import pytest

from conftest import CUPY_STANDIN

pytestmark = pytest.mark.skipif(not CUPY_STANDIN, reason="runs with GPUDEBLUR_CUPY_STANDIN=1 only")


def test_refuses_host_conversion_and_mixing():
    import cupy as cp
    import cupyx.scipy.ndimage as cnd
    from scipy import ndimage

    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        ndimage.uniform_filter(a, 3)
    with pytest.raises(TypeError):
        np.median(a)  # strict: a NumPy function on a device array
    with pytest.raises(TypeError, match="numpy.ndarray"):
        a + np.ones((2, 3))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        cp.maximum(a, np.ones((2, 3)))
    with pytest.raises(TypeError, match="device array"):
        cnd.uniform_filter(np.ones((4, 4)), 3)
    np.testing.assert_array_equal(cp.asnumpy(a + 1), np.arange(6.0).reshape(2, 3) + 1)
    assert isinstance(a.get(), np.ndarray) and float(a.sum()) == 15.0


def test_holds_calls_to_cupys_api():
    import cupy as cp
    import cupyx.scipy.fft as cfft
    import cupyx.scipy.ndimage as cnd

    a = cp.zeros((4, 4), dtype=np.float32)
    with pytest.raises(AttributeError, match="errstate"):
        cp.errstate  # noqa: B018  (NumPy has it, CuPy does not)
    with pytest.raises(TypeError, match="unexpected keyword argument 'workers'"):
        cfft.rfft2(a, workers=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        cnd.minimum_filter(a, size=3, bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        cp.quantile(a, 0.5, bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.sqrt(a, where=a > 0)  # NumPy's ufuncs take where=, CuPy's do not
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        a.astype(np.float64, bogus=True)
    with pytest.raises(TypeError, match="at most 3 positional"):
        cp.where(a > 0, a, a, a)
    assert float(cp.quantile(a, 0.5, method="linear")) == 0.0
    assert a.reshape(2, 8).shape == (2, 8) and a.transpose(1, 0).shape == (4, 4)
    assert isinstance(cfft.rfftfreq(8), cp.ndarray)  # a device array, as CuPy's
    assert cp.__version__.endswith("+standin")


def test_kernel_launches_are_typed_as_cupy_needs():
    """A raw kernel reads its arguments as the types it was compiled for: a float64 array or a
    Python float (CuPy passes it as a double) sent to a float32 kernel is garbage on a GPU,
    silently; the stand-in's launches refuse both."""
    import cupy as cp

    from gpudeblur import _kernels
    from gpudeblur._backend import get_backend

    kern = _kernels.cuda_function(get_backend("cuda"), "blurmap.cu", "blurmap_search_kernel", np.float32)
    with pytest.raises(TypeError, match="compiled for float32 got a float64 array"):
        kern((1,), (1,), (cp.zeros(4, dtype=np.float64), np.int64(4)))
    with pytest.raises(TypeError, match="argument 1 is a Python float"):
        kern((1,), (1,), (cp.zeros(4, dtype=np.float32), 0.5))
    with pytest.raises(TypeError, match="got a float64 scalar"):
        kern((1,), (1,), (cp.zeros(4, dtype=np.float32), np.float64(0.5)))
