// Device-agnostic implementation of the sliding-window attention ops swa_fwd / swa_bwd:
// argument checks, output allocation, SWAParams filling. Each device registers them with
// its own SWABackend (csrc/cpu/swa.cpp, csrc/cuda/glue/swa.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common/swa_params.h"

namespace spikeops {

struct SWABackend {
  void (*forward)(const SWAParams&);   // writes p.o, p.lse
  void (*backward)(const SWAParams&);  // writes p.delta, p.dq, p.dk, p.dv
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
  int64_t max_head_dim = 0;            // largest D / Dv the kernels take; 0: any
};

// (o [B, T, H, Dv] in q's dtype, lse [B, H, T] fp32)
std::tuple<at::Tensor, at::Tensor> swa_fwd(const SWABackend&, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v,
                                           int64_t window, double scale);
// (dq, dk, dv) in q's dtype
std::tuple<at::Tensor, at::Tensor, at::Tensor> swa_bwd(
    const SWABackend&, const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_lse,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& o,
    const at::Tensor& lse, int64_t window, double scale);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_SWA_OPS(m, backend)                                                  \
  do {                                                                                         \
    m.impl("swa_fwd", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,        \
                         int64_t window, double scale) {                                       \
      return ::spikeops::swa_fwd(backend, q, k, v, window, scale); });                         \
    m.impl("swa_bwd", [](const at::Tensor& grad_o, const std::optional<at::Tensor>& grad_lse,  \
                         const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,        \
                         const at::Tensor& o, const at::Tensor& lse, int64_t window,           \
                         double scale) {                                                       \
      return ::spikeops::swa_bwd(backend, grad_o, grad_lse, q, k, v, o, lse, window, scale); \
    });                                                                                        \
  } while (0)
