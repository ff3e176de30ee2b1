// The fast SSA kernel (same math and exactness as ssa_kernels.cuh, see there): a block
// loads a whole head's k, v (its 64 output columns) and its group of 128 q rows into
// shared memory at once, with 16-byte loads all in flight before the first use, then
// runs both products on the tensor cores from shared memory. The v1 kernel took a memory
// round trip per 32-token tile with scalar loads and was latency-bound (8x cuBLAS's time).
//
// Grid: x = heads of one time step, y = 64-column blocks of Dv, z = groups of 128 rows
// with the fused LIF (1 without: the block walks the groups, k and v read once). Each of
// the 8 warps owns 16 rows of a group, so the LIF keeps its membrane in the warp's
// accumulator fragments across the T steps (elementwise on fragments is layout-
// independent: every fragment of one shape shares the layout).
//
// Taken when D <= 128, D and Dv are multiples of the 16-byte vector width, the pointers
// are 16-byte aligned and the head fits in shared memory (ssa.cu checks); else the v1
// kernel runs.
#pragma once

#include "cuda/attention/ssa_kernels.cuh"

namespace spikeops {
namespace cuda_ssa {

constexpr int kFastWarps = 8;
constexpr int kFastThreads = 32 * kFastWarps;
constexpr int kRowGroup = 16 * kFastWarps;

// Shared-memory row strides are padded by 16 bytes so the rows of a fragment load fall in
// different banks (unpadded, every row of a 64-wide half tile starts in bank 0).
template <int DP>
struct FastLayout {
  static constexpr int kLdK = DP + 8, kLdV = kCols + 8, kLdF = kCols + 4;   // elements
  int64_t np;                                  // N rounded up to 16
  // Region A at 0 holds k, v (phase 1), then kv_f32 and the stage (dead k/v reused).
  size_t v_tile, kv_f32, stage, kv_hi, kv_lo, q_tile, total;
  __host__ __device__ static size_t up(size_t x) { return (x + 127) / 128 * 128; }
  __host__ __device__ explicit FastLayout(int64_t N) {
    np = (N + 15) / 16 * 16;
    v_tile = up(size_t(np) * kLdK * 2);
    const size_t kv_tiles = v_tile + up(size_t(np) * kLdV * 2);
    kv_f32 = 0;
    stage = up(size_t(DP) * kLdF * 4);
    const size_t after = stage + up(size_t(kFastWarps) * 16 * kLdF * 4);
    size_t off = kv_tiles > after ? kv_tiles : after;
    kv_hi = off; off += up(size_t(DP) * kLdV * 2);
    kv_lo = off; off += up(size_t(DP) * kLdV * 2);
    q_tile = off; off += up(size_t(kRowGroup) * kLdK * 2);
    total = off;
  }
};

// 16 bytes of T (kVec elements) -> halves at dst; bad |= an entry is not 0 or 1.
template <typename T>
struct VecIO {
  static constexpr int kVec = 16 / int(sizeof(T));
  __device__ static void convert(const uint4& raw, __half* dst, int& bad) {
    const T* x = reinterpret_cast<const T*>(&raw);
    __half h[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float f = to_f32(x[i]);
      bad |= not_binary(f);
      h[i] = __float2half_rn(f);
    }
    if constexpr (kVec == 8)
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(h);
    else
      *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(h);
  }
  __device__ static void store(T* dst, const float* src) {
    T y[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) y[i] = from_f32<T>(src[i]);
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(y);
  }
};

template <typename T, int DP>
// Two blocks per SM (<= 128 registers): one loads while the other computes.
__global__ void __launch_bounds__(kFastThreads, 2)
    ssa_fast_kernel(const __grid_constant__ SSAParams p) {
  using namespace nvcuda;
  using IO = VecIO<T>;
  constexpr int kVec = IO::kVec;
  extern __shared__ __align__(128) unsigned char smem[];
  using Lay = FastLayout<DP>;
  constexpr int kLdK = Lay::kLdK, kLdV = Lay::kLdV, kLdF = Lay::kLdF;
  const Lay L(p.N);
  __half* k_tile = reinterpret_cast<__half*>(smem);                      // [np][kLdK]
  __half* v_tile = reinterpret_cast<__half*>(smem + L.v_tile);           // [np][kLdV]
  float* kv_f32 = reinterpret_cast<float*>(smem + L.kv_f32);             // [DP][kLdF]
  __half* kv_hi = reinterpret_cast<__half*>(smem + L.kv_hi);             // [DP][kLdV]
  __half* kv_lo = reinterpret_cast<__half*>(smem + L.kv_lo);
  __half* q_tile = reinterpret_cast<__half*>(smem + L.q_tile);           // [128][kLdK]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* stage = reinterpret_cast<float*>(smem + L.stage) + warp * 16 * kLdF;

  const int64_t N = p.N, D = p.D, Dv = p.Dv, np = L.np;
  const int64_t heads = p.G / p.T, bh = blockIdx.x;
  const int64_t c0 = int64_t(blockIdx.y) * kCols;
  const int cols = int(Dv - c0 < kCols ? Dv - c0 : kCols);
  // With the LIF a block owns one group of 128 rows (grid.z) so the membrane stays in
  // registers; without it a block walks every group, reading k and v only once.
  const int64_t groups = p.lif ? 1 : (N + kRowGroup - 1) / kRowGroup;
  const int64_t first_row = p.lif ? int64_t(blockIdx.z) * kRowGroup : 0;
  const bool split = N >= int64_t(kSplit);
  constexpr int kRowVecsK = DP / kVec, kRowVecsV = kCols / kVec, kBatch = 8;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> membrane[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) wmma::fill_fragment(membrane[j], p.v_reset);

  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t g = t * heads + bh;
    const T* kg = static_cast<const T*>(p.k) + g * N * D;
    const T* vg = static_cast<const T*>(p.v) + g * N * Dv;
    const T* qg = static_cast<const T*>(p.q) + g * N * D;
    T* og = static_cast<T*>(p.out) + g * N * Dv;
    bool kv_bad = false;
    for (int64_t grp = 0; grp < groups; ++grp) {
      const int64_t r0 = first_row + grp * kRowGroup;
      const int64_t my_row = r0 + warp * 16;      // this warp's 16 rows
      // ---- load: batches of 8 independent 16-byte loads per thread ---------------------
      // One index space over k [np x DP], v [np x 64] (first group only) and the group's
      // q [128 x DP] (in vectors); padding rows / columns load as zeros.
      int bad_kv = 0, bad_q = 0;
      const int64_t nk = grp == 0 ? np * kRowVecsK : 0, nv = grp == 0 ? np * kRowVecsV : 0;
      const int64_t total = nk + nv + kRowGroup * kRowVecsK;
      if (grp > 0) __syncthreads();   // the previous group's q tile and stage are consumed
      for (int64_t base = threadIdx.x; base < total; base += kBatch * kFastThreads) {
        uint4 raw[kBatch];
        __half* dst[kBatch];
        bool is_q[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t i = base + int64_t(b) * kFastThreads;
          const T* src = nullptr;
          dst[b] = nullptr;
          is_q[b] = false;
          if (i < nk) {
            const int64_t r = i / kRowVecsK;
            const int d = int(i % kRowVecsK) * kVec;
            dst[b] = k_tile + r * kLdK + d;
            if (r < N && d < D) src = kg + r * D + d;
          } else if (i < nk + nv) {
            const int64_t r = (i - nk) / kRowVecsV;
            const int c = int((i - nk) % kRowVecsV) * kVec;
            dst[b] = v_tile + r * kLdV + c;
            if (r < N && c < cols) src = vg + r * Dv + c0 + c;
          } else if (i < total) {
            const int64_t r = (i - nk - nv) / kRowVecsK;
            const int d = int((i - nk - nv) % kRowVecsK) * kVec;
            dst[b] = q_tile + r * kLdK + d;
            is_q[b] = true;
            if (r0 + r < N && d < D) src = qg + (r0 + r) * D + d;
          }
          raw[b] = src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b)
          if (dst[b]) IO::convert(raw[b], dst[b], is_q[b] ? bad_q : bad_kv);
      }
      // A non-binary value in k or v (these columns) sends the step's KV to the fp32
      // fallback; one in the group's q rows sends those rows to it.
      const bool q_bad = __syncthreads_or(bad_q) != 0;
      if (grp == 0) kv_bad = __syncthreads_or(bad_kv) != 0;

      if (grp == 0) {
        // ---- KV = k^T v ----------------------------------------------------------------
        if (!kv_bad) {
          constexpr int kTiles = DP / 32;          // (DP / 16) x 4 tiles over 8 warps
          wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTiles];
#pragma unroll
          for (int i = 0; i < kTiles; ++i) wmma::fill_fragment(acc[i], 0.f);
          for (int64_t kk = 0; kk < np; kk += 16) {
#pragma unroll
            for (int i = 0; i < kTiles; ++i) {
              const int idx = warp + kFastWarps * i, dt = idx >> 2, et = idx & 3;
              wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::col_major> a;
              wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
              wmma::load_matrix_sync(a, k_tile + kk * kLdK + dt * 16, kLdK);
              wmma::load_matrix_sync(b, v_tile + kk * kLdV + et * 16, kLdV);
              wmma::mma_sync(acc[i], a, b, acc[i]);
            }
          }
          __syncthreads();   // every warp is done with k / v: kv_f32 reuses their space
#pragma unroll
          for (int i = 0; i < kTiles; ++i) {
            const int idx = warp + kFastWarps * i, dt = idx >> 2, et = idx & 3;
            wmma::store_matrix_sync(kv_f32 + dt * 16 * kLdF + et * 16, acc[i], kLdF,
                                    wmma::mem_row_major);
          }
        } else {
          for (int i = threadIdx.x; i < DP * kCols; i += kFastThreads) {
            const int d = i / kCols, c = i % kCols;
            float s = 0.f;
            if (d < D && c < cols)
              for (int64_t n = 0; n < N; ++n)
                s = fmaf(to_f32(kg[n * D + d]), to_f32(vg[n * Dv + c0 + c]), s);
            kv_f32[d * kLdF + c] = s;
          }
        }
        __syncthreads();
        if (!kv_bad) {
          for (int i = threadIdx.x; i < DP * kCols; i += kFastThreads) {
            const int d = i / kCols, c = i % kCols;
            const float x = kv_f32[d * kLdF + c];
            const float hi = split ? floorf(x / kSplit) : 0.f;
            kv_hi[d * kLdV + c] = __float2half_rn(hi);
            kv_lo[d * kLdV + c] = __float2half_rn(x - hi * kSplit);
          }
        }
        __syncthreads();   // kv_hi / kv_lo ready (kv_f32 stays valid: the stage is beside it)
      }

      // ---- this warp's 16 rows: out = q KV, scale, round, LIF, store -------------------
      if (my_row < N) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> out[4];
        if (!kv_bad && !q_bad) {
          wmma::fragment<wmma::accumulator, 16, 16, 16, float> hi[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            wmma::fill_fragment(out[j], 0.f);
            wmma::fill_fragment(hi[j], 0.f);
          }
#pragma unroll
          for (int dk = 0; dk < DP; dk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, q_tile + warp * 16 * kLdK + dk, kLdK);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
              wmma::load_matrix_sync(b, kv_lo + dk * kLdV + j * 16, kLdV);
              wmma::mma_sync(out[j], a, b, out[j]);
              if (split) {
                wmma::load_matrix_sync(b, kv_hi + dk * kLdV + j * 16, kLdV);
                wmma::mma_sync(hi[j], a, b, hi[j]);
              }
            }
          }
          if (split) {
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int e = 0; e < out[j].num_elements; ++e)
                out[j].x[e] = fmaf(hi[j].x[e], kSplit, out[j].x[e]);   // exact integers
          }
        } else {
          // fp32 fallback rows: q's original values times KV (exact counts when only q is
          // non-binary, fp32 sums of the original values when k or v is).
          for (int i = lane; i < 16 * kCols; i += 32) {
            const int r = i / kCols, c = i % kCols;
            const int64_t n = my_row + r;
            float s = 0.f;
            if (n < N && c < cols)
              for (int64_t d = 0; d < D; ++d)
                s = fmaf(to_f32(qg[n * D + d]), kv_f32[d * kLdF + c], s);
            stage[r * kLdF + c] = s;
          }
          __syncwarp();
#pragma unroll
          for (int j = 0; j < 4; ++j)
            wmma::load_matrix_sync(out[j], stage + j * 16, kLdF, wmma::mem_row_major);
          __syncwarp();
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int e = 0; e < out[j].num_elements; ++e) {
            float y = to_f32(from_f32<T>(__fmul_rn(out[j].x[e], p.scale)));
            if (p.lif) y = lif_step(membrane[j].x[e], y, p);
            out[j].x[e] = y;
          }
          wmma::store_matrix_sync(stage + j * 16, out[j], kLdF, wmma::mem_row_major);
        }
        __syncwarp();
        for (int i = lane; i < 16 * kRowVecsV; i += 32) {
          const int r = i / kRowVecsV, c = (i % kRowVecsV) * kVec;
          const int64_t n = my_row + r;
          if (n < N && c < cols) IO::store(og + n * Dv + c0 + c, stage + r * kLdF + c);
        }
      }
    }
    __syncthreads();   // the next step reloads k / v over kv_f32 and the stage
  }
}

}  // namespace cuda_ssa
}  // namespace spikeops
