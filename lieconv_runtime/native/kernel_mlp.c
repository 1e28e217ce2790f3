/* The kernel MLP of a LieConv layer in training mode, forward and backward in a few fused passes
 * (lieconv_runtime.native, used by lieconv_runtime.nn.lean.fused_kernel_mlp).
 *
 * For P rows (pairs) x (P, D), hidden width H and output width O (multiples of the vector length):
 *
 *   h1 = xc A + c                 (the first linear map with its batch norm folded in, computed
 *                                  by the caller: xc = x - mean(x), A (D, H), c (H))
 *   z2 = silu(h1) W2t             (W2t (H, H): the second weight transposed; its bias cancels in
 *                                  the batch norm after it, so it only enters the running mean)
 *   z3 = silu(bn2(z2)) W3t        (W3t (H, O); likewise without bias)
 *   y  = bn3(z3), or silu(bn3(z3)) (act)
 *
 * bn: batch statistics over the P rows (each block's sums in T, shifted by the thread's first
 * row, added up in double; threads combined by Chan's formula), then scale = gamma /
 * sqrt(var + eps) and shift = beta - mean scale.  Forward: pass 1 (h1, z2, statistics of z2), pass 2 (z3, statistics
 * of z3), pass 3 (y); z2 and z3 are kept for backward, h1 and the activations recomputed.
 * Backward from gy = d/dy: pass A sums the bn3 statistics' gradients; pass B forms d/dz3, d/dW3,
 * d/d(silu(bn2 z2)) and the bn2 sums (d/d(bn2 output) kept in a (P, H) buffer); pass C forms
 * d/dz2, d/dW2, d/dh1 and from it d/dA and d/dc.  Each pass runs over blocks of BLOCK rows, whose
 * activations stay in the cache; the products run on register tiles of RT rows x 2 vectors
 * (a row's scalar broadcast against a weight row) and the weight gradients as sums of rank-one
 * updates.  The swish's sigmoid is computed once per entry and serves the swish and its
 * derivative.  One parallel region per call; per-thread sums are added at the barriers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "act.h"
#include "par.h"

#define BLOCK 64 /* rows per block */
#define RT 8     /* rows (or weight-gradient rows) per register tile */
#define MAXC 1024 /* the widest layer (H, O) the kernels take */

/* Batch statistics from per-thread sums: n[t] rows, shift K[t * ld + c], s1 = sum (z - K),
 * s2 = sum (z - K)^2 (c < C) -> mean, biased var (Chan's parallel combination). */
static void combine_stats(int nt, int64_t C, int64_t ld, const int64_t *n, const double *K, const double *s1,
                          const double *s2, double *mean, double *var) {
    int64_t total = 0;
    for (int t = 0; t < nt; t++) total += n[t];
    for (int64_t c = 0; c < C; c++) {
        double m = 0, m2 = 0;
        for (int t = 0; t < nt; t++)
            if (n[t]) m += (double)n[t] * (K[t * ld + c] + s1[t * ld + c] / (double)n[t]);
        m = total ? m / (double)total : 0;
        for (int t = 0; t < nt; t++) {
            if (!n[t]) continue;
            double mt = K[t * ld + c] + s1[t * ld + c] / (double)n[t];
            m2 += s2[t * ld + c] - s1[t * ld + c] * s1[t * ld + c] / (double)n[t] + (double)n[t] * (mt - m) * (mt - m);
        }
        mean[c] = m;
        var[c] = total && m2 > 0 ? m2 / (double)total : 0;
    }
}

/* The vector width the kernels were built for (H and O must be multiples of it, in elements). */
int lc_vec_bytes(void) { return VEC_BYTES; }

#define KERNEL_MLP(T, SFX)                                                                       \
typedef vec_##SFX V_##SFX;                                                                       \
enum { VL_##SFX = VEC_BYTES / (int)sizeof(T) };                                                  \
                                                                                                 \
/* Z[r, n0 : n0 + NV VL] = bias + sum_k A[r lda + k] B[k N + n0 ...] for r < nr (a register tile) */ \
INLINE void mm_cols_##SFX(int nr, int NV, const T *A, int64_t lda, int64_t K, const T *B, int64_t N, \
                          int64_t n0, const T *bias, T *Z, int64_t ldz) {                        \
    V_##SFX acc[RT][2];                                                                          \
    for (int r = 0; r < RT; r++)                                                                 \
        for (int v = 0; v < NV; v++)                                                             \
            acc[r][v] = bias ? *(const V_##SFX *)(bias + n0 + v * VL_##SFX) : (V_##SFX){0};       \
    for (int64_t k = 0; k < K; k++) {                                                            \
        V_##SFX b[2];                                                                            \
        for (int v = 0; v < NV; v++) b[v] = *(const V_##SFX *)(B + k * N + n0 + v * VL_##SFX);   \
        for (int r = 0; r < RT; r++) {                                                           \
            if (r >= nr) break;                                                                  \
            T x = A[r * lda + k];                                                                \
            for (int v = 0; v < NV; v++) acc[r][v] += x * b[v];                                  \
        }                                                                                        \
    }                                                                                            \
    for (int r = 0; r < nr; r++)                                                                 \
        for (int v = 0; v < NV; v++) *(V_##SFX *)(Z + r * ldz + n0 + v * VL_##SFX) = acc[r][v];  \
}                                                                                                \
                                                                                                 \
/* Z (nb, N) = bias + A (nb, K) B (K, N), rows of A and Z lda and ldz apart; N a multiple of VL */ \
static void mm_##SFX(int64_t nb, const T *A, int64_t lda, int64_t K, const T *B, int64_t N,      \
                     const T *bias, T *Z, int64_t ldz) {                                         \
    for (int64_t r0 = 0; r0 < nb; r0 += RT) {                                                    \
        int nr = nb - r0 < RT ? (int)(nb - r0) : RT;                                             \
        const T *Ar = A + r0 * lda;                                                              \
        T *Zr = Z + r0 * ldz;                                                                    \
        int64_t n0 = 0;                                                                          \
        for (; n0 + 2 * VL_##SFX <= N; n0 += 2 * VL_##SFX) {                                     \
            if (nr == RT) mm_cols_##SFX(RT, 2, Ar, lda, K, B, N, n0, bias, Zr, ldz);              \
            else mm_cols_##SFX(nr, 2, Ar, lda, K, B, N, n0, bias, Zr, ldz);                       \
        }                                                                                        \
        if (n0 < N) {                                                                            \
            if (nr == RT) mm_cols_##SFX(RT, 1, Ar, lda, K, B, N, n0, bias, Zr, ldz);              \
            else mm_cols_##SFX(nr, 1, Ar, lda, K, B, N, n0, bias, Zr, ldz);                       \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* G (O, I) += sum_{r < nb} g[r ldg + o] x[r I + i]: a weight's gradient over a block of rows */  \
static void grad_acc_##SFX(int64_t nb, const T *g, int64_t ldg, int64_t O, const T *x, int64_t I, T *G) { \
    for (int64_t o0 = 0; o0 < O; o0 += RT) {                                                     \
        int no = O - o0 < RT ? (int)(O - o0) : RT;                                               \
        for (int64_t i0 = 0; i0 < I; i0 += 2 * VL_##SFX) {                                        \
            int nv = I - i0 >= 2 * VL_##SFX ? 2 : 1;                                             \
            V_##SFX acc[RT][2];                                                                  \
            for (int o = 0; o < RT; o++)                                                         \
                for (int v = 0; v < 2; v++)                                                      \
                    acc[o][v] = o < no && v < nv ? *(V_##SFX *)(G + (o0 + o) * I + i0 + v * VL_##SFX) \
                                                 : (V_##SFX){0};                                 \
            for (int64_t r = 0; r < nb; r++) {                                                   \
                V_##SFX xv0 = *(const V_##SFX *)(x + r * I + i0);                                 \
                V_##SFX xv1 = nv == 2 ? *(const V_##SFX *)(x + r * I + i0 + VL_##SFX) : xv0;      \
                const T *gr = g + r * ldg + o0;                                                  \
                for (int o = 0; o < RT; o++) {                                                   \
                    T s = o < no ? gr[o] : (T)0;                                                 \
                    acc[o][0] += s * xv0;                                                        \
                    acc[o][1] += s * xv1;                                                        \
                }                                                                                \
            }                                                                                    \
            for (int o = 0; o < no; o++)                                                         \
                for (int v = 0; v < nv; v++) *(V_##SFX *)(G + (o0 + o) * I + i0 + v * VL_##SFX) = acc[o][v]; \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* s1 += z - K, s2 += (z - K)^2 over nb <= BLOCK rows of C <= MAXC (K: the thread's first row,     \
 * set if *have == 0); the block's sums in T, added into the double ones */                     \
static void stats_acc_##SFX(const T *z, int64_t nb, int64_t C, double *K, int *have, double *s1, double *s2) { \
    if (!*have && nb) {                                                                          \
        for (int64_t c = 0; c < C; c++) K[c] = (double)z[c];                                     \
        *have = 1;                                                                               \
    }                                                                                            \
    T k[MAXC], p1[MAXC] = {0}, p2[MAXC] = {0};                                                   \
    for (int64_t c = 0; c < C; c++) k[c] = (T)K[c];                                              \
    for (int64_t r = 0; r < nb; r++) {                                                           \
        const T *zr = z + r * C;                                                                 \
        _Pragma("omp simd")                                                                      \
        for (int64_t c = 0; c < C; c++) {                                                        \
            T d = zr[c] - k[c];                                                                  \
            p1[c] += d;                                                                          \
            p2[c] += d * d;                                                                      \
        }                                                                                        \
    }                                                                                            \
    for (int64_t c = 0; c < C; c++) {                                                            \
        s1[c] += (double)p1[c];                                                                  \
        s2[c] += (double)p2[c];                                                                  \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* a1 += sum_r d[r], a2 += sum_r d[r] (z[r] - mean) over nb <= BLOCK rows of C <= MAXC (the      \
 * batch-norm backward sums; the block's in T, added into the double ones) */                   \
static void grad_sums_##SFX(const T *d, const T *z, int64_t nb, int64_t C, const double *mean,   \
                            double *a1, double *a2) {                                            \
    T m[MAXC], p1[MAXC] = {0}, p2[MAXC] = {0};                                                   \
    for (int64_t c = 0; c < C; c++) m[c] = (T)mean[c];                                           \
    for (int64_t r = 0; r < nb; r++) {                                                           \
        _Pragma("omp simd")                                                                      \
        for (int64_t c = 0; c < C; c++) {                                                        \
            p1[c] += d[r * C + c];                                                               \
            p2[c] += d[r * C + c] * (z[r * C + c] - m[c]);                                       \
        }                                                                                        \
    }                                                                                            \
    for (int64_t c = 0; c < C; c++) {                                                            \
        a1[c] += (double)p1[c];                                                                  \
        a2[c] += (double)p2[c];                                                                  \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* h = silu(pre) for n entries; sig (if not NULL) keeps sigmoid(pre) */                          \
static void swish_##SFX(const T *pre, int64_t n, T *h, T *sig) {                                 \
    if (sig) {                                                                                   \
        _Pragma("omp simd")                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                        \
            sig[i] = (T)1 / ((T)1 + exp_##SFX(-pre[i]));                                         \
            h[i] = pre[i] * sig[i];                                                              \
        }                                                                                        \
    } else {                                                                                     \
        _Pragma("omp simd")                                                                      \
        for (int64_t i = 0; i < n; i++) h[i] = silu_##SFX(pre[i]);                               \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* g *= silu'(pre) from sig = sigmoid(pre), for n entries */                                     \
static void swish_grad_##SFX(T *g, const T *pre, const T *sig, int64_t n) {                      \
    _Pragma("omp simd")                                                                          \
    for (int64_t i = 0; i < n; i++) g[i] *= sig[i] * ((T)1 + pre[i] * ((T)1 - sig[i]));          \
}                                                                                                \
                                                                                                 \
/* pre = xc A + c, h = silu(pre) for nb rows (h, pre (nb, H)); sig (if not NULL): sigmoid(pre) */  \
static void first_layer_##SFX(const T *xc, int64_t nb, int64_t D, const T *A, const T *c, int64_t H, \
                              T *h, T *pre, T *sig) {                                            \
    mm_##SFX(nb, xc, D, D, A, H, c, pre, H);                                                     \
    swish_##SFX(pre, nb * H, h, sig);                                                            \
}                                                                                                \
                                                                                                 \
/* out = z scale + shift for nb rows of C (the batch norm with its statistics) */                \
static void bn_apply_##SFX(const T *z, int64_t nb, int64_t C, const T *scale, const T *shift, T *out) { \
    for (int64_t r = 0; r < nb; r++) {                                                           \
        _Pragma("omp simd")                                                                      \
        for (int64_t j = 0; j < C; j++) out[r * C + j] = z[r * C + j] * scale[j] + shift[j];     \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* d = g silu'(z scale + shift) for nb rows of C (the gradient through the output's swish); d */ \
static const T *out_grad_##SFX(const T *g, const T *z, int64_t nb, int64_t C, const T *scale,    \
                               const T *shift, T *d) {                                           \
    for (int64_t r = 0; r < nb; r++) {                                                           \
        _Pragma("omp simd")                                                                      \
        for (int64_t j = 0; j < C; j++)                                                          \
            d[r * C + j] = g[r * C + j] * dsilu_##SFX(z[r * C + j] * scale[j] + shift[j]);       \
    }                                                                                            \
    return d;                                                                                    \
}                                                                                                \
                                                                                                 \
/* out = d scale + z kz + k0 (batch-norm backward; out may be d) for nb rows of C */            \
static void bn_grad_##SFX(const T *d, const T *z, int64_t nb, int64_t C, const T *scale, const T *kz, \
                          const T *k0, T *out) {                                                 \
    for (int64_t r = 0; r < nb; r++) {                                                           \
        _Pragma("omp simd")                                                                      \
        for (int64_t j = 0; j < C; j++) out[r * C + j] = d[r * C + j] * scale[j] + (z[r * C + j] * kz[j] + k0[j]); \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* The threads' (n, K, s1, s2) (rows ld apart) combined; scale, shift from gamma, beta, eps */    \
static void finish_bn_##SFX(int nt, int64_t C, int64_t ld, const int64_t *n, const double *K,    \
                            const double *s1, const double *s2, const T *gamma, const T *beta,   \
                            double eps, double *mean, double *var, T *scale, T *shift) {         \
    combine_stats(nt, C, ld, n, K, s1, s2, mean, var);                                           \
    for (int64_t c = 0; c < C; c++) {                                                            \
        double sc = (double)gamma[c] / sqrt(var[c] + eps);                                       \
        scale[c] = (T)sc;                                                                        \
        shift[c] = (T)((double)beta[c] - mean[c] * sc);                                          \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
void lc_kmlp_fwd_##SFX(const T *xc, int64_t P, int64_t D, const T *A, const T *c, const T *W2t, \
                       const T *g2, const T *be2, const T *W3t, const T *g3, const T *be3,      \
                       int64_t H, int64_t O, double eps2, double eps3, int act, T *z2, T *z3, T *y, \
                       double *mean2, double *var2, double *mean3, double *var3, int threads) {  \
    int64_t C = H > O ? H : O;                                                                   \
    int64_t *n = (int64_t *)calloc((size_t)threads, sizeof(int64_t));                            \
    double *K = (double *)calloc((size_t)(3 * threads * C), sizeof(double));                     \
    double *s1 = K + threads * C, *s2 = s1 + threads * C;                                        \
    T *sc2 = (T *)malloc(sizeof(T) * (size_t)(2 * H + 2 * O));                                   \
    T *sh2 = sc2 + H, *sc3 = sh2 + H, *sh3 = sc3 + O;                                            \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int t = omp_get_thread_num(), nt = omp_get_num_threads(), have = 0;                     \
        int64_t p0, p1;                                                                          \
        my_rows(P, &p0, &p1);                                                                    \
        n[t] = p1 - p0;                                                                          \
        T *h = (T *)malloc(sizeof(T) * BLOCK * (size_t)(2 * H));                                 \
        T *pre = h + BLOCK * H;                                                                  \
        for (int64_t b = p0; b < p1; b += BLOCK) { /* pass 1: z2 and its statistics */           \
            int64_t nb = p1 - b < BLOCK ? p1 - b : BLOCK;                                        \
            first_layer_##SFX(xc + b * D, nb, D, A, c, H, h, pre, NULL);                         \
            mm_##SFX(nb, h, H, H, W2t, H, NULL, z2 + b * H, H);                                   \
            stats_acc_##SFX(z2 + b * H, nb, H, K + t * C, &have, s1 + t * C, s2 + t * C);        \
        }                                                                                        \
        _Pragma("omp barrier")                                                                   \
        _Pragma("omp single")                                                                    \
        {                                                                                        \
            finish_bn_##SFX(nt, H, C, n, K, s1, s2, g2, be2, eps2, mean2, var2, sc2, sh2);       \
            memset(s1, 0, sizeof(double) * (size_t)(2 * threads * C));                           \
        }                                                                                        \
        have = 0;                                                                                \
        for (int64_t b = p0; b < p1; b += BLOCK) { /* pass 2: z3 and its statistics */           \
            int64_t nb = p1 - b < BLOCK ? p1 - b : BLOCK;                                        \
            bn_apply_##SFX(z2 + b * H, nb, H, sc2, sh2, pre);                                    \
            swish_##SFX(pre, nb * H, h, NULL);                                                   \
            mm_##SFX(nb, h, H, H, W3t, O, NULL, z3 + b * O, O);                                   \
            stats_acc_##SFX(z3 + b * O, nb, O, K + t * C, &have, s1 + t * C, s2 + t * C);        \
        }                                                                                        \
        free(h);                                                                                 \
        _Pragma("omp barrier")                                                                   \
        _Pragma("omp single")                                                                    \
        finish_bn_##SFX(nt, O, C, n, K, s1, s2, g3, be3, eps3, mean3, var3, sc3, sh3);           \
        bn_apply_##SFX(z3 + p0 * O, p1 - p0, O, sc3, sh3, y + p0 * O); /* pass 3: y */           \
        if (act) swish_##SFX(y + p0 * O, (p1 - p0) * O, y + p0 * O, NULL);                       \
    }                                                                                            \
    free(n);                                                                                     \
    free(K);                                                                                     \
    free(sc2);                                                                                   \
}                                                                                                \
                                                                                                 \
/* Per-thread sums (a1 = sum dy, a2 = sum dy (z - mean), rows ld apart) -> dbeta, dgamma and the \
 * constants of dz = dy scale + z kz + k0 (the batch-norm backward) */                          \
static void finish_bn_grad_##SFX(int nt, int64_t P, int64_t C, int64_t ld, const double *a1, const double *a2, \
                                 const T *gamma, const double *mean, const double *invstd,       \
                                 double *dgamma, double *dbeta, T *kz, T *k0) {                  \
    for (int64_t c = 0; c < C; c++) {                                                            \
        double b = 0, g = 0;                                                                     \
        for (int t = 0; t < nt; t++) {                                                           \
            b += a1[t * ld + c];                                                                 \
            g += a2[t * ld + c];                                                                 \
        }                                                                                        \
        dbeta[c] = b;                                                                            \
        dgamma[c] = g * invstd[c];                                                               \
        double sc = (double)gamma[c] * invstd[c], u = dgamma[c] / (double)P;                     \
        kz[c] = (T)(-sc * invstd[c] * u);                                                        \
        k0[c] = (T)(-sc * (b / (double)P - mean[c] * invstd[c] * u));                            \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* Gradients of lc_kmlp_fwd from gy (P, O): gA (D, H), gc (H), gW2 (H, H) and gW3 (O, H) in the  \
 * weights' own (out, in) layout, dgamma/dbeta (double) of both batch norms.  W2 (H, H) and W3    \
 * (O, H) are the weights as stored; buf is (P, H) scratch. */                                    \
void lc_kmlp_bwd_##SFX(const T *xc, int64_t P, int64_t D, const T *A, const T *c, const T *W2,  \
                       const T *g2, const T *be2, const T *W3, const T *g3, const T *be3,       \
                       int64_t H, int64_t O, const double *mean2, const double *invstd2,         \
                       const double *mean3, const double *invstd3, int act, const T *z2,         \
                       const T *z3, const T *gy, T *buf, T *gA, T *gc, T *gW2, T *gW3,           \
                       double *dg2, double *db2, double *dg3, double *db3, int threads) {        \
    int64_t C = H > O ? H : O;                                                                   \
    double *a1 = (double *)calloc((size_t)(2 * threads * C), sizeof(double)), *a2 = a1 + threads * C; \
    T *k = (T *)malloc(sizeof(T) * (size_t)(4 * H + 4 * O));                                     \
    T *sc2 = k, *sh2 = k + H, *kz2 = k + 2 * H, *k02 = k + 3 * H;                                \
    T *sc3 = k + 4 * H, *sh3 = sc3 + O, *kz3 = sh3 + O, *k03 = kz3 + O;                          \
    for (int64_t j = 0; j < H; j++) {                                                            \
        double s = (double)g2[j] * invstd2[j];                                                   \
        sc2[j] = (T)s;                                                                           \
        sh2[j] = (T)((double)be2[j] - mean2[j] * s);                                             \
    }                                                                                            \
    for (int64_t j = 0; j < O; j++) {                                                            \
        double s = (double)g3[j] * invstd3[j];                                                   \
        sc3[j] = (T)s;                                                                           \
        sh3[j] = (T)((double)be3[j] - mean3[j] * s);                                             \
    }                                                                                            \
    memset(gA, 0, sizeof(T) * (size_t)(D * H));                                                  \
    memset(gc, 0, sizeof(T) * (size_t)H);                                                        \
    memset(gW2, 0, sizeof(T) * (size_t)(H * H));                                                 \
    memset(gW3, 0, sizeof(T) * (size_t)(O * H));                                                 \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int t = omp_get_thread_num(), nt = omp_get_num_threads();                               \
        int64_t p0, p1;                                                                          \
        my_rows(P, &p0, &p1);                                                                    \
        double *b1 = a1 + t * C, *b2 = a2 + t * C;                                               \
        T *dy = (T *)malloc(sizeof(T) * BLOCK * (size_t)(4 * H + O));                            \
        T *hb = dy + BLOCK * O, *gb = hb + BLOCK * H, *pre = gb + BLOCK * H, *sig = pre + BLOCK * H; \
        T *G = (T *)calloc((size_t)(D * H + H + H * H + O * H), sizeof(T));                      \
        T *GA = G, *Gc = G + D * H, *GW2 = Gc + H, *GW3 = GW2 + H * H;                           \
        for (int64_t b = p0; b < p1; b += BLOCK) { /* pass A: the bn3 sums */                     \
            int64_t nb = p1 - b < BLOCK ? p1 - b : BLOCK;                                        \
            const T *d3 = act ? out_grad_##SFX(gy + b * O, z3 + b * O, nb, O, sc3, sh3, dy) : gy + b * O; \
            grad_sums_##SFX(d3, z3 + b * O, nb, O, mean3, b1, b2);                               \
        }                                                                                        \
        _Pragma("omp barrier")                                                                   \
        _Pragma("omp single")                                                                    \
        {                                                                                        \
            finish_bn_grad_##SFX(nt, P, O, C, a1, a2, g3, mean3, invstd3, dg3, db3, kz3, k03);   \
            memset(a1, 0, sizeof(double) * (size_t)(2 * threads * C));                           \
        }                                                                                        \
        /* pass B: d/dz3, d/dW3, the bn2 output's gradient (into buf) and the bn2 sums */         \
        for (int64_t b = p0; b < p1; b += BLOCK) {                                               \
            int64_t nb = p1 - b < BLOCK ? p1 - b : BLOCK;                                        \
            const T *d3 = act ? out_grad_##SFX(gy + b * O, z3 + b * O, nb, O, sc3, sh3, dy) : gy + b * O; \
            bn_grad_##SFX(d3, z3 + b * O, nb, O, sc3, kz3, k03, dy);                             \
            bn_apply_##SFX(z2 + b * H, nb, H, sc2, sh2, pre);                                    \
            swish_##SFX(pre, nb * H, hb, sig);                                                   \
            grad_acc_##SFX(nb, dy, O, O, hb, H, GW3);                                            \
            T *d2 = buf + b * H;                                                                 \
            mm_##SFX(nb, dy, O, O, W3, H, NULL, d2, H);                                          \
            swish_grad_##SFX(d2, pre, sig, nb * H);                                              \
            grad_sums_##SFX(d2, z2 + b * H, nb, H, mean2, b1, b2);                               \
        }                                                                                        \
        _Pragma("omp barrier")                                                                   \
        _Pragma("omp single")                                                                    \
        finish_bn_grad_##SFX(nt, P, H, C, a1, a2, g2, mean2, invstd2, dg2, db2, kz2, k02);       \
        for (int64_t b = p0; b < p1; b += BLOCK) { /* pass C: d/dz2, d/dW2, d/dh1, d/dA, d/dc */  \
            int64_t nb = p1 - b < BLOCK ? p1 - b : BLOCK;                                        \
            bn_grad_##SFX(buf + b * H, z2 + b * H, nb, H, sc2, kz2, k02, gb);                    \
            first_layer_##SFX(xc + b * D, nb, D, A, c, H, hb, pre, sig);                         \
            grad_acc_##SFX(nb, gb, H, H, hb, H, GW2);                                            \
            mm_##SFX(nb, gb, H, H, W2, H, NULL, hb, H);                                          \
            swish_grad_##SFX(hb, pre, sig, nb * H);                                              \
            for (int64_t r = 0; r < nb; r++) {                                                   \
                _Pragma("omp simd")                                                              \
                for (int64_t j = 0; j < H; j++) Gc[j] += hb[r * H + j];                          \
            }                                                                                    \
            grad_acc_##SFX(nb, xc + b * D, D, D, hb, H, GA);                                     \
        }                                                                                        \
        _Pragma("omp critical")                                                                  \
        {                                                                                        \
            for (int64_t i = 0; i < D * H; i++) gA[i] += GA[i];                                  \
            for (int64_t i = 0; i < H; i++) gc[i] += Gc[i];                                      \
            for (int64_t i = 0; i < H * H; i++) gW2[i] += GW2[i];                                \
            for (int64_t i = 0; i < O * H; i++) gW3[i] += GW3[i];                                \
        }                                                                                        \
        free(dy);                                                                                \
        free(G);                                                                                 \
    }                                                                                            \
    free(a1);                                                                                    \
    free(k);                                                                                     \
}

KERNEL_MLP(float, f32)
KERNEL_MLP(double, f64)
