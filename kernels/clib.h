/* SPDX-License-Identifier: MIT
 *
 * What the C kernels (kernels/banded/cpu.c, kernels/sparse_gemv/cpu.c) share. Each includes it as "../clib.h";
 * kernels/clib.py puts its text into every library's cache key, so a change here rebuilds them all.
 */
#ifndef SPARSITY_LAB_CLIB_H
#define SPARSITY_LAB_CLIB_H

#include <stddef.h>
#include <stdlib.h>

/* The widest vector registers -march=native offers (bytes) and how many there are: GCC/Clang vector extensions
 * of VEC_BYTES lower to one register each, and register blocking must fit VEC_REGS of them (vectors wider than
 * the registers are split, and blocking sized for 32 spills with 16). */
#if defined(__AVX512F__)
#define VEC_BYTES 64 /* zmm */
#define VEC_REGS 32
#elif defined(__AVX__)
#define VEC_BYTES 32 /* ymm */
#define VEC_REGS 16
#elif defined(__aarch64__)
#define VEC_BYTES 16 /* NEON q */
#define VEC_REGS 32
#else
#define VEC_BYTES 16 /* SSE xmm */
#define VEC_REGS 16
#endif

/* Buffer `which` (0 or 1) of the calling thread, at least `bytes` long (64-byte aligned; NULL where out of
 * memory). Kept from call to call and grown when too small: OpenMP's threads persist, so a kernel's scratch is
 * allocated (and its pages first touched) once per thread, not on every call (a fresh 256 KiB buffer cost a
 * banded product of 16 tokens 117 us, nearly all of it). A thread that exits keeps its buffers. */
static inline void *thread_buffer(int which, size_t bytes) {
  static __thread void *buffer[2];
  static __thread size_t capacity[2];
  if (capacity[which] < bytes) {
    free(buffer[which]);
    buffer[which] = aligned_alloc(64, (bytes + 63) / 64 * 64);
    capacity[which] = buffer[which] ? bytes : 0;
  }
  return buffer[which];
}

#endif
