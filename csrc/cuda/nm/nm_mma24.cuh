// 2:4 sparse forward on sparse tensor cores (sm_80+, f16 / bf16, fp32 accumulation).
//
// Math: out^T [rows, batch] = W [rows, k] (2:4 sparse) x x^T [k, batch] (+ bias), computed
// with mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}: W is the
// sparse A operand (16 rows of W x 32 columns of k, stored as its 16 x 16 kept values, which
// is exactly a 16-wide slice of our `values`), x^T is the dense B operand (32 x 8: 8 batch
// rows). Our meta (the kept mask, 4 bits per group of 4) becomes mma.sp's metadata on the
// fly: each chunk's mask nibble maps through a 16-entry table to the index pair i0 | i1 << 2
// (meta_from_mask16), converted in shared memory once per stage by the whole block (2 words
// per thread), so no pre-pass and no workspace.
//
// Tiles: a block computes a BM (rows of W) x BN (batch rows) tile of out^T; per stage it
// copies 64 columns of k: BM x 32 values, BM x 8 meta bytes and BN x 64 of x, with cp.async
// into a kStages-deep ring (zero fill past the edges of rows and batch). Warps are laid
// out kWarpsM x kWarpsN; a warp owns (kWTM x kWTN) = kMT x kNT mma tiles. Per 32 columns a
// warp loads its A fragments with ldmatrix.x4 (the fragment of the sparse A of m16n8k32
// is the dense m16n8k16 layout of the 16 x 16 kept values), its B fragments with one
// ldmatrix.x4 per 8 batch rows ([batch][k] in smem is B "col", 4 k-blocks of 8), and its
// metadata as two converted 16-bit words (rows g, g + 8; threads T0 / T1 of each quad
// supply it: sparsity selector 0).
// Shared-memory rows are padded (80 B for A, 144 B for x) so ldmatrix is conflict-free.
// The epilogue adds bias in fp32, rounds once, transposes through shared memory and stores
// rows of out with 16-byte stores (scalar when rows % 8 != 0 or out is unaligned).
// Preconditions (checked by the dispatcher, nm.cu): n = 2, m = 4, k % 64 == 0, values and x
// 16-byte aligned, meta 8-byte aligned, device sm_80+.
#pragma once

#include "cuda/nm/nm_common.cuh"

namespace spikeops {
namespace cuda_nm {

template <int BM_, int BN_, int WM_, int WN_, int STAGES_>
struct Mma24Cfg {
  static constexpr int kBM = BM_, kBN = BN_, kWarpsM = WM_, kWarpsN = WN_, kStages = STAGES_;
  static constexpr int kThreads = WM_ * WN_ * 32;
  static constexpr int kWTM = BM_ / WM_, kWTN = BN_ / WN_;  // warp tile (rows x batch)
  static constexpr int kMT = kWTM / 16, kNT = kWTN / 8;      // mma tiles per warp
  static constexpr int kBK = 64;        // columns of k per stage (32 kept values per row)
  static constexpr int kAStride = 40;   // 16-bit elements per smem row of values (32 + 8)
  static constexpr int kBStride = 72;   // per smem row of x (64 + 8)
  static constexpr int kABytes = BM_ * kAStride * 2;
  static constexpr int kBBytes = BN_ * kBStride * 2;
  static constexpr int kMBytes = BM_ * 8;
  static constexpr int kStageBytes = kABytes + kBBytes + kMBytes;
  static constexpr int kCStride = BM_ + 8;  // epilogue: [batch][rows] in T
  static constexpr int kCBytes = BN_ * kCStride * 2;
  static constexpr int kSmemBytes =
      kStages * kStageBytes > kCBytes ? kStages * kStageBytes : kCBytes;
  static_assert(kWTM % 16 == 0 && kWTN % 8 == 0, "warp tile of whole mma tiles");
  static_assert(kStageBytes % 16 == 0, "stages 16-byte aligned");
  static_assert((BM_ * 4) % kThreads == 0 && (BN_ * 8) % kThreads == 0 && BM_ <= kThreads,
                "copy / convert loops without remainders");
  static_assert(kStages >= 2, "pipeline");
};
using Mma24Large = Mma24Cfg<128, 128, 2, 4, 3>;  // 8 warps, 64 x 32 per warp, 87 KiB smem
using Mma24Small = Mma24Cfg<64, 64, 2, 2, 3>;    // 4 warps, 32 x 32 per warp, 43.5 KiB smem

// Lane -> element maps of the fragments (PTX ISA: ldmatrix; mma.sp m16n8k32 .f16/.bf16).
struct Mma24Frag {
  // ldmatrix.x4 over a 16 x 16 block of kept values: lane supplies the address of row
  // a_row, column a_col; matrices (rows 0-7 | 8-15) x (columns 0-7 | 8-15) land in a0..a3.
  static NM_HD int a_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
  static NM_HD int a_col(int lane) { return (lane >> 4) * 8; }
  // ldmatrix.x4 over x [8 batch rows][32 columns]: matrix j = columns 8j .. 8j + 7 -> b_j.
  static NM_HD int b_row(int lane) { return lane & 7; }
  static NM_HD int b_col(int lane) { return (lane >> 3) * 8; }
  // Accumulator element i (0..3) of a lane: (row of W, batch row) inside the 16 x 8 tile.
  static NM_HD int c_row(int lane, int i) { return (lane >> 2) + (i >> 1) * 8; }
  static NM_HD int c_col(int lane, int i) { return (lane & 3) * 2 + (i & 1); }
};

// A stage's meta, 8 bytes per row (64 columns), is converted in place, once per stage by
// the whole block, into 4 16-bit words per row: word j = mma.sp metadata of columns
// [16 j, 16 j + 16) (meta_from_mask16 of the two bytes 2j, 2j + 1: the same size).
NM_HD void mma24_convert_meta_word(uint16_t* ms, int i) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(ms + i);
  ms[i] = static_cast<uint16_t>(meta_from_mask16(uint32_t(b[0]) | (uint32_t(b[1]) << 8)));
}

// The metadata register of `lane` for the 16 rows [row_base, row_base + 16) of a stage
// and its 32-column step ks (0 or 1), from the converted words. With sparsity selector 0,
// lane 4g (T0) supplies rows g and g + 8, chunks 0-3 (columns 0-15 of the step) in bits
// 0-15 and 16-31; lane 4g + 1 (T1) chunks 4-7 (columns 16-31). Lanes 4g + 2 and 4g + 3
// load the same words as T0 / T1 (the hardware ignores them).
NM_HD uint32_t mma24_meta_reg(const uint16_t* mc, int row_base, int ks, int lane) {
  const int r = row_base + (lane >> 2);
  const int w = ks * 2 + (lane & 1);
  return uint32_t(mc[r * 4 + w]) | (uint32_t(mc[(r + 8) * 4 + w]) << 16);
}

// Inline-PTX primitives (warp-collective: ldsm_x4 and MmaSp). A host emulation of the
// kernel (SPIKEOPS_NM_EMULATE, tests only) supplies its own, following the PTX ISA.
template <typename T> struct MmaSp;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 (8) bytes global -> shared; src_bytes = 0 fills zeros and reads nothing.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)),
               "l"(src), "r"(pred ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_u32(dst)),
               "l"(src), "r"(pred ? 8 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

template <> struct MmaSp<__half> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[4], uint32_t e) {
    asm("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]),
          "r"(b[3]), "r"(e));
  }
};
template <> struct MmaSp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[4], uint32_t e) {
    asm("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]),
          "r"(b[3]), "r"(e));
  }
};
#endif  // __CUDA_ARCH__ >= 800

// Grid: x = batch tiles (BN), y = row tiles (BM).
template <typename T, class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads) nm24_mma_kernel(const NMGemmParams p) {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(SPIKEOPS_NM_EMULATE)
  constexpr int kBM = Cfg::kBM, kBN = Cfg::kBN, kThreads = Cfg::kThreads;
  constexpr int kStages = Cfg::kStages, kMT = Cfg::kMT, kNT = Cfg::kNT;
  constexpr int kAStride = Cfg::kAStride, kBStride = Cfg::kBStride;
  extern __shared__ __align__(16) unsigned char nm_smem[];

  const T* __restrict__ x = static_cast<const T*>(p.in);
  const T* __restrict__ vals = static_cast<const T*>(p.values);
  const uint8_t* __restrict__ meta = p.meta;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % Cfg::kWarpsM, wn = warp / Cfg::kWarpsM;
  const int64_t b0 = int64_t(blockIdx.x) * kBN, r0 = int64_t(blockIdx.y) * kBM;
  const int64_t K = p.k, R = p.rows, B = p.batch;
  const int ktiles = static_cast<int>(K / Cfg::kBK);

  auto load_stage = [&](int stage, int kt) {
    unsigned char* base = nm_smem + stage * Cfg::kStageBytes;
    T* as = reinterpret_cast<T*>(base);
    T* bs = reinterpret_cast<T*>(base + Cfg::kABytes);
    uint8_t* ms = base + Cfg::kABytes + Cfg::kBBytes;
#pragma unroll
    for (int j = 0; j < kBM * 4 / kThreads; ++j) {  // values: 4 x 16 B per row
      const int i = tid + j * kThreads, row = i >> 2, part = i & 3;
      const int64_t gr = r0 + row;
      const bool ok = gr < R;
      const T* src = ok ? vals + gr * p.kept + int64_t(kt) * 32 + part * 8 : vals;
      cp_async16(as + row * kAStride + part * 8, src, ok);
    }
#pragma unroll
    for (int j = 0; j < kBN * 8 / kThreads; ++j) {  // x: 8 x 16 B per batch row
      const int i = tid + j * kThreads, row = i >> 3, part = i & 7;
      const int64_t gb = b0 + row;
      const bool ok = gb < B;
      const T* src = ok ? x + gb * K + int64_t(kt) * Cfg::kBK + part * 8 : x;
      cp_async16(bs + row * kBStride + part * 8, src, ok);
    }
    if (tid < kBM) {  // meta: 8 B per row
      const int64_t gr = r0 + tid;
      const bool ok = gr < R;
      const uint8_t* src = ok ? meta + gr * p.meta_stride + int64_t(kt) * 8 : meta;
      cp_async8(ms + tid * 8, src, ok);
    }
  };

  float acc[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();  // stage kt has landed (this thread's copies) ...
    __syncthreads();               // ... everyone's; and stage kt - 1 is free to refill
    {
      const int next = kt + kStages - 1;
      if (next < ktiles) load_stage(next % kStages, next);
      cp_async_commit();
    }
    unsigned char* base = nm_smem + (kt % kStages) * Cfg::kStageBytes;
    const T* as = reinterpret_cast<const T*>(base);
    const T* bs = reinterpret_cast<const T*>(base + Cfg::kABytes);
    uint16_t* mc = reinterpret_cast<uint16_t*>(base + Cfg::kABytes + Cfg::kBBytes);
    // Our mask -> mma.sp metadata, once per stage (in place; each word is one thread's).
    // Safe: every warp is past the barrier above, so done with the previous stage's words,
    // and this stage is refilled only after the next iteration's barrier.
#pragma unroll
    for (int j = 0; j < kBM * 4 / kThreads; ++j) mma24_convert_meta_word(mc, tid + j * kThreads);
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t a[kMT][4], e[kMT], b[kNT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int rb = wm * Cfg::kWTM + mt * 16;
        ldsm_x4(a[mt], as + (rb + Mma24Frag::a_row(lane)) * kAStride + ks * 16 +
                           Mma24Frag::a_col(lane));
        e[mt] = mma24_meta_reg(mc, rb, ks, lane);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int nb = wn * Cfg::kWTN + nt * 8;
        ldsm_x4(b[nt], bs + (nb + Mma24Frag::b_row(lane)) * kBStride + ks * 32 +
                           Mma24Frag::b_col(lane));
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) MmaSp<T>::run(acc[mt][nt], a[mt], b[nt], e[mt]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // all warps are done with the ring: reuse it for the output tile

  T* cs = reinterpret_cast<T*>(nm_smem);  // cs[batch][row], kCStride per batch row
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rl = wm * Cfg::kWTM + mt * 16 + Mma24Frag::c_row(lane, 2 * h);
      const int64_t gr = r0 + rl;
      const float bv = (bias != nullptr && gr < R) ? to_f32(bias[gr]) : 0.f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int bl = wn * Cfg::kWTN + nt * 8 + Mma24Frag::c_col(lane, 2 * h + e2);
          cs[bl * Cfg::kCStride + rl] = from_f32<T>(acc[mt][nt][2 * h + e2] + bv);
        }
    }
  }
  __syncthreads();
  T* __restrict__ out = static_cast<T*>(p.out);
  if (R % 8 == 0 && (reinterpret_cast<uintptr_t>(out) & 15) == 0) {
    constexpr int kPerRow = kBM / 8;
    for (int i = tid; i < kBN * kPerRow; i += kThreads) {
      const int bl = i / kPerRow, rl = (i % kPerRow) * 8;
      const int64_t gb = b0 + bl, gr = r0 + rl;
      if (gb < B && gr < R)
        *reinterpret_cast<uint4*>(out + gb * R + gr) =
            *reinterpret_cast<const uint4*>(cs + bl * Cfg::kCStride + rl);
    }
  } else {
    for (int i = tid; i < kBN * kBM; i += kThreads) {
      const int bl = i / kBM, rl = i % kBM;
      const int64_t gb = b0 + bl, gr = r0 + rl;
      if (gb < B && gr < R) out[gb * R + gr] = cs[bl * Cfg::kCStride + rl];
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built for an architecture without mma.sp: the dispatcher never gets here
#endif
}

template <typename T, class Cfg>
cudaError_t launch_mma24_cfg(const NMGemmParams& p, cudaStream_t stream) {
  const auto kernel = nm24_mma_kernel<T, Cfg>;
  if (Cfg::kSmemBytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (e != cudaSuccess) return e;
  }
  const int64_t bt = (p.batch + Cfg::kBN - 1) / Cfg::kBN;
  const int64_t rt = (p.rows + Cfg::kBM - 1) / Cfg::kBM;
  if (bt <= 0 || rt <= 0 || bt > 0x7fffffff || rt > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(bt), static_cast<unsigned>(rt));
  NM_LAUNCH(kernel, grid, Cfg::kThreads, Cfg::kSmemBytes, stream)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_mma24(const NMGemmParams& p, bool large, cudaStream_t stream) {
  return large ? launch_mma24_cfg<T, Mma24Large>(p, stream)
               : launch_mma24_cfg<T, Mma24Small>(p, stream);
}

}  // namespace cuda_nm
}  // namespace spikeops
