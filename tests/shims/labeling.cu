// Host build of kernels/labeling.cuh for tests/test_labeling.py: a plain
// loop over pixels calling the same __host__ __device__ function as the
// CUDA kernel in kernels/labeling.cu.
#include "labeling.cuh"

#define SHIM(T, S)                                                                                   \
    extern "C" void lifted_primal_##S(T* u, T* G, T* ubar, const T* tau, long long npix, int K) {    \
        for (long long x = 0; x < npix; ++x) gd::lifted_primal_at(u + x, G + x, ubar + x, npix, K, tau[x]); \
    }

#define SHIM2(T, S)                                                                                  \
    extern "C" void lifted_dual_##S(const T* ubar, T* p, const T* W, const T* delta, int K, int M, int N, int E, \
                                    T sigma) {                                                       \
        for (int k = 0; k < K; ++k)                                                                  \
            for (int i = 0; i < M; ++i)                                                              \
                for (int j = 0; j < N; ++j) gd::lifted_dual_at(ubar, p, W, delta, k, i, j, K, M, N, E, sigma); \
    }                                                                                                \
    /* stack = 0: PAVA stacks in scratch / ubar (as the kernel); 1: a separate per-pixel buffer */    \
    /* `stack_buf` of 2 K values; prefetch as the kernel's flag */                                       \
    extern "C" void lifted_primal_fused_##S(T* u, T* ubar, T* scratch, const T* c, const T* p, const T* tau, \
                                            T* lb, int K, int M, int N, int E, int stack, T* stack_buf,  \
                                            int prefetch) {                                          \
        const long long plane = (long long)M * N;                                                    \
        for (int i = 0; i < M; ++i)                                                                  \
            for (int j = 0; j < N; ++j) {                                                            \
                const long long x = (long long)i * N + j;                                            \
                T* ss = stack ? stack_buf : scratch + x;                                             \
                T* sw = stack ? stack_buf + K : ubar + x;                                            \
                const long long st = stack ? 1LL : plane;                                            \
                if (prefetch)                                                                        \
                    gd::lifted_primal_fused_at<T, true>(u, ubar, c, p, i, j, K, M, N, E, tau[x], lb + x, ss, sw, st); \
                else                                                                                 \
                    gd::lifted_primal_fused_at<T, false>(u, ubar, c, p, i, j, K, M, N, E, tau[x], lb + x, ss, sw, st); \
            }                                                                                        \
    }

SHIM(float, f32)
SHIM(double, f64)
SHIM2(float, f32)
SHIM2(double, f64)
