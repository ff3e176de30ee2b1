// Device-agnostic implementation of the spiking self-attention op ssa_fwd: argument
// checks, output allocation, SSAParams filling. Each device registers it with its own
// SSABackend (csrc/cpu/attention.cpp).
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "common/attention_params.h"

namespace spikeops {

struct SSABackend {
  // Computes p.out; raises an error naming q, k or v when an entry is not exactly 0 or 1.
  void (*forward)(const SSAParams&);
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
};

at::Tensor ssa_fwd(const SSABackend&, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, double scale, c10::string_view order);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_SSA_OPS(m, backend)                                              \
  do {                                                                                     \
    m.impl("ssa_fwd", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,    \
                         double scale, c10::string_view order) {                           \
      return ::spikeops::ssa_fwd(backend, q, k, v, scale, order); });                      \
  } while (0)
