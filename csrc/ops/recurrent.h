// Device-agnostic implementation of the recurrent attention ops (RWKV-4 WKV, SDSA):
// argument checks, output allocation, Params filling. Each device registers them with
// its own RecurrentBackend (csrc/cpu/recurrent.cpp, csrc/cuda/glue/recurrent.cpp).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <tuple>

#include "common/recurrent_params.h"

namespace spikeops {

struct RecurrentBackend {
  void (*rwkv_forward)(const RWKVParams&);
  // Fills grad_k, grad_v and the two [C] parameter gradients (via param_partial).
  void (*rwkv_backward)(const RWKVParams&);
  void (*sdsa_forward)(const SDSAParams&);
  void (*sdsa_backward)(const SDSAParams&);
  // Allocates an uninitialised output on the device; null means at::empty.
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
  // The device kernels want the scratch buffers RWKVParams::state_ws / SDSAParams::grad_ws.
  bool device_workspace = false;
};

at::Tensor rwkv4_wkv_fwd(const RecurrentBackend&, const at::Tensor& time_decay,
                         const at::Tensor& time_first, const at::Tensor& k, const at::Tensor& v);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rwkv4_wkv_bwd(
    const RecurrentBackend&, const at::Tensor& grad_y, const at::Tensor& time_decay,
    const at::Tensor& time_first, const at::Tensor& k, const at::Tensor& v);

std::tuple<at::Tensor, at::Tensor> sdsa_fwd(const RecurrentBackend&, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            double v_threshold, double tau, bool detach_reset,
                                            c10::string_view surrogate, double alpha);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sdsa_bwd(
    const RecurrentBackend&, const at::Tensor& grad_out, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& h_seq, double v_threshold,
    double tau, bool detach_reset, c10::string_view surrogate, double alpha);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_RECURRENT_OPS(m, backend)                                         \
  do {                                                                                      \
    m.impl("rwkv4_wkv_fwd", [](const at::Tensor& td, const at::Tensor& tf,                  \
                               const at::Tensor& k, const at::Tensor& v) {                  \
      return ::spikeops::rwkv4_wkv_fwd(backend, td, tf, k, v); });                          \
    m.impl("rwkv4_wkv_bwd", [](const at::Tensor& gy, const at::Tensor& td,                  \
                               const at::Tensor& tf, const at::Tensor& k,                   \
                               const at::Tensor& v) {                                       \
      return ::spikeops::rwkv4_wkv_bwd(backend, gy, td, tf, k, v); });                      \
    m.impl("sdsa_fwd", [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,    \
                          double vth, double tau, bool detach, c10::string_view sg,         \
                          double alpha) {                                                   \
      return ::spikeops::sdsa_fwd(backend, q, k, v, vth, tau, detach, sg, alpha); });       \
    m.impl("sdsa_bwd", [](const at::Tensor& g, const at::Tensor& q, const at::Tensor& k,    \
                          const at::Tensor& v, const at::Tensor& h, double vth, double tau, \
                          bool detach, c10::string_view sg, double alpha) {                 \
      return ::spikeops::sdsa_bwd(backend, g, q, k, v, h, vth, tau, detach, sg, alpha); }); \
  } while (0)
