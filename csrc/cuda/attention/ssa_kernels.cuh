// Spiking self-attention (SSA) on CUDA, torch-free: out = scale * q @ (k^T @ v) for
// binary q, k [G, N, D], v [G, N, Dv] (csrc/common/attention_params.h), optionally fused
// with the attention LIF over T (ssa_lif_fwd).
//
// Exactness: 0/1 entries are exact in fp16, so the tensor cores (WMMA m16n16k16, fp16
// operands, fp32 accumulation) compute KV = k^T v as exact integer counts <= N. KV is
// then split as KV = 2048 * hi + lo (hi, lo < 2048: exact in fp16) for the second
// product out = q @ KV (hi only when N >= 2048), whose fp32 sums are exact integers
// (< 2^24 for D * N < 2^24); the output is fl(count * scale): bit for bit the CPU kernel's
// result, for both orders.
//
// Non-binary input (checked per head while its tiles are loaded, no host sync): the head
// is computed by a plain fp32 path instead (KV and the row sums in fp32 FMAs from the
// original values), i.e. the float product up to fp32 rounding. The CPU raises an error
// for such input; on CUDA this documented float fallback avoids a device sync per call.
//
// Grid: x = heads of one time step (G / T), y = blocks of 64 output columns. A block owns
// its output columns of one head for all T steps, so the LIF membrane of the fused op
// stays on chip (shared memory, or a global fp32 scratch when N is large).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

#include "common/attention_params.h"

namespace spikeops {
namespace cuda_ssa {

constexpr int kThreads = 128;       // 4 warps
constexpr int kCols = 64;           // output columns per block
constexpr int kTokChunk = 32;       // tokens per k/v tile (phase 1)
constexpr int kRowTile = 64;        // q rows per tile (phase 2): 16 per warp
constexpr int kMaxD = 128;          // q/k features on the tensor-core path
constexpr float kSplit = 2048.f;    // KV = kSplit * hi + lo

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ bool not_binary(float x) { return !(x == 0.f || x == 1.f); }

// One attention-LIF step on attention value y (already rounded to the dtype): updates the
// membrane v and returns the spike, each fp32 op rounded as the reference's.
__device__ __forceinline__ float lif_step(float& v, float y, const SSAParams& p) {
  const float h = p.v_reset != 0.f
                      ? __fadd_rn(v, __fdiv_rn(__fsub_rn(y, __fsub_rn(v, p.v_reset)), p.tau))
                      : __fadd_rn(v, __fdiv_rn(__fsub_rn(y, v), p.tau));
  const float s = __fsub_rn(h, p.v_threshold) >= 0.f ? 1.f : 0.f;
  v = __fadd_rn(__fmul_rn(__fsub_rn(1.f, s), h), __fmul_rn(s, p.v_reset));
  return s;
}

// Shared-memory layout (bytes), every section 128-byte aligned.
struct Layout {
  int dp;                 // D rounded up to 16
  size_t k_tile, v_tile, kv_f32, kv_hi, kv_lo, q_tile, stage, membrane, total;
  bool membrane_in_smem;
  __host__ __device__ static size_t up(size_t x) { return (x + 127) / 128 * 128; }
  __host__ __device__ Layout(int64_t D, int64_t N, bool lif, size_t smem_budget) {
    dp = int((D + 15) / 16 * 16);
    size_t off = 0;
    k_tile = off; off += up(size_t(kTokChunk) * dp * 2);
    v_tile = off; off += up(size_t(kTokChunk) * kCols * 2);
    kv_f32 = off; off += up(size_t(dp) * kCols * 4);
    kv_hi = off; off += up(size_t(dp) * kCols * 2);
    kv_lo = off; off += up(size_t(dp) * kCols * 2);
    q_tile = off; off += up(size_t(kRowTile) * dp * 2);
    stage = off; off += up(size_t(kThreads / 32) * 16 * kCols * 4);
    membrane = off;
    const size_t mem_bytes = lif ? up(size_t(N) * kCols * 4) : 0;
    membrane_in_smem = lif && off + mem_bytes <= smem_budget;
    total = off + (membrane_in_smem ? mem_bytes : 0);
  }
};

template <typename T>
__device__ __forceinline__ const T* at(const void* base, int64_t off) {
  return static_cast<const T*>(base) + off;
}
template <typename T>
__device__ __forceinline__ T* at_mut(void* base, int64_t off) {
  return static_cast<T*>(base) + off;
}

// One block: output columns [c0, c0 + 64) of head `bh` for every time step.
// `scratch` (fp32 [G / T, N, Dv]) holds the membrane when it does not fit on chip.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    ssa_kernel(const __grid_constant__ SSAParams p, float* scratch, size_t smem_budget) {
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char smem[];
  const Layout L(p.D, p.N, p.lif, smem_budget);
  __half* k_tile = reinterpret_cast<__half*>(smem + L.k_tile);
  __half* v_tile = reinterpret_cast<__half*>(smem + L.v_tile);
  float* kv_f32 = reinterpret_cast<float*>(smem + L.kv_f32);
  __half* kv_hi = reinterpret_cast<__half*>(smem + L.kv_hi);
  __half* kv_lo = reinterpret_cast<__half*>(smem + L.kv_lo);
  __half* q_tile = reinterpret_cast<__half*>(smem + L.q_tile);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* stage = reinterpret_cast<float*>(smem + L.stage) + warp * 16 * kCols;

  const int64_t N = p.N, D = p.D, Dv = p.Dv;
  const int dp = L.dp;
  const int64_t heads = p.G / p.T;
  const int64_t bh = blockIdx.x;
  const int64_t c0 = int64_t(blockIdx.y) * kCols;
  const int cols = int(Dv - c0 < kCols ? Dv - c0 : kCols);
  const bool split = N >= int64_t(kSplit);
  float* membrane = !p.lif ? nullptr
                    : L.membrane_in_smem ? reinterpret_cast<float*>(smem + L.membrane)
                                         : scratch + bh * N * Dv;
  const int64_t mem_ld = L.membrane_in_smem ? kCols : Dv;   // row stride of membrane
  const int64_t mem_c0 = L.membrane_in_smem ? 0 : c0;
  if (p.lif) {
    for (int64_t i = threadIdx.x; i < N * kCols; i += kThreads) {
      const int64_t n = i / kCols, c = i % kCols;
      if (c < cols) membrane[n * mem_ld + mem_c0 + c] = p.v_reset;
    }
  }

  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t g = t * heads + bh;
    const int64_t qk_off = g * N * D, v_off = g * N * Dv;
    // ---- phase 1: KV[d, c] = sum_n k[n, d] v[n, c0 + c] on the tensor cores ----------
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    int bad = 0;
    for (int64_t n0 = 0; n0 < N; n0 += kTokChunk) {
      __syncthreads();  // the previous tile is consumed
      for (int i = threadIdx.x; i < kTokChunk * dp; i += kThreads) {
        const int r = i / dp, d = i % dp;
        float x = 0.f;
        if (n0 + r < N && d < D) x = to_f32(*at<T>(p.k, qk_off + (n0 + r) * D + d));
        bad |= not_binary(x);
        k_tile[i] = __float2half_rn(x);
      }
      for (int i = threadIdx.x; i < kTokChunk * kCols; i += kThreads) {
        const int r = i / kCols, c = i % kCols;
        float x = 0.f;
        if (n0 + r < N && c < cols) x = to_f32(*at<T>(p.v, v_off + (n0 + r) * Dv + c0 + c));
        bad |= not_binary(x);
        v_tile[i] = __float2half_rn(x);
      }
      // q is checked here too (it is read again from L2 in phase 2), so the path of the
      // whole head is known before any output is written.
      for (int i = threadIdx.x; i < kTokChunk * D; i += kThreads) {
        const int64_t r = i / D;
        if (n0 + r < N) bad |= not_binary(to_f32(*at<T>(p.q, qk_off + (n0 + r) * D + i % D)));
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTokChunk; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::load_matrix_sync(b[j], v_tile + kk * kCols + j * 16, kCols);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int dt = warp + 4 * i;
          if (dt * 16 < dp) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::col_major> a;
            wmma::load_matrix_sync(a, k_tile + kk * dp + dt * 16, dp);
#pragma unroll
            for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
          }
        }
      }
    }
    const bool head_bad = __syncthreads_or(bad) != 0;

    if (!head_bad) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int dt = warp + 4 * i;
        if (dt * 16 < dp) {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            wmma::store_matrix_sync(kv_f32 + dt * 16 * kCols + j * 16, acc[i][j], kCols,
                                    wmma::mem_row_major);
        }
      }
    } else {
      // Float fallback: KV from the original values in fp32.
      for (int i = threadIdx.x; i < dp * kCols; i += kThreads) {
        const int d = i / kCols, c = i % kCols;
        float s = 0.f;
        if (d < D && c < cols)
          for (int64_t n = 0; n < N; ++n)
            s = fmaf(to_f32(*at<T>(p.k, qk_off + n * D + d)),
                     to_f32(*at<T>(p.v, v_off + n * Dv + c0 + c)), s);
        kv_f32[i] = s;
      }
    }
    __syncthreads();
    if (!head_bad) {
      for (int i = threadIdx.x; i < dp * kCols; i += kThreads) {
        const float x = kv_f32[i];
        const float hi = split ? floorf(x / kSplit) : 0.f;
        kv_hi[i] = __float2half_rn(hi);
        kv_lo[i] = __float2half_rn(x - hi * kSplit);
      }
    }
    __syncthreads();

    // ---- phase 2: out rows, 16 per warp, 64 per tile --------------------------------
    for (int64_t r0 = 0; r0 < N; r0 += kRowTile) {
      if (!head_bad) {
        __syncthreads();  // q_tile reuse
        for (int i = threadIdx.x; i < kRowTile * dp; i += kThreads) {
          const int r = i / dp, d = i % dp;
          float x = 0.f;
          if (r0 + r < N && d < D) x = to_f32(*at<T>(p.q, qk_off + (r0 + r) * D + d));
          q_tile[i] = __float2half_rn(x);
        }
        __syncthreads();
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> lo[4], hi[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          wmma::fill_fragment(lo[j], 0.f);
          wmma::fill_fragment(hi[j], 0.f);
        }
        for (int dk = 0; dk < dp; dk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
          wmma::load_matrix_sync(a, q_tile + warp * 16 * dp + dk, dp);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
            wmma::load_matrix_sync(b, kv_lo + dk * kCols + j * 16, kCols);
            wmma::mma_sync(lo[j], a, b, lo[j]);
            if (split) {
              wmma::load_matrix_sync(b, kv_hi + dk * kCols + j * 16, kCols);
              wmma::mma_sync(hi[j], a, b, hi[j]);
            }
          }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (split) {
#pragma unroll
            for (int e = 0; e < lo[j].num_elements; ++e)
              lo[j].x[e] = fmaf(hi[j].x[e], kSplit, lo[j].x[e]);  // exact: integers < 2^24
          }
          wmma::store_matrix_sync(stage + j * 16, lo[j], kCols, wmma::mem_row_major);
        }
      } else {
        // Float fallback: this warp's 16 rows from q's original values and fp32 KV.
        for (int i = lane; i < 16 * kCols; i += 32) {
          const int r = i / kCols, c = i % kCols;
          const int64_t n = r0 + warp * 16 + r;
          float s = 0.f;
          if (n < N && c < cols)
            for (int64_t d = 0; d < D; ++d)
              s = fmaf(to_f32(*at<T>(p.q, qk_off + n * D + d)), kv_f32[d * kCols + c], s);
          stage[i] = s;
        }
      }
      __syncwarp();
      // Scale, round to the dtype (what an unfused pipeline stores), LIF, write.
      for (int i = lane; i < 16 * kCols; i += 32) {
        const int r = i / kCols, c = i % kCols;
        const int64_t n = r0 + warp * 16 + r;
        if (n >= N || c >= cols) continue;
        float y = to_f32(from_f32<T>(__fmul_rn(stage[i], p.scale)));
        if (p.lif) y = lif_step(membrane[n * mem_ld + mem_c0 + c], y, p);
        *at_mut<T>(p.out, v_off + n * Dv + c0 + c) = from_f32<T>(y);
      }
      __syncwarp();
    }
    __syncthreads();  // membrane rows are owned by warps per tile; kv_* reused next step
  }
}

}  // namespace cuda_ssa
}  // namespace spikeops
