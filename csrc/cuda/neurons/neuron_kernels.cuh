// Fused multi-step neurons (LIF / IF / PLIF / ILIF / ALIF): torch-free CUDA kernels.
//
// Math (per element i, t = 0..T-1, state in fp32; ref: python/spikeops/ref/neurons.py):
//   H_t = charge(V_{t-1}, X_t)            Div: V + (X - (V - Vr)) / tau, V - (V - Vr) / tau + X
//                                         Mul: same with * k, k = decay[channel(i)]; IF: V + X
//   S_t = fire(H_t)                        [H - thr >= 0] | round(clamp(H / Vth, 0, D))
//   V_t = reset(H_t, S_t)                  hard: (1 - S) H + S Vr,  soft: H - S thr
//   A_t = A_{t-1} - A_{t-1} / tau_a + S_t  (adaptive; thr = Vth + beta A_{t-1})
// Every forward op is one IEEE-rounded fp32 op (__f*_rn), in the reference's order, so
// nvcc cannot contract them into FMAs: spikes match PyTorch's fp32 reference bit for bit.
//
// Memory traffic (the kernels are bandwidth-bound, so this is the cost model):
//   forward : read X [T,N], write S [T,N] (+ V_seq fp32 when asked), O(N) for states.
//   backward: read X and dL/dS, write dL/dX: 3 [T,N] streams for T <= 32. Nothing is
//             saved by the forward (Params has no scratch and the design prefers
//             recomputing to allocating): the backward reruns the forward step with the
//             same device function, so recomputed spikes are identical to the forward's.
//             For T > 32 it reads X twice (one checkpointing pass, see below).
//
// Parallelisation: one thread owns VEC consecutive elements for all T steps; the time loop
// is sequential in registers. Consecutive threads own consecutive elements, so every
// [t, :] row is read/written fully coalesced; with N % 8 == 0 and 16-byte aligned pointers
// the forward uses 16-byte packs and the backward pairs (T <= 16), else VEC = 1.
// X (resp. dL/dS) is loaded a chunk of steps ahead of its use so each thread keeps several
// independent loads in flight: the time recurrence itself has no memory parallelism.
//
// Backward (BPTT): per segment of L <= 32 steps the forward is recomputed keeping H (and
// thr for adaptive, dH/dk for Mul charges) in a register array (fully unrolled, so it
// never touches local memory), then walked in reverse. For T > L the thread first runs
// the forward once storing (V, A) at up to kMaxCkpt segment starts (a small local array),
// then recomputes each segment from its checkpoint, last segment first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/neuron_params.h"

#define SPIKEOPS_HD __host__ __device__ __forceinline__

namespace spikeops {
namespace cuda_neuron {

// ---------------------------------------------------------------------------------------
// IEEE-rounded fp32 ops. The host branch exists so the thread bodies can be unit-checked
// on a CPU (compiled without FMA contraction); the kernels only use the device branch.
SPIKEOPS_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SPIKEOPS_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
SPIKEOPS_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SPIKEOPS_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// ---------------------------------------------------------------------------------------
// dtype <-> fp32 and packed (vector) access.
template <typename T> struct Cvt;
template <> struct Cvt<float> {
  static SPIKEOPS_HD float load(float v) { return v; }
  static SPIKEOPS_HD float store(float v) { return v; }
};
template <> struct Cvt<__half> {
  static SPIKEOPS_HD float load(__half v) { return __half2float(v); }
  static SPIKEOPS_HD __half store(float v) { return __float2half_rn(v); }
};
template <> struct Cvt<__nv_bfloat16> {
  static SPIKEOPS_HD float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static SPIKEOPS_HD __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
SPIKEOPS_HD void load_pack(const T* __restrict__ ptr, float (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(ptr);
#pragma unroll
  for (int e = 0; e < VEC; ++e) out[e] = Cvt<T>::load(pk.v[e]);
}

template <typename T, int VEC>
SPIKEOPS_HD void store_pack(T* __restrict__ ptr, const float (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int e = 0; e < VEC; ++e) pk.v[e] = Cvt<T>::store(in[e]);
  *reinterpret_cast<Pack<T, VEC>*>(ptr) = pk;
}

// fp32 rows (V_seq) in packs of at most 16 bytes: only 16-byte alignment is checked.
template <int VEC>
SPIKEOPS_HD void store_f32(float* __restrict__ ptr, const float (&in)[VEC]) {
  constexpr int W = VEC % 4 == 0 ? 4 : (VEC % 2 == 0 ? 2 : 1);
#pragma unroll
  for (int e0 = 0; e0 < VEC; e0 += W) {
    Pack<float, W> pk;
#pragma unroll
    for (int e = 0; e < W; ++e) pk.v[e] = in[e0 + e];
    *reinterpret_cast<Pack<float, W>*>(ptr + e0) = pk;
  }
}

// ---------------------------------------------------------------------------------------
// The scalar constants of one call, resolved once per thread.
struct Cfg {
  Charge charge;
  bool hard;      // hard reset (never for kInteger)
  bool detach;    // detach_reset
  bool half_up;   // kInteger rounding
  float tau, vth, vr, level_max, tau_adapt, beta, alpha, v_init;
  Surrogate surrogate;
};

template <Fire F>
SPIKEOPS_HD Cfg make_cfg(const NeuronParams& p) {
  Cfg c;
  c.charge = p.charge;
  c.hard = p.hard_reset && F != Fire::kInteger;
  c.detach = p.detach_reset;
  c.half_up = p.rounding == Rounding::kHalfUp;
  c.tau = p.tau;
  c.vth = p.v_threshold;
  // The charge uses Vr only with a hard reset (SpikingJelly's v_reset=None means 0).
  c.vr = c.hard ? p.v_reset : 0.f;
  c.level_max = static_cast<float>(p.max_level);
  c.tau_adapt = p.tau_adapt;
  c.beta = p.beta;
  c.alpha = p.alpha;
  c.v_init = c.vr;  // == initial_membrane(p) for every consistent Params
  c.surrogate = p.surrogate;
  return c;
}

SPIKEOPS_HD bool is_mul(Charge c) { return c == Charge::kMulDecayInput || c == Charge::kMulDecay; }

// round(clamp(u, 0, D)); comparisons (not fminf/fmaxf) so a NaN passes through like
// torch.clamp does.
SPIKEOPS_HD float quantize(float u, float D, bool half_up) {
  const float c = u < 0.f ? 0.f : (u > D ? D : u);
  return half_up ? floorf(fadd(c, 0.5f)) : rintf(c);
}

// One forward step for one element: updates v (and a), returns the spike. Also reports
// what the backward keeps per step: h, the threshold actually used, and dH/dk for Mul.
// Both the forward and the backward's recomputation call this, which is what makes the
// recomputed spikes identical to the forward's.
template <Fire F>
SPIKEOPS_HD float neuron_step(const Cfg& c, float& v, float& a, float x, float k, float& h,
                              float& thr, float& dk) {
  const float vd = fsub(v, c.vr);
  switch (c.charge) {
    case Charge::kDivDecayInput: {
      const float d = fsub(x, vd);
      h = fadd(v, fdiv(d, c.tau));
      dk = d;
      break;
    }
    case Charge::kDivDecay:
      h = fadd(fsub(v, fdiv(vd, c.tau)), x);
      dk = -vd;
      break;
    case Charge::kMulDecayInput: {
      const float d = fsub(x, vd);
      h = fadd(v, fmul(d, k));
      dk = d;
      break;
    }
    case Charge::kMulDecay:
      h = fadd(fsub(v, fmul(vd, k)), x);
      dk = -vd;
      break;
    default:  // kNoLeak
      h = fadd(v, x);
      dk = 0.f;
      break;
  }
  float s;
  if (F == Fire::kInteger) {
    thr = c.vth;
    s = quantize(fdiv(h, c.vth), c.level_max, c.half_up);
    v = fsub(h, fmul(s, c.vth));
  } else {
    thr = (F == Fire::kAdaptive) ? fadd(c.vth, fmul(c.beta, a)) : c.vth;
    s = fsub(h, thr) >= 0.f ? 1.f : 0.f;
    // Arithmetic, not a select: an Inf/NaN membrane must propagate as in the reference.
    v = c.hard ? fadd(fmul(fsub(1.f, s), h), fmul(s, c.vr)) : fsub(h, fmul(s, thr));
    if (F == Fire::kAdaptive) a = fadd(fsub(a, fdiv(a, c.tau_adapt)), s);
  }
  return s;
}

// dS/du of the surrogate at u = H - thr (python/spikeops/ref/surrogate.py, same order).
SPIKEOPS_HD float surrogate_grad(Surrogate sg, float u, float a) {
  const float au = fabsf(u);
  switch (sg) {
    case Surrogate::kSigmoid: {
      const float s = 1.f / (1.f + expf(-a * u));
      return a * s * (1.f - s);
    }
    case Surrogate::kATan: {
      const float z = 1.5707963267948966f * a * u;
      return (0.5f * a) / (1.f + z * z);
    }
    case Surrogate::kPiecewiseQuadratic:
      return au <= 1.f / a ? a - a * a * au : 0.f;
    case Surrogate::kPiecewiseExp:
      return 0.5f * a * expf(-a * au);
    case Surrogate::kSoftSign: {
      const float d = 1.f + a * au;
      return a / (2.f * d * d);
    }
    case Surrogate::kSuperSpike: {
      const float d = a * au + 1.f;
      return a / (d * d);
    }
    case Surrogate::kErf: {
      const float z = a * u;
      return (a * 0.5641895835477563f) * expf(-z * z);  // a / sqrt(pi)
    }
    case Surrogate::kRectangle:
      return au < 0.5f * a ? 1.f / a : 0.f;
    default: {  // kTriangle
      const float r = 1.f - au / a;
      return (r < 0.f ? 0.f : r) / a;  // NaN passes, like torch.clamp
    }
  }
}

// Element-wise constants, loaded once per thread.
template <bool kMul, int VEC>
SPIKEOPS_HD void load_decay(const NeuronParams& p, int64_t i0, float (&k)[VEC]) {
#pragma unroll
  for (int e = 0; e < VEC; ++e)
    k[e] = kMul ? p.decay[((i0 + e) / p.decay_inner) % p.decay_channels] : 0.f;
}

template <Fire F, int VEC>
SPIKEOPS_HD void load_state(const NeuronParams& p, const Cfg& c, int64_t i0, float (&v)[VEC],
                            float (&a)[VEC]) {
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    v[e] = p.v0 ? p.v0[i0 + e] : c.v_init;
    a[e] = (F == Fire::kAdaptive && p.a0) ? p.a0[i0 + e] : 0.f;
  }
}

// ---------------------------------------------------------------------------------------
// Forward: the thread body (host-callable so it can be checked without a GPU).
constexpr int kFwdChunk = 8;  // steps of X loaded ahead

template <typename T, int VEC, bool kMul, Fire F>
SPIKEOPS_HD void fwd_thread(const NeuronParams& p, int64_t tid) {
  const int64_t N = p.N, TT = p.T;
  const int64_t i0 = tid * VEC;
  if (i0 >= N) return;
  const Cfg c = make_cfg<F>(p);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ spikes = static_cast<T*>(p.spikes);
  float* __restrict__ v_seq = p.v_seq;

  float k[VEC], v[VEC], a[VEC];
  load_decay<kMul>(p, i0, k);
  load_state<F>(p, c, i0, v, a);

  for (int64_t t0 = 0; t0 < TT; t0 += kFwdChunk) {
    float xs[kFwdChunk][VEC];
#pragma unroll
    for (int j = 0; j < kFwdChunk; ++j)
      if (t0 + j < TT) load_pack<T, VEC>(x + (t0 + j) * N + i0, xs[j]);
#pragma unroll
    for (int j = 0; j < kFwdChunk; ++j) {
      if (t0 + j < TT) {
        float s[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float h, thr, dk;
          s[e] = neuron_step<F>(c, v[e], a[e], xs[j][e], k[e], h, thr, dk);
        }
        store_pack<T, VEC>(spikes + (t0 + j) * N + i0, s);
        if (v_seq) store_f32<VEC>(v_seq + (t0 + j) * N + i0, v);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    p.v_last[i0 + e] = v[e];
    if (F == Fire::kAdaptive) p.a_last[i0 + e] = a[e];
  }
}

// ---------------------------------------------------------------------------------------
// Backward.
constexpr int kMaxCkpt = 16;   // checkpoint slots for T > L (no extra recompute up to 16 L)
constexpr int kBwdChunk = 8;   // steps of dL/dS loaded ahead

// Runs steps [ta, tb) forward without keeping anything (checkpoint passes).
template <typename T, int VEC, bool kMul, Fire F>
SPIKEOPS_HD void advance(const Cfg& c, const T* __restrict__ x, int64_t N, int64_t i0,
                         int64_t ta, int64_t tb, const float (&k)[VEC], float (&v)[VEC],
                         float (&a)[VEC]) {
  for (int64_t t0 = ta; t0 < tb; t0 += kFwdChunk) {
    float xs[kFwdChunk][VEC];
#pragma unroll
    for (int j = 0; j < kFwdChunk; ++j)
      if (t0 + j < tb) load_pack<T, VEC>(x + (t0 + j) * N + i0, xs[j]);
#pragma unroll
    for (int j = 0; j < kFwdChunk; ++j) {
      if (t0 + j < tb) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float h, thr, dk;
          neuron_step<F>(c, v[e], a[e], xs[j][e], k[e], h, thr, dk);
        }
      }
    }
  }
}

// L: steps per register segment (compile time). kCkpt: T may exceed L.
template <typename T, int L, int VEC, bool kMul, Fire F, bool kCkpt>
SPIKEOPS_HD void bwd_thread(const NeuronParams& p, int64_t tid) {
  static_assert(L % kBwdChunk == 0, "segment must be whole chunks");
  constexpr bool kAd = F == Fire::kAdaptive;
  const int64_t N = p.N, TT = p.T;
  const int64_t i0 = tid * VEC;
  if (i0 >= N) return;
  const Cfg c = make_cfg<F>(p);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ gspk = static_cast<const T*>(p.grad_spikes);
  T* __restrict__ gx = static_cast<T*>(p.grad_x);

  float k[VEC], v[VEC], a[VEC];
  load_decay<kMul>(p, i0, k);
  load_state<F>(p, c, i0, v, a);

  float gv[VEC], ga[VEC], gk[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    gv[e] = p.grad_v_last ? p.grad_v_last[i0 + e] : 0.f;
    ga[e] = (kAd && p.grad_a_last) ? p.grad_a_last[i0 + e] : 0.f;
    gk[e] = 0.f;
  }

  // dH/dX and dH/dV for the Div / IF charges (Mul ones use k per element).
  const bool decay_input = c.charge == Charge::kDivDecayInput || c.charge == Charge::kMulDecayInput;
  const bool no_leak = c.charge == Charge::kNoLeak;
  const float inv_vth = 1.f / c.vth;

  const int64_t nseg = (TT + L - 1) / L;
  // Checkpoints: state at the start of segments 0, per, 2 per, ... (local memory; only the
  // kCkpt instantiation has them).
  constexpr int kSlots = kCkpt ? kMaxCkpt : 1;
  float ck_v[kSlots][VEC];
  float ck_a[kAd ? kSlots : 1][VEC];
  int64_t per = 1;
  if (kCkpt && nseg > 1) {
    per = (nseg + kMaxCkpt - 1) / kMaxCkpt;
    for (int64_t sg = 0; sg < nseg - 1; ++sg) {
      if (sg % per == 0) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          ck_v[sg / per][e] = v[e];
          if (kAd) ck_a[sg / per][e] = a[e];
        }
      }
      advance<T, VEC, kMul, F>(c, x, N, i0, sg * L, sg * L + L, k, v, a);
    }
    // v, a now hold the state at the start of the last segment.
  }

  for (int64_t sg = nseg - 1; sg >= 0; --sg) {
    if (kCkpt && sg != nseg - 1) {
      const int64_t slot = sg / per;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        v[e] = ck_v[slot][e];
        if (kAd) a[e] = ck_a[slot][e];
      }
      advance<T, VEC, kMul, F>(c, x, N, i0, slot * per * L, sg * L, k, v, a);
    }
    const int64_t t0 = sg * L;
    const int len = static_cast<int>(TT - t0 < L ? TT - t0 : L);

    // Recompute the segment, keeping what the reverse walk needs.
    float hs[L][VEC];
    float ths[kAd ? L : 1][VEC];
    float dks[kMul ? L : 1][VEC];
#pragma unroll
    for (int j0 = 0; j0 < L; j0 += kFwdChunk) {
      float xs[kFwdChunk][VEC];
#pragma unroll
      for (int j = 0; j < kFwdChunk; ++j)
        if (j0 + j < len) load_pack<T, VEC>(x + (t0 + j0 + j) * N + i0, xs[j]);
#pragma unroll
      for (int j = 0; j < kFwdChunk; ++j) {
        if (j0 + j < len) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            float thr, dk;
            neuron_step<F>(c, v[e], a[e], xs[j][e], k[e], hs[j0 + j][e], thr, dk);
            if (kAd) ths[kAd ? j0 + j : 0][e] = thr;
            if (kMul) dks[kMul ? j0 + j : 0][e] = dk;
          }
        }
      }
    }

    // Reverse walk.
#pragma unroll
    for (int j0 = L - kBwdChunk; j0 >= 0; j0 -= kBwdChunk) {
      float gss[kBwdChunk][VEC];
#pragma unroll
      for (int j = 0; j < kBwdChunk; ++j)
        if (j0 + j < len) load_pack<T, VEC>(gspk + (t0 + j0 + j) * N + i0, gss[j]);
#pragma unroll
      for (int j = kBwdChunk - 1; j >= 0; --j) {
        const int jj = j0 + j;
        if (jj < len) {
          float gxo[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float h = hs[jj][e];
            const float thr = kAd ? ths[kAd ? jj : 0][e] : c.vth;
            float s, dsdh;
            if (F == Fire::kInteger) {
              const float u = fdiv(h, c.vth);
              s = quantize(u, c.level_max, c.half_up);
              dsdh = (u >= 0.f && u <= c.level_max) ? inv_vth : 0.f;
            } else {
              const float u = fsub(h, thr);
              s = u >= 0.f ? 1.f : 0.f;
              dsdh = surrogate_grad(c.surrogate, u, c.alpha);
            }
            float g_s = gss[j][e];
            if (kAd) g_s += ga[e];
            if (!c.detach) g_s += gv[e] * (c.hard ? (c.vr - h) : -thr);
            const float g_h = g_s * dsdh + (c.hard ? gv[e] * (1.f - s) : gv[e]);
            if (kAd) {
              // The soft reset H - S thr depends on thr even when S is detached.
              float g_thr = -g_s * dsdh;
              if (!c.hard) g_thr -= gv[e] * s;
              ga[e] = ga[e] - ga[e] / c.tau_adapt + c.beta * g_thr;
            }
            if (kMul) {
              gk[e] += g_h * dks[kMul ? jj : 0][e];
              const float gk_h = g_h * k[e];
              gxo[e] = decay_input ? gk_h : g_h;
              gv[e] = g_h - gk_h;
            } else if (no_leak) {
              gxo[e] = g_h;
              gv[e] = g_h;
            } else {
              const float g_tau = g_h / c.tau;
              gxo[e] = decay_input ? g_tau : g_h;
              gv[e] = g_h - g_tau;
            }
          }
          store_pack<T, VEC>(gx + (t0 + jj) * N + i0, gxo);
        }
      }
    }
  }
  (void)ck_v;
  (void)ck_a;

#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    p.grad_v0[i0 + e] = gv[e];
    if (kAd) p.grad_a0[i0 + e] = ga[e];
    if (kMul && p.grad_decay) p.grad_decay[i0 + e] = gk[e];
  }
}

// ---------------------------------------------------------------------------------------
// Kernels and per-dtype launchers (explicitly instantiated in neuron_{fwd,bwd}_*.cu).
constexpr int kFwdThreads = 256;
constexpr int kBwdThreads = 128;
// Caps the backward at 128 registers: >= 16 resident warps per SM, each thread with a
// chunk of independent loads in flight, is what a bandwidth-bound kernel needs.
constexpr int kBwdMinBlocks = 4;

template <typename T, int VEC, bool kMul, Fire F>
__global__ void __launch_bounds__(kFwdThreads)
    neuron_fwd_kernel(const __grid_constant__ NeuronParams p) {
  fwd_thread<T, VEC, kMul, F>(p, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
}

template <typename T, int L, int VEC, bool kMul, Fire F, bool kCkpt>
__global__ void __launch_bounds__(kBwdThreads, kBwdMinBlocks)
    neuron_bwd_kernel(const __grid_constant__ NeuronParams p) {
  bwd_thread<T, L, VEC, kMul, F, kCkpt>(p,
                                       static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
}

inline bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

// Packs need every [T, N] / [N] row start aligned: N % 8 == 0 keeps rows of 2-byte and
// 4-byte types 16-byte aligned once the base pointers are.
inline bool can_vectorize(const NeuronParams& p) {
  if (p.N % 8 != 0) return false;
  const void* ptrs[] = {p.x, p.v0, p.a0, p.spikes, p.v_last, p.a_last, p.v_seq,
                        p.grad_spikes, p.grad_v_last, p.grad_a_last, p.grad_x,
                        p.grad_v0, p.grad_a0, p.grad_decay};
  for (const void* q : ptrs)
    if (q && !aligned16(q)) return false;
  return true;
}

inline unsigned blocks_for(int64_t N, int vec, int threads) {
  const int64_t work = (N + vec - 1) / vec;
  return static_cast<unsigned>((work + threads - 1) / threads);
}

#define SPIKEOPS_FIRE_SWITCH(FIRE, NAME, ...)                  \
  [&] {                                                        \
    switch (FIRE) {                                            \
      case Fire::kInteger: {                                   \
        constexpr Fire NAME = Fire::kInteger;                  \
        return __VA_ARGS__();                                  \
      }                                                        \
      case Fire::kAdaptive: {                                  \
        constexpr Fire NAME = Fire::kAdaptive;                 \
        return __VA_ARGS__();                                  \
      }                                                        \
      default: {                                               \
        constexpr Fire NAME = Fire::kBinary;                   \
        return __VA_ARGS__();                                  \
      }                                                        \
    }                                                          \
  }()

// Mul charges come only with the binary fire (PLIF): no op builds Mul + integer or
// Mul + adaptive, so those are not instantiated (compile time) and report NotSupported.
#define SPIKEOPS_MUL_SWITCH(FIRE, CHARGE, NAME, ...)       \
  [&]() -> cudaError_t {                                   \
    if (!is_mul(CHARGE)) {                                 \
      constexpr bool NAME = false;                         \
      return __VA_ARGS__();                                \
    }                                                      \
    if constexpr (FIRE == Fire::kBinary) {                 \
      constexpr bool NAME = true;                          \
      return __VA_ARGS__();                                \
    } else {                                               \
      return cudaErrorNotSupported;                        \
    }                                                      \
  }()

// Forward vector width: 16-byte packs.
template <typename T>
cudaError_t launch_fwd(const NeuronParams& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = can_vectorize(p);
  return SPIKEOPS_FIRE_SWITCH(p.fire, kF, [&] {
    return SPIKEOPS_MUL_SWITCH(kF, p.charge, kMul, [&] {
      if (vec) {
        neuron_fwd_kernel<T, kVec, kMul, kF>
            <<<blocks_for(p.N, kVec, kFwdThreads), kFwdThreads, 0, stream>>>(p);
      } else {
        neuron_fwd_kernel<T, 1, kMul, kF>
            <<<blocks_for(p.N, 1, kFwdThreads), kFwdThreads, 0, stream>>>(p);
      }
      return cudaGetLastError();
    });
  });
}

// Backward buckets: the register arrays hold L * VEC values each, so the vector width
// shrinks as the segment grows (<= 32 fp32 per array, to stay under the register cap).
template <typename T, int L, int VEC, bool kMul, Fire F, bool kCkpt>
cudaError_t launch_bwd_one(const NeuronParams& p, cudaStream_t stream) {
  neuron_bwd_kernel<T, L, VEC, kMul, F, kCkpt>
      <<<blocks_for(p.N, VEC, kBwdThreads), kBwdThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const NeuronParams& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  const bool vec = can_vectorize(p);
  return SPIKEOPS_FIRE_SWITCH(p.fire, kF, [&] {
    return SPIKEOPS_MUL_SWITCH(kF, p.charge, kMul, [&] {
      if (p.T <= 8) {
        return vec ? launch_bwd_one<T, 8, 2, kMul, kF, false>(p, stream)
                   : launch_bwd_one<T, 8, 1, kMul, kF, false>(p, stream);
      }
      if (p.T <= 16) {
        // Adaptive keeps a second array (thresholds): pairs would spill past the cap.
        constexpr int kVec16 = kF == Fire::kAdaptive ? 1 : 2;
        return vec ? launch_bwd_one<T, 16, kVec16, kMul, kF, false>(p, stream)
                   : launch_bwd_one<T, 16, 1, kMul, kF, false>(p, stream);
      }
      return launch_bwd_one<T, 32, 1, kMul, kF, true>(p, stream);
    });
  });
}

}  // namespace cuda_neuron
}  // namespace spikeops
