// A small float-vector type for the per-ISA kernel files. Exactly one of
// SPIKEOPS_ISA_scalar / _avx2 / _avx512 is defined by the build; the kernels are
// written once against `VecF` and compiled three times.
//
// Everything here is IEEE single precision without contraction; `exp` is a
// Cephes-style polynomial (about 1 ulp) used only in surrogate gradients.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(SPIKEOPS_ISA_avx2) || defined(SPIKEOPS_ISA_avx512)
#include <immintrin.h>
#endif

#include "common/neuron_params.h"

// Every helper must inline into the kernel loops (a call per vector costs more
// than the arithmetic); GCC otherwise declines for the larger ones such as vexp.
#define SPIKEOPS_INLINE inline __attribute__((always_inline))

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {

// ---- scalar conversions shared by every ISA (tails, scalar build) -------------
SPIKEOPS_INLINE float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
SPIKEOPS_INLINE uint16_t f32_to_bf16(float f) {  // round to nearest even, quiet NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
SPIKEOPS_INLINE float f16_to_f32(uint16_t h) { _Float16 v; std::memcpy(&v, &h, 2); return float(v); }
SPIKEOPS_INLINE uint16_t f32_to_f16(float f) { _Float16 v = _Float16(f); uint16_t h; std::memcpy(&h, &v, 2); return h; }

#if defined(SPIKEOPS_ISA_avx512)
constexpr int kWidth = 16;
struct VecF {
  __m512 v;
  VecF() = default;
  VecF(__m512 x) : v(x) {}
  explicit VecF(float x) : v(_mm512_set1_ps(x)) {}
};
struct MaskF { __mmask16 m; };
SPIKEOPS_INLINE VecF operator+(VecF a, VecF b) { return _mm512_add_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator-(VecF a, VecF b) { return _mm512_sub_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator*(VecF a, VecF b) { return _mm512_mul_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator/(VecF a, VecF b) { return _mm512_div_ps(a.v, b.v); }
SPIKEOPS_INLINE MaskF ge(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ)}; }
SPIKEOPS_INLINE MaskF le(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
SPIKEOPS_INLINE MaskF lt(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
SPIKEOPS_INLINE MaskF operator&(MaskF a, MaskF b) { return {__mmask16(a.m & b.m)}; }
SPIKEOPS_INLINE VecF select(MaskF m, VecF a, VecF b) { return _mm512_mask_blend_ps(m.m, b.v, a.v); }
SPIKEOPS_INLINE VecF vmin(VecF a, VecF b) { return _mm512_min_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF vmax(VecF a, VecF b) { return _mm512_max_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF vabs(VecF a) { return _mm512_abs_ps(a.v); }
SPIKEOPS_INLINE VecF vrint(VecF a) { return _mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SPIKEOPS_INLINE VecF vfloor(VecF a) { return _mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
SPIKEOPS_INLINE VecF loadu(const float* p) { return _mm512_loadu_ps(p); }
SPIKEOPS_INLINE void storeu(float* p, VecF a) { _mm512_storeu_ps(p, a.v); }
SPIKEOPS_INLINE VecF load_bf16(const uint16_t* p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
SPIKEOPS_INLINE void store_bf16(uint16_t* p, VecF a) {
  __m512i u = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}
// Non-temporal store of a full vector to a 64-byte aligned address: no
// read-for-ownership of the destination line.
SPIKEOPS_INLINE void stream_f32(float* p, VecF a) { _mm512_stream_ps(p, a.v); }
SPIKEOPS_INLINE VecF load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
SPIKEOPS_INLINE void store_f16(uint16_t* p, VecF a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
// a * b + c, fused where the ISA has FMA. Only gradient code uses it: the forward
// must round every operation separately to match PyTorch bit for bit.
SPIKEOPS_INLINE VecF vfma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
SPIKEOPS_INLINE VecF vexp2i(VecF n) {  // 2^n for integral n in [-126, 127]
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23);
  return _mm512_castsi512_ps(e);
}
#elif defined(SPIKEOPS_ISA_avx2)
constexpr int kWidth = 8;
struct VecF {
  __m256 v;
  VecF() = default;
  VecF(__m256 x) : v(x) {}
  explicit VecF(float x) : v(_mm256_set1_ps(x)) {}
};
struct MaskF { __m256 m; };
SPIKEOPS_INLINE VecF operator+(VecF a, VecF b) { return _mm256_add_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator-(VecF a, VecF b) { return _mm256_sub_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator*(VecF a, VecF b) { return _mm256_mul_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF operator/(VecF a, VecF b) { return _mm256_div_ps(a.v, b.v); }
SPIKEOPS_INLINE MaskF ge(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ)}; }
SPIKEOPS_INLINE MaskF le(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
SPIKEOPS_INLINE MaskF lt(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
SPIKEOPS_INLINE MaskF operator&(MaskF a, MaskF b) { return {_mm256_and_ps(a.m, b.m)}; }
SPIKEOPS_INLINE VecF select(MaskF m, VecF a, VecF b) { return _mm256_blendv_ps(b.v, a.v, m.m); }
SPIKEOPS_INLINE VecF vmin(VecF a, VecF b) { return _mm256_min_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF vmax(VecF a, VecF b) { return _mm256_max_ps(a.v, b.v); }
SPIKEOPS_INLINE VecF vabs(VecF a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a.v); }
SPIKEOPS_INLINE VecF vrint(VecF a) { return _mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SPIKEOPS_INLINE VecF vfloor(VecF a) { return _mm256_round_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
SPIKEOPS_INLINE VecF loadu(const float* p) { return _mm256_loadu_ps(p); }
SPIKEOPS_INLINE void storeu(float* p, VecF a) { _mm256_storeu_ps(p, a.v); }
SPIKEOPS_INLINE VecF load_bf16(const uint16_t* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
SPIKEOPS_INLINE void store_bf16(uint16_t* p, VecF a) {
  __m256i u = _mm256_castps_si256(a.v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  __m256 nan = _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q);
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(qnan), nan));
  // Values are < 2^16, so the signed->unsigned saturating pack is exact.
  __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
SPIKEOPS_INLINE void stream_f32(float* p, VecF a) { _mm256_stream_ps(p, a.v); }
SPIKEOPS_INLINE VecF load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SPIKEOPS_INLINE void store_f16(uint16_t* p, VecF a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
SPIKEOPS_INLINE VecF vfma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
SPIKEOPS_INLINE VecF vexp2i(VecF n) {
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
  return _mm256_castsi256_ps(e);
}
#else  // scalar
constexpr int kWidth = 1;
struct VecF {
  float v;
  VecF() = default;
  explicit VecF(float x) : v(x) {}
};
struct MaskF { bool m; };
SPIKEOPS_INLINE VecF operator+(VecF a, VecF b) { return VecF(a.v + b.v); }
SPIKEOPS_INLINE VecF operator-(VecF a, VecF b) { return VecF(a.v - b.v); }
SPIKEOPS_INLINE VecF operator*(VecF a, VecF b) { return VecF(a.v * b.v); }
SPIKEOPS_INLINE VecF operator/(VecF a, VecF b) { return VecF(a.v / b.v); }
SPIKEOPS_INLINE MaskF ge(VecF a, VecF b) { return {a.v >= b.v}; }
SPIKEOPS_INLINE MaskF le(VecF a, VecF b) { return {a.v <= b.v}; }
SPIKEOPS_INLINE MaskF lt(VecF a, VecF b) { return {a.v < b.v}; }
SPIKEOPS_INLINE MaskF operator&(MaskF a, MaskF b) { return {a.m && b.m}; }
SPIKEOPS_INLINE VecF select(MaskF m, VecF a, VecF b) { return m.m ? a : b; }
// min/max with x86 semantics (second operand when unordered), like minps/maxps.
SPIKEOPS_INLINE VecF vmin(VecF a, VecF b) { return VecF(a.v < b.v ? a.v : b.v); }
SPIKEOPS_INLINE VecF vmax(VecF a, VecF b) { return VecF(a.v > b.v ? a.v : b.v); }
SPIKEOPS_INLINE VecF vabs(VecF a) { return VecF(std::fabs(a.v)); }
SPIKEOPS_INLINE VecF vrint(VecF a) { return VecF(std::nearbyint(a.v)); }
SPIKEOPS_INLINE VecF vfloor(VecF a) { return VecF(std::floor(a.v)); }
SPIKEOPS_INLINE VecF loadu(const float* p) { return VecF(*p); }
SPIKEOPS_INLINE void storeu(float* p, VecF a) { *p = a.v; }
SPIKEOPS_INLINE VecF load_bf16(const uint16_t* p) { return VecF(bf16_to_f32(*p)); }
SPIKEOPS_INLINE void store_bf16(uint16_t* p, VecF a) { *p = f32_to_bf16(a.v); }
SPIKEOPS_INLINE VecF load_f16(const uint16_t* p) { return VecF(f16_to_f32(*p)); }
SPIKEOPS_INLINE void store_f16(uint16_t* p, VecF a) { *p = f32_to_f16(a.v); }
SPIKEOPS_INLINE VecF vfma(VecF a, VecF b, VecF c) { return VecF(a.v * b.v + c.v); }  // no FMA unit assumed
SPIKEOPS_INLINE VecF vexp2i(VecF n) {  // NaN n: any finite scale, the polynomial is NaN
  return VecF(std::ldexp(1.f, std::isnan(n.v) ? 0 : int(n.v)));
}
#endif


// exp(x): range reduction x = n ln2 + r, degree-5 polynomial on r, times 2^n.
// Inputs are clamped so 2^n stays a normal number; the clamped ends are far outside
// where surrogate gradients matter (they are ~1e-38 there either way). NaN stays NaN.
SPIKEOPS_INLINE VecF vexp(VecF x) {
  // min/max return their second operand for NaN: keep x second so NaN propagates.
  x = vmin(VecF(88.0f), vmax(VecF(-87.0f), x));
  VecF n = vrint(x * VecF(1.44269504088896341f));
  VecF r = vfma(n, VecF(-0.693359375f), x);
  r = vfma(n, VecF(2.12194440e-4f), r);
  VecF p(1.9875691500e-4f);
  p = vfma(p, r, VecF(1.3981999507e-3f));
  p = vfma(p, r, VecF(8.3334519073e-3f));
  p = vfma(p, r, VecF(4.1665795894e-2f));
  p = vfma(p, r, VecF(1.6666665459e-1f));
  p = vfma(p, r, VecF(5.0000001201e-1f));
  p = vfma(p, r * r, r) + VecF(1.f);
  return p * vexp2i(n);
}

// ---- typed loads/stores of the [T, N] tensors; `n < kWidth` for tails ----------
SPIKEOPS_INLINE VecF load(const void* base, int64_t i, DType dt) {
  switch (dt) {
    case DType::kFloat32: return loadu(static_cast<const float*>(base) + i);
    case DType::kBFloat16: return load_bf16(static_cast<const uint16_t*>(base) + i);
    default: return load_f16(static_cast<const uint16_t*>(base) + i);
  }
}
SPIKEOPS_INLINE void store(void* base, int64_t i, DType dt, VecF a) {
  switch (dt) {
    case DType::kFloat32: storeu(static_cast<float*>(base) + i, a); break;
    case DType::kBFloat16: store_bf16(static_cast<uint16_t*>(base) + i, a); break;
    default: store_f16(static_cast<uint16_t*>(base) + i, a); break;
  }
}
SPIKEOPS_INLINE int64_t dtype_size(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }

// Partial vectors go through a zero-padded stack buffer: only tails use them.
SPIKEOPS_INLINE VecF load_partial(const void* base, int64_t i, DType dt, int n) {
  alignas(64) unsigned char buf[kWidth * 4] = {};
  const int64_t sz = dtype_size(dt);
  std::memcpy(buf, static_cast<const unsigned char*>(base) + i * sz, size_t(n * sz));
  return load(buf, 0, dt);
}
SPIKEOPS_INLINE void store_partial(void* base, int64_t i, DType dt, VecF a, int n) {
  alignas(64) unsigned char buf[kWidth * 4];
  store(buf, 0, dt, a);
  const int64_t sz = dtype_size(dt);
  std::memcpy(static_cast<unsigned char*>(base) + i * sz, buf, size_t(n * sz));
}
SPIKEOPS_INLINE VecF load_f32(const float* p, int n) {
  return n == kWidth ? loadu(p) : load_partial(p, 0, DType::kFloat32, n);
}
SPIKEOPS_INLINE void store_f32(float* p, VecF a, int n) {
  if (n == kWidth) storeu(p, a); else store_partial(p, 0, DType::kFloat32, a, n);
}
SPIKEOPS_INLINE VecF load_any(const void* base, int64_t i, DType dt, int n) {
  return n == kWidth ? load(base, i, dt) : load_partial(base, i, dt, n);
}
SPIKEOPS_INLINE void store_any(void* base, int64_t i, DType dt, VecF a, int n) {
  if (n == kWidth) store(base, i, dt, a); else store_partial(base, i, dt, a, n);
}

// Full-vector store that bypasses the caches when `stream` (the caller checked the
// alignment): for outputs far larger than the caches, which nothing reads back soon.
SPIKEOPS_INLINE void store_out(void* base, int64_t i, DType dt, VecF a, int n, bool stream) {
#if defined(SPIKEOPS_ISA_avx512) || defined(SPIKEOPS_ISA_avx2)
  if (stream && n == kWidth && dt == DType::kFloat32) {
    stream_f32(static_cast<float*>(base) + i, a);
    return;
  }
#endif
  (void)stream;
  store_any(base, i, dt, a, n);
}

SPIKEOPS_INLINE void stream_fence() {
#if defined(SPIKEOPS_ISA_avx512) || defined(SPIKEOPS_ISA_avx2)
  _mm_sfence();
#endif
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
