// Argument checks, output allocation and Params filling of the recurrent attention ops
// (RWKV-4 WKV and SDSA), shared by every device. Messages follow the references in
// python/spikeops/ref/attention.py and the Python fake implementations.
#include "ops/recurrent.h"

#include "ops/common.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace spikeops {
namespace {

using Tensor = at::Tensor;

bool finite_f32(double v) { return std::isfinite(static_cast<float>(v)); }

Tensor new_output(const RecurrentBackend& be, at::IntArrayRef sizes,
                  const at::TensorOptions& options) {
  Tensor t = be.empty ? be.empty(sizes, options) : at::empty(sizes, options);
  if (poison_outputs() && t.numel() > 0) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

void same_device(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, ": expected device ", ref.device(),
                    " (that of ", ref_name, "), got ", t.device());
}

void same_dtype(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, ": dtype ", t.scalar_type(),
                   " differs from ", ref_name, "'s ", ref.scalar_type());
}

// ---- RWKV ------------------------------------------------------------------------------

struct RwkvArgs {
  RWKVParams p;
  Tensor td, tf, k, v;  // contiguous
};

RwkvArgs check_rwkv(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                    const Tensor& v) {
  RwkvArgs r;
  r.p.dtype = float_dtype(k, "k");
  float_dtype(v, "v");
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{time_decay, "time_decay"},
                                {time_first, "time_first"}})
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name,
                     ": expected float32 (a per-channel parameter [C]), got ", t.scalar_type());
  TORCH_CHECK_VALUE(k.dim() == 3, "k: expected 3 dims [B, T, C], got ", k.sizes());
  TORCH_CHECK_VALUE(v.sizes() == k.sizes(), "v: expected the shape of k ", k.sizes(), ", got ",
                    v.sizes());
  const int64_t C = k.size(2);
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{time_decay, "time_decay"},
                                {time_first, "time_first"}})
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == C, name, ": expected shape [", C, "], got ",
                      t.sizes());
  same_dtype(v, "v", k, "k");
  same_device(v, "v", k, "k");
  same_device(time_decay, "time_decay", k, "k");
  same_device(time_first, "time_first", k, "k");
  r.td = time_decay.contiguous();
  r.tf = time_first.contiguous();
  r.k = k.contiguous();
  r.v = v.contiguous();
  r.p.B = k.size(0);
  r.p.T = k.size(1);
  r.p.C = C;
  r.p.time_decay = r.td.data_ptr<float>();
  r.p.time_first = r.tf.data_ptr<float>();
  r.p.k = r.k.data_ptr();
  r.p.v = r.v.data_ptr();
  return r;
}

// ---- SDSA ------------------------------------------------------------------------------

Surrogate parse_surrogate(c10::string_view name, double alpha) {
  static const char* names[] = {"sigmoid", "atan", "piecewise_quadratic", "piecewise_exp",
                                "soft_sign", "super_spike", "erf", "rectangle", "triangle"};
  for (int i = 0; i < 9; ++i)
    if (name == names[i]) {
      TORCH_CHECK_VALUE(finite_f32(alpha) && float(alpha) > 0,
                        "alpha: expected a finite float32 value > 0, got ", alpha);
      return static_cast<Surrogate>(i);
    }
  TORCH_CHECK_VALUE(false, "surrogate: unknown name '", std::string(name),
                    "'; expected one of atan, erf, piecewise_exp, piecewise_quadratic, "
                    "rectangle, sigmoid, soft_sign, super_spike, triangle");
}

struct SdsaArgs {
  SDSAParams p;
  Tensor q, k, v;  // contiguous
};

SdsaArgs check_sdsa(const Tensor& q, const Tensor& k, const Tensor& v, double v_threshold,
                    double tau, bool detach_reset, c10::string_view surrogate, double alpha) {
  SdsaArgs r;
  r.p.dtype = float_dtype(q, "q");
  float_dtype(k, "k");
  float_dtype(v, "v");
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "k: expected the shape of q ", q.sizes(), ", got ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.sizes() == q.sizes(), "v: expected the shape of q ", q.sizes(), ", got ",
                    v.sizes());
  TORCH_CHECK_VALUE(q.dim() == 5, "q: expected 5 dims [T, B, H, N, D], got ", q.sizes());
  same_dtype(k, "k", q, "q");
  same_dtype(v, "v", q, "q");
  same_device(k, "k", q, "q");
  same_device(v, "v", q, "q");
  TORCH_CHECK_VALUE(finite_f32(tau) && tau > 1.0, "tau: expected a finite value > 1, got ", tau);
  TORCH_CHECK_VALUE(finite_f32(v_threshold),
                    "v_threshold: expected a finite float32 value, got ", v_threshold);
  r.p.surrogate = parse_surrogate(surrogate, alpha);
  r.p.alpha = float(alpha);
  r.p.tau = float(tau);
  r.p.v_threshold = float(v_threshold);
  r.p.detach_reset = detach_reset;
  r.q = q.contiguous();
  r.k = k.contiguous();
  r.v = v.contiguous();
  r.p.T = q.size(0);
  r.p.G = q.size(1) * q.size(2);
  r.p.N = q.size(3);
  r.p.D = q.size(4);
  r.p.q = r.q.data_ptr();
  r.p.k = r.k.data_ptr();
  r.p.v = r.v.data_ptr();
  return r;
}

std::vector<int64_t> h_shape(const Tensor& q) {
  return {q.size(0), q.size(1), q.size(2), 1, q.size(4)};
}

}  // namespace

Tensor rwkv4_wkv_fwd(const RecurrentBackend& be, const Tensor& time_decay,
                     const Tensor& time_first, const Tensor& k, const Tensor& v) {
  RwkvArgs a = check_rwkv(time_decay, time_first, k, v);
  c10::DeviceGuard guard(k.device());
  Tensor y = new_output(be, k.sizes(), v.options());
  if (y.numel() == 0) return y;
  a.p.y = y.data_ptr();
  be.rwkv_forward(a.p);
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> rwkv4_wkv_bwd(const RecurrentBackend& be,
                                                         const Tensor& grad_y,
                                                         const Tensor& time_decay,
                                                         const Tensor& time_first,
                                                         const Tensor& k, const Tensor& v) {
  RwkvArgs a = check_rwkv(time_decay, time_first, k, v);
  TORCH_CHECK_VALUE(grad_y.sizes() == k.sizes(), "grad_y: expected shape ", k.sizes(), ", got ",
                    grad_y.sizes());
  same_device(grad_y, "grad_y", k, "k");
  c10::DeviceGuard guard(k.device());
  // Autograd may hand in a broadcast or differently typed gradient: make it dense here.
  const Tensor gy = grad_y.to(k.scalar_type()).contiguous();
  Tensor gk = new_output(be, k.sizes(), k.options());
  Tensor gv = new_output(be, k.sizes(), k.options());
  const auto fopt = k.options().dtype(at::kFloat);
  const int64_t C = a.p.C;
  if (k.numel() == 0) {  // no steps or no batch rows: nothing flows into the parameters
    return {at::zeros({C}, fopt), at::zeros({C}, fopt), gk, gv};
  }
  Tensor gtd = new_output(be, {C}, fopt);
  Tensor gtf = new_output(be, {C}, fopt);
  Tensor partial = at::empty({2, a.p.B, C}, fopt);
  Tensor ws;
  if (be.device_workspace) {
    ws = at::empty({3, a.p.B, a.p.T, C}, fopt);
    a.p.state_ws = ws.data_ptr<float>();
  }
  a.p.grad_y = gy.data_ptr();
  a.p.grad_k = gk.data_ptr();
  a.p.grad_v = gv.data_ptr();
  a.p.param_partial = partial.data_ptr<float>();
  a.p.grad_time_decay = gtd.data_ptr<float>();
  a.p.grad_time_first = gtf.data_ptr<float>();
  be.rwkv_backward(a.p);
  return {gtd, gtf, gk, gv};
}

std::tuple<Tensor, Tensor> sdsa_fwd(const RecurrentBackend& be, const Tensor& q,
                                    const Tensor& k, const Tensor& v, double v_threshold,
                                    double tau, bool detach_reset, c10::string_view surrogate,
                                    double alpha) {
  SdsaArgs a = check_sdsa(q, k, v, v_threshold, tau, detach_reset, surrogate, alpha);
  c10::DeviceGuard guard(q.device());
  Tensor out = new_output(be, q.sizes(), q.options());
  Tensor h = new_output(be, h_shape(q), q.options().dtype(at::kFloat));
  // With N = 0 there is no output but the membrane still runs (on kv = 0).
  if (h.numel() == 0) return {out, h};
  a.p.out = out.data_ptr();
  a.p.h_seq = h.data_ptr<float>();
  be.sdsa_forward(a.p);
  return {out, h};
}

std::tuple<Tensor, Tensor, Tensor> sdsa_bwd(const RecurrentBackend& be, const Tensor& grad_out,
                                            const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& h_seq, double v_threshold, double tau,
                                            bool detach_reset, c10::string_view surrogate,
                                            double alpha) {
  SdsaArgs a = check_sdsa(q, k, v, v_threshold, tau, detach_reset, surrogate, alpha);
  TORCH_CHECK_VALUE(grad_out.sizes() == q.sizes(), "grad_out: expected shape ", q.sizes(),
                    ", got ", grad_out.sizes());
  same_device(grad_out, "grad_out", q, "q");
  same_device(h_seq, "h_seq", q, "q");
  TORCH_CHECK_TYPE(h_seq.scalar_type() == at::kFloat, "h_seq: expected float32, got ",
                   h_seq.scalar_type());
  TORCH_CHECK_VALUE(h_seq.sizes() == at::IntArrayRef(h_shape(q)), "h_seq: expected shape ",
                    at::IntArrayRef(h_shape(q)), ", got ", h_seq.sizes());
  c10::DeviceGuard guard(q.device());
  const Tensor g = grad_out.to(q.scalar_type()).contiguous();
  const Tensor h = h_seq.contiguous();
  Tensor gq = new_output(be, q.sizes(), q.options());
  Tensor gk = new_output(be, q.sizes(), q.options());
  Tensor gv = new_output(be, q.sizes(), q.options());
  if (q.numel() == 0) return {gq, gk, gv};
  Tensor ws;
  if (be.device_workspace) {
    ws = at::empty({a.p.T, a.p.G, a.p.D}, q.options().dtype(at::kFloat));
    a.p.grad_ws = ws.data_ptr<float>();
  }
  a.p.h_seq = const_cast<float*>(h.data_ptr<float>());
  a.p.grad_out = g.data_ptr();
  a.p.grad_q = gq.data_ptr();
  a.p.grad_k = gk.data_ptr();
  a.p.grad_v = gv.data_ptr();
  be.sdsa_backward(a.p);
  return {gq, gk, gv};
}

}  // namespace spikeops
