// Host build of kernels/deconv.cuh for tests/test_kernels.py: plain loops
// over the same __host__ __device__ functions the CUDA kernels call.
#include "deconv.cuh"

#define SHIM(T, S)                                                                                         \
    extern "C" void rl_ratio_##S(const T* y, const T* est, T* out, long long n, T eps) {                    \
        for (long long k = 0; k < n; ++k) out[k] = gd::rl_ratio(y[k], est[k], eps);                        \
    }                                                                                                      \
    extern "C" void rl_tv_update_##S(const T* x, const T* corr, T* out, int C, int M, int N, T lam, T eps) { \
        for (int c = 0; c < C; ++c)                                                                        \
            for (int i = 0; i < M; ++i)                                                                    \
                for (int j = 0; j < N; ++j) {                                                              \
                    long long off = (long long)c * M * N;                                                  \
                    out[off + i * N + j] = gd::rl_tv_update_at(x + off, corr + off, i, j, M, N, lam, eps); \
                }                                                                                          \
    }                                                                                                      \
    extern "C" void admm_tv_dual_##S(const T* x, T* ux, T* uy, T* wx, T* wy, int C, int M, int N, T t, int iso) { \
        for (int c = 0; c < C; ++c)                                                                        \
            for (int i = 0; i < M; ++i)                                                                    \
                for (int j = 0; j < N; ++j) {                                                              \
                    long long off = (long long)c * M * N;                                                  \
                    gd::admm_tv_dual_at(x + off, ux + off, uy + off, wx + off, wy + off, i, j, M, N, t, iso); \
                }                                                                                          \
    }                                                                                                      \
    extern "C" void admm_tv_dual_joint_##S(const T* x, T* ux, T* uy, T* wx, T* wy, int C, int M, int N, T t) { \
        for (int i = 0; i < M; ++i)                                                                        \
            for (int j = 0; j < N; ++j)                                                                    \
                gd::admm_tv_dual_joint_at(x, ux, uy, wx, wy, i, j, M, N, C, (long long)M * N, t);          \
    }                                                                                                      \
    extern "C" void admm_tv_rhs_##S(const T* b, const T* wx, const T* wy, T* out, int C, int M, int N, T rho) { \
        for (int c = 0; c < C; ++c)                                                                        \
            for (int i = 0; i < M; ++i)                                                                    \
                for (int j = 0; j < N; ++j) {                                                              \
                    long long off = (long long)c * M * N;                                                  \
                    out[off + i * N + j] = gd::admm_tv_rhs_at(b + off, wx + off, wy + off, i, j, M, N, rho); \
                }                                                                                          \
    }                                                                                                      \
    extern "C" void soft_threshold_##S(const T* v, T* out, long long n, T t) {                             \
        for (long long k = 0; k < n; ++k) out[k] = gd::soft_threshold(v[k], t);                            \
    }                                                                                                      \
    extern "C" void hard_threshold_##S(const T* v, T* out, long long n, T t) {                             \
        for (long long k = 0; k < n; ++k) out[k] = gd::hard_threshold(v[k], t);                            \
    }

SHIM(float, f32)
SHIM(double, f64)
