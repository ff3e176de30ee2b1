// Host entry point of the spiking self-attention CUDA kernel (torch-free). The glue fills
// SSAParams with pointers on the current device and passes the current stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "common/attention_params.h"

namespace spikeops {
namespace cuda_ssa {
// Largest D the kernel takes (the glue computes larger heads with ATen matmuls).
constexpr long kMaxKernelD = 128;
// Bytes of fp32 scratch the fused LIF needs when its membrane does not fit in shared
// memory (0 if it does, or without LIF); the caller allocates it and passes it below.
size_t ssa_scratch_bytes(const SSAParams& p);
// Launches the kernel; returns the launch status (nothing is synchronised).
cudaError_t ssa_forward(const SSAParams& p, float* scratch, cudaStream_t stream);
}  // namespace cuda_ssa
}  // namespace spikeops
