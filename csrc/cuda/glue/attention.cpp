// CUDA backend of spiking self-attention (ssa_fwd, ssa_lif_fwd). The shared implementation
// (csrc/ops/attention.cpp) checks the arguments, allocates the output and fills SSAParams
// under a DeviceGuard; this file supplies the stream and the LIF scratch, and computes
// heads wider than the kernel takes (D > 128) with ATen in float64 (exact counts).
//
// Non-binary input is not an error here (the CPU raises one): the kernel computes such a
// head in fp32 from the original values (csrc/cuda/attention/ssa_kernels.cuh), so no call
// syncs the device to report it.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/attention/ssa_launch.h"
#include "ops/attention.h"

namespace spikeops {
namespace {

at::ScalarType scalar_type(DType dt) {
  return dt == DType::kFloat32 ? at::kFloat : dt == DType::kBFloat16 ? at::kBFloat16 : at::kHalf;
}

// Heads with D > 128: the same product with ATen (float64 keeps every count exact), then
// the LIF with one ATen op per IEEE operation, in the reference's order.
void wide_heads(const SSAParams& p) {
  const auto opts = at::TensorOptions().dtype(scalar_type(p.dtype)).device(
      at::kCUDA, c10::cuda::current_device());
  auto q = at::from_blob(const_cast<void*>(p.q), {p.G, p.N, p.D}, opts).to(at::kDouble);
  auto k = at::from_blob(const_cast<void*>(p.k), {p.G, p.N, p.D}, opts).to(at::kDouble);
  auto v = at::from_blob(const_cast<void*>(p.v), {p.G, p.N, p.Dv}, opts).to(at::kDouble);
  auto out = at::from_blob(p.out, {p.G, p.N, p.Dv}, opts);
  // fl(count * scale) as the kernel rounds it: the count is exact, one fp32 multiply.
  auto attn = at::matmul(q, at::matmul(k.transpose(1, 2), v)).to(at::kFloat)
                  .mul(p.scale).to(scalar_type(p.dtype));
  if (!p.lif) {
    out.copy_(attn);
    return;
  }
  const int64_t heads = p.G / p.T;
  auto x = attn.view({p.T, heads, p.N, p.Dv}).to(at::kFloat);
  auto spikes = out.view({p.T, heads, p.N, p.Dv});
  auto v_mem = at::full({heads, p.N, p.Dv}, p.v_reset, x.options());
  for (int64_t t = 0; t < p.T; ++t) {
    auto h = p.v_reset != 0.f ? v_mem + (x[t] - (v_mem - p.v_reset)) / p.tau
                              : v_mem + (x[t] - v_mem) / p.tau;
    auto s = (h - p.v_threshold).ge(0).to(at::kFloat);
    v_mem = (1 - s) * h + s * p.v_reset;
    spikes[t].copy_(s);
  }
}

void cuda_ssa_forward(const SSAParams& p) {
  if (p.D > cuda_ssa::kMaxKernelD) {
    wide_heads(p);
    return;
  }
  at::Tensor scratch;
  const size_t bytes = cuda_ssa::ssa_scratch_bytes(p);
  if (bytes > 0)
    scratch = at::empty({int64_t(bytes / 4)}, at::TensorOptions().dtype(at::kFloat).device(
                                                  at::kCUDA, c10::cuda::current_device()));
  C10_CUDA_CHECK(cuda_ssa::ssa_forward(p, bytes > 0 ? scratch.data_ptr<float>() : nullptr,
                                       c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

static const SSABackend kCudaSSABackend{cuda_ssa_forward};

}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) { SPIKEOPS_REGISTER_SSA_OPS(m, ::spikeops::kCudaSSABackend); }
