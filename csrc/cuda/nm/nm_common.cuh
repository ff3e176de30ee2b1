// Shared pieces of the N:M structured-sparse CUDA kernels (torch-free): dtype conversion,
// reading one group's kept mask out of the bit-packed meta, decoding a group to dense,
// the magnitude ranking of nm_compress, and the 2:4 mask -> mma.sp metadata conversion.
//
// Format (csrc/common/nm_params.h): W [rows, k] keeps n of every m consecutive entries;
// values [rows, kept = k / m * n] holds the kept entries of each row in column order;
// meta [rows, meta_stride = ceil(k / 8)] is the kept mask, bit c % 8 of byte c / 8.
//
// Invalid meta (a group with a number of set bits other than n) is not checked on CUDA
// (no device sync per call). Every kernel stays in bounds for any meta: a group always
// owns exactly the n value slots [g * n, g * n + n) of its row, and a decoder places them
// at the group's first n set bits, dropping the slots it has no bit for (so the result is
// deterministic, though it can differ between paths; the sparse-tensor-core path maps
// every invalid 2:4 mask to the positions (0, 1)).
//
// The index helpers are __host__ __device__ so the host-side checks can run them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "common/nm_params.h"

#define NM_HD __host__ __device__ __forceinline__
// #pragma unroll inside NM_HD functions, for the device pass only (host compilers warn).
#ifdef __CUDA_ARCH__
#define NM_UNROLL _Pragma("unroll")
#else
#define NM_UNROLL
#endif

// Kernel launch, as a macro so that a host-side emulation of the kernels (a test harness
// that runs each CUDA thread on a CPU thread) can define its own before including these
// headers, together with SPIKEOPS_NM_EMULATE (which also swaps the inline-PTX primitives
// of nm_mma24.cuh for emulated ones). Production builds never define either.
#ifndef NM_LAUNCH
#define NM_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

namespace spikeops {
namespace cuda_nm {

// ---------------------------------------------------------------------------------------
// dtype <-> fp32.
NM_HD float to_f32(float v) { return v; }
NM_HD float to_f32(__half v) { return __half2float(v); }
NM_HD float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> NM_HD T from_f32(float v);
template <> NM_HD float from_f32<float>(float v) { return v; }
template <> NM_HD __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> NM_HD __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

NM_HD float bits_to_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// A 32-bit word holding 1 fp32 or 2 packed 16-bit values, unpacked to fp32 (low first).
template <typename T> struct Unpack;
template <> struct Unpack<float> {
  static constexpr int kPerWord = 1;
  static NM_HD void run(uint32_t w, float* out) { out[0] = bits_to_f32(w); }
};
template <> struct Unpack<__half> {
  static constexpr int kPerWord = 2;
  static NM_HD void run(uint32_t w, float* out) {
    __half_raw lo, hi;
    lo.x = static_cast<unsigned short>(w & 0xffffu);
    hi.x = static_cast<unsigned short>(w >> 16);
    out[0] = __half2float(__half(lo));
    out[1] = __half2float(__half(hi));
  }
};
template <> struct Unpack<__nv_bfloat16> {
  static constexpr int kPerWord = 2;
  static NM_HD void run(uint32_t w, float* out) {
    // bf16 -> fp32 is exact: the bf16 bits are the top half of the fp32 bits.
    out[0] = bits_to_f32(w << 16);
    out[1] = bits_to_f32(w & 0xffff0000u);
  }
};

// ---------------------------------------------------------------------------------------
// The m-bit kept mask of the group whose first column is `col0` (bit j = column col0 + j),
// from one row of meta. Reads only bytes [col0 / 8, (col0 + m - 1) / 8], all < meta_stride
// when col0 + m <= k. m <= 32.
NM_HD uint32_t load_group_mask(const uint8_t* meta_row, int64_t col0, int m) {
  const int64_t byte0 = col0 >> 3;
  const int shift = static_cast<int>(col0 & 7);
  const int nbytes = (shift + m + 7) >> 3;  // <= 5
  uint64_t v = 0;
  for (int i = 0; i < nbytes; ++i) v |= static_cast<uint64_t>(meta_row[byte0 + i]) << (8 * i);
  return static_cast<uint32_t>((v >> shift) & ((uint64_t(1) << m) - 1));
}

// Dense fp32 of one group: out[j * stride] = the value of column j (0 where not kept).
// The kept values are the group's n slots `vals[0, n)`, placed at the first n set bits of
// mask. mask == 0 writes zeros (vals is not read).
template <typename T>
NM_HD void decode_group(uint32_t mask, int m, int n, const T* vals, float* out, int stride) {
  int cnt = 0;
  for (int j = 0; j < m; ++j) {
    float w = 0.f;
    if (((mask >> j) & 1u) && cnt < n) w = to_f32(vals[cnt++]);
    out[j * stride] = w;
  }
}

// ---------------------------------------------------------------------------------------
// nm_compress selection: entry i beats entry j (both of one group) when |w_i| is larger,
// NaN counting as the largest, the lower column winning ties (NaN vs NaN too). A strict
// total order, so the ranks of a group are a permutation and exactly n entries have
// rank < n.
NM_HD bool beats(float ai, int i, float aj, int j) {
  const bool ni = ai != ai, nj = aj != aj;
  if (ni || nj) return ni && (!nj || i < j);
  return ai > aj || (ai == aj && i < j);
}

// Whether column j of the group `w[0, m)` is among its n largest magnitudes.
template <typename T>
NM_HD bool is_selected(const T* w, int m, int n, int j) {
  const float aj = fabsf(to_f32(w[j]));
  int rank = 0;
  for (int i = 0; i < m; ++i)
    if (i != j && beats(fabsf(to_f32(w[i])), i, aj, j)) ++rank;
  return rank < n;
}

template <typename T>
NM_HD uint32_t select_mask(const T* w, int m, int n) {
  uint32_t mask = 0;
  for (int j = 0; j < m; ++j)
    if (is_selected(w, m, n, j)) mask |= 1u << j;
  return mask;
}

// ---------------------------------------------------------------------------------------
// 2:4 mask -> mma.sp::ordered_metadata indices. For a chunk of 4 columns whose kept
// mask nibble has bits i0 < i1 set, mma.sp wants the nibble i0 | i1 << 2 (PTX ISA,
// "Sparse matrix storage": 0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110 are the
// meaningful values). Masks without exactly two bits (invalid meta) map to 0b0100.
constexpr uint64_t make_meta_lut() {
  uint64_t lut = 0;
  for (int v = 0; v < 16; ++v) {
    int bits = 0, i0 = -1, i1 = -1;
    for (int j = 0; j < 4; ++j)
      if ((v >> j) & 1) {
        ++bits;
        if (i0 < 0) i0 = j; else i1 = j;
      }
    const uint64_t e = bits == 2 ? static_cast<uint64_t>(i0 | (i1 << 2)) : 0x4u;
    lut |= e << (4 * v);
  }
  return lut;
}
constexpr uint64_t kMetaLut = make_meta_lut();

NM_HD uint32_t meta_nibble(uint32_t mask4) {
  return static_cast<uint32_t>(kMetaLut >> (4 * (mask4 & 0xfu))) & 0xfu;
}

// Four consecutive 2:4 chunks (16 columns; mask bits 4q..4q+3 = chunk q) -> 16 bits of
// mma.sp metadata, chunk q in bits [4q, 4q + 4).
NM_HD uint32_t meta_from_mask16(uint32_t mask16) {
  uint32_t r = 0;
  NM_UNROLL
  for (int q = 0; q < 4; ++q) r |= meta_nibble(mask16 >> (4 * q)) << (4 * q);
  return r;
}

}  // namespace cuda_nm
}  // namespace spikeops
