// CUDA backend of the linear-attention scans (linear_scan_fwd / linear_scan_bwd). The
// shared implementation (csrc/ops/scan.cpp) checks the arguments, allocates the outputs,
// and, because device_chunk > 0, copies the sequence table (row0 / len and the chunk
// layout) to the device and allocates the kernels' workspace (workspace_floats); all
// under a DeviceGuard on q's device. This file only supplies the current stream and turns
// a failed launch into an error (the kernels are torch-free, csrc/cuda/scan).
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/scan/scan_launch.h"
#include "ops/scan.h"

namespace spikeops {
namespace {

void cuda_forward(const ScanParams& p) {
  C10_CUDA_CHECK(scan_forward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

void cuda_backward(const ScanParams& p) {
  C10_CUDA_CHECK(scan_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

// Any K and V (the kernels tile both); chunks of cuda_scan::kChunk whatever chunk_size.
static const ScanBackend kCudaScanBackend{cuda_forward, cuda_backward, nullptr,
                                          cuda_scan::kChunk, cuda_scan::scan_workspace_floats};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  SPIKEOPS_REGISTER_SCAN_OPS(m, ::spikeops::kCudaScanBackend);
}
