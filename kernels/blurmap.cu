// CUDA kernel of the defocus blur-map likelihood search
// (gpudeblur/blurmap/likelihood.py). The math lives in blurmap.cuh; this
// wrapper maps one thread to one pixel. Compiled by gpudeblur/_kernels.py
// through cupy.RawModule with name_expressions "name<float>" / "name<double>".
#include "blurmap.cuh"

// power: (F, P) filter-major Gabor response powers (coalesced per filter);
// lut_*: (K, F); outputs (3, P).
template <typename T>
__global__ void blurmap_search_kernel(const T* __restrict__ power, long long P, int F,
                                      const T* __restrict__ lut_val, const T* __restrict__ lut_d1,
                                      const T* __restrict__ lut_d2, const T* __restrict__ noise, int K,
                                      const T* __restrict__ starts, int nstarts, T lo, T hi, T step,
                                      int max_outer, int s_iters, int r_iters, T tol_r, T tol_s, T max_step,
                                      T s_floor, T merge_tol, T dup_tol, T* r_out, T* l_out, T* s_out) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    gd::BlurmapParams<T> prm;
    prm.lut_val = lut_val;
    prm.lut_d1 = lut_d1;
    prm.lut_d2 = lut_d2;
    prm.noise = noise;
    prm.starts = starts;
    prm.F = F;
    prm.K = K;
    prm.nstarts = nstarts;
    prm.lo = lo;
    prm.hi = hi;
    prm.step = step;
    prm.max_outer = max_outer;
    prm.s_iters = s_iters;
    prm.r_iters = r_iters;
    prm.tol_r = tol_r;
    prm.tol_s = tol_s;
    prm.max_step = max_step;
    prm.s_floor = s_floor;
    prm.merge_tol = merge_tol;
    prm.dup_tol = dup_tol;
    T cr[3], cl[3], cs[3];
    gd::blurmap_search_pixel(power + p, P, prm, cr, cl, cs);
    for (int j = 0; j < 3; ++j) {
        r_out[j * P + p] = cr[j];
        l_out[j * P + p] = cl[j];
        s_out[j * P + p] = cs[j];
    }
}

// Explicit instantiations so that a plain `nvcc -cubin` build compiles real
// code; NVRTC builds the same through name_expressions.
#define GD_BLURMAP_INSTANTIATE(T)                                                                             \
    template __global__ void blurmap_search_kernel<T>(const T*, long long, int, const T*, const T*, const T*, \
                                                      const T*, int, const T*, int, T, T, T, int, int, int, T, \
                                                      T, T, T, T, T, T*, T*, T*);
GD_BLURMAP_INSTANTIATE(float)
GD_BLURMAP_INSTANTIATE(double)
