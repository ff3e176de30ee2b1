// Backward kernels for float (every fire mode x Div/Mul charge x vector width).
#include "cuda/neurons/neuron_kernels.cuh"
#include "cuda/neurons/neuron_launch.h"

namespace spikeops {
namespace cuda_neuron {
cudaError_t neuron_backward_f32(const NeuronParams& p, cudaStream_t stream) {
  return launch_bwd<float>(p, stream);
}
}  // namespace cuda_neuron
}  // namespace spikeops
