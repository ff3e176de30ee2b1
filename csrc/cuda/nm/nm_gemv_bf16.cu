// GEMV-shaped N:M forward (batch <= 16) for __nv_bfloat16: every batch width x fast n:m + generic.
#include "cuda/nm/nm_gemv.cuh"
#include "cuda/nm/nm_launch.h"

namespace spikeops {
namespace cuda_nm {
cudaError_t linear_gemv_bf16(const NMGemmParams& p, bool fast, cudaStream_t stream) {
  return launch_gemv<__nv_bfloat16>(p, fast, stream);
}
}  // namespace cuda_nm
}  // namespace spikeops
