// GEMV-shaped N:M forward (batch <= 16) for float: every batch width x fast n:m + generic.
#include "cuda/nm/nm_gemv.cuh"
#include "cuda/nm/nm_launch.h"

namespace spikeops {
namespace cuda_nm {
cudaError_t linear_gemv_f32(const NMGemmParams& p, bool fast, cudaStream_t stream) {
  return launch_gemv<float>(p, fast, stream);
}
}  // namespace cuda_nm
}  // namespace spikeops
