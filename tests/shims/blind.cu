// Host build of kernels/blind.cuh for tests/test_blind.py: plain loops over
// the same __host__ __device__ functions the CUDA kernels call.
#include "blind.cuh"

#define SHIM(T, S)                                                                                        \
    extern "C" void framelet_shrink_##S(const T* x, T* d, T* e, int C, int M, int N, T t) {              \
        long long bs = (long long)C * M * N;                                                              \
        for (int c = 0; c < C; ++c)                                                                       \
            for (int i = 0; i < M; ++i)                                                                   \
                for (int j = 0; j < N; ++j) {                                                             \
                    long long off = (long long)c * M * N;                                                 \
                    gd::framelet_shrink_at(x + off, d, e, i, j, M, N, off, bs, t);                        \
                }                                                                                         \
    }                                                                                                     \
    extern "C" void framelet_adjoint_diff_##S(const T* d, const T* e, T* out, int C, int M, int N) {     \
        long long bs = (long long)C * M * N;                                                              \
        for (int c = 0; c < C; ++c)                                                                       \
            for (int i = 0; i < M; ++i)                                                                   \
                for (int j = 0; j < N; ++j) {                                                             \
                    long long off = (long long)c * M * N;                                                 \
                    out[off + i * N + j] = gd::framelet_adjoint_diff_at(d, e, i, j, M, N, off, bs);       \
                }                                                                                         \
    }

SHIM(float, f32)
SHIM(double, f64)
