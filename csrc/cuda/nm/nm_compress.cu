// nm_compress on CUDA: values (and, when selecting, meta) from a dense weight [rows, k].
//
// Math: per row, per group of m columns, the kept set is either the n largest |w| (ties:
// the lower column; NaN counts as the largest; see beats() in nm_common.cuh) or the
// first n set bits of the given meta; values gets the kept entries in column order.
// Memory traffic: read weight once (plus the group again per meta byte when selecting,
// from L1/L2), write values and meta once; a one-off conversion, so simplicity wins.
// Parallelisation: one thread per (row, group) writes that group's n value slots; when
// selecting, one thread per (row, meta byte) writes the byte (groups of m < 8 share a
// byte, so a byte is never written by two threads). Both recompute the same ranking.
// Safe for any meta: a group writes exactly its own n slots (zeros where the mask has
// fewer than n bits) and reads only bytes inside its row.
#include "cuda/nm/nm_common.cuh"
#include "cuda/nm/nm_launch.h"

namespace spikeops {
namespace cuda_nm {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t items) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (int64_t(1) << 20) ? (b > 0 ? b : 1) : (int64_t(1) << 20));
}

template <typename T>
__global__ void __launch_bounds__(kThreads) compress_values_kernel(const NMCompressParams p) {
  const T* __restrict__ weight = static_cast<const T*>(p.weight);
  T* __restrict__ values = static_cast<T*>(p.values);
  const int m = p.m, n = p.n;
  const int64_t groups = p.k / m;
  const int64_t total = p.rows * groups;
  for (int64_t it = int64_t(blockIdx.x) * kThreads + threadIdx.x; it < total;
       it += int64_t(gridDim.x) * kThreads) {
    const int64_t r = it / groups, g = it - r * groups;
    const T* w = weight + r * p.k + g * m;
    const uint32_t mask = p.select ? select_mask(w, m, n)
                                   : load_group_mask(p.meta + r * p.meta_stride, g * m, m);
    T* out = values + r * p.kept + g * n;
    int cnt = 0;
    for (int j = 0; j < m && cnt < n; ++j)
      if ((mask >> j) & 1u) out[cnt++] = w[j];
    for (; cnt < n; ++cnt) out[cnt] = from_f32<T>(0.f);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) compress_meta_kernel(const NMCompressParams p) {
  const T* __restrict__ weight = static_cast<const T*>(p.weight);
  const int m = p.m, n = p.n;
  const int64_t total = p.rows * p.meta_stride;
  for (int64_t it = int64_t(blockIdx.x) * kThreads + threadIdx.x; it < total;
       it += int64_t(gridDim.x) * kThreads) {
    const int64_t r = it / p.meta_stride, byte = it - r * p.meta_stride;
    const T* row = weight + r * p.k;
    uint32_t bits = 0;
    for (int j = 0; j < 8; ++j) {
      const int64_t c = byte * 8 + j;
      if (c >= p.k) break;  // padding bits of the last byte stay zero
      const int64_t g = c / m;
      if (is_selected(row + g * m, m, n, static_cast<int>(c - g * m))) bits |= 1u << j;
    }
    p.meta[r * p.meta_stride + byte] = static_cast<uint8_t>(bits);
  }
}

template <typename T>
cudaError_t launch_compress(const NMCompressParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.k <= 0) return cudaSuccess;
  if (p.m < 2 || p.m > 32 || p.n < 1 || p.n >= p.m || p.k % p.m != 0 ||
      p.kept != p.k / p.m * p.n || p.meta_stride != (p.k + 7) / 8)
    return cudaErrorInvalidValue;
  if (p.select) {
    const auto meta_kernel = compress_meta_kernel<T>;
    NM_LAUNCH(meta_kernel, grid_for(p.rows * p.meta_stride), kThreads, 0, stream)(p);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  const auto values_kernel = compress_values_kernel<T>;
  NM_LAUNCH(values_kernel, grid_for(p.rows * (p.k / p.m)), kThreads, 0, stream)(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t compress_f32(const NMCompressParams& p, cudaStream_t s) {
  return launch_compress<float>(p, s);
}
cudaError_t compress_bf16(const NMCompressParams& p, cudaStream_t s) {
  return launch_compress<__nv_bfloat16>(p, s);
}
cudaError_t compress_f16(const NMCompressParams& p, cudaStream_t s) {
  return launch_compress<__half>(p, s);
}

}  // namespace cuda_nm
}  // namespace spikeops
