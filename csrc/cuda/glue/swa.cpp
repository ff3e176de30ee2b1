// CUDA backend of the sliding-window attention ops. The shared implementation
// (csrc/ops/swa.cpp) checks the arguments, allocates the outputs and fills SWAParams under
// a DeviceGuard on q's device (and the head dims against max_head_dim); this file supplies
// the current stream and turns a failed launch into an error (csrc/cuda/swa).
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/swa/swa_launch.h"
#include "ops/swa.h"

namespace spikeops {
namespace {

void cuda_forward(const SWAParams& p) {
  C10_CUDA_CHECK(swa_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_backward(const SWAParams& p) {
  C10_CUDA_CHECK(swa_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

// D and Dv are checked by csrc/ops/swa.cpp against max_head_dim before any allocation.
static const SWABackend kCudaSWABackend{cuda_forward, cuda_backward, nullptr,
                                        cuda_swa::kMaxHeadDim};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  SPIKEOPS_REGISTER_SWA_OPS(m, ::spikeops::kCudaSWABackend);
}
