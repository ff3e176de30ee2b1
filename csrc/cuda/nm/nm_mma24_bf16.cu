// 2:4 sparse-tensor-core forward for __nv_bfloat16 (both tile configurations).
#include "cuda/nm/nm_launch.h"
#include "cuda/nm/nm_mma24.cuh"

namespace spikeops {
namespace cuda_nm {
cudaError_t linear_mma24_bf16(const NMGemmParams& p, bool large, cudaStream_t stream) {
  return launch_mma24<__nv_bfloat16>(p, large, stream);
}
}  // namespace cuda_nm
}  // namespace spikeops
