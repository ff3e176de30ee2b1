// Device-agnostic implementations of the neuron ops: argument checks, output
// allocation, NeuronParams filling. Each device registers these with its own
// NeuronBackend (csrc/cpu/neurons.cpp, csrc/cuda/glue/neurons.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "common/neuron_params.h"

namespace spikeops {

struct NeuronBackend {
  // Run all T steps for all N elements; the params' tensors live on the backend's device.
  void (*forward)(const NeuronParams&);
  void (*backward)(const NeuronParams&);
  // Allocates an uninitialised output on the device; null means at::empty.
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
};

using Tensor = at::Tensor;

// Raises an error naming surrogate / alpha when they are not a valid surrogate gradient.
void check_surrogate_name(const std::string& surrogate, double alpha);
using OptTensor = std::optional<at::Tensor>;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

Tensor3 lif_fwd(const NeuronBackend&, const Tensor& x, const OptTensor& v0, double tau,
                bool decay_input, double v_threshold, std::optional<double> v_reset,
                const std::string& surrogate, double alpha, bool detach_reset, bool store_v_seq);
std::tuple<Tensor, Tensor> lif_bwd(const NeuronBackend&, const Tensor& grad_spikes,
                                   const OptTensor& grad_v_last, const Tensor& x,
                                   const OptTensor& v0, double tau, bool decay_input,
                                   double v_threshold, std::optional<double> v_reset,
                                   const std::string& surrogate, double alpha,
                                   bool detach_reset);

Tensor3 if_fwd(const NeuronBackend&, const Tensor& x, const OptTensor& v0,
               double v_threshold, std::optional<double> v_reset,
               const std::string& surrogate, double alpha, bool detach_reset, bool store_v_seq);
std::tuple<Tensor, Tensor> if_bwd(const NeuronBackend&, const Tensor& grad_spikes,
                                  const OptTensor& grad_v_last, const Tensor& x,
                                  const OptTensor& v0, double v_threshold,
                                  std::optional<double> v_reset, const std::string& surrogate,
                                  double alpha, bool detach_reset);

Tensor3 plif_fwd(const NeuronBackend&, const Tensor& x, const Tensor& w, const OptTensor& v0,
                 int64_t channel_dim, bool decay_input, double v_threshold,
                 std::optional<double> v_reset, const std::string& surrogate, double alpha,
                 bool detach_reset, bool store_v_seq);
Tensor3 plif_bwd(const NeuronBackend&, const Tensor& grad_spikes, const OptTensor& grad_v_last,
                 const Tensor& x, const Tensor& w, const OptTensor& v0, int64_t channel_dim,
                 bool decay_input, double v_threshold, std::optional<double> v_reset,
                 const std::string& surrogate, double alpha, bool detach_reset);

Tensor3 ilif_fwd(const NeuronBackend&, const Tensor& x, const OptTensor& v0, double tau,
                 bool decay_input, double v_threshold, int64_t max_level,
                 const std::string& rounding, bool detach_reset, bool store_v_seq);
std::tuple<Tensor, Tensor> ilif_bwd(const NeuronBackend&, const Tensor& grad_spikes,
                                    const OptTensor& grad_v_last, const Tensor& x,
                                    const OptTensor& v0, double tau, bool decay_input,
                                    double v_threshold, int64_t max_level,
                                    const std::string& rounding, bool detach_reset);

Tensor4 alif_fwd(const NeuronBackend&, const Tensor& x, const OptTensor& v0, const OptTensor& a0,
                 double tau, bool decay_input, double v_threshold, std::optional<double> v_reset,
                 double tau_adapt, double beta, const std::string& surrogate, double alpha,
                 bool detach_reset, bool store_v_seq);
Tensor3 alif_bwd(const NeuronBackend&, const Tensor& grad_spikes, const OptTensor& grad_v_last,
                 const OptTensor& grad_a_last, const Tensor& x, const OptTensor& v0,
                 const OptTensor& a0, double tau, bool decay_input, double v_threshold,
                 std::optional<double> v_reset, double tau_adapt, double beta,
                 const std::string& surrogate, double alpha, bool detach_reset);

}  // namespace spikeops

// Registers every neuron op for `dispatch_key` with `backend`; used once per device.
#define SPIKEOPS_REGISTER_NEURON_OPS(m, backend)                                        \
  do {                                                                                  \
    using namespace ::spikeops;                                                         \
    m.impl("lif_fwd", [](const Tensor& x, const OptTensor& v0, double tau, bool di,     \
                         double vth, std::optional<double> vr, c10::string_view sg,     \
                         double a, bool dr, bool seq) {                                 \
      return lif_fwd(backend, x, v0, tau, di, vth, vr, std::string(sg), a, dr, seq); }); \
    m.impl("lif_bwd", [](const Tensor& gs, const OptTensor& gv, const Tensor& x,        \
                         const OptTensor& v0, double tau, bool di, double vth,          \
                         std::optional<double> vr, c10::string_view sg, double a,       \
                         bool dr) {                                                     \
      return lif_bwd(backend, gs, gv, x, v0, tau, di, vth, vr, std::string(sg), a, dr); }); \
    m.impl("if_fwd", [](const Tensor& x, const OptTensor& v0, double vth,               \
                        std::optional<double> vr, c10::string_view sg, double a,        \
                        bool dr, bool seq) {                                            \
      return if_fwd(backend, x, v0, vth, vr, std::string(sg), a, dr, seq); });          \
    m.impl("if_bwd", [](const Tensor& gs, const OptTensor& gv, const Tensor& x,         \
                        const OptTensor& v0, double vth, std::optional<double> vr,      \
                        c10::string_view sg, double a, bool dr) {                       \
      return if_bwd(backend, gs, gv, x, v0, vth, vr, std::string(sg), a, dr); });       \
    m.impl("plif_fwd", [](const Tensor& x, const Tensor& w, const OptTensor& v0,        \
                          int64_t cd, bool di, double vth, std::optional<double> vr,    \
                          c10::string_view sg, double a, bool dr, bool seq) {           \
      return plif_fwd(backend, x, w, v0, cd, di, vth, vr, std::string(sg), a, dr, seq); }); \
    m.impl("plif_bwd", [](const Tensor& gs, const OptTensor& gv, const Tensor& x,       \
                          const Tensor& w, const OptTensor& v0, int64_t cd, bool di,    \
                          double vth, std::optional<double> vr, c10::string_view sg,    \
                          double a, bool dr) {                                          \
      return plif_bwd(backend, gs, gv, x, w, v0, cd, di, vth, vr, std::string(sg), a, dr); }); \
    m.impl("ilif_fwd", [](const Tensor& x, const OptTensor& v0, double tau, bool di,    \
                          double vth, int64_t d, c10::string_view r, bool dr, bool seq) { \
      return ilif_fwd(backend, x, v0, tau, di, vth, d, std::string(r), dr, seq); });    \
    m.impl("ilif_bwd", [](const Tensor& gs, const OptTensor& gv, const Tensor& x,       \
                          const OptTensor& v0, double tau, bool di, double vth,         \
                          int64_t d, c10::string_view r, bool dr) {                     \
      return ilif_bwd(backend, gs, gv, x, v0, tau, di, vth, d, std::string(r), dr); }); \
    m.impl("alif_fwd", [](const Tensor& x, const OptTensor& v0, const OptTensor& a0,    \
                          double tau, bool di, double vth, std::optional<double> vr,    \
                          double ta, double beta, c10::string_view sg, double a,        \
                          bool dr, bool seq) {                                          \
      return alif_fwd(backend, x, v0, a0, tau, di, vth, vr, ta, beta, std::string(sg), a, \
                      dr, seq); });                                                     \
    m.impl("alif_bwd", [](const Tensor& gs, const OptTensor& gv, const OptTensor& ga,   \
                          const Tensor& x, const OptTensor& v0, const OptTensor& a0,    \
                          double tau, bool di, double vth, std::optional<double> vr,    \
                          double ta, double beta, c10::string_view sg, double a,        \
                          bool dr) {                                                    \
      return alif_bwd(backend, gs, gv, ga, x, v0, a0, tau, di, vth, vr, ta, beta,       \
                      std::string(sg), a, dr); });                                      \
  } while (0)
