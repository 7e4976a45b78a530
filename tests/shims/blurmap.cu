// Host build of kernels/blurmap.cuh for tests/test_blurmap.py: a plain loop
// over pixels calling the same __host__ __device__ search the CUDA kernel
// (kernels/blurmap.cu) calls.
#include "blurmap.cuh"

#define SHIM(T, S)                                                                                              \
    extern "C" void blurmap_search_##S(const T* power, long long P, int F, const T* val, const T* d1, const T* d2, \
                                       const T* noise, int K, const T* starts, int nstarts, T lo, T hi, T step,     \
                                       int max_outer, int s_iters, int r_iters, T tol_r, T tol_s, T max_step,       \
                                       T s_floor, T merge_tol, T dup_tol, T* r_out, T* l_out, T* s_out) {           \
        gd::BlurmapParams<T> prm;                                                                               \
        prm.lut_val = val;                                                                                      \
        prm.lut_d1 = d1;                                                                                        \
        prm.lut_d2 = d2;                                                                                        \
        prm.noise = noise;                                                                                      \
        prm.starts = starts;                                                                                    \
        prm.F = F;                                                                                              \
        prm.K = K;                                                                                              \
        prm.nstarts = nstarts;                                                                                  \
        prm.lo = lo;                                                                                            \
        prm.hi = hi;                                                                                            \
        prm.step = step;                                                                                        \
        prm.max_outer = max_outer;                                                                              \
        prm.s_iters = s_iters;                                                                                  \
        prm.r_iters = r_iters;                                                                                  \
        prm.tol_r = tol_r;                                                                                      \
        prm.tol_s = tol_s;                                                                                      \
        prm.max_step = max_step;                                                                                \
        prm.s_floor = s_floor;                                                                                  \
        prm.merge_tol = merge_tol;                                                                              \
        prm.dup_tol = dup_tol;                                                                                  \
        for (long long p = 0; p < P; ++p) {                                                                     \
            T cr[3], cl[3], cs[3];                                                                              \
            gd::blurmap_search_pixel(power + p, P, prm, cr, cl, cs);                                            \
            for (int j = 0; j < 3; ++j) {                                                                       \
                r_out[j * P + p] = cr[j];                                                                       \
                l_out[j * P + p] = cl[j];                                                                       \
                s_out[j * P + p] = cs[j];                                                                       \
            }                                                                                                   \
        }                                                                                                       \
    }

SHIM(float, f32)
SHIM(double, f64)
