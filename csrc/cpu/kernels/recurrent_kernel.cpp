// Recurrent attention ops on the CPU, compiled once per ISA (see simd.h): the RWKV-4 WKV
// recurrence and spike-driven self-attention (SDSA). Both vectorise over the channel /
// feature axis and walk time sequentially with the state in L1.
//
// ---- RWKV-4 WKV (common/recurrent_params.h has the math) -------------------------------
// Forward, per step, exactly the reference's stable form (max / exp / divide):
//   q = max(p, u + k);  y = (e^{p-q} a + e^{u+k-q} v) / (e^{p-q} b + e^{u+k-q})
//   q' = max(p + w, k); a = e^{p+w-q'} a + e^{k-q'} v; b = e^{p+w-q'} b + e^{k-q'}; p = q'
// Backward (derived by hand, checked against the reference's autograd in tests): the
// adjoints of the unscaled A_t, B_t obey the reverse recurrences
//   alpha_t = gy_t / D_t + e^w alpha_{t+1},  beta_t = -gy_t y_t / D_t + e^w beta_{t+1}
// (D_t = B_t + e^{u+k_t}); they are kept like the forward state, as (ga, gb, r) with
// alpha = ga e^r, r a running max exponent, so every exp() below has a non-positive
// argument (up to rounding) and nothing overflows for any T or any k:
//   dv_t = gy e^{u+k-q}/d + e^{k+r} ga
//   dk_t = gy e^{u+k-q}(v - y)/d + e^{k+r}(ga v + gb)
//   du  += gy e^{u+k-q}(v - y)/d
//   dw  += e^{w+r+p}(ga a + gb b)                (d = e^{p-q} b + e^{u+k-q} >= 1)
// with (a, b, p) the state before step t. Nothing is saved by the forward: the backward
// runs the forward once keeping the state every kSeg steps (checkpoints, O(T / kSeg)),
// then per segment, last first, recomputes kSeg steps' states into an L1-sized buffer
// and walks them in reverse. dw, du are summed over t per (b, c) into param_partial and
// reduced over b by the caller (fixed order: deterministic).
// Accuracy: ga v + gb in dk cancels when a token dominates a later output (y_s ~ v_t), so
// dk can be off by a few ulps of gy v / D in absolute terms (~1e-6 of the gradient's
// scale): a few times the reference autograd's error at T = 2-3 (tests/ say how held).
// Memory traffic: forward reads k, v, writes y; backward reads k, v from memory twice (the
// checkpoint pass; the segment recompute, whose rows the reverse walk then finds in
// cache) and gy once, writes dk, dv. The cost is the exps: each max / exp pair of the
// reference is one exp (one of the two factors is exactly 1), so two per element-step
// forward and six backward. Measured (one thread, AVX-512, [8, 1024, 512] fp32, CPU time
// on the shared 2-vCPU EPYC VM): forward 4.3 ms (~11 GB/s of k, v, y), backward 16.6 ms.
// Parallelisation (csrc/cpu/recurrent.cpp): a task is (b, block of <= 64 channels).
//
// ---- SDSA ------------------------------------------------------------------------------
// Forward per (head g, feature range): for each t, kv = sum_n k v (fp32, serial in n),
// the LIF step H = V + (kv - V) / tau, S = [H - Vth >= 0], V = (1 - S) H (the reference's
// float operations in its order), H stored to h_seq, then out = q S for the N rows.
// Reads q, k, v once, writes out once (+ h_seq, 1/N of that).
// Backward: pass 1 reads grad_out and q, writes dq = g S and dS_t = sum_n g q; the BPTT of
// the LIF over t on [T, features] (from the saved H) gives d(kv)_t; pass 2 reads k, v and
// writes dk = d(kv) v, dv = d(kv) k. Every tensor is read or written exactly once.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/recurrent_params.h"
#include "cpu/kernels/simd.h"
#include "cpu/kernels/surrogate.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {
namespace {

constexpr int64_t kChanBlock = 64;  // RWKV channels per task (a multiple of every kWidth)
constexpr int64_t kSeg = 32;        // RWKV backward: steps per recomputed segment

// exp(x) for the stable scans: x <= 0 (up to rounding); below -87 the result is 0 (fp32
// would be denormal or 0 there, and it always multiplies a term that is added to one
// of size >= 1). NaN stays NaN.
SPIKEOPS_INLINE VecF exp_neg(VecF x) {
  return select(lt(x, VecF(-87.f)), VecF(0.f), vexp(x));
}

// torch.maximum propagates NaN; x86 max returns its second operand when unordered, so
// put the value that may carry a NaN from the inputs (k) second.
SPIKEOPS_INLINE VecF vmax_nan(VecF state, VecF input) { return vmax(state, input); }

struct RwkvState {
  VecF a, b, p;
};

// exp(a - m) and exp(b - m) for m = max(a, b) with one exp: one of them is exp(0) = 1 and
// the other exp(-|a - b|), the same float argument as the reference's (b - a is exactly
// -(a - b)), so the same values as two exps at half the cost. NaN in a or b: m and the
// non-1 factor are NaN (like torch.maximum), so it propagates.
SPIKEOPS_INLINE void exp_pair(VecF a, VecF b, VecF& ea, VecF& eb, VecF& m) {
  const VecF one(1.f);
  m = vmax_nan(a, b);
  const VecF x = exp_neg(VecF(0.f) - vabs(a - b));
  const MaskF a_ge = ge(a, b);
  ea = select(a_ge, one, x);
  eb = select(a_ge, x, one);
}

SPIKEOPS_INLINE VecF wkv_output(const RwkvState& s, VecF u, VecF k, VecF v) {
  VecF e1, e2, q;
  exp_pair(s.p, u + k, e1, e2, q);
  return (e1 * s.a + e2 * v) / (e1 * s.b + e2);
}

SPIKEOPS_INLINE void wkv_update(RwkvState& s, VecF w, VecF k, VecF v) {
  VecF e1, e2, q;
  exp_pair(s.p + w, k, e1, e2, q);
  s.a = e1 * s.a + e2 * v;
  s.b = e1 * s.b + e2;
  s.p = q;
}

// Channel constants of one block: w = -exp(time_decay), u = time_first.
inline void load_params(const RWKVParams& p, int64_t c0, int64_t nc, float* w, float* u) {
  for (int64_t j = 0; j < nc; ++j) {
    w[j] = -std::exp(p.time_decay[c0 + j]);
    u[j] = p.time_first[c0 + j];
  }
  for (int64_t j = nc; j < kChanBlock; ++j) w[j] = u[j] = 0.f;
}

// Steps [t0, t1) of channels [c0, c0 + nc) of batch row b. Keeps the state in a/b/pb
// ([kChanBlock] each); when `y` is set writes the outputs; when `states` is set stores the
// pre-step state of step t at states[((t - t0) * 3 + {0,1,2}) * kChanBlock + j].
void rwkv_steps(const RWKVParams& p, int64_t b, int64_t c0, int64_t nc, int64_t t0,
                int64_t t1, const float* w, const float* u, float* a, float* bb, float* pb,
                void* y, float* states) {
  const int64_t C = p.C;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = (b * p.T + t) * C + c0;
    float* st = states ? states + (t - t0) * 3 * kChanBlock : nullptr;
    for (int64_t j = 0; j < nc; j += kWidth) {
      const int n = int(std::min<int64_t>(kWidth, nc - j));
      RwkvState s{load_f32(a + j, n), load_f32(bb + j, n), load_f32(pb + j, n)};
      if (st) {
        store_f32(st + j, s.a, n);
        store_f32(st + kChanBlock + j, s.b, n);
        store_f32(st + 2 * kChanBlock + j, s.p, n);
      }
      const VecF k = load_any(p.k, row + j, p.dtype, n);
      const VecF v = load_any(p.v, row + j, p.dtype, n);
      if (y) store_any(y, row + j, p.dtype, wkv_output(s, load_f32(u + j, n), k, v), n);
      wkv_update(s, load_f32(w + j, n), k, v);
      store_f32(a + j, s.a, n);
      store_f32(bb + j, s.b, n);
      store_f32(pb + j, s.p, n);
    }
  }
}

inline void reset_state(float* a, float* bb, float* pb) {
  std::fill(a, a + kChanBlock, 0.f);
  std::fill(bb, bb + kChanBlock, 0.f);
  std::fill(pb, pb + kChanBlock, kRwkvEmpty);
}

}  // namespace

void rwkv_forward(const RWKVParams& p, int64_t b, int64_t c0, int64_t c1) {
  const int64_t nc = c1 - c0;
  alignas(64) float w[kChanBlock], u[kChanBlock], a[kChanBlock], bb[kChanBlock], pb[kChanBlock];
  load_params(p, c0, nc, w, u);
  reset_state(a, bb, pb);
  rwkv_steps(p, b, c0, nc, 0, p.T, w, u, a, bb, pb, p.y, nullptr);
}

void rwkv_backward(const RWKVParams& p, int64_t b, int64_t c0, int64_t c1) {
  const int64_t nc = c1 - c0, T = p.T, C = p.C;
  const int64_t nseg = (T + kSeg - 1) / kSeg;
  alignas(64) float w[kChanBlock], u[kChanBlock], a[kChanBlock], bb[kChanBlock], pb[kChanBlock];
  alignas(64) float ga[kChanBlock], gb[kChanBlock], r[kChanBlock], dw[kChanBlock],
      du[kChanBlock];
  thread_local std::vector<float> ckpt, seg;
  ckpt.resize(size_t(std::max<int64_t>(1, nseg) * 3 * kChanBlock));
  seg.resize(size_t(kSeg * 3 * kChanBlock));
  load_params(p, c0, nc, w, u);
  reset_state(a, bb, pb);
  // Pass 1: the state at every segment start.
  for (int64_t s = 0; s < nseg; ++s) {
    float* ck = ckpt.data() + s * 3 * kChanBlock;
    std::copy(a, a + kChanBlock, ck);
    std::copy(bb, bb + kChanBlock, ck + kChanBlock);
    std::copy(pb, pb + kChanBlock, ck + 2 * kChanBlock);
    if (s + 1 < nseg)
      rwkv_steps(p, b, c0, nc, s * kSeg, s * kSeg + kSeg, w, u, a, bb, pb, nullptr, nullptr);
  }
  std::fill(ga, ga + kChanBlock, 0.f);
  std::fill(gb, gb + kChanBlock, 0.f);
  std::fill(r, r + kChanBlock, kRwkvEmpty);
  std::fill(dw, dw + kChanBlock, 0.f);
  std::fill(du, du + kChanBlock, 0.f);
  const VecF zero(0.f);
  // Pass 2: segments last first; recompute each one's pre-step states, walk back.
  for (int64_t s = nseg - 1; s >= 0; --s) {
    const int64_t t0 = s * kSeg, t1 = std::min(T, t0 + kSeg);
    const float* ck = ckpt.data() + s * 3 * kChanBlock;
    std::copy(ck, ck + kChanBlock, a);
    std::copy(ck + kChanBlock, ck + 2 * kChanBlock, bb);
    std::copy(ck + 2 * kChanBlock, ck + 3 * kChanBlock, pb);
    rwkv_steps(p, b, c0, nc, t0, t1, w, u, a, bb, pb, nullptr, seg.data());
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t row = (b * T + t) * C + c0;
      const float* st = seg.data() + (t - t0) * 3 * kChanBlock;
      for (int64_t j = 0; j < nc; j += kWidth) {
        const int n = int(std::min<int64_t>(kWidth, nc - j));
        const VecF sa = load_f32(st + j, n), sb = load_f32(st + kChanBlock + j, n),
                   sp = load_f32(st + 2 * kChanBlock + j, n);
        const VecF k = load_any(p.k, row + j, p.dtype, n);
        const VecF v = load_any(p.v, row + j, p.dtype, n);
        const VecF gy = load_any(p.grad_y, row + j, p.dtype, n);
        const VecF uu = load_f32(u + j, n), ww = load_f32(w + j, n);
        VecF vga = load_f32(ga + j, n), vgb = load_f32(gb + j, n), vr = load_f32(r + j, n);
        // This step's output, recomputed.
        VecF e1, e2, q;
        exp_pair(sp, uu + k, e1, e2, q);
        const VecF d = e1 * sb + e2;
        const VecF y = (e1 * sa + e2 * v) / d;
        const VecF gyd = gy / d;
        // Direct terms (this step's output) and the state terms (later outputs).
        const VecF c2 = gyd * e2;
        const VecF vy = v - y;
        const VecF f = exp_neg(k + vr);
        const VecF gv_ = vfma(f, vga, c2);
        const VecF gk_ = vfma(c2, vy, f * vfma(vga, v, vgb));
        store_f32(du + j, vfma(c2, vy, load_f32(du + j, n)), n);
        const VecF fw = exp_neg(ww + vr + sp);
        store_f32(dw + j, vfma(fw, vfma(vga, sa, vgb * sb), load_f32(dw + j, n)), n);
        // Adjoints of the state before this step.
        VecF s1, s2, r2;
        exp_pair(vr + ww, zero - q, s1, s2, r2);
        const VecF s2g = s2 * gyd;
        vga = vfma(s1, vga, s2g);
        vgb = s1 * vgb - s2g * y;
        store_f32(ga + j, vga, n);
        store_f32(gb + j, vgb, n);
        store_f32(r + j, r2, n);
        store_any(p.grad_k, row + j, p.dtype, gk_, n);
        store_any(p.grad_v, row + j, p.dtype, gv_, n);
      }
    }
  }
  float* pw = p.param_partial + b * C + c0;
  float* pu = p.param_partial + p.B * C + b * C + c0;
  std::copy(dw, dw + nc, pw);
  std::copy(du, du + nc, pu);
}

// ---------------------------------------------------------------------------------------
// SDSA
namespace {

constexpr int kAcc = 4;  // accumulator vectors per feature chunk

inline bool pow2(float f) {
  int e;
  return f > 0 && std::isfinite(f) && std::frexp(f, &e) == 0.5f;
}

// sum_n x[n, d] y[n, d] for d in [d0, d1) of one [N, D] block into acc (fp32, n in order).
void token_dot(const void* x, const void* y, int64_t base, int64_t N, int64_t D, int64_t d0,
               int64_t d1, DType dt, float* acc) {
  for (int64_t j0 = d0; j0 < d1; j0 += kAcc * kWidth) {
    VecF s[kAcc];
    for (int u = 0; u < kAcc; ++u) s[u] = VecF(0.f);
    const int64_t jn = std::min(d1, j0 + kAcc * kWidth);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = base + n * D;
      for (int u = 0; u < kAcc; ++u) {
        const int64_t j = j0 + u * kWidth;
        if (j >= jn) break;
        const int m = int(std::min<int64_t>(kWidth, jn - j));
        s[u] = s[u] + load_any(x, off + j, dt, m) * load_any(y, off + j, dt, m);
      }
    }
    for (int u = 0; u < kAcc; ++u) {
      const int64_t j = j0 + u * kWidth;
      if (j >= jn) break;
      store_f32(acc + (j - d0), s[u], int(std::min<int64_t>(kWidth, jn - j)));
    }
  }
}

// out[n, d] = x[n, d] * f[d] for the N rows of one block, d in [d0, d1).
void scale_rows(const void* x, void* out, int64_t base, int64_t N, int64_t D, int64_t d0,
                int64_t d1, DType dt, const float* f) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = base + n * D;
    for (int64_t j = d0; j < d1; j += kWidth) {
      const int m = int(std::min<int64_t>(kWidth, d1 - j));
      store_any(out, off + j, dt, load_any(x, off + j, dt, m) * load_f32(f + (j - d0), m), m);
    }
  }
}

}  // namespace

void sdsa_forward(const SDSAParams& p, int64_t g, int64_t d0, int64_t d1) {
  const int64_t G = p.G, N = p.N, D = p.D, nd = d1 - d0;
  thread_local std::vector<float> buf;
  buf.resize(size_t(3 * nd + 3 * kWidth));
  float* acc = buf.data();
  float* vm = acc + nd + kWidth;
  float* sb = vm + nd + kWidth;
  std::fill(vm, vm + nd, 0.f);
  const VecF tau(p.tau), inv_tau(1.f / p.tau), vth(p.v_threshold), one(1.f), zero(0.f);
  const bool exact_inv = pow2(p.tau);
  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t base = (t * G + g) * N * D;
    token_dot(p.k, p.v, base, N, D, d0, d1, p.dtype, acc);
    for (int64_t j = 0; j < nd; j += kWidth) {
      const int m = int(std::min<int64_t>(kWidth, nd - j));
      const VecF v = load_f32(vm + j, m), x = load_f32(acc + j, m);
      const VecF dx = x - v;
      const VecF h = v + (exact_inv ? dx * inv_tau : dx / tau);
      const VecF s = select(ge(h - vth, zero), one, zero);
      store_f32(p.h_seq + (t * G + g) * D + d0 + j, h, m);
      store_f32(sb + j, s, m);
      store_f32(vm + j, (one - s) * h + s * zero, m);
    }
    scale_rows(p.q, p.out, base, N, D, d0, d1, p.dtype, sb);
  }
}

void sdsa_backward(const SDSAParams& p, int64_t g, int64_t d0, int64_t d1) {
  const int64_t T = p.T, G = p.G, N = p.N, D = p.D, nd = d1 - d0;
  thread_local std::vector<float> buf;
  buf.resize(size_t((T + 2) * (nd + kWidth)));
  const int64_t ld = nd + kWidth;
  float* gsum = buf.data();          // [T][ld]: dL/dS_t, then dL/d(kv)_t
  float* gv = gsum + T * ld;         // dL/dV carried backwards
  float* sb = gv + ld;               // S_t
  const VecF tau(p.tau), inv_tau(1.f / p.tau), vth(p.v_threshold), one(1.f), zero(0.f);
  const VecF alpha(p.alpha);
  const bool exact_inv = pow2(p.tau);
  // Pass 1: dq = g S, dS = sum_n g q.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = (t * G + g) * N * D;
    const float* h = p.h_seq + (t * G + g) * D + d0;
    for (int64_t j = 0; j < nd; j += kWidth) {
      const int m = int(std::min<int64_t>(kWidth, nd - j));
      store_f32(sb + j, select(ge(load_f32(h + j, m) - vth, zero), one, zero), m);
    }
    token_dot(p.grad_out, p.q, base, N, D, d0, d1, p.dtype, gsum + t * ld);
    scale_rows(p.grad_out, p.grad_q, base, N, D, d0, d1, p.dtype, sb);
  }
  // BPTT of the LIF on [T, nd].
  std::fill(gv, gv + nd, 0.f);
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* hp = p.h_seq + (t * G + g) * D + d0;
    for (int64_t j = 0; j < nd; j += kWidth) {
      const int m = int(std::min<int64_t>(kWidth, nd - j));
      const VecF h = load_f32(hp + j, m);
      const VecF u = h - vth;
      const VecF s = select(ge(u, zero), one, zero);
      const VecF g_v = load_f32(gv + j, m);
      VecF gs = load_f32(gsum + t * ld + j, m);
      if (!p.detach_reset) gs = vfma(g_v, zero - h, gs);
      const VecF gh = vfma(gs, surrogate_grad(p.surrogate, u, alpha), g_v * (one - s));
      const VecF gx = exact_inv ? gh * inv_tau : gh / tau;
      store_f32(gsum + t * ld + j, gx, m);
      store_f32(gv + j, gh - gx, m);
    }
  }
  // Pass 2: dk = d(kv) v, dv = d(kv) k.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = (t * G + g) * N * D;
    scale_rows(p.v, p.grad_k, base, N, D, d0, d1, p.dtype, gsum + t * ld);
    scale_rows(p.k, p.grad_v, base, N, D, d0, d1, p.dtype, gsum + t * ld);
  }
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
