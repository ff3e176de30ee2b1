// Linear-attention scan kernels for float (forward and backward).
#include "cuda/scan/scan_kernels.cuh"
#include "cuda/scan/scan_launch.h"

namespace spikeops {
namespace cuda_scan {
cudaError_t scan_forward_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_forward<float>(p, stream);
}
cudaError_t scan_backward_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_backward<float>(p, stream);
}
}  // namespace cuda_scan
}  // namespace spikeops
