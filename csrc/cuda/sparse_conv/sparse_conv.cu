// Sparse convolution entry points: dtype dispatch to the per-dtype translation units
// (sparse_conv_{f32,bf16,f16}.cu) and the ordered reduction of the weight gradient's
// per-range partial sums (see sparse_conv_kernels.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
namespace {

constexpr int kThreads = 256;

// dw[e] = ws[0][e] + ws[1][e] + ... (ranges in order).
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const float* ws, int64_t splits, int64_t total, float* dw) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
    float v = ws[e];
    for (int64_t s = 1; s < splits; ++s) v = v + ws[s * total + e];
    dw[e] = v;
  }
}

}  // namespace

cudaError_t reduce_splits(const SparseConvCudaParams& p, cudaStream_t stream) {
  const int64_t total = p.K * p.Cin * p.Cout;
  if (p.splits <= 1 || total == 0) return cudaSuccess;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;
  reduce_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(p.ws, p.splits, total, p.dw);
  return cudaGetLastError();
}

}  // namespace cuda_sparse

cudaError_t sparse_conv_fwd_cuda(const SparseConvCudaParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32: return cuda_sparse::conv_fwd_f32(p, stream);
    case DType::kBFloat16: return cuda_sparse::conv_fwd_bf16(p, stream);
    case DType::kFloat16: return cuda_sparse::conv_fwd_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t sparse_conv_wgrad_cuda(const SparseConvCudaParams& p, cudaStream_t stream) {
  cudaError_t err = cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: err = cuda_sparse::conv_wgrad_f32(p, stream); break;
    case DType::kBFloat16: err = cuda_sparse::conv_wgrad_bf16(p, stream); break;
    case DType::kFloat16: err = cuda_sparse::conv_wgrad_f16(p, stream); break;
  }
  return err != cudaSuccess ? err : cuda_sparse::reduce_splits(p, stream);
}

}  // namespace spikeops
