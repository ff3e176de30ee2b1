// Tiled N:M forward (any n:m, large batch) and grad_input for __half.
#include "cuda/nm/nm_launch.h"
#include "cuda/nm/nm_simt.cuh"

namespace spikeops {
namespace cuda_nm {
cudaError_t linear_simt_f16(const NMGemmParams& p, cudaStream_t stream) {
  return launch_linear_simt<__half>(p, stream);
}
cudaError_t grad_input_f16(const NMGemmParams& p, cudaStream_t stream) {
  return launch_grad_input_simt<__half>(p, stream);
}
}  // namespace cuda_nm
}  // namespace spikeops
