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
// SSA fused with the attention LIF over dim 0 of q [T, ..., N, D] (returns its spikes);
// surrogate / alpha / detach_reset are only checked here (the backward uses them).
at::Tensor ssa_lif_fwd(const SSABackend&, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, double scale, c10::string_view order, double tau,
                       double v_threshold, double v_reset, const std::string& surrogate,
                       double alpha, bool detach_reset);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_SSA_OPS(m, backend)                                              \
  do {                                                                                     \
    m.impl("ssa_fwd", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,    \
                         double scale, c10::string_view order) {                           \
      return ::spikeops::ssa_fwd(backend, q, k, v, scale, order); });                      \
    m.impl("ssa_lif_fwd", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,\
                             double scale, c10::string_view order, double tau,            \
                             double v_threshold, double v_reset,                          \
                             const std::string& surrogate, double alpha, bool detach) {   \
      return ::spikeops::ssa_lif_fwd(backend, q, k, v, scale, order, tau, v_threshold,     \
                                     v_reset, surrogate, alpha, detach); });               \
  } while (0)
