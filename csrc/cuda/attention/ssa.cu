// Launchers of the spiking self-attention kernel (csrc/cuda/attention/ssa_kernels.cuh).
#include "cuda/attention/ssa_kernels.cuh"
#include "cuda/attention/ssa_launch.h"

namespace spikeops {
namespace cuda_ssa {
namespace {

size_t smem_budget() {
  int dev = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
          cudaSuccess) {
    cudaGetLastError();
    return 48 * 1024;
  }
  return size_t(optin);
}

template <typename T>
cudaError_t launch(const SSAParams& p, float* scratch, cudaStream_t stream) {
  const size_t budget = smem_budget();
  const Layout L(p.D, p.N, p.lif, budget);
  if (L.total > budget) return cudaErrorInvalidConfiguration;
  cudaError_t err = cudaFuncSetAttribute(ssa_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(L.total));
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(p.G / p.T), unsigned((p.Dv + kCols - 1) / kCols));
  ssa_kernel<T><<<grid, kThreads, L.total, stream>>>(p, scratch, budget);
  return cudaGetLastError();
}

}  // namespace

size_t ssa_scratch_bytes(const SSAParams& p) {
  if (!p.lif) return 0;
  const Layout L(p.D, p.N, true, smem_budget());
  return L.membrane_in_smem ? 0 : size_t(p.G / p.T) * size_t(p.N) * size_t(p.Dv) * 4;
}

cudaError_t ssa_forward(const SSAParams& p, float* scratch, cudaStream_t stream) {
  if (p.D > kMaxKernelD || p.T < 1 || p.G % p.T != 0 || p.Dv <= 0 || p.N <= 0 || p.G <= 0)
    return cudaErrorInvalidValue;
  if (p.G / p.T > 0x7fffffff || (p.Dv + kCols - 1) / kCols > 65535) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return launch<float>(p, scratch, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(p, scratch, stream);
    case DType::kFloat16: return launch<__half>(p, scratch, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda_ssa
}  // namespace spikeops
