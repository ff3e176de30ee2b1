// Sliding-window causal softmax attention: torch-free CUDA kernels (SIMT, fp32 arithmetic).
//
// Math (per batch b, head h; ref: spikeops.ref.attention.sliding_window_attn_ref):
//   s[t, j] = scale q[t] . k[j] for t - window < j <= t,  lse[t] = log sum_j exp s[t, j]
//   o[t] = sum_j exp(s[t, j] - lse[t]) v[j]
// Backward: delta[t] = dO[t] . o[t] - glse[t],  dS = P (dO v^T - delta),
//   dq = scale dS k,  dk = scale dS^T q,  dv = P^T dO.
//
// Tiles: 32 query rows x 32 keys. A block has 4 warps; each warp owns 8 rows of the tile
// (queries in the forward / dq kernels, keys in the dk/dv kernel) and lane l the l-th
// column (key, resp. query) of the 32 x 32 score tile, so each lane computes 8 dot products
// from shared memory (row stride odd: no bank conflicts) and the softmax reductions over a
// row are warp shuffles. The output rows a warp owns stay in registers, lane l holding
// columns l, l + 32, ... (NC = ceil(max(D, Dv) / 32) <= 8, a template parameter); a P / dS
// value reaches the other lanes by __shfl_sync. Only the key (query) tiles that intersect
// a tile's window are visited; the mask is applied per element from the index arithmetic.
//
// Kernels and what they write (every element by exactly one thread, sums in a fixed order:
// deterministic, no atomics):
//   forward: one block per (b, h, query tile): o rows and lse (online softmax: running max
//            and sum per row, the accumulator rescaled when the max grows).
//   dq:      one block per (b, h, query tile): delta of its rows (to global, for dk/dv) and
//            dq rows; recomputes P from lse.
//   dk/dv:   one block per (b, h, key tile), launched after dq on the same stream: dk, dv
//            rows, iterating over the query tiles whose windows hold its keys.
// Memory traffic: q, k, v tiles are read once per visiting block (~ window / 32 + 1 times
// per row), outputs written once; shared memory holds fp32 tiles (at most ~130 KiB at
// D = Dv = 256, so the launchers raise the dynamic shared-memory limit).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/swa_params.h"

namespace spikeops {
namespace cuda_swa {

constexpr int kTile = 32;       // queries / keys per tile (one per lane)
constexpr int kWarps = 4;
constexpr int kRows = kTile / kWarps;  // tile rows per warp
constexpr int kThreads = 32 * kWarps;

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Per-(b, h) addressing: token t's row of q / k starts at qk + t * qk_stride (likewise v).
struct Head {
  int64_t bh, qk, v, qk_stride, v_stride;
  __device__ Head(const SWAParams& p, int64_t bh_) : bh(bh_) {
    const int64_t b = bh / p.H, h = bh % p.H;
    qk = (b * p.T * p.H + h) * p.D;
    v = (b * p.T * p.H + h) * p.Dv;
    qk_stride = p.H * p.D;
    v_stride = p.H * p.Dv;
  }
};

// dst[i * ld + c] = x[t0 + i][c] for i < kTile, c < n (rows past T are zero).
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, int ld, const T* x, int64_t base,
                                          int64_t stride, int64_t t0, int64_t T_, int n) {
  for (int idx = threadIdx.x; idx < kTile * n; idx += kThreads) {
    const int i = idx / n, c = idx - i * n;
    const int64_t t = t0 + i;
    dst[i * ld + c] = t < T_ ? to_f(x[base + t * stride + c]) : 0.f;
  }
}

__device__ __forceinline__ bool in_window(int64_t t, int64_t j, int64_t T_, int64_t window) {
  return t < T_ && j <= t && t - j < window;
}

template <typename T, int NC>
__global__ void __launch_bounds__(kThreads) swa_fwd_kernel(SWAParams p) {
  extern __shared__ float smem[];
  const int64_t tiles = (p.T + kTile - 1) / kTile;
  const int64_t bh = int64_t(blockIdx.x) / tiles, q0 = (int64_t(blockIdx.x) % tiles) * kTile;
  const Head hd(p, bh);
  const int D = int(p.D), Dv = int(p.Dv), ldq = D | 1;
  float* Qs = smem;
  float* Ks = Qs + kTile * ldq;
  float* Vs = Ks + kTile * ldq;  // [kTile][Dv]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);

  load_tile(Qs, ldq, q, hd.qk, hd.qk_stride, q0, p.T, D);
  float m[kRows], l[kRows], acc[kRows][NC];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
  }
  const int64_t kstart = (q0 - p.window + 1 > 0 ? q0 - p.window + 1 : 0) / kTile * kTile;
  const int64_t kend = q0 + kTile < p.T ? q0 + kTile : p.T;
  for (int64_t k0 = kstart; k0 < kend; k0 += kTile) {
    __syncthreads();  // the previous tile's K / V are no longer read
    load_tile(Ks, ldq, k, hd.qk, hd.qk_stride, k0, p.T, D);
    load_tile(Vs, Dv, v, hd.v, hd.v_stride, k0, p.T, Dv);
    __syncthreads();
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = 0.f;
    for (int d = 0; d < D; ++d) {
      const float kd = Ks[lane * ldq + d];
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = fmaf(Qs[(warp * kRows + r) * ldq + d], kd, s[r]);
    }
    const int64_t j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t t = q0 + warp * kRows + r;
      const bool valid = in_window(t, j, p.T, p.window);
      const float x = valid ? s[r] * p.scale : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(x));
      float pr = 0.f, alpha = 1.f;
      if (m_new != -INFINITY) {  // warp-uniform: some key of the row so far is valid
        pr = valid ? expf(x - m_new) : 0.f;
        alpha = expf(m[r] - m_new);  // 0 while m was -inf
      }
      l[r] = l[r] * alpha + warp_sum(pr);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[r][c] *= alpha;
      for (int jj = 0; jj < kTile; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, pr, jj);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const int e = lane + 32 * c;
          if (e < Dv) acc[r][c] = fmaf(pj, Vs[jj * Dv + e], acc[r][c]);
        }
      }
    }
  }
  T* o = static_cast<T*>(p.o);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = q0 + warp * kRows + r;
    if (t >= p.T) continue;
    const float inv = 1.f / l[r];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int e = lane + 32 * c;
      if (e < Dv) o[hd.v + t * hd.v_stride + e] = from_f<T>(acc[r][c] * inv);
    }
    if (lane == 0) p.lse[bh * p.T + t] = m[r] + logf(l[r]);
  }
}

template <typename T, int NC>
__global__ void __launch_bounds__(kThreads) swa_dq_kernel(SWAParams p) {
  extern __shared__ float smem[];
  const int64_t tiles = (p.T + kTile - 1) / kTile;
  const int64_t bh = int64_t(blockIdx.x) / tiles, q0 = (int64_t(blockIdx.x) % tiles) * kTile;
  const Head hd(p, bh);
  const int D = int(p.D), Dv = int(p.Dv), ldq = D | 1, ldv = Dv | 1;
  float* Qs = smem;
  float* dOs = Qs + kTile * ldq;
  float* Ks = dOs + kTile * ldv;
  float* Vs = Ks + kTile * ldq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* o = static_cast<const T*>(p.o);
  const T* go = static_cast<const T*>(p.grad_o);

  load_tile(Qs, ldq, q, hd.qk, hd.qk_stride, q0, p.T, D);
  load_tile(dOs, ldv, go, hd.v, hd.v_stride, q0, p.T, Dv);
  float lse[kRows], delta[kRows], acc[kRows][NC];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = q0 + warp * kRows + r;
    float dsum = 0.f;
    if (t < p.T) {
      for (int e = lane; e < Dv; e += 32)
        dsum = fmaf(to_f(go[hd.v + t * hd.v_stride + e]), to_f(o[hd.v + t * hd.v_stride + e]),
                    dsum);
    }
    dsum = warp_sum(dsum);
    if (t < p.T) {
      if (p.grad_lse != nullptr) dsum -= p.grad_lse[bh * p.T + t];
      if (lane == 0) p.delta[bh * p.T + t] = dsum;
      lse[r] = p.lse[bh * p.T + t];
    } else {
      lse[r] = 0.f;
    }
    delta[r] = dsum;
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
  }
  const int64_t kstart = (q0 - p.window + 1 > 0 ? q0 - p.window + 1 : 0) / kTile * kTile;
  const int64_t kend = q0 + kTile < p.T ? q0 + kTile : p.T;
  for (int64_t k0 = kstart; k0 < kend; k0 += kTile) {
    __syncthreads();
    load_tile(Ks, ldq, k, hd.qk, hd.qk_stride, k0, p.T, D);
    load_tile(Vs, ldv, v, hd.v, hd.v_stride, k0, p.T, Dv);
    __syncthreads();
    float s[kRows], dp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = dp[r] = 0.f;
    for (int d = 0; d < D; ++d) {
      const float kd = Ks[lane * ldq + d];
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = fmaf(Qs[(warp * kRows + r) * ldq + d], kd, s[r]);
    }
    for (int e = 0; e < Dv; ++e) {
      const float ve = Vs[lane * ldv + e];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        dp[r] = fmaf(dOs[(warp * kRows + r) * ldv + e], ve, dp[r]);
    }
    const int64_t j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t t = q0 + warp * kRows + r;
      const float pr = in_window(t, j, p.T, p.window) ? expf(s[r] * p.scale - lse[r]) : 0.f;
      const float ds = pr * (dp[r] - delta[r]);
      for (int jj = 0; jj < kTile; ++jj) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const int d = lane + 32 * c;
          if (d < D) acc[r][c] = fmaf(dsj, Ks[jj * ldq + d], acc[r][c]);
        }
      }
    }
  }
  T* dq = static_cast<T*>(p.dq);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = q0 + warp * kRows + r;
    if (t >= p.T) continue;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + 32 * c;
      if (d < D) dq[hd.qk + t * hd.qk_stride + d] = from_f<T>(acc[r][c] * p.scale);
    }
  }
}

template <typename T, int NC>
__global__ void __launch_bounds__(kThreads) swa_dkdv_kernel(SWAParams p) {
  extern __shared__ float smem[];
  const int64_t tiles = (p.T + kTile - 1) / kTile;
  const int64_t bh = int64_t(blockIdx.x) / tiles, k0 = (int64_t(blockIdx.x) % tiles) * kTile;
  const Head hd(p, bh);
  const int D = int(p.D), Dv = int(p.Dv), ldq = D | 1, ldv = Dv | 1;
  float* Ks = smem;
  float* Vs = Ks + kTile * ldq;
  float* Qs = Vs + kTile * ldv;
  float* dOs = Qs + kTile * ldq;
  float* lse_s = dOs + kTile * ldv;
  float* delta_s = lse_s + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* go = static_cast<const T*>(p.grad_o);

  load_tile(Ks, ldq, k, hd.qk, hd.qk_stride, k0, p.T, D);
  load_tile(Vs, ldv, v, hd.v, hd.v_stride, k0, p.T, Dv);
  float dk[kRows][NC], dv[kRows][NC];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int c = 0; c < NC; ++c) dk[r][c] = dv[r][c] = 0.f;
  // Queries t that see a key of this tile: k0 <= t <= k0 + kTile - 1 + window - 1.
  const int64_t qlast = k0 + kTile - 2 + p.window < p.T - 1 ? k0 + kTile - 2 + p.window
                                                             : p.T - 1;
  for (int64_t q0 = k0; q0 <= qlast; q0 += kTile) {
    __syncthreads();
    load_tile(Qs, ldq, q, hd.qk, hd.qk_stride, q0, p.T, D);
    load_tile(dOs, ldv, go, hd.v, hd.v_stride, q0, p.T, Dv);
    if (threadIdx.x < kTile) {
      const int64_t t = q0 + threadIdx.x;
      lse_s[threadIdx.x] = t < p.T ? p.lse[bh * p.T + t] : 0.f;
      delta_s[threadIdx.x] = t < p.T ? p.delta[bh * p.T + t] : 0.f;
    }
    __syncthreads();
    float s[kRows], dp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = dp[r] = 0.f;
    for (int d = 0; d < D; ++d) {
      const float qd = Qs[lane * ldq + d];
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = fmaf(Ks[(warp * kRows + r) * ldq + d], qd, s[r]);
    }
    for (int e = 0; e < Dv; ++e) {
      const float ge = dOs[lane * ldv + e];
#pragma unroll
      for (int r = 0; r < kRows; ++r) dp[r] = fmaf(Vs[(warp * kRows + r) * ldv + e], ge, dp[r]);
    }
    const int64_t t = q0 + lane;
    const float lse_t = lse_s[lane], delta_t = delta_s[lane];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t j = k0 + warp * kRows + r;
      const float pr = (j < p.T && in_window(t, j, p.T, p.window))
                           ? expf(s[r] * p.scale - lse_t) : 0.f;
      const float ds = pr * (dp[r] - delta_t);
      for (int ii = 0; ii < kTile; ++ii) {
        const float pi = __shfl_sync(0xffffffffu, pr, ii);
        const float dsi = __shfl_sync(0xffffffffu, ds, ii);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const int col = lane + 32 * c;
          if (col < Dv) dv[r][c] = fmaf(pi, dOs[ii * ldv + col], dv[r][c]);
          if (col < D) dk[r][c] = fmaf(dsi, Qs[ii * ldq + col], dk[r][c]);
        }
      }
    }
  }
  T* dkp = static_cast<T*>(p.dk);
  T* dvp = static_cast<T*>(p.dv);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t j = k0 + warp * kRows + r;
    if (j >= p.T) continue;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int col = lane + 32 * c;
      if (col < D) dkp[hd.qk + j * hd.qk_stride + col] = from_f<T>(dk[r][c] * p.scale);
      if (col < Dv) dvp[hd.v + j * hd.v_stride + col] = from_f<T>(dv[r][c]);
    }
  }
}

// ---- launchers ----------------------------------------------------------------------------

inline int nc_for(const SWAParams& p) {
  const int64_t d = p.D > p.Dv ? p.D : p.Dv;
  return d <= 32 ? 1 : d <= 64 ? 2 : d <= 128 ? 4 : 8;
}

template <typename Kernel>
cudaError_t launch(Kernel kernel, const SWAParams& p, size_t smem, cudaStream_t stream) {
  const int64_t blocks = p.B * p.H * ((p.T + kTile - 1) / kTile);
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<unsigned(blocks), kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int NC>
cudaError_t forward_nc(const SWAParams& p, cudaStream_t stream) {
  const size_t ldq = size_t(p.D | 1);
  const size_t smem = sizeof(float) * (2 * kTile * ldq + kTile * size_t(p.Dv));
  return launch(swa_fwd_kernel<T, NC>, p, smem, stream);
}

template <typename T, int NC>
cudaError_t backward_nc(const SWAParams& p, cudaStream_t stream) {
  const size_t ldq = size_t(p.D | 1), ldv = size_t(p.Dv | 1);
  const size_t smem = sizeof(float) * (2 * kTile * (ldq + ldv));
  cudaError_t err = launch(swa_dq_kernel<T, NC>, p, smem, stream);
  if (err != cudaSuccess) return err;
  return launch(swa_dkdv_kernel<T, NC>, p, smem + sizeof(float) * 2 * kTile, stream);
}

template <typename T>
cudaError_t launch_forward(const SWAParams& p, cudaStream_t stream) {
  switch (nc_for(p)) {
    case 1: return forward_nc<T, 1>(p, stream);
    case 2: return forward_nc<T, 2>(p, stream);
    case 4: return forward_nc<T, 4>(p, stream);
    default: return forward_nc<T, 8>(p, stream);
  }
}

template <typename T>
cudaError_t launch_backward(const SWAParams& p, cudaStream_t stream) {
  switch (nc_for(p)) {
    case 1: return backward_nc<T, 1>(p, stream);
    case 2: return backward_nc<T, 2>(p, stream);
    case 4: return backward_nc<T, 4>(p, stream);
    default: return backward_nc<T, 8>(p, stream);
  }
}

}  // namespace cuda_swa
}  // namespace spikeops
