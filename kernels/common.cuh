// Shared helpers for gpudeblur kernels.
//
// Everything here is __host__ __device__ so that the test suite can compile
// it with nvcc into a host library and compare it with the Numba twins
// (gpudeblur/_numba_kernels.py) on machines without a GPU.
#pragma once

#if defined(__CUDACC__)
#define GD_HD __host__ __device__ __forceinline__
#else
#define GD_HD inline
#endif

#ifndef __CUDACC_RTC__
#include <math.h>
#endif

namespace gd {

template <typename T> GD_HD T gd_sqrt(T x);
template <> GD_HD float gd_sqrt<float>(float x) { return sqrtf(x); }
template <> GD_HD double gd_sqrt<double>(double x) { return sqrt(x); }

template <typename T> GD_HD T gd_max(T a, T b) { return a > b ? a : b; }
template <typename T> GD_HD T gd_min(T a, T b) { return a < b ? a : b; }
template <typename T> GD_HD T gd_abs(T a) { return a < T(0) ? -a : a; }

// Soft threshold (prox of t*|v|).
template <typename T> GD_HD T soft_threshold(T v, T t) {
    T a = gd_abs(v) - t;
    return a > T(0) ? (v > T(0) ? a : -a) : T(0);
}

// Hard threshold (prox of t^2/2 * [v != 0]): keep v where |v| > t.
template <typename T> GD_HD T hard_threshold(T v, T t) {
    return gd_abs(v) > t ? v : T(0);
}

// Isotropic vector shrinkage (prox of t*||(vx, vy)||_2).
template <typename T> GD_HD void shrink_iso(T vx, T vy, T t, T* zx, T* zy) {
    T n = gd_sqrt(vx * vx + vy * vy);
    T s = n > t ? (n - t) / n : T(0);
    *zx = s * vx;
    *zy = s * vy;
}

// Periodic neighbour index.
GD_HD int wrap_next(int i, int n) { return i + 1 == n ? 0 : i + 1; }
GD_HD int wrap_prev(int i, int n) { return i == 0 ? n - 1 : i - 1; }

}  // namespace gd
