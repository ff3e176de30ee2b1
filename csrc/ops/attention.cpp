// Argument checks and output allocation of the spiking self-attention op (every device).
#include "ops/attention.h"

#include "ops/common.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

namespace spikeops {

using Tensor = at::Tensor;

Tensor ssa_fwd(const SSABackend& be, const Tensor& q, const Tensor& k, const Tensor& v,
               double scale, c10::string_view order) {
  const DType dt = float_dtype(q, "q", " (binary 0/1 spikes)");
  float_dtype(k, "k", " (binary 0/1 spikes)");
  float_dtype(v, "v", " (binary 0/1 spikes)");
  TORCH_CHECK_VALUE(order == "kv_first" || order == "qk_first",
                    "order: expected 'kv_first' or 'qk_first', got '", std::string(order), "'");
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale: expected a finite number, got ", scale);
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{q, "q"}, {k, "k"}, {v, "v"}})
    TORCH_CHECK_VALUE(t.dim() >= 2, name, ": expected at least 2 dims [..., N, D], got shape ",
                      t.sizes());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "k: expected the shape of q ", q.sizes(), ", got ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.dim() == q.dim() && v.sizes().slice(0, v.dim() - 1) ==
                                              q.sizes().slice(0, q.dim() - 1),
                    "v: expected shape [..., N, Dv] with [...] and N as in q ", q.sizes(),
                    ", got ", v.sizes());
  TORCH_CHECK_VALUE(k.device() == q.device(), "k: expected device ", q.device(),
                    " (that of q), got ", k.device());
  TORCH_CHECK_VALUE(v.device() == q.device(), "v: expected device ", q.device(),
                    " (that of q), got ", v.device());
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), "k: dtype ", k.scalar_type(),
                   " differs from q's ", q.scalar_type());
  TORCH_CHECK_TYPE(v.scalar_type() == q.scalar_type(), "v: dtype ", v.scalar_type(),
                   " differs from q's ", q.scalar_type());
  c10::DeviceGuard guard(q.device());
  std::vector<int64_t> out_shape(v.sizes().begin(), v.sizes().end());
  Tensor out = be.empty ? be.empty(out_shape, q.options()) : at::empty(out_shape, q.options());
  if (poison_outputs() && out.numel() > 0) out.fill_(std::numeric_limits<float>::quiet_NaN());
  const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  SSAParams p;
  p.dtype = dt;
  p.N = q.size(-2);
  p.D = q.size(-1);
  p.Dv = v.size(-1);
  p.G = 1;
  for (int64_t i = 0; i + 2 < q.dim(); ++i) p.G *= q.size(i);
  p.scale = float(scale);
  p.qk_first = order == "qk_first";
  // Nothing to write (G, N or Dv is 0): no kernel runs, so no values are checked either.
  if (out.numel() == 0) return out;
  p.q = qc.data_ptr();
  p.k = kc.data_ptr();
  p.v = vc.data_ptr();
  p.out = out.data_ptr();
  be.forward(p);
  return out;
}

}  // namespace spikeops
