/* The PointConv contraction with its neighbour gather, forward and backward
 * (lieconv_runtime.native, used by lieconv_runtime.nn.lean.silu_contract).
 *
 * For Q queries with K neighbour slots each, kernel values s (Q, K, W) (the swish of the kernel
 * MLP's output: 0 at padding slots), neighbour rows (Q, K) int64 into values v (R, C):
 *
 *   forward   p[q, w, c]  = sum_k s[q, k, w] v[rows[q, k], c]                  (Q, W, C)
 *   backward  gs[q, k, w] = sum_c v[rows[q, k], c] gp[q, w, c]                  (Q, K, W)
 *             gv[rows[q, k], c] += sum_w s[q, k, w] gp[q, w, c]                 (R, C)
 *
 * gp = d/dp.  The neighbour rows are read in place (never gathered into a (Q K, C) copy) and each
 * query's small products run on register tiles: p and the gv rows as (w or k) x c tiles along c,
 * gs as k x w tiles along w (from gp transposed per query).  Queries are split among threads;
 * each thread adds its gv rows into a private buffer spanning the rows it touches, summed into gv
 * at the end, so threads never write the same memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "par.h"

/* Rows of a register tile: TILE x 2 vectors of accumulators (16 with AVX-512's 32 registers). */
#define TILE 8

#define GATHER_CONTRACT(T, SFX)                                                                  \
typedef vec_##SFX V_##SFX;                                                                       \
enum { VL_##SFX = VEC_BYTES / (int)sizeof(T), CT_##SFX = 2 * VL_##SFX, KG_##SFX = 8 };           \
                                                                                                 \
/* The register tile of p and of the gv rows: acc[i][j] = sum_{r < nr} a[r ar + i ai]            \
 * b[(brows ? brows[r] : r) bs + j] for i < TILE, j < CT (a sum of rank-one updates) */           \
static inline void rank1_tile_##SFX(int64_t nr, const T *a, int64_t ar, int64_t ai, const T *b,  \
                                    const int64_t *brows, int64_t bs, V_##SFX acc[TILE][2]) {    \
    for (int i = 0; i < TILE; i++) acc[i][0] = acc[i][1] = (V_##SFX){0};                          \
    for (int64_t r = 0; r < nr; r++) {                                                           \
        const T *br = b + (brows ? brows[r] : r) * bs, *ar_ = a + r * ar;                        \
        V_##SFX b0 = *(const V_##SFX *)br, b1 = *(const V_##SFX *)(br + VL_##SFX);               \
        for (int i = 0; i < TILE; i++) {                                                         \
            T x = ar_[i * ai];                                                                   \
            acc[i][0] += x * b0;                                                                 \
            acc[i][1] += x * b1;                                                                 \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* p[w0 + i, c0 + j] = sum_k s[k, w0 + i] v[rows[k], c0 + j] for i < wn, j < cn (a tile) */      \
static inline void fwd_tile_##SFX(const T *restrict s, const T *restrict v, const int64_t *restrict rows, \
                                  int64_t K, int64_t W, int64_t C, int64_t w0, int64_t c0, int64_t wn, \
                                  int64_t cn, T *restrict p) {                                   \
    if (wn == TILE && cn == CT_##SFX) {                                                          \
        V_##SFX acc[TILE][2];                                                                    \
        rank1_tile_##SFX(K, s + w0, W, 1, v + c0, rows, C, acc);                                 \
        for (int i = 0; i < TILE; i++) {                                                         \
            *(V_##SFX *)(p + (w0 + i) * C + c0) = acc[i][0];                                     \
            *(V_##SFX *)(p + (w0 + i) * C + c0 + VL_##SFX) = acc[i][1];                          \
        }                                                                                        \
        return;                                                                                  \
    }                                                                                            \
    for (int64_t i = 0; i < wn; i++)                                                             \
        for (int64_t j = 0; j < cn; j++) p[(w0 + i) * C + c0 + j] = 0;                           \
    for (int64_t k = 0; k < K; k++) {                                                            \
        const T *restrict vr = v + rows[k] * C + c0, *restrict sr = s + k * W + w0;              \
        for (int64_t i = 0; i < wn; i++)                                                         \
            for (int64_t j = 0; j < cn; j++) p[(w0 + i) * C + c0 + j] += sr[i] * vr[j];          \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
void lc_gather_contract_fwd_##SFX(const T *s, const T *v, const int64_t *rows, int64_t Q, int64_t K, \
                                  int64_t W, int64_t C, T *p, int threads) {                     \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int64_t q0, q1;                                                                          \
        my_rows(Q, &q0, &q1);                                                                 \
        for (int64_t q = q0; q < q1; q++)                                                        \
            for (int64_t c0 = 0; c0 < C; c0 += CT_##SFX)                                         \
                for (int64_t w0 = 0; w0 < W; w0 += TILE)                                         \
                    fwd_tile_##SFX(s + q * K * W, v, rows + q * K, K, W, C, w0, c0,              \
                                   W - w0 < TILE ? W - w0 : TILE,                                \
                                   C - c0 < CT_##SFX ? C - c0 : CT_##SFX, p + q * W * C);        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* gs[k0 + a, w0 + i] = sum_c v[rows[k0 + a], c] gpt[c, w0 + i] (gpt: gp transposed, (C, W)) */  \
static inline void gs_tile_##SFX(const T *restrict v, const int64_t *restrict rows, const T *restrict gpt, \
                                 int64_t W, int64_t C, int64_t k0, int64_t w0, int64_t kn, int64_t wn, \
                                 T *restrict gs) {                                               \
    if (kn == KG_##SFX && wn == VL_##SFX) {                                                      \
        V_##SFX acc[KG_##SFX];                                                                   \
        const T *vr[KG_##SFX];                                                                   \
        for (int a = 0; a < KG_##SFX; a++) {                                                     \
            acc[a] = (V_##SFX){0};                                                               \
            vr[a] = v + rows[k0 + a] * C;                                                        \
        }                                                                                        \
        for (int64_t c = 0; c < C; c++) {                                                        \
            V_##SFX g = *(const V_##SFX *)(gpt + c * W + w0);                                    \
            for (int a = 0; a < KG_##SFX; a++) acc[a] += vr[a][c] * g;                           \
        }                                                                                        \
        for (int a = 0; a < KG_##SFX; a++) *(V_##SFX *)(gs + (k0 + a) * W + w0) = acc[a];        \
        return;                                                                                  \
    }                                                                                            \
    for (int64_t a = 0; a < kn; a++) {                                                           \
        const T *restrict vr = v + rows[k0 + a] * C;                                             \
        for (int64_t i = 0; i < wn; i++) {                                                       \
            T sum = 0;                                                                           \
            for (int64_t c = 0; c < C; c++) sum += vr[c] * gpt[c * W + w0 + i];                  \
            gs[(k0 + a) * W + w0 + i] = sum;                                                     \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* gv[rows[k0 + a] - base, c0 + j] += sum_w s[k0 + a, w] gp[w, c0 + j] */                        \
static inline void gv_tile_##SFX(const T *restrict s, const int64_t *restrict rows, const T *restrict gp, \
                                 int64_t W, int64_t C, int64_t k0, int64_t c0, int64_t kn, int64_t cn, \
                                 int64_t base, T *restrict gv) {                                 \
    if (kn == TILE && cn == CT_##SFX) {                                                          \
        V_##SFX acc[TILE][2];                                                                    \
        rank1_tile_##SFX(W, s + k0 * W, 1, W, gp + c0, NULL, C, acc);                            \
        for (int a = 0; a < TILE; a++) {                                                         \
            T *out = gv + (rows[k0 + a] - base) * C + c0;                                        \
            *(V_##SFX *)out += acc[a][0];                                                        \
            *(V_##SFX *)(out + VL_##SFX) += acc[a][1];                                           \
        }                                                                                        \
        return;                                                                                  \
    }                                                                                            \
    for (int64_t a = 0; a < kn; a++) {                                                           \
        T *restrict out = gv + (rows[k0 + a] - base) * C + c0;                                   \
        for (int64_t w = 0; w < W; w++) {                                                        \
            T sw = s[(k0 + a) * W + w];                                                          \
            for (int64_t j = 0; j < cn; j++) out[j] += sw * gp[w * C + c0 + j];                  \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* gs (Q, K, W) written (if not NULL); gv (R, C) added to (if not NULL). */                      \
void lc_gather_contract_bwd_##SFX(const T *s, const T *v, const int64_t *rows, const T *gp, int64_t Q, \
                                  int64_t K, int64_t W, int64_t C, T *gs, T *gv, int threads) {  \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        int64_t q0, q1;                                                                          \
        my_rows(Q, &q0, &q1);                                                                 \
        int64_t lo = INT64_MAX, hi = -1;                                                         \
        for (int64_t i = q0 * K; i < q1 * K; i++) {                                              \
            lo = rows[i] < lo ? rows[i] : lo;                                                    \
            hi = rows[i] > hi ? rows[i] : hi;                                                    \
        }                                                                                        \
        int shared = omp_get_num_threads() == 1;                                                 \
        T *mine = NULL;                                                                          \
        if (gv != NULL && !shared && hi >= lo) mine = (T *)calloc((size_t)((hi - lo + 1) * C), sizeof(T)); \
        T *acc = shared ? gv : mine;                                                             \
        int64_t base = shared ? 0 : lo;                                                          \
        T *gpt = (T *)malloc(sizeof(T) * (size_t)(W * C));                                       \
        for (int64_t q = q0; q < q1; q++) {                                                      \
            const T *gq = gp + q * W * C, *sq = s + q * K * W;                                   \
            const int64_t *rq = rows + q * K;                                                    \
            if (gs != NULL) {                                                                    \
                for (int64_t w = 0; w < W; w++)                                                  \
                    for (int64_t c = 0; c < C; c++) gpt[c * W + w] = gq[w * C + c];              \
                for (int64_t k0 = 0; k0 < K; k0 += KG_##SFX)                                     \
                    for (int64_t w0 = 0; w0 < W; w0 += VL_##SFX)                                 \
                        gs_tile_##SFX(v, rq, gpt, W, C, k0, w0, K - k0 < KG_##SFX ? K - k0 : KG_##SFX, \
                                      W - w0 < VL_##SFX ? W - w0 : VL_##SFX, gs + q * K * W);    \
            }                                                                                    \
            if (acc != NULL)                                                                     \
                for (int64_t k0 = 0; k0 < K; k0 += TILE)                                         \
                    for (int64_t c0 = 0; c0 < C; c0 += CT_##SFX)                                 \
                        gv_tile_##SFX(sq, rq, gq, W, C, k0, c0, K - k0 < TILE ? K - k0 : TILE,   \
                                      C - c0 < CT_##SFX ? C - c0 : CT_##SFX, base, acc);         \
        }                                                                                        \
        free(gpt);                                                                               \
        if (mine != NULL) {                                                                      \
            _Pragma("omp critical")                                                              \
            for (int64_t i = 0; i < (hi - lo + 1) * C; i++) gv[lo * C + i] += mine[i];           \
            free(mine);                                                                          \
        }                                                                                        \
    }                                                                                            \
}

GATHER_CONTRACT(float, f32)
GATHER_CONTRACT(double, f64)
