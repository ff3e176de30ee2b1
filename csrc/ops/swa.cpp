// Argument checks and output allocation of the sliding-window attention ops (every device).
// The messages follow spikeops.ref.attention.sliding_window_attn_ref's.
#include "ops/swa.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <limits>

#include "ops/common.h"

namespace spikeops {

using Tensor = at::Tensor;

namespace {

at::Tensor alloc(const SWABackend& be, at::IntArrayRef shape, const at::TensorOptions& opt) {
  Tensor t = be.empty ? be.empty(shape, opt) : at::empty(shape, opt);
  if (poison_outputs() && t.numel() > 0) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

// Checks q, k, v, window, scale; fills the shape fields of p.
void check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
               double scale, SWAParams& p) {
  p.dtype = float_dtype(q, "q");
  float_dtype(k, "k");
  float_dtype(v, "v");
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{q, "q"}, {k, "k"}, {v, "v"}})
    TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected 4 dims [B, T, H, D], got ", t.sizes());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "k: expected the shape of q ", q.sizes(), ", got ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.sizes().slice(0, 3) == q.sizes().slice(0, 3),
                    "v: expected shape [B, T, H, Dv] with B, T, H as in q ", q.sizes(),
                    ", got ", v.sizes());
  TORCH_CHECK_VALUE(window >= 1, "window: expected an int >= 1, got ", window);
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale: expected a finite number, got ", scale);
  check_matches_q(k, "k", q);
  check_matches_q(v, "v", q);
  p.B = q.size(0);
  p.T = q.size(1);
  p.H = q.size(2);
  p.D = q.size(3);
  p.Dv = v.size(3);
  // The CPU / CUDA kernels index with int64 and float tile coordinates; a window longer
  // than the sequence is the full causal window.
  p.window = std::min<int64_t>(window, std::max<int64_t>(p.T, 1));
  p.scale = float(scale);
}

void check_head_dims(const SWABackend& be, const SWAParams& p, const Tensor& q) {
  if (be.max_head_dim <= 0) return;
  TORCH_CHECK_VALUE(p.D <= be.max_head_dim, "q / k: head dim D = ", p.D, "; the ",
                    q.device().type(), " kernels take D <= ", be.max_head_dim,
                    " (the CPU kernels take any D)");
  TORCH_CHECK_VALUE(p.Dv <= be.max_head_dim, "v: head dim Dv = ", p.Dv, "; the ",
                    q.device().type(), " kernels take Dv <= ", be.max_head_dim,
                    " (the CPU kernels take any Dv)");
}

void check_like(const Tensor& t, const char* name, at::IntArrayRef shape, const Tensor& q,
                at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, ": expected shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == q.device(), name, ": expected device ", q.device(),
                    " (that of q), got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ",
                   t.scalar_type());
}

}  // namespace

std::tuple<Tensor, Tensor> swa_fwd(const SWABackend& be, const Tensor& q, const Tensor& k,
                                   const Tensor& v, int64_t window, double scale) {
  SWAParams p;
  check_qkv(q, k, v, window, scale, p);
  check_head_dims(be, p, q);
  c10::DeviceGuard guard(q.device());
  Tensor o = alloc(be, {p.B, p.T, p.H, p.Dv}, q.options());
  Tensor lse = alloc(be, {p.B, p.H, p.T}, q.options().dtype(at::kFloat));
  if (p.B * p.T * p.H == 0) return {o, lse};
  const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  p.q = qc.data_ptr();
  p.k = kc.data_ptr();
  p.v = vc.data_ptr();
  p.o = o.data_ptr();
  p.lse = lse.data_ptr<float>();
  be.forward(p);
  return {o, lse};
}

std::tuple<Tensor, Tensor, Tensor> swa_bwd(const SWABackend& be, const Tensor& grad_o,
                                           const std::optional<Tensor>& grad_lse,
                                           const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& o, const Tensor& lse, int64_t window,
                                           double scale) {
  SWAParams p;
  check_qkv(q, k, v, window, scale, p);
  check_head_dims(be, p, q);
  check_like(o, "o", {p.B, p.T, p.H, p.Dv}, q, q.scalar_type());
  check_like(grad_o, "grad_o", {p.B, p.T, p.H, p.Dv}, q, q.scalar_type());
  check_like(lse, "lse", {p.B, p.H, p.T}, q, at::kFloat);
  if (grad_lse.has_value()) check_like(*grad_lse, "grad_lse", {p.B, p.H, p.T}, q, at::kFloat);
  c10::DeviceGuard guard(q.device());
  Tensor dq = alloc(be, q.sizes(), q.options());
  Tensor dk = alloc(be, k.sizes(), q.options());
  Tensor dv = alloc(be, v.sizes(), q.options());
  if (p.B * p.T * p.H == 0) return {dq, dk, dv};
  Tensor delta = at::empty({p.B, p.H, p.T}, q.options().dtype(at::kFloat));
  const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const Tensor oc = o.contiguous(), gc = grad_o.contiguous(), lc = lse.contiguous();
  Tensor glc;
  if (grad_lse.has_value()) glc = grad_lse->contiguous();
  p.q = qc.data_ptr();
  p.k = kc.data_ptr();
  p.v = vc.data_ptr();
  p.o = const_cast<void*>(oc.data_ptr());
  p.lse = const_cast<float*>(lc.data_ptr<float>());
  p.grad_o = gc.data_ptr();
  p.grad_lse = glc.defined() ? glc.data_ptr<float>() : nullptr;
  p.delta = delta.data_ptr<float>();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  be.backward(p);
  return {dq, dk, dv};
}

}  // namespace spikeops
