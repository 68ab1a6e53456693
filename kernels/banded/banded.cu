// Block-banded linear, forward: y = x (W ⊙ M)ᵀ + b on CUDA, reading only the K tiles inside the band.
//
// Math. x is (M, K) row-major (tokens, input channels), W is (N, K) row-major (output, input channels, as in
// nn.Linear), b is (N,) or absent, y is (M, N) row-major. The mask (the M of W ⊙ M) keeps, in row n, the columns
// [lo[n], hi[n]) (int32, computed on the host from the bool mask: kernels/banded/cuda.py ranges_from_mask).
// The banded masks of lib/pruning/patterns.py banded_mask are such ranges: FC1 (W (rC, C)) keeps
// |n - k·r| <= w/2, FC2 (W (C, rC)) the transpose |k - n·r| <= w/2, both one interval of k per row n. So
//
//     y[m, n] = b[n] + Σ_{lo[n] <= k < hi[n]} x[m, k] · W[n, k]
//
// accumulated in fp32 for every input dtype (fp32, fp16, bf16), rounded once to the output dtype.
//
// Tiling. The classic shared-memory SGEMM (CUTLASS's "threadblock tile / thread tile" decomposition; Volkov &
// Demmel, "Benchmarking GPUs to tune dense linear algebra", SC'08; Simon Boehm's "How to optimize a CUDA
// matmul kernel"): one block of 256 threads computes a BM × BN = 64 × 64 tile of y, stepping along K in
// slices of BK = 16. Each step stages a 64 × 16 slice of x and of W in shared memory (converted to fp32,
// transposed to k-major so the inner product reads rows), and each thread accumulates a 4 × 4 register tile
// from 16 rank-1 updates. The band enters in one place: the K loop of a block runs only over
// [min lo, max hi) of its 64 output rows (the start rounded down to a BK boundary), a span of about
// (BN + w) / r columns for FC1 and BN·r + w for FC2 (band width w, ratio r), instead of all K; the FLOPs and
// loads of a tile shrink by that span over K. Slices that lie inside every row's range ("interior":
// max lo <= k0 and k0 + BK <= min hi) are loaded without predicates; the slices at the band's edges (and at the
// matrix edges) load W through the mask predicate lo[n] <= k < hi[n] (recomputed from the ranges each thread
// keeps in registers), so entries of W outside the band are read as zero whatever W holds there: the kernel
// computes W ⊙ M, not W.
//
// Deliberately simple: SIMT fp32 FMAs, no tensor cores (WMMA/mma.sync), no double buffering and no vector
// loads from global memory (inputs of any K and row stride are accepted). Against cuBLAS on tensor cores
// this keeps the fp16/bf16 speedup well below 1/density; it is a correct baseline for a tensor-core version.
//
// Only CUDA runtime headers are included (no torch headers): the file compiles in seconds with nvcc alone,
// which is how it is build-tested on machines without a GPU (tests/kernels/banded/test_cuda.py). The torch
// binding is banded_binding.cpp; the single entry point is the extern "C" launcher at the end.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

namespace {

constexpr int BM = 64;        // tokens per block tile
constexpr int BN = 64;        // output channels per block tile
constexpr int BK = 16;        // K slice per step
constexpr int TM = 4;         // tokens per thread
constexpr int TN = 4;         // output channels per thread
constexpr int THREADS = 256;  // (BM / TM) * (BN / TN)
constexpr int PAD = 4;        // shared rows of BM + PAD floats: fewer bank conflicts on the transposed store,
                              // still 16-byte aligned for the float4 reads of the inner product
// Each thread loads 4 consecutive k of one row, for the x slice and for the W slice:
// 64 rows × 16 k = 1024 = 256 threads × 4.
constexpr int LOAD_K = 4;
static_assert(BM * BK == THREADS * LOAD_K && BN * BK == THREADS * LOAD_K, "one load pass per slice");
static_assert((BM / TM) * (BN / TN) == THREADS, "one thread per 4 x 4 register tile");

// Explicit conversions: torch's extension build defines __CUDA_NO_HALF_CONVERSIONS__ and
// __CUDA_NO_BFLOAT16_CONVERSIONS__, so the implicit ones do not exist.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__global__ void __launch_bounds__(THREADS) banded_forward_kernel(
    // pointers
    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, const int* __restrict__ lo,
    const int* __restrict__ hi, T* __restrict__ y,
    // sizes
    int m_size, int n_size, int k_size,
    // strides (row strides; the column stride is 1)
    int64_t ldx, int64_t ldw, int64_t ldy) {
  __shared__ __align__(16) float xs[BK][BM + PAD];  // x slice, k-major: xs[k][m]
  __shared__ __align__(16) float ws[BK][BN + PAD];  // W slice, k-major: ws[k][n]
  __shared__ int band[4];                           // min lo, max hi, max lo, min hi over the tile's rows

  const int tid = threadIdx.x;
  const int m0 = blockIdx.x * BM;  // tokens on x: any number of them (gridDim.x up to 2^31 - 1)
  const int n0 = blockIdx.y * BN;

  // The tile's K range: the union of its rows' ranges. Empty rows and rows past N add nothing to it but make
  // every slice an edge slice (their W loads must be predicated to zero).
  if (tid == 0) {
    band[0] = INT_MAX;
    band[1] = INT_MIN;
    band[2] = INT_MIN;
    band[3] = INT_MAX;
  }
  __syncthreads();
  if (tid < BN) {
    const int n = n0 + tid;
    const int row_lo = n < n_size ? max(lo[n], 0) : 0;
    const int row_hi = n < n_size ? min(hi[n], k_size) : 0;
    if (row_lo < row_hi) {
      atomicMin(&band[0], row_lo);
      atomicMax(&band[1], row_hi);
      atomicMax(&band[2], row_lo);
      atomicMin(&band[3], row_hi);
    } else {
      atomicMax(&band[2], INT_MAX);
      atomicMin(&band[3], INT_MIN);
    }
  }
  __syncthreads();
  const int k_begin = band[0] == INT_MAX ? 0 : band[0] / BK * BK;
  const int k_end = band[0] == INT_MAX ? 0 : band[1];  // empty tile: no K step, y = b
  const int lo_max = band[2], hi_min = band[3];

  // This thread's loads: row `load_row` of each slice, columns load_k .. load_k + 3; the 4 threads of a row read
  // its 16 consecutive k (one 32- or 64-byte segment).
  const int load_row = tid / (BK / LOAD_K);
  const int load_k = (tid % (BK / LOAD_K)) * LOAD_K;
  const int xm = m0 + load_row;
  const int wn = n0 + load_row;
  const bool x_row_ok = xm < m_size;
  // The mask predicate of this thread's W row, kept in registers; ranges are clamped to [0, K] here and above,
  // so no range can make the kernel read outside x or W.
  const int w_lo = wn < n_size ? max(lo[wn], 0) : 0;
  const int w_hi = wn < n_size ? min(hi[wn], k_size) : 0;
  const T* x_row = x + (x_row_ok ? static_cast<int64_t>(xm) * ldx : 0);
  const T* w_row = w + (wn < n_size ? static_cast<int64_t>(wn) * ldw : 0);
  const bool m_full = m0 + BM <= m_size;  // block-uniform

  // This thread's outputs: tokens ty*4 .. ty*4 + 3, channels tx*4 .. tx*4 + 3 of the tile.
  const int tx = tid % (BN / TN);
  const int ty = tid / (BN / TN);
  float acc[TM][TN] = {};

  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    const bool interior = lo_max <= k0 && k0 + BK <= hi_min;  // block-uniform: no divergence
#pragma unroll
    for (int e = 0; e < LOAD_K; ++e) {
      const int k = k0 + load_k + e;
      float xv, wv;
      if (interior && m_full) {
        xv = to_float(x_row[k]);
        wv = to_float(w_row[k]);
      } else {
        xv = x_row_ok && k < k_size ? to_float(x_row[k]) : 0.0f;
        wv = w_lo <= k && k < w_hi ? to_float(w_row[k]) : 0.0f;  // W ⊙ M: zero outside [lo, hi)
      }
      xs[load_k + e][load_row] = xv;
      ws[load_k + e][load_row] = wv;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&xs[kk][ty * TM]);
      const float4 b = *reinterpret_cast<const float4*>(&ws[kk][tx * TN]);
      const float av[TM] = {a.x, a.y, a.z, a.w};
      const float bv[TN] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int n = n0 + tx * TN + j;
    if (n >= n_size) continue;
    const float bn = bias != nullptr ? to_float(bias[n]) : 0.0f;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + ty * TM + i;
      if (m < m_size) y[static_cast<int64_t>(m) * ldy + n] = from_float<T>(acc[i][j] + bn);
    }
  }
}

template <typename T>
cudaError_t launch(const void* x, const void* w, const void* bias, const int* lo, const int* hi, void* y, int m,
                   int n, int k, int64_t ldx, int64_t ldw, int64_t ldy, cudaStream_t stream) {
  const dim3 grid((m - 1) / BM + 1, (n - 1) / BN + 1);  // m, n > 0: no overflow near INT_MAX
  banded_forward_kernel<T><<<grid, THREADS, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), lo, hi, static_cast<T*>(y),
      m, n, k, ldx, ldw, ldy);
  return cudaGetLastError();
}

}  // namespace

// The launcher: y (m, n) = x (m, k) · (W ⊙ M)ᵀ + bias, all device pointers, row-major with row strides ldx, ldw,
// ldy (elements), mask rows [lo[j], hi[j]) as int32 device arrays of length n, bias may be null. dtype: 0 fp32,
// 1 fp16, 2 bf16 (x, w, bias and y share it). Returns null on success, else the CUDA error's message.
extern "C" const char* sparsity_lab_banded_forward(int dtype, const void* x, const void* w, const void* bias,
                                                   const int* lo, const int* hi, void* y, int m, int n, int k,
                                                   int64_t ldx, int64_t ldw, int64_t ldy, cudaStream_t stream) {
  if (m == 0 || n == 0) return nullptr;  // an empty grid is a launch error; there is nothing to compute
  if (m < 0 || n < 0 || k < 0 || (n + BN - 1) / BN > 65535) return "banded forward: sizes out of range";
  cudaError_t err;
  switch (dtype) {
    case 0:
      err = launch<float>(x, w, bias, lo, hi, y, m, n, k, ldx, ldw, ldy, stream);
      break;
    case 1:
      err = launch<__half>(x, w, bias, lo, hi, y, m, n, k, ldx, ldw, ldy, stream);
      break;
    case 2:
      err = launch<__nv_bfloat16>(x, w, bias, lo, hi, y, m, n, k, ldx, ldw, ldy, stream);
      break;
    default:
      return "banded forward: dtype code must be 0 (fp32), 1 (fp16) or 2 (bf16)";
  }
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
