// CUDA backend of the neuron ops. The shared implementation (csrc/ops/neurons.cpp) checks
// the arguments, allocates the outputs and fills NeuronParams under a DeviceGuard on x's
// device; this file only supplies the current stream and turns a failed launch into an
// error (the kernels are torch-free, csrc/cuda/neurons).
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/neurons/neuron_launch.h"
#include "ops/neurons.h"

namespace spikeops {
namespace {

void cuda_forward(const NeuronParams& p) {
  C10_CUDA_CHECK(neuron_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_backward(const NeuronParams& p) {
  C10_CUDA_CHECK(neuron_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

static const NeuronBackend kCudaNeuronBackend{cuda_forward, cuda_backward};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  SPIKEOPS_REGISTER_NEURON_OPS(m, ::spikeops::kCudaNeuronBackend);
}
