// Plain-C++ description of one spiking self-attention (SSA) call, shared by the CPU
// kernels (csrc/cpu/kernels/attention_kernel.cpp) and any future device kernel.
//
//   out[g] = scale * q[g] @ (k[g]^T @ v[g])        (order "kv_first")
//          = scale * (q[g] @ k[g]^T) @ v[g]        (order "qk_first", the same numbers)
//
// for G independent heads: q, k [G, N, D], v [G, N, Dv], out [G, N, Dv], all contiguous,
// in one float dtype. Every entry of q, k, v must be exactly 0 or 1 (spikes); the kernels
// check this while bit-packing and report the first offending tensor. Host glue
// validates shapes / dtypes / devices and fills this struct; kernels only read it.
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

struct SSAParams {
  DType dtype = DType::kFloat32;  // of q, k, v and out
  int64_t G = 0;                  // heads (the leading dims of q, flattened)
  int64_t N = 0;                  // tokens
  int64_t D = 0;                  // q / k features
  int64_t Dv = 0;                 // v / out features
  float scale = 0.125f;
  bool qk_first = false;          // informational: both orders give identical results
  // Fused attention LIF (op ssa_lif_fwd): the heads are [T, G / T] (time first) and out
  // holds the spikes of a multi-step LIF over T run on the attention values (each rounded
  // to the dtype first, as the unfused ssa -> lif pipeline would see them): charge
  // H = V + (X - (V - v_reset)) / tau, fire S = (H - v_threshold >= 0), hard reset
  // V = (1 - S) H + S v_reset, starting from V_0 = v_reset (spikeops.ref.neurons.lif).
  bool lif = false;
  int64_t T = 1;
  float tau = 2.f;
  float v_threshold = 0.5f;
  float v_reset = 0.f;
  const void* q = nullptr;        // [G, N, D]
  const void* k = nullptr;        // [G, N, D]
  const void* v = nullptr;        // [G, N, Dv]
  void* out = nullptr;            // [G, N, Dv]
};

// What a kernel found while packing: kSsaOk, or which input holds a value not 0/1.
enum SSAStatus : int { kSsaOk = 0, kSsaBadQ = 1, kSsaBadK = 2, kSsaBadV = 3 };

}  // namespace spikeops
