/* Farthest point sampling, one cloud per thread (lieconv_runtime.native).
 *
 * The loop of lieconv_runtime.nn.sampling.farthest_point_sample: score[j] is the smallest squared
 * distance from element j to the chosen ones (+inf before any, -1 for padding, -2 once chosen);
 * each step chooses the first element of largest score.  One C loop per cloud instead of a dozen
 * torch operations per step (an image network's SE2 blocks take about 2,500 steps per batch).
 *
 * Orthogonal groups skip the closed form where it cannot lower a score: d^2 >= |t_j - t_c|^2 +
 * |qs_j - qs_c|^2 (rho >= 1 and (u.n)^2 <= |u|^2; also for the "sum" form, whose square is at least
 * its rest's), so an element whose score is below that bound
 * (with a relative margin of 1e-5, far above the rounding of either side) keeps its score.  Late
 * steps, whose new element is near few others, then cost one short bound per element.
 *
 * Squared distances in double, as ball_select.c computes them (orth_d2.h; no fused multiply-add):
 * float32 clouds choose as float64 copies of them would, without float32 near-ties.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "orth_d2.h"

#define SKIP_MARGIN 1e-5

/* The first index of the largest score. */
static int64_t first_argmax(const double *score, int64_t n) {
    double best = -INFINITY;
    int64_t at = 0;
    for (int64_t j = 0; j < n; j++)
        if (score[j] > best) { best = score[j]; at = j; }
    return at;
}

static void init_scores(double *score, const uint8_t *mb, int64_t n) {
    for (int64_t j = 0; j < n; j++) score[j] = mb[j] ? INFINITY : -1.0;
}

/* The loop over clouds and steps; SETUP declares a cloud's pointers (b known), UPDATE lowers
 * score[j] (> 0: valid and not chosen) by the squared distance from the new element c. */
#define FPS_LOOP(SETUP, UPDATE)                                                                   \
    _Pragma("omp parallel num_threads(threads)")                                                  \
    {                                                                                             \
        double *score = (double *)malloc(sizeof(double) * (n > 0 ? n : 1));                       \
        _Pragma("omp for schedule(dynamic, 1)")                                                   \
        for (int64_t b = 0; b < bs; b++) {                                                        \
            SETUP                                                                                 \
            init_scores(score, mask + b * n, n);                                                  \
            int64_t c = start[b];                                                                 \
            for (int64_t k = 0; k < M; k++) {                                                     \
                idx[b * M + k] = c;                                                               \
                score[c] = -2.0;                                                                  \
                for (int64_t j = 0; j < n; j++) {                                                 \
                    double s = score[j];                                                          \
                    if (s <= 0) continue;                                                         \
                    UPDATE                                                                        \
                }                                                                                 \
                c = first_argmax(score, n);                                                       \
            }                                                                                     \
        }                                                                                         \
        free(score);                                                                              \
    }

/* Flat groups: f (bs, n, d); d^2 = sum_e (f_je - f_ce)^2, summed in order e = 0, 1, ... */
void lc_fps_flat_f64(const double *f, const uint8_t *mask, int64_t bs, int64_t n, int64_t d,
                     const int64_t *start, int64_t M, int64_t *idx, int threads) {
    FPS_LOOP(const double *fb = f + b * n * d;,
             double acc = 0;
             for (int64_t e = 0; e < d; e++) { double x = fb[j * d + e] - fb[c * d + e]; acc = acc + x * x; }
             if (acc < s) score[j] = acc;)
}

/* Orthogonal linear parts with one rotation plane (m = 2, 3): R (bs, n, m m), t (bs, n, m) or
 * NULL, qs (bs, n, qd) or NULL, as for lc_orth_ball_select; lb (bs, n, L): the concatenated t and
 * qs of the lower bound. */
void lc_fps_orth_f64(const double *R, const double *t, const double *qs, const double *lb, int64_t L,
                     int64_t qd, int64_t m, const uint8_t *mask, int64_t bs, int64_t n,
                     const int64_t *start, int64_t M, int64_t *idx, int threads, int sum_form) {
    FPS_LOOP(const double *Rb = R + b * n * m * m; const double *tb = t ? t + b * n * m : NULL;
             const double *qb = qs ? qs + b * n * qd : NULL; const double *lbb = lb + b * n * L;,
             double low = 0;
             for (int64_t e = 0; e < L; e++) { double x = lbb[j * L + e] - lbb[c * L + e]; low += x * x; }
             if (low > s * (1 + SKIP_MARGIN)) continue;
             double perp; double along;
             double rot2 = orth_parts_double(Rb + c * m * m, Rb + j * m * m, tb ? tb + c * m : NULL,
                                             tb ? tb + j * m : NULL, m, &perp, &along);
             double acc = 0;
             if (qb)
                 for (int64_t e = 0; e < qd; e++) { double x = qb[c * qd + e] - qb[j * qd + e]; acc = acc + x * x; }
             double d2;
             if (sum_form) { /* (|rotation part| + |rest|)^2 */
                 d2 = sum_sq_double(rot2, perp + along + acc);
             } else {
                 d2 = rot2 + perp + along;
                 if (qb) d2 = d2 + acc;
             }
             if (d2 < s) score[j] = d2;)
}
