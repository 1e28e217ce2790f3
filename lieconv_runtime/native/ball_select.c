/* Neighbourhood selection for flat groups, one pass per query (lieconv_runtime.native).
 *
 * For each query (b, i): the valid elements j with |f_bi - f_bj|^2 < r2, exactly as
 * PairGeometry.exact_sq computes it (differences, squares, summed in order, no FMA), and of
 * those up to k uniformly random ones: the k largest splitmix64 keys of lieconv_runtime.nn.
 * sampling.pair_keys (ties: the smaller j), found through a histogram of the keys' top bits.  The same pairs and keys as the torch path, without
 * its (bs, c, N) GEMM, comparison and nonzero over every candidate pair.
 *
 * Compiled on first use with -ffp-contract=off, so that no multiply-add is fused and the
 * distances round exactly as torch's.
 */
#include <math.h>
#include "angle.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GOLD 0x9E3779B97F4A7C15ULL

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

/* Rank of a candidate: its key above, the complement of j below (larger is better; unique). */
static inline uint64_t rank_of(uint64_t state, int64_t j) {
    uint64_t key = (mix(state + (uint64_t)(j + 1) * GOLD) >> 33) & 0x7FFFFFFFULL;
    return (key << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)j);
}

/* The need-th largest of a[0..m) (1 <= need <= m, m small): partial selection sort. */
static uint64_t nth_largest(uint64_t *a, int64_t m, int64_t need) {
    for (int64_t s = 0; s < need; s++) {
        int64_t best = s;
        for (int64_t t = s + 1; t < m; t++)
            if (a[t] > a[best]) best = t;
        uint64_t tmp = a[s]; a[s] = a[best]; a[best] = tmp;
    }
    return a[need - 1];
}

/* One query row: candidates j (ascending, in cj[0..m)) -> the k of largest rank, ascending j.
 * Ranks are uniform in their top bits, so a 256-bucket histogram of those bits finds the bucket
 * holding the k-th largest; only that bucket's few members are compared exactly. */
static int64_t choose_row(const int64_t *cj, uint64_t *rk, int64_t m, int64_t k, uint64_t state,
                          uint32_t *hist, uint64_t *bucket_buf, int64_t *out, uint8_t *ok) {
    if (m <= k) {
        for (int64_t t = 0; t < m; t++) { out[t] = cj[t]; ok[t] = 1; }
        return m;
    }
    memset(hist, 0, 256 * sizeof(uint32_t));
    for (int64_t t = 0; t < m; t++) {
        rk[t] = rank_of(state, cj[t]);
        hist[rk[t] >> 55]++;
    }
    int64_t need = k, bucket = 255;
    while (hist[bucket] < need) { need -= hist[bucket]; bucket--; }
    int64_t nb = 0;
    for (int64_t t = 0; t < m; t++)
        if ((int64_t)(rk[t] >> 55) == bucket) bucket_buf[nb++] = rk[t];
    uint64_t threshold = nth_largest(bucket_buf, nb, need);
    int64_t s = 0;
    for (int64_t t = 0; t < m; t++)
        if (rk[t] >= threshold) { out[s] = cj[t]; ok[s] = 1; s++; }
    return s;
}

/* The shared row loop: DIST fills dist[0..n) for query (b, i); then the ball, keys and choice. */
#define SELECT_BODY(T, DIST)                                                                     \
    int64_t rows = bs * c;                                                                       \
    int64_t total = 0;                                                                           \
    _Pragma("omp parallel num_threads(threads) reduction(+:total)")                              \
    {                                                                                            \
        int64_t nn = n > 0 ? n : 1;                                                              \
        T *dist = (T *)malloc(sizeof(T) * nn);                                                   \
        int64_t *cj = (int64_t *)malloc(sizeof(int64_t) * nn);                                   \
        uint64_t *rk = (uint64_t *)malloc(sizeof(uint64_t) * nn);                                \
        uint64_t *bucket_buf = (uint64_t *)malloc(sizeof(uint64_t) * nn);                        \
        double *bandbuf = (double *)malloc(sizeof(double) * nn);                                 \
        uint32_t hist[256];                                                                      \
        _Pragma("omp for schedule(static)")                                                      \
        for (int64_t row = 0; row < rows; row++) {                                               \
            int64_t b = row / c;                                                                 \
            int64_t *out = idx + row * k;                                                        \
            uint8_t *ok = valid + row * k;                                                       \
            memset(ok, 0, (size_t)k);                                                            \
            for (int64_t s = 0; s < k; s++) out[s] = 0;                                          \
            if (!qmask[row]) continue;                                                           \
            int64_t i = qidx[row];                                                               \
            const uint8_t *mb = mask + b * n;                                                    \
            int64_t ne = n; /* scan up to the cloud's last valid element (padding ends a cloud) */ \
            while (ne > 0 && !mb[ne - 1]) ne--;                                                  \
            DIST                                                                                 \
            T rr = (T)r2;                                                                        \
            int64_t m = 0;                                                                       \
            for (int64_t jj = 0; jj < ne; jj++) { /* branch-free compaction */                   \
                cj[m] = jj;                                                                      \
                m += (dist[jj] < rr) & (mb[jj] != 0);                                            \
            }                                                                                    \
            total += m;                                                                          \
            if (k > 0) {                                                                         \
                uint64_t state = mix((((uint64_t)b << 20) | (uint64_t)i) * GOLD + seed);         \
                choose_row(cj, rk, m, k, state, hist, bucket_buf, out, ok);                      \
            }                                                                                    \
        }                                                                                        \
        free(dist); free(cj); free(rk); free(bucket_buf); free(bandbuf);                         \
    }                                                                                            \
    return total;

/* Flat groups: squared differences of the features ft (bs, d, n), summed in order e = 0, 1, ... */
#define FLAT_DIST(T)                                                                             \
    const T *fb = ft + b * d * n;                                                                \
    for (int64_t jj = 0; jj < ne; jj++) dist[jj] = 0;                                            \
    for (int64_t e = 0; e < d; e++) {                                                            \
        const T *col = fb + e * n;                                                               \
        T fi = col[i];                                                                           \
        for (int64_t jj = 0; jj < ne; jj++) {                                                    \
            T x = fi - col[jj];                                                                  \
            T sq = x * x;                                                                        \
            dist[jj] = dist[jj] + sq;                                                            \
        }                                                                                        \
    }

#include "orth_d2.h"

#define ANGLE_MARGIN 1e-8

/* One query row of an orthogonal group, m = 2 or 3, in two passes.  Pass 1 (SIMD over j, in
 * double) brackets d^2: theta from the polynomial atan2 of angle.h, widened by ANGLE_MARGIN,
 * and d^2 increases with theta (rho >= 1 grows with theta, and (u.n)^2 <= |u|^2), so
 * d^2(theta -/+ margin) bound it.
 * With sum_form the bounds and the closed form are of (|rotation part| + |rest|)^2 instead (the
 * "sum" distance; both parts grow with theta).
 * Pairs outside r2 (1 -/+ tol) are decided (dist = -1 inside, +inf outside); the rest (a relative
 * band of 2 tol around r2) get the closed form in T, as torch computes it (pass 2). */
#define ORTH_DIST(T)                                                                             \
    {                                                                                            \
        const double *RTb = RT + b * m * m * n, *tTb = tT ? tT + b * m * n : NULL;               \
        const double *qTb = qT ? qT + b * qd * n : NULL;                                         \
        double Ri[9] = {0}, ti[3] = {0};                                                         \
        for (int64_t e = 0; e < m * m; e++) Ri[e] = RTb[e * n + i];                              \
        if (tTb) for (int64_t e = 0; e < m; e++) ti[e] = tTb[e * n + i];                         \
        double lo_thr = r2 * (1 - tol), hi_thr = r2 * (1 + tol);                                 \
        for (int64_t jj = 0; jj < ne; jj++) band[jj] = 0;                                        \
        if (qTb)                                                                                 \
            for (int64_t e = 0; e < qd; e++) {                                                   \
                const double *col = qTb + e * n;                                                 \
                double qi = col[i];                                                              \
                for (int64_t jj = 0; jj < ne; jj++) { double x = qi - col[jj]; band[jj] += x * x; } \
            }                                                                                    \
        if (m == 3) ORTH_PASS1(T, 3) else ORTH_PASS1(T, 2)                                       \
        for (int64_t jj = 0; jj < ne; jj++) {                                                    \
            if (dist[jj] == 0 && mb[jj]) { /* in the band: the closed form in T */               \
                T perp, along;                                                                   \
                T rot2 = orth_parts_##T(R + (b * n + i) * m * m, R + (b * n + jj) * m * m,       \
                                        t ? t + (b * n + i) * m : NULL, t ? t + (b * n + jj) * m : NULL, \
                                        m, &perp, &along);                                       \
                T acc = 0;                                                                       \
                if (qs) {                                                                        \
                    const T *qi = qs + (b * n + i) * qd, *qj = qs + (b * n + jj) * qd;            \
                    for (int64_t e = 0; e < qd; e++) { T x = qi[e] - qj[e]; acc = acc + x * x; }  \
                }                                                                                \
                T d2;                                                                            \
                if (sum_form) {                                                                  \
                    d2 = sum_sq_##T(rot2, perp + along + acc);                                   \
                } else {                                                                         \
                    d2 = rot2 + perp + along;                                                    \
                    if (qs) d2 = d2 + acc;                                                       \
                }                                                                                \
                dist[jj] = d2;                                                                   \
            }                                                                                    \
        }                                                                                        \
    }

/* Pass 1 for linear block size M: dist[j] = -1 (inside for sure), +inf (outside) or 0 (band). */
#define ORTH_PASS1(T, M)                                                                         \
    {                                                                                            \
        _Pragma("omp simd")                                                                      \
        for (int64_t jj = 0; jj < ne; jj++) {                                                    \
            double P[M * M];                                                                     \
            for (int a = 0; a < M; a++)                                                          \
                for (int bb = 0; bb < M; bb++) {                                                 \
                    double acc = 0;                                                              \
                    for (int p = 0; p < M; p++) acc += Ri[p * M + a] * RTb[(p * M + bb) * n + jj]; \
                    P[a * M + bb] = acc;                                                         \
                }                                                                                \
            double tr = 0;                                                                       \
            for (int a = 0; a < M; a++) tr += P[a * M + a];                                      \
            double cs = (tr - (M - 2)) / 2, w0, w1 = 0, w2 = 0;                                  \
            if (M == 3) { w0 = P[7] - P[5]; w1 = P[2] - P[6]; w2 = P[3] - P[1]; }                \
            else w0 = P[2] - P[1];                                                               \
            double a2 = w0 * w0 + w1 * w1 + w2 * w2;                                             \
            double sn = sqrt(a2) / 2;                                                            \
            double th = angle(sn, cs);                                                    \
            double th_lo = th > ANGLE_MARGIN ? th - ANGLE_MARGIN : 0, th_hi = th + ANGLE_MARGIN;  \
            double rot_lo = 2 * th_lo * th_lo, rot_hi = 2 * th_hi * th_hi;                       \
            double lo = band[jj], hi = band[jj]; /* the rest; the rotation part is added below */ \
            if (tTb) {                                                                           \
                double du[3] = {0, 0, 0}, u[3] = {0, 0, 0}, uu = 0;                              \
                for (int p = 0; p < M; p++) du[p] = tTb[p * n + jj] - ti[p];             \
                for (int a = 0; a < M; a++) {                                                    \
                    double acc = 0;                                                              \
                    for (int p = 0; p < M; p++) acc += Ri[p * M + a] * du[p];                    \
                    u[a] = acc;                                                                  \
                    uu += acc * acc;                                                             \
                }                                                                                \
                double along = 0;                                                                \
                if (M == 3) {                                                                    \
                    double uw = u[0] * w0 + u[1] * w1 + u[2] * w2;                               \
                    double uPu = 0;                                                              \
                    for (int a = 0; a < 3; a++)                                                  \
                        for (int bb = 0; bb < 3; bb++) uPu += u[a] * P[a * M + bb] * u[bb];      \
                    along = cs > -0.999 ? uw * uw / (a2 > 1e-300 ? a2 : 1e-300)                  \
                                        : (uPu - cs * uu) / (1 - cs);                            \
                }                                                                                \
                double perp = uu - along > 0 ? uu - along : 0;                                   \
                double sin_half = cs >= 0 ? sn / (2 * sqrt((1 + cs) / 2)) : sqrt((1 - cs) / 2);  \
                double small = sin_half < 1e-3;                                                  \
                double rho_lo = small ? 1.0 : th_lo / 2 / sin_half;                              \
                double rho_hi = small ? 1 + th_hi * th_hi / 20 : th_hi / 2 / sin_half;           \
                rho_lo = rho_lo > 1 ? rho_lo : 1;                                                \
                lo += along + rho_lo * rho_lo * perp;                                            \
                hi += along + rho_hi * rho_hi * perp;                                            \
            }                                                                                    \
            if (sum_form) { /* (|rotation part| + |rest|)^2, increasing in both */               \
                lo = sum_sq_double(rot_lo, lo); hi = sum_sq_double(rot_hi, hi);                  \
            } else { lo += rot_lo; hi += rot_hi; }                                               \
            dist[jj] = hi < lo_thr ? (T)-1 : (lo > hi_thr ? (T)INFINITY : (T)0);                 \
        }                                                                                        \
    }

/* ft (bs, d, n) contiguous (features transposed); mask (bs, n) and qmask (bs, c) as uint8; qidx (bs, c) int64;
 * outputs idx (bs, c, k) int64 (0 where unused) and valid (bs, c, k) uint8, chosen j ascending.
 * Returns the number of (valid query, valid element) pairs inside the ball. */
int64_t lc_flat_ball_select_f64(const double *ft, const uint8_t *mask, int64_t bs, int64_t n, int64_t d,
                                const int64_t *qidx, const uint8_t *qmask, int64_t c, double r2, uint64_t seed,
                                int64_t k, int64_t *idx, uint8_t *valid, int threads) {
    SELECT_BODY(double, FLAT_DIST(double))
}

int64_t lc_flat_ball_select_f32(const float *ft, const uint8_t *mask, int64_t bs, int64_t n, int64_t d,
                                const int64_t *qidx, const uint8_t *qmask, int64_t c, double r2, uint64_t seed,
                                int64_t k, int64_t *idx, uint8_t *valid, int threads) {
    SELECT_BODY(float, FLAT_DIST(float))
}

/* Orthogonal groups: R (bs, n, m m) linear parts, t (bs, n, m) translations or NULL (linear
 * groups), qs (bs, n, qd) the scaled orbit coordinates sqrt(alpha) q or NULL; RT, tT, qT the
 * same transposed to (bs, ., n), in double; m = 2 or 3; tol the relative band decided by the closed form. */
#define ORTH_SELECT(T, SFX)                                                                      \
int64_t lc_orth_ball_select_##SFX(const T *R, const T *t, const T *qs, const double *RT,         \
                                  const double *tT, const double *qT, int64_t qd, int64_t m, const uint8_t *mask, int64_t bs, \
                                  int64_t n, const int64_t *qidx, const uint8_t *qmask, int64_t c, \
                                  double r2, double tol, uint64_t seed, int64_t k, int64_t *idx,   \
                                  uint8_t *valid, int threads, int sum_form) {                   \
    SELECT_BODY(T, double *band = (double *)bandbuf; ORTH_DIST(T))                               \
}
ORTH_SELECT(double, f64)
ORTH_SELECT(float, f32)
