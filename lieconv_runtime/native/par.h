/* What the native kernels share: OpenMP (or a one-thread stand-in), each thread's share of a
 * range of rows, and SIMD vectors of VEC_BYTES through the GCC/Clang vector extensions (the
 * compiler picks the instructions; loads and stores at any alignment).
 */
#ifndef LIECONV_PAR_H
#define LIECONV_PAR_H

#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

#if defined(__AVX512F__)
#define VEC_BYTES 64
#else
#define VEC_BYTES 32
#endif

typedef float vec_f32 __attribute__((vector_size(VEC_BYTES), aligned(4), may_alias));
typedef double vec_f64 __attribute__((vector_size(VEC_BYTES), aligned(8), may_alias));

/* This thread's rows [*p0, *p1) of P. */
static inline __attribute__((always_inline)) void my_rows(int64_t P, int64_t *p0, int64_t *p1) {
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    *p0 = P * t / nt;
    *p1 = P * (t + 1) / nt;
}

#endif
