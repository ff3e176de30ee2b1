// Host entry points of the linear-attention scan CUDA kernels (torch-free). The shared
// implementation (csrc/ops/scan.cpp, with ScanBackend::device_chunk = kChunk) fills
// ScanParams with device pointers, the device sequence table dev_seq and the workspace
// ws; the glue (csrc/cuda/glue/scan.cpp) passes the current stream. Each returns the
// launch status (cudaGetLastError()); nothing is synchronised.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/scan_params.h"

// o (and ht when set).
cudaError_t scan_forward_cuda(const spikeops::ScanParams& p, cudaStream_t stream);
// dq, dk, dv (fp32, per query head), dg, dh0.
cudaError_t scan_backward_cuda(const spikeops::ScanParams& p, cudaStream_t stream);

namespace spikeops {
namespace cuda_scan {

// Chunk length of the device kernels, whatever chunk_size the caller asked for (the
// result is the same up to rounding; chunk_size 0, the step-by-step form, runs chunked too).
constexpr int64_t kChunk = 64;

// Workspace floats (ScanParams::ws): the state at the start of every chunk
// [state_slots, Hq, K, V]; backward adds the gradients of the chunk-end states (same
// layout) and, for g_gamma, per-row decay gradients [rows, Hq] summed per sequence.
inline int64_t scan_workspace_floats(const ScanParams& p, bool backward) {
  const int64_t states = p.state_slots * p.Hq * p.K * p.V;
  if (!backward) return states;
  return 2 * states + (p.decay == kDecayHead && p.gamma ? p.rows * p.Hq : 0);
}

// One per dtype, each in its own translation unit so they compile in parallel.
cudaError_t scan_forward_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_forward_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_forward_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_backward_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_backward_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_backward_f16(const ScanParams& p, cudaStream_t stream);

}  // namespace cuda_scan
}  // namespace spikeops
