// Argument checks and output allocation of the linear-attention scan ops (every device).
// The messages are those of spikeops.ref.attention._check_scan, so the kernel, the fake
// implementation and the reference fail alike.
#include "ops/scan.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace spikeops {
namespace {

using Tensor = at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

struct Setup {
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, K = 0, V = 0, N = 0;
  DType dt = DType::kFloat32;
  int32_t decay = kDecayNone;
  bool gamma = false;
  const Tensor* decay_in = nullptr;   // the given g / g_gamma / gk
  std::vector<int64_t> row0, len;
  Tensor q, k, v, g, h0;              // contiguous; g and h0 fp32
};

void check_float(const Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   ": expected a floating-point tensor, got ", t.scalar_type());
}

Setup check(const Tensor& q, const Tensor& k, const Tensor& v, const OptTensor& g,
            const OptTensor& g_gamma, const OptTensor& gk, double scale,
            const OptTensor& h0, const OptTensor& cu, int64_t chunk_size) {
  Setup s;
  s.dt = float_dtype(q, "q");
  float_dtype(k, "k");
  float_dtype(v, "v");
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{q, "q"}, {k, "k"}, {v, "v"}})
    TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected 4 dims [B, T, H, D], got shape ",
                      t.sizes());
  s.B = q.size(0);
  s.T = q.size(1);
  s.Hq = q.size(2);
  s.K = q.size(3);
  TORCH_CHECK_VALUE(k.size(0) == s.B && k.size(1) == s.T && k.size(3) == s.K,
                    "k: expected shape [", s.B, ", ", s.T, ", Hkv, ", s.K, "] to match q ",
                    q.sizes(), ", got ", k.sizes());
  s.Hkv = k.size(2);
  TORCH_CHECK_VALUE(s.Hkv != 0 && s.Hq % s.Hkv == 0, "k: q heads (", s.Hq,
                    ") must be a multiple of k/v heads (", s.Hkv, ")");
  TORCH_CHECK_VALUE(v.sizes().slice(0, 3) == k.sizes().slice(0, 3), "v: expected shape [",
                    s.B, ", ", s.T, ", ", s.Hkv, ", V] to match k ", k.sizes(), ", got ",
                    v.sizes());
  s.V = v.size(3);
  check_matches_q(k, "k", q);
  check_matches_q(v, "v", q);
  const int given = int(g.has_value()) + int(g_gamma.has_value()) + int(gk.has_value());
  TORCH_CHECK_VALUE(given <= 1, "g, g_gamma: give at most one of them");
  if (g.has_value() || g_gamma.has_value() || gk.has_value()) {
    const Tensor& d = g.has_value() ? *g : g_gamma.has_value() ? *g_gamma : *gk;
    const char* name = g_gamma.has_value() ? "g_gamma" : "g";
    check_float(d, name);
    TORCH_CHECK_VALUE(d.device() == q.device(), name, ": expected device ", q.device(),
                      " (that of q), got ", d.device());
    std::vector<int64_t> want;
    if (g.has_value()) want = {s.B, s.T, s.Hq};
    else if (g_gamma.has_value()) want = {s.Hq};
    else want = {s.B, s.T, s.Hq, s.K};
    TORCH_CHECK_VALUE(d.sizes() == at::IntArrayRef(want), name, ": expected shape ",
                      at::IntArrayRef(want), ", got ", d.sizes());
    s.decay = gk.has_value() ? kDecayKey : kDecayHead;
    s.gamma = g_gamma.has_value();
    s.decay_in = &d;
    s.g = d.to(at::kFloat).contiguous();
  }
  TORCH_CHECK_VALUE(chunk_size >= 0 && (chunk_size & (chunk_size - 1)) == 0,
                    "chunk_size: expected a power of two >= 1 (or 0: the recurrent form), got ",
                    chunk_size);
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale: expected a finite number, got ", scale);
  if (!cu.has_value()) {
    s.N = s.B;
    for (int64_t b = 0; b < s.B; ++b) {
      s.row0.push_back(b * s.T);
      s.len.push_back(s.T);
    }
  } else {
    const Tensor& c = *cu;
    TORCH_CHECK_TYPE(at::isIntegralType(c.scalar_type(), /*includeBool=*/false),
                     "cu_seqlens: expected an integer tensor, got ", c.scalar_type());
    TORCH_CHECK_VALUE(c.dim() == 1 && c.numel() >= 2,
                      "cu_seqlens: expected 1 dim [N + 1] with N >= 1, got shape ", c.sizes());
    TORCH_CHECK_VALUE(s.B == 1, "cu_seqlens: packed sequences need batch size 1, got B = ",
                      s.B);
    const Tensor cc = c.to(at::kCPU, at::kLong).contiguous();
    const int64_t* cp = cc.data_ptr<int64_t>();
    const int64_t n1 = cc.numel();
    TORCH_CHECK_VALUE(cp[0] == 0, "cu_seqlens: must start at 0, got ", cp[0]);
    TORCH_CHECK_VALUE(cp[n1 - 1] == s.T, "cu_seqlens: must end at T = ", s.T, ", got ",
                      cp[n1 - 1]);
    for (int64_t i = 1; i < n1; ++i)
      TORCH_CHECK_VALUE(cp[i] >= cp[i - 1], "cu_seqlens: must be non-decreasing, got ",
                        c.sizes(), " values with ", cp[i], " after ", cp[i - 1]);
    s.N = n1 - 1;
    for (int64_t i = 0; i < s.N; ++i) {
      s.row0.push_back(cp[i]);
      s.len.push_back(cp[i + 1] - cp[i]);
    }
  }
  if (h0.has_value()) {
    TORCH_CHECK_TYPE(h0->scalar_type() == at::kFloat || h0->scalar_type() == at::kDouble,
                     "initial_state: expected float32 or float64, got ", h0->scalar_type());
    const std::vector<int64_t> want{s.N, s.Hq, s.K, s.V};
    TORCH_CHECK_VALUE(h0->sizes() == at::IntArrayRef(want),
                      "initial_state: expected shape [N, H, K, V] = ", at::IntArrayRef(want),
                      ", got ", h0->sizes());
    TORCH_CHECK_VALUE(h0->device() == q.device(), "initial_state: expected device ",
                      q.device(), " (that of q), got ", h0->device());
    s.h0 = h0->to(at::kFloat).contiguous();
  }
  s.q = q.contiguous();
  s.k = k.contiguous();
  s.v = v.contiguous();
  return s;
}

ScanParams params(const Setup& s, double scale, int64_t chunk_size) {
  ScanParams p;
  p.dtype = s.dt;
  p.Hq = s.Hq;
  p.Hkv = s.Hkv;
  p.K = s.K;
  p.V = s.V;
  p.N = s.N;
  p.decay = s.decay;
  p.gamma = s.gamma;
  p.scale = float(scale);
  p.row0 = s.row0.data();
  p.len = s.len.data();
  p.q = s.q.data_ptr();
  p.k = s.k.data_ptr();
  p.v = s.v.data_ptr();
  p.g = s.decay != kDecayNone ? s.g.data_ptr<float>() : nullptr;
  p.h0 = s.h0.defined() ? s.h0.data_ptr<float>() : nullptr;
  p.chunk = chunk_size;
  return p;
}

// Chunks above this length run at it: the result is the same up to rounding and the
// per-thread scratch (C x C matrices) stays small.
constexpr int64_t kMaxChunk = 256;

Tensor alloc(const ScanBackend& be, at::IntArrayRef sizes, const at::TensorOptions& opt) {
  Tensor t = be.empty ? be.empty(sizes, opt) : at::empty(sizes, opt);
  if (poison_outputs() && t.numel() > 0) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

// Device backends (be.device_chunk > 0): the sequence table in device memory and the
// kernels' scratch (csrc/common/scan_params.h). The returned tensors must outlive the
// launches; they do, being freed after be.forward / be.backward returns (the caching
// allocator reuses them only for work queued later on the same stream).
std::pair<Tensor, Tensor> device_fields(const ScanBackend& be, const Setup& s, ScanParams& p,
                                        const Tensor& like, bool backward) {
  if (be.device_chunk <= 0) return {};
  const int64_t C = be.device_chunk, N = s.N;
  std::vector<int64_t> nc(static_cast<size_t>(N));
  int64_t total = 0, slots = 0;
  for (int64_t n = 0; n < N; ++n) {
    nc[size_t(n)] = (s.len[size_t(n)] + C - 1) / C;
    total += nc[size_t(n)];
    slots += nc[size_t(n)] + 1;
  }
  Tensor host = at::empty({4 * N + total}, at::TensorOptions().dtype(at::kLong));
  int64_t* h = host.data_ptr<int64_t>();
  int64_t slot = 0, chunk = 0;
  for (int64_t n = 0; n < N; ++n) {
    h[n] = s.row0[size_t(n)];
    h[N + n] = s.len[size_t(n)];
    h[2 * N + n] = slot;
    h[3 * N + n] = chunk;
    for (int64_t c = 0; c < nc[size_t(n)]; ++c) h[4 * N + chunk + c] = n;
    slot += nc[size_t(n)] + 1;
    chunk += nc[size_t(n)];
  }
  Tensor dev = host.to(like.device());
  p.dev_seq = dev.data_ptr<int64_t>();
  p.dev_chunk = C;
  p.total_chunks = total;
  p.state_slots = slots;
  p.rows = s.B * s.T;
  p.ws_floats = be.workspace_floats ? be.workspace_floats(p, backward) : 0;
  Tensor ws = at::empty({std::max<int64_t>(p.ws_floats, 1)}, like.options().dtype(at::kFloat));
  p.ws = ws.data_ptr<float>();
  return {dev, ws};
}

}  // namespace

std::tuple<Tensor, Tensor> linear_scan_fwd(const ScanBackend& be, const Tensor& q,
                                           const Tensor& k, const Tensor& v, const OptTensor& g,
                                           const OptTensor& g_gamma, const OptTensor& gk,
                                           double scale, const OptTensor& h0, const OptTensor& cu,
                                           int64_t chunk_size, bool output_final_state) {
  Setup s = check(q, k, v, g, g_gamma, gk, scale, h0, cu, chunk_size);
  c10::DeviceGuard guard(q.device());
  Tensor o = alloc(be, {s.B, s.T, s.Hq, s.V}, q.options());
  Tensor ht = output_final_state
                  ? alloc(be, {s.N, s.Hq, s.K, s.V}, q.options().dtype(at::kFloat))
                  : at::empty({0}, q.options().dtype(at::kFloat));
  if (s.Hq == 0 || s.V == 0 || s.N == 0) return {o, ht};
  // K == 0: o_t = q_t S_t is an empty sum, the state is empty.
  if (s.K == 0) return {o.zero_(), ht};
  // chunk 0: the recurrence, one step per chunk.
  ScanParams p = params(s, scale, chunk_size == 0 ? 1 : std::min(chunk_size, kMaxChunk));
  p.o = o.data_ptr();
  p.ht = output_final_state ? ht.data_ptr<float>() : nullptr;
  const auto keep = device_fields(be, s, p, q, /*backward=*/false);
  be.forward(p);
  return {o, ht};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> linear_scan_bwd(
    const ScanBackend& be, const Tensor& grad_o, const OptTensor& grad_ht, const Tensor& q,
    const Tensor& k, const Tensor& v, const OptTensor& g, const OptTensor& g_gamma,
    const OptTensor& gk, double scale, const OptTensor& h0, const OptTensor& cu,
    int64_t chunk_size) {
  Setup s = check(q, k, v, g, g_gamma, gk, scale, h0, cu, chunk_size);
  const std::vector<int64_t> o_shape{s.B, s.T, s.Hq, s.V}, st_shape{s.N, s.Hq, s.K, s.V};
  check_float(grad_o, "grad_o");
  TORCH_CHECK_VALUE(grad_o.sizes() == at::IntArrayRef(o_shape), "grad_o: expected shape ",
                    at::IntArrayRef(o_shape), ", got ", grad_o.sizes());
  Tensor dht;
  if (grad_ht.has_value() && grad_ht->defined()) {
    check_float(*grad_ht, "grad_final_state");
    TORCH_CHECK_VALUE(grad_ht->sizes() == at::IntArrayRef(st_shape),
                      "grad_final_state: expected shape ", at::IntArrayRef(st_shape), ", got ",
                      grad_ht->sizes());
    dht = grad_ht->to(at::kFloat).contiguous();
  }
  c10::DeviceGuard guard(q.device());
  const Tensor go = grad_o.to(q.scalar_type()).contiguous();
  const auto f32 = q.options().dtype(at::kFloat);
  Tensor dq = alloc(be, {s.B, s.T, s.Hq, s.K}, f32);
  Tensor dk = alloc(be, {s.B, s.T, s.Hq, s.K}, f32);
  Tensor dv = alloc(be, {s.B, s.T, s.Hq, s.V}, f32);
  Tensor dg, dh0;
  if (s.decay == kDecayHead && s.gamma) dg = alloc(be, {s.N, s.Hq}, f32);
  else if (s.decay != kDecayNone) dg = alloc(be, s.decay_in->sizes(), f32);
  if (s.h0.defined()) dh0 = alloc(be, st_shape, f32);
  const bool work = s.Hq > 0 && s.N > 0 && s.T > 0 && s.K > 0 && s.V > 0;
  if (!work) {  // nothing flows: every gradient is zero (dg: also when K or V is 0)
    for (Tensor* t : {&dq, &dk, &dv, &dg, &dh0})
      if (t->defined()) t->zero_();
    if (s.h0.defined() && dht.defined() && s.T == 0) dh0.copy_(dht);
  } else {
    ScanParams p = params(s, scale, chunk_size == 0 ? 64 : std::min(chunk_size, kMaxChunk));
    p.dout = go.data_ptr();
    p.dht = dht.defined() ? dht.data_ptr<float>() : nullptr;
    p.dq = dq.data_ptr<float>();
    p.dk = dk.data_ptr<float>();
    p.dv = dv.data_ptr<float>();
    p.dg = dg.defined() ? dg.data_ptr<float>() : nullptr;
    p.dh0 = dh0.defined() ? dh0.data_ptr<float>() : nullptr;
    const auto keep = device_fields(be, s, p, q, /*backward=*/true);
    be.backward(p);
  }
  // Query-head gradients of k and v summed over each kv head's group, then the dtypes.
  const int64_t rep = s.Hkv ? s.Hq / s.Hkv : 1;
  if (rep > 1) {
    dk = dk.view({s.B, s.T, s.Hkv, rep, s.K}).sum(3);
    dv = dv.view({s.B, s.T, s.Hkv, rep, s.V}).sum(3);
  }
  if (s.decay == kDecayHead && s.gamma) dg = dg.sum(0);
  dq = dq.to(q.scalar_type());
  dk = dk.to(k.scalar_type());
  dv = dv.to(v.scalar_type());
  dg = dg.defined() ? dg.to(s.decay_in->scalar_type()) : at::empty({0}, f32);
  dh0 = dh0.defined() ? dh0.to(h0->scalar_type()) : at::empty({0}, f32);
  return {dq, dk, dv, dg, dh0};
}

}  // namespace spikeops
