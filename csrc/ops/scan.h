// Device-agnostic implementation of the linear-attention scan ops linear_scan_fwd /
// linear_scan_bwd (linear attention, simple GLA, GLA): argument checks (the messages of
// spikeops.ref.attention._check_scan), output allocation, ScanParams filling. Each device
// registers them with its own ScanBackend (csrc/cpu/scan.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "common/scan_params.h"

namespace spikeops {

struct ScanBackend {
  void (*forward)(const ScanParams&);   // o (and ht when set)
  void (*backward)(const ScanParams&);  // dq, dk, dv (fp32, per query head), dg, dh0
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
  // > 0: a device backend whose kernels run chunks of this length and want the device
  // fields of ScanParams (dev_seq, ws: csrc/common/scan_params.h); the size of ws comes
  // from workspace_floats(params, backward). 0 (the CPU): host row0 / len only.
  int64_t device_chunk = 0;
  int64_t (*workspace_floats)(const ScanParams&, bool backward) = nullptr;
};

// Returns (o [B, T, Hq, V] in q's dtype, final_state [N, Hq, K, V] fp32, or an empty
// tensor when !output_final_state). chunk_size 0 runs the step-by-step recurrence.
std::tuple<at::Tensor, at::Tensor> linear_scan_fwd(
    const ScanBackend&, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& g_gamma,
    const c10::optional<at::Tensor>& gk, double scale,
    const c10::optional<at::Tensor>& initial_state, const c10::optional<at::Tensor>& cu_seqlens,
    int64_t chunk_size, bool output_final_state);

// Returns (dq, dk, dv, dg, dh0): dq/dk/dv in q/k/v's dtype and shape; dg in the shape and
// dtype of whichever of g / g_gamma / gk was given (empty if none); dh0 like
// initial_state (empty if none).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_scan_bwd(
    const ScanBackend&, const at::Tensor& grad_o, const c10::optional<at::Tensor>& grad_final_state,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& g_gamma,
    const c10::optional<at::Tensor>& gk, double scale,
    const c10::optional<at::Tensor>& initial_state, const c10::optional<at::Tensor>& cu_seqlens,
    int64_t chunk_size);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_SCAN_OPS(m, backend)                                                \
  do {                                                                                        \
    m.impl("linear_scan_fwd",                                                                 \
           [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,                  \
              const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& g_gamma,   \
              const c10::optional<at::Tensor>& gk, double scale,                              \
              const c10::optional<at::Tensor>& h0, const c10::optional<at::Tensor>& cu,       \
              int64_t chunk_size, bool output_final_state) {                                  \
             return ::spikeops::linear_scan_fwd(backend, q, k, v, g, g_gamma, gk, scale, h0,  \
                                                cu, chunk_size, output_final_state);          \
           });                                                                                \
    m.impl("linear_scan_bwd",                                                                 \
           [](const at::Tensor& grad_o, const c10::optional<at::Tensor>& grad_ht,             \
              const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,                  \
              const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& g_gamma,   \
              const c10::optional<at::Tensor>& gk, double scale,                              \
              const c10::optional<at::Tensor>& h0, const c10::optional<at::Tensor>& cu,       \
              int64_t chunk_size) {                                                           \
             return ::spikeops::linear_scan_bwd(backend, grad_o, grad_ht, q, k, v, g, g_gamma, \
                                                gk, scale, h0, cu, chunk_size);               \
           });                                                                                \
  } while (0)
