// N:M structured-sparse GEMM on the CPU, compiled once per ISA (scalar, AVX2, AVX-512).
//
// Forward  y[b, r] = sum_c x[b, c] W[r, c] + bias[r]   (W: n of every m columns kept)
// Input gradient   dx[b, c] = sum_r dy[b, r] W[r, c]
//
// Work: 2 * batch * rows * kept FLOPs (kept = k / m * n), i.e. n/m of the dense GEMM.
// Memory: W once per batch tile of kTileB rows (values + a 1/32-size bit mask).
//
// Forward (tile path): a batch tile of x is packed transposed into a panel P[c][b]
// (fp32), so one kept weight w = W[r, c] multiplies a contiguous vector P[c][0..tb):
// broadcast w, FMA with NV vectors loaded straight from the panel row its column names.
// A micro-tile holds kRows rows of W x NV vectors of batch in registers; the panel is
// cut into column blocks of kForwardBlockK (streamed from L2) that every row of a row
// block runs over, and the partial sums of the row block live in a small fp32 scratch
// Ct[row][b] between column blocks (written out transposed, plus bias, at the end).
// The kept columns of a row come from its mask, one 64-bit word at a time (tzcnt);
// meta is validated first, so every word of every row holds the same number of bits.
//
// Forward (GEMV path, AVX-512, batch <= 4): memory-bound, so W is read once: each
// 16-column chunk of a row is expanded to dense under its 16-bit mask (vpermps with
// table-made indices) and FMA'd with the (fp32) x rows, four rows of W at a time; a
// row's sums are reduced horizontally at its end. Dense FLOPs, but only W's bytes.
//
// Input gradient: the batch tile of dy is packed transposed into Q[r][b]; for each
// column block, a scratch Dt[c][b] (in L1) receives Dt[c] += W[r, c] * Q[r] for every
// kept (r, c), rows in order; then dx = Dt transposed. Each task owns its batch tile,
// so no two threads write the same output: deterministic, no atomics.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/nm_params.h"
#include "cpu/kernels/simd.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

#if defined(SPIKEOPS_ISA_avx512)
constexpr int kRows = 6;     // rows of W per micro-tile
constexpr int kMaxVecs = 4;  // batch vectors per micro-tile: 6 x 4 = 24 accumulators
#elif defined(SPIKEOPS_ISA_avx2)
constexpr int kRows = 4;
constexpr int kMaxVecs = 3;  // 12 of the 16 ymm registers
#else
constexpr int kRows = 4;
constexpr int kMaxVecs = 4;
#endif
constexpr int kTileB = kMaxVecs * kWidth;  // batch rows per tile
// Panel columns per forward block (a multiple of 64). Each block's sums start from zero
// and are added to the running total: a two-level sum, so the rounding error grows with
// the block's length, not with K (one chain over K = 4096 had 5-8x the error of MKL's
// sgemm against float64; with 256 columns it stays within 2x of it). Measured at
// 2048 x 4096 x 4096, 2:4: 128 columns 190 ms, 256 ~175 ms, 512 158 ms, 1024 145 ms, so
// accuracy costs ~15% here; the panel streams well from L2.
constexpr int64_t kForwardBlockK = 256;
// Columns per input-gradient block: its scatter target Dt[c][b] must stay in L1.
constexpr int64_t kGradBlockK = 128;
// Rows of W summed into Dt before it is folded into the block's total.
constexpr int64_t kGradBlockRows = 256;
constexpr int64_t kBlockRows = 256;        // rows of W per scratch block

SPIKEOPS_INLINE int ctz64(uint64_t v) { return __builtin_ctzll(v); }

// Kept values in `cols` columns (a multiple of m): cols / m * n. m is a power of two; a
// shift, because a division in the inner loops cost more than the arithmetic.
SPIKEOPS_INLINE int64_t kept_in(const NMGemmParams& p, int64_t cols) {
  return (cols >> __builtin_ctz(unsigned(p.m))) * p.n;
}

// The mask bits of columns [c, c + ncols) of one row (c a multiple of 8, ncols <= 64),
// reading only the row's own bytes.
SPIKEOPS_INLINE uint64_t mask_word(const uint8_t* row_meta, int64_t c, int64_t ncols) {
  uint64_t w = 0;
  if (ncols == 64) {
    std::memcpy(&w, row_meta + c / 8, 8);
  } else {
    std::memcpy(&w, row_meta + c / 8, size_t((ncols + 7) / 8));
    w &= (uint64_t(1) << ncols) - 1;
  }
  return w;
}

SPIKEOPS_INLINE float value_at(const void* v, int64_t i, DType dt) {
  switch (dt) {
    case DType::kFloat32: return static_cast<const float*>(v)[i];
    case DType::kBFloat16: return bf16_to_f32(static_cast<const uint16_t*>(v)[i]);
    default: return f16_to_f32(static_cast<const uint16_t*>(v)[i]);
  }
}

SPIKEOPS_INLINE void store_value(void* v, int64_t i, DType dt, float f) {
  switch (dt) {
    case DType::kFloat32: static_cast<float*>(v)[i] = f; break;
    case DType::kBFloat16: static_cast<uint16_t*>(v)[i] = f32_to_bf16(f); break;
    default: static_cast<uint16_t*>(v)[i] = f32_to_f16(f); break;
  }
}

template <DType DT>
SPIKEOPS_INLINE float value_as_f32(const void* v, int64_t i) {
  if constexpr (DT == DType::kFloat32) return static_cast<const float*>(v)[i];
  else if constexpr (DT == DType::kBFloat16) return bf16_to_f32(static_cast<const uint16_t*>(v)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(v)[i]);
}

// Per-thread scratch that grows and is reused across calls (no page faults per call).
float* scratch(std::unique_ptr<float[]>& buf, int64_t& cap, int64_t n) {
  if (n > cap) {
    buf.reset(new float[size_t(n) + 16]);
    cap = n;
  }
  // 64-byte align the start.
  auto p = reinterpret_cast<uintptr_t>(buf.get());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}
float* panel_scratch(int64_t n) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local int64_t cap = 0;
  return scratch(buf, cap, n);
}
float* value_scratch(int64_t n) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local int64_t cap = 0;
  return scratch(buf, cap, n);
}
float* acc_scratch(int64_t n) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local int64_t cap = 0;
  return scratch(buf, cap, n);
}

// Packs rows [b0, b0 + nb) of a [batch, cols] matrix transposed into P[c][tb] (fp32),
// zero-filling the batch rows past nb.
void pack_transposed(const void* src, DType dt, int64_t cols, int64_t b0, int nb, int tb,
                     float* P) {
  if (nb < tb) {
    for (int64_t c = 0; c < cols; ++c)
      for (int b = nb; b < tb; ++b) P[c * tb + b] = 0.f;
  }
  // Column strips of 16 keep the writes of a strip inside a few cache lines.
  constexpr int64_t kStrip = 16;
  for (int64_t c0 = 0; c0 < cols; c0 += kStrip) {
    const int64_t c1 = std::min(cols, c0 + kStrip);
    for (int b = 0; b < nb; ++b) {
      const int64_t base = (b0 + b) * cols;
      if (dt == DType::kFloat32) {
        const float* s = static_cast<const float*>(src) + base;
        for (int64_t c = c0; c < c1; ++c) P[c * tb + b] = s[c];
      } else {
        for (int64_t c = c0; c < c1; ++c) P[c * tb + b] = value_at(src, base + c, dt);
      }
    }
  }
}

// ---- forward tile path ----------------------------------------------------------

// One micro-tile: rows row[0..kRows) of W over columns [c0, c1) of the panel block
// starting at column pc0. The kept values of row[j] for these columns start at
// vals[vrow[j] * vstride] (fp32). acc (kRows x NV vectors) is loaded from / stored to ct.
template <int NV>
SPIKEOPS_INLINE void forward_micro(const NMGemmParams& p, const int64_t* row,
                                   const float* vals, int64_t vstride, const int64_t* vrow,
                                   const float* P, int64_t pc0, int64_t c0, int64_t c1,
                                   float* ct, bool first) {
  VecF acc[kRows][NV];
  for (int j = 0; j < kRows; ++j)
    for (int v = 0; v < NV; ++v)
      acc[j][v] = VecF(0.f);

  const uint8_t* meta[kRows];
  const float* w_row[kRows];
  for (int j = 0; j < kRows; ++j) {
    meta[j] = p.meta + row[j] * p.meta_stride;
    w_row[j] = vals + vrow[j] * vstride;
  }
  for (int64_t c = c0; c < c1; c += 64) {
    const int64_t ncols = std::min<int64_t>(64, c1 - c);
    const int64_t cnt = kept_in(p, ncols);
    uint64_t bits[kRows];
    for (int j = 0; j < kRows; ++j) bits[j] = mask_word(meta[j], c, ncols);
    const float* Pc = P + (c - pc0) * kTileB;
    for (int64_t i = 0; i < cnt; ++i) {
#pragma GCC unroll 6
      for (int j = 0; j < kRows; ++j) {
        // & 63: an (impossible after validation) empty word stays inside the block.
        const int col = ctz64(bits[j]) & 63;
        bits[j] &= bits[j] - 1;
        const VecF w(w_row[j][i]);
        const float* src = Pc + col * kTileB;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[j][v] = vfma(w, loadu(src + v * kWidth), acc[j][v]);
      }
    }
    for (int j = 0; j < kRows; ++j) w_row[j] += cnt;
  }
  for (int j = 0; j < kRows; ++j)
    for (int v = 0; v < NV; ++v) {
      float* dst = ct + j * kTileB + v * kWidth;
      storeu(dst, first ? acc[j][v] : loadu(dst) + acc[j][v]);
    }
}

// bf16 / fp16 kept values of rows [r0, r1), slots [s0, s1) -> fp32 dst[(r - r0) * (s1 - s0)].
template <DType DT>
void values_to_f32(const NMGemmParams& p, int64_t r0, int64_t r1, int64_t s0, int64_t s1,
                   float* dst) {
  const int64_t len = s1 - s0;
  for (int64_t r = r0; r < r1; ++r) {
    float* d = dst + (r - r0) * len;
    const int64_t base = r * p.kept + s0;
    int64_t i = 0;
    for (; i + kWidth <= len; i += kWidth) storeu(d + i, load(p.values, base + i, DT));
    for (; i < len; ++i) d[i] = value_as_f32<DT>(p.values, base + i);
  }
}

template <DType DT, int NV>
void forward_tile(const NMGemmParams& p, int64_t b0, int nb, int64_t r0, int64_t r1) {
  float* P = panel_scratch(p.k * kTileB);
  pack_transposed(p.in, p.dtype, p.k, b0, nb, kTileB, P);
  // + kRows: the last micro-tile of a block may run past its end (repeated rows).
  float* ct = acc_scratch((kBlockRows + kRows) * kTileB);
  // Half-precision values are converted to fp32 once per (row block, column block), so
  // the inner loop broadcasts fp32 from memory in both cases.
  const int64_t block_k = kForwardBlockK;
  float* vconv = DT == DType::kFloat32 ? nullptr : value_scratch(kBlockRows * kept_in(p, block_k));
  for (int64_t rb = r0; rb < r1; rb += kBlockRows) {
    const int64_t re = std::min(r1, rb + kBlockRows);
    for (int64_t kb = 0; kb < p.k; kb += block_k) {
      const int64_t ke = std::min(p.k, kb + block_k);
      const float* vals;
      int64_t vstride, vbase;
      if constexpr (DT == DType::kFloat32) {
        vals = static_cast<const float*>(p.values) + kept_in(p, kb);
        vstride = p.kept;
        vbase = 0;
      } else {
        vstride = kept_in(p, ke - kb);
        values_to_f32<DT>(p, rb, re, kept_in(p, kb), kept_in(p, ke), vconv);
        vals = vconv;
        vbase = rb;
      }
      for (int64_t r = rb; r < re; r += kRows) {
        int64_t row[kRows], vrow[kRows];
        // Rows past the end repeat the last row; their sums are never stored.
        for (int j = 0; j < kRows; ++j) {
          row[j] = std::min(r + j, re - 1);
          vrow[j] = row[j] - vbase;
        }
        forward_micro<NV>(p, row, vals, vstride, vrow, P + kb * kTileB, kb, kb, ke,
                          ct + (r - rb) * kTileB, kb == 0);
      }
    }
    // y[b0 + b, r] = Ct[r][b] + bias[r]
    for (int b = 0; b < nb; ++b) {
      const int64_t out = (b0 + b) * p.rows;
      for (int64_t r = rb; r < re; ++r) {
        float v = ct[(r - rb) * kTileB + b];
        if (p.bias) v += value_at(p.bias, r, p.dtype);
        store_value(p.out, out + r, p.dtype, v);
      }
    }
  }
}

#if defined(SPIKEOPS_ISA_avx512)
// ---- forward GEMV path (AVX-512, batch <= 4) -------------------------------------

// Expanding a 16-column chunk of a row to dense: lane c takes kept value number
// popcount(mask below c), zero where the mask is clear. vexpandps does exactly this but
// takes ~6 cycles on AMD Zen (measured) against ~1 for vpermps, so the lane indices come
// from two tables (one per mask byte) and vpermps moves the values.
// kPrefix.lo[b]: bytes 0..7 = popcount(b below bit i); kPrefix.hi[b]: the same in bytes 8..15.
struct PrefixTables {
  alignas(16) uint8_t lo[256][16];
  alignas(16) uint8_t hi[256][16];
  constexpr PrefixTables() : lo(), hi() {
    for (int b = 0; b < 256; ++b) {
      int count = 0;
      for (int i = 0; i < 8; ++i) {
        lo[b][i] = uint8_t(count);
        hi[b][8 + i] = uint8_t(count);
        count += (b >> i) & 1;
      }
    }
  }
};
constexpr PrefixTables kPrefix{};

// The 16 lane indices for a chunk whose low mask byte holds `lo_count` set bits.
SPIKEOPS_INLINE __m512i expand_indices(const uint8_t* mask_bytes, __m128i hi_offset) {
  const __m128i lo = _mm_load_si128(reinterpret_cast<const __m128i*>(kPrefix.lo[mask_bytes[0]]));
  const __m128i hi = _mm_load_si128(reinterpret_cast<const __m128i*>(kPrefix.hi[mask_bytes[1]]));
  return _mm512_cvtepu8_epi32(_mm_add_epi8(_mm_or_si128(lo, hi), hi_offset));
}

// `count` consecutive kept values from `v` as fp32 in the low lanes (reads only those).
template <DType DT>
SPIKEOPS_INLINE __m512 load_kept(const void* v, int64_t i, __mmask16 first) {
  if constexpr (DT == DType::kFloat32) {
    return _mm512_maskz_loadu_ps(first, static_cast<const float*>(v) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(first, static_cast<const uint16_t*>(v) + i);
    if constexpr (DT == DType::kBFloat16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  }
}

// One 16-column chunk at column c of RB rows (WHOLE: all 16 columns exist). With FIXED
// (m <= 8) every mask byte holds 8 / m * n bits, so a whole chunk's values, their load
// mask and the high byte's index offset are known from the column alone: no chunk waits
// on another's mask.
template <DType DT, int NB, int RB, bool FIXED, bool WHOLE>
SPIKEOPS_INLINE void gemv_chunk(const NMGemmParams& p, const float* xf, int64_t c,
                                const uint8_t* const (&meta)[RB], int64_t (&slot)[RB],
                                __m512 (&acc)[RB][NB]) {
  const int64_t ncols = WHOLE ? 16 : p.k - c;
  const __mmask16 cm = __mmask16(WHOLE ? 0xffffu : (1u << ncols) - 1);
  const int per_byte = int(kept_in(p, 8));  // valid when FIXED
  __m512 xv[NB];
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) xv[b] = _mm512_maskz_loadu_ps(cm, xf + b * p.k + c);
#pragma GCC unroll 4
  for (int j = 0; j < RB; ++j) {
    const uint8_t* mb = meta[j] + c / 8;
    const uint8_t bytes[2] = {mb[0], uint8_t(WHOLE || ncols > 8 ? mb[1] : 0)};
    const __mmask16 mask = __mmask16((bytes[0] | (unsigned(bytes[1]) << 8)) & cm);
    const int lo_count = FIXED && WHOLE ? per_byte : __builtin_popcount(bytes[0]);
    const int count = FIXED && WHOLE ? 2 * per_byte : __builtin_popcount(mask);
    const __m128i offset = _mm_set_epi64x(int64_t(uint64_t(lo_count) * 0x0101010101010101ull), 0);
    const __m512 w = _mm512_maskz_permutexvar_ps(
        mask, expand_indices(bytes, offset),
        load_kept<DT>(p.values, slot[j], __mmask16((1u << count) - 1)));
    if (WHOLE && (c & 31) == 0)  // W is read once: ask for it ~2 KiB ahead of use
      _mm_prefetch(static_cast<const char*>(p.values) + (slot[j] + 512) * int64_t(sizeof(float)) /
                       (DT == DType::kFloat32 ? 1 : 2), _MM_HINT_T0);
    slot[j] += count;
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[j][b] = _mm512_fmadd_ps(w, xv[b], acc[j][b]);
  }
}

// RB rows of W from `r` against batch rows [0, NB): RB independent accumulator chains and
// load streams, one x load per chunk shared by the RB rows.
template <DType DT, int NB, int RB, bool FIXED>
SPIKEOPS_INLINE void gemv_rows(const NMGemmParams& p, const float* xf, int64_t r) {
  __m512 acc[RB][NB];
  const uint8_t* meta[RB];
  int64_t slot[RB];
#pragma GCC unroll 4
  for (int j = 0; j < RB; ++j) {
    meta[j] = p.meta + (r + j) * p.meta_stride;
    slot[j] = (r + j) * p.kept;
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[j][b] = _mm512_setzero_ps();
  }
  const int64_t full = p.k / 16 * 16;
  for (int64_t c = 0; c < full; c += 16)
    gemv_chunk<DT, NB, RB, FIXED, true>(p, xf, c, meta, slot, acc);
  if (full < p.k) gemv_chunk<DT, NB, RB, FIXED, false>(p, xf, full, meta, slot, acc);
#pragma GCC unroll 4
  for (int j = 0; j < RB; ++j) {
    const float bias = p.bias ? value_as_f32<DT>(p.bias, r + j) : 0.f;
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b)
      store_value(p.out, b * p.rows + r + j, DT, _mm512_reduce_add_ps(acc[j][b]) + bias);
  }
}

template <DType DT, int NB, bool FIXED>
void gemv_nb(const NMGemmParams& p, const float* xf, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) gemv_rows<DT, NB, 4, FIXED>(p, xf, r);
  for (; r < r1; ++r) gemv_rows<DT, NB, 1, FIXED>(p, xf, r);
}

template <DType DT, int NB>
void gemv_nb(const NMGemmParams& p, const float* xf, int64_t r0, int64_t r1) {
  if (p.m <= 8) gemv_nb<DT, NB, true>(p, xf, r0, r1);
  else gemv_nb<DT, NB, false>(p, xf, r0, r1);
}

template <DType DT>
void gemv(const NMGemmParams& p, const float* xf, int64_t r0, int64_t r1) {
  switch (p.batch) {
    case 1: gemv_nb<DT, 1>(p, xf, r0, r1); break;
    case 2: gemv_nb<DT, 2>(p, xf, r0, r1); break;
    case 3: gemv_nb<DT, 3>(p, xf, r0, r1); break;
    default: gemv_nb<DT, 4>(p, xf, r0, r1); break;
  }
}
#endif

// ---- input gradient ---------------------------------------------------------------

template <DType DT, int NV>
void grad_input_tile(const NMGemmParams& p, int64_t b0, int nb, int64_t c0, int64_t c1) {
  // p.in = dy [batch, rows] -> Q[r][b]; p.out = dx [batch, k].
  float* Q = panel_scratch(p.rows * kTileB);
  pack_transposed(p.in, p.dtype, p.rows, b0, nb, kTileB, Q);
  // Dt holds the sums of up to kGradBlockRows rows, folded into `total` (two-level sums,
  // as in the forward).
  float* dt_acc = acc_scratch(2 * kGradBlockK * kTileB);
  float* total = dt_acc + kGradBlockK * kTileB;
  const DType dt = p.dtype;
  for (int64_t kb = c0; kb < c1; kb += kGradBlockK) {
    const int64_t ke = std::min(c1, kb + kGradBlockK);
    const size_t block_floats = size_t((ke - kb) * kTileB);
    std::memset(total, 0, sizeof(float) * block_floats);
    std::memset(dt_acc, 0, sizeof(float) * block_floats);
    const int64_t slot0 = kept_in(p, kb);
    for (int64_t r = 0; r < p.rows; ++r) {
      if (r % kGradBlockRows == 0 && r > 0) {
        for (size_t i = 0; i < block_floats; i += kWidth)
          storeu(total + i, loadu(total + i) + loadu(dt_acc + i));
        std::memset(dt_acc, 0, sizeof(float) * block_floats);
      }
      VecF q[NV];
      for (int v = 0; v < NV; ++v) q[v] = loadu(Q + r * kTileB + v * kWidth);
      const uint8_t* meta = p.meta + r * p.meta_stride;
      int64_t slot = r * p.kept + slot0;
      for (int64_t c = kb; c < ke; c += 64) {
        const int64_t ncols = std::min<int64_t>(64, ke - c);
        const int64_t cnt = kept_in(p, ncols);
        uint64_t bits = mask_word(meta, c, ncols);
        float* D = dt_acc + (c - kb) * kTileB;
        for (int64_t i = 0; i < cnt; ++i) {
          const int col = ctz64(bits) & 63;
          bits &= bits - 1;
          const VecF w(value_as_f32<DT>(p.values, slot + i));
          float* d = D + col * kTileB;
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) storeu(d + v * kWidth, vfma(w, q[v], loadu(d + v * kWidth)));
        }
        slot += cnt;
      }
    }
    for (size_t i = 0; i < block_floats; i += kWidth)
      storeu(total + i, loadu(total + i) + loadu(dt_acc + i));
    for (int b = 0; b < nb; ++b) {
      const int64_t out = (b0 + b) * p.k;
      for (int64_t c = kb; c < ke; ++c)
        store_value(p.out, out + c, dt, total[(c - kb) * kTileB + b]);
    }
  }
}

// ---- meta check ---------------------------------------------------------------------

// Bit counts of every m-bit field of w (m a power of two <= 32), SWAR.
template <int M>
SPIKEOPS_INLINE uint64_t field_popcounts(uint64_t w) {
  w = w - ((w >> 1) & 0x5555555555555555ull);
  if (M >= 4) w = (w & 0x3333333333333333ull) + ((w >> 2) & 0x3333333333333333ull);
  if (M >= 8) w = (w + (w >> 4)) & 0x0f0f0f0f0f0f0f0full;
  if (M >= 16) w = (w + (w >> 8)) & 0x00ff00ff00ff00ffull;
  if (M >= 32) w = (w + (w >> 16)) & 0x0000ffff0000ffffull;
  return w;
}

// n in every m-bit field of the low `ncols` bits.
uint64_t expected_counts(int n, int m, int64_t ncols) {
  uint64_t e = 0;
  for (int64_t f = 0; f < ncols; f += m) e |= uint64_t(n) << f;
  return e;
}

// Rows are checked whole-word at a time with an OR of differences (no early exit), a
// loop the compiler vectorises: the check costs a small fraction of even the GEMV.
template <int M>
int64_t first_bad_row(const uint8_t* meta, int64_t r0, int64_t r1, int64_t k, int n) {
  const int64_t stride = (k + 7) / 8, words = k / 64, tail_cols = k % 64;
  const uint64_t full = expected_counts(n, M, 64), tail = expected_counts(n, M, tail_cols);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = meta + r * stride;
    uint64_t diff = 0;
    for (int64_t i = 0; i < words; ++i) {
      uint64_t w;
      std::memcpy(&w, row + 8 * i, 8);
      diff |= field_popcounts<M>(w) ^ full;
    }
    if (tail_cols) {
      uint64_t w = 0;
      std::memcpy(&w, row + 8 * words, size_t(stride - 8 * words));
      diff |= (w >> tail_cols) | (field_popcounts<M>(w & ((uint64_t(1) << tail_cols) - 1)) ^ tail);
    }
    if (diff) return r;
  }
  return -1;
}

template <typename Fn>
SPIKEOPS_INLINE void by_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kFloat32: return fn(std::integral_constant<DType, DType::kFloat32>());
    case DType::kBFloat16: return fn(std::integral_constant<DType, DType::kBFloat16>());
    default: return fn(std::integral_constant<DType, DType::kFloat16>());
  }
}

template <typename Fn>
SPIKEOPS_INLINE void by_vectors(int nb, Fn&& fn) {
  const int nv = (nb + kWidth - 1) / kWidth;
  if constexpr (kMaxVecs >= 4) {
    if (nv >= 4) return fn(std::integral_constant<int, 4>());
  }
  if (nv >= 3) return fn(std::integral_constant<int, 3>());
  if (nv == 2) return fn(std::integral_constant<int, 2>());
  return fn(std::integral_constant<int, 1>());
}

}  // namespace

int nm_tile_batch() { return kTileB; }

bool nm_use_gemv(const NMGemmParams& p) {
#if defined(SPIKEOPS_ISA_avx512)
  // Measured crossover: at batch 4 the GEMV path was 1.5-2x faster than the tile path
  // (4096 x 4096, 2:4), at 16 the tile path was faster.
  return p.batch <= 4;
#else
  (void)p;
  return false;
#endif
}

void nm_forward_tile(const NMGemmParams& p, int64_t b0, int64_t r0, int64_t r1) {
  const int nb = int(std::min<int64_t>(kTileB, p.batch - b0));
  by_dtype(p.dtype, [&](auto dt) {
    by_vectors(nb, [&](auto nv) {
      forward_tile<decltype(dt)::value, decltype(nv)::value>(p, b0, nb, r0, r1);
    });
  });
}

void nm_forward_gemv(const NMGemmParams& p, const float* xf, int64_t r0, int64_t r1) {
#if defined(SPIKEOPS_ISA_avx512)
  by_dtype(p.dtype, [&](auto dt) { gemv<decltype(dt)::value>(p, xf, r0, r1); });
#else
  (void)p, (void)xf, (void)r0, (void)r1;
#endif
}

void nm_grad_input_tile(const NMGemmParams& p, int64_t b0, int64_t c0, int64_t c1) {
  const int nb = int(std::min<int64_t>(kTileB, p.batch - b0));
  by_dtype(p.dtype, [&](auto dt) {
    by_vectors(nb, [&](auto nv) {
      grad_input_tile<decltype(dt)::value, decltype(nv)::value>(p, b0, nb, c0, c1);
    });
  });
}

int64_t nm_first_bad_meta_row(const uint8_t* meta, int64_t r0, int64_t r1, int64_t k, int m,
                              int n) {
  switch (m) {
    case 2: return first_bad_row<2>(meta, r0, r1, k, n);
    case 4: return first_bad_row<4>(meta, r0, r1, k, n);
    case 8: return first_bad_row<8>(meta, r0, r1, k, n);
    case 16: return first_bad_row<16>(meta, r0, r1, k, n);
    default: return first_bad_row<32>(meta, r0, r1, k, n);
  }
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
