/* The swish (silu) and its derivative in float and double, for the native kernels.
 *
 * exp is a Cody-Waite reduction and a Taylor polynomial (degree 7 in float, 13 in double: below
 * half an ulp before rounding), branch-free so loops over channels vectorize.
 */
#ifndef LIECONV_ACT_H
#define LIECONV_ACT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = rintf(x * 1.44269504088896341f);
    float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

INLINE double exp_f64(double x) {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double n = rint(x * 1.4426950408889634074);
    double r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
    static const double inv_fact[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                        1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
                                        1.0 / 479001600, 1.0 / 6227020800.0};
    double p = inv_fact[13];
    for (int i = 12; i >= 0; i--) p = p * r + inv_fact[i];
    int64_t bits = ((int64_t)n + 1023) << 52;
    double s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

#define ACT_FUNCTIONS(T, SFX)                                                                    \
INLINE T silu_##SFX(T y) { return y / ((T)1 + exp_##SFX(-y)); }                                  \
                                                                                                 \
INLINE T dsilu_##SFX(T y) {                                                                      \
    T s = (T)1 / ((T)1 + exp_##SFX(-y));                                                         \
    return s * ((T)1 + y * ((T)1 - s));                                                          \
}

ACT_FUNCTIONS(float, f32)
ACT_FUNCTIONS(double, f64)

#endif
