/* SPDX-License-Identifier: MIT
 *
 * Block-banded linear on the CPU: the three products of a banded Linear's training step, each computed over
 * tiles that meet the band only. Built by kernels/banded/cpu.py on first use (cc -O3 -march=native -fopenmp)
 * and called through ctypes with raw pointers: no torch or Python header, so it compiles in about a second
 * on any machine with a C compiler. OpenMP is the process's: torch's libgomp, loaded first, serves it too.
 *
 * Layouts. "Tokens last" is a (channels, m) row-major matrix: one channel of every token is one contiguous
 * row, and consecutive tokens are one vector load. "Row-major" is the usual (m, channels).
 *
 * Tiles. A tiling cuts the side a product writes into tiles of `rows` (4 or 8) rows; tile t covers rows
 * [row0, row0 + nrows) and reads columns [col0, col0 + width) of the other side, the hull of its rows' kept
 * entries (width 0: none kept). cpu.py builds it from the mask, so every kernel is exact for any mask.
 *
 *   pack       panel[t] = (width, rows) of A ⊙ M for tile t: column k's rows adjacent, rows past nrows and
 *              entries outside the mask zero (A: W for the forward, Wᵀ for dX; any strides)
 *   product    out[r, :] = bias[r] + Σ_k A[r, k] b[k, :]         b, out tokens last, or either row-major
 *              (forward: b = xᵀ, out = yᵀ; dX: b = dyᵀ, out = dxᵀ). Per strip of tokens the tile's packed
 *              weights are broadcast against vectors of b's rows: rows x V = 16 vector accumulators (8 x 2, or
 *              4 x 4 for the 4-row tiles of a product writing the narrow side), a GEMM micro kernel's
 *              register-blocked outer product. Work: (token chunk, tile) pairs, chunk by chunk. A row-major
 *              b (M, cols) or out (M, rows) is transposed a chunk of tokens at a time through a buffer of the
 *              thread (cache-sized; cpu.py picks the chunk), so neither is ever transposed in memory; then
 *              each thread takes whole chunks.
 *   dw         g[i, k] += Σ_j bt[i, j] v[j, k] on the mask's entries, the others untouched (zeroed by the
 *              caller): bt tokens last, one token broadcast at a time, v row-major, vectors of channels (for
 *              FC1 bt = dyᵀ, v = x and g = dW; for FC2 bt = xᵀ, v = dy and g = dWᵀ). Blocks of 8 rows x up to
 *              4 half vectors of columns, accumulated over DW_CHUNK tokens in registers; each thread keeps its
 *              own range of tiles and walks the tokens chunk by chunk, so the columns it reads stay in cache.
 *              A tile whose halves (rows 0-3, 4-7) each fit 2 half vectors from their own first column, where
 *              its hull needs more (a band about 15 channels wide: hull 17, halves 16), runs a split block
 *              instead: 16 lanes per row rather than 24. (db is not summed here: one accumulator per row made
 *              that latency-bound, 0.17 ms against torch's 0.07 on GPT-2 tiny; see bias_grad.)
 *   transpose  dst (cols, rows) = src (rows, cols)ᵀ, in 8 x 8 register transposes, 8 rows of the side with the
 *              longer rows walked along 256 columns at a time (dW's operands given in one layout).
 *   banded_advise_huge  transparent huge pages for an output not touched yet (cpu.py's new_output).
 *   banded_forward, banded_backward  a layer's forward (packing and product) and backward (dX, dW, db), one call
 *              each (DEFINE_STEPS below).
 *
 * Vectors are GCC/Clang vector extensions of VEC_BYTES bytes: the compiler lowers them to the widest
 * registers -march=native offers (one zmm with AVX-512, two ymm with AVX2, four q registers with NEON).
 * Accumulation is in the operands' type (float or double), as in BLAS; the compiler may contract a * b + c
 * into FMAs, so results differ from PyTorch's in the last bits only.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <omp.h>

#include "../clib.h"

#define ROWS 8          /* dw's rows per tile (at most): kernels/banded/cpu.py ROWS */

/* Register blocking per instruction set (VEC_BYTES, VEC_REGS: ../clib.h): the products keep R x V vectors of
 * accumulators and dw R x NV half vectors, which must fit the registers with room for the loaded operands
 * (measured here: an AVX2 build with AVX-512's blocking ran 10x slower). dw's vectors are 32 bytes (ymm) with
 * AVX-512, as wide as the registers elsewhere. */
#define HALF_BYTES (VEC_BYTES == 64 ? 32 : VEC_BYTES)
#define WIDE_REGS (VEC_REGS >= 32)
#if WIDE_REGS           /* 32 registers: products 8 x 2 and 4 x 4 (16 accumulators), dw 8 rows x 1-4 */
#define V8 2
#define V4 4
#define DW_R 8
#define DW_NV 4
#else                   /* 16 registers: products 8 x 1 and 4 x 2, dw 4 rows x 1-2 (8 accumulators; measured */
#define V8 1            /* on an AVX2 build here: 4 x 3 and 4 rows x 3 spilled and ran up to 1.4x slower) */
#define V4 2
#define DW_R 4
#define DW_NV 2
#endif
#define CHUNK 1024      /* product's tokens per unit of work (units go chunk by chunk: the chunk's columns
                           stay in cache from one tile to the next) */
#define DW_CHUNK 512    /* dw's tokens per pass over a thread's tiles: the columns they read stay in cache */
#define TRANSPOSE_LONG 256 /* transpose's unit: 256 x 64 (see banded_transpose) */
#define TRANSPOSE_SHORT 64

/* dw's block of NV half vectors of columns from c1 on, for R broadcast rows: acc[r][u] += bg[r][j] * v[j, u]
 * over every token j, then the block's columns [c - c1, c - c1 + nc) copied to out. */
#define DW_BLOCK(SUF, R, NV)                                                                                     \
  {                                                                                                             \
    half_##SUF acc[R][NV];                                                                                      \
    for (int32_t r = 0; r < R; r++)                                                                             \
      for (int32_t u = 0; u < NV; u++) acc[r][u] = (half_##SUF){0};                                             \
    for (int64_t j = j0; j < j1; j++) {                                                                         \
      half_##SUF xv[NV];                                                                                        \
      for (int32_t u = 0; u < NV; u++) xv[u] = *(const half_##SUF *)(v + j * ldv + c1 + u * HALF_##SUF);        \
      for (int32_t r = 0; r < R; r++)                                                                           \
        for (int32_t u = 0; u < NV; u++) acc[r][u] += bg[r][j] * xv[u];                                       \
    }                                                                                                           \
    for (int32_t r = 0; r < R; r++)                                                                             \
      for (int64_t k = 0; k < nc; k++) {                                                                        \
        const int64_t l = c - c1 + k;                                                                           \
        out[r][k] = acc[r][l / HALF_##SUF][l % HALF_##SUF];                                                     \
      }                                                                                                         \
  }

/* A value kept in a register: without it GCC folds a vector's load into each FMA that reads it (a memory operand
 * each), and loops that read each vector for 4 or 8 rows become bound by loads (dw's; the products' 4-row tiles,
 * 1.1-1.4x faster with it). */
#if defined(__x86_64__) || defined(__i386__)
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* dw's split block, for an 8-row tile whose halves (rows 0-3, rows 4-7) each fit two half vectors from their own
 * first column (ca, cb) where the tile's hull needs more: acc[r][u] += b[r][j] * v[j, c_r + u·HALF], the vectors
 * at ca serving rows 0-3 and those at cb rows 4-7; then added to g on the mask's entries. */
#define DW_SPLIT2(T, SUF)                                                                                        \
  {                                                                                                             \
    half_##SUF a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};          \
    half_##SUF a40 = {0}, a41 = {0}, a50 = {0}, a51 = {0}, a60 = {0}, a61 = {0}, a70 = {0}, a71 = {0};          \
    const T *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5], *b6 = b[6], *b7 = b[7];      \
    for (int64_t j = j0; j < j1; j++) {                                                                         \
      half_##SUF xa0 = *(const half_##SUF *)(v + j * ldv + ca), xa1 = *(const half_##SUF *)(v + j * ldv + ca + HALF_##SUF);\
      half_##SUF xb0 = *(const half_##SUF *)(v + j * ldv + cb), xb1 = *(const half_##SUF *)(v + j * ldv + cb + HALF_##SUF);\
      IN_REGISTER(xa0);                                                                                         \
      IN_REGISTER(xa1);                                                                                         \
      IN_REGISTER(xb0);                                                                                         \
      IN_REGISTER(xb1);                                                                                         \
      a00 += b0[j] * xa0, a01 += b0[j] * xa1, a10 += b1[j] * xa0, a11 += b1[j] * xa1;                           \
      a20 += b2[j] * xa0, a21 += b2[j] * xa1, a30 += b3[j] * xa0, a31 += b3[j] * xa1;                           \
      a40 += b4[j] * xb0, a41 += b4[j] * xb1, a50 += b5[j] * xb0, a51 += b5[j] * xb1;                           \
      a60 += b6[j] * xb0, a61 += b6[j] * xb1, a70 += b7[j] * xb0, a71 += b7[j] * xb1;                           \
    }                                                                                                           \
    const half_##SUF acc[ROWS][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31},                           \
                                     {a40, a41}, {a50, a51}, {a60, a61}, {a70, a71}};                           \
    for (int32_t r = 0; r < nr; r++)                                                                            \
      for (int32_t l = 0; l < 2 * HALF_##SUF; l++) {                                                            \
        const int64_t row = row0[t] + r, col = (r < ROWS / 2 ? ca : cb) + l;                                    \
        if (mask[row * m_rs + col * m_cs]) g[row * g_rs + col * g_cs] += acc[r][l / HALF_##SUF][l % HALF_##SUF];\
      }                                                                                                         \
  }

#if DW_NV == 4
#define DW_SWITCH(SUF)                                                                                          \
  switch (nv) {                                                                                                 \
    case 1: DW_BLOCK(SUF, DW_R, 1); break;                                                                      \
    case 2: DW_BLOCK(SUF, DW_R, 2); break;                                                                      \
    case 3: DW_BLOCK(SUF, DW_R, 3); break;                                                                      \
    default: DW_BLOCK(SUF, DW_R, 4); break;                                                                     \
  }
#else
#define DW_SWITCH(SUF)                                                                                          \
  switch (nv) {                                                                                                 \
    case 1: DW_BLOCK(SUF, DW_R, 1); break;                                                                      \
    default: DW_BLOCK(SUF, DW_R, 2); break;                                                                     \
  }
#endif

/* product's strips of V vectors of tokens from j on, for a tile of R rows (R x V = 16 accumulators): for every
 * column k of the tile, R packed weights broadcast against V vectors of b's row k. */
#define PRODUCT_STRIPS(T, SUF, R, V)                                                                               \
  for (; j + V * LANES_##SUF <= end; j += V * LANES_##SUF) {                                                    \
    vec_##SUF acc[R][V];                                                                                        \
    for (int32_t r = 0; r < R; r++)                                                                             \
      for (int32_t u = 0; u < V; u++) acc[r][u] = (vec_##SUF){0} + init[r];                                     \
    for (int32_t k = 0; k < w; k++) {                                                                           \
      vec_##SUF xv[V];                                                                                          \
      for (int32_t u = 0; u < V; u++) {                                                                       \
        xv[u] = *(const vec_##SUF *)(bt + k * ldb + j + u * LANES_##SUF);                                       \
        IN_REGISTER(xv[u]);                                                                                     \
      }                                                                                                         \
      const T *pk = p + (int64_t)k * R;                                                                         \
      for (int32_t r = 0; r < R; r++)                                                                           \
        for (int32_t u = 0; u < V; u++) acc[r][u] += pk[r] * xv[u];                                             \
    }                                                                                                           \
    for (int32_t r = 0; r < R; r++) /* unrolled, so the accumulators stay in registers */                     \
      if (r < nr)                                                                                               \
        for (int32_t u = 0; u < V; u++) *(vec_##SUF *)(o + r * ldo + j + u * LANES_##SUF) = acc[r][u];          \
  }

/* few_tokens's tokens [j, end) of a tile of R rows: four at a time, a vector over the tile's rows per token (four
 * independent sums, one load of the packed weights for four tokens); the last ones alone, their sum split four
 * ways over the columns (a single chain of dependent FMAs would be latency-bound). */
#define FEW_TOKENS(T, SUF, R)                                                                                    \
  {                                                                                                             \
    const rows##R##_##SUF start = *(const rows##R##_##SUF *)init;                                               \
    for (; j + 4 <= end; j += 4) {                                                                              \
      rows##R##_##SUF a0 = start, a1 = start, a2 = start, a3 = start;                                           \
      for (int32_t k = 0; k < w; k++) {                                                                         \
        const rows##R##_##SUF pk = *(const rows##R##_##SUF *)(p + (int64_t)k * R);                             \
        const T *bk = bt + k * sc + j * sj;                                                                     \
        a0 += pk * bk[0], a1 += pk * bk[sj], a2 += pk * bk[2 * sj], a3 += pk * bk[3 * sj];                      \
      }                                                                                                         \
      for (int32_t r = 0; r < nr; r++) {                                                                        \
        o[j * oj + r * orow] = a0[r], o[(j + 1) * oj + r * orow] = a1[r];                                       \
        o[(j + 2) * oj + r * orow] = a2[r], o[(j + 3) * oj + r * orow] = a3[r];                                 \
      }                                                                                                         \
    }                                                                                                           \
    for (; j < end; j++) {                                                                                      \
      rows##R##_##SUF a0 = start, a1 = {0}, a2 = {0}, a3 = {0};                                                 \
      const T *bj = bt + j * sj;                                                                                \
      int32_t k = 0;                                                                                            \
      for (; k + 4 <= w; k += 4) {                                                                              \
        const T *pk = p + (int64_t)k * R;                                                                       \
        a0 += *(const rows##R##_##SUF *)pk * bj[k * sc];                                                        \
        a1 += *(const rows##R##_##SUF *)(pk + R) * bj[(k + 1) * sc];                                            \
        a2 += *(const rows##R##_##SUF *)(pk + 2 * R) * bj[(k + 2) * sc];                                        \
        a3 += *(const rows##R##_##SUF *)(pk + 3 * R) * bj[(k + 3) * sc];                                        \
      }                                                                                                         \
      for (; k < w; k++) a0 += *(const rows##R##_##SUF *)(p + (int64_t)k * R) * bj[k * sc];                     \
      a0 += a1 + (a2 + a3);                                                                                     \
      for (int32_t r = 0; r < nr; r++) o[j * oj + r * orow] = a0[r];                                            \
    }                                                                                                           \
  }

#define DEFINE_KERNELS(T, SUF)                                                                                   \
  typedef T vec_##SUF __attribute__((vector_size(VEC_BYTES), aligned(sizeof(T))));                             \
  typedef T half_##SUF __attribute__((vector_size(HALF_BYTES), aligned(sizeof(T))));                           \
  typedef T rows4_##SUF __attribute__((vector_size(4 * sizeof(T)), aligned(sizeof(T))));                       \
  typedef T rows8_##SUF __attribute__((vector_size(8 * sizeof(T)), aligned(sizeof(T))));                       \
  enum { LANES_##SUF = VEC_BYTES / sizeof(T), HALF_##SUF = HALF_BYTES / sizeof(T) };                               \
  enum { FEW_TOKENS_##SUF = V8 * LANES_##SUF }; /* fewer tokens than an 8-row tile's strip: product_few */     \
                                                                                                                \
  /* The sum of row[0, n): four vector sums, then their lanes. */                                               \
  static inline T sum_tokens_##SUF(const T *row, int64_t n) {                                                  \
    vec_##SUF acc[4] = {{0}, {0}, {0}, {0}};                                                                    \
    int64_t j = 0;                                                                                              \
    for (; j + 4 * LANES_##SUF <= n; j += 4 * LANES_##SUF)                                                      \
      for (int32_t u = 0; u < 4; u++) acc[u] += *(const vec_##SUF *)(row + j + u * LANES_##SUF);                \
    acc[0] += acc[1] + acc[2] + acc[3];                                                                         \
    T sum = 0;                                                                                                  \
    for (int32_t l = 0; l < LANES_##SUF; l++) sum += acc[0][l];                                                 \
    for (; j < n; j++) sum += row[j];                                                                           \
    return sum;                                                                                                 \
  }                                                                                                             \
                                                                                                                \
  void banded_pack_##SUF(int32_t tiles, const int32_t *row0, const int32_t *nrows, const int32_t *col0,        \
                         const int32_t *width, const int64_t *offset, int32_t rows, const T *a, int64_t a_rs,  \
                         int64_t a_cs, const uint8_t *mask, int64_t m_rs, int64_t m_cs, T *panel,               \
                         int32_t threads) {                                                                     \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
    for (int32_t t = 0; t < tiles; t++) {                                                                      \
      T *p = panel + offset[t];                                                                                 \
      for (int32_t k = 0; k < width[t]; k++)                                                                    \
        for (int32_t r = 0; r < rows; r++) {                                                                    \
          int64_t row = row0[t] + r, col = col0[t] + k;                                                         \
          p[(int64_t)k * rows + r] =                                                                            \
              r < nrows[t] && mask[row * m_rs + col * m_cs] ? a[row * a_rs + col * a_cs] : (T)0;                \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  /* Tokens [j, end) of one tile, fewer than a strip or as many as decoding has: out[j * oj + r * orow] =       \
     init[r] + sum_k p[k * rows + r] * bt[j * sj + k * sc], where bt points at the tile's first column and o at \
     its first row, each in either layout (FEW_TOKENS). */                                                      \
  static inline void few_tokens_##SUF(int32_t rows, int32_t w, int32_t nr, const T *p, const T *init,         \
                                      const T *bt, int64_t sj, int64_t sc, T *o, int64_t oj, int64_t orow,     \
                                      int64_t j, int64_t end) {                                                 \
    if (rows == 4)                                                                                              \
      FEW_TOKENS(T, SUF, 4)                                                                                     \
    else                                                                                                        \
      FEW_TOKENS(T, SUF, 8)                                                                                     \
  }                                                                                                             \
                                                                                                                \
  /* Tokens [j, end) of one tile: o[r * ldo + j'] = init[r] + sum_k p[k * rows + r] * bt[k * ldb + j'], where  \
     bt points at the tile's first column and o at its first row. */                                          \
  static inline void product_tile_##SUF(int32_t rows, int32_t w, int32_t nr, const T *p, const T *init,        \
                                        const T *bt, int64_t ldb, T *o, int64_t ldo, int64_t j, int64_t end) { \
    if (rows == 4)                                                                                              \
      PRODUCT_STRIPS(T, SUF, 4, V4)                                                                             \
    else                                                                                                        \
      PRODUCT_STRIPS(T, SUF, 8, V8)                                                                             \
    /* the last tokens, fewer than one strip */                                                                \
    few_tokens_##SUF(rows, w, nr, p, init, bt, 1, ldb, o, 1, ldo, j, end);                                      \
  }                                                                                                             \
                                                                                                                \
  /* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (one thread). */                                \
  static void transpose_serial_##SUF(int64_t rows, int64_t cols, const T *src, int64_t lds, T *dst,             \
                                     int64_t ldd) {                                                             \
    const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;                                                         \
    for (int64_t c = 0; c < c8; c += 8)                                                                         \
      for (int64_t r = 0; r < r8; r += 8) transpose8_##SUF(src + r * lds + c, lds, dst + c * ldd + r, ldd);     \
    for (int64_t r = 0; r < rows; r++)                                                                          \
      for (int64_t c = r < r8 ? c8 : 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];                     \
  }                                                                                                             \
                                                                                                                \
  /* A product of fewer tokens than one strip (decoding: 1-4 tokens): the threads share the tiles, and each tile \
     reads b and writes out in place (few_tokens), element (token j, column c) at b[j * sj + c * sc] and (j,   \
     row) at out[j * oj + row * orow]. Before, one thread ran them as one chain of dependent FMAs per tile. */  \
  static void product_few_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,           \
                                const int32_t *col0, const int32_t *width, const int64_t *offset, int32_t rows, \
                                const T *panel, const T *b, int64_t sj, int64_t sc, const T *bias, T *out,     \
                                int64_t oj, int64_t orow, int32_t threads) {                                    \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
    for (int32_t t = 0; t < tiles; t++) {                                                                      \
      T init[8] = {0};                                                                                          \
      for (int32_t r = 0; r < nrows[t]; r++) init[r] = bias ? bias[row0[t] + r] : (T)0;                        \
      few_tokens_##SUF(rows, width[t], nrows[t], panel + offset[t], init, b + (int64_t)col0[t] * sc, sj, sc,    \
                       out + (int64_t)row0[t] * orow, oj, orow, 0, m);                                          \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  int32_t banded_product_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,               \
                            const int32_t *col0, const int32_t *width, const int64_t *offset, int32_t rows,    \
                            const T *panel, int64_t rows_total, int64_t cols_total, const T *b, int32_t b_rows, \
                            int64_t ldb, const T *bias, T *out, int32_t out_rows, int64_t chunk,               \
                            int32_t threads) {                                                                  \
    if (m <= 0) return 0; /* no tokens: an empty output */                                                      \
    if (m < FEW_TOKENS_##SUF) {                                                                                 \
      product_few_##SUF(m, tiles, row0, nrows, col0, width, offset, rows, panel, b, b_rows ? ldb : 1,           \
                        b_rows ? 1 : ldb, bias, out, out_rows ? rows_total : 1, out_rows ? 1 : m, threads);     \
      return 0;                                                                                                 \
    }                                                                                                           \
    if (!b_rows && !out_rows) { /* tokens last in and out: (tile, chunk) pairs, chunk by chunk */               \
      const int64_t chunks = (m + CHUNK - 1) / CHUNK;                                                           \
      _Pragma("omp parallel for schedule(static) num_threads(threads)")                                        \
      for (int64_t tc = 0; tc < (int64_t)tiles * chunks; tc++) {                                               \
        const int32_t t = (int32_t)(tc % tiles);                                                                \
        const int64_t c = tc / tiles, end = (c + 1) * CHUNK < m ? (c + 1) * CHUNK : m;                          \
        T init[8];                                                                                              \
        for (int32_t r = 0; r < rows; r++) init[r] = bias && r < nrows[t] ? bias[row0[t] + r] : (T)0;          \
        product_tile_##SUF(rows, width[t], nrows[t], panel + offset[t], init, b + (int64_t)col0[t] * m, m,      \
                           out + (int64_t)row0[t] * m, m, c * CHUNK, end);                                      \
      }                                                                                                         \
      return 0;                                                                                                 \
    }                                                                                                           \
    /* A row-major side is transposed chunk by chunk through a buffer of its thread, in cache: a row-major b    \
       into (cols_total, chunk) before the tiles read it, the tiles' (rows_total, chunk) output into a         \
       row-major out after. Each thread takes whole chunks. */                                                  \
    if (chunk > m) chunk = m; /* the buffers' rows: chunk tokens */                                             \
    const int64_t chunks = (m + chunk - 1) / chunk;                                                             \
    int32_t failed = 0;                                                                                         \
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)") {                                         \
      T *bl = b_rows ? thread_buffer(0, (size_t)(cols_total * chunk) * sizeof(T)) : NULL;                       \
      T *ol = out_rows ? thread_buffer(1, (size_t)(rows_total * chunk) * sizeof(T)) : NULL;                     \
      failed = (b_rows && !bl) || (out_rows && !ol);                                                            \
      _Pragma("omp for schedule(static)")                                                                      \
      for (int64_t c = 0; c < chunks; c++) {                                                                    \
        if (failed) continue;                                                                                   \
        const int64_t j0 = c * chunk, nj = j0 + chunk < m ? chunk : m - j0;                                     \
        const T *src = b + j0;                                                                                  \
        int64_t lds = m, ldd = m;                                                                               \
        if (b_rows) {                                                                                           \
          transpose_serial_##SUF(nj, cols_total, b + j0 * ldb, ldb, bl, chunk);                                 \
          src = bl, lds = chunk;                                                                                \
        }                                                                                                       \
        T *dst = out_rows ? ol : out + j0;                                                                      \
        if (out_rows) ldd = chunk;                                                                              \
        for (int32_t t = 0; t < tiles; t++) {                                                                   \
          T init[8];                                                                                            \
          for (int32_t r = 0; r < rows; r++) init[r] = bias && r < nrows[t] ? bias[row0[t] + r] : (T)0;        \
          product_tile_##SUF(rows, width[t], nrows[t], panel + offset[t], init, src + (int64_t)col0[t] * lds,  \
                             lds, dst + (int64_t)row0[t] * ldd, ldd, 0, nj);                                    \
        }                                                                                                       \
        if (out_rows) transpose_serial_##SUF(rows_total, nj, ol, chunk, out + j0 * rows_total, rows_total);     \
      }                                                                                                         \
    }                                                                                                           \
    return failed; /* 1: a thread had no memory for its buffer (cpu.py raises MemoryError) */                   \
  }                                                                                                             \
                                                                                                                \
  /* What dw reads and writes (banded_dw's arguments but the tiles' count and the threads). */                  \
  typedef struct {                                                                                              \
    int64_t m, n_v, ldv, m_rs, m_cs, g_rs, g_cs;                                                                \
    const int32_t *row0, *nrows, *col0, *width, *split_a, *split_b, *split_span;                               \
    const T *bt, *v;                                                                                            \
    const uint8_t *mask;                                                                                        \
    T *g;                                                                                                       \
  } dw_job_##SUF;                                                                                               \
                                                                                                                \
  /* dw's tile t over tokens [j0, j1): its sums added to g on the mask's entries. */                            \
  static inline void dw_tile_##SUF(const dw_job_##SUF *d, int32_t t, int64_t j0, int64_t j1) {                  \
    const int64_t m = d->m, n_v = d->n_v, ldv = d->ldv, m_rs = d->m_rs, m_cs = d->m_cs, g_rs = d->g_rs;         \
    const int64_t g_cs = d->g_cs, span = DW_NV * HALF_##SUF;                                                    \
    const int32_t *row0 = d->row0, *col0 = d->col0, *width = d->width, nr = d->nrows[t];                        \
    const T *bt = d->bt, *v = d->v;                                                                             \
    const uint8_t *mask = d->mask;                                                                              \
    T *g = d->g;                                                                                                \
    const T *b[ROWS];                                                                                           \
    for (int32_t r = 0; r < ROWS; r++) b[r] = bt + (int64_t)(row0[t] + (r < nr ? r : 0)) * m;                   \
    if (WIDE_REGS && d->split_span[t] <= 2 * HALF_##SUF && width[t] > 2 * HALF_##SUF && 2 * HALF_##SUF <= n_v) { \
      const int64_t ca = d->split_a[t] + 2 * HALF_##SUF <= n_v ? d->split_a[t] : n_v - 2 * HALF_##SUF;          \
      const int64_t cb = d->split_b[t] + 2 * HALF_##SUF <= n_v ? d->split_b[t] : n_v - 2 * HALF_##SUF;          \
      DW_SPLIT2(T, SUF);                                                                                        \
      return;                                                                                                   \
    }                                                                                                           \
    for (int32_t r0 = 0; r0 < nr; r0 += DW_R) { /* groups of DW_R rows */                                      \
      const T *const *bg = b + r0;                                                                              \
      const int32_t ng = nr - r0 < DW_R ? nr - r0 : DW_R;                                                       \
      for (int64_t q = 0; q * span < width[t]; q++) {                                                           \
        const int64_t c = col0[t] + q * span;                                                                   \
        const int64_t nc = width[t] - q * span < span ? width[t] - q * span : span;                             \
        T out[DW_R][4 * 8];                                                                                     \
        const int32_t nv = (int32_t)((nc + HALF_##SUF - 1) / HALF_##SUF); /* half vectors: 1-DW_NV */           \
        if (nv * HALF_##SUF <= n_v) { /* moved left to end at the row's end if need be */                       \
          const int64_t c1 = c + nv * HALF_##SUF <= n_v ? c : n_v - nv * HALF_##SUF;                            \
          DW_SWITCH(SUF)                                                                                        \
        } else /* a matrix narrower than the block: element by element */                                      \
          for (int32_t r = 0; r < ng; r++)                                                                      \
            for (int64_t k = 0; k < nc; k++) {                                                                  \
              T s = 0;                                                                                          \
              for (int64_t j = j0; j < j1; j++) s += bg[r][j] * v[j * ldv + c + k];                             \
              out[r][k] = s;                                                                                    \
            }                                                                                                   \
        for (int32_t r = 0; r < ng; r++)                                                                        \
          for (int64_t k = 0; k < nc; k++) {                                                                    \
            const int64_t row = row0[t] + r0 + r, col = c + k;                                                  \
            if (mask[row * m_rs + col * m_cs]) g[row * g_rs + col * g_cs] += out[r][k];                        \
          }                                                                                                     \
      }                                                                                                         \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  void banded_dw_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,                    \
                       const int32_t *col0, const int32_t *width, const T *bt, const T *v, int64_t n_v,         \
                       int64_t ldv, const uint8_t *mask, int64_t m_rs, int64_t m_cs, T *g, int64_t g_rs,         \
                       int64_t g_cs, const int32_t *split_a, const int32_t *split_b,                            \
                       const int32_t *split_span, int32_t threads) {                                            \
    const dw_job_##SUF d = {m, n_v, ldv, m_rs, m_cs, g_rs, g_cs, row0, nrows, col0, width, split_a, split_b,    \
                            split_span, bt, v, mask, g};                                                        \
    _Pragma("omp parallel num_threads(threads)") {                                                             \
      const int32_t n = omp_get_num_threads(), id = omp_get_thread_num();                                      \
      const int32_t first = (int32_t)((int64_t)tiles * id / n), last = (int32_t)((int64_t)tiles * (id + 1) / n);\
      for (int64_t j0 = 0; j0 < m; j0 += DW_CHUNK) {                                                            \
        const int64_t j1 = j0 + DW_CHUNK < m ? j0 + DW_CHUNK : m;                                               \
        for (int32_t t = first; t < last; t++) dw_tile_##SUF(&d, t, j0, j1);                                    \
      }                                                                                                         \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  void banded_transpose_##SUF(int64_t rows, int64_t cols, const T *src, int64_t lds, T *dst, int32_t threads) {\
    /* 8 rows of the side with the longer rows (dst when rows >= lds) are walked along TRANSPOSE_LONG columns    \
       at a time, so only 8 streams of it are live; the other side is read 8 lines of TRANSPOSE_SHORT. */      \
    const int along_dst = rows >= lds;                                                                          \
    const int64_t ui = along_dst ? TRANSPOSE_LONG : TRANSPOSE_SHORT, uj = along_dst ? TRANSPOSE_SHORT : TRANSPOSE_LONG;\
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(threads)")                              \
    for (int64_t i0 = 0; i0 < rows; i0 += ui)                                                                   \
      for (int64_t j0 = 0; j0 < cols; j0 += uj) {                                                               \
        const int64_t i1 = i0 + ui < rows ? i0 + ui : rows, j1 = j0 + uj < cols ? j0 + uj : cols;               \
        const int64_t i8 = i0 + (i1 - i0) / 8 * 8, j8 = j0 + (j1 - j0) / 8 * 8;                                 \
        if (along_dst)                                                                                          \
          for (int64_t j = j0; j < j8; j += 8)                                                                  \
            for (int64_t i = i0; i < i8; i += 8) transpose8_##SUF(src + i * lds + j, lds, dst + j * rows + i, rows);\
        else                                                                                                    \
          for (int64_t i = i0; i < i8; i += 8)                                                                  \
            for (int64_t j = j0; j < j8; j += 8) transpose8_##SUF(src + i * lds + j, lds, dst + j * rows + i, rows);\
        for (int64_t i = i0; i < i1; i++) /* the edges, element by element */                                   \
          for (int64_t j = i < i8 ? j8 : j0; j < j1; j++) dst[j * rows + i] = src[i * lds + j];                 \
      }                                                                                                         \
  }

/* An 8 x 8 block of `s` (row stride ls) written transposed to `d` (row stride ld): float in registers (three
 * rounds of two-input shuffles on 8-lane vectors), double element by element. */
typedef float vec8_f32 __attribute__((vector_size(32), aligned(4)));
typedef int32_t idx8 __attribute__((vector_size(32)));
#if defined(__clang__) /* lanes i of the 16 of (a, b) */
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (idx8){__VA_ARGS__})
#endif
static inline void transpose8_f32(const float *s, int64_t ls, float *d, int64_t ld) {
  vec8_f32 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = *(const vec8_f32 *)(s + i * ls);
  for (int i = 0; i < 4; i++) { /* interleave row pairs: (a0 b0 a1 b1 | a4 b4 a5 b5), (a2 b2 a3 b3 | ...) */
    t[2 * i] = SHUFFLE8(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = SHUFFLE8(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 2; i++) { /* pairs of pairs: four consecutive rows per 128-bit half */
    r[4 * i] = SHUFFLE8(t[4 * i], t[4 * i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    r[4 * i + 1] = SHUFFLE8(t[4 * i], t[4 * i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    r[4 * i + 2] = SHUFFLE8(t[4 * i + 1], t[4 * i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    r[4 * i + 3] = SHUFFLE8(t[4 * i + 1], t[4 * i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; i++) { /* halves: rows 0-3 with rows 4-7 */
    *(vec8_f32 *)(d + i * ld) = SHUFFLE8(r[i], r[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    *(vec8_f32 *)(d + (i + 4) * ld) = SHUFFLE8(r[i], r[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
static inline void transpose8_f64(const double *s, int64_t ls, double *d, int64_t ld) {
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) d[j * ld + i] = s[i * ls + j];
}

/* Ask for transparent huge pages on the whole 2 MiB pages inside [p, p + bytes): on memory not touched yet (a
 * fresh mmap of the allocator, as every output of 32 MiB or more is) the first touch then takes one fault per
 * 2 MiB instead of one per 4 KiB. Advice only: without THP ("never"), or on memory already touched, nothing
 * changes. Returns madvise's result (0, or -1 where refused). */
int32_t banded_advise_huge(void *p, int64_t bytes) {
  const uintptr_t huge = (uintptr_t)2 << 20, lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  const uintptr_t hi = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
#ifdef MADV_HUGEPAGE
  return hi > lo ? madvise((void *)lo, hi - lo, MADV_HUGEPAGE) : 0;
#else
  return 0;
#endif
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)


/* One product's tiles as cpu.py's Tiling hands them over (Tiling.c_tiles): tile t writes rows [row0, row0 +
 * nrows) of a (rows_total, cols_total) mask's written side, reads columns [col0, col0 + width), its packed weights
 * at offset (rows per tile: rows); dW's split blocks in split_a, split_b, split_span. */
typedef struct {
  int64_t rows_total, cols_total;
  int32_t tiles, rows;
  const int32_t *row0, *nrows, *col0, *width;
  const int64_t *offset;
  const int32_t *split_a, *split_b, *split_span;
} banded_tiles;

/* banded_forward's arguments (cpu.py's ForwardArgs, field for field). Data pointers are of the call's dtype. */
typedef struct {
  int64_t m;                   /* tokens */
  banded_tiles fwd, bwd;       /* the forward's tiles, dX's */
  void *panel;                 /* the forward's packed W ⊙ M */
  int32_t pack;                /* pack panel first (0: kept from an earlier call) */
  void *bpanel;                /* dX's packed weights, to make here (NULL: none) */
  const void *w;               /* the weight, (rows_total, cols_total) of fwd, strides w_rs, w_cs */
  int64_t w_rs, w_cs;
  const uint8_t *mask;         /* the mask, the weight's shape, strides m_rs, m_cs */
  int64_t m_rs, m_cs;
  const void *x;               /* the input, row-major (x_rows: row stride ldx) or tokens last (ldx = m) */
  int32_t x_rows;
  int64_t ldx;
  const void *bias;            /* NULL: none */
  void *out;                   /* row-major when out_rows, else tokens last */
  int32_t out_rows;
  int64_t chunk;               /* tokens per chunk of a row-major side */
  int32_t threads;
} banded_forward_args;

/* banded_backward's arguments (cpu.py's BackwardArgs). */
typedef struct {
  int64_t m;                   /* tokens */
  banded_tiles bwd;            /* dX's tiles */
  const void *bpanel;          /* dX's packed weights (the forward's) */
  const void *dy;              /* row-major (dy_rows: row stride lddy) or tokens last */
  int32_t dy_rows;
  int64_t lddy;
  void *dx;                    /* NULL: no dX; row-major when dx_rows */
  int32_t dx_rows;
  int64_t chunk;
  banded_tiles dw;             /* dW's tiles, over the rows of bt */
  const void *bt, *v;          /* dW's operands: bt (rows, m) tokens last, v (m, n_v) row-major (row stride ldv) */
  int64_t n_v, ldv;
  const uint8_t *mask;         /* dW's mask, strides m_rs, m_cs */
  int64_t m_rs, m_cs;
  void *g;                     /* dW (NULL: none), strides g_rs, g_cs, g_numel values to zero */
  int64_t g_rs, g_cs, g_numel;
  void *db;                    /* NULL: no db */
  const void *s;               /* db's operand: n_s channels, tokens last (s_tokens_last) or row-major, stride lds */
  int32_t s_tokens_last;
  int64_t n_s, lds;
  int32_t by_rows;             /* one pass over dy for dX, dW and db (backward_by_rows) */
  int32_t threads;
} banded_backward_args;

/* The structs' layout as this compiler lays them out, for cpu.py to check its ctypes mirrors against (tests): the
 * size of each struct, then the offset and size of each field of banded_tiles, banded_forward_args and
 * banded_backward_args, each named in names ("struct.field", space-separated; at least 2 KiB). Returns how many
 * values it wrote. */
int32_t banded_layout(int64_t *out, char *names) {
  int32_t n = 0;
  names[0] = 0;
  out[n++] = sizeof(banded_tiles), out[n++] = sizeof(banded_forward_args), out[n++] = sizeof(banded_backward_args);
#define AT(S, F) \
  (out[n++] = (int64_t)offsetof(S, F), out[n++] = (int64_t)sizeof(((S *)0)->F), strcat(names, #S "." #F " "))
#define TILES(F) AT(banded_tiles, F)
#define FWD(F) AT(banded_forward_args, F)
#define BWD(F) AT(banded_backward_args, F)
  TILES(rows_total), TILES(cols_total), TILES(tiles), TILES(rows), TILES(row0), TILES(nrows), TILES(col0);
  TILES(width), TILES(offset), TILES(split_a), TILES(split_b), TILES(split_span);
  FWD(m), FWD(fwd), FWD(bwd), FWD(panel), FWD(pack), FWD(bpanel), FWD(w), FWD(w_rs), FWD(w_cs), FWD(mask);
  FWD(m_rs), FWD(m_cs), FWD(x), FWD(x_rows), FWD(ldx), FWD(bias), FWD(out), FWD(out_rows), FWD(chunk);
  FWD(threads);
  BWD(m), BWD(bwd), BWD(bpanel), BWD(dy), BWD(dy_rows), BWD(lddy), BWD(dx), BWD(dx_rows), BWD(chunk), BWD(dw);
  BWD(bt), BWD(v), BWD(n_v), BWD(ldv), BWD(mask), BWD(m_rs), BWD(m_cs), BWD(g), BWD(g_rs), BWD(g_cs);
  BWD(g_numel), BWD(db), BWD(s), BWD(s_tokens_last), BWD(n_s), BWD(lds), BWD(by_rows), BWD(threads);
#undef TILES
#undef FWD
#undef BWD
#undef AT
  return n;
}

/* The layer's steps, one call each (cpu.py's forward and backward): packing, products, dW's zeroing and db run
 * here rather than as separate calls from Python, each of which costs more than its work right after another
 * layer has run (measured: a 64-token step after a dense one, 0.79 ms in five calls, 0.70 in two). */
#define DEFINE_STEPS(T, SUF)                                                                                      \
  /* db[i] = sum over the m tokens of s's channel i: s tokens last (n, m; row i at s + i * lds) or row-major   \
     (m, n; token j at s + j * lds), four independent sums each. */                                             \
  static void bias_grad_##SUF(int64_t m, int64_t n, const T *s, int32_t tokens_last, int64_t lds, T *db,       \
                              int32_t threads) {                                                                \
    if (tokens_last) {                                                                                          \
      _Pragma("omp parallel for schedule(static) num_threads(threads)")                                        \
      for (int64_t i = 0; i < n; i++) db[i] = sum_tokens_##SUF(s + i * lds, m);                                \
      return;                                                                                                   \
    }                                                                                                           \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
    for (int64_t c0 = 0; c0 < n; c0 += LANES_##SUF) { /* a vector of channels, tokens four at a time */        \
      if (n - c0 >= LANES_##SUF) {                                                                              \
        vec_##SUF acc[4] = {{0}, {0}, {0}, {0}};                                                                \
        int64_t j = 0;                                                                                          \
        for (; j + 4 <= m; j += 4)                                                                              \
          for (int32_t u = 0; u < 4; u++) acc[u] += *(const vec_##SUF *)(s + (j + u) * lds + c0);               \
        for (; j < m; j++) acc[0] += *(const vec_##SUF *)(s + j * lds + c0);                                   \
        *(vec_##SUF *)(db + c0) = acc[0] + acc[1] + acc[2] + acc[3];                                           \
      } else                                                                                                    \
        for (int64_t i = c0; i < n; i++) {                                                                      \
          T sum = 0;                                                                                            \
          for (int64_t j = 0; j < m; j++) sum += s[j * lds + i];                                                \
          db[i] = sum;                                                                                          \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
                                                                                                                \
  /* The backward of a layer given dy tokens last (dyt: (n_out, m)) and x row-major, dx row-major (FC1 in GPT-2's \
     MLP), in one pass over dy: each thread owns a range of dW's tiles (rows of dyt), db of those rows, and the  \
     dX tiles (over dx's columns, from bpanel) whose band is centred in them, and walks the tokens DW_CHUNK at a \
     time (dW's pass: shorter chunks add dW's sums to g more often; measured 0.94-0.98x on GPT-2 small with     \
     128): dW's blocks read its rows of the chunk, db and dX's tiles then find them in cache. g and db are       \
     written only on each thread's rows, dx only on its columns. Returns 1 where a thread had no memory for its  \
     buffer. */                                                                                                 \
  static int32_t backward_by_rows_##SUF(int64_t m, int32_t tiles, const int32_t *row0, const int32_t *nrows,   \
                                        const int32_t *col0, const int32_t *width, const int64_t *offset,      \
                                        int32_t rows, const T *bpanel, int64_t n_in, int64_t n_out,            \
                                        const T *dyt, T *dx, int32_t dtiles, const dw_job_##SUF *d, T *db,     \
                                        int32_t threads) {                                                      \
    int32_t failed = 0;                                                                                         \
    const int64_t chunk = DW_CHUNK;                                                                             \
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)") {                                         \
      const int32_t n = omp_get_num_threads(), id = omp_get_thread_num();                                      \
      const int32_t dfirst = (int32_t)((int64_t)dtiles * id / n);                                               \
      const int32_t dlast = (int32_t)((int64_t)dtiles * (id + 1) / n);                                          \
      const int64_t o_lo = dfirst < dtiles ? d->row0[dfirst] : n_out, o_hi = dlast < dtiles ? d->row0[dlast] : n_out;\
      int32_t ufirst = 0, ulast = 0; /* dX's tiles: as many as have their middle column below o_lo, o_hi */     \
      for (int32_t u = 0; u < tiles; u++) {                                                                     \
        const int64_t mid = col0[u] + width[u] / 2;                                                             \
        ufirst += mid < o_lo, ulast += mid < o_hi;                                                              \
      }                                                                                                         \
      if (id == n - 1) ulast = tiles;                                                                           \
      const int64_t i_lo = ufirst < tiles ? row0[ufirst] : n_in, i_hi = ulast < tiles ? row0[ulast] : n_in;      \
      T *buf = i_hi > i_lo ? thread_buffer(1, (size_t)((i_hi - i_lo) * chunk) * sizeof(T)) : NULL;              \
      failed = i_hi > i_lo && !buf;                                                                             \
      if (db)                                                                                                   \
        for (int64_t o = o_lo; o < o_hi; o++) db[o] = 0;                                                        \
      for (int64_t j0 = 0; j0 < m && !failed; j0 += chunk) {                                                    \
        const int64_t nj = j0 + chunk < m ? chunk : m - j0;                                                     \
        for (int32_t t = dfirst; t < dlast; t++) dw_tile_##SUF(d, t, j0, j0 + nj);                              \
        if (db)                                                                                                 \
          for (int64_t o = o_lo; o < o_hi; o++) db[o] += sum_tokens_##SUF(dyt + o * m + j0, nj);                \
        if (i_hi > i_lo) {                                                                                      \
          for (int32_t u = ufirst; u < ulast; u++) {                                                            \
            const T init[8] = {0};                                                                              \
            product_tile_##SUF(rows, width[u], nrows[u], bpanel + offset[u], init, dyt + (int64_t)col0[u] * m + j0,\
                               m, buf + (int64_t)(row0[u] - i_lo) * chunk, chunk, 0, nj);                       \
          }                                                                                                     \
          transpose_serial_##SUF(i_hi - i_lo, nj, buf, chunk, dx + j0 * n_in + i_lo, n_in);                     \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
    return failed;                                                                                              \
  }                                                                                                             \
                                                                                                                \
  /* The forward (a: banded_forward_args): pack W ⊙ M for the forward's tiles into a->panel (unless a->pack is \
     0: a panel kept from an earlier call), and for dX's tiles into a->bpanel (from Wᵀ; NULL: none), then the   \
     product into a->out. Returns the product's result. */                                                     \
  int32_t banded_forward_##SUF(const banded_forward_args *a) {                                                  \
    const banded_tiles *f = &a->fwd, *b = &a->bwd;                                                              \
    const T *w = (const T *)a->w;                                                                               \
    if (a->pack)                                                                                                \
      banded_pack_##SUF(f->tiles, f->row0, f->nrows, f->col0, f->width, f->offset, f->rows, w, a->w_rs, a->w_cs, \
                        a->mask, a->m_rs, a->m_cs, (T *)a->panel, a->threads);                                  \
    if (a->bpanel)                                                                                              \
      banded_pack_##SUF(b->tiles, b->row0, b->nrows, b->col0, b->width, b->offset, b->rows, w, a->w_cs, a->w_rs, \
                        a->mask, a->m_cs, a->m_rs, (T *)a->bpanel, a->threads);                                 \
    return banded_product_##SUF(a->m, f->tiles, f->row0, f->nrows, f->col0, f->width, f->offset, f->rows,       \
                                (const T *)a->panel, f->rows_total, f->cols_total, (const T *)a->x, a->x_rows,  \
                                a->ldx, (const T *)a->bias, (T *)a->out, a->out_rows, a->chunk, a->threads);    \
  }                                                                                                             \
                                                                                                                \
  /* The backward (a: banded_backward_args): dX, the product of dy and the packed Wᵀ (a->bpanel) over dX's      \
     tiles, into a->dx (NULL: none); dW into a->g (NULL: none), its g_numel values zeroed first, then          \
     banded_dw over the tiles a->dw; db, the sums of a->s over the tokens (bias_grad), into a->db (NULL:       \
     none). Returns the product's result. */                                                                    \
  int32_t banded_backward_##SUF(const banded_backward_args *a) {                                                \
    const banded_tiles *b = &a->bwd, *w = &a->dw;                                                               \
    int32_t failed = 0;                                                                                         \
    T *g = (T *)a->g;                                                                                           \
    if (g) { /* dW is exactly zero off the mask: both paths below add on the mask's entries only */            \
      const int64_t g_numel = a->g_numel;                                                                       \
      _Pragma("omp parallel for schedule(static) num_threads(a->threads)")                                     \
      for (int64_t i = 0; i < g_numel; i += 4096)                                                               \
        memset(g + i, 0, sizeof(T) * (size_t)(g_numel - i < 4096 ? g_numel - i : 4096));                       \
    }                                                                                                           \
    if (a->by_rows) { /* dy tokens last, x and dx row-major, dW over dy's rows: backward_by_rows */           \
      const dw_job_##SUF d = {a->m, a->n_v, a->ldv, a->m_rs, a->m_cs, a->g_rs, a->g_cs, w->row0, w->nrows,     \
                              w->col0, w->width, w->split_a, w->split_b, w->split_span, (const T *)a->bt,      \
                              (const T *)a->v, a->mask, g};                                                     \
      return backward_by_rows_##SUF(a->m, b->tiles, b->row0, b->nrows, b->col0, b->width, b->offset, b->rows,  \
                                    (const T *)a->bpanel, b->rows_total, b->cols_total, (const T *)a->dy,       \
                                    (T *)a->dx, w->tiles, &d, (T *)a->db, a->threads);                          \
    }                                                                                                           \
    if (a->dx)                                                                                                  \
      failed = banded_product_##SUF(a->m, b->tiles, b->row0, b->nrows, b->col0, b->width, b->offset, b->rows,   \
                                    (const T *)a->bpanel, b->rows_total, b->cols_total, (const T *)a->dy,       \
                                    a->dy_rows, a->lddy, NULL, (T *)a->dx, a->dx_rows, a->chunk, a->threads);   \
    if (g)                                                                                                      \
      banded_dw_##SUF(a->m, w->tiles, w->row0, w->nrows, w->col0, w->width, (const T *)a->bt, (const T *)a->v,  \
                      a->n_v, a->ldv, a->mask, a->m_rs, a->m_cs, g, a->g_rs, a->g_cs, w->split_a, w->split_b,  \
                      w->split_span, a->threads);                                                               \
    if (a->db)                                                                                                  \
      bias_grad_##SUF(a->m, a->n_s, (const T *)a->s, a->s_tokens_last, a->lds, (T *)a->db, a->threads);         \
    return failed;                                                                                              \
  }

DEFINE_STEPS(float, f32)
DEFINE_STEPS(double, f64)
