// Host entry points of the sliding-window attention CUDA kernels (torch-free). The glue
// fills a SWAParams whose pointers live on the current device and passes the current
// stream. Each returns the launch status (cudaGetLastError()); nothing is synchronised.
#pragma once
#include <cuda_runtime_api.h>

#include "common/swa_params.h"

// Forward: o, lse from q, k, v.
cudaError_t swa_forward_cuda(const spikeops::SWAParams& p, cudaStream_t stream);
// Backward: delta, dq (query-tile kernel), then dk, dv (key-tile kernel), on one stream.
cudaError_t swa_backward_cuda(const spikeops::SWAParams& p, cudaStream_t stream);

namespace spikeops {
namespace cuda_swa {
// The kernels keep a lane's share of an output row in registers: D, Dv <= kMaxHeadDim.
constexpr int64_t kMaxHeadDim = 256;
// One per dtype, each in its own translation unit so they compile in parallel.
cudaError_t swa_forward_f32(const SWAParams& p, cudaStream_t stream);
cudaError_t swa_forward_bf16(const SWAParams& p, cudaStream_t stream);
cudaError_t swa_forward_f16(const SWAParams& p, cudaStream_t stream);
cudaError_t swa_backward_f32(const SWAParams& p, cudaStream_t stream);
cudaError_t swa_backward_bf16(const SWAParams& p, cudaStream_t stream);
cudaError_t swa_backward_f16(const SWAParams& p, cudaStream_t stream);
}  // namespace cuda_swa
}  // namespace spikeops
