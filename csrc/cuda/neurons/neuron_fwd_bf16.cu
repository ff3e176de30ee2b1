// Forward kernels for __nv_bfloat16 (every fire mode x Div/Mul charge x vector width).
#include "cuda/neurons/neuron_kernels.cuh"
#include "cuda/neurons/neuron_launch.h"

namespace spikeops {
namespace cuda_neuron {
cudaError_t neuron_forward_bf16(const NeuronParams& p, cudaStream_t stream) {
  return launch_fwd<__nv_bfloat16>(p, stream);
}
}  // namespace cuda_neuron
}  // namespace spikeops
