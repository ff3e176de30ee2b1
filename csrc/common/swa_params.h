// Plain-C++ description of one sliding-window causal softmax attention call (SpikingBrain's
// SWA layers), shared by the CPU kernels (csrc/cpu/kernels/swa_kernel.cpp) and the CUDA
// kernels (csrc/cuda/swa/).
//
//   s[t, j] = scale * q[t] . k[j]            for keys j with t - window < j <= t
//   o[t]    = sum_j softmax_j(s[t, :]) v[j],  lse[t] = log sum_j exp(s[t, j])
//
// per (batch b, head h). q, k [B, T, H, D], v / o / grad_o [B, T, H, Dv] (contiguous, one
// float dtype); lse, grad_lse, delta [B, H, T] fp32. Host glue validates the arguments and
// fills this struct; kernels only read it (and write the outputs it names).
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

struct SWAParams {
  DType dtype = DType::kFloat32;  // of q, k, v, o, grad_o, dq, dk, dv
  int64_t B = 0, T = 0, H = 0;
  int64_t D = 0;   // q / k features
  int64_t Dv = 0;  // v / o features
  int64_t window = 1;  // keys per query, the query's own position included (>= 1)
  float scale = 1.f;
  const void* q = nullptr;  // [B, T, H, D]
  const void* k = nullptr;  // [B, T, H, D]
  const void* v = nullptr;  // [B, T, H, Dv]
  // Forward writes o and lse; backward reads them.
  void* o = nullptr;        // [B, T, H, Dv]
  float* lse = nullptr;     // [B, H, T]
  // Backward only.
  const void* grad_o = nullptr;      // [B, T, H, Dv]
  const float* grad_lse = nullptr;   // [B, H, T] or null (no gradient reaches lse)
  float* delta = nullptr;            // [B, H, T] scratch: rowsum(grad_o * o) - grad_lse
  void* dq = nullptr;                // [B, T, H, D]
  void* dk = nullptr;                // [B, T, H, D]
  void* dv = nullptr;                // [B, T, H, Dv]
};

}  // namespace spikeops
