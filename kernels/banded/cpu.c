/* SPDX-License-Identifier: MIT
 *
 * Block-banded linear on the CPU: the three products of a banded Linear's training step, each computed over
 * the micro tiles that meet the band only. Built by kernels/banded/cpu.py on first use (cc -O3 -march=native
 * -fopenmp), called through ctypes with raw pointers: no torch or Python header, so it compiles in about a
 * second on any machine with a C compiler.
 *
 * Layout. Token-indexed operands are "tokens last": a (channels, m) row-major matrix, so one channel of every
 * token is one contiguous row and a vector of consecutive tokens is one load. A tiling cuts the side a
 * product writes into tiles of ROWS rows; tile t covers rows [row0, row0 + nrows) and reads the columns
 * [col0, col0 + width) of the other side: the hull of the kept entries of its rows (width 0: none kept).
 *
 *   product  out[r, :] = bias[r] + sum_k A[r, k] * b[k, :]       (forward: A = W ⊙ M, b = xᵀ, out = yᵀ;
 *                                                                 dX: A = (W ⊙ M)ᵀ, b = dyᵀ, out = dxᵀ)
 *   dw       dw[r, c]  = mask[r, c] ? sum_m dy[r, m] * x[c, m] : untouched (zero-initialized by the caller)
 *
 * product's tile of A is packed first (pack: (width, ROWS), column k's ROWS entries adjacent, rows past
 * nrows and entries outside the mask zero), so its inner loop broadcasts ROWS consecutive weights against
 * two vectors of tokens: ROWS x 2 vector accumulators (16 registers) per strip of 2 * LANES tokens, the
 * register-blocked outer product of a GEMM micro kernel. dw is ROWS/2 x 4 dot products over the tokens at a
 * time, 16 vector accumulators summed across lanes at the end. Work is split over (tile, token chunk) for
 * product and (tile, half tile) for dw, statically across `threads` OpenMP threads.
 *
 * Vectors are GCC/Clang vector extensions of VEC_BYTES bytes: the compiler lowers them to the widest
 * registers -march=native offers (one zmm with AVX-512, two ymm with AVX2, four q registers with NEON).
 * Accumulation is in the operands' type (float or double), as in BLAS; the compiler may contract a * b + c
 * into FMAs, so results differ from PyTorch's in the last bits only.
 */
#include <stddef.h>
#include <stdint.h>

#include <omp.h>

#define ROWS 8          /* rows per tile: kernels/banded/cpu.py ROWS */
#define VEC_BYTES 64
#define CHUNK 256       /* tokens per unit of product's work */
#ifndef DW_CHUNK
#define DW_CHUNK 512    /* dw's tokens per pass over a thread's tiles: their columns stay in L2 meanwhile */
#endif
#define TRANSPOSE_BLOCK 64

/* dw's block of NV half vectors of columns from c1 on, for ROWS broadcast rows: acc[r][u] += b[r][j] * v[j, u]
 * over every token j, then the block's columns [c - c1, c - c1 + nc) copied to out. */
#define DW_BLOCK(SUF, NV)                                                                                       \
  {                                                                                                             \
    half_##SUF acc[ROWS][NV];                                                                                   \
    for (int32_t r = 0; r < ROWS; r++)                                                                          \
      for (int32_t u = 0; u < NV; u++) acc[r][u] = (half_##SUF){0};                                             \
    for (int64_t j = j0; j < j1; j++) {                                                                         \
      half_##SUF xv[NV];                                                                                        \
      for (int32_t u = 0; u < NV; u++) xv[u] = *(const half_##SUF *)(v + j * ldv + c1 + u * HALF_##SUF);        \
      for (int32_t r = 0; r < ROWS; r++)                                                                        \
        for (int32_t u = 0; u < NV; u++) acc[r][u] += b[r][j] * xv[u];                                          \
    }                                                                                                           \
    for (int32_t r = 0; r < ROWS; r++)                                                                          \
      for (int64_t k = 0; k < nc; k++) {                                                                        \
        const int64_t l = c - c1 + k;                                                                           \
        out[r][k] = acc[r][l / HALF_##SUF][l % HALF_##SUF];                                                     \
      }                                                                                                         \
  }

#define DEFINE_KERNELS(T, SUF)                                                                                   \
  typedef T vec_##SUF __attribute__((vector_size(VEC_BYTES), aligned(sizeof(T))));                             \
  typedef T half_##SUF __attribute__((vector_size(VEC_BYTES / 2), aligned(sizeof(T))));                         \
  enum { LANES_##SUF = VEC_BYTES / sizeof(T), HALF_##SUF = VEC_BYTES / 2 / sizeof(T) };                         \
                                                                                                                \
  void banded_pack_##SUF(int32_t tiles, const int32_t *row0, const int32_t *nrows, const int32_t *col0,        \
                         const int32_t *width, const int64_t *offset, const T *a, int64_t a_rs, int64_t a_cs,  \
                         const uint8_t *mask, int64_t m_rs, int64_t m_cs, T *panel, int32_t threads) {         \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
    for (int32_t t = 0; t < tiles; t++) {                                                                      \
      T *p = panel + offset[t];                                                                                 \
      for (int32_t k = 0; k < width[t]; k++)                                                                    \
        for (int32_t r = 0; r < ROWS; r++) {                                                                    \
          int64_t row = row0[t] + r, col = col0[t] + k;                                                         \
          p[(int64_t)k * ROWS + r] =                                                                            \
              r < nrows[t] && mask[row * m_rs + col * m_cs] ? a[row * a_rs + col * a_cs] : (T)0;                \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  void banded_product_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,               \
                            const int32_t *col0, const int32_t *width, const int64_t *offset, const T *panel,  \
                            const T *b, const T *bias, T *out, int32_t threads) {                              \
    const int64_t chunks = (m + CHUNK - 1) / CHUNK, step = 2 * LANES_##SUF;                                    \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(threads)")                              \
    for (int64_t c = 0; c < chunks; c++)                                                                        \
      for (int32_t t = 0; t < tiles; t++) {                                                                    \
        const T *p = panel + offset[t], *bt = b + (int64_t)col0[t] * m;                                        \
        const int32_t w = width[t], nr = nrows[t];                                                              \
        T *o = out + (int64_t)row0[t] * m;                                                                      \
        T init[ROWS];                                                                                           \
        for (int32_t r = 0; r < ROWS; r++) init[r] = bias && r < nr ? bias[row0[t] + r] : (T)0;                \
        const int64_t end = (c + 1) * CHUNK < m ? (c + 1) * CHUNK : m;                                         \
        int64_t j = c * CHUNK;                                                                                  \
        for (; j + step <= end; j += step) {                                                                    \
          vec_##SUF acc[ROWS][2];                                                                               \
          for (int32_t r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = (vec_##SUF){0} + init[r];                 \
          for (int32_t k = 0; k < w; k++) {                                                                     \
            const vec_##SUF x0 = *(const vec_##SUF *)(bt + k * m + j);                                         \
            const vec_##SUF x1 = *(const vec_##SUF *)(bt + k * m + j + LANES_##SUF);                           \
            const T *pk = p + (int64_t)k * ROWS;                                                                \
            for (int32_t r = 0; r < ROWS; r++) {                                                                \
              acc[r][0] += pk[r] * x0;                                                                          \
              acc[r][1] += pk[r] * x1;                                                                          \
            }                                                                                                   \
          }                                                                                                     \
          for (int32_t r = 0; r < nr; r++) {                                                                    \
            *(vec_##SUF *)(o + r * m + j) = acc[r][0];                                                          \
            *(vec_##SUF *)(o + r * m + j + LANES_##SUF) = acc[r][1];                                            \
          }                                                                                                     \
        }                                                                                                       \
        for (; j < end; j++) /* the last tokens, fewer than one strip */                                        \
          for (int32_t r = 0; r < nr; r++) {                                                                    \
            T s = init[r];                                                                                      \
            for (int32_t k = 0; k < w; k++) s += p[(int64_t)k * ROWS + r] * bt[k * m + j];                      \
            o[r * m + j] = s;                                                                                   \
          }                                                                                                     \
      }                                                                                                         \
  }                                                                                                             \
                                                                                                                \
  void banded_dw_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,                    \
                       const int32_t *col0, const int32_t *width, const T *bt, const T *v, int64_t n_v,         \
                       int64_t ldv, const uint8_t *mask, int64_t m_rs, int64_t m_cs, T *g, int64_t g_rs,         \
                       int64_t g_cs, T *sums, int32_t threads) {                                                \
    const int64_t span = 4 * HALF_##SUF;                                                                        \
    _Pragma("omp parallel num_threads(threads)") {                                                             \
      const int32_t n = omp_get_num_threads(), id = omp_get_thread_num();                                      \
      const int32_t first = (int32_t)((int64_t)tiles * id / n), last = (int32_t)((int64_t)tiles * (id + 1) / n);\
      for (int64_t j0 = 0; j0 < m; j0 += DW_CHUNK) {                                                            \
        const int64_t j1 = j0 + DW_CHUNK < m ? j0 + DW_CHUNK : m;                                               \
        for (int32_t t = first; t < last; t++) {                                                                \
          const int32_t nr = nrows[t];                                                                          \
          const T *b[ROWS];                                                                                     \
          for (int32_t r = 0; r < ROWS; r++) b[r] = bt + (int64_t)(row0[t] + (r < nr ? r : 0)) * m;             \
          if (sums)                                                                                             \
            for (int32_t r = 0; r < nr; r++) {                                                                  \
              half_##SUF a = {0};                                                                               \
              int64_t j = j0;                                                                                   \
              for (; j + HALF_##SUF <= j1; j += HALF_##SUF) a += *(const half_##SUF *)(b[r] + j);                \
              T s = 0;                                                                                          \
              for (int32_t l = 0; l < HALF_##SUF; l++) s += a[l];                                               \
              for (; j < j1; j++) s += b[r][j];                                                                 \
              sums[row0[t] + r] += s;                                                                           \
            }                                                                                                   \
          for (int64_t q = 0; q * span < width[t]; q++) {                                                       \
            const int64_t c = col0[t] + q * span;                                                               \
            const int64_t nc = width[t] - q * span < span ? width[t] - q * span : span;                         \
            T out[ROWS][4 * 8];                                                                                 \
            const int32_t nv = (int32_t)((nc + HALF_##SUF - 1) / HALF_##SUF); /* half vectors: 1-4 */           \
            if (nv * HALF_##SUF <= n_v) { /* moved left to end at the row's end if need be */                   \
              const int64_t c1 = c + nv * HALF_##SUF <= n_v ? c : n_v - nv * HALF_##SUF;                        \
              switch (nv) {                                                                                     \
                case 1: DW_BLOCK(SUF, 1); break;                                                                \
                case 2: DW_BLOCK(SUF, 2); break;                                                                \
                case 3: DW_BLOCK(SUF, 3); break;                                                                \
                default: DW_BLOCK(SUF, 4); break;                                                               \
              }                                                                                                 \
            } else /* a matrix narrower than the block: element by element */                                  \
              for (int32_t r = 0; r < nr; r++)                                                                  \
                for (int64_t k = 0; k < nc; k++) {                                                              \
                  T s = 0;                                                                                      \
                  for (int64_t j = j0; j < j1; j++) s += b[r][j] * v[j * ldv + c + k];                          \
                  out[r][k] = s;                                                                                \
                }                                                                                               \
            for (int32_t r = 0; r < nr; r++)                                                                    \
              for (int64_t k = 0; k < nc; k++) {                                                                \
                const int64_t row = row0[t] + r, col = c + k;                                                   \
                if (mask[row * m_rs + col * m_cs]) g[row * g_rs + col * g_cs] += out[r][k];                    \
              }                                                                                                 \
          }                                                                                                     \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  void banded_transpose_##SUF(int64_t rows, int64_t cols, const T *src, int64_t lds, T *dst, int32_t threads) {\
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(threads)")                              \
    for (int64_t i0 = 0; i0 < rows; i0 += TRANSPOSE_BLOCK)                                                      \
      for (int64_t j0 = 0; j0 < cols; j0 += TRANSPOSE_BLOCK) {                                                  \
        const int64_t i1 = i0 + TRANSPOSE_BLOCK < rows ? i0 + TRANSPOSE_BLOCK : rows;                           \
        const int64_t j1 = j0 + TRANSPOSE_BLOCK < cols ? j0 + TRANSPOSE_BLOCK : cols;                           \
        int64_t i = i0;                                                                                         \
        for (; i + 8 <= i1; i += 8) {                                                                           \
          int64_t j = j0;                                                                                       \
          for (; j + 8 <= j1; j += 8) transpose8_##SUF(src + i * lds + j, lds, dst + j * rows + i, rows);       \
          for (; j < j1; j++)                                                                                   \
            for (int64_t k = i; k < i + 8; k++) dst[j * rows + k] = src[k * lds + j];                           \
        }                                                                                                       \
        for (; i < i1; i++)                                                                                     \
          for (int64_t j = j0; j < j1; j++) dst[j * rows + i] = src[i * lds + j];                               \
      }                                                                                                         \
  }

/* An 8 x 8 block of `s` (row stride ls) written transposed to `d` (row stride ld): float in registers (three
 * rounds of two-input shuffles on 8-lane vectors), double element by element. */
typedef float vec8_f32 __attribute__((vector_size(32), aligned(4)));
typedef int32_t idx8 __attribute__((vector_size(32)));
static inline void transpose8_f32(const float *s, int64_t ls, float *d, int64_t ld) {
  vec8_f32 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = *(const vec8_f32 *)(s + i * ls);
  for (int i = 0; i < 4; i++) { /* interleave row pairs: (a0 b0 a1 b1 | a4 b4 a5 b5), (a2 b2 a3 b3 | ...) */
    t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], (idx8){0, 8, 1, 9, 4, 12, 5, 13});
    t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], (idx8){2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 2; i++) { /* pairs of pairs: four consecutive rows per 128-bit half */
    r[4 * i] = __builtin_shuffle(t[4 * i], t[4 * i + 2], (idx8){0, 1, 8, 9, 4, 5, 12, 13});
    r[4 * i + 1] = __builtin_shuffle(t[4 * i], t[4 * i + 2], (idx8){2, 3, 10, 11, 6, 7, 14, 15});
    r[4 * i + 2] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], (idx8){0, 1, 8, 9, 4, 5, 12, 13});
    r[4 * i + 3] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], (idx8){2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int i = 0; i < 4; i++) { /* halves: rows 0-3 with rows 4-7 */
    *(vec8_f32 *)(d + i * ld) = __builtin_shuffle(r[i], r[i + 4], (idx8){0, 1, 2, 3, 8, 9, 10, 11});
    *(vec8_f32 *)(d + (i + 4) * ld) = __builtin_shuffle(r[i], r[i + 4], (idx8){4, 5, 6, 7, 12, 13, 14, 15});
  }
}
static inline void transpose8_f64(const double *s, int64_t ls, double *d, int64_t ld) {
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) d[j * ld + i] = s[i * ls + j];
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
