// Per-pixel math of the fused framelet steps of the blind u-step
// (gpudeblur/blind.py, ADMM for eq. 8 with d = W u).
//
// W is the one-level undecimated piecewise-linear B-spline framelet
// transform, periodic on an M x N plane (gpudeblur/framelets.py):
//   band (a, b)[r, c] = sum_{p,q} h_a[p] h_b[q] x[r + p - 1, c + q - 1]
// with h0 = [1, 2, 1]/4, h1 = sqrt(2)/4 [1, 0, -1], h2 = [-1, 2, -1]/4;
// the 9 bands are ordered (a, b) row-major without (0, 0), the low-pass
// (0, 0) last. Band arrays are (9, C, M, N), planes (C, M, N), all
// C-contiguous. The Numba twins live in gpudeblur/_numba_blind.py.
#pragma once
#include "common.cuh"

namespace gd {

// h_a[p] for a, p in {0, 1, 2}
template <typename T> GD_HD T framelet_tap(int a, int p) {
    const T s = T(0.35355339059327376220);  // sqrt(2) / 4
    if (a == 0) return p == 1 ? T(0.5) : T(0.25);
    if (a == 1) return p == 0 ? s : (p == 2 ? -s : T(0));
    return p == 1 ? T(0.5) : T(-0.25);
}

// band index (0..8) of the filter pair (a, b)
GD_HD int framelet_band(int a, int b) {
    int k = a * 3 + b;
    return k == 0 ? 8 : k - 1;
}

// d-update and dual update at pixel (i, j) of plane x (offset `off` into
// the band arrays, band stride `bs` = C * M * N):
//   z = (W x)(i, j) + e;  d = soft(z, t) on the 8 high-pass bands, z on the
//   low-pass band;  e <- z - d.
template <typename T>
GD_HD void framelet_shrink_at(const T* x, T* d, T* e, int i, int j, int M, int N, long long off, long long bs, T t) {
    T v[3][3];
    for (int p = 0; p < 3; ++p) {
        int r = i + p - 1;
        r = r < 0 ? r + M : (r >= M ? r - M : r);
        for (int q = 0; q < 3; ++q) {
            int c = j + q - 1;
            c = c < 0 ? c + N : (c >= N ? c - N : c);
            v[p][q] = x[(long long)r * N + c];
        }
    }
    long long k = off + (long long)i * N + j;
    for (int a = 0; a < 3; ++a) {
        // rows filtered by h_a
        T row[3];
        for (int q = 0; q < 3; ++q)
            row[q] = framelet_tap<T>(a, 0) * v[0][q] + framelet_tap<T>(a, 1) * v[1][q] + framelet_tap<T>(a, 2) * v[2][q];
        for (int b = 0; b < 3; ++b) {
            T w = framelet_tap<T>(b, 0) * row[0] + framelet_tap<T>(b, 1) * row[1] + framelet_tap<T>(b, 2) * row[2];
            int band = framelet_band(a, b);
            long long kb = band * bs + k;
            T z = w + e[kb];
            T dn = band == 8 ? z : soft_threshold(z, t);
            d[kb] = dn;
            e[kb] = z - dn;
        }
    }
}

// (W^T (d - e))(i, j): the adjoint correlates back,
//   out[r, c] = sum_band sum_{p,q} h_a[p] h_b[q] (d - e)_band[r - p + 1, c - q + 1].
template <typename T>
GD_HD T framelet_adjoint_diff_at(const T* d, const T* e, int i, int j, int M, int N, long long off, long long bs) {
    T acc = T(0);
    for (int p = 0; p < 3; ++p) {
        int r = i - p + 1;
        r = r < 0 ? r + M : (r >= M ? r - M : r);
        for (int q = 0; q < 3; ++q) {
            int c = j - q + 1;
            c = c < 0 ? c + N : (c >= N ? c - N : c);
            long long k = off + (long long)r * N + c;
            for (int a = 0; a < 3; ++a) {
                T ha = framelet_tap<T>(a, p);
                if (ha == T(0)) continue;
                for (int b = 0; b < 3; ++b) {
                    T hb = framelet_tap<T>(b, q);
                    if (hb == T(0)) continue;
                    long long kb = framelet_band(a, b) * bs + k;
                    acc += ha * hb * (d[kb] - e[kb]);
                }
            }
        }
    }
    return acc;
}

}  // namespace gd
