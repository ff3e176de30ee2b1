// Backward dispatch on dtype; the kernels are instantiated in neuron_bwd_{f32,bf16,f16}.cu.
#include "cuda/neurons/neuron_launch.h"

cudaError_t neuron_backward_cuda(const spikeops::NeuronParams& p, cudaStream_t stream) {
  using namespace spikeops;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_neuron::neuron_backward_f32(p, stream);
    case DType::kBFloat16: return cuda_neuron::neuron_backward_bf16(p, stream);
    case DType::kFloat16: return cuda_neuron::neuron_backward_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}
