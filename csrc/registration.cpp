// Every spikeops op schema, in one place. Devices register their kernels beside
// the kernels (TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/glue/*.cpp);
// fake (meta) implementations and autograd formulas live in python/spikeops/ops.
#include <torch/library.h>

TORCH_LIBRARY(spikeops, m) {
  // ---- fused multi-step neurons (x is time-major [T, *]) ----------------------
  // Forward returns (spikes, v_last, v_seq); v_seq is empty unless store_v_seq.
  // Forward ops also take the backward-only arguments (surrogate, alpha,
  // detach_reset): the autograd formula sees only the forward's inputs, and
  // a bad surrogate name fails at the forward call instead of in backward.
  m.def("lif_fwd(Tensor x, Tensor? v0, float tau, bool decay_input, float v_threshold, "
        "float? v_reset, str surrogate, float alpha, bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("lif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, float tau, "
        "bool decay_input, float v_threshold, float? v_reset, str surrogate, float alpha, "
        "bool detach_reset) -> (Tensor, Tensor)");
  m.def("if_fwd(Tensor x, Tensor? v0, float v_threshold, float? v_reset, str surrogate, "
        "float alpha, bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("if_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, "
        "float v_threshold, float? v_reset, str surrogate, float alpha, bool detach_reset) "
        "-> (Tensor, Tensor)");
  m.def("plif_fwd(Tensor x, Tensor w, Tensor? v0, int channel_dim, bool decay_input, "
        "float v_threshold, float? v_reset, str surrogate, float alpha, bool detach_reset, "
        "bool store_v_seq) -> (Tensor, Tensor, Tensor)");
  m.def("plif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor w, Tensor? v0, "
        "int channel_dim, bool decay_input, float v_threshold, float? v_reset, str surrogate, "
        "float alpha, bool detach_reset) -> (Tensor, Tensor, Tensor)");
  m.def("ilif_fwd(Tensor x, Tensor? v0, float tau, bool decay_input, float v_threshold, "
        "int max_level, str rounding, bool detach_reset, bool store_v_seq) -> (Tensor, Tensor, Tensor)");
  m.def("ilif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor x, Tensor? v0, float tau, "
        "bool decay_input, float v_threshold, int max_level, str rounding, bool detach_reset) "
        "-> (Tensor, Tensor)");
  // Forward returns (spikes, v_last, a_last, v_seq).
  m.def("alif_fwd(Tensor x, Tensor? v0, Tensor? a0, float tau, bool decay_input, "
        "float v_threshold, float? v_reset, float tau_adapt, float beta, str surrogate, float alpha, "
        "bool detach_reset, bool store_v_seq) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("alif_bwd(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_a_last, Tensor x, "
        "Tensor? v0, Tensor? a0, float tau, bool decay_input, float v_threshold, float? v_reset, "
        "float tau_adapt, float beta, str surrogate, float alpha, bool detach_reset) "
        "-> (Tensor, Tensor, Tensor)");
}
