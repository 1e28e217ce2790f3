/* The closed-form squared distance of orthogonal groups with one rotation plane, shared by the
 * native kernels (ball_select.c, fps.c).  Compile its users with -ffp-contract=off. */
#ifndef LIECONV_ORTH_D2_H
#define LIECONV_ORTH_D2_H
#include <math.h>
#include <stdint.h>

/* orth_parts returns the rotation part 2 theta^2 and sets the two terms of |V^-1 u|^2 below
 * (rho^2 |u|^2 and (1 - rho^2) (u.n)^2); orth_d2 adds them in the order torch does.
 * Orthogonal linear parts, one rotation plane (m = 2, 3): d^2 = |hat(log(g_i^-1 g_j))|^2 in
 * closed form, as geometry.orthogonal_sq_norm_parts computes it: with P = R_i^T R_j, cos theta =
 * (tr P - (m - 2)) / 2, w = vee(P - P^T) (|w| = 2 sin theta), u = R_i^T (t_j - t_i):
 *   d^2 = 2 theta^2 + rho^2 |u|^2 + (1 - rho^2) (u.n)^2,  rho = (theta/2) / sin(theta/2),
 * (u.n)^2 = (u.w)^2 / |w|^2 while cos theta > -0.999, else (u^T P u - cos |u|^2) / (1 - cos),
 * plus |qs_i - qs_j|^2.  sin(theta/2) comes from sin and cos theta (no second transcendental). */
#define ORTH_D2(T, ATAN2, SQRT)                                                                  \
static inline T orth_parts_##T(const T *Ri, const T *Rj, const T *ti, const T *tj, int64_t m,     \
                               T *perp_part, T *along_part) {                                    \
    T P[9];                                                                                      \
    for (int64_t a = 0; a < m; a++)                                                              \
        for (int64_t bb = 0; bb < m; bb++) {                                                     \
            T acc = 0;                                                                           \
            for (int64_t p = 0; p < m; p++) acc = acc + Ri[p * m + a] * Rj[p * m + bb];          \
            P[a * m + bb] = acc;                                                                 \
        }                                                                                        \
    T tr = 0;                                                                                    \
    for (int64_t a = 0; a < m; a++) tr = tr + P[a * m + a];                                      \
    T cs = (tr - (T)(m - 2)) / 2, w[3] = {0, 0, 0}, a2 = 0;                                      \
    if (m == 3) {                                                                                \
        w[0] = P[7] - P[5]; w[1] = P[2] - P[6]; w[2] = P[3] - P[1];                              \
        a2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2];                                            \
    } else if (m == 2) {                                                                         \
        w[0] = P[2] - P[1];                                                                      \
        a2 = w[0] * w[0];                                                                        \
    }                                                                                            \
    T sn = SQRT(a2) / 2;                                                                         \
    T theta = ATAN2(sn, cs);                                                                     \
    T d2 = 2 * theta * theta;                                                                    \
    *perp_part = 0; *along_part = 0;                                                             \
    if (!ti) return d2;                                                                          \
    T half = theta / 2, rho;                                                                     \
    if (half < (T)1e-3) rho = 1 + half * half / 6;                                               \
    else {                                                                                       \
        T sin_half = cs >= 0 ? sn / (2 * SQRT((1 + cs) / 2)) : SQRT((1 - cs) / 2);               \
        rho = half / sin_half;                                                                   \
    }                                                                                            \
    T u[3] = {0, 0, 0}, uu = 0;                                                                  \
    for (int64_t a = 0; a < m; a++) {                                                            \
        T acc = 0;                                                                               \
        for (int64_t p = 0; p < m; p++) acc = acc + Ri[p * m + a] * (tj[p] - ti[p]);             \
        u[a] = acc;                                                                              \
        uu = uu + acc * acc;                                                                     \
    }                                                                                            \
    T along = 0;                                                                                 \
    if (m == 3) {                                                                                \
        if (cs > (T)-0.999) {                                                                    \
            T uw = u[0] * w[0] + u[1] * w[1] + u[2] * w[2];                                      \
            along = uw * uw / (a2 > TINY_##T ? a2 : TINY_##T);                                   \
        } else {                                                                                 \
            T uPu = 0;                                                                           \
            for (int64_t a = 0; a < 3; a++)                                                      \
                for (int64_t bb = 0; bb < 3; bb++) uPu = uPu + u[a] * P[a * 3 + bb] * u[bb];     \
            along = (uPu - cs * uu) / (1 - cs);                                                  \
        }                                                                                        \
    }                                                                                            \
    T rho2 = rho * rho;                                                                          \
    *perp_part = rho2 * uu;                                                                      \
    *along_part = (1 - rho2) * along;                                                            \
    return d2;                                                                                   \
}                                                                                                \
static inline T sum_sq_##T(T a2, T b2) { /* (sqrt(a2) + sqrt(b2))^2: the "sum" distance squared */ \
    T a = SQRT(a2 > 0 ? a2 : 0) + SQRT(b2 > 0 ? b2 : 0);                                         \
    return a * a;                                                                                \
}                                                                                                \
static inline T orth_d2_##T(const T *Ri, const T *Rj, const T *ti, const T *tj, int64_t m) {      \
    T perp, along;                                                                               \
    T d2 = orth_parts_##T(Ri, Rj, ti, tj, m, &perp, &along);                                     \
    return d2 + perp + along;                                                                    \
}

#define TINY_double 2.2250738585072014e-308
#define TINY_float 1.17549435e-38f
ORTH_D2(double, atan2, sqrt)
ORTH_D2(float, atan2f, sqrtf)

#endif
