// N:M sparse forward for small batches (batch <= 16): out = x @ W^T + bias.
//
// Math: out[b, r] = sum_c x[b, c] * W[r, c] + bias[r], fp32 accumulation.
// Memory traffic: the op is bound by reading W, rows * (kept * sizeof(T) + k / 8) bytes,
// which this kernel reads exactly once, with 16-byte loads, fully coalesced: against a
// dense matmul's rows * k * sizeof(T) that is 0.56x for 2:4 in 16 bits. x (batch * k) is
// re-read from L2 once per block (kRowsPerBlock rows of W), out is written once.
// Parallelisation: a block of 8 warps owns kRowsPerBlock consecutive rows of W, each warp
// kRowsPerWarp of them, and walks k in chunks of 1024 columns. Per chunk the block stages
// x into shared memory as fp32, column-major ([column][batch], so one vector load gives a
// column for every batch row) with a 16-byte pad per 32 columns (so lanes reading "the
// same" column of their own segment hit different banks). Fast (compile-time n:m) path:
// lane l owns columns [32 l, 32 l + 32) of the chunk: one 4-byte meta load and
// 32 n / m values (one or two 16-byte loads for half types) per row, issued before the
// staging barrier so they overlap it; the mask is decoded with ffs. Generic path (any n:m,
// unaligned rows): lane l owns whole groups l, l + 32, ... with scalar loads.
// Each lane keeps kRowsPerWarp x BB partial sums; one butterfly shuffle reduction per row
// at the end (fixed order: deterministic), then lane b stores batch row b.
#pragma once

#include "cuda/nm/nm_common.cuh"
#include "cuda/nm/nm_launch.h"

namespace spikeops {
namespace cuda_nm {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvChunk = 1024;  // columns of k per stage: 32 lanes x 32 columns

template <int BB>
struct GemvCfg {
  static constexpr int kRowsPerWarp = BB >= 8 ? 4 : 2;
  static constexpr int kRowsPerBlock = kGemvWarps * kRowsPerWarp;
  static constexpr int kPad = BB < 4 ? BB : 4;               // floats after each segment
  static constexpr int kSegStride = 32 * BB + kPad;          // floats per 32-column segment
  static constexpr int kSmemBytes = 32 * kSegStride * 4;     // one chunk of x
};

// Offset (floats) of chunk column cc's BB values in the staged x.
template <int BB>
NM_HD int gemv_xs_offset(int cc) {
  return (cc >> 5) * GemvCfg<BB>::kSegStride + (cc & 31) * BB;
}

template <int BB>
__device__ __forceinline__ void gemv_load_x(const float* __restrict__ src, float (&v)[BB]) {
  if constexpr (BB == 1) {
    v[0] = src[0];
  } else if constexpr (BB == 2) {
    const float2 t = *reinterpret_cast<const float2*>(src);
    v[0] = t.x;
    v[1] = t.y;
  } else {
#pragma unroll
    for (int q = 0; q < BB / 4; ++q) {
      const float4 t = *reinterpret_cast<const float4*>(src + 4 * q);
      v[4 * q] = t.x;
      v[4 * q + 1] = t.y;
      v[4 * q + 2] = t.z;
      v[4 * q + 3] = t.w;
    }
  }
}

template <int BB>
__device__ __forceinline__ void gemv_store_x(float* __restrict__ dst, const float (&v)[BB]) {
  if constexpr (BB == 1) {
    dst[0] = v[0];
  } else if constexpr (BB == 2) {
    *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
  } else {
#pragma unroll
    for (int q = 0; q < BB / 4; ++q)
      *reinterpret_cast<float4*>(dst + 4 * q) =
          make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
  }
}

// The kept columns of one lane's 32-column segment for compile-time N:M: calls
// f(value_slot, column) for each of the 32 N / M value slots, in order. A group with fewer
// than N set bits (invalid meta) reports column -1 for its missing slots.
template <int N, int M, class F>
NM_HD void gemv_for_each_kept(uint32_t mask, F&& f) {
  static_assert(M <= 16 && 32 % M == 0, "segment of 32 columns holds whole groups");
  constexpr uint32_t kGroupMask = (1u << M) - 1;
  NM_UNROLL
  for (int q = 0; q < 32 / M; ++q) {
    uint32_t gm = (mask >> (q * M)) & kGroupMask;
    NM_UNROLL
    for (int t = 0; t < N; ++t) {
      int pos = -1;
      if (gm != 0) {
#ifdef __CUDA_ARCH__
        pos = __ffs(static_cast<int>(gm)) - 1;
#else
        pos = __builtin_ctz(gm);
#endif
        gm &= gm - 1;
      }
      f(q * N + t, pos >= 0 ? q * M + pos : -1);
    }
  }
}

// BB: batch rows handled (>= p.batch; the extra rows see x = 0 and are not stored).
// N, M > 0: compile-time n:m, fast path (preconditions checked by the dispatcher:
// k % 32 == 0, values rows 16-byte aligned, meta rows 4-byte aligned). N == 0: generic.
template <typename T, int BB, int N, int M>
__global__ void __launch_bounds__(kGemvThreads) nm_gemv_kernel(const NMGemmParams p) {
  using Cfg = GemvCfg<BB>;
  constexpr int RW = Cfg::kRowsPerWarp;
  constexpr bool kFast = N > 0;
  constexpr int kVals = kFast ? 32 * N / M : 1;                        // per lane segment
  constexpr int kWords = kFast ? kVals * int(sizeof(T)) / 16 : 1;      // 16-byte loads
  static_assert(!kFast || (kVals * int(sizeof(T))) % 16 == 0, "segment values: whole 16 B");
  extern __shared__ __align__(16) unsigned char nm_smem[];
  float* __restrict__ xs = reinterpret_cast<float*>(nm_smem);

  const T* __restrict__ x = static_cast<const T*>(p.in);
  const T* __restrict__ vals = static_cast<const T*>(p.values);
  const uint8_t* __restrict__ meta = p.meta;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = (int64_t(blockIdx.x) * kGemvWarps + warp) * RW;
  const int64_t K = p.k, R = p.rows;
  const int batch = static_cast<int>(p.batch);
  const int m = kFast ? M : p.m, n = kFast ? N : p.n;
  const int gpl = 32 / m > 0 ? 32 / m : 1;                 // generic: groups per lane per chunk
  const int chunk = kFast ? kGemvChunk : 32 * gpl * m;     // <= 1024 columns

  float acc[RW][BB];
#pragma unroll
  for (int i = 0; i < RW; ++i)
#pragma unroll
    for (int b = 0; b < BB; ++b) acc[i][b] = 0.f;

  for (int64_t c0 = 0; c0 < K; c0 += chunk) {
    // (1) Fast path: this chunk's W for the warp's rows, straight into registers.
    uint4 raw[RW][kWords];
    uint32_t mask[RW];
    bool ok[RW];
    const int64_t seg = c0 + int64_t(lane) * 32;
    if constexpr (kFast) {
#pragma unroll
      for (int i = 0; i < RW; ++i) {
        const int64_t row = row0 + i;
        ok[i] = row < R && seg < K;
        mask[i] = 0;
#pragma unroll
        for (int w = 0; w < kWords; ++w) raw[i][w] = make_uint4(0, 0, 0, 0);
        if (ok[i]) {
          mask[i] = __ldg(reinterpret_cast<const uint32_t*>(meta + row * p.meta_stride + (seg >> 3)));
          const uint4* src =
              reinterpret_cast<const uint4*>(vals + row * p.kept + (seg / M) * N);
#pragma unroll
          for (int w = 0; w < kWords; ++w) raw[i][w] = __ldg(src + w);
        }
      }
    }
    // (2) Stage x [batch, c0 : c0 + chunk) as fp32, column-major.
    for (int cc = tid; cc < chunk; cc += kGemvThreads) {
      const int64_t col = c0 + cc;
      float v[BB];
#pragma unroll
      for (int b = 0; b < BB; ++b)
        v[b] = (b < batch && col < K) ? to_f32(x[int64_t(b) * K + col]) : 0.f;
      gemv_store_x<BB>(xs + gemv_xs_offset<BB>(cc), v);
    }
    __syncthreads();
    // (3) Multiply-accumulate.
    if constexpr (kFast) {
      const float* __restrict__ xl = xs + lane * Cfg::kSegStride;
#pragma unroll
      for (int i = 0; i < RW; ++i) {
        if (!ok[i]) continue;
        float wv[kVals];
#pragma unroll
        for (int w = 0; w < kWords; ++w) {
          constexpr int kPer = Unpack<T>::kPerWord;
          Unpack<T>::run(raw[i][w].x, wv + (4 * w + 0) * kPer);
          Unpack<T>::run(raw[i][w].y, wv + (4 * w + 1) * kPer);
          Unpack<T>::run(raw[i][w].z, wv + (4 * w + 2) * kPer);
          Unpack<T>::run(raw[i][w].w, wv + (4 * w + 3) * kPer);
        }
        gemv_for_each_kept<N, M>(mask[i], [&](int slot, int col) {
          // A missing slot (col -1, invalid meta) contributes nothing; read any column.
          const float w = col >= 0 ? wv[slot] : 0.f;
          float xv[BB];
          gemv_load_x<BB>(xl + (col & 31) * BB, xv);
#pragma unroll
          for (int b = 0; b < BB; ++b) acc[i][b] = fmaf(w, xv[b], acc[i][b]);
        });
      }
    } else {
      for (int j = 0; j < gpl; ++j) {
        const int cc0 = (lane + 32 * j) * m;
        const int64_t col0 = c0 + cc0;
        if (col0 >= K) break;
#pragma unroll
        for (int i = 0; i < RW; ++i) {
          const int64_t row = row0 + i;
          if (row >= R) continue;
          uint32_t gm = load_group_mask(meta + row * p.meta_stride, col0, m);
          const T* vb = vals + row * p.kept + (col0 / m) * n;
          for (int t = 0; t < n && gm != 0; ++t) {
            const int pos = __ffs(static_cast<int>(gm)) - 1;
            gm &= gm - 1;
            const float w = to_f32(vb[t]);
            float xv[BB];
            gemv_load_x<BB>(xs + gemv_xs_offset<BB>(cc0 + pos), xv);
#pragma unroll
            for (int b = 0; b < BB; ++b) acc[i][b] = fmaf(w, xv[b], acc[i][b]);
          }
        }
      }
    }
    __syncthreads();
  }

  T* __restrict__ out = static_cast<T*>(p.out);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int i = 0; i < RW; ++i) {
    const int64_t row = row0 + i;
    const float bv = (bias != nullptr && row < R) ? to_f32(bias[row]) : 0.f;
#pragma unroll
    for (int b = 0; b < BB; ++b) {
      float s = acc[i][b];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == b && b < batch && row < R) out[int64_t(b) * R + row] = from_f32<T>(s + bv);
    }
  }
}

template <typename T, int BB, int N, int M>
cudaError_t launch_gemv_one(const NMGemmParams& p, cudaStream_t stream) {
  using Cfg = GemvCfg<BB>;
  const auto kernel = nm_gemv_kernel<T, BB, N, M>;
  if (Cfg::kSmemBytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (e != cudaSuccess) return e;
  }
  const int64_t blocks = (p.rows + Cfg::kRowsPerBlock - 1) / Cfg::kRowsPerBlock;
  if (blocks <= 0 || blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  NM_LAUNCH(kernel, static_cast<unsigned>(blocks), kGemvThreads, Cfg::kSmemBytes, stream)(p);
  return cudaGetLastError();
}

template <typename T, int BB>
cudaError_t launch_gemv_bb(const NMGemmParams& p, bool fast, cudaStream_t stream) {
  if (fast) {
    if (p.n == 2 && p.m == 4) return launch_gemv_one<T, BB, 2, 4>(p, stream);
    if (p.n == 1 && p.m == 4) return launch_gemv_one<T, BB, 1, 4>(p, stream);
    if (p.n == 2 && p.m == 8) return launch_gemv_one<T, BB, 2, 8>(p, stream);
    if (p.n == 4 && p.m == 8) return launch_gemv_one<T, BB, 4, 8>(p, stream);
  }
  return launch_gemv_one<T, BB, 0, 0>(p, stream);
}

template <typename T>
cudaError_t launch_gemv(const NMGemmParams& p, bool fast, cudaStream_t stream) {
  if (p.batch <= 1) return launch_gemv_bb<T, 1>(p, fast, stream);
  if (p.batch <= 2) return launch_gemv_bb<T, 2>(p, fast, stream);
  if (p.batch <= 4) return launch_gemv_bb<T, 4>(p, fast, stream);
  if (p.batch <= 8) return launch_gemv_bb<T, 8>(p, fast, stream);
  if (p.batch <= kGemvMaxBatch) return launch_gemv_bb<T, 16>(p, fast, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda_nm
}  // namespace spikeops
