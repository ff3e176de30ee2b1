// Spiking self-attention (SSA) on bit-packed binary inputs, compiled once per ISA
// (scalar, AVX2, AVX-512).
//
// Math: out[n, e] = scale * sum_d q[n, d] * KV[d, e],  KV[d, e] = sum_t k[t, d] v[t, e]
// for one head, q, k [N, D], v [N, Dv], every entry exactly 0 or 1. KV[d, e] is the
// number of tokens where both k[., d] and v[., e] fire, so k and v are packed column-wise
// into bitsets over the N tokens (uint64 words) and KV[d, e] = popcount(kbits[d] &
// vbits[e]) summed over ceil(N / 64) words: exact integers. The output row of token n is
// then the sum of the KV rows that q[n] selects (its set bits), accumulated in fp32 over
// Dv with VecF — exact, since every partial sum is an integer <= N < 2^24 — and scaled
// once: out = fl(count * scale), the correctly rounded result. "qk_first" ((q k^T) v) is
// the same sum of the same integers, so it returns identical bits through this path.
//
// Packing: each row's 0/1 test yields lane masks (compare with 1 and with 0); values that
// are neither make the call fail (the glue names the tensor). Row masks of 64 tokens are
// turned into column words by a 64 x 64 bit transpose.
//
// Memory traffic: q, k, v read once (fp32/bf16/fp16), out written once; scratch per task
// is O((D + Dv) * N / 64) words plus the KV table [D, Dv] in fp32 (thread-local, reused).
// Work per head: D * Dv * N / 64 popcounts + (ones of q) * Dv adds.
// Measured (ssa_binary_fp32, 256 heads x 196 x 64, 25% spikes, 2 threads, AVX-512 with
// VPOPCNTDQ, Zen-class EPYC VM): 1.08-1.10 ms vs 6.1-6.2 ms for the reference's float
// matmuls (5.5-5.6x; 1.47 ms before the mask-register packing, uint16 row sums, direct
// stores and VPOPCNTQ). It is compute-bound: a head takes the same time in L2 as
// streamed from memory.
// Parallelisation (csrc/cpu/attention.cpp): tasks are (head, token block); a task packs
// its head's k and v, builds KV and writes only its own output rows: no atomics, results
// independent of the thread count. Nothing is saved for backward (it uses torch matmuls).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/attention_params.h"
#include "cpu/kernels/simd.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

constexpr int kAccVecs = 4;                    // accumulators per output chunk
constexpr int64_t kChunk = kAccVecs * kWidth;  // output columns per chunk

// Lanes of `a` equal to 1 and equal to +-0 (NaN is neither). Zero is tested on the bits,
// so subnormals are not zeros even with denormals-are-zero on (as in the 64-column packers).
SPIKEOPS_INLINE void lane_masks(VecF a, uint32_t& ones, uint32_t& zeros) {
#if defined(SPIKEOPS_ISA_avx512)
  ones = _mm512_cmp_ps_mask(a.v, _mm512_set1_ps(1.f), _CMP_EQ_OQ);
  zeros = _mm512_testn_epi32_mask(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7fffffff));
#elif defined(SPIKEOPS_ISA_avx2)
  ones = uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(a.v, _mm256_set1_ps(1.f), _CMP_EQ_OQ)));
  const __m256i mag = _mm256_and_si256(_mm256_castps_si256(a.v), _mm256_set1_epi32(0x7fffffff));
  zeros = uint32_t(_mm256_movemask_ps(
      _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_setzero_si256()))));
#else
  uint32_t u;
  std::memcpy(&u, &a.v, 4);
  ones = a.v == 1.f;
  zeros = (u & 0x7fffffffu) == 0;
#endif
}

// Bits of one row x[off .. off + cols) (bit c of words[c / 64] set iff x = 1); ORs into
// `bad` a nonzero value if some entry is neither 0 nor 1. Templated on the dtype so the
// full vectors of the common case run without a dtype switch or tail test.
template <DType DT>
SPIKEOPS_INLINE void row_bits(const void* base, int64_t off, int64_t cols, uint64_t* words,
                              uint32_t& bad) {
  int64_t c0 = 0;
#if defined(SPIKEOPS_ISA_avx512)
  // Whole 64-column words: the ones come from one compare per 16 (fp32) or 32 lanes,
  // merged in mask registers; lanes that are not 1 must be +-0, so their bits without the
  // sign are OR-ed into a vector tested once per row (a third of the instructions of the
  // generic loop, which moves two masks per vector through general registers).
  if (DT == DType::kFloat32 && cols >= 64) {
    const float* x = static_cast<const float*>(base) + off;
    const __m512 one = _mm512_set1_ps(1.f);
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i stray = _mm512_setzero_si512();
    for (; c0 + 64 <= cols; c0 += 64) {
      __mmask16 m[4];
      for (int j = 0; j < 4; ++j) {
        const __m512 a = _mm512_loadu_ps(x + c0 + 16 * j);
        m[j] = _mm512_cmp_ps_mask(a, one, _CMP_NEQ_UQ);  // NaN counts as "not one"
        // stray |= a & 0x7fffffff where a != 1 (imm 0xF8: A | (B & C))
        stray = _mm512_mask_ternarylogic_epi32(stray, m[j], _mm512_castps_si512(a),
                                               magnitude, 0xF8);
      }
      const __mmask64 not_ones = _mm512_kunpackd(
          __mmask64(_mm512_kunpackw(m[3], m[2])), __mmask64(_mm512_kunpackw(m[1], m[0])));
      words[c0 / 64] = ~_cvtmask64_u64(not_ones);
    }
    bad |= uint32_t(_mm512_test_epi32_mask(stray, stray));
  } else if (DT != DType::kFloat32 && cols >= 64) {
    // bf16 / fp16 the same way on the 16-bit patterns: 1 is exactly 0x3F80 / 0x3C00, and
    // a lane that is not must be +-0 (NaN and -1 have other bits set besides the sign).
    const auto* x = static_cast<const uint16_t*>(base) + off;
    const __m512i one = _mm512_set1_epi16(DT == DType::kBFloat16 ? 0x3F80 : 0x3C00);
    const __m512i magnitude = _mm512_set1_epi16(0x7fff);
    __m512i stray = _mm512_setzero_si512();
    for (; c0 + 64 <= cols; c0 += 64) {
      __mmask32 m[2];
      for (int j = 0; j < 2; ++j) {
        const __m512i a = _mm512_loadu_si512(x + c0 + 32 * j);
        m[j] = _mm512_cmpneq_epi16_mask(a, one);
        stray = _mm512_or_si512(stray, _mm512_and_si512(_mm512_maskz_mov_epi16(m[j], a),
                                                        magnitude));
      }
      words[c0 / 64] = ~_cvtmask64_u64(_mm512_kunpackd(__mmask64(m[1]), __mmask64(m[0])));
    }
    bad |= uint32_t(_mm512_test_epi32_mask(stray, stray));
  }
#endif
  for (; c0 < cols; c0 += 64) {
    const int64_t c1 = std::min(cols, c0 + 64);
    uint64_t bits = 0;
    int64_t c = c0;
    for (; c + kWidth <= c1; c += kWidth) {
      uint32_t ones, zeros;
      lane_masks(load(base, off + c, DT), ones, zeros);
      bad |= ~(ones | zeros) & ((1u << kWidth) - 1u);
      bits |= uint64_t(ones) << (c - c0);
    }
    if (c < c1) {  // tail: padded lanes load as 0
      const int n = int(c1 - c);
      uint32_t ones, zeros;
      lane_masks(load_partial(base, off + c, DT, n), ones, zeros);
      const uint32_t lanes = (1u << n) - 1u;  // n < kWidth <= 16
      bad |= ~(ones | zeros) & lanes;
      bits |= uint64_t(ones & lanes) << (c - c0);
    }
    words[c0 / 64] = bits;
  }
}

// In-place transpose of a 64 x 64 bit matrix (bit j of a[i] <-> bit i of a[j]): swap the
// off-diagonal blocks of every 2j x 2j block, for j = 32, 16, ..., 1.
#if defined(SPIKEOPS_ISA_avx512)
// Eight registers of eight rows: levels 32, 16, 8 swap between registers, levels 4, 2, 1
// between lanes of one register (partner lane via vpermq).
template <int J>
SPIKEOPS_INLINE void swap_regs(__m512i& a, __m512i& b, uint64_t m) {
  const __m512i t = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi64(a, J), b),
                                     _mm512_set1_epi64(int64_t(m)));
  a = _mm512_xor_si512(a, _mm512_slli_epi64(t, J));
  b = _mm512_xor_si512(b, t);
}
template <int J>
SPIKEOPS_INLINE void swap_lanes(__m512i& a, uint64_t m, __mmask8 high) {
  const __m512i idx = _mm512_xor_si512(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
                                       _mm512_set1_epi64(J));
  const __m512i mm = _mm512_set1_epi64(int64_t(m));
  const __m512i p = _mm512_permutexvar_epi64(idx, a);
  const __m512i tl = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi64(a, J), p), mm);
  const __m512i th = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi64(p, J), a), mm);
  a = _mm512_xor_si512(a, _mm512_mask_blend_epi64(high, _mm512_slli_epi64(tl, J), th));
}
void transpose64(uint64_t a[64]) {
  __m512i r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_si512(a + 8 * i);
  for (int i = 0; i < 4; ++i) swap_regs<32>(r[i], r[i + 4], 0x00000000FFFFFFFFull);
  for (int i : {0, 1, 4, 5}) swap_regs<16>(r[i], r[i + 2], 0x0000FFFF0000FFFFull);
  for (int i : {0, 2, 4, 6}) swap_regs<8>(r[i], r[i + 1], 0x00FF00FF00FF00FFull);
  for (int i = 0; i < 8; ++i) {
    swap_lanes<4>(r[i], 0x0F0F0F0F0F0F0F0Full, 0xF0);
    swap_lanes<2>(r[i], 0x3333333333333333ull, 0xCC);
    swap_lanes<1>(r[i], 0x5555555555555555ull, 0xAA);
  }
  for (int i = 0; i < 8; ++i) _mm512_storeu_si512(a + 8 * i, r[i]);
}
#else
void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= (m << j)) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}
#endif

// Packs x [N, C] column-wise: bits[c * cs + w * ws] bit i set iff x[64 w + i, c] = 1.
// rows: scratch of 64 * ceil(C / 64) words. False if some entry is neither 0 nor 1.
template <DType DT>
bool pack_columns(const void* base, int64_t N, int64_t C, int64_t wn, uint64_t* bits,
                  int64_t cs, int64_t ws, uint64_t* rows) {
  const int64_t wc = (C + 63) / 64;
  uint32_t bad = 0;
  for (int64_t b = 0; b < wn; ++b) {
    const int64_t n0 = b * 64, nn = std::min<int64_t>(64, N - n0);
    for (int64_t i = 0; i < nn; ++i) row_bits<DT>(base, (n0 + i) * C, C, rows + i * wc, bad);
    for (int64_t w = 0; w < wc; ++w) {
      uint64_t blk[64];
      for (int64_t i = 0; i < 64; ++i) blk[i] = i < nn ? rows[i * wc + w] : 0;
      transpose64(blk);
      const int64_t nc = std::min<int64_t>(64, C - w * 64);
      for (int64_t j = 0; j < nc; ++j) bits[(w * 64 + j) * cs + b * ws] = blk[j];
    }
  }
  return bad == 0;
}

// ---- KV[d, e] = sum_w popcount(kbits[d][w] & vbits[w][e]) ------------------------------
// v's bits are word-major (vbits[w * dvw + e], dvw = Dv rounded up to kPairs, padded
// columns zero) so kPairs consecutive e share one broadcast k word. The vector ISAs count
// bits per byte with a nibble table (vpshufb), sum bytes over several words (AVX2: up to
// 31, <= 248 fits a byte; AVX-512: 4), then over the bytes of each 64-bit lane (vpsadbw):
// exact counts.
#if defined(SPIKEOPS_ISA_avx512)
constexpr int64_t kPairs = 8;
// KV entries out[0..8) (= or +=, by `first`) the eight 64-bit counts, as T.
template <typename T>
SPIKEOPS_INLINE void add_counts(T* out, __m512i counts, bool first) {
  if constexpr (std::is_same_v<T, float>) {
    const __m256 c = _mm512_cvtepi64_ps(counts);
    _mm256_storeu_ps(out, first ? c : _mm256_add_ps(_mm256_loadu_ps(out), c));
  } else {
    const __m128i c = _mm512_cvtepi64_epi16(counts);
    auto* o = reinterpret_cast<__m128i*>(out);
    _mm_storeu_si128(o, first ? c : _mm_add_epi16(_mm_loadu_si128(o), c));
  }
}

// The whole table at once: for each group of up to 4 words and each block of 8 columns
// e, v's nibbles stay in 8 registers while every k row d streams past (its words split
// into nibbles once), so each (d, e-block, word) costs 2 and + 2 vpshufb + 2 adds; the
// group's counts (<= 4 * 64) are added to KV (exact: integers in fp32).
// T is float, or uint16_t for the integer row sums (the caller checks that they fit).
template <typename T>
void kv_table(const uint64_t* kbits, int64_t D, const uint64_t* vb, int64_t wn, int64_t dvw,
              T* kv, int64_t dvp, std::vector<uint64_t>& knib) {
  const __m512i lut = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i zero = _mm512_setzero_si512();
  constexpr uint64_t kLow = 0x0f0f0f0f0f0f0f0full;
  knib.resize(size_t(2 * D * 4));
  for (int64_t w0 = 0; w0 < wn; w0 += 4) {
    const int nw = int(std::min<int64_t>(4, wn - w0));
    for (int64_t d = 0; d < D; ++d)
      for (int j = 0; j < 4; ++j) {
        const uint64_t x = j < nw ? kbits[d * wn + w0 + j] : 0;
        knib[size_t(d * 8 + j)] = x & kLow;
        knib[size_t(d * 8 + 4 + j)] = (x >> 4) & kLow;
      }
    for (int64_t e = 0; e < dvw; e += kPairs) {
      __m512i vlo[4], vhi[4];
      for (int j = 0; j < 4; ++j) {
        const __m512i x = j < nw ? _mm512_loadu_si512(vb + (w0 + j) * dvw + e) : zero;
        vlo[j] = _mm512_and_si512(x, low);
        vhi[j] = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
      }
      for (int64_t d = 0; d < D; ++d) {
        const uint64_t* kn = knib.data() + d * 8;
        __m512i bytes = zero;
        for (int j = 0; j < 4; ++j) {
          bytes = _mm512_add_epi8(bytes, _mm512_shuffle_epi8(
              lut, _mm512_and_si512(_mm512_set1_epi64(int64_t(kn[j])), vlo[j])));
          bytes = _mm512_add_epi8(bytes, _mm512_shuffle_epi8(
              lut, _mm512_and_si512(_mm512_set1_epi64(int64_t(kn[4 + j])), vhi[j])));
        }
        add_counts(kv + d * dvp + e, _mm512_sad_epu8(bytes, zero), w0 == 0);
      }
    }
  }
}

// The same table with VPOPCNTQ (AVX512_VPOPCNTDQ, checked at run time): one and + one
// popcount + one add per (d, 8 columns, word) instead of the nibble lookups. Counts per
// 64-bit lane are exact for any N.
template <typename T>
__attribute__((target("avx512vpopcntdq"))) void kv_table_vpopcnt(
    const uint64_t* kbits, int64_t D, const uint64_t* vb, int64_t wn, int64_t dvw, T* kv,
    int64_t dvp) {
  constexpr int kWords = 8;  // v words held in registers while the k rows stream past
  for (int64_t e = 0; e < dvw; e += kPairs) {
    for (int64_t w0 = 0; w0 < wn; w0 += kWords) {
      const int nw = int(std::min<int64_t>(kWords, wn - w0));
      __m512i vw[kWords];
      for (int j = 0; j < kWords; ++j)
        vw[j] = j < nw ? _mm512_loadu_si512(vb + (w0 + j) * dvw + e) : _mm512_setzero_si512();
      for (int64_t d = 0; d < D; ++d) {
        const uint64_t* kd = kbits + d * wn + w0;
        __m512i counts = _mm512_setzero_si512();
        for (int j = 0; j < kWords; ++j) {
          if (j >= nw) break;
          counts = _mm512_add_epi64(counts, _mm512_popcnt_epi64(_mm512_and_si512(
                                                _mm512_set1_epi64(int64_t(kd[j])), vw[j])));
        }
        add_counts(kv + d * dvp + e, counts, w0 == 0);
      }
    }
  }
}

// VPOPCNTQ where the CPU has it, unless SPIKEOPS_SSA_NO_VPOPCNT is set (read once; the
// tests use it to run the nibble-table path on CPUs that have the instruction).
bool use_vpopcnt() {
  static const bool use = [] {
    const char* off = std::getenv("SPIKEOPS_SSA_NO_VPOPCNT");
    return __builtin_cpu_supports("avx512vpopcntdq") && (off == nullptr || *off == '\0');
  }();
  return use;
}

template <typename T>
void kv_table_best(const uint64_t* kbits, int64_t D, const uint64_t* vb, int64_t wn,
                   int64_t dvw, T* kv, int64_t dvp, std::vector<uint64_t>& knib) {
  if (use_vpopcnt())
    kv_table_vpopcnt(kbits, D, vb, wn, dvw, kv, dvp);
  else
    kv_table(kbits, D, vb, wn, dvw, kv, dvp, knib);
}
#elif defined(SPIKEOPS_ISA_avx2)
constexpr int64_t kPairs = 4;
SPIKEOPS_INLINE __m256i popcnt_bytes(__m256i x) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(x, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}
void kv_row(const uint64_t* kb, const uint64_t* vb, int64_t wn, int64_t dvw, float* out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i lows = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  for (int64_t e = 0; e < dvw; e += kPairs) {
    __m256i total = zero;
    for (int64_t w0 = 0; w0 < wn; w0 += 31) {
      __m256i bytes = zero;
      for (int64_t w = w0, w1 = std::min(wn, w0 + 31); w < w1; ++w) {
        const __m256i x = _mm256_and_si256(
            _mm256_set1_epi64x(int64_t(kb[w])),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vb + w * dvw + e)));
        bytes = _mm256_add_epi8(bytes, popcnt_bytes(x));
      }
      total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes, zero));
    }
    // counts < 2^31 sit in the low 32 bits of each 64-bit lane
    const __m256i c32 = _mm256_permutevar8x32_epi32(total, lows);
    _mm_storeu_ps(out + e, _mm_cvtepi32_ps(_mm256_castsi256_si128(c32)));
  }
}
#else
constexpr int64_t kPairs = 1;
void kv_row(const uint64_t* kb, const uint64_t* vb, int64_t wn, int64_t dvw, float* out) {
  for (int64_t e = 0; e < dvw; ++e) {
    int64_t c = 0;
    for (int64_t w = 0; w < wn; ++w) c += __builtin_popcountll(kb[w] & vb[w * dvw + e]);
    out[e] = float(c);
  }
}
#endif

struct Scratch {
  std::vector<uint64_t> kbits, vbits, rows, qrow, knib;
  std::vector<float> kv;
  std::vector<uint16_t> kv16;
};

}  // namespace

namespace {

// x -> the dtype -> fp32: the value an unfused ssa would have stored.
template <DType DT>
SPIKEOPS_INLINE VecF round_to_dtype(VecF x) {
  if constexpr (DT == DType::kFloat32) {
    return x;
  } else {
    alignas(64) uint16_t buf[kWidth];
    store(buf, 0, DT, x);
    return load(buf, 0, DT);
  }
}

// Writes rows [n0, n1) of head g to p.out in the dtype. With `lif_v` (the fused attention
// LIF, p.lif): the rows, rounded to the dtype, charge the membrane potentials
// lif_v[(n - n0) * Dv + e] (fp32, carried over the T heads of one position by the caller)
// and the spikes are written instead, with the ops of spikeops.ref.neurons.lif
// (decay_input, hard reset) in the same order, so they match the unfused pipeline.
template <DType DT>
int head_rows(const SSAParams& p, int64_t g, int64_t n0, int64_t n1, float* lif_v) {
  thread_local Scratch s;
  const int64_t N = p.N, D = p.D, Dv = p.Dv;
  const int64_t wn = (N + 63) / 64, wd = (D + 63) / 64;
  const int64_t dvp = (Dv + kChunk - 1) / kChunk * kChunk;  // KV row stride, zero-padded
  const int64_t dvw = (Dv + kPairs - 1) / kPairs * kPairs;   // vbits row stride (<= dvp)
  const int64_t es = dtype_size(p.dtype);
  s.kbits.resize(size_t(std::max<int64_t>(1, D * wn)));
  s.vbits.assign(size_t(std::max<int64_t>(1, wn * dvw)), 0);
  s.rows.resize(size_t(64 * std::max(wd, (Dv + 63) / 64) + 1));
  s.qrow.resize(size_t(wd + 1));

  const auto* kh = static_cast<const unsigned char*>(p.k) + g * N * D * es;
  const auto* vh = static_cast<const unsigned char*>(p.v) + g * N * Dv * es;
  const auto* qh = static_cast<const unsigned char*>(p.q) + g * N * D * es;
  auto* oh = static_cast<unsigned char*>(p.out) + g * N * Dv * es;

  // Every input this task reads is checked completely, so the caller can report the
  // lowest-numbered bad tensor deterministically.
  int status = kSsaOk;
  if (!pack_columns<DT>(kh, N, D, wn, s.kbits.data(), wn, 1, s.rows.data()))
    status = kSsaBadK;
  if (!pack_columns<DT>(vh, N, Dv, wn, s.vbits.data(), 1, dvw, s.rows.data()) && !status)
    status = kSsaBadV;

  // KV[d, e] = |k[., d] AND v[., e]| (exact counts, stored as fp32).
#if defined(SPIKEOPS_ISA_avx512)
  // A row sum is at most N * (ones of q[n]) <= N * D: when that fits 16 bits, KV is kept
  // as uint16 and a row costs 2 integer adds per set bit (1-cycle latency) instead of 4
  // fp32 adds (the latency chain through the accumulators bounded the fp32 loop).
  const bool u16 = N * D <= 65535;
  if (u16) {
    s.kv16.assign(size_t(std::max<int64_t>(1, D * dvp)), 0);
    kv_table_best(s.kbits.data(), D, s.vbits.data(), wn, dvw, s.kv16.data(), dvp, s.knib);
  } else {
    s.kv.assign(size_t(std::max<int64_t>(1, D * dvp)), 0.f);
    kv_table_best(s.kbits.data(), D, s.vbits.data(), wn, dvw, s.kv.data(), dvp, s.knib);
  }
  const uint16_t* kv16 = s.kv16.data();
#else
  s.kv.assign(size_t(std::max<int64_t>(1, D * dvp)), 0.f);
  for (int64_t d = 0; d < D; ++d)
    kv_row(s.kbits.data() + d * wn, s.vbits.data(), wn, dvw, s.kv.data() + d * dvp);
#endif

  uint32_t q_bad = 0;
  const VecF scale(p.scale);
  const VecF tau(p.tau), v_threshold(p.v_threshold), v_reset(p.v_reset);
  uint64_t* qrow = s.qrow.data();  // locals: keep thread_local lookups out of the row loop
  const float* kv = s.kv.data();
  // Tasks take consecutive heads, so while this head's rows are summed (compute-bound),
  // the next head's inputs are prefetched into L2, a row of each per token row here
  // (the inputs stream from memory once; without this ~30% of the time was load stalls).
  // With the fused LIF the next head of this task is the next time step's.
  const int64_t step = p.lif ? p.G / p.T : 1;
  const bool prefetch = n0 == 0 && n1 == N && g + step < p.G;
  const int64_t ahead = prefetch ? step : 0;  // no pointer past the tensors' end
  const auto* kn = kh + ahead * N * D * es;
  const auto* vn = vh + ahead * N * Dv * es;
  const auto* qn = qh + ahead * N * D * es;
  for (int64_t n = n0; n < n1; ++n) {
    if (prefetch) {
      for (int64_t b = 0; b < D * es; b += 64) {
        __builtin_prefetch(kn + n * D * es + b, 0, 2);
        __builtin_prefetch(qn + n * D * es + b, 0, 2);
      }
      for (int64_t b = 0; b < Dv * es; b += 64) __builtin_prefetch(vn + n * Dv * es + b, 0, 2);
    }
    row_bits<DT>(qh, n * D, D, qrow, q_bad);
    for (int64_t c = 0; c < Dv; c += kChunk) {
      VecF acc[kAccVecs];
#if defined(SPIKEOPS_ISA_avx512)
      static_assert(kChunk == 64, "the uint16 row sum fills 4 x 16 fp32 lanes");
      if (u16) {
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
        for (int64_t w = 0; w < wd; ++w) {
          const uint16_t* rows16 = kv16 + w * 64 * dvp + c;
          for (uint64_t bits = qrow[w]; bits != 0; bits &= bits - 1) {
            const uint16_t* r = rows16 + int64_t(__builtin_ctzll(bits)) * dvp;
            lo = _mm512_add_epi16(lo, _mm512_loadu_si512(r));
            hi = _mm512_add_epi16(hi, _mm512_loadu_si512(r + 32));
          }
        }
        const __m512i halves[2] = {lo, hi};
        for (int j = 0; j < kAccVecs; ++j) {
          const __m256i h = j % 2 == 0 ? _mm512_castsi512_si256(halves[j / 2])
                                       : _mm512_extracti64x4_epi64(halves[j / 2], 1);
          acc[j] = VecF(_mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(h)));
        }
      } else
#endif
      {
        for (int j = 0; j < kAccVecs; ++j) acc[j] = VecF(0.f);
        for (int64_t w = 0; w < wd; ++w) {
          for (uint64_t bits = qrow[w]; bits != 0; bits &= bits - 1) {
            const float* r = kv + (w * 64 + __builtin_ctzll(bits)) * dvp + c;
            for (int j = 0; j < kAccVecs; ++j) acc[j] = acc[j] + loadu(r + j * kWidth);
          }
        }
      }
#if defined(SPIKEOPS_ISA_avx512)
      // The common case, a whole chunk into the output: straight from the registers
      // (fp32 output is a third of the bytes this op moves, so aligned rows bypass the
      // cache: no read-for-ownership of lines the op overwrites whole).
      if (!lif_v && c + kChunk <= Dv) {
        if constexpr (DT == DType::kFloat32) {
          float* dst = reinterpret_cast<float*>(oh) + n * Dv + c;
          if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
            for (int j = 0; j < kAccVecs; ++j)
              _mm512_stream_ps(dst + j * kWidth, (acc[j] * scale).v);
          } else {
            for (int j = 0; j < kAccVecs; ++j) storeu(dst + j * kWidth, acc[j] * scale);
          }
        } else {
          for (int j = 0; j < kAccVecs; ++j) store(oh, n * Dv + c + j * kWidth, DT, acc[j] * scale);
        }
        continue;
      }
#endif
      for (int j = 0; j < kAccVecs; ++j) {
        const int64_t col = c + j * kWidth;
        if (col >= Dv) break;
        const int lanes = int(std::min<int64_t>(kWidth, Dv - col));
        if (lif_v) {
          float* vp = lif_v + (n - n0) * Dv + col;
          const VecF x = round_to_dtype<DT>(acc[j] * scale);
          const VecF v0 = load_f32(vp, lanes);
          const VecF h = p.v_reset != 0.f ? v0 + (x - (v0 - v_reset)) / tau
                                          : v0 + (x - v0) / tau;
          const VecF spike = select(ge(h - v_threshold, VecF(0.f)), VecF(1.f), VecF(0.f));
          store_f32(vp, (VecF(1.f) - spike) * h + spike * v_reset, lanes);
          store_any(oh, n * Dv + col, DT, spike, lanes);
          continue;
        }
#if defined(SPIKEOPS_ISA_avx512)
        float* dst = reinterpret_cast<float*>(oh) + n * Dv + col;
        if (DT == DType::kFloat32 && lanes == kWidth &&
            (reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
          _mm512_stream_ps(dst, (acc[j] * scale).v);
          continue;
        }
#endif
        store_any(oh, n * Dv + col, DT, acc[j] * scale, lanes);
      }
    }
  }
#if defined(SPIKEOPS_ISA_avx512)
  _mm_sfence();  // streaming stores are visible before the task ends
#endif
  if (q_bad) status = kSsaBadQ;  // q is reported first
  return status;
}

}  // namespace

int ssa_head_rows(const SSAParams& p, int64_t g, int64_t n0, int64_t n1, float* lif_v) {
  switch (p.dtype) {
    case DType::kFloat32: return head_rows<DType::kFloat32>(p, g, n0, n1, lif_v);
    case DType::kBFloat16: return head_rows<DType::kBFloat16>(p, g, n0, n1, lif_v);
    default: return head_rows<DType::kFloat16>(p, g, n0, n1, lif_v);
  }
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
