// Linear-attention scan kernels for __nv_bfloat16 (forward and backward).
#include "cuda/scan/scan_kernels.cuh"
#include "cuda/scan/scan_launch.h"

namespace spikeops {
namespace cuda_scan {
cudaError_t scan_forward_bf16(const ScanParams& p, cudaStream_t stream) {
  return launch_forward<__nv_bfloat16>(p, stream);
}
cudaError_t scan_backward_bf16(const ScanParams& p, cudaStream_t stream) {
  return launch_backward<__nv_bfloat16>(p, stream);
}
}  // namespace cuda_scan
}  // namespace spikeops
