// Linear-attention scans on CUDA (torch-free): linear attention, simple GLA (per-head
// log-decay g [rows, Hq] or constant g_gamma [Hq]) and GLA (per-key log-decay
// gk [rows, Hq, K]); math and layouts in csrc/common/scan_params.h:
//
//   S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,   o_t = scale q_t S_t.
//
// The chunked algorithm of the CPU kernel (csrc/cpu/kernels/scan_kernel.cpp), chunks of
// kChunk = 64 steps, split into kernels that are each simple and parallel:
//
//   state_kernel<fwd>  per (sequence, head, 32 x 32 tile of S): walks the chunks in
//                      order with the step recurrence in registers and stores the state
//                      at the start of every chunk in the workspace (ht at the end).
//   state_kernel<rev>  the same in reverse for the gradient of S:
//                      dS_{t-1} = e^{g_t} (dS_t + scale q_t^T do_t); stores, per chunk,
//                      the gradient of its end state from the later steps (dh0 at the end).
//   chunk_out_kernel   per (chunk, head), fully parallel: with b the in-chunk cumulative
//                      log-decay, A_ij = scale sum_c q_ic k_jc e^{b_ic - b_jc} (j <= i),
//                      forward  o  = A V + (scale q ⊙ e^b) S_chunk_start,
//                      backward dv = A^T dO + (k ⊙ e^{b_L - b}) dS_chunk_end.
//   chunk_grad_kernel  per (chunk, head): Gd_ij = scale (do_i . v_j) e^{b_i - b_j},
//                      dq = Gd K + scale (dO S^T) ⊙ e^b, dk = Gd^T Q + (V dS^T) ⊙ e^{b_L - b},
//                      and the chunk-local decay gradient (the CPU kernel's formula):
//                      dg_t = sum_{i >= t} (q ⊙ dq - k ⊙ dk_intra)_i + F + sum_{j < t} P_j,
//                      P_j = k_j ⊙ dk_inter_j, F = e^{b_L} sum_v S ⊙ dS (summed over K
//                      for a per-head decay; per row into the workspace for g_gamma, then
//                      gamma_reduce_kernel sums each sequence's rows in order).
//
// Every exponent is <= 0 (log-decays are <= 0), so nothing overflows, for any decay.
// Deterministic: no atomics, every sum in a fixed order. All arithmetic is fp32 (the
// cumulative decays in double, rounded once), inputs converted on load; o is written in
// the input dtype, the gradients in fp32 per query head (the glue sums GQA groups).
// Tiles of the chunk kernels are kTile = 16 columns of K or V at a time in shared memory
// (any K, V; ~46 KB of static shared memory per block), so there is no head-dim limit.
// Memory traffic: q, k, v, do read a few times (once per tile pass, mostly from L2), the
// chunk-start states [chunks + N, Hq, K, V] fp32 written once and read once per pass.
// This is the correctness-first SIMT version: no tensor cores yet.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/scan_params.h"
#include "cuda/neurons/neuron_kernels.cuh"  // Cvt
#include "cuda/scan/scan_launch.h"

namespace spikeops {
namespace cuda_scan {
namespace {  // one copy per dtype translation unit

using cuda_neuron::Cvt;

constexpr int kC = int(kChunk);
constexpr int kThreads = 256;
constexpr int kTile = 16;         // columns of K or V per pass of the chunk kernels
constexpr int kPad = kTile + 1;   // padded shared rows
constexpr int kST = 32;           // state tile of state_kernel: kST x kST
constexpr int kPairs = kC * kC / kThreads;    // (i, j) entries of a C x C matrix per thread
constexpr int kCells = kC * kTile / kThreads;  // (row, column) cells of a C x kTile tile
static_assert(kC * kC % kThreads == 0 && kC * kTile % kThreads == 0, "tiling");
static_assert(kThreads == 8 * kST, "state_kernel: 8 rows of 32 lanes");

struct Seq {
  int64_t row0, len, slot0, chunk0;
};

__device__ __forceinline__ Seq seq_of(const ScanParams& p, int64_t n) {
  return {p.dev_seq[n], p.dev_seq[p.N + n], p.dev_seq[2 * p.N + n], p.dev_seq[3 * p.N + n]};
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__host__ __device__ __forceinline__ int64_t state_floats(const ScanParams& p) {
  return p.state_slots * p.Hq * p.K * p.V;
}

// [K, V] state of (slot, head) in the workspace (base 0: states, 1: their gradients).
__device__ __forceinline__ float* state_at(const ScanParams& p, int base, int64_t slot,
                                           int64_t h) {
  return p.ws + base * state_floats(p) + (slot * p.Hq + h) * p.K * p.V;
}

// Per-head log-decay of a row.
__device__ __forceinline__ float head_g(const ScanParams& p, int64_t row, int64_t h) {
  return p.gamma ? p.g[h] : p.g[row * p.Hq + h];
}

// dst[j][c] = src[row0 + j, head, col0 + c] as float; zero past L rows or D columns.
template <typename T>
__device__ __forceinline__ void load_tile(float (*dst)[kPad], const void* src, int64_t heads,
                                          int64_t head, int64_t D, int64_t col0, int L,
                                          int64_t r0) {
  const T* s = static_cast<const T*>(src);
  for (int e = threadIdx.x; e < kC * kTile; e += kThreads) {
    const int j = e / kTile, c = e % kTile;
    dst[j][c] = (j < L && col0 + c < D) ? Cvt<T>::load(s[((r0 + j) * heads + head) * D + col0 + c])
                                        : 0.f;
  }
}

// Per-key decays: b[j][c] = g[r0] + ... + g[r0 + j] for keys col0 + c; rows past L keep
// b[L-1] (so b[kC-1] is the decay over the whole chunk). Ends with a barrier.
__device__ __forceinline__ void key_decay_tile(const ScanParams& p, float (*b)[kPad], int64_t h,
                                               int64_t col0, int L, int64_t r0) {
  for (int e = threadIdx.x; e < kC * kTile; e += kThreads) {
    const int j = e / kTile, c = e % kTile;
    b[j][c] = (j < L && col0 + c < p.K) ? p.g[((r0 + j) * p.Hq + h) * p.K + col0 + c] : 0.f;
  }
  __syncthreads();
  if (threadIdx.x < kTile) {
    double acc = 0;
    for (int j = 0; j < kC; ++j) {
      acc += b[j][threadIdx.x];
      b[j][threadIdx.x] = float(acc);
    }
  }
  __syncthreads();
}

// Per-head decays: bh[j] cumulative over the chunk's rows (rows past L keep b[L-1]);
// zeros without decay. Thread 0; the caller synchronises.
template <int KIND>
__device__ __forceinline__ void head_decay(const ScanParams& p, float* bh, int64_t h, int L,
                                           int64_t r0) {
  if (threadIdx.x == 0) {
    double acc = 0;
    for (int j = 0; j < kC; ++j) {
      if (KIND == kDecayHead && j < L) acc += head_g(p, r0 + j, h);
      bh[j] = float(acc);
    }
  }
}

// ---- state recurrence over chunks ------------------------------------------------------

// Grid: N * Hq * tiles(K) * tiles(V) blocks of 256 threads; thread (ty, tx) = (tid / 32,
// tid % 32) owns S[k0 + ty + 8 r][v0 + tx], r < 4.
template <typename T, int KIND, bool REV>
__global__ void __launch_bounds__(kThreads) state_kernel(const __grid_constant__ ScanParams p) {
  const int64_t K = p.K, V = p.V, Hq = p.Hq;
  const int64_t tk = (K + kST - 1) / kST, tv = (V + kST - 1) / kST;
  int64_t b = blockIdx.x;
  const int64_t tile = b % (tk * tv);
  b /= tk * tv;
  const int64_t h = b % Hq, n = b / Hq;
  const int64_t hk = h / (Hq / p.Hkv);
  const int64_t k0 = (tile / tv) * kST, v0 = (tile % tv) * kST;
  const int tid = threadIdx.x, tx = tid % kST, ty = tid / kST;
  const Seq s = seq_of(p, n);
  const int64_t nc = (s.len + kC - 1) / kC;
  __shared__ float xs[kC][kST + 1];  // k (forward) or q (reverse), keys k0..
  __shared__ float ys[kC][kST + 1];  // v (forward) or do (reverse), values v0..
  __shared__ float es[kC][kST + 1];  // e^{g} per row (and key)
  const T* x_src = static_cast<const T*>(REV ? p.q : p.k);
  const T* y_src = static_cast<const T*>(REV ? p.dout : p.v);
  const int64_t x_heads = REV ? Hq : p.Hkv, x_head = REV ? h : hk;
  const int64_t vv = v0 + tx;
  const float* init = REV ? p.dht : p.h0;
  const int64_t own = (n * Hq + h) * K * V;
  float S[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t kk = k0 + ty + 8 * r;
    S[r] = (init != nullptr && kk < K && vv < V) ? init[own + kk * V + vv] : 0.f;
  }
  for (int64_t i = 0; i < nc; ++i) {
    const int64_t c = REV ? nc - 1 - i : i;
    // forward: the state at the chunk's start; reverse: the gradient of its end state.
    float* slot = state_at(p, REV ? 1 : 0, s.slot0 + c, h);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t kk = k0 + ty + 8 * r;
      if (kk < K && vv < V) slot[kk * V + vv] = S[r];
    }
    const int L = int(min64(kC, s.len - c * kC));
    const int64_t r0 = s.row0 + c * kC;
    for (int e = tid; e < kC * kST; e += kThreads) {
      const int j = e / kST, col = e % kST;
      float x = 0.f, y = 0.f, ex = 1.f;
      if (j < L) {
        const int64_t row = r0 + j;
        if (k0 + col < K) x = Cvt<T>::load(x_src[(row * x_heads + x_head) * K + k0 + col]);
        if (v0 + col < V) y = Cvt<T>::load(y_src[(row * (REV ? Hq : p.Hkv) + (REV ? h : hk)) * V + v0 + col]);
        if (KIND == kDecayHead) ex = expf(head_g(p, row, h));
        if (KIND == kDecayKey && k0 + col < K) ex = expf(p.g[(row * Hq + h) * K + k0 + col]);
      }
      xs[j][col] = x;
      ys[j][col] = y;
      es[j][col] = ex;
    }
    __syncthreads();
    if (!REV) {
      for (int j = 0; j < L; ++j) {
        const float y = ys[j][tx];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int kr = ty + 8 * r;
          S[r] = S[r] * es[j][kr] + xs[j][kr] * y;
        }
      }
    } else {
      for (int j = L - 1; j >= 0; --j) {
        const float y = p.scale * ys[j][tx];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int kr = ty + 8 * r;
          S[r] = (S[r] + xs[j][kr] * y) * es[j][kr];
        }
      }
    }
    __syncthreads();
  }
  float* out = REV ? p.dh0 : p.ht;
  if (out != nullptr) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t kk = k0 + ty + 8 * r;
      if (kk < K && vv < V) out[own + kk * V + vv] = S[r];
    }
  }
}

// ---- chunk-local products --------------------------------------------------------------

// The (sequence, chunk, head) of a chunk kernel's block: grid total_chunks * Hq.
struct ChunkPos {
  int64_t h, hk, n, c, r0;
  int L;
  Seq s;
};

__device__ __forceinline__ ChunkPos chunk_pos(const ScanParams& p) {
  ChunkPos cp;
  cp.h = blockIdx.x % p.Hq;
  const int64_t gc = blockIdx.x / p.Hq;
  cp.hk = cp.h / (p.Hq / p.Hkv);
  cp.n = p.dev_seq[4 * p.N + gc];
  cp.s = seq_of(p, cp.n);
  cp.c = gc - cp.s.chunk0;
  cp.L = int(min64(kC, cp.s.len - cp.c * kC));
  cp.r0 = cp.s.row0 + cp.c * kC;
  return cp;
}

// A (scale and decays included, zero above the diagonal and past L) into As. Uses qs, ks,
// bs as scratch. Ends with a barrier.
template <typename T, int KIND>
__device__ __forceinline__ void attention_matrix(const ScanParams& p, const ChunkPos& cp,
                                                 float (*As)[kC + 1], float (*qs)[kPad],
                                                 float (*ks)[kPad], float (*bs)[kPad],
                                                 const float* bh) {
  const int tid = threadIdx.x;
  float acc[kPairs];
#pragma unroll
  for (int r = 0; r < kPairs; ++r) acc[r] = 0.f;
  for (int64_t k0 = 0; k0 < p.K; k0 += kTile) {
    load_tile<T>(qs, p.q, p.Hq, cp.h, p.K, k0, cp.L, cp.r0);
    load_tile<T>(ks, p.k, p.Hkv, cp.hk, p.K, k0, cp.L, cp.r0);
    if (KIND == kDecayKey) key_decay_tile(p, bs, cp.h, k0, cp.L, cp.r0);
    else __syncthreads();
#pragma unroll
    for (int r = 0; r < kPairs; ++r) {
      const int e = tid + kThreads * r, i = e / kC, j = e % kC;
      if (j <= i && i < cp.L) {
        float a = acc[r];
        for (int c = 0; c < kTile; ++c) {
          if (KIND == kDecayKey) a += qs[i][c] * ks[j][c] * expf(bs[i][c] - bs[j][c]);
          else a += qs[i][c] * ks[j][c];
        }
        acc[r] = a;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kPairs; ++r) {
    const int e = tid + kThreads * r, i = e / kC, j = e % kC;
    float a = 0.f;
    if (j <= i && i < cp.L) {
      a = p.scale * acc[r];
      if (KIND == kDecayHead) a *= expf(bh[i] - bh[j]);
    }
    As[i][j] = a;
  }
  __syncthreads();
}

// Forward: o = A V + (scale q ⊙ e^b) S_start. Backward (BWD): dv = A^T dO + (k ⊙
// e^{b_L - b}) dS_end.
template <typename T, int KIND, bool BWD>
__global__ void __launch_bounds__(kThreads) chunk_out_kernel(const __grid_constant__ ScanParams p) {
  const ChunkPos cp = chunk_pos(p);
  const int tid = threadIdx.x, L = cp.L;
  const int64_t K = p.K, V = p.V, Hq = p.Hq;
  __shared__ float As[kC][kC + 1];
  __shared__ float qs[kC][kPad], ks[kC][kPad], bs[kC][kPad], ys[kC][kPad];
  __shared__ float Ws[kTile][kPad];
  __shared__ float bh[kC];
  head_decay<KIND>(p, bh, cp.h, L, cp.r0);
  __syncthreads();
  attention_matrix<T, KIND>(p, cp, As, qs, ks, bs, bh);
  const float* W = state_at(p, BWD ? 1 : 0, cp.s.slot0 + cp.c, cp.h);
  for (int64_t v0 = 0; v0 < V; v0 += kTile) {
    if (BWD) load_tile<T>(ys, p.dout, Hq, cp.h, V, v0, L, cp.r0);
    else load_tile<T>(ys, p.v, p.Hkv, cp.hk, V, v0, L, cp.r0);
    __syncthreads();
    float o[kCells];
#pragma unroll
    for (int r = 0; r < kCells; ++r) {
      const int e = tid + kThreads * r, i = e / kTile, col = e % kTile;
      float a = 0.f;
      if (i < L) {
        if (BWD)
          for (int m = i; m < L; ++m) a += As[m][i] * ys[m][col];
        else
          for (int m = 0; m <= i; ++m) a += As[i][m] * ys[m][col];
      }
      o[r] = a;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kTile) {
      __syncthreads();  // the previous pass is done with qs / Ws
      // forward reads q (qs), backward k (into qs as well)
      if (BWD) load_tile<T>(qs, p.k, p.Hkv, cp.hk, K, k0, L, cp.r0);
      else load_tile<T>(qs, p.q, Hq, cp.h, K, k0, L, cp.r0);
      for (int e = tid; e < kTile * kTile; e += kThreads) {
        const int cc = e / kTile, col = e % kTile;
        Ws[cc][col] = (k0 + cc < K && v0 + col < V) ? W[(k0 + cc) * V + v0 + col] : 0.f;
      }
      if (KIND == kDecayKey) key_decay_tile(p, bs, cp.h, k0, L, cp.r0);
      else __syncthreads();
#pragma unroll
      for (int r = 0; r < kCells; ++r) {
        const int e = tid + kThreads * r, i = e / kTile, col = e % kTile;
        if (i >= L) continue;
        float a = 0.f;
        if (KIND == kDecayKey) {
          for (int cc = 0; cc < kTile; ++cc) {
            const float f = BWD ? expf(bs[kC - 1][cc] - bs[i][cc]) : expf(bs[i][cc]);
            a += qs[i][cc] * f * Ws[cc][col];
          }
        } else {
          for (int cc = 0; cc < kTile; ++cc) a += qs[i][cc] * Ws[cc][col];
          if (KIND == kDecayHead) a *= BWD ? expf(bh[kC - 1] - bh[i]) : expf(bh[i]);
        }
        o[r] += BWD ? a : p.scale * a;
      }
    }
#pragma unroll
    for (int r = 0; r < kCells; ++r) {
      const int e = tid + kThreads * r, i = e / kTile, col = e % kTile;
      if (i < L && v0 + col < V) {
        const int64_t off = ((cp.r0 + i) * Hq + cp.h) * V + v0 + col;
        if (BWD) p.dv[off] = o[r];
        else static_cast<T*>(p.o)[off] = Cvt<T>::store(o[r]);
      }
    }
    __syncthreads();  // ys is reloaded by the next tile
  }
}

// dq, dk and the decay gradients of one chunk (see the top of the file).
template <typename T, int KIND>
__global__ void __launch_bounds__(kThreads) chunk_grad_kernel(const __grid_constant__ ScanParams p) {
  const ChunkPos cp = chunk_pos(p);
  const int tid = threadIdx.x, L = cp.L;
  const int64_t K = p.K, V = p.V, Hq = p.Hq, h = cp.h;
  __shared__ float Gs[kC][kC + 1];
  __shared__ float qs[kC][kPad], ks[kC][kPad], bs[kC][kPad];
  __shared__ float xs[kC][kPad], ys[kC][kPad];  // do / v tiles, then X / P
  __shared__ float Ss[kTile][kPad], Ds[kTile][kPad];
  __shared__ float bh[kC], rowx[kC], rowp[kC], Fk[kTile];
  __shared__ double Fsum;
  head_decay<KIND>(p, bh, h, L, cp.r0);
  if (tid < kC) rowx[tid] = rowp[tid] = 0.f;
  if (tid == 0) Fsum = 0;
  // Gd = scale (dO V^T) (⊙ e^{b_i - b_j} for a per-head decay), lower triangular.
  {
    float acc[kPairs];
#pragma unroll
    for (int r = 0; r < kPairs; ++r) acc[r] = 0.f;
    for (int64_t v0 = 0; v0 < V; v0 += kTile) {
      load_tile<T>(xs, p.dout, Hq, h, V, v0, L, cp.r0);
      load_tile<T>(ys, p.v, p.Hkv, cp.hk, V, v0, L, cp.r0);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kPairs; ++r) {
        const int e = tid + kThreads * r, i = e / kC, j = e % kC;
        if (j <= i && i < L) {
          float a = acc[r];
          for (int c = 0; c < kTile; ++c) a += xs[i][c] * ys[j][c];
          acc[r] = a;
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPairs; ++r) {
      const int e = tid + kThreads * r, i = e / kC, j = e % kC;
      float a = 0.f;
      if (j <= i && i < L) {
        a = p.scale * acc[r];
        if (KIND == kDecayHead) a *= expf(bh[i] - bh[j]);
      }
      Gs[i][j] = a;
    }
    __syncthreads();
  }
  const float* S = state_at(p, 0, cp.s.slot0 + cp.c, h);
  const float* D = state_at(p, 1, cp.s.slot0 + cp.c, h);
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    load_tile<T>(qs, p.q, Hq, h, K, k0, L, cp.r0);
    load_tile<T>(ks, p.k, p.Hkv, cp.hk, K, k0, L, cp.r0);
    if (KIND == kDecayKey) key_decay_tile(p, bs, h, k0, L, cp.r0);
    else __syncthreads();
    // Intra-chunk parts without the diagonal (j < i for dq, m > i for dk): the decay
    // gradient takes q ⊙ dq - k ⊙ dk with the diagonal terms left out (they cancel
    // exactly), so no rounding noise of O(q dq) swamps a tiny gradient (strong decays).
    float dqi[kCells], dki[kCells], aq[kCells], ak[kCells];
#pragma unroll
    for (int r = 0; r < kCells; ++r) {
      const int e = tid + kThreads * r, i = e / kTile, cc = e % kTile;
      float a = 0.f, b = 0.f;
      if (i < L) {
        for (int j = 0; j < i; ++j) {
          const float w = Gs[i][j] * ks[j][cc];
          a += KIND == kDecayKey ? w * expf(bs[i][cc] - bs[j][cc]) : w;
        }
        for (int m = i + 1; m < L; ++m) {
          const float w = Gs[m][i] * qs[m][cc];
          b += KIND == kDecayKey ? w * expf(bs[m][cc] - bs[i][cc]) : w;
        }
      }
      dqi[r] = a;
      dki[r] = b;
      aq[r] = ak[r] = 0.f;
    }
    float fsum = 0.f;
    for (int64_t v0 = 0; v0 < V; v0 += kTile) {
      __syncthreads();
      load_tile<T>(xs, p.dout, Hq, h, V, v0, L, cp.r0);
      load_tile<T>(ys, p.v, p.Hkv, cp.hk, V, v0, L, cp.r0);
      for (int e = tid; e < kTile * kTile; e += kThreads) {
        const int cc = e / kTile, col = e % kTile;
        const bool in = k0 + cc < K && v0 + col < V;
        Ss[cc][col] = in ? S[(k0 + cc) * V + v0 + col] : 0.f;
        Ds[cc][col] = in ? D[(k0 + cc) * V + v0 + col] : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kCells; ++r) {
        const int e = tid + kThreads * r, i = e / kTile, cc = e % kTile;
        float a = aq[r], b = ak[r];
        for (int col = 0; col < kTile; ++col) {
          a += xs[i][col] * Ss[cc][col];
          b += ys[i][col] * Ds[cc][col];
        }
        aq[r] = a;
        ak[r] = b;
      }
      if (KIND != kDecayNone && tid < kTile)
        for (int col = 0; col < kTile; ++col) fsum += Ss[tid][col] * Ds[tid][col];
    }
    __syncthreads();  // xs / ys become X / P
#pragma unroll
    for (int r = 0; r < kCells; ++r) {
      const int e = tid + kThreads * r, i = e / kTile, cc = e % kTile;
      float bi = 0.f, bl = 0.f;
      if (KIND == kDecayKey) {
        bi = bs[i][cc];
        bl = bs[kC - 1][cc];
      } else if (KIND == kDecayHead) {
        bi = bh[i];
        bl = bh[kC - 1];
      }
      const float dq_inter = p.scale * expf(bi) * aq[r];
      const float dk_inter = expf(bl - bi) * ak[r];
      const float diag = Gs[i][i];  // 0 past L
      if (i < L && k0 + cc < K) {
        const int64_t off = ((cp.r0 + i) * Hq + h) * K + k0 + cc;
        p.dq[off] = dqi[r] + diag * ks[i][cc] + dq_inter;
        p.dk[off] = dki[r] + diag * qs[i][cc] + dk_inter;
      }
      xs[i][cc] = qs[i][cc] * (dqi[r] + dq_inter) - ks[i][cc] * dki[r];
      ys[i][cc] = ks[i][cc] * dk_inter;
    }
    if (KIND != kDecayNone && tid < kTile)
      Fk[tid] = expf(KIND == kDecayKey ? bs[kC - 1][tid] : bh[kC - 1]) * fsum;
    __syncthreads();
    if (KIND == kDecayKey) {
      if (tid < kTile && k0 + tid < K) {
        double pre = 0;
        for (int j = 0; j < L; ++j) {
          const float pj = ys[j][tid];
          ys[j][tid] = float(pre);
          pre += pj;
        }
        double acc = Fk[tid];
        for (int t = L - 1; t >= 0; --t) {
          acc += xs[t][tid];
          p.dg[((cp.r0 + t) * Hq + h) * K + k0 + tid] = float(acc + ys[t][tid]);
        }
      }
    } else if (KIND == kDecayHead) {
      if (tid < kC) {
        float x = 0.f, y = 0.f;
        for (int cc = 0; cc < kTile; ++cc) {
          x += xs[tid][cc];
          y += ys[tid][cc];
        }
        rowx[tid] += x;
        rowp[tid] += y;
      } else if (tid == kC) {
        double f = Fsum;
        for (int cc = 0; cc < kTile; ++cc) f += Fk[cc];
        Fsum = f;
      }
    }
    __syncthreads();
  }
  if (KIND == kDecayHead && tid == 0) {
    double pre = 0;
    for (int j = 0; j < L; ++j) {
      const float pj = rowp[j];
      rowp[j] = float(pre);
      pre += pj;
    }
    double acc = Fsum;
    float* out = p.gamma ? p.ws + 2 * state_floats(p) : p.dg;
    for (int t = L - 1; t >= 0; --t) {
      acc += rowx[t];
      out[(cp.r0 + t) * Hq + h] = float(acc + rowp[t]);
    }
  }
}

// g_gamma: dg[n, h] = sum of the per-row gradients of sequence n, in row order.
__global__ void __launch_bounds__(kThreads) gamma_reduce_kernel(const __grid_constant__ ScanParams p) {
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.N * p.Hq) return;
  const int64_t n = idx / p.Hq, h = idx % p.Hq;
  const int64_t row0 = p.dev_seq[n], len = p.dev_seq[p.N + n];
  const float* rows = p.ws + 2 * state_floats(p);
  double acc = 0;
  for (int64_t t = 0; t < len; ++t) acc += rows[(row0 + t) * p.Hq + h];
  p.dg[n * p.Hq + h] = float(acc);
}

// ---- launches ----------------------------------------------------------------------------

inline unsigned state_blocks(const ScanParams& p) {
  return unsigned(p.N * p.Hq * ((p.K + kST - 1) / kST) * ((p.V + kST - 1) / kST));
}

template <typename T, int KIND>
cudaError_t forward_kind(const ScanParams& p, cudaStream_t stream) {
  const unsigned sb = state_blocks(p), cb = unsigned(p.total_chunks * p.Hq);
  if (sb) state_kernel<T, KIND, false><<<sb, kThreads, 0, stream>>>(p);
  if (cb) chunk_out_kernel<T, KIND, false><<<cb, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int KIND>
cudaError_t backward_kind(const ScanParams& p, cudaStream_t stream) {
  const unsigned sb = state_blocks(p), cb = unsigned(p.total_chunks * p.Hq);
  if (sb) state_kernel<T, KIND, false><<<sb, kThreads, 0, stream>>>(p);
  if (sb) state_kernel<T, KIND, true><<<sb, kThreads, 0, stream>>>(p);
  if (cb) chunk_out_kernel<T, KIND, true><<<cb, kThreads, 0, stream>>>(p);
  if (cb) chunk_grad_kernel<T, KIND><<<cb, kThreads, 0, stream>>>(p);
  if (KIND == kDecayHead && p.gamma) {
    const unsigned gb = unsigned((p.N * p.Hq + kThreads - 1) / kThreads);
    if (gb) gamma_reduce_kernel<<<gb, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_forward(const ScanParams& p, cudaStream_t stream) {
  if (p.ws == nullptr || p.ws_floats < scan_workspace_floats(p, false)) return cudaErrorInvalidValue;
  switch (p.decay) {
    case kDecayHead: return forward_kind<T, kDecayHead>(p, stream);
    case kDecayKey: return forward_kind<T, kDecayKey>(p, stream);
    default: return forward_kind<T, kDecayNone>(p, stream);
  }
}

template <typename T>
cudaError_t launch_backward(const ScanParams& p, cudaStream_t stream) {
  if (p.ws == nullptr || p.ws_floats < scan_workspace_floats(p, true)) return cudaErrorInvalidValue;
  switch (p.decay) {
    case kDecayHead: return backward_kind<T, kDecayHead>(p, stream);
    case kDecayKey: return backward_kind<T, kDecayKey>(p, stream);
    default: return backward_kind<T, kDecayNone>(p, stream);
  }
}

}  // namespace
}  // namespace cuda_scan
}  // namespace spikeops
