// Dtype dispatch of the linear-attention scan kernels; the kernels are instantiated in
// scan_{f32,bf16,f16}.cu.
#include "cuda/scan/scan_launch.h"

cudaError_t scan_forward_cuda(const spikeops::ScanParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.dev_chunk != cuda_scan::kChunk || p.dev_seq == nullptr) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_scan::scan_forward_f32(p, stream);
    case DType::kBFloat16: return cuda_scan::scan_forward_bf16(p, stream);
    case DType::kFloat16: return cuda_scan::scan_forward_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scan_backward_cuda(const spikeops::ScanParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.dev_chunk != cuda_scan::kChunk || p.dev_seq == nullptr) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_scan::scan_backward_f32(p, stream);
    case DType::kBFloat16: return cuda_scan::scan_backward_bf16(p, stream);
    case DType::kFloat16: return cuda_scan::scan_backward_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}
