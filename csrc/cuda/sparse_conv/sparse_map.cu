// Kernel maps of the sparse convolution on CUDA (torch-free; entry points and contracts in
// sparse_conv_launch.h), the GPU form of the CPU backend's hash-table maps
// (csrc/cpu/sparse_conv.cpp):
//
//   validate   one thread per index row; the lowest failing row by atomicMin (the glue
//              reads it back and raises the CPU's message for that row).
//   insert     one thread per row: atomicCAS of the 64-bit linear key into an open-
//              addressing table (linear probing, capacity a power of two >= 2 n); a slot
//              already holding the key is a duplicate site (flag). The winner writes vals.
//   subm map   one thread per (row, offset): look the neighbour up (read-only probing).
//   regular    (a) one thread per (input row, offset) inserts the output site it reaches;
//              (b) the table's keys are compacted (atomicAdd position: slot order, not
//              deterministic) and sorted by the glue (at::sort; the emulation driver:
//              std::sort), so the outputs come batch-major then by coordinates, like the
//              CPU; (c) one thread per output row writes its coordinates and sets its
//              row in the table; (d) one thread per (input row, offset) writes
//              nbmap[out row, offset] = input row (each entry has exactly one writer).
//   transpose  one thread per nbmap entry: atomicCAS into the input-major table (a second
//              writer of the same entry means the table is not a conv map: flag).
//
// Which slot a key lands in depends on timing; every lookup's answer does not, so all
// tables are deterministic. Memory: the tables are 12 bytes per slot; every other pass
// reads the indices once per offset (K times; L2-resident for typical N).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sparse_conv/sparse_conv_launch.h"

namespace spikeops {
namespace cuda_sparse {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // grid-stride loops beyond this
constexpr unsigned long long kEmptyKey = ~0ull;

inline int blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return int(b < kMaxBlocks ? b : kMaxBlocks);
}

__device__ __forceinline__ unsigned long long hash64(unsigned long long x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Inserts key; returns its slot and whether it was already there.
__device__ __forceinline__ int64_t table_insert(const SparseHashTable& t, unsigned long long key,
                                                bool& existed) {
  const unsigned long long mask = (unsigned long long)(t.cap - 1);
  unsigned long long h = hash64(key) & mask;
  for (;;) {
    const unsigned long long prev = atomicCAS(&t.keys[h], kEmptyKey, key);
    if (prev == kEmptyKey || prev == key) {
      existed = prev == key;
      return int64_t(h);
    }
    h = (h + 1) & mask;
  }
}

// Slot of key, or -1 (read-only; the table was filled by an earlier kernel).
__device__ __forceinline__ int64_t table_find(const SparseHashTable& t, unsigned long long key) {
  const unsigned long long mask = (unsigned long long)(t.cap - 1);
  unsigned long long h = hash64(key) & mask;
  for (;;) {
    const unsigned long long k = t.keys[h];
    if (k == key) return int64_t(h);
    if (k == kEmptyKey) return -1;
    h = (h + 1) & mask;
  }
}

__device__ __forceinline__ unsigned long long linear_key(int64_t b, const int64_t* c,
                                                         const int64_t* shape, int ndim) {
  int64_t key = b;
  for (int t = 0; t < ndim; ++t) key = key * shape[t] + c[t];
  return (unsigned long long)key;
}

// Offset j's coordinates (row-major over the kernel dims).
__device__ __forceinline__ void offset_coords(const SparseMapGeom& g, int64_t j, int64_t* off) {
  for (int t = g.ndim - 1; t >= 0; --t) {
    off[t] = j % g.k[t];
    j /= g.k[t];
  }
}

// The output site that input row r feeds through offset j (regular conv), or false.
__device__ __forceinline__ bool out_coord(const SparseMapGeom& g, const int32_t* r, int64_t j,
                                          int64_t* o) {
  int64_t off[kSparseMaxDims];
  offset_coords(g, j, off);
  for (int t = 0; t < g.ndim; ++t) {
    const int64_t num = int64_t(r[t + 1]) + g.p[t] - off[t] * g.d[t];
    if (num < 0 || num % g.s[t] != 0) return false;
    o[t] = num / g.s[t];
    if (o[t] >= g.out_shape[t]) return false;
  }
  return true;
}

__global__ void __launch_bounds__(kThreads)
    validate_kernel(const int32_t* idx, int64_t n, const SparseMapGeom g,
                    unsigned long long* first_bad) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const int32_t* r = idx + i * (g.ndim + 1);
    bool bad = r[0] < 0 || r[0] >= g.batch;
    for (int t = 0; t < g.ndim; ++t) bad = bad || r[t + 1] < 0 || r[t + 1] >= g.shape[t];
    if (bad) atomicMin(first_bad, (unsigned long long)i);
  }
}

__global__ void __launch_bounds__(kThreads)
    insert_kernel(const int32_t* idx, int64_t n, const SparseMapGeom g, const SparseHashTable t,
                  int32_t* dup) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t c[kSparseMaxDims];
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const int32_t* r = idx + i * (g.ndim + 1);
    for (int d = 0; d < g.ndim; ++d) c[d] = r[d + 1];
    bool existed;
    const int64_t slot = table_insert(t, linear_key(r[0], c, g.shape, g.ndim), existed);
    if (existed) atomicOr(dup, 1);
    else t.vals[slot] = int32_t(i);
  }
}

__global__ void __launch_bounds__(kThreads)
    subm_map_kernel(const int32_t* idx, int64_t n, const SparseMapGeom g,
                    const SparseHashTable t, int32_t* nbmap) {
  const int64_t total = n * g.K, stride = int64_t(gridDim.x) * kThreads;
  int64_t off[kSparseMaxDims], q[kSparseMaxDims];
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
    const int64_t m = e / g.K, j = e % g.K;
    const int32_t* r = idx + m * (g.ndim + 1);
    offset_coords(g, j, off);
    bool ok = true;
    for (int d = 0; d < g.ndim; ++d) {
      q[d] = int64_t(r[d + 1]) + (off[d] - g.k[d] / 2) * g.d[d];
      ok = ok && q[d] >= 0 && q[d] < g.shape[d];
    }
    int32_t v = -1;
    if (ok) {
      const int64_t slot = table_find(t, linear_key(r[0], q, g.shape, g.ndim));
      if (slot >= 0) v = t.vals[slot];
    }
    nbmap[e] = v;
  }
}

__global__ void __launch_bounds__(kThreads)
    out_insert_kernel(const int32_t* idx, int64_t n, const SparseMapGeom g,
                      const SparseHashTable t) {
  const int64_t total = n * g.K, stride = int64_t(gridDim.x) * kThreads;
  int64_t o[kSparseMaxDims];
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
    const int32_t* r = idx + (e / g.K) * (g.ndim + 1);
    if (out_coord(g, r, e % g.K, o)) {
      bool existed;
      table_insert(t, linear_key(r[0], o, g.out_shape, g.ndim), existed);
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    collect_kernel(const SparseHashTable t, long long* keys_out, int64_t max_keys,
                   unsigned long long* count) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t h = int64_t(blockIdx.x) * kThreads + threadIdx.x; h < t.cap; h += stride) {
    const unsigned long long key = t.keys[h];
    if (key == kEmptyKey) continue;
    const unsigned long long pos = atomicAdd(count, 1ull);
    if (int64_t(pos) < max_keys) keys_out[pos] = (long long)key;
  }
}

__global__ void __launch_bounds__(kThreads)
    assign_kernel(const int64_t* keys, int64_t M, const SparseMapGeom g,
                  const SparseHashTable t, int32_t* out_indices) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t m = int64_t(blockIdx.x) * kThreads + threadIdx.x; m < M; m += stride) {
    int64_t rest = keys[m];
    int32_t* row = out_indices + m * (g.ndim + 1);
    for (int d = g.ndim - 1; d >= 0; --d) {
      row[d + 1] = int32_t(rest % g.out_shape[d]);
      rest /= g.out_shape[d];
    }
    row[0] = int32_t(rest);
    const int64_t slot = table_find(t, (unsigned long long)keys[m]);
    if (slot >= 0) t.vals[slot] = int32_t(m);
  }
}

__global__ void __launch_bounds__(kThreads)
    regular_map_kernel(const int32_t* idx, int64_t n, const SparseMapGeom g,
                       const SparseHashTable t, int32_t* nbmap, int64_t M) {
  const int64_t total = n * g.K, stride = int64_t(gridDim.x) * kThreads;
  int64_t o[kSparseMaxDims];
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
    const int64_t i = e / g.K, j = e % g.K;
    const int32_t* r = idx + i * (g.ndim + 1);
    if (!out_coord(g, r, j, o)) continue;
    const int64_t slot = table_find(t, linear_key(r[0], o, g.out_shape, g.ndim));
    if (slot < 0) continue;  // cannot happen: step 1 inserted every reached site
    const int64_t m = t.vals[slot];
    if (m >= 0 && m < M) nbmap[m * g.K + j] = int32_t(i);
  }
}

__global__ void __launch_bounds__(kThreads)
    transpose_kernel(const int32_t* nbmap, int64_t M, int64_t K, int64_t num_in, int32_t* inv,
                     int32_t* flags) {
  const int64_t total = M * K, stride = int64_t(gridDim.x) * kThreads;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
    const int32_t i = nbmap[e];
    if (i == -1) continue;
    if (i < -1 || int64_t(i) >= num_in) {
      atomicOr(&flags[0], 1);
      continue;
    }
    const int64_t m = e / K, j = e % K;
    if (atomicCAS(&inv[int64_t(i) * K + j], -1, int32_t(m)) != -1) atomicOr(&flags[1], 1);
  }
}

}  // namespace
}  // namespace cuda_sparse

using namespace cuda_sparse;

cudaError_t sparse_validate_indices_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                         int64_t* first_bad, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(first_bad, 0xff, sizeof(int64_t), stream);
  if (err != cudaSuccess || n == 0) return err;
  validate_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      idx, n, g, reinterpret_cast<unsigned long long*>(first_bad));
  return cudaGetLastError();
}

namespace {
// cudaMemsetAsync of a possibly empty (null) buffer.
cudaError_t fill_bytes(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  return bytes == 0 ? cudaSuccess : cudaMemsetAsync(ptr, value, bytes, stream);
}

cudaError_t clear_table(const SparseHashTable& t, cudaStream_t stream, bool vals) {
  cudaError_t err = cudaMemsetAsync(t.keys, 0xff, size_t(t.cap) * sizeof(unsigned long long),
                                    stream);
  if (err == cudaSuccess && vals)
    err = cudaMemsetAsync(t.vals, 0xff, size_t(t.cap) * sizeof(int32_t), stream);
  return err;
}
}  // namespace

cudaError_t sparse_table_insert_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                     const SparseHashTable& t, int32_t* dup,
                                     cudaStream_t stream) {
  cudaError_t err = clear_table(t, stream, true);
  if (err == cudaSuccess) err = cudaMemsetAsync(dup, 0, sizeof(int32_t), stream);
  if (err != cudaSuccess || n == 0) return err;
  insert_kernel<<<blocks_for(n), kThreads, 0, stream>>>(idx, n, g, t, dup);
  return cudaGetLastError();
}

cudaError_t sparse_subm_map_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                 const SparseHashTable& t, int32_t* nbmap, cudaStream_t stream) {
  if (n * g.K == 0) return cudaSuccess;
  subm_map_kernel<<<blocks_for(n * g.K), kThreads, 0, stream>>>(idx, n, g, t, nbmap);
  return cudaGetLastError();
}

cudaError_t sparse_out_insert_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                   const SparseHashTable& out, cudaStream_t stream) {
  cudaError_t err = clear_table(out, stream, true);
  if (err != cudaSuccess || n * g.K == 0) return err;
  out_insert_kernel<<<blocks_for(n * g.K), kThreads, 0, stream>>>(idx, n, g, out);
  return cudaGetLastError();
}

cudaError_t sparse_out_collect_cuda(const SparseHashTable& out, int64_t* keys_out,
                                    int64_t max_keys, int64_t* count, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(count, 0, sizeof(int64_t), stream);
  if (err != cudaSuccess) return err;
  collect_kernel<<<blocks_for(out.cap), kThreads, 0, stream>>>(
      out, reinterpret_cast<long long*>(keys_out), max_keys,
      reinterpret_cast<unsigned long long*>(count));
  return cudaGetLastError();
}

cudaError_t sparse_out_assign_cuda(const int64_t* keys, int64_t M, const SparseMapGeom& g,
                                   const SparseHashTable& out, int32_t* out_indices,
                                   cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  assign_kernel<<<blocks_for(M), kThreads, 0, stream>>>(keys, M, g, out, out_indices);
  return cudaGetLastError();
}

cudaError_t sparse_regular_map_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                    const SparseHashTable& out, int32_t* nbmap, int64_t M,
                                    cudaStream_t stream) {
  cudaError_t err = fill_bytes(nbmap, 0xff, size_t(M * g.K) * sizeof(int32_t), stream);
  if (err != cudaSuccess || n * g.K == 0 || M == 0) return err;
  regular_map_kernel<<<blocks_for(n * g.K), kThreads, 0, stream>>>(idx, n, g, out, nbmap, M);
  return cudaGetLastError();
}

cudaError_t sparse_map_transpose_cuda(const int32_t* nbmap, int64_t M, int64_t K,
                                      int64_t num_in, int32_t* inv, int32_t* flags,
                                      cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(flags, 0, 2 * sizeof(int32_t), stream);
  if (err == cudaSuccess)
    err = fill_bytes(inv, 0xff, size_t(num_in * K) * sizeof(int32_t), stream);
  if (err != cudaSuccess || M * K == 0) return err;
  transpose_kernel<<<blocks_for(M * K), kThreads, 0, stream>>>(nbmap, M, K, num_in, inv, flags);
  return cudaGetLastError();
}

}  // namespace spikeops
