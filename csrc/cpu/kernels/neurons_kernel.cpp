// Fused multi-step neurons on the CPU, compiled once per ISA (see simd.h).
//
// Math (per element, t = 0..T-1, state in fp32):
//   H_t = charge(V_{t-1}, X_t)              LIF / IF / PLIF / ILIF / ALIF charges
//   S_t = fire(H_t [, A_{t-1}])             Heaviside, integer levels or adaptive
//   V_t = reset(H_t, S_t)                   hard (1-S)H + S Vr or soft H - S thr
//   A_t = A_{t-1} - A_{t-1} / tau_a + S_t   (ALIF only)
// The float operations are those of the PyTorch reference, in its order, so the
// spikes match it bit for bit.
//
// Memory traffic: forward reads X and writes S (plus the [N] state); backward
// reads X and dL/dS and writes dL/dX. Nothing is saved between them: backward
// recomputes H (and the adaptive threshold) with the same code as forward,
// which makes the recomputed spikes bit-identical to the emitted ones.
//
// Parallelisation: the caller splits the N elements into ranges (one per task);
// a range is walked in blocks of B elements whose state stays in L1 while all T
// steps stream through, so each step reads and writes B contiguous values.
// Backward keeps H for T x B elements of one block (sized to stay in L2).
#include <algorithm>
#include <vector>

#include "cpu/kernels/simd.h"
#include "cpu/kernels/surrogate.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

constexpr int64_t kBlock = 4096;  // elements per block: rows long enough for the prefetcher

// Rows of one block are N elements apart, too far for the hardware prefetcher to
// follow from row to row: fetch the next row's vector while working on this one.
SPIKEOPS_INLINE void prefetch_row(const void* base, int64_t i, DType dt) {
  __builtin_prefetch(static_cast<const char*>(base) + i * dtype_size(dt), 0, 3);
}

// Stream (non-temporal) [T, N] outputs that are far larger than the caches, when
// every full vector of them is aligned. Only float32 outputs are streamed.
inline bool use_streaming(const void* out, const NeuronParams& p) {
  constexpr int64_t kStreamBytes = int64_t(16) << 20;
  return p.dtype == DType::kFloat32 && p.T * p.N * 4 >= kStreamBytes && p.N % kWidth == 0 &&
         reinterpret_cast<uintptr_t>(out) % (kWidth * 4) == 0;
}

struct Step {
  VecF h, thr, s;
};

inline bool is_pow2(float f) {
  int e;
  return f > 0 && std::isfinite(f) && std::frexp(f, &e) == 0.5f;
}

// a / tau. When 1/tau is exact (tau a power of two) multiplying by `inv_tau` gives the
// identical result without a division.
SPIKEOPS_INLINE VecF div_tau(VecF a, VecF tau, VecF inv_tau, bool exact_inverse) {
  return exact_inverse ? a * inv_tau : a / tau;
}

template <Charge C>
SPIKEOPS_INLINE VecF charge(VecF v, VecF x, VecF vr, VecF tau, VecF k, VecF inv_tau = VecF(0.f),
                            bool exact_inverse = false) {
  switch (C) {
    case Charge::kDivDecayInput: return v + div_tau(x - (v - vr), tau, inv_tau, exact_inverse);
    case Charge::kDivDecay: return v - div_tau(v - vr, tau, inv_tau, exact_inverse) + x;
    case Charge::kMulDecayInput: return v + (x - (v - vr)) * k;
    case Charge::kMulDecay: return v - (v - vr) * k + x;
    default: return v + x;
  }
}

struct FireConsts {
  VecF vth, dmax, beta, half, zero, one;
  bool half_up;
};

template <Fire F>
SPIKEOPS_INLINE Step fire(VecF h, VecF a, const FireConsts& c) {
  Step st;
  st.h = h;
  if (F == Fire::kInteger) {
    VecF u = h / c.vth;
    VecF q = select(lt(u, c.zero), c.zero, u);  // clamp that keeps NaN, like torch
    q = select(lt(c.dmax, q), c.dmax, q);
    st.s = c.half_up ? vfloor(q + c.half) : vrint(q);
    st.thr = c.vth;
  } else {
    st.thr = F == Fire::kAdaptive ? c.vth + c.beta * a : c.vth;
    st.s = select(ge(h - st.thr, c.zero), c.one, c.zero);
  }
  return st;
}

template <bool HARD>
SPIKEOPS_INLINE VecF reset(const Step& st, VecF vr, VecF one) {
  if (HARD) return (one - st.s) * st.h + st.s * vr;
  return st.h - st.s * st.thr;
}

inline FireConsts fire_consts(const NeuronParams& p) {
  return {VecF(p.v_threshold), VecF(float(p.max_level)), VecF(p.beta), VecF(0.5f),
          VecF(0.f), VecF(1.f), p.rounding == Rounding::kHalfUp};
}

// k for elements i0 .. i0+n-1; the channel index is walked, not divided out per element.
inline void fill_decay(const NeuronParams& p, int64_t i0, int64_t n, float* k) {
  if (p.decay_channels == 1) {
    std::fill(k, k + n, p.decay[0]);
    return;
  }
  int64_t c = (i0 / p.decay_inner) % p.decay_channels;
  int64_t r = i0 % p.decay_inner;
  for (int64_t j = 0; j < n; ++j) {
    k[j] = p.decay[c];
    if (++r == p.decay_inner) {
      r = 0;
      if (++c == p.decay_channels) c = 0;
    }
  }
}

template <Charge C, Fire F, bool HARD>
void forward_range(const NeuronParams& p, int64_t begin, int64_t end) {
  const int64_t N = p.N;
  const FireConsts fc = fire_consts(p);
  const VecF vr(HARD ? p.v_reset : 0.f), tau(p.tau), tau_a(p.tau_adapt);
  const bool tau_pow2 = is_pow2(p.tau);
  const VecF inv_tau(1.f / p.tau);
  const bool stream = use_streaming(p.spikes, p);
  alignas(64) float vbuf[kBlock], abuf[kBlock], kbuf[kBlock];
  for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
    const int64_t nb = std::min(kBlock, end - i0);
    for (int64_t j = 0; j < nb; ++j) {
      vbuf[j] = p.v0 ? p.v0[i0 + j] : initial_membrane(p);
      abuf[j] = p.a0 ? p.a0[i0 + j] : 0.f;
    }
    if (C == Charge::kMulDecayInput || C == Charge::kMulDecay) fill_decay(p, i0, nb, kbuf);
    for (int64_t t = 0; t < p.T; ++t) {
      const int64_t row = t * N + i0;
      for (int64_t j = 0; j < nb; j += kWidth) {
        const int n = int(std::min<int64_t>(kWidth, nb - j));
        VecF v = load_f32(vbuf + j, n);
        VecF a = F == Fire::kAdaptive ? load_f32(abuf + j, n) : fc.zero;
        VecF k = (C == Charge::kMulDecayInput || C == Charge::kMulDecay) ? load_f32(kbuf + j, n) : fc.zero;
        if (t + 1 < p.T) prefetch_row(p.x, row + N + j, p.dtype);
        VecF x = load_any(p.x, row + j, p.dtype, n);
        Step st = fire<F>(charge<C>(v, x, vr, tau, k, inv_tau, tau_pow2), a, fc);
        v = reset<HARD && F != Fire::kInteger>(st, vr, fc.one);
        store_out(p.spikes, row + j, p.dtype, st.s, n, stream);
        store_f32(vbuf + j, v, n);
        if (F == Fire::kAdaptive) store_f32(abuf + j, a - a / tau_a + st.s, n);
        if (p.v_seq) store_f32(p.v_seq + row + j, v, n);
      }
    }
    std::copy(vbuf, vbuf + nb, p.v_last + i0);
    if (F == Fire::kAdaptive) std::copy(abuf, abuf + nb, p.a_last + i0);
  }
  stream_fence();
}

// Elements per backward block, so that the saved H (and threshold, dH/dk) of one
// block over all T steps stays around 256 KiB (in L2).
inline int64_t backward_block(int64_t T, int saved_per_step) {
  int64_t b = (int64_t(65536) / std::max<int64_t>(1, T * saved_per_step)) / kWidth * kWidth;
  return std::clamp<int64_t>(b, kWidth, kBlock);
}

template <Charge C, Fire F, bool HARD>
void backward_range(const NeuronParams& p, int64_t begin, int64_t end) {
  constexpr bool kMul = C == Charge::kMulDecayInput || C == Charge::kMulDecay;
  constexpr bool kAdapt = F == Fire::kAdaptive;
  constexpr bool kHardReset = HARD && F != Fire::kInteger;
  const int64_t N = p.N, T = p.T;
  const FireConsts fc = fire_consts(p);
  const VecF vr(HARD ? p.v_reset : 0.f), tau(p.tau), tau_a(p.tau_adapt);
  const VecF alpha(p.alpha), one(1.f), zero(0.f);
  const VecF a_keep = one - one / tau_a;
  // x / tau == x * (1 / tau) exactly when tau is a power of two (the default 2.0).
  const bool tau_pow2 = is_pow2(p.tau);
  const VecF inv_tau(1.f / p.tau);
  const bool stream = use_streaming(p.grad_x, p);
  const int saved = 1 + (kAdapt ? 1 : 0) + (kMul ? 1 : 0);
  const int64_t B = backward_block(T, saved);
  std::vector<float> hbuf(size_t(T * B)), thrbuf(kAdapt ? size_t(T * B) : 0),
      dkbuf(kMul ? size_t(T * B) : 0), state(size_t(4 * B));
  float* vbuf = state.data();
  float* abuf = vbuf + B;
  float* kbuf = abuf + B;
  float* gkbuf = kbuf + B;  // dL/dk summed over the steps seen so far

  for (int64_t i0 = begin; i0 < end; i0 += B) {
    const int64_t nb = std::min(B, end - i0);
    for (int64_t j = 0; j < nb; ++j) {
      vbuf[j] = p.v0 ? p.v0[i0 + j] : initial_membrane(p);
      abuf[j] = p.a0 ? p.a0[i0 + j] : 0.f;
    }
    if (kMul) fill_decay(p, i0, nb, kbuf);
    // Recompute the forward for this block, keeping what backward needs.
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < nb; j += kWidth) {
        const int n = int(std::min<int64_t>(kWidth, nb - j));
        VecF v = load_f32(vbuf + j, n);
        VecF a = kAdapt ? load_f32(abuf + j, n) : zero;
        VecF k = kMul ? load_f32(kbuf + j, n) : zero;
        if (t + 1 < T) prefetch_row(p.x, (t + 1) * N + i0 + j, p.dtype);
        VecF x = load_any(p.x, t * N + i0 + j, p.dtype, n);
        Step st = fire<F>(charge<C>(v, x, vr, tau, k, inv_tau, tau_pow2), a, fc);
        if (kMul) {
          VecF dk = C == Charge::kMulDecayInput ? x - (v - vr) : zero - (v - vr);
          store_f32(dkbuf.data() + t * B + j, dk, n);
        }
        store_f32(hbuf.data() + t * B + j, st.h, n);
        if (kAdapt) {
          store_f32(thrbuf.data() + t * B + j, st.thr, n);
          store_f32(abuf + j, a - a / tau_a + st.s, n);
        }
        store_f32(vbuf + j, reset<kHardReset>(st, vr, fc.one), n);
      }
    }
    // Backpropagation through time; vbuf/abuf now carry dL/dV and dL/dA.
    for (int64_t j = 0; j < nb; ++j) {
      vbuf[j] = p.grad_v_last ? p.grad_v_last[i0 + j] : 0.f;
      abuf[j] = (kAdapt && p.grad_a_last) ? p.grad_a_last[i0 + j] : 0.f;
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t j = 0; j < nb; j += kWidth) {
        const int n = int(std::min<int64_t>(kWidth, nb - j));
        VecF gv = load_f32(vbuf + j, n);
        VecF ga = kAdapt ? load_f32(abuf + j, n) : zero;
        VecF h = load_f32(hbuf.data() + t * B + j, n);
        VecF thr_prev_a = kAdapt ? load_f32(thrbuf.data() + t * B + j, n) : zero;
        Step st;
        if (kAdapt) {  // same comparison as fire<kAdaptive> on the stored threshold
          st.h = h;
          st.thr = thr_prev_a;
          st.s = select(ge(h - st.thr, zero), one, zero);
        } else {
          st = fire<F>(h, zero, fc);
        }
        if (t > 0) prefetch_row(p.grad_spikes, (t - 1) * N + i0 + j, p.dtype);
        VecF gs = load_any(p.grad_spikes, t * N + i0 + j, p.dtype, n);
        if (kAdapt) gs = gs + ga;
        if (!p.detach_reset) gs = vfma(gv, kHardReset ? vr - h : zero - st.thr, gs);
        VecF gh;
        if (F == Fire::kInteger) {
          VecF u = h / fc.vth;
          VecF inside = select(ge(u, zero) & le(u, fc.dmax), one, zero);
          gh = (gs * inside) / fc.vth + gv;
        } else {
          VecF sg = surrogate_grad(p.surrogate, h - st.thr, alpha);
          gh = vfma(gs, sg, kHardReset ? gv * (one - st.s) : gv);
          if (kAdapt) {
            VecF gthr = zero - gs * sg;
            // The soft reset subtracts the (undetached) threshold: V = H - S thr.
            if (!kHardReset) gthr = gthr - gv * st.s;
            store_f32(abuf + j, ga * a_keep + fc.beta * gthr, n);
          }
        }
        VecF gx, gvp;
        switch (C) {
          case Charge::kDivDecayInput:
            gx = div_tau(gh, tau, inv_tau, tau_pow2);
            gvp = gh - gx;
            break;
          case Charge::kDivDecay: gx = gh; gvp = gh - div_tau(gh, tau, inv_tau, tau_pow2); break;
          case Charge::kMulDecayInput: {
            VecF k = load_f32(kbuf + j, n);
            gx = gh * k; gvp = gh - gh * k; break;
          }
          case Charge::kMulDecay: {
            VecF k = load_f32(kbuf + j, n);
            gx = gh; gvp = gh - gh * k; break;
          }
          default: gx = gh; gvp = gh; break;
        }
        if (kMul) {
          VecF term = gh * load_f32(dkbuf.data() + t * B + j, n);
          store_f32(gkbuf + j, t == T - 1 ? term : load_f32(gkbuf + j, n) + term, n);
        }
        store_out(p.grad_x, t * N + i0 + j, p.dtype, gx, n, stream);
        store_f32(vbuf + j, gvp, n);
      }
    }
    std::copy(vbuf, vbuf + nb, p.grad_v0 + i0);
    if (kAdapt && p.grad_a0) std::copy(abuf, abuf + nb, p.grad_a0 + i0);
    if (kMul && p.grad_decay) std::copy(gkbuf, gkbuf + nb, p.grad_decay + i0);
  }
  stream_fence();
}

using RangeFn = void (*)(const NeuronParams&, int64_t, int64_t);

template <bool FWD, Charge C, Fire F>
RangeFn pick_reset(const NeuronParams& p) {
  if (FWD) return p.hard_reset ? forward_range<C, F, true> : forward_range<C, F, false>;
  return p.hard_reset ? backward_range<C, F, true> : backward_range<C, F, false>;
}

template <bool FWD, Charge C>
RangeFn pick_fire(const NeuronParams& p) {
  switch (p.fire) {
    case Fire::kBinary: return pick_reset<FWD, C, Fire::kBinary>(p);
    case Fire::kInteger: return pick_reset<FWD, C, Fire::kInteger>(p);
    default: return pick_reset<FWD, C, Fire::kAdaptive>(p);
  }
}

template <bool FWD>
RangeFn pick(const NeuronParams& p) {
  switch (p.charge) {
    case Charge::kDivDecayInput: return pick_fire<FWD, Charge::kDivDecayInput>(p);
    case Charge::kDivDecay: return pick_fire<FWD, Charge::kDivDecay>(p);
    // PLIF and IF fire binary spikes only (the Python layer enforces it).
    case Charge::kMulDecayInput: return pick_reset<FWD, Charge::kMulDecayInput, Fire::kBinary>(p);
    case Charge::kMulDecay: return pick_reset<FWD, Charge::kMulDecay, Fire::kBinary>(p);
    default: return pick_reset<FWD, Charge::kNoLeak, Fire::kBinary>(p);
  }
}

}  // namespace

void neuron_forward(const NeuronParams& p, int64_t begin, int64_t end) {
  pick<true>(p)(p, begin, end);
}

void neuron_backward(const NeuronParams& p, int64_t begin, int64_t end) {
  pick<false>(p)(p, begin, end);
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
