// Linear-attention scan kernels for __half (forward and backward).
#include "cuda/scan/scan_kernels.cuh"
#include "cuda/scan/scan_launch.h"

namespace spikeops {
namespace cuda_scan {
cudaError_t scan_forward_f16(const ScanParams& p, cudaStream_t stream) {
  return launch_forward<__half>(p, stream);
}
cudaError_t scan_backward_f16(const ScanParams& p, cudaStream_t stream) {
  return launch_backward<__half>(p, stream);
}
}  // namespace cuda_scan
}  // namespace spikeops
