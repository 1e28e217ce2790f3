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

#define SELECT_BODY(T)                                                                          \
    int64_t rows = bs * c;                                                                       \
    int64_t total = 0;                                                                           \
    _Pragma("omp parallel num_threads(threads) reduction(+:total)")                              \
    {                                                                                            \
        int64_t nn = n > 0 ? n : 1;                                                              \
        T *dist = (T *)malloc(sizeof(T) * nn);                                                   \
        int64_t *cj = (int64_t *)malloc(sizeof(int64_t) * nn);                                   \
        uint64_t *rk = (uint64_t *)malloc(sizeof(uint64_t) * nn);                                \
        uint64_t *bucket_buf = (uint64_t *)malloc(sizeof(uint64_t) * nn);                        \
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
            const T *fb = ft + b * d * n; /* (d, n) block of this cloud */                       \
            const uint8_t *mb = mask + b * n;                                                    \
            for (int64_t jj = 0; jj < n; jj++) dist[jj] = 0;                                     \
            for (int64_t e = 0; e < d; e++) { /* summed in order e = 0, 1, ..., as torch does */ \
                const T *col = fb + e * n;                                                       \
                T fi = col[i];                                                                   \
                for (int64_t jj = 0; jj < n; jj++) {                                             \
                    T x = fi - col[jj];                                                          \
                    T sq = x * x;                                                                \
                    dist[jj] = dist[jj] + sq;                                                    \
                }                                                                                \
            }                                                                                    \
            T rr = (T)r2;                                                                        \
            int64_t m = 0;                                                                       \
            for (int64_t jj = 0; jj < n; jj++) { /* branch-free compaction */                    \
                cj[m] = jj;                                                                      \
                m += (dist[jj] < rr) & (mb[jj] != 0);                                            \
            }                                                                                    \
            total += m;                                                                          \
            if (k > 0) {                                                                         \
                uint64_t state = mix((((uint64_t)b << 20) | (uint64_t)i) * GOLD + seed);         \
                choose_row(cj, rk, m, k, state, hist, bucket_buf, out, ok);                      \
            }                                                                                    \
        }                                                                                        \
        free(dist); free(cj); free(rk); free(bucket_buf);                                        \
    }                                                                                            \
    return total;

/* ft (bs, d, n) contiguous (features transposed); mask (bs, n) and qmask (bs, c) as uint8; qidx (bs, c) int64;
 * outputs idx (bs, c, k) int64 (0 where unused) and valid (bs, c, k) uint8, chosen j ascending.
 * Returns the number of (valid query, valid element) pairs inside the ball. */
int64_t lc_flat_ball_select_f64(const double *ft, const uint8_t *mask, int64_t bs, int64_t n, int64_t d,
                                const int64_t *qidx, const uint8_t *qmask, int64_t c, double r2, uint64_t seed,
                                int64_t k, int64_t *idx, uint8_t *valid, int threads) {
    SELECT_BODY(double)
}

int64_t lc_flat_ball_select_f32(const float *ft, const uint8_t *mask, int64_t bs, int64_t n, int64_t d,
                                const int64_t *qidx, const uint8_t *qmask, int64_t c, double r2, uint64_t seed,
                                int64_t k, int64_t *idx, uint8_t *valid, int threads) {
    SELECT_BODY(float)
}
