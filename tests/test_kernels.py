"""The CUDA kernel math (kernels/deconv.cuh), compiled for the host by nvcc,
equals the Numba twins (gpudeblur/_numba_kernels.py), and both equal plain
NumPy formulas. Also: every .cu compiles for sm_80/sm_90, and the CUDA
kernels themselves equal the twins when a GPU is present."""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from gpudeblur import _numba_kernels as nk
from gpudeblur._kernels import kernel_sources
from gpudeblur.operators import div, grad
from gpudeblur.solvers import hard_threshold, shrink_isotropic, soft_threshold

from conftest import KERNELS, build_host_shim, ptr, to_host

SUFFIX = {np.float32: "f32", np.float64: "f64"}
CT = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}
# float32: the host build may contract a*b+c into FMA where Numba does not
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _rand(rng, shape, dt, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(dt)


@pytest.fixture(scope="module")
def host(host_build_dir):
    return build_host_shim("deconv", host_build_dir)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_rl_ratio_host_vs_numba(host, dt):
    rng = np.random.default_rng(0)
    y = _rand(rng, (2, 17, 23), dt, 0, 1)
    est = _rand(rng, (2, 17, 23), dt, 0, 1)
    est.flat[::7] = 0  # exercise the filter
    a = np.empty_like(y)
    b = np.empty_like(y)
    getattr(host, f"rl_ratio_{SUFFIX[dt]}")(ptr(y), ptr(est), ptr(a), ctypes.c_longlong(y.size), CT[dt](1e-6))
    nk.rl_ratio(y, est, b, dt(1e-6))
    ref = np.where(est > 1e-6, y / np.where(est > 1e-6, est, 1), 0)
    err = np.abs(a - b).max()
    assert err <= TOL[dt] * np.abs(ref).max(), err
    np.testing.assert_allclose(b, ref, rtol=TOL[dt])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_rl_tv_update_host_vs_numba_vs_numpy(host, dt):
    rng = np.random.default_rng(1)
    C, M, N = 2, 13, 19
    x = _rand(rng, (C, M, N), dt, 0.1, 1)
    corr = _rand(rng, (C, M, N), dt, 0.5, 1.5)
    lam, eps = 0.01, 1e-3
    a = np.empty_like(x)
    b = np.empty_like(x)
    getattr(host, f"rl_tv_update_{SUFFIX[dt]}")(ptr(x), ptr(corr), ptr(a), C, M, N, CT[dt](lam), CT[dt](eps))
    nk.rl_tv_update(x, corr, b, dt(lam), dt(eps))
    # independent NumPy reference: div of the unit gradient (Neumann)
    x64 = x.astype(np.float64)
    gx, gy = grad(x64)
    n = np.sqrt(gx**2 + gy**2 + eps**2)
    d = div(gx / n, gy / n)
    ref = x64 * corr / np.maximum(1 - lam * d, 1e-3)
    assert np.abs(a - b).max() <= 4 * TOL[dt] * np.abs(ref).max()
    np.testing.assert_allclose(b, ref, rtol=20 * TOL[dt], atol=20 * TOL[dt])


@pytest.mark.parametrize("iso", [True, False])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_admm_tv_dual_and_rhs_host_vs_numba_vs_numpy(host, dt, iso):
    rng = np.random.default_rng(2)
    C, M, N = 3, 11, 16
    x = _rand(rng, (C, M, N), dt)
    ux0 = _rand(rng, (C, M, N), dt, -0.2, 0.2)
    uy0 = _rand(rng, (C, M, N), dt, -0.2, 0.2)
    t = 0.3
    outs = []
    for impl in ("host", "numba"):
        ux, uy = ux0.copy(), uy0.copy()
        wx, wy = np.empty_like(x), np.empty_like(x)
        if impl == "host":
            getattr(host, f"admm_tv_dual_{SUFFIX[dt]}")(ptr(x), ptr(ux), ptr(uy), ptr(wx), ptr(wy), C, M, N, CT[dt](t), int(iso))
        else:
            nk.admm_tv_dual(x, ux, uy, wx, wy, dt(t), iso)
        outs.append((ux, uy, wx, wy))
    for a, b in zip(*outs):
        assert np.abs(a - b).max() <= TOL[dt] * 4
    # NumPy reference
    gx, gy = grad(x.astype(np.float64), boundary="periodic")
    vx, vy = gx + ux0, gy + uy0
    if iso:
        zx, zy = shrink_isotropic(vx, vy, t)
    else:
        zx, zy = soft_threshold(vx, t), soft_threshold(vy, t)
    nx, ny = vx - zx, vy - zy
    for got, ref in zip(outs[1], (nx, ny, zx - nx, zy - ny)):
        np.testing.assert_allclose(got, ref, atol=10 * TOL[dt])
    # rhs = b + rho * D^T w, D^T = -div (periodic)
    bvec = _rand(rng, (C, M, N), dt)
    wx, wy = outs[1][2], outs[1][3]
    a, b = np.empty_like(x), np.empty_like(x)
    getattr(host, f"admm_tv_rhs_{SUFFIX[dt]}")(ptr(bvec), ptr(wx), ptr(wy), ptr(a), C, M, N, CT[dt](2.5))
    nk.admm_tv_rhs(bvec, wx, wy, b, dt(2.5))
    ref = bvec - 2.5 * div(wx.astype(np.float64), wy.astype(np.float64), boundary="periodic")
    assert np.abs(a - b).max() <= 10 * TOL[dt]
    np.testing.assert_allclose(b, ref, atol=20 * TOL[dt])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_thresholds_host_vs_numpy(host, dt):
    rng = np.random.default_rng(3)
    v = _rand(rng, (1000,), dt, -2, 2)
    a = np.empty_like(v)
    getattr(host, f"soft_threshold_{SUFFIX[dt]}")(ptr(v), ptr(a), ctypes.c_longlong(v.size), CT[dt](0.5))
    np.testing.assert_array_equal(a, soft_threshold(v, dt(0.5)))
    getattr(host, f"hard_threshold_{SUFFIX[dt]}")(ptr(v), ptr(a), ctypes.c_longlong(v.size), CT[dt](0.5))
    np.testing.assert_array_equal(a, hard_threshold(v, dt(0.5)))


def test_every_cu_compiles_for_sm80_sm90(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH: CUDA compile check not run")
    srcs = kernel_sources()
    assert srcs, "no kernels found"
    for src in srcs:
        for arch in ("sm_80", "sm_90"):
            res = subprocess.run(
                [nvcc, f"-arch={arch}", "-std=c++17", f"-I{KERNELS}", "-cubin", "-o", str(tmp_path / "k.cubin"), str(src)],
                capture_output=True,
                text=True,
            )
            assert res.returncode == 0, f"{src.name} ({arch}): {res.stderr}"


def test_module_sources_name_every_kernel_and_hash_the_headers(tmp_path, monkeypatch):
    """What ``cupy.RawModule`` compiles (``.ci/nvrtc_compile.py`` compiles the same with NVRTC):
    every ``__global__`` kernel of each ``.cu`` is a name expression for float and double, and an
    edited ``.cuh`` changes the code (CuPy's disk cache is keyed by code and options only)."""
    import re

    from gpudeblur import _kernels

    assert sorted(p.name for p in kernel_sources()) == sorted(_kernels.KERNEL_NAMES)
    for src in kernel_sources():
        code, options, names = _kernels.module_source(src.name)
        kernels = set(re.findall(r"^__global__ void (\w+)\(", src.read_text(), re.M))
        assert kernels == set(_kernels.KERNEL_NAMES[src.name])
        assert sorted(names) == sorted(f"{k}<{t}>" for k in kernels for t in ("float", "double"))
        assert options == ("-std=c++17", f"-I{KERNELS}") and code.startswith(src.read_text())
    copy = tmp_path / "kernels"
    shutil.copytree(KERNELS, copy)
    monkeypatch.setattr(_kernels, "kernel_source_dir", lambda: copy)
    before = _kernels.module_source("deconv.cu")[0]
    header = sorted(copy.glob("*.cuh"))[0]
    header.write_text(header.read_text() + "\n// edited\n")
    after = _kernels.module_source("deconv.cu")
    assert after[0] != before and after[1] == ("-std=c++17", f"-I{copy}")


@pytest.mark.parametrize("C", [1, 3, 4])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_admm_tv_dual_joint_host_vs_numba_vs_numpy(host, dt, C):
    """The joint (colour) shrinkage: host build of the header against the Numba twin, both against
    a float64 NumPy closed form, which is checked to minimize the prox objective per pixel;
    one channel gives the per-channel isotropic step's values exactly."""
    rng = np.random.default_rng(3)
    M, N = 11, 16
    x = _rand(rng, (C, M, N), dt)
    ux0 = _rand(rng, (C, M, N), dt, -0.2, 0.2)
    uy0 = _rand(rng, (C, M, N), dt, -0.2, 0.2)
    gx, gy = grad(x.astype(np.float64), boundary="periodic")
    vx, vy = gx + ux0, gy + uy0
    n = np.sqrt((vx**2 + vy**2).sum(axis=0))
    t = float(np.median(n))  # half the pixels shrink to zero
    outs = []
    for impl in ("host", "numba"):
        ux, uy = ux0.copy(), uy0.copy()
        wx, wy = np.empty_like(x), np.empty_like(x)
        if impl == "host":
            getattr(host, f"admm_tv_dual_joint_{SUFFIX[dt]}")(ptr(x), ptr(ux), ptr(uy), ptr(wx), ptr(wy), C, M, N,
                                                              CT[dt](t))
        else:
            nk.admm_tv_dual_joint(x, ux, uy, wx, wy, dt(t))
        outs.append((ux, uy, wx, wy))
    for a, b in zip(*outs):  # the same operations in the same order, in the arrays' dtype
        np.testing.assert_array_equal(a, b)
    s = np.where(n > t, (n - t) / np.where(n > 0, n, 1), 0.0)
    zx, zy = s * vx, s * vy
    assert 0.05 < (s == 0).mean() < 0.95  # both branches taken

    def objective(ax, ay):  # per pixel: ½‖z − v‖² + t‖z‖₂ over the 2C components
        return 0.5 * (((ax - vx) ** 2 + (ay - vy) ** 2).sum(axis=0)) + t * np.sqrt((ax**2 + ay**2).sum(axis=0))

    best = objective(zx, zy)
    for _ in range(20):
        dx, dy = (rng.normal(0, 0.05, vx.shape) for _ in range(2))
        assert np.all(objective(zx + dx, zy + dy) >= best - 1e-12)
    nx, ny = vx - zx, vy - zy
    for got, ref in zip(outs[1], (nx, ny, zx - nx, zy - ny)):
        np.testing.assert_allclose(got, ref, atol=10 * TOL[dt])
    if C == 1:  # one channel: the header's isotropic step, bit for bit
        ux, uy = ux0.copy(), uy0.copy()
        wx, wy = np.empty_like(x), np.empty_like(x)
        getattr(host, f"admm_tv_dual_{SUFFIX[dt]}")(ptr(x), ptr(ux), ptr(uy), ptr(wx), ptr(wy), C, M, N, CT[dt](t), 1)
        for got, ref in zip(outs[1], (ux, uy, wx, wy)):
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cuda_kernels_equal_numba_twins(backend, dt):
    if backend.name != "cuda":
        pytest.skip("compares the CUDA kernels with the Numba twins; needs a GPU")
    xp = backend.xp
    rng = np.random.default_rng(4)
    C, M, N = 2, 37, 45
    x = _rand(rng, (C, M, N), dt, 0.1, 1)
    corr = _rand(rng, (C, M, N), dt, 0.5, 1.5)
    k = backend.kernels
    out = xp.empty((C, M, N), dtype=dt)
    k.rl_tv_update(xp.asarray(x), xp.asarray(corr), out, 0.01, 1e-3)
    ref = np.empty_like(x)
    nk.rl_tv_update(x, corr, ref, dt(0.01), dt(1e-3))
    np.testing.assert_allclose(to_host(out), ref, rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    ux, uy = _rand(rng, (C, M, N), dt), _rand(rng, (C, M, N), dt)
    g = [xp.asarray(a) for a in (x, ux, uy)] + [xp.empty_like(out), xp.empty_like(out)]
    k.admm_tv_dual(*g, 0.2, True)
    wx, wy = np.empty_like(x), np.empty_like(x)
    nk.admm_tv_dual(x, ux, uy, wx, wy, dt(0.2), True)
    for a, b in zip(g[1:], (ux, uy, wx, wy)):
        np.testing.assert_allclose(to_host(a), b, atol=TOL[dt] * 10)
    x3 = _rand(rng, (3, M, N), dt, 0.1, 1)  # colour TV: three channels, the threshold at the median norm
    ux, uy = _rand(rng, (3, M, N), dt, -0.2, 0.2), _rand(rng, (3, M, N), dt, -0.2, 0.2)
    vx = np.roll(x3, -1, axis=2) - x3 + ux
    vy = np.roll(x3, -1, axis=1) - x3 + uy
    t = float(np.median(np.sqrt((vx.astype(np.float64) ** 2 + vy.astype(np.float64) ** 2).sum(0))))
    g = [xp.asarray(a) for a in (x3, ux, uy)] + [xp.empty_like(xp.asarray(x3)), xp.empty_like(xp.asarray(x3))]
    k.admm_tv_dual_joint(*g, t)
    wx, wy = np.empty_like(x3), np.empty_like(x3)
    nk.admm_tv_dual_joint(x3, ux, uy, wx, wy, dt(t))
    assert 0.3 < (to_host(g[3]) == -ux).mean() < 0.7  # z = 0 (w = −u) at about half the pixels
    for a, b in zip(g[1:], (ux, uy, wx, wy)):
        np.testing.assert_allclose(to_host(a), b, atol=TOL[dt] * 10)
