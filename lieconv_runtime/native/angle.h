/* theta = atan2(sn, cs) for sn >= 0, branch-free (SIMD-friendly), shared by the native kernels.
 * atan on [0, tan(pi/12)] is a degree-8 polynomial in z^2 fitted in 40-digit arithmetic (error
 * within 1 ulp there, measured against mpmath); two exact reductions (z > 1: pi/2 - atan(1/z);
 * z > tan(pi/12): pi/6 + atan((z sqrt3 - 1) / (z + sqrt3))) add a few ulp. */
#ifndef LIECONV_ANGLE_H
#define LIECONV_ANGLE_H
#include <math.h>

#define PI 3.14159265358979323846
#define TAN_PI_12 0.26794919243112270647
#define SQRT3 1.73205080756887729353

/* atan(z) for |z| <= tan(pi/12): z P(z^2). */
static inline double atan_small(double z) {
    double x = z * z;
    double p = 0.044386717964435885998;
    p = p * x - 0.064831131187869593146;
    p = p * x + 0.076793593054984274907;
    p = p * x - 0.09090370571330197105;
    p = p * x + 0.11111097878831366678;
    p = p * x - 0.14285714102473918225;
    p = p * x + 0.19999999998726288019;
    p = p * x - 0.33333333333329920051;
    p = p * x + 1.0;
    return z * p;
}

static inline double angle(double sn, double cs) {
    double ax = fabs(cs);
    int swap = sn > ax;
    double num = swap ? ax : sn, den = swap ? sn : ax;
    double z = den > 0 ? num / den : 0.0;
    int red = z > TAN_PI_12; /* atan(z) = pi/6 + atan((z sqrt3 - 1) / (z + sqrt3)) */
    double zr = red ? (z * SQRT3 - 1) / (z + SQRT3) : z;
    double phi = (red ? PI / 6 : 0.0) + atan_small(zr);
    phi = swap ? PI / 2 - phi : phi;
    return cs < 0 ? PI - phi : phi;
}

#endif
