// CUDA backend of the sliding-window attention ops. The shared implementation
// (csrc/ops/swa.cpp) checks the arguments, allocates the outputs and fills SWAParams under
// a DeviceGuard on q's device; this file checks the CUDA kernels' head-dim limit, supplies
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

void check_dims(const SWAParams& p) {
  TORCH_CHECK_VALUE(p.D <= cuda_swa::kMaxHeadDim, "q / k: head dim D = ", p.D,
                    "; the CUDA kernels take D <= ", cuda_swa::kMaxHeadDim,
                    " (the CPU kernels take any D)");
  TORCH_CHECK_VALUE(p.Dv <= cuda_swa::kMaxHeadDim, "v: head dim Dv = ", p.Dv,
                    "; the CUDA kernels take Dv <= ", cuda_swa::kMaxHeadDim,
                    " (the CPU kernels take any Dv)");
}

void cuda_forward(const SWAParams& p) {
  check_dims(p);
  C10_CUDA_CHECK(swa_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_backward(const SWAParams& p) {
  check_dims(p);
  C10_CUDA_CHECK(swa_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

static const SWABackend kCudaSWABackend{cuda_forward, cuda_backward};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  SPIKEOPS_REGISTER_SWA_OPS(m, ::spikeops::kCudaSWABackend);
}
