// Sliding-window attention kernels for __nv_bfloat16 (forward and both backward kernels).
#include "cuda/swa/swa_kernels.cuh"
#include "cuda/swa/swa_launch.h"

namespace spikeops {
namespace cuda_swa {
cudaError_t swa_forward_bf16(const SWAParams& p, cudaStream_t stream) {
  return launch_forward<__nv_bfloat16>(p, stream);
}
cudaError_t swa_backward_bf16(const SWAParams& p, cudaStream_t stream) {
  return launch_backward<__nv_bfloat16>(p, stream);
}
}  // namespace cuda_swa
}  // namespace spikeops
