// Tiled N:M forward (any n:m, large batch) and grad_input for __nv_bfloat16.
#include "cuda/nm/nm_launch.h"
#include "cuda/nm/nm_simt.cuh"

namespace spikeops {
namespace cuda_nm {
cudaError_t linear_simt_bf16(const NMGemmParams& p, cudaStream_t stream) {
  return launch_linear_simt<__nv_bfloat16>(p, stream);
}
cudaError_t grad_input_bf16(const NMGemmParams& p, cudaStream_t stream) {
  return launch_grad_input_simt<__nv_bfloat16>(p, stream);
}
}  // namespace cuda_nm
}  // namespace spikeops
