// Per-element and per-pixel math of the deconvolution kernels.
//
// Arrays are channels-first, C-contiguous (C, M, N); a "plane" is one
// M x N channel. Each *_at function computes one output pixel and is
// called by the __global__ kernels in deconv.cu and by the host shim in the
// tests. The Numba twins in gpudeblur/_numba_kernels.py mirror them.
#pragma once
#include "common.cuh"

namespace gd {

// Richardson-Lucy ratio y / est, 0 where est <= eps (skimage filter_epsilon).
template <typename T> GD_HD T rl_ratio(T y, T est, T eps) {
    return est > eps ? y / est : T(0);
}

// Unit gradient (forward differences, Neumann boundary) of plane x at (i, j).
template <typename T>
GD_HD void unit_grad_at(const T* x, int i, int j, int M, int N, T eps, T* gx, T* gy) {
    T c = x[i * N + j];
    T dx = (j + 1 < N) ? x[i * N + j + 1] - c : T(0);
    T dy = (i + 1 < M) ? x[(i + 1) * N + j] - c : T(0);
    T n = gd_sqrt(dx * dx + dy * dy + eps * eps);
    *gx = dx / n;
    *gy = dy / n;
}

// RL-TV (Dey et al. 2006) multiplicative update of one pixel:
//   x_new = x * corr / (1 - lam * div(grad x / |grad x|)),
// divergence by backward differences (the negative adjoint of the forward
// gradient with Neumann boundary). The denominator is floored at 1e-3 so a
// large lam cannot flip the sign.
template <typename T>
GD_HD T rl_tv_update_at(const T* x, const T* corr, int i, int j, int M, int N, T lam, T eps) {
    T gx, gy, gxl = T(0), gyu = T(0), tmp;
    unit_grad_at(x, i, j, M, N, eps, &gx, &gy);
    if (j > 0) unit_grad_at(x, i, j - 1, M, N, eps, &gxl, &tmp);
    if (i > 0) unit_grad_at(x, i - 1, j, M, N, eps, &tmp, &gyu);
    // forward gradient is zero on the last column/row, so backward diff there
    T div = (j + 1 < N ? gx : T(0)) - gxl + (i + 1 < M ? gy : T(0)) - gyu;
    T den = gd_max(T(1) - lam * div, T(1e-3));
    int k = i * N + j;
    return x[k] * corr[k] / den;
}

// v = D x + u at index k of a plane (periodic forward differences: the
// right neighbour at kx, the one below at ky).
template <typename T>
GD_HD void tv_v_at(const T* x, const T* ux, const T* uy, long long k, long long kx, long long ky, T* vx, T* vy) {
    const T c = x[k];
    *vx = x[kx] - c + ux[k];
    *vy = x[ky] - c + uy[k];
}

// The ADMM-TV dual updates at index k from v and its shrinkage z:
// u <- v - z, w = z - u.
template <typename T>
GD_HD void tv_dual_store(T* ux, T* uy, T* wx, T* wy, long long k, T vx, T vy, T zx, T zy) {
    const T nx = vx - zx, ny = vy - zy;
    ux[k] = nx;
    uy[k] = ny;
    wx[k] = zx - nx;
    wy[k] = zy - ny;
}

// ADMM-TV dual step at one pixel (periodic forward differences on the grid):
//   v = D x + u;  z = shrink(v, t);  u <- v - z;  w = z - u
// iso != 0: isotropic (vector) shrinkage, else anisotropic (per component).
template <typename T>
GD_HD void admm_tv_dual_at(const T* x, T* ux, T* uy, T* wx, T* wy, int i, int j, int M, int N, T t, int iso) {
    const long long k = (long long)i * N + j;
    T vx, vy, zx, zy;
    tv_v_at(x, ux, uy, k, (long long)i * N + wrap_next(j, N), (long long)wrap_next(i, M) * N + j, &vx, &vy);
    if (iso) {
        shrink_iso(vx, vy, t, &zx, &zy);
    } else {
        zx = soft_threshold(vx, t);
        zy = soft_threshold(vy, t);
    }
    tv_dual_store(ux, uy, wx, wy, k, vx, vy, zx, zy);
}

// ADMM-TV dual step at one pixel of all C channels together (joint, or
// vectorial / colour TV: Blomgren & Chan 1998; Bresson & Chan 2008):
//   v_c = D x_c + u_c;  n = sqrt(sum_c |v_c|^2);  z_c = max(n - t, 0) / n * v_c
// (the prox of t * ||v||_2 over the pixel's 2C gradient components), then
// u_c <- v_c - z_c, w_c = z_c - u_c as in admm_tv_dual_at. Planes are
// `plane` apart. v is formed again in the second pass (no per-thread
// arrays); its values are the same. C = 1 gives admm_tv_dual_at's values.
template <typename T>
GD_HD void admm_tv_dual_joint_at(const T* x, T* ux, T* uy, T* wx, T* wy, int i, int j, int M, int N, int C,
                                 long long plane, T t) {
    const long long k = (long long)i * N + j;
    const long long kx = (long long)i * N + wrap_next(j, N);
    const long long ky = (long long)wrap_next(i, M) * N + j;
    T n2 = T(0), vx, vy;
    for (int c = 0; c < C; ++c) {
        const long long o = c * plane;
        tv_v_at(x, ux, uy, o + k, o + kx, o + ky, &vx, &vy);
        n2 += vx * vx + vy * vy;
    }
    const T n = gd_sqrt(n2);
    const T s = n > t ? (n - t) / n : T(0);
    for (int c = 0; c < C; ++c) {
        const long long o = c * plane;
        tv_v_at(x, ux, uy, o + k, o + kx, o + ky, &vx, &vy);
        tv_dual_store(ux, uy, wx, wy, o + k, vx, vy, s * vx, s * vy);
    }
}

// b + rho * D^T w at one pixel (periodic), D^T = negative backward divergence.
template <typename T>
GD_HD T admm_tv_rhs_at(const T* b, const T* wx, const T* wy, int i, int j, int M, int N, T rho) {
    int k = i * N + j;
    T dtw = wx[i * N + wrap_prev(j, N)] - wx[k] + wy[wrap_prev(i, M) * N + j] - wy[k];
    return b[k] + rho * dtw;
}

}  // namespace gd
