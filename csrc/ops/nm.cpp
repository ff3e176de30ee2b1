// Argument checks and output allocation shared by every device's N:M ops, and the
// composite nm_masked_linear (registered once, for every device).
#include "ops/nm.h"

#include "ops/common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

namespace spikeops {
namespace {

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;


Tensor new_output(const NMBackend& be, at::IntArrayRef sizes, const at::TensorOptions& opt) {
  Tensor t = be.empty ? be.empty(sizes, opt) : at::empty(sizes, opt);
  if (poison_outputs() && t.numel() > 0 && at::isFloatingType(opt.dtype().toScalarType()))
    t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}


void check_nm(int64_t n, int64_t m) {
  TORCH_CHECK_VALUE(m >= 2 && m <= 32 && (m & (m - 1)) == 0,
                    "m: expected a power of two between 2 and 32, got ", m);
  TORCH_CHECK_VALUE(n >= 1 && n < m, "n: expected 1 <= n < m = ", m, ", got ", n);
}

void check_same_device(const Tensor& t, const Tensor& ref, const char* name,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, ": expected device ", ref.device(),
                    " (that of ", ref_name, "), got ", t.device());
}

// Checks the compressed weight (values, meta) of a W [rows, k]; returns k.
int64_t check_compressed(const Tensor& values, const Tensor& meta, int64_t n, int64_t m,
                         const Tensor& x, const char* x_name) {
  check_nm(n, m);
  float_dtype(values, "values");
  TORCH_CHECK_VALUE(values.dim() == 2, "values: expected a 2-D tensor [rows, k / m * n], got ",
                    values.dim(), "-D");
  TORCH_CHECK_VALUE(values.size(1) > 0 && values.size(1) % n == 0,
                    "values: expected a positive multiple of n = ", n,
                    " kept entries per row, got ", values.size(1));
  const int64_t k = values.size(1) / n * m;
  TORCH_CHECK_TYPE(meta.scalar_type() == at::kByte, "meta: expected uint8, got ",
                   meta.scalar_type());
  TORCH_CHECK_VALUE(meta.dim() == 2 && meta.size(0) == values.size(0) &&
                        meta.size(1) == (k + 7) / 8,
                    "meta: expected shape [", values.size(0), ", ", (k + 7) / 8,
                    "] (rows, ceil(k / 8)) for values of shape ", values.sizes(), " and ", n,
                    ":", m, ", got ", meta.sizes());
  check_same_device(values, x, "values", x_name);
  check_same_device(meta, x, "meta", x_name);
  TORCH_CHECK_TYPE(values.scalar_type() == x.scalar_type(), "values: dtype ",
                   values.scalar_type(), " differs from ", x_name, "'s ", x.scalar_type());
  return k;
}

void check_meta_contents(const NMBackend& be, const Tensor& meta, int64_t rows, int64_t k,
                         int64_t n, int64_t m) {
  if (be.validate_meta && rows > 0) be.validate_meta(meta.data_ptr<uint8_t>(), rows, k, m, n);
}

NMGemmParams gemm_params(const Tensor& values, const Tensor& meta, int64_t n, int64_t m,
                         int64_t k) {
  NMGemmParams p;
  p.dtype = float_dtype(values, "values");
  p.n = int32_t(n);
  p.m = int32_t(m);
  p.rows = values.size(0);
  p.k = k;
  p.kept = values.size(1);
  p.meta_stride = (k + 7) / 8;
  p.values = values.data_ptr();
  p.meta = meta.data_ptr<uint8_t>();
  return p;
}

}  // namespace

std::tuple<Tensor, Tensor> nm_compress(const NMBackend& be, const Tensor& weight,
                                       const OptTensor& meta, int64_t n, int64_t m) {
  check_nm(n, m);
  const DType dt = float_dtype(weight, "weight");
  TORCH_CHECK_VALUE(weight.dim() == 2, "weight: expected a 2-D tensor [rows, k], got ",
                    weight.dim(), "-D (flatten conv weights to [out, in * kh * kw] first)");
  const int64_t rows = weight.size(0), k = weight.size(1);
  TORCH_CHECK_VALUE(k >= m && k % m == 0, "weight: k = weight.shape[1] = ", k,
                    " must be a positive multiple of m = ", m);
  c10::DeviceGuard guard(weight.device());
  const Tensor w = weight.contiguous();
  const int64_t kept = k / m * n, stride = (k + 7) / 8;
  Tensor meta_out;
  if (meta.has_value()) {
    TORCH_CHECK_TYPE(meta->scalar_type() == at::kByte, "meta: expected uint8, got ",
                     meta->scalar_type());
    TORCH_CHECK_VALUE(meta->dim() == 2 && meta->size(0) == rows && meta->size(1) == stride,
                      "meta: expected shape [", rows, ", ", stride,
                      "] (rows, ceil(k / 8)) for weight of shape ", weight.sizes(), ", got ",
                      meta->sizes());
    check_same_device(*meta, weight, "meta", "weight");
    meta_out = meta->contiguous().clone();
    check_meta_contents(be, meta_out, rows, k, n, m);
  } else {
    meta_out = at::empty({rows, stride}, weight.options().dtype(at::kByte));
  }
  Tensor values = new_output(be, {rows, kept}, weight.options());
  if (rows == 0) return {values, meta_out};
  NMCompressParams p;
  p.dtype = dt;
  p.n = int32_t(n);
  p.m = int32_t(m);
  p.rows = rows;
  p.k = k;
  p.kept = kept;
  p.meta_stride = stride;
  p.select = !meta.has_value();
  p.weight = w.data_ptr();
  p.meta = meta_out.data_ptr<uint8_t>();
  p.values = values.data_ptr();
  be.compress(p);
  return {values, meta_out};
}

Tensor nm_linear(const NMBackend& be, const Tensor& x, const Tensor& values, const Tensor& meta,
                 int64_t n, int64_t m, const OptTensor& bias) {
  float_dtype(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected a tensor [*, in_features], got a scalar");
  const int64_t k = check_compressed(values, meta, n, m, x, "x");
  TORCH_CHECK_VALUE(x.size(-1) == k, "x: expected in_features = x.shape[-1] = ", k,
                    " (the weight's), got ", x.size(-1));
  const int64_t rows = values.size(0);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == rows, "bias: expected shape [",
                      rows, "], got ", bias->sizes());
    check_same_device(*bias, x, "bias", "x");
    TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), "bias: dtype ",
                     bias->scalar_type(), " differs from x's ", x.scalar_type());
  }
  c10::DeviceGuard guard(x.device());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = rows;
  Tensor out = new_output(be, out_shape, x.options());
  const Tensor xc = x.contiguous(), vc = values.contiguous(), mc = meta.contiguous();
  check_meta_contents(be, mc, rows, k, n, m);
  const int64_t batch = x.numel() / k;
  if (out.numel() == 0) return out;
  Tensor bc;
  NMGemmParams p = gemm_params(vc, mc, n, m, k);
  if (bias.has_value()) {
    bc = bias->contiguous();
    p.bias = bc.data_ptr();
  }
  p.batch = batch;
  p.in = xc.data_ptr();
  p.out = out.data_ptr();
  be.linear(p);
  return out;
}

Tensor nm_linear_grad_input(const NMBackend& be, const Tensor& grad_out, const Tensor& values,
                            const Tensor& meta, int64_t n, int64_t m) {
  float_dtype(grad_out, "grad_out");
  TORCH_CHECK_VALUE(grad_out.dim() >= 1, "grad_out: expected a tensor [*, out_features], got a scalar");
  const int64_t k = check_compressed(values, meta, n, m, grad_out, "grad_out");
  const int64_t rows = values.size(0);
  TORCH_CHECK_VALUE(grad_out.size(-1) == rows, "grad_out: expected out_features = "
                    "grad_out.shape[-1] = ", rows, " (the weight's rows), got ",
                    grad_out.size(-1));
  c10::DeviceGuard guard(grad_out.device());
  std::vector<int64_t> out_shape(grad_out.sizes().begin(), grad_out.sizes().end());
  out_shape.back() = k;
  Tensor out = new_output(be, out_shape, grad_out.options());
  const Tensor gc = grad_out.contiguous(), vc = values.contiguous(), mc = meta.contiguous();
  check_meta_contents(be, mc, rows, k, n, m);
  if (out.numel() == 0) return out;
  if (rows == 0) return out.zero_();
  NMGemmParams p = gemm_params(vc, mc, n, m, k);
  p.batch = out.numel() / k;
  p.in = gc.data_ptr();
  p.out = out.data_ptr();
  be.grad_input(p);
  return out;
}

namespace {

Tensor nm_masked_linear(const Tensor& x, const Tensor& weight, const Tensor& values,
                        const Tensor& meta, int64_t n, int64_t m, const OptTensor& bias,
                        double decay, bool dense_grad) {
  (void)dense_grad;  // used by the autograd formula only
  TORCH_CHECK_VALUE(std::isfinite(decay) && decay >= 0, "decay: expected a finite value >= 0, got ",
                    decay);
  static auto linear = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("spikeops::nm_linear", "")
                           .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t,
                                         int64_t, const OptTensor&)>();
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type(), "weight: dtype ",
                   weight.scalar_type(), " differs from x's ", x.scalar_type());
  check_same_device(weight, x, "weight", "x");
  TORCH_CHECK_VALUE(weight.dim() == 2 && values.dim() == 2 && weight.size(0) == values.size(0) &&
                        n >= 1 && values.size(1) % n == 0 &&
                        weight.size(1) == values.size(1) / n * m,
                    "weight: expected shape [rows, K] matching values ", values.sizes(), " (",
                    n, ":", m, "), got ", weight.sizes());
  return linear.call(x, values, meta, n, m, bias);
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CompositeExplicitAutograd, m) {
  m.impl("nm_masked_linear", &::spikeops::nm_masked_linear);
}
