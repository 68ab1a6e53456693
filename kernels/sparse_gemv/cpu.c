/* SPDX-License-Identifier: MIT
 *
 * Activation-sparse GEMV on the CPU: y = sparsify(x, t) Wᵀ + b for a decoding batch of B <= 4 rows, reading only
 * the rows of Wᵀ (K, N) whose input channel some row of the batch keeps (|x[b, k]| > t). The semantics are
 * kernels/sparse_gemv/reference.py's; built on first use by kernels/sparse_gemv/cpu.py through kernels/clib.py
 * (cc -O3 -march=native -fopenmp), no torch or Python header.
 *
 * Decoding at batch 1-4 reads every weight once for about 2 FLOPs each: it is bound by memory bandwidth, and a
 * dropped channel is a row of Wᵀ not read at all. First the kept channels are listed, with the batch's
 * thresholded values (one pass over x, by the calling thread); then the threads split the N outputs into
 * contiguous ranges and each walks the kept rows of Wᵀ KB at a time over its own columns: KB contiguous streams
 * of weights (one load each per vector of outputs, reused by every row of the batch) into y's rows, which stay
 * in cache. Accumulation in the operands' type, as BLAS does; the order of the sums is the kept channels' order,
 * so results differ from the reference's dense product in the last bits only.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <omp.h>

#include "../clib.h"

#define MAX_B 4 /* rows of a decoding batch: kernels/sparse_gemv/reference.py MAX_BATCH */
#define KB 4    /* kept rows of Wᵀ per pass over a thread's columns */

#define DEFINE_GEMV(T, SUF, ABS)                                                                                 \
  typedef T vec_##SUF __attribute__((vector_size(VEC_BYTES), aligned(sizeof(T))));                             \
  enum { LANES_##SUF = VEC_BYTES / sizeof(T) };                                                                 \
                                                                                                                \
  /* y (B, N) contiguous = sparsify(x) wt + bias; x (B, K) with strides (x_bs, x_ks); wt (K, N) contiguous;     \
     bias (N,) or NULL. Returns the number of channels kept, or -1 where out of memory. */                     \
  int64_t sparse_gemv_##SUF(int64_t B, int64_t K, int64_t N, const T *x, int64_t x_bs, int64_t x_ks,          \
                            const T *wt, const T *bias, double threshold, T *y, int32_t threads) {             \
    const T t = (T)threshold;                                                                                   \
    int64_t *kept = thread_buffer(0, (size_t)K * (sizeof(int64_t) + MAX_B * sizeof(T)));                          \
    if (!kept) return -1;                                                                                       \
    T *xs = (T *)(kept + K); /* xs[i * MAX_B + b]: row b's value of the i-th kept channel, 0 where dropped */   \
    int64_t nk = 0;                                                                                             \
    for (int64_t k = 0; k < K; k++) {                                                                           \
      int keep = 0;                                                                                             \
      for (int64_t b = 0; b < B; b++) keep |= ABS(x[b * x_bs + k * x_ks]) > t;                                  \
      if (!keep) continue;                                                                                      \
      for (int64_t b = 0; b < MAX_B; b++) {                                                                     \
        const T v = b < B ? x[b * x_bs + k * x_ks] : (T)0;                                                      \
        xs[nk * MAX_B + b] = ABS(v) > t ? v : (T)0;                                                             \
      }                                                                                                         \
      kept[nk++] = k;                                                                                           \
    }                                                                                                           \
    _Pragma("omp parallel num_threads(threads)") {                                                             \
      const int64_t n = omp_get_num_threads(), id = omp_get_thread_num();                                      \
      const int64_t n0 = N * id / n / LANES_##SUF * LANES_##SUF;                                               \
      const int64_t n1 = id == n - 1 ? N : N * (id + 1) / n / LANES_##SUF * LANES_##SUF;                       \
      for (int64_t b = 0; b < B; b++)                                                                           \
        for (int64_t j = n0; j < n1; j++) y[b * N + j] = bias ? bias[j] : (T)0;                                 \
      int64_t i = 0;                                                                                            \
      for (; i + KB <= nk; i += KB) {                                                                           \
        const T *w[KB];                                                                                         \
        for (int32_t q = 0; q < KB; q++) w[q] = wt + kept[i + q] * N;                                           \
        const T *a = xs + i * MAX_B; /* a[q * MAX_B + b] */                                                     \
        int64_t j = n0;                                                                                         \
        for (; j + LANES_##SUF <= n1; j += LANES_##SUF) {                                                       \
          vec_##SUF v[KB];                                                                                      \
          for (int32_t q = 0; q < KB; q++) v[q] = *(const vec_##SUF *)(w[q] + j);                               \
          for (int64_t b = 0; b < B; b++) {                                                                     \
            vec_##SUF acc = *(vec_##SUF *)(y + b * N + j);                                                      \
            for (int32_t q = 0; q < KB; q++) acc += a[q * MAX_B + b] * v[q];                                    \
            *(vec_##SUF *)(y + b * N + j) = acc;                                                                \
          }                                                                                                     \
        }                                                                                                       \
        for (; j < n1; j++)                                                                                     \
          for (int64_t b = 0; b < B; b++)                                                                       \
            for (int32_t q = 0; q < KB; q++) y[b * N + j] += a[q * MAX_B + b] * w[q][j];                        \
      }                                                                                                         \
      for (; i < nk; i++) /* the last kept rows, fewer than KB */                                              \
        for (int64_t b = 0; b < B; b++) {                                                                       \
          const T s = xs[i * MAX_B + b], *w = wt + kept[i] * N;                                                 \
          for (int64_t j = n0; j < n1; j++) y[b * N + j] += s * w[j];                                           \
        }                                                                                                       \
    }                                                                                                           \
    return nk;                                                                                                  \
  }

DEFINE_GEMV(float, f32, fabsf)
DEFINE_GEMV(double, f64, fabs)
