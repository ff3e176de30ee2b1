// Host entry points of the fused-neuron CUDA kernels (torch-free). The glue fills a
// NeuronParams whose pointers live on the current device and passes the current stream.
// Each returns the launch status (cudaGetLastError()); nothing is synchronised.
#pragma once
#include <cuda_runtime_api.h>

#include "common/neuron_params.h"

// Forward: spikes, v_last (+ a_last, v_seq) from x, v0 (, a0).
cudaError_t neuron_forward_cuda(const spikeops::NeuronParams& p, cudaStream_t stream);
// Backward: grad_x, grad_v0 (+ grad_a0, grad_decay); recomputes the forward from x, v0, a0.
cudaError_t neuron_backward_cuda(const spikeops::NeuronParams& p, cudaStream_t stream);

namespace spikeops {
namespace cuda_neuron {
// One per dtype, each in its own translation unit so they compile in parallel.
cudaError_t neuron_forward_f32(const NeuronParams& p, cudaStream_t stream);
cudaError_t neuron_forward_bf16(const NeuronParams& p, cudaStream_t stream);
cudaError_t neuron_forward_f16(const NeuronParams& p, cudaStream_t stream);
cudaError_t neuron_backward_f32(const NeuronParams& p, cudaStream_t stream);
cudaError_t neuron_backward_bf16(const NeuronParams& p, cudaStream_t stream);
cudaError_t neuron_backward_f16(const NeuronParams& p, cudaStream_t stream);
}  // namespace cuda_neuron
}  // namespace spikeops
