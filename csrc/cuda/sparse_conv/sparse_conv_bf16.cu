// Sparse convolution kernels for __nv_bfloat16 (forward and weight gradient).
#include "cuda/sparse_conv/sparse_conv_kernels.cuh"
#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
cudaError_t conv_fwd_bf16(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_fwd<__nv_bfloat16>(p, stream);
}
cudaError_t conv_wgrad_bf16(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_wgrad<__nv_bfloat16>(p, stream);
}
}  // namespace cuda_sparse
}  // namespace spikeops
