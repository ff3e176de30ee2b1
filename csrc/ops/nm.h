// Device-agnostic implementations of the N:M sparse ops: argument checks, output
// allocation, NMGemmParams / NMCompressParams filling. Each device registers them with
// its own NMBackend (csrc/cpu/nm.cpp, csrc/cuda/glue/nm.cpp). nm_masked_linear is
// composite (compress + nm_linear through the dispatcher) and registered once.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common/nm_params.h"

namespace spikeops {

struct NMBackend {
  void (*compress)(const NMCompressParams&);
  void (*linear)(const NMGemmParams&);      // out = in @ W^T + bias
  void (*grad_input)(const NMGemmParams&);  // out = in @ W
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
  // Checks that meta [rows, ceil(k/8)] (contiguous, on this device) has exactly n bits set
  // in each group of m, raising an error naming `meta` otherwise. The CPU checks every
  // call; CUDA passes null (no device sync per call): its kernels are safe for any meta
  // (never out of bounds), and spikeops.nm.NMTensor checks meta once when built.
  void (*validate_meta)(const uint8_t* meta, int64_t rows, int64_t k, int64_t m, int64_t n) =
      nullptr;
};

std::tuple<at::Tensor, at::Tensor> nm_compress(const NMBackend&, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& meta,
                                               int64_t n, int64_t m);
at::Tensor nm_linear(const NMBackend&, const at::Tensor& x, const at::Tensor& values,
                     const at::Tensor& meta, int64_t n, int64_t m,
                     const std::optional<at::Tensor>& bias);
at::Tensor nm_linear_grad_input(const NMBackend&, const at::Tensor& grad_out,
                                const at::Tensor& values, const at::Tensor& meta, int64_t n,
                                int64_t m);

}  // namespace spikeops

#define SPIKEOPS_REGISTER_NM_OPS(m, backend)                                               \
  do {                                                                                     \
    using namespace ::spikeops;                                                            \
    m.impl("nm_compress", [](const at::Tensor& w, const std::optional<at::Tensor>& meta,   \
                             int64_t n, int64_t mm) { return nm_compress(backend, w, meta, n, mm); }); \
    m.impl("nm_linear", [](const at::Tensor& x, const at::Tensor& v, const at::Tensor& meta, \
                           int64_t n, int64_t mm, const std::optional<at::Tensor>& b) {     \
      return nm_linear(backend, x, v, meta, n, mm, b); });                                 \
    m.impl("nm_linear_grad_input", [](const at::Tensor& g, const at::Tensor& v,            \
                                      const at::Tensor& meta, int64_t n, int64_t mm) {     \
      return nm_linear_grad_input(backend, g, v, meta, n, mm); });                         \
  } while (0)
