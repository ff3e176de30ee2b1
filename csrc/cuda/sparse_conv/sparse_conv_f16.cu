// Sparse convolution kernels for __half (forward and weight gradient).
#include "cuda/sparse_conv/sparse_conv_kernels.cuh"
#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
cudaError_t conv_fwd_f16(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_fwd<__half>(p, stream);
}
cudaError_t conv_wgrad_f16(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_wgrad<__half>(p, stream);
}
}  // namespace cuda_sparse
}  // namespace spikeops
