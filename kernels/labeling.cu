// CUDA kernels of the lifted primal-dual labeling solver
// (gpudeblur/blurmap/labeling.py). The math lives in labeling.cuh; these
// wrappers only map threads to pixels. Compiled by gpudeblur/_kernels.py
// through cupy.RawModule with name_expressions "name<float>"/"name<double>".
#include "labeling.cuh"

// u, G, ubar: (K, M, N) label-major; tau: (M, N) per-pixel primal step.
// One thread per pixel (npix = M * N).
template <typename T>
__global__ void lifted_primal_kernel(T* u, T* G, T* ubar, const T* tau, long long npix, int K) {
    long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; x < npix; x += stride) gd::lifted_primal_at(u + x, G + x, ubar + x, npix, K, tau[x]);
}

// grid: (ceil(N/32), ceil(M/8), K) with blocks (32, 8, 1).
template <typename T>
__global__ void lifted_dual_kernel(const T* ubar, T* p, const T* W, const T* delta, int K, int M, int N, int E,
                                   T sigma) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    int k = blockIdx.z;
    if (i >= M || j >= N || k >= K) return;
    gd::lifted_dual_at(ubar, p, W, delta, k, i, j, K, M, N, E, sigma);
}

// grid: (ceil(N/32), ceil(M/8)) with blocks (32, 8); one thread per pixel.
// The PAVA stacks live in scratch (block sums) and ubar (block sizes);
// prefetch: load the next label step's inputs ahead (same result).
template <typename T>
__global__ void lifted_primal_fused_kernel(T* u, T* ubar, T* scratch, const T* c, const T* p, const T* tau, T* lb,
                                           int K, int M, int N, int E, int prefetch) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    long long x = (long long)i * N + j;
    if (prefetch)
        gd::lifted_primal_fused_at<T, true>(u, ubar, c, p, i, j, K, M, N, E, tau[x], lb + x, scratch + x, ubar + x,
                                            (long long)M * N);
    else
        gd::lifted_primal_fused_at<T, false>(u, ubar, c, p, i, j, K, M, N, E, tau[x], lb + x, scratch + x, ubar + x,
                                             (long long)M * N);
}

#define GD_INSTANTIATE_LABELING(T)                                                                       \
    template __global__ void lifted_primal_kernel<T>(T*, T*, T*, const T*, long long, int);              \
    template __global__ void lifted_dual_kernel<T>(const T*, T*, const T*, const T*, int, int, int, int, T); \
    template __global__ void lifted_primal_fused_kernel<T>(T*, T*, T*, const T*, const T*, const T*, T*, int, int, \
                                                           int, int, int);
GD_INSTANTIATE_LABELING(float)
GD_INSTANTIATE_LABELING(double)
