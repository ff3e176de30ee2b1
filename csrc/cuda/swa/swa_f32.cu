// Sliding-window attention kernels for float (forward and both backward kernels).
#include "cuda/swa/swa_kernels.cuh"
#include "cuda/swa/swa_launch.h"

namespace spikeops {
namespace cuda_swa {
cudaError_t swa_forward_f32(const SWAParams& p, cudaStream_t stream) {
  return launch_forward<float>(p, stream);
}
cudaError_t swa_backward_f32(const SWAParams& p, cudaStream_t stream) {
  return launch_backward<float>(p, stream);
}
}  // namespace cuda_swa
}  // namespace spikeops
