// Launchers of the spiking self-attention kernel (csrc/cuda/attention/ssa_kernels.cuh).
#include <cstdint>

#include "cuda/attention/ssa_fast.cuh"
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

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

template <typename T, int DP>
cudaError_t launch_fast(const SSAParams& p, size_t bytes, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(ssa_fast_kernel<T, DP>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(p.G / p.T), unsigned((p.Dv + kCols - 1) / kCols),
                  p.lif ? unsigned((p.N + kRowGroup - 1) / kRowGroup) : 1u);
  ssa_fast_kernel<T, DP><<<grid, kFastThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

// The fast kernel when its conditions hold (see ssa_fast.cuh); returns false otherwise.
template <typename T>
bool try_fast(const SSAParams& p, size_t budget, cudaStream_t stream, cudaError_t* err) {
  constexpr int kVec = 16 / int(sizeof(T));
  if (p.D % kVec != 0 || p.Dv % kVec != 0 || p.D > kMaxD) return false;
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out)) return false;
  if ((p.N + kRowGroup - 1) / kRowGroup > 65535) return false;
  const int dp = p.D <= 32 ? 32 : p.D <= 64 ? 64 : 128;
  const size_t bytes = dp == 32 ? FastLayout<32>(p.N).total
                       : dp == 64 ? FastLayout<64>(p.N).total : FastLayout<128>(p.N).total;
  if (bytes > budget) return false;
  *err = dp == 32 ? launch_fast<T, 32>(p, bytes, stream)
         : dp == 64 ? launch_fast<T, 64>(p, bytes, stream) : launch_fast<T, 128>(p, bytes, stream);
  return true;
}

template <typename T>
cudaError_t launch(const SSAParams& p, float* scratch, cudaStream_t stream) {
  const size_t budget = smem_budget();
  cudaError_t err = cudaSuccess;
  if (try_fast<T>(p, budget, stream, &err)) return err;
  const Layout L(p.D, p.N, p.lif, budget);
  if (L.total > budget) return cudaErrorInvalidConfiguration;
  err = cudaFuncSetAttribute(ssa_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
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
