// Plain-C++ descriptions of the recurrent attention ops, shared by the CPU kernels
// (csrc/cpu/kernels/recurrent_kernel.cpp) and the torch-free CUDA kernels
// (csrc/cuda/recurrent/). Host glue (csrc/ops/recurrent.cpp) validates the tensors and
// fills these structs; kernels only read them. Every tensor is contiguous.
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType, Surrogate

namespace spikeops {

// ---- RWKV-4 WKV ------------------------------------------------------------------------
// For each (b, c), with w = -exp(time_decay[c]) and u = time_first[c]:
//   y_t = (A_t + e^{u + k_t} v_t) / (B_t + e^{u + k_t}),
//   A_{t+1} = e^w A_t + e^{k_t} v_t,  B_{t+1} = e^w B_t + e^{k_t},  A_0 = B_0 = 0,
// kept as (a, b, p) = (A e^{-p}, B e^{-p}, running max exponent p) so no exp() sees a
// positive argument (python/spikeops/ref/attention.py: rwkv4_wkv_ref).
struct RWKVParams {
  DType dtype = DType::kFloat32;  // of k, v, y, grad_y, grad_k, grad_v
  int64_t B = 0, T = 0, C = 0;
  const float* time_decay = nullptr;  // [C]
  const float* time_first = nullptr;  // [C]
  const void* k = nullptr;            // [B, T, C]
  const void* v = nullptr;            // [B, T, C]
  void* y = nullptr;                  // [B, T, C] (forward)

  // Backward (recomputes the forward from k, v).
  const void* grad_y = nullptr;       // [B, T, C]
  void* grad_k = nullptr;             // [B, T, C]
  void* grad_v = nullptr;             // [B, T, C]
  // Per-(b, c) partial sums over t of dL/dw and dL/du, [2, B, C]: row 0 dL/dw, row 1
  // dL/du. Reduced over b in a fixed order into the two [C] gradients below (no atomics).
  float* param_partial = nullptr;
  float* grad_time_decay = nullptr;   // [C] = w * sum_b dL/dw
  float* grad_time_first = nullptr;   // [C] = sum_b dL/du
  // CUDA only: the forward's pre-step states (a, b, p), [3, B, T, C] fp32.
  float* state_ws = nullptr;
};

// The "empty past" exponent of the reference (p starts at -1e38).
constexpr float kRwkvEmpty = -1e38f;

// ---- SDSA (Spike-driven Transformer V1 spike-driven self-attention) --------------------
// q, k, v [T, G, N, D] (G = B * H heads):  kv[t, g, d] = sum_n k v;  a LIF over t per
// (g, d) (hard reset to 0, decay_input: H = V + (kv - V) / tau, S = [H - v_threshold >= 0],
// V = (1 - S) H);  out[t, g, n, d] = q * S[t, g, d].
struct SDSAParams {
  DType dtype = DType::kFloat32;  // of q, k, v, out, grad_out, grad_q/k/v
  int64_t T = 0, G = 0, N = 0, D = 0;
  float tau = 2.f;
  float v_threshold = 0.5f;
  bool detach_reset = true;
  Surrogate surrogate = Surrogate::kSigmoid;
  float alpha = 4.f;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;       // [T, G, N, D] (forward)
  float* h_seq = nullptr;    // [T, G, D] membrane before firing, written by the forward and
                             // read by the backward (the only thing saved between them)
  // Backward.
  const void* grad_out = nullptr;
  void* grad_q = nullptr;
  void* grad_k = nullptr;
  void* grad_v = nullptr;
  // CUDA only: [T, G, D] fp32 scratch for dL/dS, then dL/dkv.
  float* grad_ws = nullptr;
};

}  // namespace spikeops
