// CUDA backend of the N:M sparse ops. The shared implementation (csrc/ops/nm.cpp) checks
// the arguments, allocates the outputs (at::empty) and fills the Params under a
// DeviceGuard on the inputs' device, with contiguous tensors; this file only supplies the
// current stream and turns a failed launch into an error (the kernels are torch-free,
// csrc/cuda/nm). No path needs a workspace.
//
// validate_meta is null: checking meta would sync the device on every call. The kernels
// stay in bounds for any meta (csrc/cuda/nm/nm_common.cuh), and spikeops.nm.NMTensor
// checks meta once when it is built.
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/nm/nm_launch.h"
#include "ops/nm.h"

namespace spikeops {
namespace {

void cuda_compress(const NMCompressParams& p) {
  C10_CUDA_CHECK(nm_compress_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_linear(const NMGemmParams& p) {
  // The SIMT-fallback warning is raised in Python (spikeops.ops.nm.nm_linear).
  C10_CUDA_CHECK(nm_linear_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_grad_input(const NMGemmParams& p) {
  C10_CUDA_CHECK(nm_grad_input_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

static const NMBackend kCudaNMBackend{cuda_compress, cuda_linear, cuda_grad_input,
                                      /*empty=*/nullptr, /*validate_meta=*/nullptr};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) { SPIKEOPS_REGISTER_NM_OPS(m, ::spikeops::kCudaNMBackend); }
