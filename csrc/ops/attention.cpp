// Argument checks and output allocation of the spiking self-attention op (every device).
#include "ops/attention.h"

#include "ops/common.h"
#include "ops/neurons.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

namespace spikeops {

using Tensor = at::Tensor;

namespace {

Tensor run_ssa(const SSABackend& be, const Tensor& q, const Tensor& k, const Tensor& v,
               double scale, c10::string_view order, const SSAParams* lif) {
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
  check_matches_q(k, "k", q);
  check_matches_q(v, "v", q);
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
  if (lif) {
    p.lif = true;
    p.T = q.size(0);
    p.tau = lif->tau;
    p.v_threshold = lif->v_threshold;
    p.v_reset = lif->v_reset;
  }
  // Nothing to write (G, N or Dv is 0): no kernel runs, so no values are checked either.
  if (out.numel() == 0) return out;
  p.q = qc.data_ptr();
  p.k = kc.data_ptr();
  p.v = vc.data_ptr();
  p.out = out.data_ptr();
  be.forward(p);
  return out;
}

}  // namespace

Tensor ssa_fwd(const SSABackend& be, const Tensor& q, const Tensor& k, const Tensor& v,
               double scale, c10::string_view order) {
  return run_ssa(be, q, k, v, scale, order, nullptr);
}

Tensor ssa_lif_fwd(const SSABackend& be, const Tensor& q, const Tensor& k, const Tensor& v,
                   double scale, c10::string_view order, double tau, double v_threshold,
                   double v_reset, const std::string& surrogate, double alpha, bool) {
  check_surrogate_name(surrogate, alpha);
  TORCH_CHECK_VALUE(q.dim() >= 3, "q: expected at least 3 dims [T, ..., N, D] (the LIF runs "
                    "over dim 0), got shape ", q.sizes());
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0 && std::isfinite(float(1.0 / tau)),
                    "tau: expected a finite value > 0, got ", tau);
  TORCH_CHECK_VALUE(std::isfinite(float(v_threshold)), "v_threshold: expected a finite float32 "
                    "value, got ", v_threshold);
  TORCH_CHECK_VALUE(std::isfinite(float(v_reset)), "v_reset: expected a finite float32 value, "
                    "got ", v_reset);
  SSAParams lif;
  lif.tau = float(tau);
  lif.v_threshold = float(v_threshold);
  lif.v_reset = float(v_reset);
  return run_ssa(be, q, k, v, scale, order, &lif);
}

}  // namespace spikeops
