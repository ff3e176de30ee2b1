// Small helpers shared by the device-agnostic op implementations in csrc/ops.
#pragma once
#include <ATen/ATen.h>

#include <cstdlib>

#include "common/neuron_params.h"  // DType

namespace spikeops {

// SPIKEOPS_POISON_EMPTY=1 (set by the test suite): outputs are NaN-filled before the
// kernel runs, so an element a kernel forgets to write shows up.
inline bool poison_outputs() {
  static const bool on = [] {
    const char* e = std::getenv("SPIKEOPS_POISON_EMPTY");
    return e != nullptr && *e != '\0' && *e != '0';
  }();
  return on;
}

// The kernel dtype of a float32 / bfloat16 / float16 tensor; a TypeError naming `name`
// (with `what`, e.g. " (binary 0/1 spikes)", after the expected list) otherwise.
inline DType float_dtype(const at::Tensor& t, const char* name, const char* what = "") {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default:
      TORCH_CHECK_TYPE(false, name, ": expected float32, bfloat16 or float16", what, ", got ",
                       t.scalar_type());
  }
}

// `t` (argument `name`) must be on q's device and share q's dtype.
inline void check_matches_q(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK_VALUE(t.device() == q.device(), name, ": expected device ", q.device(),
                    " (that of q), got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == q.scalar_type(), name, ": dtype ", t.scalar_type(),
                   " differs from q's ", q.scalar_type());
}

}  // namespace spikeops
