// Sparse convolution on CUDA (torch-free): implicit GEMM over the output-major kernel map
// nbmap [M, K], math in csrc/common/sparse_conv_params.h and sparse_conv_launch.h.
//
// Forward (fwd_kernel): a block owns a tile of kBM = 64 output rows x kBN = 64 output
// channels (grid ceil(M / 64) x ceil(Cout / 64)), 256 threads with a 4 x 4 register tile
// each (rows ty + 16 i, channels tx + 16 j). For each kernel offset k it reads the tile's
// 64 neighbour rows nbmap[m, k] into shared memory (an offset no row of the tile has is
// skipped as a whole), then for each slice of kBK = 16 input channels gathers those rows of
// x (zeros for a missing neighbour) and the slice of W_k into shared memory (fp32) and
// accumulates with one fp32 FMA per term. Each output element is written by exactly one
// thread, once (plus bias, converted to the output dtype): deterministic, no atomics, and
// the terms are summed in the CPU kernels' order (k ascending, then c ascending), so for
// finite weights the result has the CPU's bits (a missing neighbour adds fma(0, w, acc),
// which leaves acc unchanged).
// Traffic: each block reads its rows' neighbours once per offset (from L2 when they are
// shared between tiles) and W once per block; out is written once. Arithmetic intensity
// is that of a 64 x 64 tile GEMM. This is the correctness-first SIMT kernel: no tensor
// cores (WMMA / mma.sync) yet, and the zero-skipping spike path runs this dense kernel on
// CUDA (the skipped products are exact zeros, so the results are the same).
//
// Weight gradient (wgrad_kernel): a block owns dw[k, 64 input channels, 64 output
// channels] for one range of output rows (grid K * ctiles * otiles x splits). It walks the
// range in chunks of kWP = 64 rows; 8 threads compact the chunk's pairs (nbmap[m, k] >= 0)
// in row order through shared counts, the block gathers their x rows and g rows into
// shared memory and each thread accumulates its 4 x 4 outputs over the pairs in order. With
// one split that is the CPU's order (m ascending, one FMA per pair); with several, each
// range's partial sums go to ws and reduce_kernel adds them in range order. No atomics;
// the split count depends on M only (sparse_wgrad_splits), so results are reproducible.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/neurons/neuron_kernels.cuh"  // Cvt
#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
namespace {  // one copy per dtype translation unit

using cuda_neuron::Cvt;

constexpr int kThreads = 256;  // 16 x 16, each thread a 4 x 4 register tile
constexpr int kBM = 64;        // forward: output rows per block
constexpr int kBN = 64;        // forward: output channels per block
constexpr int kBK = 16;        // forward: input channels per shared slice
constexpr int kWC = 64;        // wgrad: input channels per block
constexpr int kWO = 64;        // wgrad: output channels per block
constexpr int kWP = 64;        // wgrad: output rows per chunk
constexpr int kGroups = 8;     // wgrad: compaction threads (kWP / kGroups rows each)
constexpr int kGroupRows = kWP / kGroups;
constexpr int64_t kMaxGridY = 65535;

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const SparseConvCudaParams p) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN];
  __shared__ int rows_in[kBM];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int tid = int(threadIdx.x), tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.x) * kBM, o0 = int64_t(blockIdx.y) * kBN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int64_t k = 0; k < p.K; ++k) {
    // Whether a row of the tile has a neighbour at k: a barrier with an OR over the block
    // (rows_in is read only after it, and only in offsets that are not skipped).
    int has = 0;
    if (tid < kBM) {
      const int64_t m = m0 + tid;
      int i = -1;
      if (m < p.M) {
        i = p.nbmap[m * p.K + k];
        if (i < -1 || int64_t(i) >= p.N) {
          atomicOr(p.bad, 1);
          i = -1;
        }
        has = i >= 0;
      }
      rows_in[tid] = i;
    }
    if (!__syncthreads_or(has) || p.Cin == 0) continue;  // uniform over the block
    const T* wk = w + k * p.Cin * p.Cout;
    for (int64_t c0 = 0; c0 < p.Cin; c0 += kBK) {
      for (int e = tid; e < kBM * kBK; e += kThreads) {
        const int r = e / kBK, cc = e % kBK;
        const int i = rows_in[r];
        const int64_t c = c0 + cc;
        As[cc][r] = (i >= 0 && c < p.Cin) ? Cvt<T>::load(x[int64_t(i) * p.Cin + c]) : 0.f;
      }
      for (int e = tid; e < kBK * kBN; e += kThreads) {
        const int cc = e / kBN, o = e % kBN;
        const int64_t c = c0 + cc, oc = o0 + o;
        Bs[cc][o] = (c < p.Cin && oc < p.Cout) ? Cvt<T>::load(wk[c * p.Cout + oc]) : 0.f;
      }
      __syncthreads();
      const int nc = int(p.Cin - c0 < kBK ? p.Cin - c0 : kBK);
      for (int cc = 0; cc < nc; ++cc) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = As[cc][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Bs[cc][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t o = o0 + tx + 16 * j;
      if (o >= p.Cout) continue;
      float v = acc[i][j];
      if (p.bias) v = v + p.bias[o];
      out[m * p.Cout + o] = Cvt<T>::store(v);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) wgrad_kernel(const SparseConvCudaParams p) {
  __shared__ float Xs[kWP][kWC + 1];
  __shared__ float Gs[kWP][kWO + 1];
  __shared__ int s_in[kWP];
  __shared__ int s_out[kWP];
  __shared__ int counts[kGroups];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ g = static_cast<const T*>(p.g);
  const int tid = int(threadIdx.x), tx = tid % 16, ty = tid / 16;
  const int64_t ctiles = (p.Cin + kWC - 1) / kWC, otiles = (p.Cout + kWO - 1) / kWO;
  int64_t b = blockIdx.x;
  const int64_t o0 = (b % otiles) * kWO;
  b /= otiles;
  const int64_t c0 = (b % ctiles) * kWC;
  const int64_t k = b / ctiles;
  const int64_t split = blockIdx.y;
  const int64_t per = (p.M + p.splits - 1) / p.splits;
  const int64_t r_begin = split * per < p.M ? split * per : p.M;
  const int64_t r_end = r_begin + per < p.M ? r_begin + per : p.M;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int64_t mb = r_begin; mb < r_end; mb += kWP) {
    // Ordered compaction of the chunk's pairs: thread q < kGroups owns rows
    // mb + q * kGroupRows ... and writes its pairs after those of the lower groups.
    int vals[kGroupRows];
    if (tid < kGroups) {
      int cnt = 0;
#pragma unroll
      for (int r = 0; r < kGroupRows; ++r) {
        const int64_t m = mb + tid * kGroupRows + r;
        int i = -1;
        if (m < r_end) {
          i = p.nbmap[m * p.K + k];
          if (i < -1 || int64_t(i) >= p.N) {
            atomicOr(p.bad, 1);
            i = -1;
          }
        }
        vals[r] = i;
        cnt += i >= 0;
      }
      counts[tid] = cnt;
    }
    __syncthreads();
    int np = 0, pos = 0;
    for (int q = 0; q < kGroups; ++q) {
      if (q == tid) pos = np;
      np += counts[q];
    }
    if (tid < kGroups) {
#pragma unroll
      for (int r = 0; r < kGroupRows; ++r)
        if (vals[r] >= 0) {
          s_in[pos] = vals[r];
          s_out[pos] = tid * kGroupRows + r;  // row mb + s_out
          ++pos;
        }
    }
    __syncthreads();
    if (np > 0) {
      for (int e = tid; e < np * kWC; e += kThreads) {
        const int q = e / kWC, c = e % kWC;
        Xs[q][c] = c0 + c < p.Cin ? Cvt<T>::load(x[int64_t(s_in[q]) * p.Cin + c0 + c]) : 0.f;
      }
      for (int e = tid; e < np * kWO; e += kThreads) {
        const int q = e / kWO, o = e % kWO;
        Gs[q][o] = o0 + o < p.Cout
                       ? Cvt<T>::load(g[(mb + s_out[q]) * p.Cout + o0 + o])
                       : 0.f;
      }
      __syncthreads();
      for (int q = 0; q < np; ++q) {
        float a[4], bb[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = Xs[q][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) bb[j] = Gs[q][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], bb[j], acc[i][j]);
      }
    }
    __syncthreads();  // the next chunk overwrites counts, s_in, s_out, Xs, Gs
  }
  float* dst = p.splits > 1 ? p.ws + split * p.K * p.Cin * p.Cout : p.dw;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t c = c0 + ty + 16 * i;
    if (c >= p.Cin) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t o = o0 + tx + 16 * j;
      if (o < p.Cout) dst[(k * p.Cin + c) * p.Cout + o] = acc[i][j];
    }
  }
}

template <typename T>
cudaError_t launch_fwd(const SparseConvCudaParams& p, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(p.bad, 0, sizeof(int32_t), stream);
  if (err != cudaSuccess || p.M == 0 || p.Cout == 0) return err;
  const int64_t gy = (p.Cout + kBN - 1) / kBN, gx = (p.M + kBM - 1) / kBM;
  if (gy > kMaxGridY || gx > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  fwd_kernel<T><<<dim3(unsigned(gx), unsigned(gy)), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_wgrad(const SparseConvCudaParams& p, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(p.bad, 0, sizeof(int32_t), stream);
  if (err != cudaSuccess || p.K == 0 || p.Cin == 0 || p.Cout == 0) return err;
  const int64_t gx = p.K * ((p.Cin + kWC - 1) / kWC) * ((p.Cout + kWO - 1) / kWO);
  if (gx > 0x7fffffffLL || p.splits < 1 || p.splits > kMaxGridY ||
      (p.splits > 1 && p.ws == nullptr))
    return cudaErrorInvalidConfiguration;
  wgrad_kernel<T><<<dim3(unsigned(gx), unsigned(p.splits)), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace
}  // namespace cuda_sparse
}  // namespace spikeops
