// Dtype dispatch of the sliding-window attention kernels; the kernels are instantiated in
// swa_{f32,bf16,f16}.cu.
#include "cuda/swa/swa_launch.h"

cudaError_t swa_forward_cuda(const spikeops::SWAParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.D > cuda_swa::kMaxHeadDim || p.Dv > cuda_swa::kMaxHeadDim) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_swa::swa_forward_f32(p, stream);
    case DType::kBFloat16: return cuda_swa::swa_forward_bf16(p, stream);
    case DType::kFloat16: return cuda_swa::swa_forward_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t swa_backward_cuda(const spikeops::SWAParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.D > cuda_swa::kMaxHeadDim || p.Dv > cuda_swa::kMaxHeadDim) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_swa::swa_backward_f32(p, stream);
    case DType::kBFloat16: return cuda_swa::swa_backward_bf16(p, stream);
    case DType::kFloat16: return cuda_swa::swa_backward_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}
