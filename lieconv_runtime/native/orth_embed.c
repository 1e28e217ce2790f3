/* Pair embeddings of groups with orthogonal linear parts, one rotation plane (m = 2, 3)
 * (lieconv_runtime.native): a = log(g_i^-1 g_j) in the group's algebra coordinates for each
 * query's k chosen neighbours, with the formulas of lieconv_runtime.orthogonal.orthogonal_log_parts:
 *   P = R_i^T R_j, u = R_i^T (t_j - t_i), cos theta = (tr P - (m - 2)) / 2, w = vee(P - P^T);
 *   omega = theta / (2 sin theta) w while cos theta > -0.999, else theta times the unit axis from
 *   the symmetric part (sign from w);  v = u - B u / 2 + c(theta) B^2 u,
 *   c = (1 - (theta/2) cot(theta/2)) / theta^2  (series below theta = 1e-2);
 *   a = omega @ V_rot + v @ V_trans (the group's vee maps), 0 where i or j is padding.
 * Computed in double (float32 callers convert; the cost is in the pairs, not the elements).  The k neighbours of a query run as one SIMD
 * loop: theta from an atan2 built on a degree-8 fit of atan on [0, tan(pi/12)] (error within
 * 1 ulp there, measured against mpmath; 2-3 ulp after the reductions), cot(theta/2) from
 * sin and cos theta (no second transcendental).  Pairs beyond cos theta = -0.999 are redone in a
 * scalar pass with libm's atan2 and the symmetric-part axis.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "angle.h"

/* (omega, v) of one pair, scalar, with libm (the reference formulas; used beyond cos = -0.999). */
static void log_pair(const double *P, const double *u, int64_t m, int affine, double *out) {
    double omega[3] = {0, 0, 0}, theta, sn, cs;
    int64_t nw = m == 3 ? 3 : 1;
    if (m == 3) {
        double w[3] = {P[7] - P[5], P[2] - P[6], P[3] - P[1]};
        sn = sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]) / 2;
        cs = (P[0] + P[4] + P[8] - 1) / 2;
        theta = atan2(sn, cs);
        if (cs > -0.999) {
            double f = sn > 0 ? theta / (2 * sn) : 0.5;
            for (int e = 0; e < 3; e++) omega[e] = f * w[e];
        } else { /* n n^T = (P + P^T - 2 cos I) / (2 (1 - cos)): its largest diagonal entry's column */
            double S[9];
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++)
                    S[a * 3 + b] = (P[a * 3 + b] + P[b * 3 + a] - (a == b ? 2 * cs : 0)) / (2 * (1 - cs));
            int col = 0;
            for (int a = 1; a < 3; a++)
                if (S[a * 3 + a] > S[col * 3 + col]) col = a;
            double axis[3] = {S[0 * 3 + col], S[1 * 3 + col], S[2 * 3 + col]};
            double norm = sqrt(axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]);
            if (norm < 2.2250738585072014e-308) norm = 2.2250738585072014e-308;
            double sgn = axis[0] * w[0] + axis[1] * w[1] + axis[2] * w[2] < 0 ? -1.0 : 1.0;
            for (int e = 0; e < 3; e++) omega[e] = theta * sgn * axis[e] / norm;
        }
    } else {
        double w = P[2] - P[1];
        sn = fabs(w) / 2;
        cs = (P[0] + P[3]) / 2;
        theta = atan2(sn, cs);
        omega[0] = cs > -0.999 ? (sn > 0 ? theta / (2 * sn) : 0.5) * w : theta * (w < 0 ? -1.0 : 1.0);
    }
    for (int64_t e = 0; e < nw; e++) out[e] = omega[e];
    if (!affine) return;
    double c = theta < 1e-2 ? 1.0 / 12 + theta * theta / 720 : (1 - (theta / 2) / tan(theta / 2)) / (theta * theta);
    double *v = out + nw;
    if (m == 3) {
        double ou = omega[0] * u[0] + omega[1] * u[1] + omega[2] * u[2];
        double hb[3] = {(omega[1] * u[2] - omega[2] * u[1]) / 2, (omega[2] * u[0] - omega[0] * u[2]) / 2,
                        (omega[0] * u[1] - omega[1] * u[0]) / 2};
        for (int e = 0; e < 3; e++) v[e] = (1 - c * (theta * theta)) * u[e] + c * ou * omega[e] - hb[e];
    } else {
        double o = omega[0];
        v[0] = (1 - c * (o * o)) * u[0] + o * u[1] / 2;
        v[1] = (1 - c * (o * o)) * u[1] - o * u[0] / 2;
    }
}

/* SIMD pass over the k neighbours of one query, block size M (2 or 3); Pq (9, k), uq (3, k) in,
 * parts (6, k) out ((omega, v) rows), far[s] set beyond cos = -0.999. */
#define EMBED_PASS(M)                                                                            \
    _Pragma("omp simd")                                                                          \
    for (int64_t s = 0; s < k; s++) {                                                            \
        double cs, sn, w0, w1 = 0, w2 = 0;                                                       \
        if (M == 3) {                                                                            \
            w0 = Pq[7 * k + s] - Pq[5 * k + s]; w1 = Pq[2 * k + s] - Pq[6 * k + s];              \
            w2 = Pq[3 * k + s] - Pq[1 * k + s];                                                  \
            cs = (Pq[0 * k + s] + Pq[4 * k + s] + Pq[8 * k + s] - 1) / 2;                        \
        } else {                                                                                 \
            w0 = Pq[2 * k + s] - Pq[1 * k + s];                                                  \
            cs = (Pq[0 * k + s] + Pq[3 * k + s]) / 2;                                            \
        }                                                                                        \
        sn = sqrt(w0 * w0 + w1 * w1 + w2 * w2) / 2;                                              \
        double theta = angle(sn, cs);                                                            \
        double f = sn > 0 ? theta / (2 * (sn > 0 ? sn : 1.0)) : 0.5;                             \
        double o0 = f * w0, o1 = f * w1, o2 = f * w2;                                            \
        far[s] = cs <= -0.999;                                                                   \
        parts[0 * k + s] = o0;                                                                   \
        if (M == 3) { parts[1 * k + s] = o1; parts[2 * k + s] = o2; }                            \
        if (affine) {                                                                            \
            /* cot(theta/2) = (1 + cos) / sin (theta <= pi/2) = sin / (1 - cos) (beyond) */      \
            double cot = cs >= 0 ? (1 + cs) / (sn > 0 ? sn : 1.0) : sn / (1 - cs);               \
            double th2 = theta * theta;                                                          \
            double c = theta < 1e-2 ? 1.0 / 12 + th2 / 720                                       \
                                    : (1 - (theta / 2) * cot) / (th2 > 0 ? th2 : 1.0);            \
            double u0 = uq[0 * k + s], u1 = uq[1 * k + s], u2 = M == 3 ? uq[2 * k + s] : 0;     \
            if (M == 3) {                                                                        \
                double ou = o0 * u0 + o1 * u1 + o2 * u2;                                         \
                parts[3 * k + s] = (1 - c * th2) * u0 + c * ou * o0 - (o1 * u2 - o2 * u1) / 2;   \
                parts[4 * k + s] = (1 - c * th2) * u1 + c * ou * o1 - (o2 * u0 - o0 * u2) / 2;   \
                parts[5 * k + s] = (1 - c * th2) * u2 + c * ou * o2 - (o0 * u1 - o1 * u0) / 2;   \
            } else {                                                                             \
                parts[1 * k + s] = (1 - c * (o0 * o0)) * u0 + o0 * u1 / 2;                       \
                parts[2 * k + s] = (1 - c * (o0 * o0)) * u1 - o0 * u0 / 2;                       \
            }                                                                                    \
        }                                                                                        \
    }

/* One query row with block size M and AFF (affine) known at compile time: gather P, u as (., k)
 * rows, the SIMD pass, the scalar far-pair pass, and a = parts @ vmap (masked). */
#define ROW_KERNEL(T, M, AFF)                                                                    \
    {                                                                                            \
        const int64_t np = (M == 3 ? 3 : 1) + (AFF ? M : 0);                                     \
        const T *Ri = R + (b * n + i) * M * M, *ti = AFF ? t + (b * n + i) * M : 0;              \
        double ri[M * M], tiv[M];                                                                \
        for (int e = 0; e < M * M; e++) ri[e] = (double)Ri[e];                                   \
        for (int e = 0; e < M; e++) tiv[e] = AFF ? (double)ti[e] : 0;                            \
        for (int64_t s = 0; s < k; s++) {                                                        \
            int64_t j = nbr[s];                                                                  \
            const T *Rj = R + (b * n + j) * M * M;                                               \
            double rj[M * M];                                                                    \
            for (int e = 0; e < M * M; e++) rj[e] = (double)Rj[e];                               \
            for (int a = 0; a < M; a++)                                                          \
                for (int bb = 0; bb < M; bb++) {                                                 \
                    double acc = 0;                                                              \
                    for (int p = 0; p < M; p++) acc += ri[p * M + a] * rj[p * M + bb];           \
                    Pq[(a * M + bb) * k + s] = acc;                                              \
                }                                                                                \
            if (AFF) {                                                                           \
                const T *tj = t + (b * n + j) * M;                                               \
                double d[M];                                                                     \
                for (int p = 0; p < M; p++) d[p] = (double)tj[p] - tiv[p];                       \
                for (int a = 0; a < M; a++) {                                                    \
                    double acc = 0;                                                              \
                    for (int p = 0; p < M; p++) acc += ri[p * M + a] * d[p];                     \
                    uq[a * k + s] = acc;                                                         \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        const int affine = AFF;                                                                  \
        EMBED_PASS(M)                                                                            \
        for (int64_t s = 0; s < k; s++) {                                                        \
            if (!far[s]) continue;                                                               \
            double P[9], u[3] = {0, 0, 0}, res[6];                                               \
            for (int e = 0; e < M * M; e++) P[e] = Pq[e * k + s];                                \
            for (int e = 0; e < M; e++) u[e] = AFF ? uq[e * k + s] : 0;                          \
            log_pair(P, u, M, AFF, res);                                                         \
            for (int64_t e = 0; e < np; e++) parts[e * k + s] = res[e];                          \
        }                                                                                        \
        const uint8_t *mb = mask + b * n;                                                        \
        for (int64_t s = 0; s < k; s++) {                                                        \
            T *o = out + (row * k + s) * L;                                                      \
            int ok = mb[i] && mb[nbr[s]];                                                        \
            double pv[6];                                                                        \
            for (int64_t f = 0; f < np; f++) pv[f] = parts[f * k + s];                           \
            for (int64_t e = 0; e < L; e++) {                                                    \
                double acc = 0;                                                                  \
                for (int64_t f = 0; f < np; f++) acc += pv[f] * vmap[f * L + e];                 \
                o[e] = ok ? (T)acc : (T)0;                                                       \
            }                                                                                    \
        }                                                                                        \
    }

/* R (bs, n, m m), t (bs, n, m) or NULL, mask (bs, n) uint8, qidx (bs, c), nb (bs, c, k) element
 * indices, vmap (np, L): rows V_rot then V_trans (np = n_omega [+ m]); out (bs, c, k, L). */
#define ORTH_EMBED(T, SFX)                                                                       \
void lc_orth_embed_##SFX(const T *R, const T *t, const uint8_t *mask, int64_t m, int64_t bs, int64_t n, \
                         const int64_t *qidx, int64_t c, const int64_t *nb, int64_t k, const double *vmap, \
                         int64_t L, T *out, int threads) {                                       \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int64_t kk = k > 0 ? k : 1;                                                              \
        double *Pq = (double *)malloc(sizeof(double) * 9 * kk);                                  \
        double *uq = (double *)malloc(sizeof(double) * 3 * kk);                                  \
        double *parts = (double *)malloc(sizeof(double) * 6 * kk);                               \
        uint8_t *far = (uint8_t *)malloc(kk);                                                    \
        _Pragma("omp for schedule(static)")                                                      \
        for (int64_t row = 0; row < bs * c; row++) {                                             \
            int64_t b = row / c, i = qidx[row];                                                  \
            const int64_t *nbr = nb + row * k;                                                   \
            if (m == 3 && t) ROW_KERNEL(T, 3, 1)                                                 \
            else if (m == 3) ROW_KERNEL(T, 3, 0)                                                 \
            else if (t) ROW_KERNEL(T, 2, 1)                                                      \
            else ROW_KERNEL(T, 2, 0)                                                             \
        }                                                                                        \
        free(Pq); free(uq); free(parts); free(far);                                              \
    }                                                                                            \
}
ORTH_EMBED(double, f64)
