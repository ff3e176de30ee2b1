// Sparse convolution as gather -> GEMM -> scatter, compiled once per ISA (scalar, AVX2,
// AVX-512). See csrc/common/sparse_conv_params.h for the math and the summation order.
//
// Forward (conv_rows): a task owns output rows [m0, m1). In blocks of kBlock rows it keeps
// an fp32 accumulator block [kBlock, CoutPad] in L1/L2; for each kernel offset k it lists
// the block's rows that have a neighbour at k, and runs a register-tiled micro-kernel over
// groups of kRows of them: kRows x (NV vectors of Cout) accumulators, one broadcast of
// x[in, c] and NV loads of w[k, c, :] per c. Only existing pairs are multiplied (the
// effective FLOPs are 2 * pairs * Cin * Cout). Traffic: each input row is read once per
// pair (from cache when neighbours are close), w (K * Cin * CoutPad fp32) stays in L2,
// each output row is written once. No atomics: results do not depend on the threads.
//
// Zero-skipping forward (conv_rows_skip) for spike features (binary or small integer
// counts): the glue first copies the non-zero entries of x into CSR form (csr_count /
// csr_fill: channel and value per non-zero, ~8 bytes each instead of 4 * Cin bytes per row);
// then each output row keeps its accumulators in registers over all offsets while its
// neighbours' non-zero terms add count * w[k, c, :] (for binary spikes a plain add: the FMA
// by 1 is exact). The terms, their order and the fp32 rounding per term are those of the
// dense path, so both give identical bits whenever the skipped products are exact zeros
// (finite weights).
//
// Weight gradient (wgrad_rows): a task owns a range of output rows and a partial dw
// [K, Cin, ldp]; in blocks of kWBlock output rows (their g rows stay in L2 across the K
// offsets) it lists offset k's pairs and accumulates kRows x NV register tiles of
// x[in, c] * g[out, :]. The glue sums the partials in task order; the task count depends on
// the shapes only, so the result does not depend on the threads. wgrad_rows_skip scatters
// each pair's non-zero x[in, c] * g[out, :] into partial row (k, c) instead (same terms,
// same order, same bits). Blocking over output rows (g read once instead of once per
// offset) made the dense weight gradient ~2x faster than per-offset sweeps.
//
// Measured single-threaded (CPU time, AMD EPYC VM, AVX-512; SubMConv3d k=3 64->64 on 98k
// clustered voxels, 887k pairs): forward 46-47 ms (55 before the branch-free pair listing
// and the exact-size last group; this CPU peaks at ~240 GFLOP/s per core in zmm FMAs, the
// inner loop runs near it, MKL's sgemm reaches ~100), weight gradient 44 ms (was 89 ms
// with per-offset sweeps); 10 %-firing spikes: forward 22.6 ms (CSR build ~4 ms of it,
// mostly the count pass reading x from memory; binary rows are filled from its masks), weight
// gradient 29 ms. Tried and not kept (no gain): blocks of rows with w[k] in L1 and two rows
// interleaved, CSR rows padded to 4 terms per trip, prefetching the next group's gathered
// rows, bucketing the spike weight gradient's terms by channel (1.5x slower: the counting
// sort cost more than the read-modify-writes it saved).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/sparse_conv_params.h"
#include "cpu/kernels/simd.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

#if defined(SPIKEOPS_ISA_avx512)
constexpr int kRows = 6;   // 6 x 4 zmm accumulators
constexpr int kMaxNV = 4;
#elif defined(SPIKEOPS_ISA_avx2)
constexpr int kRows = 6;   // 6 x 2 ymm accumulators (16 registers)
constexpr int kMaxNV = 2;
#else
constexpr int kRows = 4;
constexpr int kMaxNV = 4;
#endif
constexpr int64_t kBlock = 48;     // output rows per accumulator block
constexpr int64_t kWBlock = 256;   // output rows per weight-gradient block

// acc rows (fp32, NV vectors from column col) += sum_c x_r[c] * w[c * ldw + col ...], for
// R <= kRows rows.
template <int NV, int R>
SPIKEOPS_INLINE void tile(const float* const* xr, const float* w, int64_t cin, int64_t ldw,
                          float* const* acc_rows) {
  VecF acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = loadu(acc_rows[r] + v * kWidth);
  for (int64_t c = 0; c < cin; ++c) {
    VecF wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = loadu(w + c * ldw + v * kWidth);
    for (int r = 0; r < R; ++r) {
      const VecF b(xr[r][c]);
      for (int v = 0; v < NV; ++v) acc[r][v] = vfma(b, wv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) storeu(acc_rows[r] + v * kWidth, acc[r][v]);
}

// Runs tile<> over all column chunks of CoutPad (a multiple of kWidth).
template <int R>
SPIKEOPS_INLINE void tile_cols(const float* const* xr, const float* wk, int64_t cin,
                               int64_t ldw, float* const* rows) {
  const int64_t nvec = ldw / kWidth;
  float* shifted[R];
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxNV) {
    const int64_t col = v0 * kWidth;
    for (int r = 0; r < R; ++r) shifted[r] = rows[r] + col;
    switch (std::min<int64_t>(kMaxNV, nvec - v0)) {
      case 1: tile<1, R>(xr, wk + col, cin, ldw, shifted); break;
#if !defined(SPIKEOPS_ISA_avx2)
      case 3: tile<3, R>(xr, wk + col, cin, ldw, shifted); break;
      case 4: tile<4, R>(xr, wk + col, cin, ldw, shifted); break;
#endif
      default: tile<2, R>(xr, wk + col, cin, ldw, shifted); break;
    }
  }
}

// A last group of n < kRows rows: a tile of exactly n rows (no padded rows computed).
SPIKEOPS_INLINE void tile_cols_rest(int n, const float* const* xr, const float* wk,
                                    int64_t cin, int64_t ldw, float* const* rows) {
  static_assert(kRows <= 6, "one case per remainder");
  switch (n) {
    case 1: tile_cols<1>(xr, wk, cin, ldw, rows); break;
    case 2: tile_cols<2>(xr, wk, cin, ldw, rows); break;
    case 3: tile_cols<3>(xr, wk, cin, ldw, rows); break;
    case 4: tile_cols<(kRows > 4 ? 4 : 1)>(xr, wk, cin, ldw, rows); break;
    case 5: tile_cols<(kRows > 5 ? 5 : 1)>(xr, wk, cin, ldw, rows); break;
    default: break;
  }
}

// Writes acc row (+ bias) to out row m.
SPIKEOPS_INLINE void write_row(const SparseConvParams& p, int64_t m, const float* acc) {
  for (int64_t o = 0; o < p.Cout; o += kWidth) {
    const int n = int(std::min<int64_t>(kWidth, p.Cout - o));
    VecF a = loadu(acc + o);
    if (p.bias) a = a + load_f32(p.bias + o, n);
    store_any(p.out, m * p.Cout + o, p.out_dtype, a, n);
  }
}

void conv_rows(const SparseConvParams& p, int64_t m0, int64_t m1) {
  const int64_t ldw = p.CoutPad;
  thread_local std::vector<float> buf;
  buf.resize(size_t(kBlock * ldw));
  for (int64_t b0 = m0; b0 < m1; b0 += kBlock) {
    const int64_t nb = std::min(kBlock, m1 - b0);
    std::fill(buf.begin(), buf.begin() + nb * ldw, 0.f);
    for (int64_t k = 0; k < p.K; ++k) {
      const float* wk = p.w + k * p.Cin * ldw;
      // The block's pairs of offset k, listed without branches (whether a row has a
      // neighbour at k is unpredictable), in groups of kRows and one smaller last group.
      const float* xr[kBlock];
      float* rows[kBlock];
      int n = 0;
      for (int64_t r = 0; r < nb; ++r) {
        const int32_t i = p.nbmap[(b0 + r) * p.K + k];
        xr[n] = p.x + int64_t(std::max(i, 0)) * p.Cin;  // overwritten unless i >= 0
        rows[n] = buf.data() + r * ldw;
        n += i >= 0;
      }
      int j = 0;
      for (; j + kRows <= n; j += kRows) tile_cols<kRows>(xr + j, wk, p.Cin, ldw, rows + j);
      if (j < n) tile_cols_rest(n - j, xr + j, wk, p.Cin, ldw, rows + j);
    }
    for (int64_t r = 0; r < nb; ++r) write_row(p, b0 + r, buf.data() + r * ldw);
  }
}

// One CSR term: acc += val * w_row (NV vectors). For binary spikes (every value 1) the
// FMA by 1 is exactly an add, which has a shorter latency on the accumulator chain.
template <int NV, bool kBinary>
SPIKEOPS_INLINE void skip_term(VecF* acc, const float* wr, float val) {
  if (kBinary) {
    for (int v = 0; v < NV; ++v) acc[v] = acc[v] + loadu(wr + v * kWidth);
  } else {
    const VecF a(val);
    for (int v = 0; v < NV; ++v) acc[v] = vfma(a, loadu(wr + v * kWidth), acc[v]);
  }
}

// Output row m (NV vectors from column col) = sum over the offsets k and the non-zero
// entries (c, val) of each neighbour's CSR row of val * w[k, c, col ...]. The accumulators
// stay in registers across all offsets; terms in the dense path's order (k, then c
// ascending, one FMA each, from zero).
template <int NV, bool kBinary>
SPIKEOPS_INLINE void skip_row(const SparseConvParams& p, int64_t m, int64_t col, float* dst) {
  const int64_t ldw = p.CoutPad;
  const int32_t* nbrow = p.nbmap + m * p.K;
  VecF acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = VecF(0.f);
  for (int64_t k = 0; k < p.K; ++k) {
    const int32_t i = nbrow[k];
    if (i < 0) continue;
    const float* wk = p.w + k * p.Cin * ldw + col;
    for (int64_t q = p.csr_ptr[i], e = p.csr_ptr[i + 1]; q < e; ++q)
      skip_term<NV, kBinary>(acc, wk + int64_t(p.csr_idx[q]) * ldw, p.csr_val[q]);
  }
  for (int v = 0; v < NV; ++v) storeu(dst + col + v * kWidth, acc[v]);
}

// Row by row: one pass over the row's neighbours per group of kMaxNV column vectors, w
// (K * Cin * CoutPad fp32) from L2, the non-zero entries from the CSR copy of x (~8 bytes
// per non-zero instead of 4 * Cin bytes per row).
template <bool kBinary>
void conv_rows_skip_t(const SparseConvParams& p, int64_t m0, int64_t m1) {
  thread_local std::vector<float> buf;
  const int64_t nvec = p.CoutPad / kWidth;
  buf.resize(size_t(p.CoutPad));
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t v0 = 0; v0 < nvec; v0 += kMaxNV) {
      const int64_t col = v0 * kWidth;
      switch (std::min<int64_t>(kMaxNV, nvec - v0)) {
        case 1: skip_row<1, kBinary>(p, m, col, buf.data()); break;
#if !defined(SPIKEOPS_ISA_avx2)
        case 3: skip_row<3, kBinary>(p, m, col, buf.data()); break;
        case 4: skip_row<4, kBinary>(p, m, col, buf.data()); break;
#endif
        default: skip_row<2, kBinary>(p, m, col, buf.data()); break;
      }
    }
    write_row(p, m, buf.data());
  }
}

void conv_rows_skip(const SparseConvParams& p, int64_t m0, int64_t m1) {
  if (p.csr_binary) conv_rows_skip_t<true>(p, m0, m1);
  else conv_rows_skip_t<false>(p, m0, m1);
}

// dw tile rows c .. c + R (R <= kRows) += sum over pairs x[in, c] * g[out, col ...].
template <int NV, int R>
SPIKEOPS_INLINE void wgrad_tile(const SparseConvParams& p, const int32_t* pin,
                                const int32_t* pout, int64_t np, int64_t c, int64_t col,
                                float* buf, int64_t ldb) {
  VecF acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = loadu(buf + r * ldb + col + v * kWidth);
  for (int64_t q = 0; q < np; ++q) {
    const float* xr = p.x + int64_t(pin[q]) * p.Cin + c;
    const float* gr = p.g + int64_t(pout[q]) * p.CoutPad + col;
    VecF gv[NV];
    for (int v = 0; v < NV; ++v) gv[v] = loadu(gr + v * kWidth);
    for (int r = 0; r < R; ++r) {
      const VecF b(xr[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = vfma(b, gv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) storeu(buf + r * ldb + col + v * kWidth, acc[r][v]);
}

// wgrad_tile over the column chunks, for nc <= kRows channels from c (a template per
// count: no per-row tests in the pair loop).
template <int NV>
SPIKEOPS_INLINE void wgrad_tile_rows(const SparseConvParams& p, const int32_t* pin,
                                     const int32_t* pout, int64_t np, int64_t c, int nc,
                                     int64_t col, float* buf, int64_t ldb) {
  static_assert(kRows <= 6, "one case per row count");
  switch (nc) {
    case 1: wgrad_tile<NV, 1>(p, pin, pout, np, c, col, buf, ldb); break;
    case 2: wgrad_tile<NV, 2>(p, pin, pout, np, c, col, buf, ldb); break;
    case 3: wgrad_tile<NV, 3>(p, pin, pout, np, c, col, buf, ldb); break;
    case 4: wgrad_tile<NV, (kRows >= 4 ? 4 : 1)>(p, pin, pout, np, c, col, buf, ldb); break;
    case 5: wgrad_tile<NV, (kRows >= 5 ? 5 : 1)>(p, pin, pout, np, c, col, buf, ldb); break;
    default: wgrad_tile<NV, kRows>(p, pin, pout, np, c, col, buf, ldb); break;
  }
}

// The pairs (input row, output row) of offset k among output rows [b0, b1), by output row.
SPIKEOPS_INLINE int64_t block_pairs(const SparseConvParams& p, int64_t b0, int64_t b1,
                                    int64_t k, int32_t* pin, int32_t* pout) {
  int64_t n = 0;
  for (int64_t m = b0; m < b1; ++m) {
    const int32_t i = p.nbmap[m * p.K + k];
    pin[n] = i;
    pout[n] = int32_t(m);
    n += i >= 0;
  }
  return n;
}

// Calls fn(k, pin, pout, np) for each block of kWBlock output rows in [m0, m1) and each
// offset k, with the block's np pairs of offset k in output-row order.
template <typename Fn>
SPIKEOPS_INLINE void for_block_pairs(const SparseConvParams& p, int64_t m0, int64_t m1, Fn fn) {
  thread_local std::vector<int32_t> pin, pout;
  pin.resize(size_t(kWBlock));
  pout.resize(size_t(kWBlock));
  for (int64_t b0 = m0; b0 < m1; b0 += kWBlock) {
    const int64_t b1 = std::min(m1, b0 + kWBlock);
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t np = block_pairs(p, b0, b1, k, pin.data(), pout.data());
      if (np > 0) fn(k, pin.data(), pout.data(), np);
    }
  }
}

// Weight gradient of output rows [m0, m1) into part [K, Cin, CoutPad] (fp32, accumulated):
// blocks of kWBlock output rows (their g rows stay in L2 across the K offsets), then per
// offset k the block's pairs, then register tiles of kRows channels x NV vectors. Each
// element's terms are the pairs in output-row order.
void wgrad_rows(const SparseConvParams& p, int64_t m0, int64_t m1, float* part, int64_t ldb) {
  const int64_t nvec = p.CoutPad / kWidth;
  for_block_pairs(p, m0, m1, [&](int64_t k, const int32_t* pin, const int32_t* pout,
                                 int64_t np) {
    for (int64_t c = 0; c < p.Cin; c += kRows) {
      const int nc = int(std::min<int64_t>(kRows, p.Cin - c));
      float* tb = part + (k * p.Cin + c) * ldb;
      for (int64_t v0 = 0; v0 < nvec; v0 += kMaxNV) {
        const int64_t col = v0 * kWidth;
        switch (std::min<int64_t>(kMaxNV, nvec - v0)) {
          case 1: wgrad_tile_rows<1>(p, pin, pout, np, c, nc, col, tb, ldb); break;
#if !defined(SPIKEOPS_ISA_avx2)
          case 3: wgrad_tile_rows<3>(p, pin, pout, np, c, nc, col, tb, ldb); break;
          case 4: wgrad_tile_rows<4>(p, pin, pout, np, c, nc, col, tb, ldb); break;
#endif
          default: wgrad_tile_rows<2>(p, pin, pout, np, c, nc, col, tb, ldb); break;
        }
      }
    }
  });
}

// Zero-skipping weight gradient, same blocks and order as wgrad_rows: each non-zero
// x[in, c] of a pair adds x * g[out, :] to part row (k, c); the skipped terms are exact
// zeros, so both give the same bits for finite g. The pair's g columns stay in registers.
template <int NV>
SPIKEOPS_INLINE void skip_scatter(const SparseConvParams& p, int64_t i, const float* gr,
                                  float* pk, int64_t ldp) {
  VecF gv[NV];
  for (int v = 0; v < NV; ++v) gv[v] = loadu(gr + v * kWidth);
  const int64_t e1 = p.csr_ptr[i + 1];
  for (int64_t e = p.csr_ptr[i]; e < e1; ++e) {
    const VecF a(p.csr_val[e]);
    float* br = pk + int64_t(p.csr_idx[e]) * ldp;
    for (int v = 0; v < NV; ++v) storeu(br + v * kWidth, vfma(a, gv[v], loadu(br + v * kWidth)));
  }
}

void wgrad_rows_skip(const SparseConvParams& p, int64_t m0, int64_t m1, float* part,
                     int64_t ldp) {
  const int64_t ldg = p.CoutPad, nvec = p.CoutPad / kWidth;
  for_block_pairs(p, m0, m1, [&](int64_t k, const int32_t* pin, const int32_t* pout,
                                 int64_t np) {
    for (int64_t v0 = 0; v0 < nvec; v0 += kMaxNV) {
      const int64_t col = v0 * kWidth;
      float* pk = part + k * p.Cin * ldp + col;
      const int nv = int(std::min<int64_t>(kMaxNV, nvec - v0));
      for (int64_t q = 0; q < np; ++q) {
        const float* gr = p.g + int64_t(pout[q]) * ldg + col;
        switch (nv) {
          case 1: skip_scatter<1>(p, pin[q], gr, pk, ldp); break;
#if !defined(SPIKEOPS_ISA_avx2)
          case 3: skip_scatter<3>(p, pin[q], gr, pk, ldp); break;
          case 4: skip_scatter<4>(p, pin[q], gr, pk, ldp); break;
#endif
          default: skip_scatter<2>(p, pin[q], gr, pk, ldp); break;
        }
      }
    }
  });
}

// Rows [r0, r1) of x [., C]: the number of non-zero entries (NaN counts) of each row into
// counts, and its non-zero lanes as bits into masks[i * ceil(C / 64) + w] (bit j of word w:
// channel 64 w + j), so that csr_fill need not compare again. Returns whether every
// non-zero entry of the range is exactly 1 (binary spikes).
bool csr_count(const float* x, int64_t C, int64_t r0, int64_t r1, int64_t* counts,
               uint64_t* masks) {
  const int64_t mw = (C + 63) / 64;
  bool binary = true;
#if defined(SPIKEOPS_ISA_avx512)
  __mmask16 not_one = 0;
  for (int64_t i = r0; i < r1; ++i) {
    const float* row = x + i * C;
    int64_t n = 0;
    for (int64_t w = 0; w < mw; ++w) {
      uint64_t bits = 0;
      for (int64_t j = 0, c0 = w * 64; j < 4 && c0 + 16 * j < C; ++j) {
        const int64_t c = c0 + 16 * j;
        const __mmask16 lanes =
            C - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(lanes, row + c);
        const __mmask16 nz = _mm512_mask_cmp_ps_mask(lanes, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        not_one |= _mm512_mask_cmp_ps_mask(nz, v, _mm512_set1_ps(1.f), _CMP_NEQ_UQ);
        bits |= uint64_t(nz) << (16 * j);
      }
      masks[i * mw + w] = bits;
      n += __builtin_popcountll(bits);
    }
    counts[i] = n;
  }
  binary = not_one == 0;
#else
  for (int64_t i = r0; i < r1; ++i) {
    const float* row = x + i * C;
    int64_t n = 0;
    for (int64_t w = 0; w < mw; ++w) {
      uint64_t bits = 0;
      for (int64_t c = w * 64; c < std::min(C, w * 64 + 64); ++c) {
        const bool nz = !(row[c] == 0.f);
        binary &= !nz || row[c] == 1.f;
        bits |= uint64_t(nz) << (c - w * 64);
      }
      masks[i * mw + w] = bits;
      n += __builtin_popcountll(bits);
    }
    counts[i] = n;
  }
#endif
  return binary;
}

// Writes the non-zero entries of rows [r0, r1) (channels ascending, from the masks of
// csr_count) at idx/val[ptr[i] ...], never outside [ptr[r0], ptr[r1]). Binary rows are
// written from the masks alone (values 1, x not read again).
void csr_fill(const float* x, int64_t C, int64_t r0, int64_t r1, const int64_t* ptr,
              const uint64_t* masks, bool binary, int32_t* idx, float* val) {
  const int64_t mw = (C + 63) / 64;
  for (int64_t i = r0; i < r1; ++i) {
    const float* row = x + i * C;
    int64_t q = ptr[i];
#if defined(SPIKEOPS_ISA_avx512)
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t w = 0; w < mw; ++w) {
      const uint64_t bits = masks[i * mw + w];
      for (int64_t j = 0, c0 = w * 64; j < 4 && c0 + 16 * j < C; ++j) {
        const int64_t c = c0 + 16 * j;
        const __mmask16 nz = __mmask16(bits >> (16 * j));
        // Masked stores of exactly the popcount lanes: a whole-vector store would spill
        // past the row's end into rows another thread is filling.
        const int cnt = __builtin_popcount(nz);
        const __mmask16 keep = __mmask16((1u << cnt) - 1u);
        const __m512i ch = _mm512_add_epi32(iota, _mm512_set1_epi32(int32_t(c)));
        _mm512_mask_storeu_epi32(idx + q, keep, _mm512_maskz_compress_epi32(nz, ch));
        const __m512 v = binary ? _mm512_set1_ps(1.f)
                                : _mm512_maskz_compress_ps(nz, _mm512_maskz_loadu_ps(nz, row + c));
        _mm512_mask_storeu_ps(val + q, keep, v);
        q += cnt;
      }
    }
#else
    for (int64_t w = 0; w < mw; ++w)  // writes only the row's own slots (threads fill
      for (uint64_t bits = masks[i * mw + w]; bits != 0; bits &= bits - 1) {  // rows
        const int64_t c = w * 64 + __builtin_ctzll(bits);                    // nearby)
        idx[q] = int32_t(c);
        val[q] = binary ? 1.f : row[c];
        ++q;
      }
#endif
  }
}

}  // namespace

void sparse_conv_rows(const SparseConvParams& p, int64_t m0, int64_t m1) { conv_rows(p, m0, m1); }
void sparse_conv_rows_skip(const SparseConvParams& p, int64_t m0, int64_t m1) {
  conv_rows_skip(p, m0, m1);
}
void sparse_conv_wgrad_rows(const SparseConvParams& p, int64_t m0, int64_t m1, float* part,
                            int64_t ldp) {
  wgrad_rows(p, m0, m1, part, ldp);
}
void sparse_conv_wgrad_rows_skip(const SparseConvParams& p, int64_t m0, int64_t m1,
                                 float* part, int64_t ldp) {
  wgrad_rows_skip(p, m0, m1, part, ldp);
}
bool sparse_csr_count(const float* x, int64_t C, int64_t r0, int64_t r1, int64_t* counts,
                      uint64_t* masks) {
  return csr_count(x, C, r0, r1, counts, masks);
}
void sparse_csr_fill(const float* x, int64_t C, int64_t r0, int64_t r1, const int64_t* ptr,
                     const uint64_t* masks, bool binary, int32_t* idx, float* val) {
  csr_fill(x, C, r0, r1, ptr, masks, binary, idx, val);
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
