// Sliding-window attention kernels for __half (forward and both backward kernels).
#include "cuda/swa/swa_kernels.cuh"
#include "cuda/swa/swa_launch.h"

namespace spikeops {
namespace cuda_swa {
cudaError_t swa_forward_f16(const SWAParams& p, cudaStream_t stream) {
  return launch_forward<__half>(p, stream);
}
cudaError_t swa_backward_f16(const SWAParams& p, cudaStream_t stream) {
  return launch_backward<__half>(p, stream);
}
}  // namespace cuda_swa
}  // namespace spikeops
