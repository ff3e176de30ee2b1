// Argument checks and output allocation shared by every device's neuron ops.
#include "ops/neurons.h"

#include "ops/common.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <limits>

namespace spikeops {
namespace {

// Parameters are used as float32: finite as a double is not enough (1e39 is inf).
bool finite_f32(double v) { return std::isfinite(static_cast<float>(v)); }

Tensor new_output(const NeuronBackend& be, at::IntArrayRef sizes,
                  const at::TensorOptions& options) {
  Tensor t = be.empty ? be.empty(sizes, options) : at::empty(sizes, options);
  if (poison_outputs() && t.numel() > 0) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

void check_x(const Tensor& x) {
  float_dtype(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected a time-major tensor [T, *], got a scalar");
  TORCH_CHECK_VALUE(x.size(0) > 0, "x: T = x.shape[0] must be >= 1, got 0");
  TORCH_CHECK_VALUE(x.numel() > 0, "x: empty tensor of shape ", x.sizes());
  TORCH_CHECK_VALUE(x.is_contiguous(), "x: expected a contiguous tensor (call .contiguous(); ",
                    "channels-last and strided views are not accepted)");
}

// A per-element state (v0, a0, grad of v_last): fp32, shape x.shape[1:], x's device.
const float* state_ptr(const OptTensor& s, const Tensor& x, const char* name) {
  if (!s.has_value() || !s->defined()) return nullptr;
  TORCH_CHECK(s->device() == x.device(), name, ": expected device ", x.device(), ", got ",
              s->device());
  TORCH_CHECK_TYPE(s->scalar_type() == at::kFloat, name, ": expected float32 state, got ",
                   s->scalar_type());
  TORCH_CHECK_VALUE(s->sizes() == x.sizes().slice(1), name, ": expected shape ",
                    x.sizes().slice(1), " (x.shape[1:]), got ", s->sizes());
  TORCH_CHECK_VALUE(s->is_contiguous(), name, ": expected a contiguous tensor");
  return s->data_ptr<float>();
}

void check_tau(double tau, const char* name) {
  TORCH_CHECK_VALUE(finite_f32(tau) && tau > 1.0, name, ": expected a finite value > 1, got ",
                    tau);
}

void check_threshold(double v_threshold, std::optional<double> v_reset) {
  TORCH_CHECK_VALUE(finite_f32(v_threshold), "v_threshold: expected a finite float32 value, got ",
                    v_threshold);
  TORCH_CHECK_VALUE(!v_reset.has_value() || finite_f32(*v_reset),
                    "v_reset: expected a finite float32 value or None, got ", v_reset.value_or(0));
}

Surrogate parse_surrogate(const std::string& name, double alpha) {
  static const char* names[] = {"sigmoid", "atan", "piecewise_quadratic", "piecewise_exp",
                                "soft_sign", "super_spike", "erf", "rectangle", "triangle"};
  TORCH_CHECK_VALUE(finite_f32(alpha) && float(alpha) > 0,
                    "alpha: expected a finite float32 value > 0, got ", alpha);
  for (int i = 0; i < 9; ++i)
    if (name == names[i]) return static_cast<Surrogate>(i);
  TORCH_CHECK_VALUE(false, "surrogate: unknown name '", name,
                    "'; expected one of sigmoid, atan, piecewise_quadratic, piecewise_exp, "
                    "soft_sign, super_spike, erf, rectangle, triangle");
}

Rounding parse_rounding(const std::string& r) {
  if (r == "half_even") return Rounding::kHalfEven;
  if (r == "half_up") return Rounding::kHalfUp;
  TORCH_CHECK_VALUE(false, "rounding: expected 'half_even' or 'half_up', got '", r, "'");
}

// Common part of every forward: params for x, outputs allocated.
struct Forward {
  NeuronParams p;
  Tensor spikes, v_last, a_last, v_seq;
};

Forward begin_forward(const NeuronBackend& be, const Tensor& x, const OptTensor& v0, double v_threshold,
                      std::optional<double> v_reset, bool store_v_seq) {
  check_x(x);
  check_threshold(v_threshold, v_reset);
  Forward f;
  NeuronParams& p = f.p;
  p.T = x.size(0);
  p.N = x.numel() / p.T;
  p.dtype = float_dtype(x, "x");
  p.v_threshold = float(v_threshold);
  p.hard_reset = v_reset.has_value();
  p.v_reset = v_reset.value_or(0.0);
  p.x = x.data_ptr();
  p.v0 = state_ptr(v0, x, "v0");
  auto fopt = x.options().dtype(at::kFloat);
  f.spikes = new_output(be, x.sizes(), x.options());
  f.v_last = new_output(be, x.sizes().slice(1), fopt);
  f.v_seq = new_output(be, store_v_seq ? x.sizes() : at::IntArrayRef{0}, fopt);
  p.spikes = f.spikes.data_ptr();
  p.v_last = f.v_last.data_ptr<float>();
  p.v_seq = store_v_seq ? f.v_seq.data_ptr<float>() : nullptr;
  return f;
}

struct Backward {
  NeuronParams p;
  Tensor grad_spikes, grad_v_last, grad_x, grad_v0;
};

// Autograd may hand in broadcast or strided gradients: make them dense here.
Backward begin_backward(const NeuronBackend& be, const Tensor& grad_spikes, const OptTensor& grad_v_last, const Tensor& x,
                        const OptTensor& v0, double v_threshold, std::optional<double> v_reset,
                        const std::string& surrogate, double alpha, bool detach_reset) {
  check_x(x);
  check_threshold(v_threshold, v_reset);
  Backward b;
  NeuronParams& p = b.p;
  TORCH_CHECK_VALUE(grad_spikes.sizes() == x.sizes(), "grad_spikes: expected shape ", x.sizes(),
                    ", got ", grad_spikes.sizes());
  TORCH_CHECK(grad_spikes.device() == x.device(), "grad_spikes: expected device ", x.device());
  b.grad_spikes = grad_spikes.to(x.scalar_type()).contiguous();
  if (grad_v_last.has_value() && grad_v_last->defined()) {
    b.grad_v_last = grad_v_last->to(at::kFloat).contiguous();
    p.grad_v_last = state_ptr(b.grad_v_last, x, "grad_v_last");
  }
  p.T = x.size(0);
  p.N = x.numel() / p.T;
  p.dtype = float_dtype(x, "x");
  p.v_threshold = float(v_threshold);
  p.hard_reset = v_reset.has_value();
  p.v_reset = v_reset.value_or(0.0);
  p.surrogate = parse_surrogate(surrogate, alpha);
  p.alpha = float(alpha);
  p.detach_reset = detach_reset;
  p.x = x.data_ptr();
  p.v0 = state_ptr(v0, x, "v0");
  p.grad_spikes = b.grad_spikes.data_ptr();
  b.grad_x = new_output(be, x.sizes(), x.options());
  b.grad_v0 = new_output(be, x.sizes().slice(1), x.options().dtype(at::kFloat));
  p.grad_x = b.grad_x.data_ptr();
  p.grad_v0 = b.grad_v0.data_ptr<float>();
  return b;
}

void set_div_charge(NeuronParams& p, double tau, bool decay_input) {
  check_tau(tau, "tau");
  p.tau = float(tau);
  p.charge = decay_input ? Charge::kDivDecayInput : Charge::kDivDecay;
}

// PLIF: k = sigmoid(w) per channel; returns k (kept alive by the caller).
Tensor set_mul_charge(NeuronParams& p, const Tensor& x, const Tensor& w, int64_t channel_dim,
                      bool decay_input) {
  TORCH_CHECK(w.device() == x.device(), "w: expected device ", x.device(), ", got ", w.device());
  TORCH_CHECK_TYPE(at::isFloatingType(w.scalar_type()), "w: expected a floating tensor, got ",
                   w.scalar_type());
  TORCH_CHECK_VALUE(w.dim() <= 1, "w: expected a scalar or a 1-D per-channel tensor, got shape ",
                    w.sizes());
  p.charge = decay_input ? Charge::kMulDecayInput : Charge::kMulDecay;
  p.decay_channels = 1;
  p.decay_inner = 1;
  if (w.dim() == 1) {
    const int64_t d = x.dim();
    TORCH_CHECK_VALUE(d >= 2, "channel_dim: x has no channel dimension (shape ", x.sizes(), ")");
    int64_t cd = channel_dim < 0 ? channel_dim + d : channel_dim;
    TORCH_CHECK_VALUE(cd >= 1 && cd < d, "channel_dim: expected a dimension of x.shape[1:] (1..",
                      d - 1, " or negative), got ", channel_dim);
    TORCH_CHECK_VALUE(w.size(0) == x.size(cd), "w: expected ", x.size(cd),
                      " values (x.shape[channel_dim]), got ", w.size(0));
    p.decay_channels = x.size(cd);
    p.decay_inner = 1;
    for (int64_t i = cd + 1; i < d; ++i) p.decay_inner *= x.size(i);
  }
  Tensor k = at::sigmoid(w.to(at::kFloat)).contiguous();
  p.decay = k.data_ptr<float>();
  return k;
}

void set_integer_fire(NeuronParams& p, double v_threshold, int64_t max_level,
                      const std::string& rounding) {
  TORCH_CHECK_VALUE(float(v_threshold) > 0, "v_threshold: expected > 0 for integer spikes, got ",
                    v_threshold);
  // Every level must be exact in the spike dtype (bf16: 8 significant bits, fp16: 11).
  const int64_t exact = p.dtype == DType::kBFloat16 ? 256 : p.dtype == DType::kFloat16 ? 2048
                                                                                        : (1 << 20);
  TORCH_CHECK_VALUE(max_level >= 1 && max_level <= exact, "max_level: expected 1..", exact,
                    " for this dtype (levels must be exact in it), got ", max_level);
  p.fire = Fire::kInteger;
  p.max_level = int32_t(max_level);
  p.rounding = parse_rounding(rounding);
}

void set_adaptive_fire(NeuronParams& p, double tau_adapt, double beta) {
  check_tau(tau_adapt, "tau_adapt");
  TORCH_CHECK_VALUE(finite_f32(beta), "beta: expected a finite float32 value, got ", beta);
  p.fire = Fire::kAdaptive;
  p.tau_adapt = float(tau_adapt);
  p.beta = float(beta);
}

Tensor reduce_decay_grad(const Tensor& grad_decay, const Tensor& k, const Tensor& w,
                         const NeuronParams& p) {
  // dL/dw = sum_elements dL/dk * k (1 - k), summed in float64 for a stable order.
  Tensor g = grad_decay.to(at::kDouble);
  Tensor per_channel;
  if (w.dim() == 0) {
    per_channel = g.sum();
  } else {
    const int64_t outer = p.N / (p.decay_channels * p.decay_inner);
    per_channel = g.view({outer, p.decay_channels, p.decay_inner}).sum(at::IntArrayRef{0, 2});
  }
  Tensor kd = k.to(at::kDouble);
  return (per_channel * kd * (1 - kd)).to(w.scalar_type());
}

}  // namespace

void check_surrogate_name(const std::string& surrogate, double alpha) {
  parse_surrogate(surrogate, alpha);
}

Tensor3 lif_fwd(const NeuronBackend& be, const Tensor& x, const OptTensor& v0, double tau,
                bool decay_input, double v_threshold, std::optional<double> v_reset,
                const std::string& surrogate, double alpha, bool, bool store_v_seq) {
  parse_surrogate(surrogate, alpha);
  Forward f = begin_forward(be, x, v0, v_threshold, v_reset, store_v_seq);
  set_div_charge(f.p, tau, decay_input);
  c10::DeviceGuard guard(x.device());
  be.forward(f.p);
  return {f.spikes, f.v_last, f.v_seq};
}

std::tuple<Tensor, Tensor> lif_bwd(const NeuronBackend& be, const Tensor& grad_spikes,
                                   const OptTensor& grad_v_last, const Tensor& x,
                                   const OptTensor& v0, double tau, bool decay_input,
                                   double v_threshold, std::optional<double> v_reset,
                                   const std::string& surrogate, double alpha,
                                   bool detach_reset) {
  Backward b = begin_backward(be, grad_spikes, grad_v_last, x, v0, v_threshold, v_reset, surrogate,
                              alpha, detach_reset);
  set_div_charge(b.p, tau, decay_input);
  c10::DeviceGuard guard(x.device());
  be.backward(b.p);
  return {b.grad_x, b.grad_v0};
}

Tensor3 if_fwd(const NeuronBackend& be, const Tensor& x, const OptTensor& v0,
               double v_threshold, std::optional<double> v_reset,
               const std::string& surrogate, double alpha, bool, bool store_v_seq) {
  parse_surrogate(surrogate, alpha);
  Forward f = begin_forward(be, x, v0, v_threshold, v_reset, store_v_seq);
  f.p.charge = Charge::kNoLeak;
  c10::DeviceGuard guard(x.device());
  be.forward(f.p);
  return {f.spikes, f.v_last, f.v_seq};
}

std::tuple<Tensor, Tensor> if_bwd(const NeuronBackend& be, const Tensor& grad_spikes,
                                  const OptTensor& grad_v_last, const Tensor& x,
                                  const OptTensor& v0, double v_threshold,
                                  std::optional<double> v_reset, const std::string& surrogate,
                                  double alpha, bool detach_reset) {
  Backward b = begin_backward(be, grad_spikes, grad_v_last, x, v0, v_threshold, v_reset, surrogate,
                              alpha, detach_reset);
  b.p.charge = Charge::kNoLeak;
  c10::DeviceGuard guard(x.device());
  be.backward(b.p);
  return {b.grad_x, b.grad_v0};
}

Tensor3 plif_fwd(const NeuronBackend& be, const Tensor& x, const Tensor& w, const OptTensor& v0,
                 int64_t channel_dim, bool decay_input, double v_threshold,
                 std::optional<double> v_reset, const std::string& surrogate, double alpha,
                 bool, bool store_v_seq) {
  parse_surrogate(surrogate, alpha);
  Forward f = begin_forward(be, x, v0, v_threshold, v_reset, store_v_seq);
  Tensor k = set_mul_charge(f.p, x, w, channel_dim, decay_input);
  c10::DeviceGuard guard(x.device());
  be.forward(f.p);
  return {f.spikes, f.v_last, f.v_seq};
}

Tensor3 plif_bwd(const NeuronBackend& be, const Tensor& grad_spikes, const OptTensor& grad_v_last,
                 const Tensor& x, const Tensor& w, const OptTensor& v0, int64_t channel_dim,
                 bool decay_input, double v_threshold, std::optional<double> v_reset,
                 const std::string& surrogate, double alpha, bool detach_reset) {
  Backward b = begin_backward(be, grad_spikes, grad_v_last, x, v0, v_threshold, v_reset, surrogate,
                              alpha, detach_reset);
  Tensor k = set_mul_charge(b.p, x, w, channel_dim, decay_input);
  Tensor grad_decay = new_output(be, x.sizes().slice(1), x.options().dtype(at::kFloat));
  b.p.grad_decay = grad_decay.data_ptr<float>();
  c10::DeviceGuard guard(x.device());
  be.backward(b.p);
  return {b.grad_x, b.grad_v0, reduce_decay_grad(grad_decay, k, w, b.p)};
}

Tensor3 ilif_fwd(const NeuronBackend& be, const Tensor& x, const OptTensor& v0, double tau,
                 bool decay_input, double v_threshold, int64_t max_level,
                 const std::string& rounding, bool, bool store_v_seq) {
  Forward f = begin_forward(be, x, v0, v_threshold, std::nullopt, store_v_seq);
  set_div_charge(f.p, tau, decay_input);
  set_integer_fire(f.p, v_threshold, max_level, rounding);
  c10::DeviceGuard guard(x.device());
  be.forward(f.p);
  return {f.spikes, f.v_last, f.v_seq};
}

std::tuple<Tensor, Tensor> ilif_bwd(const NeuronBackend& be, const Tensor& grad_spikes,
                                    const OptTensor& grad_v_last, const Tensor& x,
                                    const OptTensor& v0, double tau, bool decay_input,
                                    double v_threshold, int64_t max_level,
                                    const std::string& rounding, bool detach_reset) {
  Backward b = begin_backward(be, grad_spikes, grad_v_last, x, v0, v_threshold, std::nullopt,
                              "sigmoid", 1.0, detach_reset);
  set_div_charge(b.p, tau, decay_input);
  set_integer_fire(b.p, v_threshold, max_level, rounding);
  c10::DeviceGuard guard(x.device());
  be.backward(b.p);
  return {b.grad_x, b.grad_v0};
}

Tensor4 alif_fwd(const NeuronBackend& be, const Tensor& x, const OptTensor& v0, const OptTensor& a0,
                 double tau, bool decay_input, double v_threshold, std::optional<double> v_reset,
                 double tau_adapt, double beta, const std::string& surrogate, double alpha,
                 bool, bool store_v_seq) {
  parse_surrogate(surrogate, alpha);
  Forward f = begin_forward(be, x, v0, v_threshold, v_reset, store_v_seq);
  set_div_charge(f.p, tau, decay_input);
  set_adaptive_fire(f.p, tau_adapt, beta);
  f.p.a0 = state_ptr(a0, x, "a0");
  f.a_last = new_output(be, f.v_last.sizes(), f.v_last.options());
  f.p.a_last = f.a_last.data_ptr<float>();
  c10::DeviceGuard guard(x.device());
  be.forward(f.p);
  return {f.spikes, f.v_last, f.a_last, f.v_seq};
}

Tensor3 alif_bwd(const NeuronBackend& be, const Tensor& grad_spikes, const OptTensor& grad_v_last,
                 const OptTensor& grad_a_last, const Tensor& x, const OptTensor& v0,
                 const OptTensor& a0, double tau, bool decay_input, double v_threshold,
                 std::optional<double> v_reset, double tau_adapt, double beta,
                 const std::string& surrogate, double alpha, bool detach_reset) {
  Backward b = begin_backward(be, grad_spikes, grad_v_last, x, v0, v_threshold, v_reset, surrogate,
                              alpha, detach_reset);
  set_div_charge(b.p, tau, decay_input);
  set_adaptive_fire(b.p, tau_adapt, beta);
  b.p.a0 = state_ptr(a0, x, "a0");
  Tensor ga;
  if (grad_a_last.has_value() && grad_a_last->defined()) {
    ga = grad_a_last->to(at::kFloat).contiguous();
    b.p.grad_a_last = state_ptr(ga, x, "grad_a_last");
  }
  Tensor grad_a0 = new_output(be, b.grad_v0.sizes(), b.grad_v0.options());
  b.p.grad_a0 = grad_a0.data_ptr<float>();
  c10::DeviceGuard guard(x.device());
  be.backward(b.p);
  return {b.grad_x, b.grad_v0, grad_a0};
}

}  // namespace spikeops
