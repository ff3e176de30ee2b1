// RWKV-4 WKV on CUDA (torch-free). Math and the backward's derivation:
// csrc/common/recurrent_params.h and csrc/cpu/kernels/recurrent_kernel.cpp.
//
// Parallelisation: one thread per (b, c), the time loop sequential in registers;
// consecutive threads own consecutive channels, so every [b, t, :] row is read and written
// coalesced. k and v (and grad_y) are loaded a chunk of kChunk steps ahead so each thread
// keeps several independent loads in flight (the recurrence itself has no memory
// parallelism).
// Forward: reads k, v, writes y; state (a, b, p) in registers.
// Backward: one thread per (b, c) runs the forward again storing the pre-step states
// (a, b, p) in the workspace state_ws [3, B, T, C] (fp32; each thread reads back only what
// it wrote), then the reverse scan of the scaled adjoints (ga, gb, r), writing grad_k,
// grad_v and its own sums over t of dL/dw, dL/du into param_partial [2, B, C]. A second
// kernel (one thread per channel) sums those over b in order: deterministic, no atomics.
// Traffic per element-step: forward 3 values; backward k, v twice, grad_y, grad_k,
// grad_v and 3 fp32 states written + read.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/recurrent/recurrent_launch.h"

namespace spikeops {
namespace cuda_recurrent {
namespace {

constexpr int kThreads = 64;  // per block: B * C is often only a few thousand threads,
                              // so small blocks spread them over more SMs
constexpr int kChunk = 8;     // steps loaded ahead

template <typename T> struct Cvt;
template <> struct Cvt<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <> struct Cvt<__half> {
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <> struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

struct State {
  float a, b, p;
};

// exp(a - m) and exp(b - m) for m = max(a, b) with one exp (one factor is exactly 1; see
// the CPU kernel). NaN propagates through m and the non-1 factor.
__device__ __forceinline__ void exp_pair(float a, float b, float& ea, float& eb, float& m) {
  const bool a_ge = a >= b;
  m = a_ge ? a : b;  // b when unordered, like the CPU kernel
  const float x = expf(-fabsf(a - b));
  ea = a_ge ? 1.f : x;
  eb = a_ge ? x : 1.f;
}

__device__ __forceinline__ float wkv_output(const State& s, float u, float k, float v) {
  float e1, e2, q;
  exp_pair(s.p, u + k, e1, e2, q);
  return (e1 * s.a + e2 * v) / (e1 * s.b + e2);
}

__device__ __forceinline__ void wkv_update(State& s, float w, float k, float v) {
  float e1, e2, q;
  exp_pair(s.p + w, k, e1, e2, q);
  s.a = e1 * s.a + e2 * v;
  s.b = e1 * s.b + e2;
  s.p = q;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rwkv_fwd_kernel(const __grid_constant__ RWKVParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.B * p.C) return;
  const int64_t C = p.C, TT = p.T;
  const int64_t b = i / C, c = i % C;
  const float w = -expf(p.time_decay[c]), u = p.time_first[c];
  const int64_t off = b * TT * C + c;
  const T* __restrict__ k = static_cast<const T*>(p.k) + off;
  const T* __restrict__ v = static_cast<const T*>(p.v) + off;
  T* __restrict__ y = static_cast<T*>(p.y) + off;
  State s{0.f, 0.f, kRwkvEmpty};
  for (int64_t t0 = 0; t0 < TT; t0 += kChunk) {
    float ks[kChunk], vs[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
      if (t0 + j < TT) {
        ks[j] = Cvt<T>::load(k[(t0 + j) * C]);
        vs[j] = Cvt<T>::load(v[(t0 + j) * C]);
      }
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
      if (t0 + j < TT) {
        y[(t0 + j) * C] = Cvt<T>::store(wkv_output(s, u, ks[j], vs[j]));
        wkv_update(s, w, ks[j], vs[j]);
      }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rwkv_bwd_kernel(const __grid_constant__ RWKVParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.B * p.C) return;
  const int64_t C = p.C, TT = p.T, BB = p.B;
  const int64_t b = i / C, c = i % C;
  const float w = -expf(p.time_decay[c]), u = p.time_first[c];
  const int64_t off = b * TT * C + c;
  const T* __restrict__ k = static_cast<const T*>(p.k) + off;
  const T* __restrict__ v = static_cast<const T*>(p.v) + off;
  const T* __restrict__ gy = static_cast<const T*>(p.grad_y) + off;
  T* __restrict__ gk = static_cast<T*>(p.grad_k) + off;
  T* __restrict__ gv = static_cast<T*>(p.grad_v) + off;
  // state_ws [3, B, T, C]: component stride B * T * C, same [b, t, c] offset as k.
  const int64_t cs = BB * TT * C;
  float* __restrict__ ws = p.state_ws + off;

  // Pass 1: forward, keeping the state before every step.
  State s{0.f, 0.f, kRwkvEmpty};
  for (int64_t t0 = 0; t0 < TT; t0 += kChunk) {
    float ks[kChunk], vs[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
      if (t0 + j < TT) {
        ks[j] = Cvt<T>::load(k[(t0 + j) * C]);
        vs[j] = Cvt<T>::load(v[(t0 + j) * C]);
      }
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
      if (t0 + j < TT) {
        const int64_t o = (t0 + j) * C;
        ws[o] = s.a;
        ws[cs + o] = s.b;
        ws[2 * cs + o] = s.p;
        wkv_update(s, w, ks[j], vs[j]);
      }
  }

  // Pass 2: reverse scan. (ga, gb, r): adjoints of the unscaled past sums after step t,
  // alpha = ga e^r, beta = gb e^r.
  float ga = 0.f, gb = 0.f, r = kRwkvEmpty, dw = 0.f, du = 0.f;
  for (int64_t t1 = TT; t1 > 0; t1 -= kChunk) {
    // steps t1 - 1 down to max(0, t1 - kChunk)
    float ks[kChunk], vs[kChunk], gys[kChunk], as[kChunk], bs[kChunk], ps[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      const int64_t t = t1 - 1 - j;
      if (t >= 0) {
        const int64_t o = t * C;
        ks[j] = Cvt<T>::load(k[o]);
        vs[j] = Cvt<T>::load(v[o]);
        gys[j] = Cvt<T>::load(gy[o]);
        as[j] = ws[o];
        bs[j] = ws[cs + o];
        ps[j] = ws[2 * cs + o];
      }
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      const int64_t t = t1 - 1 - j;
      if (t >= 0) {
        const float kk = ks[j], vv = vs[j];
        float e1, e2, q;
        exp_pair(ps[j], u + kk, e1, e2, q);
        const float d = e1 * bs[j] + e2;
        const float yv = (e1 * as[j] + e2 * vv) / d;
        const float gyd = gys[j] / d;
        const float c2 = gyd * e2;
        const float vy = vv - yv;
        const float f = expf(kk + r);
        gv[t * C] = Cvt<T>::store(fmaf(f, ga, c2));
        gk[t * C] = Cvt<T>::store(fmaf(c2, vy, f * fmaf(ga, vv, gb)));
        du = fmaf(c2, vy, du);
        dw = fmaf(expf(w + r + ps[j]), fmaf(ga, as[j], gb * bs[j]), dw);
        float s1, s2, r2;
        exp_pair(r + w, -q, s1, s2, r2);
        const float s2g = s2 * gyd;
        ga = fmaf(s1, ga, s2g);
        gb = s1 * gb - s2g * yv;
        r = r2;
      }
    }
  }
  p.param_partial[b * C + c] = dw;
  p.param_partial[(BB + b) * C + c] = du;
}

// grad_time_decay[c] = w * sum_b dL/dw, grad_time_first[c] = sum_b dL/du (b in order).
__global__ void __launch_bounds__(256) rwkv_param_kernel(const __grid_constant__ RWKVParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.C) return;
  float sw = 0.f, su = 0.f;
  for (int64_t b = 0; b < p.B; ++b) {
    sw += p.param_partial[b * p.C + c];
    su += p.param_partial[(p.B + b) * p.C + c];
  }
  p.grad_time_decay[c] = sw * -expf(p.time_decay[c]);
  p.grad_time_first[c] = su;
}

unsigned blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <typename T>
cudaError_t launch_fwd(const RWKVParams& p, cudaStream_t stream) {
  rwkv_fwd_kernel<T><<<blocks(p.B * p.C, kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const RWKVParams& p, cudaStream_t stream) {
  rwkv_bwd_kernel<T><<<blocks(p.B * p.C, kThreads), kThreads, 0, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  rwkv_param_kernel<<<blocks(p.C, 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace
}  // namespace cuda_recurrent
}  // namespace spikeops

cudaError_t rwkv_forward_cuda(const spikeops::RWKVParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.B * p.C <= 0 || p.T <= 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_recurrent::launch_fwd<float>(p, stream);
    case DType::kBFloat16: return cuda_recurrent::launch_fwd<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return cuda_recurrent::launch_fwd<__half>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t rwkv_backward_cuda(const spikeops::RWKVParams& p, cudaStream_t stream) {
  using namespace spikeops;
  if (p.B * p.C <= 0 || p.T <= 0) return cudaSuccess;
  if (p.state_ws == nullptr || p.param_partial == nullptr) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case DType::kFloat32: return cuda_recurrent::launch_bwd<float>(p, stream);
    case DType::kBFloat16: return cuda_recurrent::launch_bwd<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return cuda_recurrent::launch_bwd<__half>(p, stream);
  }
  return cudaErrorInvalidValue;
}
