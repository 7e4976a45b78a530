// CUDA kernels of the blind u-step (gpudeblur/blind.py); math in blind.cuh.
// Compiled by gpudeblur/_kernels.py through cupy.RawModule with
// name_expressions "name<float>" / "name<double>".
#include "blind.cuh"

// grid: (ceil(N/bx), ceil(M/by), C); x: (C, M, N); d, e: (9, C, M, N)
template <typename T>
__global__ void framelet_shrink_kernel(const T* x, T* d, T* e, int C, int M, int N, T t) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    long long off = (long long)blockIdx.z * M * N;
    gd::framelet_shrink_at(x + off, d, e, i, j, M, N, off, (long long)C * M * N, t);
}

template <typename T>
__global__ void framelet_adjoint_diff_kernel(const T* d, const T* e, T* out, int C, int M, int N) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    long long off = (long long)blockIdx.z * M * N;
    out[off + (long long)i * N + j] = gd::framelet_adjoint_diff_at(d, e, i, j, M, N, off, (long long)C * M * N);
}

#define GD_INSTANTIATE_BLIND(T)                                                                   \
    template __global__ void framelet_shrink_kernel<T>(const T*, T*, T*, int, int, int, T);       \
    template __global__ void framelet_adjoint_diff_kernel<T>(const T*, const T*, T*, int, int, int);
GD_INSTANTIATE_BLIND(float)
GD_INSTANTIATE_BLIND(double)
