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


def test_refuses_what_cupy_refuses_beyond_host_arrays():
    """Each case is refused by CuPy 14.2 (source cited in the stand-in) but NumPy takes it."""
    import operator

    import cupy as cp

    a = cp.asarray(np.arange(6, dtype=np.float32))
    n = cp.asarray(np.int64(3))
    with pytest.raises(TypeError, match="Unsupported type"):
        a + [1.0] * 6  # a list is no ufunc operand (core.pyx __array_ufunc__, _scalar.CScalar)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.where(a > 1, a, [0.0] * 6)
    with pytest.raises(TypeError, match="only cupy arrays"):
        cp.concatenate([a, [1.0]])
    with pytest.raises(TypeError, match="Implicit conversion"):
        cp.asarray([a.sum(), 1.0])  # numpy.array() meets the device 0-d array
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        a[1:3] = np.array([5.0, 6.0], np.float32)  # basic index: y.fill(value)
    with pytest.raises(TypeError):
        operator.index(n)  # cupy.ndarray has no __index__
    with pytest.raises(TypeError):
        range(n)
    with pytest.raises(AttributeError):
        a.flags.writeable  # noqa: B018  (CuPy's Flags: c_contiguous, f_contiguous, owndata)
    with pytest.raises(TypeError, match="casting"):
        a.astype(np.float64, casting="same_kind")
    with pytest.raises(ValueError, match="kind"):
        a.argsort(kind="quicksort")
    with pytest.raises(NotImplementedError):
        cp.maximum.accumulate(a)
    with pytest.raises(TypeError):
        np.add.reduce(a)  # CuPy's __array_ufunc__ serves __call__ only
    # and what CuPy takes
    assert a[:n].shape == (3,)  # slice bounds are int()-ed
    assert bool((a > np.array(2.0)).any())  # a 0-d NumPy array in a comparison: its item()
    b = a.copy()
    b[np.array([0, 1])] = np.array([5.0, 6.0])  # advanced index: the values are moved
    b[1:3] = np.array(7.0)  # a 0-d value fills
    assert b.get().tolist() == [5.0, 7.0, 7.0, 3.0, 4.0, 5.0]
    assert a.real is a and a.T is a
    assert cp.asarray([a.sum(), a.sum()]).shape == (2,)


def test_refuses_scatter_writes_that_race():
    """Repeated indices writing different values: CuPy's scatter keeps an arbitrary one (one
    thread per index), NumPy the last, so such code is not deterministic on a GPU."""
    import cupy as cp

    a = cp.zeros((4, 5), dtype=np.float32)
    idx = cp.asarray(np.array([1, 2, 1]))
    with pytest.raises(ValueError, match="same element"):
        a[idx] = cp.asarray(np.arange(15, dtype=np.float32).reshape(3, 5))
    with pytest.raises(ValueError, match="same element"):
        a[idx, 0] += cp.asarray(np.array([1.0, 2.0, 3.0], np.float32))  # no accumulation either
    with pytest.raises(ValueError, match="same element"):
        a[np.array([0, 0]), np.array([3, 3])] = np.array([1.0, 2.0])
    # what is deterministic passes: one value for every repeat, unique indices, masks
    a[idx] = 2.0
    a[idx, 1] = cp.asarray(np.array([4.0, 5.0, 4.0], np.float32))
    a[cp.asarray(np.array([0, 3])), :2] = cp.asarray(np.ones((2, 2), np.float32))
    a[a > 3] = cp.asarray(np.array([9.0], np.float32))
    with pytest.raises(ValueError, match="same element"):  # the sign of a zero is a different value
        a[cp.asarray(np.array([3, 3])), 4] = cp.asarray(np.array([0.0, -0.0], np.float32))
    a[cp.asarray(np.array([0, 1])), :] = cp.ones((1, 2, 5), dtype=np.float32)  # leading unit dims, as CuPy
    a[cp.asarray(np.array([0, -4])), 0] = cp.asarray(np.array([1.0, 1.0], np.float32))  # -4 is row 0
    with pytest.raises(ValueError, match="same element"):
        a[cp.asarray(np.array([0, -4])), 0] = cp.asarray(np.array([1.0, 2.0], np.float32))
    nan = cp.full((2,), np.nan, dtype=np.float32)
    a[cp.asarray(np.array([2, 2])), cp.asarray(np.array([4, 4]))] = nan
    got = cp.asnumpy(a)
    assert got[1, 1] == 1.0 and got[2, 0] == 2.0 and got[0, 0] == 1.0 and np.isnan(got[2, 4])


def test_fft_overwrite_x_destroys_the_input():
    """cupyx.scipy.fft with overwrite_x=True: C2C runs in place (the result is x), C2R lets cuFFT
    overwrite x; SciPy keeps x, so the stand-in writes it."""
    import cupy as cp
    import cupyx.scipy.fft as cfft

    x = cp.asarray(np.random.default_rng(0).random((8, 8)).astype(np.float32))
    spec = cfft.rfft2(x)
    y = cfft.irfft2(spec, s=(8, 8), overwrite_x=True)
    np.testing.assert_allclose(cp.asnumpy(y), cp.asnumpy(x), atol=1e-5)
    assert bool(cp.isnan(spec).all())
    z = cfft.fft2(x).astype(np.complex64)
    w = cfft.ifft2(z, overwrite_x=True)
    assert w is z
    spec = cfft.rfft2(x)
    keep = spec.copy()
    cfft.irfft2(spec, s=(8, 8))
    np.testing.assert_array_equal(cp.asnumpy(spec), cp.asnumpy(keep))


def test_kernel_launches_match_the_cuda_signature_and_layout():
    """CuPy packs a NumPy scalar by its size (an int64 for an ``int`` parameter shifts the rest),
    and a raw kernel reads the index ranges its scalars say: the stand-in's launches check both
    against kernels/*.cu, and that no output overlaps another array of a stencil kernel."""
    import cupy as cp

    from gpudeblur import _kernels
    from gpudeblur._backend import get_backend

    f = _kernels.cuda_function(get_backend("cuda"), "deconv.cu", "rl_tv_update_kernel", np.float32)
    x, c, o = (cp.zeros((2, 8, 16), dtype=np.float32) for _ in range(3))
    t = np.float32(0.1)
    good = (x, c, o, np.int32(8), np.int32(16), t, t)
    f((1, 1, 2), (32, 8, 1), good)
    with pytest.raises(TypeError, match=r"argument 3 \(int\) is a int64"):
        f((1, 1, 2), (32, 8, 1), (x, c, o, np.int64(8), np.int32(16), t, t))
    with pytest.raises(TypeError, match="takes 7 arguments"):
        f((1, 1, 2), (32, 8, 1), good[:-1])
    with pytest.raises(ValueError, match="grid z"):
        f((1, 1, 1), (32, 8, 1), good)
    with pytest.raises(ValueError, match="covers"):
        f((1, 1, 2), (8, 8, 1), good)
    with pytest.raises(ValueError, match="M, N"):
        f((1, 2, 2), (32, 8, 1), (x, c, o, np.int32(16), np.int32(8), t, t))  # M, N swapped
    with pytest.raises(ValueError, match="overlaps"):
        f((1, 1, 2), (32, 8, 1), (x, c, x, np.int32(8), np.int32(16), t, t))
    # the colour-TV step: one thread per pixel over the C planes (grid z 1), C among the scalars
    j = _kernels.cuda_function(get_backend("cuda"), "deconv.cu", "admm_tv_dual_joint_kernel", np.float32)
    arrays = tuple(cp.zeros((2, 8, 16), dtype=np.float32) for _ in range(5))
    j((1, 1, 1), (32, 8, 1), arrays + (np.int32(8), np.int32(16), np.int32(2), t))
    with pytest.raises(ValueError, match="grid z"):
        j((1, 1, 2), (32, 8, 1), arrays + (np.int32(8), np.int32(16), np.int32(2), t))
    with pytest.raises(ValueError, match="elements"):
        j((1, 1, 1), (32, 8, 1), arrays + (np.int32(8), np.int32(16), np.int32(3), t))
