// Sliding-window causal softmax attention (SpikingBrain's SWA layers), flash-style tiles,
// compiled once per ISA (scalar, AVX2, AVX-512).
//
// Math, per (batch, head), query t, keys j with t - window < j <= t:
//   s[t, j] = scale * q[t] . k[j],  lse[t] = log sum_j exp(s[t, j]),  p = exp(s - lse)
//   o[t] = sum_j p[t, j] v[j]
// Backward (dO = grad of o, glse = grad of lse, or 0):
//   delta[t] = dO[t] . o[t] - glse[t],   dS[t, j] = p[t, j] (dO[t] . v[j] - delta[t])
//   dq[t] = scale sum_j dS[t, j] k[j],  dk[j] = scale sum_t dS[t, j] q[t],  dv[j] = sum_t p[t, j] dO[t]
//
// Tiles of kTile queries x kTile keys; the key tiles a query tile visits are exactly those
// that intersect its window (tiles fully outside are never touched), and the causal /
// window mask is applied per element only through each row's valid key range. No T x T
// (or T x window) matrix exists: the forward keeps the online-softmax state (running max m,
// running sum l, fp32 output accumulator) per query row of its tile; the backward
// recomputes p per tile from the saved lse.
//
// Arithmetic is fp32 whatever the input dtype: tiles are converted to fp32 scratch when
// loaded (K and V transposed where they are a GEMM's right operand), and the tile
// products run through one register-blocked micro-GEMM (C[M, N] += A[M, K] B[K, N],
// broadcast A element x B row vector, FMA).
//
// Memory traffic: forward reads each q row once and each k / v row once per query tile
// whose window holds it (~ window / kTile + 1 times), writes o and lse once. Backward
// reads q, k, v, o, grad_o, lse and writes dq, dk, dv, delta; no [T, window] matrix.
// Parallelisation (csrc/cpu/swa.cpp), two schemes with identical bits:
//   per head (>= 2 heads per thread, T (D + Dv) <= 2^21): a task owns a whole head. The
//     forward converts k (transposed, tile by tile) and v to fp32 once; the backward
//     converts q and grad_o once and sweeps the key tiles in order, each against the query
//     tiles that see it: dk, dv of the key tile plus the dS k terms of dq (accumulated for
//     the head in fp32): 5 tile products per (query tile, key tile) pair.
//   per tile (fewer heads): forward and dq tasks (b, h, query tile), then dk/dv tasks
//     (b, h, key tile); every tile is converted where it is used; 7 tile products per pair.
// Every task writes only its own rows, each sum runs in a fixed order (dq: key tiles
// ascending in both schemes), so results do not depend on the thread count.
// Saved for backward: o and lse (fp32 [B, H, T]); delta is a [B, H, T] scratch.
// Measured (B=2, T=4096, H=8, D=64, window 512, fp32, AVX-512, 2 threads, shared VM under
// load): forward 106 ms, forward + backward 224 ms (46x / 50x the reference, 9x / 29x SDPA
// with a window mask). One thread, min of 15 (B=1, H=2): forward 8.8 ms = 114 GFLOP/s and
// backward ~16 ms = 154 GFLOP/s of the FLOPs the window needs, vs 98 GFLOP/s for torch.mm
// 1024^3 in the same run (MKL on this AMD EPYC: our micro-GEMM outruns it, hence > 100%).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/swa_params.h"
#include "cpu/kernels/simd.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

constexpr int64_t kTile = 64;  // queries and keys per tile (a multiple of every kWidth)
#if defined(SPIKEOPS_ISA_avx2)
constexpr int kMR = 4, kNV = 2;  // 16 ymm registers: 8 accumulators + B row + broadcast
#else
constexpr int kMR = 4, kNV = 4;  // 32 zmm registers (scalar: plain unrolling)
#endif
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

SPIKEOPS_INLINE int64_t round_up(int64_t x) { return (x + kWidth - 1) / kWidth * kWidth; }

SPIKEOPS_INLINE VecF iota() {
  alignas(64) static const float k[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return loadu(k);
}
SPIKEOPS_INLINE float hmax(VecF a) {
#if defined(SPIKEOPS_ISA_avx512)
  return _mm512_reduce_max_ps(a.v);
#elif defined(SPIKEOPS_ISA_avx2)
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
#else
  return a.v;
#endif
}
SPIKEOPS_INLINE float hsum(VecF a) {
#if defined(SPIKEOPS_ISA_avx512)
  return _mm512_reduce_add_ps(a.v);
#elif defined(SPIKEOPS_ISA_avx2)
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
#else
  return a.v;
#endif
}

// C[r, :NV*kWidth] (+)= A[r, :K] B[:K, :NV*kWidth] for MR rows; TA: A is stored
// transposed (element (r, k) at A[k * lda + r]).
template <int MR, int NV, bool TA>
SPIKEOPS_INLINE void gemm_block(int64_t K, const float* A, int64_t lda, const float* B,
                                int64_t ldb, float* C, int64_t ldc, bool acc) {
  VecF c[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? loadu(C + r * ldc + v * kWidth) : VecF(0.f);
  for (int64_t k = 0; k < K; ++k) {
    VecF b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = loadu(B + k * ldb + v * kWidth);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const VecF a(TA ? A[k * lda + r] : A[r * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[r][v] = vfma(a, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) storeu(C + r * ldc + v * kWidth, c[r][v]);
}

template <int MR, bool TA>
SPIKEOPS_INLINE void gemm_rows(int nv, int64_t K, const float* A, int64_t lda, const float* B,
                               int64_t ldb, float* C, int64_t ldc, bool acc) {
  if (nv == kNV) {
    gemm_block<MR, kNV, TA>(K, A, lda, B, ldb, C, ldc, acc);
  } else if (nv == 1) {
    gemm_block<MR, 1, TA>(K, A, lda, B, ldb, C, ldc, acc);
  } else if constexpr (kNV > 2) {
    if (nv == 2) gemm_block<MR, 2, TA>(K, A, lda, B, ldb, C, ldc, acc);
    else gemm_block<MR, 3, TA>(K, A, lda, B, ldb, C, ldc, acc);
  }
}

// C[M, N] (+)= A[M, K] B[K, N], row-major fp32 (A transposed, [K, M], when TA), N a
// multiple of kWidth. Each C element is one FMA chain over k = 0..K-1 in order, so a
// product and the same product of transposed operands give identical bits.
template <bool TA = false>
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool acc) {
  const int64_t arow = TA ? 1 : lda;
  for (int64_t n0 = 0; n0 < N; n0 += kNV * kWidth) {
    const int nv = int(std::min<int64_t>(kNV, (N - n0) / kWidth));
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR)
      gemm_rows<kMR, TA>(nv, K, A + m * arow, lda, B + n0, ldb, C + m * ldc + n0, ldc, acc);
    for (; m < M; ++m)
      gemm_rows<1, TA>(nv, K, A + m * arow, lda, B + n0, ldb, C + m * ldc + n0, ldc, acc);
  }
}

// ---- tile loads (dtype -> fp32) -------------------------------------------------------

// Row-major: dst[i, 0:round_up(n)] = x[row r0 + i, 0:n] (zero padded), i < rows; rows up to
// `rows_pad` are zero-filled.
void load_rows(float* dst, int64_t ld, const void* base, DType dt, int64_t row0_off,
               int64_t row_stride, int64_t rows, int64_t rows_pad, int64_t n) {
  const int64_t np = round_up(n);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t off = row0_off + i * row_stride;
    float* d = dst + i * ld;
    for (int64_t c = 0; c < n; c += kWidth)
      storeu(d + c, load_any(base, off + c, dt, int(std::min<int64_t>(kWidth, n - c))));
  }
  for (int64_t i = rows; i < rows_pad; ++i)
    for (int64_t c = 0; c < np; ++c) dst[i * ld + c] = 0.f;
}

// Transposed: dst[c, i] = x[row r0 + i, c] for c < n, i < rows; columns rows..kTile zero.
void load_cols(float* dst, const void* base, DType dt, int64_t row0_off, int64_t row_stride,
               int64_t rows, int64_t n, float* tmp) {
  for (int64_t c = 0; c < n; ++c)
    for (int64_t i = rows; i < kTile; ++i) dst[c * kTile + i] = 0.f;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t off = row0_off + i * row_stride;
    for (int64_t c = 0; c < n; c += kWidth)
      storeu(tmp + c, load_any(base, off + c, dt, int(std::min<int64_t>(kWidth, n - c))));
    for (int64_t c = 0; c < n; ++c) dst[c * kTile + i] = tmp[c];
  }
}

void store_row(void* base, DType dt, int64_t off, const float* src, int64_t n, float mul) {
  const VecF f(mul);
  for (int64_t c = 0; c < n; c += kWidth) {
    const int w = int(std::min<int64_t>(kWidth, n - c));
    store_any(base, off + c, dt, loadu(src + c) * f, w);
  }
}

struct Geometry {
  int64_t T, H, D, Dv, Dp, Dvp, window;
  int64_t b, h;
  int64_t qk_stride, v_stride;  // elements between consecutive tokens of one head
  int64_t qk_base, v_base;      // element offset of token 0 of this (b, h)
  Geometry(const SWAParams& p, int64_t bh)
      : T(p.T), H(p.H), D(p.D), Dv(p.Dv), Dp(round_up(p.D)), Dvp(round_up(p.Dv)),
        window(p.window), b(bh / p.H), h(bh % p.H), qk_stride(p.H * p.D), v_stride(p.H * p.Dv),
        qk_base((b * p.T * p.H + h) * p.D), v_base((b * p.T * p.H + h) * p.Dv) {}
};

// Per-thread scratch, grown on demand (never shrinks); slot 1 holds a whole head's dq
// accumulator while slot 0 serves the tiles.
float* scratch(int64_t n, int slot = 0) {
  thread_local std::vector<float> buf[2];
  if (int64_t(buf[slot].size()) < n) buf[slot].resize(size_t(n));
  return buf[slot].data();
}

// dO[t] . o[t] from fp32 rows padded to Dvp (the same arithmetic in every caller).
SPIKEOPS_INLINE float row_dot(const float* a, const float* b, int64_t n) {
  VecF acc(0.f);
  for (int64_t c = 0; c < n; c += kWidth) acc = vfma(loadu(a + c), loadu(b + c), acc);
  return hsum(acc);
}

// The valid key range of query t within the key tile [k0, k0 + nk), as tile columns
// [lo, hi]; empty when lo > hi.
SPIKEOPS_INLINE void key_range(int64_t t, int64_t k0, int64_t nk, int64_t window, int64_t& lo,
                               int64_t& hi) {
  lo = std::max(k0, t - window + 1) - k0;
  hi = std::min(k0 + nk - 1, t) - k0;
}

}  // namespace

int64_t swa_tile() { return kTile; }

namespace {

// fp32 copies of one head's operands, made once per head when a task owns a whole head
// (instead of converting / transposing every tile each time a window visits it).
// Transposed copies are stored tile by tile: tile b is a [rows, kTile] block at
// b * rows * kTile (rows = Dp or Dvp), so a tile's rows are contiguous as in the tile
// buffers (a [rows, T] layout would put them 4 * T bytes apart: cache-set conflicts);
// columns T..Tp are zero.
struct HeadCache {
  const float* Kt = nullptr;   // forward: k transposed, blocks [Dp, kTile]
  const float* V = nullptr;    // forward: v rows [T, Dvp]
  const float* Qt = nullptr;   // backward: q transposed, blocks [Dp, kTile]
  const float* dOt = nullptr;  // backward: grad_o transposed, blocks [Dvp, kTile]
  const float* Qr = nullptr;   // backward: q rows [T, Dp]
  const float* dOr = nullptr;  // backward: grad_o rows [T, Dvp]
  const float* lse = nullptr;  // backward: [Tp], zero padded
  const float* delta = nullptr;
};

// x rows [0, T) of head g into fp32: dst_rows [T, ld] (if not null) and the transposed,
// tile-blocked dst_cols (blocks [ld, kTile], if not null), zero padded to Tp columns.
void load_head(const void* base, DType dt, int64_t off0, int64_t stride, int64_t T,
               int64_t n, int64_t ld, float* dst_rows, float* dst_cols, int64_t Tp,
               float* tmp) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = dst_rows != nullptr ? dst_rows + t * ld : tmp;
    load_rows(row, ld, base, dt, off0 + t * stride, 0, 1, 1, n);
    if (dst_cols != nullptr) {
      float* blk = dst_cols + (t / kTile) * ld * kTile + t % kTile;
      for (int64_t c = 0; c < n; ++c) blk[c * kTile] = row[c];
    }
  }
  if (dst_cols != nullptr)
    for (int64_t t = T; t < Tp; ++t) {
      float* blk = dst_cols + (t / kTile) * ld * kTile + t % kTile;
      for (int64_t c = 0; c < n; ++c) blk[c * kTile] = 0.f;
    }
}

// Forward of query rows [q0, q0 + kTile) of head g: o and lse. Keys come from `hc` when
// given, else each key tile is loaded here.
void forward_rows(const SWAParams& p, const Geometry& g, int64_t bh, int64_t q0,
                  const HeadCache* hc) {
  const int64_t nq = std::min(kTile, g.T - q0);
  const int64_t Dmax = std::max(g.Dp, g.Dvp);
  float* Q = scratch(kTile * g.Dp + g.Dp * kTile + kTile * g.Dvp + kTile * kTile +
                     kTile * g.Dvp + 2 * kTile + Dmax);
  float* Ktb = Q + kTile * g.Dp;
  float* Vb = Ktb + g.Dp * kTile;
  float* S = Vb + kTile * g.Dvp;
  float* O = S + kTile * kTile;
  float* m = O + kTile * g.Dvp;
  float* l = m + kTile;
  float* tmp = l + kTile;

  load_rows(Q, g.Dp, p.q, p.dtype, g.qk_base + q0 * g.qk_stride, g.qk_stride, nq, nq, g.D);
  for (int64_t i = 0; i < nq; ++i) {
    m[i] = kNegInf;
    l[i] = 0.f;
    for (int64_t c = 0; c < g.Dvp; ++c) O[i * g.Dvp + c] = 0.f;
  }
  const VecF scale(p.scale), neg_inf(kNegInf), lowest(-std::numeric_limits<float>::max());
  const int64_t first = std::max<int64_t>(0, q0 - g.window + 1) / kTile * kTile;
  for (int64_t k0 = first; k0 < q0 + nq; k0 += kTile) {
    const int64_t nk = std::min(kTile, g.T - k0), nkp = round_up(nk);
    const float *Kt, *V;
    int64_t ldk;
    if (hc != nullptr) {
      Kt = hc->Kt + k0 * g.Dp;  // block k0 / kTile of [Dp, kTile]
      ldk = kTile;
      V = hc->V + k0 * g.Dvp;
    } else {
      load_cols(Ktb, p.k, p.dtype, g.qk_base + k0 * g.qk_stride, g.qk_stride, nk, g.D, tmp);
      load_rows(Vb, g.Dvp, p.v, p.dtype, g.v_base + k0 * g.v_stride, g.v_stride, nk, nk, g.Dv);
      Kt = Ktb;
      ldk = kTile;
      V = Vb;
    }
    gemm(nq, nkp, g.D, Q, g.Dp, Kt, ldk, S, kTile, false);
    for (int64_t i = 0; i < nq; ++i) {
      int64_t lo, hi;
      key_range(q0 + i, k0, nk, g.window, lo, hi);
      float* s = S + i * kTile;
      if (lo > hi) {  // no key of this tile in the row's window
        for (int64_t c = 0; c < nkp; ++c) s[c] = 0.f;
        continue;
      }
      VecF mx(neg_inf);
      const bool full = lo == 0 && hi == nkp - 1;  // the whole tile is in the window
      if (full) {
        for (int64_t c = 0; c < nkp; c += kWidth) {
          const VecF x = loadu(s + c) * scale;
          storeu(s + c, x);
          mx = vmax(mx, x);
        }
      } else {
        const VecF vlo(static_cast<float>(lo)), vhi(static_cast<float>(hi));
        for (int64_t c = 0; c < nkp; c += kWidth) {
          const VecF j = iota() + VecF(float(c));
          const VecF x = select(ge(j, vlo) & le(j, vhi), loadu(s + c) * scale, neg_inf);
          storeu(s + c, x);
          mx = vmax(mx, x);
        }
      }
      const float m_new = std::max(m[i], hmax(mx));  // finite: the row has a valid key
      const float alpha = std::exp(m[i] - m_new);    // 0 on the row's first tile
      const VecF vm(m_new);
      VecF sum(0.f);
      if (full) {
        for (int64_t c = 0; c < nkp; c += kWidth) {
          const VecF e = vexp(loadu(s + c) - vm);
          storeu(s + c, e);
          sum = sum + e;
        }
      } else {  // masked entries are -inf: exactly 0 (vexp would clamp them to ~1e-38)
        for (int64_t c = 0; c < nkp; c += kWidth) {
          const VecF x = loadu(s + c);
          const VecF e = select(ge(x, lowest), vexp(x - vm), VecF(0.f));
          storeu(s + c, e);
          sum = sum + e;
        }
      }
      l[i] = l[i] * alpha + hsum(sum);
      m[i] = m_new;
      if (alpha != 1.f) {
        const VecF a(alpha);
        for (int64_t c = 0; c < g.Dvp; c += kWidth)
          storeu(O + i * g.Dvp + c, loadu(O + i * g.Dvp + c) * a);
      }
    }
    gemm(nq, g.Dvp, nk, S, kTile, V, g.Dvp, O, g.Dvp, true);
  }
  for (int64_t i = 0; i < nq; ++i) {
    store_row(p.o, p.dtype, g.v_base + (q0 + i) * g.v_stride, O + i * g.Dvp, g.Dv, 1.f / l[i]);
    p.lse[bh * g.T + q0 + i] = m[i] + std::log(l[i]);
  }
}

// Key rows [k0, k0 + kTile) of head g: dk and dv. Query-side operands come from `hc` when
// given, else each query tile is loaded here (with lse and p.delta). With dQ (the head's
// fp32 [T, Dp] dq accumulator) it also adds this key tile's dS k terms to dQ: called for
// k0 ascending, that is the order swa_dq_tile sums them in, so the bits are the same.
void dkdv_rows(const SWAParams& p, const Geometry& g, int64_t bh, int64_t k0, float* dQ,
               const HeadCache* hc) {
  const int64_t nk = std::min(kTile, g.T - k0);
  const int64_t Dmax = std::max(g.Dp, g.Dvp);
  float* Kr = scratch(kTile * g.Dp + kTile * g.Dvp + g.Dp * kTile + g.Dvp * kTile +
                      kTile * g.Dp + kTile * g.Dvp + 2 * kTile * kTile + kTile * g.Dp +
                      kTile * g.Dvp + 2 * kTile + Dmax);
  float* Vr = Kr + kTile * g.Dp;
  float* Qtb = Vr + kTile * g.Dvp;
  float* dOtb = Qtb + g.Dp * kTile;
  float* Qrb = dOtb + g.Dvp * kTile;
  float* dOrb = Qrb + kTile * g.Dp;
  float* ST = dOrb + kTile * g.Dvp;
  float* dPT = ST + kTile * kTile;
  float* dK = dPT + kTile * kTile;
  float* dV = dK + kTile * g.Dp;
  float* lseb = dV + kTile * g.Dvp;
  float* deltab = lseb + kTile;
  float* tmp = deltab + kTile;

  load_rows(Kr, g.Dp, p.k, p.dtype, g.qk_base + k0 * g.qk_stride, g.qk_stride, nk, nk, g.D);
  load_rows(Vr, g.Dvp, p.v, p.dtype, g.v_base + k0 * g.v_stride, g.v_stride, nk, nk, g.Dv);
  for (int64_t c = 0; c < nk * g.Dp; ++c) dK[c] = 0.f;
  for (int64_t c = 0; c < nk * g.Dvp; ++c) dV[c] = 0.f;
  const VecF scale(p.scale), zero(0.f);
  // Queries t that see a key of this tile: k0 <= t <= k0 + nk - 1 + window - 1.
  const int64_t last = std::min(g.T - 1, k0 + nk - 2 + g.window);
  for (int64_t q0 = k0; q0 <= last; q0 += kTile) {
    const int64_t nq = std::min(kTile, g.T - q0), nqp = round_up(nq);
    const float *Qt, *dOt, *Qr, *dOr, *lse, *delta;
    int64_t ldt;
    if (hc != nullptr) {
      ldt = kTile;
      Qt = hc->Qt + q0 * g.Dp;  // block q0 / kTile of [Dp, kTile]
      dOt = hc->dOt + q0 * g.Dvp;
      Qr = hc->Qr + q0 * g.Dp;
      dOr = hc->dOr + q0 * g.Dvp;
      lse = hc->lse + q0;
      delta = hc->delta + q0;
    } else {
      load_cols(Qtb, p.q, p.dtype, g.qk_base + q0 * g.qk_stride, g.qk_stride, nq, g.D, tmp);
      load_cols(dOtb, p.grad_o, p.dtype, g.v_base + q0 * g.v_stride, g.v_stride, nq, g.Dv,
                tmp);
      load_rows(Qrb, g.Dp, p.q, p.dtype, g.qk_base + q0 * g.qk_stride, g.qk_stride, nq, nq,
                g.D);
      load_rows(dOrb, g.Dvp, p.grad_o, p.dtype, g.v_base + q0 * g.v_stride, g.v_stride, nq,
                nq, g.Dv);
      for (int64_t i = 0; i < kTile; ++i) {
        lseb[i] = i < nq ? p.lse[bh * g.T + q0 + i] : 0.f;
        deltab[i] = i < nq ? p.delta[bh * g.T + q0 + i] : 0.f;
      }
      ldt = kTile;
      Qt = Qtb;
      dOt = dOtb;
      Qr = Qrb;
      dOr = dOrb;
      lse = lseb;
      delta = deltab;
    }
    gemm(nk, nqp, g.D, Kr, g.Dp, Qt, ldt, ST, kTile, false);
    gemm(nk, nqp, g.Dv, Vr, g.Dvp, dOt, ldt, dPT, kTile, false);
    for (int64_t j = 0; j < nk; ++j) {
      // Queries of this tile whose window holds key k0 + j: tile columns [lo, hi].
      const int64_t key = k0 + j;
      const int64_t lo = std::max(q0, key) - q0;
      const int64_t hi = std::min(q0 + nq - 1, key + g.window - 1) - q0;
      float* s = ST + j * kTile;
      float* dp = dPT + j * kTile;
      if (lo == 0 && hi == nqp - 1) {  // every query of the tile sees this key: no mask
        for (int64_t c = 0; c < nqp; c += kWidth) {
          const VecF pr = vexp(loadu(s + c) * scale - loadu(lse + c));
          storeu(s + c, pr);
          storeu(dp + c, pr * (loadu(dp + c) - loadu(delta + c)));
        }
        continue;
      }
      const VecF vlo(static_cast<float>(lo)), vhi(static_cast<float>(hi));
      for (int64_t c = 0; c < nqp; c += kWidth) {
        const VecF i = iota() + VecF(float(c));
        const VecF pr = select(ge(i, vlo) & le(i, vhi),
                               vexp(loadu(s + c) * scale - loadu(lse + c)), zero);
        storeu(s + c, pr);
        storeu(dp + c, pr * (loadu(dp + c) - loadu(delta + c)));
      }
    }
    gemm(nk, g.Dvp, nq, ST, kTile, dOr, g.Dvp, dV, g.Dvp, true);
    gemm(nk, g.Dp, nq, dPT, kTile, Qr, g.Dp, dK, g.Dp, true);
    if (dQ != nullptr)  // dQ[q0 + i] += sum_j dS^T[j, i] k[k0 + j]
      gemm<true>(nq, g.Dp, nk, dPT, kTile, Kr, g.Dp, dQ + q0 * g.Dp, g.Dp, true);
  }
  for (int64_t j = 0; j < nk; ++j) {
    store_row(p.dk, p.dtype, g.qk_base + (k0 + j) * g.qk_stride, dK + j * g.Dp, g.D, p.scale);
    store_row(p.dv, p.dtype, g.v_base + (k0 + j) * g.v_stride, dV + j * g.Dvp, g.Dv, 1.f);
  }
}

}  // namespace

// Rows [q0, q0 + kTile) of head bh: o and lse.
void swa_forward_tile(const SWAParams& p, int64_t bh, int64_t q0) {
  forward_rows(p, Geometry(p, bh), bh, q0, nullptr);
}

// The whole forward of head bh, k and v converted once (bit-identical to the tiles).
void swa_forward_head(const SWAParams& p, int64_t bh) {
  const Geometry g(p, bh);
  const int64_t Tp = (g.T + kTile - 1) / kTile * kTile;
  float* Kt = scratch(g.Dp * Tp + g.T * g.Dvp + std::max(g.Dp, g.Dvp), 1);
  float* V = Kt + g.Dp * Tp;
  float* tmp = V + g.T * g.Dvp;
  load_head(p.k, p.dtype, g.qk_base, g.qk_stride, g.T, g.D, g.Dp, nullptr, Kt, Tp, tmp);
  load_head(p.v, p.dtype, g.v_base, g.v_stride, g.T, g.Dv, g.Dvp, V, nullptr, Tp, tmp);
  HeadCache hc;
  hc.Kt = Kt;
  hc.V = V;
  for (int64_t q0 = 0; q0 < g.T; q0 += kTile) forward_rows(p, g, bh, q0, &hc);
}

// Query rows [q0, q0 + kTile) of head bh: delta (written to p.delta) and dq.
void swa_dq_tile(const SWAParams& p, int64_t bh, int64_t q0) {
  const Geometry g(p, bh);
  const int64_t nq = std::min(kTile, g.T - q0);
  const int64_t Dmax = std::max(g.Dp, g.Dvp);
  float* Q = scratch(kTile * g.Dp + kTile * g.Dvp + g.Dp * kTile + g.Dvp * kTile +
                     kTile * g.Dp + 2 * kTile * kTile + kTile * g.Dp + 2 * kTile + 2 * Dmax);
  float* dO = Q + kTile * g.Dp;
  float* Kt = dO + kTile * g.Dvp;
  float* Vt = Kt + g.Dp * kTile;
  float* Kr = Vt + g.Dvp * kTile;
  float* S = Kr + kTile * g.Dp;
  float* dP = S + kTile * kTile;
  float* dQ = dP + kTile * kTile;
  float* lse = dQ + kTile * g.Dp;
  float* delta = lse + kTile;
  float* tmp = delta + kTile;
  float* orow = tmp + Dmax;

  load_rows(Q, g.Dp, p.q, p.dtype, g.qk_base + q0 * g.qk_stride, g.qk_stride, nq, nq, g.D);
  load_rows(dO, g.Dvp, p.grad_o, p.dtype, g.v_base + q0 * g.v_stride, g.v_stride, nq, nq, g.Dv);
  for (int64_t i = 0; i < nq; ++i) {
    load_rows(orow, g.Dvp, p.o, p.dtype, g.v_base + (q0 + i) * g.v_stride, 0, 1, 1, g.Dv);
    float d = row_dot(dO + i * g.Dvp, orow, g.Dvp);
    if (p.grad_lse != nullptr) d -= p.grad_lse[bh * g.T + q0 + i];
    delta[i] = d;
    p.delta[bh * g.T + q0 + i] = d;
    lse[i] = p.lse[bh * g.T + q0 + i];
    for (int64_t c = 0; c < g.Dp; ++c) dQ[i * g.Dp + c] = 0.f;
  }
  const VecF scale(p.scale), zero(0.f);
  const int64_t first = std::max<int64_t>(0, q0 - g.window + 1) / kTile * kTile;
  for (int64_t k0 = first; k0 < q0 + nq; k0 += kTile) {
    const int64_t nk = std::min(kTile, g.T - k0), nkp = round_up(nk);
    load_cols(Kt, p.k, p.dtype, g.qk_base + k0 * g.qk_stride, g.qk_stride, nk, g.D, tmp);
    load_cols(Vt, p.v, p.dtype, g.v_base + k0 * g.v_stride, g.v_stride, nk, g.Dv, tmp);
    load_rows(Kr, g.Dp, p.k, p.dtype, g.qk_base + k0 * g.qk_stride, g.qk_stride, nk, nk, g.D);
    gemm(nq, nkp, g.D, Q, g.Dp, Kt, kTile, S, kTile, false);
    gemm(nq, nkp, g.Dv, dO, g.Dvp, Vt, kTile, dP, kTile, false);
    for (int64_t i = 0; i < nq; ++i) {
      int64_t lo, hi;
      key_range(q0 + i, k0, nk, g.window, lo, hi);
      float* s = S + i * kTile;
      const float* dp = dP + i * kTile;
      const VecF vlo(static_cast<float>(lo)), vhi(static_cast<float>(hi)), vl(lse[i]),
          vd(delta[i]);
      for (int64_t c = 0; c < nkp; c += kWidth) {
        const VecF j = iota() + VecF(float(c));
        const VecF pr = select(ge(j, vlo) & le(j, vhi), vexp(loadu(s + c) * scale - vl), zero);
        storeu(s + c, pr * (loadu(dp + c) - vd));
      }
    }
    gemm(nq, g.Dp, nk, S, kTile, Kr, g.Dp, dQ, g.Dp, true);
  }
  for (int64_t i = 0; i < nq; ++i)
    store_row(p.dq, p.dtype, g.qk_base + (q0 + i) * g.qk_stride, dQ + i * g.Dp, g.D, p.scale);
}

// Key rows [k0, k0 + kTile) of head bh: dk and dv (reads the delta the dq pass wrote).
void swa_dkdv_tile(const SWAParams& p, int64_t bh, int64_t k0) {
  dkdv_rows(p, Geometry(p, bh), bh, k0, nullptr, nullptr);
}

// The whole backward of head bh in one key-major sweep (5 tile products instead of the
// two passes' 7, q and grad_o converted once): delta of every row, then per key tile dk,
// dv and the dq terms, dq accumulated for the whole head in fp32. Bit-identical to
// swa_dq_tile + swa_dkdv_tile.
void swa_backward_head(const SWAParams& p, int64_t bh) {
  const Geometry g(p, bh);
  const int64_t Tp = (g.T + kTile - 1) / kTile * kTile;
  float* dQ = scratch(2 * g.T * g.Dp + g.Dp * Tp + g.T * g.Dvp + g.Dvp * Tp + 2 * Tp +
                      2 * std::max(g.Dp, g.Dvp), 1);
  float* Qr = dQ + g.T * g.Dp;
  float* Qt = Qr + g.T * g.Dp;
  float* dOr = Qt + g.Dp * Tp;
  float* dOt = dOr + g.T * g.Dvp;
  float* lse = dOt + g.Dvp * Tp;
  float* delta = lse + Tp;
  float* tmp = delta + Tp;
  float* orow = tmp + std::max(g.Dp, g.Dvp);
  load_head(p.q, p.dtype, g.qk_base, g.qk_stride, g.T, g.D, g.Dp, Qr, Qt, Tp, tmp);
  load_head(p.grad_o, p.dtype, g.v_base, g.v_stride, g.T, g.Dv, g.Dvp, dOr, dOt, Tp, tmp);
  for (int64_t t = 0; t < Tp; ++t) {
    if (t >= g.T) {
      lse[t] = delta[t] = 0.f;
      continue;
    }
    load_rows(orow, g.Dvp, p.o, p.dtype, g.v_base + t * g.v_stride, 0, 1, 1, g.Dv);
    float d = row_dot(dOr + t * g.Dvp, orow, g.Dvp);
    if (p.grad_lse != nullptr) d -= p.grad_lse[bh * g.T + t];
    delta[t] = d;
    lse[t] = p.lse[bh * g.T + t];
  }
  for (int64_t c = 0; c < g.T * g.Dp; ++c) dQ[c] = 0.f;
  HeadCache hc;
  hc.Qt = Qt;
  hc.dOt = dOt;
  hc.Qr = Qr;
  hc.dOr = dOr;
  hc.lse = lse;
  hc.delta = delta;
  for (int64_t k0 = 0; k0 < g.T; k0 += kTile) dkdv_rows(p, g, bh, k0, dQ, &hc);
  for (int64_t t = 0; t < g.T; ++t)
    store_row(p.dq, p.dtype, g.qk_base + t * g.qk_stride, dQ + t * g.Dp, g.D, p.scale);
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
