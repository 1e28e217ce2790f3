/* Training-mode batch norm fused with the swish after it, forward and backward
 * (lieconv_runtime.native, used by lieconv_runtime.nn.fused for the kernel MLP).
 *
 * z (P, C) row-major; batch statistics over the P rows in double (shifted by the first row, so
 * no cancellation when |mean| >> std); y = z * scale + shift with scale = gamma / sqrt(var + eps),
 * shift = beta - mean * scale; out = silu(y) = y / (1 + exp(-y)) (act) or y.
 * Backward from g = d/dout: dy = g silu'(y) (act) or g; dbeta = sum dy, dgamma = sum dy xhat;
 * dz = scale (dy - dbeta / P - xhat dgamma / P), xhat = (z - mean) / sqrt(var + eps).
 * Each runs as one parallel region: a reduction pass, a barrier, an elementwise pass over the
 * same rows (a thread sees its rows again while they are still in its cache).  The row kernels
 * are specialised for 16, 32 and 64 channels (the kernel MLP's widths: fully unrolled, the
 * channel sums in registers) and for act on or off.
 * The swish and its derivative come from act.h.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "act.h"
#include "par.h"

/* Calls KERNEL(c) with c a compile-time constant for the common channel counts. */
#define BY_CHANNELS(C, KERNEL)                                                                   \
    switch (C) {                                                                                 \
    case 16: KERNEL(16); break;                                                                  \
    case 32: KERNEL(32); break;                                                                  \
    case 64: KERNEL(64); break;                                                                  \
    default: KERNEL(C);                                                                          \
    }

/* Per-thread channel sums a1, a2 added into the shared s1, s2; then every thread waits. */
#define ADD_SHARED(a1, a2, s1, s2, C)                                                            \
    _Pragma("omp critical")                                                                      \
    for (int64_t c = 0; c < C; c++) { s1[c] += a1[c]; s2[c] += a2[c]; }                          \
    _Pragma("omp barrier")

#define BN_ACT(T, SFX)                                                                      \
/* a1 += z - K, a2 += (z - K)^2 over rows [p0, p1), K = row 0 */                                 \
INLINE void stats_##SFX(const T *restrict z, int64_t p0, int64_t p1, int64_t C, double *restrict a1, \
                        double *restrict a2) {                                                   \
    for (int64_t p = p0; p < p1; p++) {                                                          \
        const T *restrict zr = z + p * C;                                                        \
        _Pragma("omp simd")                                                                      \
        for (int64_t c = 0; c < C; c++) {                                                        \
            double d = (double)zr[c] - (double)z[c];                                             \
            a1[c] += d;                                                                          \
            a2[c] += d * d;                                                                      \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
INLINE void apply_##SFX(const T *restrict z, T *restrict out, int64_t p0, int64_t p1, int64_t C, \
                        const T *restrict scale, const T *restrict shift, int act) {             \
    for (int64_t p = p0; p < p1; p++) {                                                          \
        const T *restrict zr = z + p * C;                                                        \
        T *restrict o = out + p * C;                                                             \
        if (act) {                                                                               \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < C; c++) o[c] = silu_##SFX(zr[c] * scale[c] + shift[c]);      \
        } else {                                                                                 \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < C; c++) o[c] = zr[c] * scale[c] + shift[c];                  \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* gz = dy = g act'(y); a1 += dy, a2 += dy (z - mean); gz may be g (in place) */                   \
INLINE void grad_##SFX(const T *restrict z, const T *g, T *gz, int64_t p0, int64_t p1,           \
                       int64_t C, const T *restrict scale, const T *restrict shift,              \
                       const double *restrict mean, int act, double *restrict a1, double *restrict a2) { \
    for (int64_t p = p0; p < p1; p++) {                                                          \
        const T *restrict zr = z + p * C, *gr = g + p * C;                                       \
        T *o = gz + p * C;                                                                       \
        if (act) {                                                                               \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < C; c++) o[c] = gr[c] * dsilu_##SFX(zr[c] * scale[c] + shift[c]); \
        } else {                                                                                 \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < C; c++) o[c] = gr[c];                                        \
        }                                                                                        \
        _Pragma("omp simd")                                                                      \
        for (int64_t c = 0; c < C; c++) {                                                        \
            a1[c] += (double)o[c];                                                               \
            a2[c] += (double)o[c] * ((double)zr[c] - mean[c]);                                   \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
INLINE void normgrad_##SFX(const T *restrict z, T *restrict gz, int64_t p0, int64_t p1, int64_t C, \
                           const T *restrict scale, const T *restrict kz, const T *restrict k0) { \
    for (int64_t p = p0; p < p1; p++) {                                                          \
        const T *restrict zr = z + p * C;                                                        \
        T *restrict o = gz + p * C;                                                              \
        _Pragma("omp simd")                                                                      \
        for (int64_t c = 0; c < C; c++) o[c] = o[c] * scale[c] + (zr[c] * kz[c] + k0[c]);        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* out = act(batch_norm(z)); mean, var (C): batch mean and biased variance. */                   \
void lc_bn_act_fwd_##SFX(const T *z, int64_t P, int64_t C, const T *gamma, const T *beta, double eps, \
                         int act, T *out, double *mean, double *var, int threads) {               \
    double *s1 = (double *)calloc((size_t)(2 * C), sizeof(double)), *s2 = s1 + C;               \
    T *scale = (T *)malloc(sizeof(T) * 2 * C), *shift = scale + C;                               \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int64_t p0, p1;                                                                          \
        my_rows(P, &p0, &p1);                                                                    \
        double *a1 = (double *)calloc((size_t)(2 * C), sizeof(double)), *a2 = a1 + C;            \
        BY_CHANNELS(C, STATS_##SFX)                                                              \
        ADD_SHARED(a1, a2, s1, s2, C)                                                            \
        free(a1);                                                                                \
        _Pragma("omp single")                                                                    \
        for (int64_t c = 0; c < C; c++) {                                                        \
            double m1 = s1[c] / (double)P, v = s2[c] / (double)P - m1 * m1;                      \
            mean[c] = (double)z[c] + m1;                                                         \
            var[c] = v > 0 ? v : 0;                                                              \
            double sc = (double)gamma[c] / sqrt(var[c] + eps);                                   \
            scale[c] = (T)sc;                                                                    \
            shift[c] = (T)((double)beta[c] - mean[c] * sc);                                      \
        }                                                                                        \
        if (act) { BY_CHANNELS(C, APPLY1_##SFX) } else { BY_CHANNELS(C, APPLY0_##SFX) }          \
    }                                                                                            \
    free(s1);                                                                                    \
    free(scale);                                                                                 \
}                                                                                                \
                                                                                                 \
/* gz = d/dz from g = d/dout (gz may be g); dgamma = sum dy xhat, dbeta = sum dy (C, double). */                \
void lc_bn_act_bwd_##SFX(const T *z, const T *g, int64_t P, int64_t C, const T *gamma, const T *beta, \
                         const double *mean, const double *invstd, int act, T *gz, double *dgamma, \
                         double *dbeta, int threads) {                                           \
    double *s1 = (double *)calloc((size_t)(2 * C), sizeof(double)), *s2 = s1 + C;               \
    T *scale = (T *)malloc(sizeof(T) * 4 * C), *shift = scale + C, *kz = scale + 2 * C, *k0 = scale + 3 * C; \
    for (int64_t c = 0; c < C; c++) {                                                            \
        double sc = (double)gamma[c] * invstd[c];                                                \
        scale[c] = (T)sc;                                                                        \
        shift[c] = (T)((double)beta[c] - mean[c] * sc);                                          \
    }                                                                                            \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int64_t p0, p1;                                                                          \
        my_rows(P, &p0, &p1);                                                                    \
        double *a1 = (double *)calloc((size_t)(2 * C), sizeof(double)), *a2 = a1 + C;            \
        if (act) { BY_CHANNELS(C, GRAD1_##SFX) } else { BY_CHANNELS(C, GRAD0_##SFX) }            \
        ADD_SHARED(a1, a2, s1, s2, C)                                                            \
        free(a1);                                                                                \
        _Pragma("omp single")                                                                    \
        for (int64_t c = 0; c < C; c++) {                                                        \
            dbeta[c] = s1[c];                                                                    \
            dgamma[c] = s2[c] * invstd[c];                                                       \
            double sc = (double)gamma[c] * invstd[c], u = dgamma[c] / (double)P;                 \
            kz[c] = (T)(-sc * invstd[c] * u);                                                    \
            k0[c] = (T)(-sc * (s1[c] / (double)P - mean[c] * invstd[c] * u));                    \
        }                                                                                        \
        BY_CHANNELS(C, NORMGRAD_##SFX)                                                           \
    }                                                                                            \
    free(s1);                                                                                    \
    free(scale);                                                                                 \
}

/* The row kernels with a channel count cc (a constant in BY_CHANNELS' cases). */
#define STATS_f32(cc) stats_f32(z, p0, p1, cc, a1, a2)
#define STATS_f64(cc) stats_f64(z, p0, p1, cc, a1, a2)
#define APPLY1_f32(cc) apply_f32(z, out, p0, p1, cc, scale, shift, 1)
#define APPLY0_f32(cc) apply_f32(z, out, p0, p1, cc, scale, shift, 0)
#define APPLY1_f64(cc) apply_f64(z, out, p0, p1, cc, scale, shift, 1)
#define APPLY0_f64(cc) apply_f64(z, out, p0, p1, cc, scale, shift, 0)
#define GRAD1_f32(cc) grad_f32(z, g, gz, p0, p1, cc, scale, shift, mean, 1, a1, a2)
#define GRAD0_f32(cc) grad_f32(z, g, gz, p0, p1, cc, scale, shift, mean, 0, a1, a2)
#define GRAD1_f64(cc) grad_f64(z, g, gz, p0, p1, cc, scale, shift, mean, 1, a1, a2)
#define GRAD0_f64(cc) grad_f64(z, g, gz, p0, p1, cc, scale, shift, mean, 0, a1, a2)
#define NORMGRAD_f32(cc) normgrad_f32(z, gz, p0, p1, cc, scale, kz, k0)
#define NORMGRAD_f64(cc) normgrad_f64(z, gz, p0, p1, cc, scale, kz, k0)

BN_ACT(float, f32)
BN_ACT(double, f64)
