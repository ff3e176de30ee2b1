// CUDA backend of the recurrent attention ops (rwkv4_wkv, sdsa). The shared implementation
// (csrc/ops/recurrent.cpp) checks the arguments, allocates the outputs and the kernels'
// workspaces (device_workspace = true) and fills the Params under a DeviceGuard on the
// inputs' device; this file only supplies the current stream and turns a failed launch
// into an error (the kernels are torch-free, csrc/cuda/recurrent).
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/recurrent/recurrent_launch.h"
#include "ops/recurrent.h"

namespace spikeops {
namespace {

void cuda_rwkv_forward(const RWKVParams& p) {
  C10_CUDA_CHECK(rwkv_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_rwkv_backward(const RWKVParams& p) {
  C10_CUDA_CHECK(rwkv_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_sdsa_forward(const SDSAParams& p) {
  C10_CUDA_CHECK(sdsa_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_sdsa_backward(const SDSAParams& p) {
  C10_CUDA_CHECK(sdsa_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

static const RecurrentBackend kCudaRecurrentBackend{cuda_rwkv_forward, cuda_rwkv_backward,
                                                    cuda_sdsa_forward, cuda_sdsa_backward,
                                                    nullptr, true};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  SPIKEOPS_REGISTER_RECURRENT_OPS(m, ::spikeops::kCudaRecurrentBackend);
}
