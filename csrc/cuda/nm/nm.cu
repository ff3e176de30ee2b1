// Dispatch of the N:M CUDA ops on dtype and path; the kernels are instantiated in
// nm_{compress,gemv_*,simt_*,mma24_*}.cu.
//
// nm_linear path, first match:
//   1. batch <= 16: GEMV (nm_gemv.cuh). Reads W once; the fast decoder when
//      (n, m) is 2:4, 1:4, 2:8 or 4:8, k % 32 == 0 and values / meta rows are 16 / 4-byte
//      aligned, else the generic one.
//   2. 2:4, f16 / bf16, k % 64 == 0, values and x 16-byte aligned, meta 8-byte aligned,
//      device sm_80+: sparse tensor cores (nm_mma24.cuh), 128 x 128 tiles when they
//      alone give at least one block per SM, else 64 x 64.
//   3. otherwise: the tiled SIMT kernel (nm_simt.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/nm/nm_launch.h"

namespace spikeops {
namespace cuda_nm {
namespace {

bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

int64_t elem_size(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }

bool params_ok(const NMGemmParams& p) {
  return p.m >= 2 && p.m <= 32 && p.n >= 1 && p.n < p.m && p.k >= 0 && p.k % p.m == 0 &&
         p.kept == p.k / p.m * p.n && p.meta_stride == (p.k + 7) / 8 && p.rows >= 0 &&
         p.batch >= 0;
}

bool gemv_fast_ok(const NMGemmParams& p) {
  const bool nm = (p.n == 2 && p.m == 4) || (p.n == 1 && p.m == 4) || (p.n == 2 && p.m == 8) ||
                  (p.n == 4 && p.m == 8);
  return nm && p.k % 32 == 0 && aligned(p.values, 16) &&
         (p.kept * elem_size(p.dtype)) % 16 == 0 && aligned(p.meta, 4) && p.meta_stride % 4 == 0;
}

// Returns the device's SM count when the sparse-tensor-core path applies, else 0.
int mma24_sms(const NMGemmParams& p) {
  if (p.n != 2 || p.m != 4 || p.dtype == DType::kFloat32) return 0;
  if (p.k < 64 || p.k % 64 != 0) return 0;
  if (!aligned(p.values, 16) || !aligned(p.in, 16) || !aligned(p.meta, 8)) return 0;
  int dev = 0, major = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();  // clear: fall back to the SIMT path
    return 0;
  }
  return major >= 8 ? (sms > 0 ? sms : 1) : 0;
}

}  // namespace
}  // namespace cuda_nm
}  // namespace spikeops

cudaError_t nm_compress_cuda(const spikeops::NMCompressParams& p, cudaStream_t stream) {
  using namespace spikeops;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_nm::compress_f32(p, stream);
    case DType::kBFloat16: return cuda_nm::compress_bf16(p, stream);
    case DType::kFloat16: return cuda_nm::compress_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}

NMLinearPath nm_linear_cuda_path(const spikeops::NMGemmParams& p) {
  using namespace spikeops::cuda_nm;
  if (p.batch <= kGemvMaxBatch) return NMLinearPath::kGemv;
  if (mma24_sms(p) > 0) return NMLinearPath::kSparseTensorCores;
  return NMLinearPath::kSimt;
}

cudaError_t nm_linear_cuda(const spikeops::NMGemmParams& p, cudaStream_t stream) {
  using namespace spikeops;
  using namespace spikeops::cuda_nm;
  if (!params_ok(p)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.rows == 0) return cudaSuccess;
  switch (nm_linear_cuda_path(p)) {
    case NMLinearPath::kGemv: {
      const bool fast = gemv_fast_ok(p);
      switch (p.dtype) {
        case DType::kFloat32: return linear_gemv_f32(p, fast, stream);
        case DType::kBFloat16: return linear_gemv_bf16(p, fast, stream);
        case DType::kFloat16: return linear_gemv_f16(p, fast, stream);
      }
      return cudaErrorInvalidValue;
    }
    case NMLinearPath::kSparseTensorCores: {
      const int sms = mma24_sms(p);
      const int64_t tiles = ((p.rows + 127) / 128) * ((p.batch + 127) / 128);
      const bool large = tiles >= sms;
      if (p.dtype == DType::kBFloat16) return linear_mma24_bf16(p, large, stream);
      return linear_mma24_f16(p, large, stream);
    }
    case NMLinearPath::kSimt:
      break;
  }
  switch (p.dtype) {
    case DType::kFloat32: return linear_simt_f32(p, stream);
    case DType::kBFloat16: return linear_simt_bf16(p, stream);
    case DType::kFloat16: return linear_simt_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t nm_grad_input_cuda(const spikeops::NMGemmParams& p, cudaStream_t stream) {
  using namespace spikeops;
  using namespace spikeops::cuda_nm;
  if (!params_ok(p)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.k == 0) return cudaSuccess;  // rows == 0 still writes zeros
  switch (p.dtype) {
    case DType::kFloat32: return grad_input_f32(p, stream);
    case DType::kBFloat16: return grad_input_bf16(p, stream);
    case DType::kFloat16: return grad_input_f16(p, stream);
  }
  return cudaErrorInvalidValue;
}
