// Sparse convolution kernels for float (forward and weight gradient).
#include "cuda/sparse_conv/sparse_conv_kernels.cuh"
#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
cudaError_t conv_fwd_f32(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_fwd<float>(p, stream);
}
cudaError_t conv_wgrad_f32(const SparseConvCudaParams& p, cudaStream_t stream) {
  return launch_wgrad<float>(p, stream);
}
}  // namespace cuda_sparse
}  // namespace spikeops
