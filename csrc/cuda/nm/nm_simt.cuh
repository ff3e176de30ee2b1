// N:M sparse GEMMs without tensor cores (any n:m, any dtype), fp32 accumulation.
//
// Math:
//   forward     out[b, r] = sum_c in[b, c] * W[r, c] + bias[r]     (in = x [batch, k])
//   grad_input  out[b, c] = sum_r in[b, r] * W[r, c]               (in = grad_y [batch, rows])
// Both are C[b, j] = sum_t A[t, b] * B[t, j] over 64x64 output tiles, one 256-thread block
// per tile, each thread owning a 4x4 register tile (4 batch rows x 4 consecutive output
// columns, so stores are coalesced). A slice of the reduction dimension t is staged into
// shared memory as fp32: A from the dense activations, B from W decoded to dense (zeros at
// the pruned positions). The decoded tile does 1 / (n / m) more FMAs than the sparse
// product, which is the price of a simple, general fallback: the 2:4 half-precision
// forward has the tensor-core path (nm_mma24.cuh) and small batches the GEMV path.
// Memory traffic: W (values + meta) is read once per batch tile, the activations once per
// output-column tile.
// Determinism: every output element is produced by one thread, summing t in a fixed order;
// no atomics. Every output element of the grid is written (grad_x is NaN-poisoned in tests).
// Out of bounds: rows / batch / columns past the edges are zero-filled in shared memory
// and never stored; decode_group reads only the group's n value slots and its meta bytes.
#pragma once

#include "cuda/nm/nm_common.cuh"

namespace spikeops {
namespace cuda_nm {

constexpr int kSimtThreads = 256;
constexpr int kSimtTile = 64;    // batch rows and output columns per block
constexpr int kSimtStride = 68;  // floats per staged row (64 + 4: 16-byte aligned, fewer conflicts)
constexpr int kFwdSlice = 32;    // forward: at most this many columns of k per stage
constexpr int kBwdSlice = 16;    // grad_input: rows of W per stage
constexpr int kFwdSmemBytes = 2 * kFwdSlice * kSimtStride * 4;  // dynamic: A and B slices
constexpr int kBwdSmemBytes = 2 * kBwdSlice * kSimtStride * 4;

// acc[i][j] += sum_t A[t][ty * 4 + i] * B[t][tx * 4 + j].
__device__ __forceinline__ void simt_tile_fma(const float* __restrict__ As,
                                              const float* __restrict__ Bs, int slice, int ty,
                                              int tx, float (&acc)[4][4]) {
  for (int t = 0; t < slice; ++t) {
    const float4 a = *reinterpret_cast<const float4*>(As + t * kSimtStride + ty * 4);
    const float4 b = *reinterpret_cast<const float4*>(Bs + t * kSimtStride + tx * 4);
    const float av[4] = {a.x, a.y, a.z, a.w};
    const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

// Forward. Grid: x = batch tiles, y = tiles of 64 rows of W. Per stage a slice of
// floor(32 / m) whole groups of k.
template <typename T>
__global__ void __launch_bounds__(kSimtThreads) nm_linear_simt_kernel(const NMGemmParams p) {
  extern __shared__ __align__(16) unsigned char nm_smem[];
  float* __restrict__ As = reinterpret_cast<float*>(nm_smem);  // As[cc][b] = x[b0 + b, c0 + cc]
  float* __restrict__ Bs = As + kFwdSlice * kSimtStride;      // Bs[cc][r] = W[r0 + r, c0 + cc]
  const T* __restrict__ x = static_cast<const T*>(p.in);
  const T* __restrict__ vals = static_cast<const T*>(p.values);
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t b0 = int64_t(blockIdx.x) * kSimtTile, r0 = int64_t(blockIdx.y) * kSimtTile;
  const int m = p.m, n = p.n;
  const int gps = kFwdSlice / m > 0 ? kFwdSlice / m : 1;  // groups per stage
  const int slice = gps * m;                               // <= 32 columns
  const int64_t K = p.k;
  float acc[4][4] = {};
  for (int64_t c0 = 0; c0 < K; c0 += slice) {
    for (int idx = tid; idx < kSimtTile * slice; idx += kSimtThreads) {
      const int b = idx / slice, cc = idx - b * slice;
      const int64_t gb = b0 + b, col = c0 + cc;
      As[cc * kSimtStride + b] = (gb < p.batch && col < K) ? to_f32(x[gb * K + col]) : 0.f;
    }
    for (int idx = tid; idx < kSimtTile * gps; idx += kSimtThreads) {
      const int r = idx / gps, gg = idx - r * gps;
      const int64_t gr = r0 + r, col0 = c0 + int64_t(gg) * m;
      const bool ok = gr < p.rows && col0 < K;
      const uint32_t mask = ok ? load_group_mask(p.meta + gr * p.meta_stride, col0, m) : 0u;
      decode_group(mask, m, n, vals + (ok ? gr * p.kept + (col0 / m) * n : 0),
                   Bs + gg * m * kSimtStride + r, kSimtStride);
    }
    __syncthreads();
    simt_tile_fma(As, Bs, slice, ty, tx, acc);
    __syncthreads();
  }
  T* __restrict__ out = static_cast<T*>(p.out);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t b = b0 + ty * 4 + i;
    if (b >= p.batch) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + tx * 4 + j;
      if (r >= p.rows) continue;
      const float v = acc[i][j] + (bias != nullptr ? to_f32(bias[r]) : 0.f);
      out[b * p.rows + r] = from_f32<T>(v);
    }
  }
}

// grad_input. Grid: x = batch tiles, y = tiles of floor(64 / m) whole groups of columns.
// Loops over all rows of W, kBwdSlice at a time.
template <typename T>
__global__ void __launch_bounds__(kSimtThreads) nm_grad_input_simt_kernel(const NMGemmParams p) {
  extern __shared__ __align__(16) unsigned char nm_smem[];
  float* __restrict__ As = reinterpret_cast<float*>(nm_smem);  // As[rr][b] = gy[b0 + b, r0 + rr]
  float* __restrict__ Bs = As + kBwdSlice * kSimtStride;      // Bs[rr][cc] = W[r0 + rr, c0 + cc]
  const T* __restrict__ gy = static_cast<const T*>(p.in);
  const T* __restrict__ vals = static_cast<const T*>(p.values);
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int m = p.m, n = p.n;
  const int gpt = kSimtTile / m > 0 ? kSimtTile / m : 1;  // groups per column tile
  const int width = gpt * m;                              // <= 64 columns
  const int64_t b0 = int64_t(blockIdx.x) * kSimtTile, c0 = int64_t(blockIdx.y) * width;
  const int64_t K = p.k, R = p.rows;
  // Columns [width, 64) of the tile hold no group: zero once (they are never stored).
  for (int idx = tid; idx < kBwdSlice * (kSimtTile - width); idx += kSimtThreads) {
    const int rr = idx / (kSimtTile - width), cc = width + idx % (kSimtTile - width);
    Bs[rr * kSimtStride + cc] = 0.f;
  }
  float acc[4][4] = {};
  for (int64_t r0 = 0; r0 < R; r0 += kBwdSlice) {
    for (int idx = tid; idx < kSimtTile * kBwdSlice; idx += kSimtThreads) {
      const int b = idx / kBwdSlice, rr = idx % kBwdSlice;
      const int64_t gb = b0 + b, gr = r0 + rr;
      As[rr * kSimtStride + b] = (gb < p.batch && gr < R) ? to_f32(gy[gb * R + gr]) : 0.f;
    }
    for (int idx = tid; idx < kBwdSlice * gpt; idx += kSimtThreads) {
      const int rr = idx / gpt, gg = idx - rr * gpt;
      const int64_t gr = r0 + rr, col0 = c0 + int64_t(gg) * m;
      const bool ok = gr < R && col0 < K;
      const uint32_t mask = ok ? load_group_mask(p.meta + gr * p.meta_stride, col0, m) : 0u;
      decode_group(mask, m, n, vals + (ok ? gr * p.kept + (col0 / m) * n : 0),
                   Bs + rr * kSimtStride + gg * m, 1);
    }
    __syncthreads();
    simt_tile_fma(As, Bs, kBwdSlice, ty, tx, acc);
    __syncthreads();
  }
  T* __restrict__ out = static_cast<T*>(p.out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t b = b0 + ty * 4 + i;
    if (b >= p.batch) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int cc = tx * 4 + j;
      const int64_t c = c0 + cc;
      if (cc >= width || c >= K) continue;
      out[b * K + c] = from_f32<T>(acc[i][j]);
    }
  }
}

inline bool simt_grid(int64_t batch, int64_t ytiles, dim3& grid) {
  const int64_t bt = (batch + kSimtTile - 1) / kSimtTile;
  if (bt > 0x7fffffff || ytiles > 65535 || bt <= 0 || ytiles <= 0) return false;
  grid = dim3(static_cast<unsigned>(bt), static_cast<unsigned>(ytiles), 1);
  return true;
}

template <typename T>
cudaError_t launch_linear_simt(const NMGemmParams& p, cudaStream_t stream) {
  dim3 grid;
  if (!simt_grid(p.batch, (p.rows + kSimtTile - 1) / kSimtTile, grid))
    return cudaErrorInvalidConfiguration;
  const auto kernel = nm_linear_simt_kernel<T>;
  NM_LAUNCH(kernel, grid, kSimtThreads, kFwdSmemBytes, stream)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_grad_input_simt(const NMGemmParams& p, cudaStream_t stream) {
  const int gpt = kSimtTile / p.m > 0 ? kSimtTile / p.m : 1;
  const int64_t width = int64_t(gpt) * p.m;
  dim3 grid;
  if (!simt_grid(p.batch, (p.k + width - 1) / width, grid)) return cudaErrorInvalidConfiguration;
  const auto kernel = nm_grad_input_simt_kernel<T>;
  NM_LAUNCH(kernel, grid, kSimtThreads, kBwdSmemBytes, stream)(p);
  return cudaGetLastError();
}

}  // namespace cuda_nm
}  // namespace spikeops
