// Per-pixel math of the lifted primal-dual labeling solver
// (gpudeblur/blurmap/labeling.py, method 'primal-dual').
//
// The lifted primal variable of a pixel is the column u_k = [l >= k],
// k = 1..K (K = L - 1 labels steps), relaxed to
//     1 >= u_1 >= u_2 >= ... >= u_K >= 0.
// Arrays are label-major (K, M, N), C-contiguous: the K entries of one pixel
// are `stride` = M * N apart, so adjacent threads touch adjacent pixels.
// Called by the __global__ wrappers in labeling.cu and by the host shim in
// tests/shims/labeling.cu; the Numba twin is
// gpudeblur/blurmap/_numba_labeling.py (same math per element, but on
// pixel-major arrays (M, N, K), which suit one CPU thread per pixel).
#pragma once
#include "common.cuh"

namespace gd {

// Primal step of one pixel of the lifted labeling problem:
//     u_new = argmin_{v in C} ||v - (u - tau * G)||^2,
//     C = {1 >= v_1 >= ... >= v_K >= 0},
// i.e. the projection onto the monotone cone (pool-adjacent-violators,
// non-increasing isotonic regression, uniform weights) followed by a clip
// to [0, 1] (which keeps the result the projection onto C); then
//     ubar = 2 u_new - u_old   (over-relaxation of Chambolle-Pock).
// u is overwritten with u_new. G and ubar serve as scratch for the PAVA
// blocks (block sum in G[b], block size in ubar[b], b <= k: every entry is
// read before it is overwritten), so no per-thread arrays are needed and K
// is unbounded. Block sizes are stored as T (exact up to 2^24). Blocks keep
// sums, not means: a block merges into the one before it while
// mean_prev < mean, tested as sum_prev * w < sum * w_prev (sizes > 0), so
// the merge loop has no division (one per block at the end).
template <typename T>
GD_HD void lifted_primal_at(T* u, T* G, T* ubar, long long stride, int K, T tau) {
    int nb = 0;
    for (int k = 0; k < K; ++k) {
        T val = u[k * stride] - tau * G[k * stride];
        T w = T(1);
        while (nb > 0 && G[(long long)(nb - 1) * stride] * w < val * ubar[(long long)(nb - 1) * stride]) {
            val += G[(long long)(nb - 1) * stride];
            w += ubar[(long long)(nb - 1) * stride];
            --nb;
        }
        G[(long long)nb * stride] = val;
        ubar[(long long)nb * stride] = w;
        ++nb;
    }
    int k = K;
    for (int b = nb - 1; b >= 0; --b) {
        const T wb = ubar[(long long)b * stride];
        T val = G[(long long)b * stride] / wb;
        int w = (int)wb;
        val = gd_min(gd_max(val, T(0)), T(1));
        for (int i = 0; i < w; ++i) {
            --k;
            T old = u[(long long)k * stride];
            u[(long long)k * stride] = val;
            ubar[(long long)k * stride] = T(2) * val - old;
        }
    }
}

// Edge directions, as EDGE_OFFSETS in labeling.py: edge d joins pixel
// (i, j) and (i + di, j + dj). d < E (E = 4: 8 neighbours, E = 2: 4).
GD_HD void edge_offset(int d, int* di, int* dj) {
    switch (d) {
        case 0: *di = 0; *dj = 1; break;
        case 1: *di = 1; *dj = 0; break;
        case 2: *di = 1; *dj = 1; break;
        default: *di = 1; *dj = -1; break;
    }
}

// Dual step of the lifted edge variables at label step k, pixel (i, j):
//     p[d, k, i, j] <- clip(p + sigma (ubar[k, i+di, j+dj] - ubar[k, i, j]), +-W[d, i, j] delta[k])
// (0 where the neighbour is outside the image). p: (E, K, M, N),
// ubar: (K, M, N), W: (E, M, N), delta: (K,).
template <typename T>
GD_HD void lifted_dual_at(const T* ubar, T* p, const T* W, const T* delta, int k, int i, int j, int K, int M,
                          int N, int E, T sigma) {
    const long long plane = (long long)M * N;
    const long long x = (long long)i * N + j;
    const T uc = ubar[(long long)k * plane + x];
    const T dk = delta[k];
    for (int d = 0; d < E; ++d) {
        int di, dj;
        edge_offset(d, &di, &dj);
        const int i2 = i + di, j2 = j + dj;
        const long long idx = ((long long)d * K + k) * plane + x;
        if (i2 < M && j2 >= 0 && j2 < N) {
            const T b = W[(long long)d * plane + x] * dk;
            const T v = p[idx] + sigma * (ubar[(long long)k * plane + (long long)i2 * N + j2] - uc);
            p[idx] = gd_min(gd_max(v, -b), b);
        } else {
            p[idx] = T(0);
        }
    }
}

// One label step's inputs of the fused primal step at pixel x = (i, j):
// c_k, u_k, the pixel's own edge duals pa[d] = p[d, k, x] and the incoming
// ones pb[d] = p[d, k, x - off_d] (0 outside the image), d < E <= 4.
template <typename T>
GD_HD void fused_inputs(const T* u, const T* c, const T* p, int k, int i, int j, int K, int N, int E,
                        long long plane, long long x, T* cv, T* uv, T* pa, T* pb) {
    *cv = c[(long long)k * plane + x];
    *uv = u[(long long)k * plane + x];
#pragma unroll
    for (int d = 0; d < 4; ++d) {  // a constant trip count keeps pa, pb in registers
        if (d < E) {
            int di, dj;
            edge_offset(d, &di, &dj);
            const long long base = ((long long)d * K + k) * plane;
            pa[d] = p[base + x];
            const int i0 = i - di, j0 = j - dj;
            pb[d] = (i0 >= 0 && j0 >= 0 && j0 < N) ? p[base + (long long)i0 * N + j0] : T(0);
        }
    }
}

// Fused primal step of pixel (i, j): the same projection as
// lifted_primal_at, with G = c + K^T p computed on the fly,
//     G_k = c_k - sum_d p[d, k, x] + sum_d p[d, k, x - off_d],
// and the pixel's term of the dual bound written to *lb:
//     min(0, min_k sum_{j <= k} G_j).
// u, ubar, c: (K, M, N), K >= 1; p: (E, K, M, N); ubar gets 2 u_new - u_old.
// The PAVA stack (block sums ssum[b * sstride], block sizes ssize[b *
// sstride], b < K) is the caller's memory; the kernel passes ssum = scratch
// + x and ssize = ubar + x with sstride = M * N (every size is read before
// ubar's entry is overwritten: block b starts at label step >= b). The top
// block stays in registers (ts, tw): the merge test, on the critical path,
// reads no memory, and a block read back from memory is not written again.
// The write-out walks the label steps from K-1 down, one per loop trip, so
// the threads of a warp stay on the same k and their u / ubar accesses
// coalesce (with nested per-block loops the H200 took 28x the byte floor).
// Prefetch: the next label step's inputs are loaded before this step's
// merges, so their latency overlaps them. The arithmetic, hence the result,
// is the same with and without it, and the same as the Numba twin's.
template <typename T, bool Prefetch>
GD_HD void lifted_primal_fused_at(T* u, T* ubar, const T* c, const T* p, int i, int j, int K, int M, int N, int E,
                                  T tau, T* lb, T* ssum, T* ssize, long long sstride) {
    const long long plane = (long long)M * N;
    const long long x = (long long)i * N + j;
    int nb = 0;             // blocks on the stack: the top one in (ts, tw), the others in memory at 0..nb-2
    T ts = T(0), tw = T(0);
    bool top_stored = false;  // the top block is also in memory at nb-1 (read back after a merge)
    T prefix = T(0), minpref = T(0);
    T cv, uv, pa[4], pb[4];
    if (Prefetch) fused_inputs(u, c, p, 0, i, j, K, N, E, plane, x, &cv, &uv, pa, pb);
    for (int k = 0; k < K; ++k) {
        if (!Prefetch) fused_inputs(u, c, p, k, i, j, K, N, E, plane, x, &cv, &uv, pa, pb);
        T G = cv;
#pragma unroll
        for (int d = 0; d < 4; ++d) {
            if (d < E) {
                G -= pa[d];
                G += pb[d];
            }
        }
        T val = uv - tau * G;
        if (Prefetch && k + 1 < K) fused_inputs(u, c, p, k + 1, i, j, K, N, E, plane, x, &cv, &uv, pa, pb);
        prefix += G;
        minpref = gd_min(minpref, prefix);
        T w = T(1);
        while (nb > 0 && ts * w < val * tw) {
            val += ts;
            w += tw;
            --nb;
            if (nb > 0) {
                ts = ssum[(long long)(nb - 1) * sstride];
                tw = ssize[(long long)(nb - 1) * sstride];
                top_stored = true;
            }
        }
        if (nb > 0 && !top_stored) {
            ssum[(long long)(nb - 1) * sstride] = ts;
            ssize[(long long)(nb - 1) * sstride] = tw;
        }
        ts = val;
        tw = w;
        top_stored = false;
        ++nb;
    }
    *lb = minpref;
    ssum[(long long)(nb - 1) * sstride] = ts;
    ssize[(long long)(nb - 1) * sstride] = tw;
    int b = nb - 1, left = 0;
    T val = T(0);
    for (int k = K - 1; k >= 0; --k) {
        if (left == 0) {
            const T wb = ssize[(long long)b * sstride];
            val = gd_min(gd_max(ssum[(long long)b * sstride] / wb, T(0)), T(1));
            left = (int)wb;
            --b;
        }
        const long long o = (long long)k * plane + x;
        const T old = u[o];
        u[o] = val;
        ubar[o] = T(2) * val - old;
        --left;
    }
}

}  // namespace gd
