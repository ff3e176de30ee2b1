// Spike-driven self-attention (SDSA) on CUDA (torch-free). Math:
// csrc/common/recurrent_params.h; the LIF's float operations are the reference's, in its
// order, with IEEE-rounded intrinsics (no FMA contraction), as in csrc/cuda/neurons.
//
// Parallelisation: a block of 32 x kGroups threads owns one head g and 32 consecutive
// features d; thread (x, y) handles feature d = d0 + x and the tokens n = y, y + kGroups,
// ... . A warp therefore reads 32 consecutive features of one token row (coalesced).
// Forward, per step t: each thread sums k v over its tokens, the kGroups partial sums are
// combined in shared memory in a fixed order (deterministic), row 0 of the block runs the
// LIF step for its feature (membrane in a register) and writes H to h_seq, and all
// threads write out = q S for their tokens. q, k, v are read once, out written once.
// Backward: pass 1 writes dq = g S and the per-step dS = sum_n g q into the workspace
// grad_ws [T, G, D]; row 0 runs the LIF's BPTT over t in place (dS -> d(kv)); after a
// barrier (which makes row 0's global writes visible to the block) pass 2 writes
// dk = d(kv) v and dv = d(kv) k. Each of q, k, v, grad_out is read once, each gradient
// written once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/neurons/neuron_kernels.cuh"  // fadd/fsub/fmul/fdiv, Cvt, surrogate_grad
#include "cuda/recurrent/recurrent_launch.h"

namespace spikeops {
namespace cuda_recurrent {
namespace {

using cuda_neuron::Cvt;
using cuda_neuron::fadd;
using cuda_neuron::fdiv;
using cuda_neuron::fmul;
using cuda_neuron::fsub;

constexpr int kLanes = 32;   // features per block
constexpr int kGroups = 16;  // token groups per block (more loads in flight per block)
constexpr int kThreads = kLanes * kGroups;

// One LIF step (hard reset to 0, decay_input): the reference's
// h = v + (x - v) / tau; s = [h - vth >= 0]; v = (1 - s) h + s * 0.
__device__ __forceinline__ float lif_step(float& vm, float x, float tau, float vth, float& s) {
  const float h = fadd(vm, fdiv(fsub(x, vm), tau));
  s = fsub(h, vth) >= 0.f ? 1.f : 0.f;
  vm = fadd(fmul(fsub(1.f, s), h), fmul(s, 0.f));
  return h;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sdsa_fwd_kernel(const __grid_constant__ SDSAParams p) {
  const int64_t nblk = (p.D + kLanes - 1) / kLanes;
  const int64_t g = blockIdx.x / nblk;
  const int64_t d = (blockIdx.x % nblk) * kLanes + threadIdx.x;
  const int ty = threadIdx.y, tx = threadIdx.x;
  const bool active = d < p.D;
  const int64_t N = p.N, D = p.D, G = p.G;
  const T* __restrict__ q = static_cast<const T*>(p.q);
  const T* __restrict__ k = static_cast<const T*>(p.k);
  const T* __restrict__ v = static_cast<const T*>(p.v);
  T* __restrict__ out = static_cast<T*>(p.out);
  __shared__ float part[kGroups][kLanes];
  __shared__ float spike[kLanes];
  float vm = 0.f;
  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t base = (t * G + g) * N * D + d;
    float acc = 0.f;
    if (active) {
#pragma unroll 4
      for (int64_t n = ty; n < N; n += kGroups)
        acc = fadd(acc, fmul(Cvt<T>::load(k[base + n * D]), Cvt<T>::load(v[base + n * D])));
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0) {
      float kv = part[0][tx];
#pragma unroll
      for (int j = 1; j < kGroups; ++j) kv = fadd(kv, part[j][tx]);
      float s;
      const float h = lif_step(vm, kv, p.tau, p.v_threshold, s);
      if (active) p.h_seq[(t * G + g) * D + d] = h;
      spike[tx] = s;
    }
    __syncthreads();
    const float s = spike[tx];
    if (active) {
#pragma unroll 4
      for (int64_t n = ty; n < N; n += kGroups)
        out[base + n * D] = Cvt<T>::store(fmul(Cvt<T>::load(q[base + n * D]), s));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sdsa_bwd_kernel(const __grid_constant__ SDSAParams p) {
  const int64_t nblk = (p.D + kLanes - 1) / kLanes;
  const int64_t g = blockIdx.x / nblk;
  const int64_t d = (blockIdx.x % nblk) * kLanes + threadIdx.x;
  const int ty = threadIdx.y, tx = threadIdx.x;
  const bool active = d < p.D;
  const int64_t N = p.N, D = p.D, G = p.G, TT = p.T;
  const T* __restrict__ q = static_cast<const T*>(p.q);
  const T* __restrict__ k = static_cast<const T*>(p.k);
  const T* __restrict__ v = static_cast<const T*>(p.v);
  const T* __restrict__ go = static_cast<const T*>(p.grad_out);
  T* __restrict__ gq = static_cast<T*>(p.grad_q);
  T* __restrict__ gk = static_cast<T*>(p.grad_k);
  T* __restrict__ gv = static_cast<T*>(p.grad_v);
  const float* __restrict__ hs = p.h_seq;
  float* ws = p.grad_ws;
  __shared__ float part[kGroups][kLanes];

  // Pass 1: dq = g S; dS = sum_n g q -> ws.
  for (int64_t t = 0; t < TT; ++t) {
    const int64_t base = (t * G + g) * N * D + d;
    float acc = 0.f;
    if (active) {
      const float s = fsub(hs[(t * G + g) * D + d], p.v_threshold) >= 0.f ? 1.f : 0.f;
#pragma unroll 4
      for (int64_t n = ty; n < N; n += kGroups) {
        const float gg = Cvt<T>::load(go[base + n * D]);
        acc = fmaf(gg, Cvt<T>::load(q[base + n * D]), acc);
        gq[base + n * D] = Cvt<T>::store(fmul(gg, s));
      }
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && active) {
      float sum = part[0][tx];
#pragma unroll
      for (int j = 1; j < kGroups; ++j) sum += part[j][tx];
      ws[(t * G + g) * D + d] = sum;
    }
    __syncthreads();
  }

  // BPTT of the LIF over t (row 0), in place: dS_t -> d(kv)_t.
  if (ty == 0 && active) {
    float g_v = 0.f;
    for (int64_t t = TT - 1; t >= 0; --t) {
      const int64_t o = (t * G + g) * D + d;
      const float h = hs[o];
      const float u = h - p.v_threshold;
      const float s = u >= 0.f ? 1.f : 0.f;
      float gs = ws[o];
      if (!p.detach_reset) gs = fmaf(g_v, -h, gs);
      const float gh = fmaf(gs, cuda_neuron::surrogate_grad(p.surrogate, u, p.alpha),
                            g_v * (1.f - s));
      const float gx = gh / p.tau;
      ws[o] = gx;
      g_v = gh - gx;
    }
  }
  __syncthreads();

  // Pass 2: dk = d(kv) v, dv = d(kv) k.
  if (active) {
    for (int64_t t = 0; t < TT; ++t) {
      const int64_t base = (t * G + g) * N * D + d;
      const float gx = ws[(t * G + g) * D + d];
#pragma unroll 4
      for (int64_t n = ty; n < N; n += kGroups) {
        const int64_t o = base + n * D;
        gk[o] = Cvt<T>::store(gx * Cvt<T>::load(v[o]));
        gv[o] = Cvt<T>::store(gx * Cvt<T>::load(k[o]));
      }
    }
  }
}

unsigned sdsa_blocks(const SDSAParams& p) {
  return static_cast<unsigned>(p.G * ((p.D + kLanes - 1) / kLanes));
}

template <typename T>
cudaError_t launch_fwd(const SDSAParams& p, cudaStream_t stream) {
  sdsa_fwd_kernel<T><<<sdsa_blocks(p), dim3(kLanes, kGroups), 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const SDSAParams& p, cudaStream_t stream) {
  sdsa_bwd_kernel<T><<<sdsa_blocks(p), dim3(kLanes, kGroups), 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace
}  // namespace cuda_recurrent
}  // namespace spikeops

cudaError_t sdsa_forward_cuda(const spikeops::SDSAParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.T <= 0 || p.G <= 0 || p.D <= 0) return cudaSuccess;
  if (p.G * ((p.D + 31) / 32) > 0x7fffffff) return cudaErrorInvalidConfiguration;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_recurrent::launch_fwd<float>(p, stream);
    case DType::kBFloat16: return cuda_recurrent::launch_fwd<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return cuda_recurrent::launch_fwd<__half>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t sdsa_backward_cuda(const spikeops::SDSAParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.T <= 0 || p.G <= 0 || p.D <= 0 || p.N <= 0) return cudaSuccess;
  if (p.grad_ws == nullptr) return cudaErrorInvalidValue;
  if (p.G * ((p.D + 31) / 32) > 0x7fffffff) return cudaErrorInvalidConfiguration;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_recurrent::launch_bwd<float>(p, stream);
    case DType::kBFloat16: return cuda_recurrent::launch_bwd<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return cuda_recurrent::launch_bwd<__half>(p, stream);
  }
  return cudaErrorInvalidValue;
}
