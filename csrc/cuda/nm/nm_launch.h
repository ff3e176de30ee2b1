// Host entry points of the N:M structured-sparse CUDA kernels (torch-free). The glue
// (csrc/cuda/glue/nm.cpp) fills the Params with contiguous tensors on the current device
// (csrc/ops/nm.cpp has checked shapes and dtypes) and passes the current stream. Each
// returns the launch status (cudaGetLastError()); nothing is synchronised, nothing is
// allocated: no path needs a workspace.
//
// nm_linear_cuda picks one of three paths (csrc/cuda/nm/nm.cu has the rules):
//   batch <= 16                      nm_gemv.cuh:  warps stream rows of W once (GEMV-shaped)
//   2:4, f16/bf16, k % 64 == 0,      nm_mma24.cuh: sparse tensor cores (mma.sp m16n8k32),
//     16-byte aligned values / x,      cp.async multi-stage pipeline
//     8-byte aligned meta, sm_80+
//   otherwise                        nm_simt.cuh:  64x64 tiles, W decoded to fp32 in smem
// nm_grad_input_cuda always runs the deterministic tiled kernel of nm_simt.cuh.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/nm_params.h"

// values (+ meta when p.select) from a dense weight.
cudaError_t nm_compress_cuda(const spikeops::NMCompressParams& p, cudaStream_t stream);
// out [batch, rows] = in [batch, k] @ W^T + bias.
cudaError_t nm_linear_cuda(const spikeops::NMGemmParams& p, cudaStream_t stream);
// The kernel nm_linear_cuda picks for p on the current device (see nm.cu).
enum class NMLinearPath : int { kGemv = 0, kSparseTensorCores = 1, kSimt = 2 };
NMLinearPath nm_linear_cuda_path(const spikeops::NMGemmParams& p);
// out [batch, k] = in [batch, rows] @ W (every element written; no atomics).
cudaError_t nm_grad_input_cuda(const spikeops::NMGemmParams& p, cudaStream_t stream);

namespace spikeops {
namespace cuda_nm {
// Largest batch (rows of x) the GEMV-shaped forward takes.
constexpr int64_t kGemvMaxBatch = 16;

// One per dtype (and path), each in its own translation unit so they compile in parallel.
// The dispatcher (nm.cu) has checked the preconditions of each path before calling it.
cudaError_t compress_f32(const NMCompressParams& p, cudaStream_t stream);
cudaError_t compress_bf16(const NMCompressParams& p, cudaStream_t stream);
cudaError_t compress_f16(const NMCompressParams& p, cudaStream_t stream);

// batch <= 16. `fast`: (n, m) in {2:4, 1:4, 2:8, 4:8}, k % 32 == 0, values 16-byte and
// meta 4-byte aligned (rows of both too); otherwise the generic decoder runs.
cudaError_t linear_gemv_f32(const NMGemmParams& p, bool fast, cudaStream_t stream);
cudaError_t linear_gemv_bf16(const NMGemmParams& p, bool fast, cudaStream_t stream);
cudaError_t linear_gemv_f16(const NMGemmParams& p, bool fast, cudaStream_t stream);

cudaError_t linear_simt_f32(const NMGemmParams& p, cudaStream_t stream);
cudaError_t linear_simt_bf16(const NMGemmParams& p, cudaStream_t stream);
cudaError_t linear_simt_f16(const NMGemmParams& p, cudaStream_t stream);

cudaError_t grad_input_f32(const NMGemmParams& p, cudaStream_t stream);
cudaError_t grad_input_bf16(const NMGemmParams& p, cudaStream_t stream);
cudaError_t grad_input_f16(const NMGemmParams& p, cudaStream_t stream);

// 2:4 sparse tensor cores. `large`: 128x128 tiles (8 warps), else 64x64 (4 warps).
cudaError_t linear_mma24_bf16(const NMGemmParams& p, bool large, cudaStream_t stream);
cudaError_t linear_mma24_f16(const NMGemmParams& p, bool large, cudaStream_t stream);
}  // namespace cuda_nm
}  // namespace spikeops
