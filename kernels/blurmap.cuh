// Per-pixel likelihood search of the defocus blur map (Zhu, Cohen, Schiller,
// Milanfar, TIP 2013, Sec. III-A).
//
// For one pixel, y[i] = |g_i^∇[x]|² are the Gabor response powers (eq. 4) of
// F filters. The likelihood (5) of a blur scale r and a local gradient
// variance s is
//     p = Π_i Exp(y_i; 1 / v_i),   v_i = s σ_i²(r) + n_i,
// i.e. -log p = E(r, s) = Σ_i y_i / v_i + log v_i.
// σ_i²(r), dσ_i²/dr and d²σ_i²/dr² come from look-up tables (rows r_k = lo +
// k·step, F filters contiguous per row), linearly interpolated; n_i is the
// noise spectrum (eq. 7).
//
// The search alternates (Sec. III-A, steps 1-5)
//   s <- fixed point of eq. (11) at fixed r,
//   r <- argmin_r E(r, s) (eq. 13) by safeguarded Newton steps on the LUT
//        (steepest descent with a step cap where the curvature is not
//        positive; backtracking so E never increases),
// from every start r0, and keeps the top 3 distinct local maxima (r̂, log p̂).
//
// Called by the __global__ kernel in blurmap.cu, by the host shim
// tests/shims/blurmap.cu and mirrored line by line by the Numba twin in
// gpudeblur/blurmap/_numba_likelihood.py.
#pragma once
#include "common.cuh"

namespace gd {

template <typename T> GD_HD T gd_log(T x);
template <> GD_HD float gd_log<float>(float x) { return logf(x); }
template <> GD_HD double gd_log<double>(double x) { return log(x); }

// Log-likelihood of a missing candidate (p = 0).
#define GD_BLURMAP_NONE (-1e30)

template <typename T> struct BlurmapParams {
    const T* lut_val;  // (K, F)
    const T* lut_d1;   // (K, F)
    const T* lut_d2;   // (K, F)
    const T* noise;    // (F,)
    const T* starts;   // (S,)
    int F, K, nstarts;
    T lo, hi, step;    // r_k = lo + k * step, k = 0..K-1; hi = r_{K-1}
    int max_outer;     // alternations s <-> r per start
    int s_iters;       // fixed-point iterations of eq. (11) per alternation
    int r_iters;       // Newton steps on eq. (13) per alternation
    T tol_r;           // stop when |Δr| < tol_r
    T tol_s;           // relative tolerance of the s fixed point
    T max_step;        // cap on one r step
    T s_floor;         // s is kept >= s_floor
    T merge_tol;       // maxima closer than this are one candidate
    T dup_tol;         // a start this close to a found maximum stops early
};

// Interpolation position of r in the LUT: row k and weight f of row k + 1.
template <typename T> GD_HD void lut_pos(const BlurmapParams<T>& P, T r, int* k, T* f) {
    T pos = (r - P.lo) / P.step;
    int kk = (int)pos;
    if (kk < 0) kk = 0;
    if (kk > P.K - 2) kk = P.K - 2;
    T ff = pos - (T)kk;
    if (ff < T(0)) ff = T(0);
    if (ff > T(1)) ff = T(1);
    *k = kk;
    *f = ff;
}

template <typename T> GD_HD T lut_lerp(const T* tab, int F, int k, T f, int i) {
    T a = tab[k * F + i];
    T b = tab[(k + 1) * F + i];
    return a + f * (b - a);
}

// Clamp r into the LUT domain [lo, lo + (K-1) step].
template <typename T> GD_HD T clamp_r(const BlurmapParams<T>& P, T r) {
    return r < P.lo ? P.lo : (r > P.hi ? P.hi : r);
}

// Every sum over the filters runs in four interleaved lanes, lane j taking
// filters j, j + 4, j + 8, ... in order, and ends as (l0 + l1) + (l2 + l3).
// The Numba twin writes the same order out (it splits each sum into an
// element-wise loop and lane-by-lane adds); no compiler may reassociate
// it, so CPU results do not depend on how a compiler vectorizes.
template <typename T> struct Lanes4 {
    T a0, a1, a2, a3;  // scalars, not an array: stay in registers on the GPU
    GD_HD Lanes4() : a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0)) {}
    GD_HD void add(int i, T x) {  // filter i's term into lane i mod 4
        switch (i & 3) {
            case 0: a0 += x; break;
            case 1: a1 += x; break;
            case 2: a2 += x; break;
            default: a3 += x;
        }
    }
    GD_HD T sum() const { return (a0 + a1) + (a2 + a3); }
};

// Moment estimate of s at r: Σ(y - n) / Σσ², floored (start of eq. 11).
template <typename T> GD_HD T s_moment(const T* y, long long ys, const BlurmapParams<T>& P, T r) {
    int k;
    T f;
    lut_pos(P, r, &k, &f);
    Lanes4<T> num, den;
    for (int i = 0; i < P.F; ++i) {
        num.add(i, y[i * ys] - P.noise[i]);
        den.add(i, lut_lerp(P.lut_val, P.F, k, f, i));
    }
    T s = num.sum() / den.sum();
    return s > P.s_floor ? s : P.s_floor;
}

// Fixed point of eq. (11): s = Σ ρ_i (y_i - n_i)/σ_i² / Σ ρ_i,
// ρ_i = (1 + n_i / (s σ_i²))^-2 = (s σ_i² / v_i)².
template <typename T> GD_HD T s_fixed_point(const T* y, long long ys, const BlurmapParams<T>& P, T r, T s) {
    int k;
    T f;
    lut_pos(P, r, &k, &f);
    for (int it = 0; it < P.s_iters; ++it) {
        Lanes4<T> num, den;
        for (int i = 0; i < P.F; ++i) {
            T sg = lut_lerp(P.lut_val, P.F, k, f, i);
            T n = P.noise[i];
            T q = s * sg / (s * sg + n);
            T rho = q * q;
            num.add(i, rho * (y[i * ys] - n) / sg);
            den.add(i, rho);
        }
        T nm = num.sum(), dn = den.sum();
        T sn = dn > T(0) ? nm / dn : P.s_floor;
        if (!(sn > P.s_floor)) sn = P.s_floor;  // also catches NaN
        T ds = sn - s;
        s = sn;
        if (gd_abs(ds) <= P.tol_s * s) break;
    }
    return s;
}

// E(r, s) = Σ y_i / v_i + log v_i  (= -log p of eq. 5 up to a constant).
// Σ log v_i is taken as Σ over groups of 4 filters of log Π (v_i / n_0)
// (the product as (u_0 u_1)(u_2 u_3)), then the F mod 4 last ones, plus
// F log n_0: a quarter of the logarithms; v_i / n_0 >= n_i / n_0 keeps each
// product well inside the float range.
template <typename T> GD_HD T neg_loglik(const T* y, long long ys, const BlurmapParams<T>& P, T r, T s) {
    int k;
    T f;
    lut_pos(P, r, &k, &f);
    T c = T(1) / P.noise[0];
    Lanes4<T> e;
    T el = T(0), u0 = T(1), u1 = T(1), u2 = T(1), prod = T(1);
    int F4 = P.F - (P.F & 3);
    for (int i = 0; i < P.F; ++i) {
        T v = s * lut_lerp(P.lut_val, P.F, k, f, i) + P.noise[i];
        e.add(i, y[i * ys] / v);
        T u = v * c;
        switch (i & 3) {
            case 0: u0 = u; break;
            case 1: u1 = u; break;
            case 2: u2 = u; break;
            default: el += gd_log((u0 * u1) * (u2 * u));
        }
        if (i >= F4) prod *= u;  // the F mod 4 last filters
    }
    el += gd_log(prod);
    return e.sum() + el + (T)P.F * gd_log(P.noise[0]);
}

// dE/dr and d²E/dr² at fixed s (eq. 13), plus the slope ds/dr of the
// valley dE/ds = 0 and the curvature of the profile min_s E(r, s) (eq. 9).
template <typename T>
GD_HD void r_derivs(const T* y, long long ys, const BlurmapParams<T>& P, T r, T s, T* g, T* h, T* k_s, T* h_prof) {
    int k;
    T f;
    lut_pos(P, r, &k, &f);
    Lanes4<T> gg, hh, hss, hrs;
    for (int i = 0; i < P.F; ++i) {
        T sg = lut_lerp(P.lut_val, P.F, k, f, i);
        T d1 = s * lut_lerp(P.lut_d1, P.F, k, f, i);
        T d2 = s * lut_lerp(P.lut_d2, P.F, k, f, i);
        T iv = T(1) / (s * sg + P.noise[i]);
        T t = y[i * ys] * iv;       // y / v
        T a = iv - t * iv;          // 1/v - y/v²
        T b = (t + t - T(1)) * iv * iv;  // 2y/v³ - 1/v²
        gg.add(i, a * d1);
        hh.add(i, b * d1 * d1 + a * d2);
        hss.add(i, b * sg * sg);                 // d²E/ds²
        hrs.add(i, b * d1 * sg + a * d1 / s);    // d²E/dr ds
    }
    T G = gg.sum(), H = hh.sum(), Hss = hss.sum(), Hrs = hrs.sum();
    *g = G;
    *h = H;
    if (Hss > T(0)) {
        *k_s = Hrs / Hss;                // ds/dr along the valley dE/ds = 0 (first order)
        *h_prof = H - Hrs * *k_s;        // curvature of the profile min_s E(r, s)
    } else {
        *k_s = T(0);
        *h_prof = H;
    }
}

// Up to r_iters safeguarded Newton steps on E from (r, s) (eq. 13). The
// step in r uses the curvature of the profile min_s E (eq. 9) and s follows
// the valley dE/ds = 0 to first order (ds = k_s dr), so that the r-s
// alternation does not zig-zag; each step is backtracked until E decreases.
// With h_prof <= 0 it is a capped steepest-descent step. *e holds E(r, *s)
// on entry and on exit; *s is updated.
template <typename T> GD_HD T r_descent(const T* y, long long ys, const BlurmapParams<T>& P, T r, T* s_io, T* e) {
    T er = *e;
    T s = *s_io;
    for (int it = 0; it < P.r_iters; ++it) {
        T g, h, ks, hp;
        r_derivs(y, ys, P, r, s, &g, &h, &ks, &hp);
        T d;
        if (hp > T(0)) {
            d = -g / hp;
        } else {
            d = g > T(0) ? -P.max_step : P.max_step;
            ks = T(0);
        }
        if (d > P.max_step) d = P.max_step;
        if (d < -P.max_step) d = -P.max_step;
        T rn = clamp_r(P, r + d);
        if (rn == r) break;  // pinned at a bound of the domain
        bool moved = false;
        for (int bt = 0; bt < 6; ++bt) {
            T sn = s - ks * (rn - r);
            if (sn < P.s_floor) sn = P.s_floor;
            T en = neg_loglik(y, ys, P, rn, sn);
            if (en <= er) {
                T step = gd_abs(rn - r);
                r = rn;
                s = sn;
                er = en;
                moved = true;
                if (step < P.tol_r) it = P.r_iters;  // converged
                break;
            }
            rn = r + (rn - r) * T(0.5);
        }
        if (!moved) break;
    }
    *e = er;
    *s_io = s;
    return r;
}

// Keep the top 3 distinct maxima (sorted by log-likelihood, descending).
template <typename T> GD_HD void insert_candidate(T r, T l, T s, T* cr, T* cl, T* cs, T merge_tol) {
    for (int j = 0; j < 3; ++j) {
        if (cl[j] > T(GD_BLURMAP_NONE) && gd_abs(cr[j] - r) < merge_tol) {
            if (l <= cl[j]) return;
            // replace j and bubble it up
            cr[j] = r;
            cl[j] = l;
            cs[j] = s;
            for (int m = j; m > 0 && cl[m] > cl[m - 1]; --m) {
                T t0 = cr[m]; cr[m] = cr[m - 1]; cr[m - 1] = t0;
                T t1 = cl[m]; cl[m] = cl[m - 1]; cl[m - 1] = t1;
                T t2 = cs[m]; cs[m] = cs[m - 1]; cs[m - 1] = t2;
            }
            return;
        }
    }
    if (l <= cl[2]) return;
    int m = 2;
    while (m > 0 && l > cl[m - 1]) {
        cr[m] = cr[m - 1];
        cl[m] = cl[m - 1];
        cs[m] = cs[m - 1];
        --m;
    }
    cr[m] = r;
    cl[m] = l;
    cs[m] = s;
}

// The whole search at one pixel. y[i * ys] is filter i's power.
// Writes the top-3 radii cr[3], log-likelihoods cl[3] (log p̂ = -E; a
// missing candidate has GD_BLURMAP_NONE and the best radius) and the ŝ of
// each (cs[3]).
template <typename T>
GD_HD void blurmap_search_pixel(const T* y, long long ys, const BlurmapParams<T>& P, T* cr, T* cl, T* cs) {
    for (int j = 0; j < 3; ++j) {
        cr[j] = P.lo;
        cl[j] = T(GD_BLURMAP_NONE);
        cs[j] = P.s_floor;
    }
    for (int st = 0; st < P.nstarts; ++st) {
        T r = clamp_r(P, P.starts[st]);
        T s = s_moment(y, ys, P, r);
        T e;
        // alternate until r settles (or max_outer); the last pass of the loop
        // only refreshes s and E at the final r
        for (int outer = 0;; ) {
            s = s_fixed_point(y, ys, P, r, s);
            e = neg_loglik(y, ys, P, r, s);
            if (outer >= P.max_outer) break;
            T rn = r_descent(y, ys, P, r, &s, &e);
            T dr = gd_abs(rn - r);
            r = rn;
            ++outer;
            if (dr < P.tol_r) outer = P.max_outer;
            // a start that reaches a maximum found from an earlier start ends
            // there (it would converge to it): saves most duplicate work
            for (int j = 0; j < 3; ++j)
                if (cl[j] > T(GD_BLURMAP_NONE) && gd_abs(cr[j] - r) < P.dup_tol) outer = P.max_outer;
        }
        insert_candidate(r, -e, s, cr, cl, cs, P.merge_tol);
    }
    for (int j = 1; j < 3; ++j) {
        if (!(cl[j] > T(GD_BLURMAP_NONE))) {
            cr[j] = cr[0];
            cs[j] = cs[0];
        }
    }
}

}  // namespace gd
