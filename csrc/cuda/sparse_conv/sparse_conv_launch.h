// Host entry points of the sparse convolution CUDA kernels (torch-free). The glue
// (csrc/cuda/glue/sparse_conv.cpp) checks the arguments (csrc/ops/sparse_conv.cpp), allocates
// every buffer on the device and passes the current stream; tests/cuda_emu/
// sparse_conv_driver.cpp does the same on the host for the emulation. Each function returns
// the launch status (cudaGetLastError()); nothing is synchronised. Buffers a function
// documents as "set here" are initialised by it (cudaMemsetAsync on the same stream).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

constexpr int kSparseMaxDims = 8;

// A conv's geometry (csrc/ops/sparse_conv.h MapGeometry, flattened for the kernels).
// Offsets are row-major over the kernel dims: offset j's last coordinate varies fastest.
struct SparseMapGeom {
  int32_t ndim = 0;
  int64_t batch = 0;
  int64_t K = 0;
  int64_t shape[kSparseMaxDims] = {};      // input grid
  int64_t out_shape[kSparseMaxDims] = {};  // output grid (= shape for subm)
  int64_t k[kSparseMaxDims] = {};
  int64_t s[kSparseMaxDims] = {};
  int64_t p[kSparseMaxDims] = {};
  int64_t d[kSparseMaxDims] = {};
};

// Open-addressing hash table on the device: linear probing over cap (a power of two)
// slots; keys are batch-major linear coordinates (>= 0), an empty slot holds ~0ull.
struct SparseHashTable {
  unsigned long long* keys = nullptr;  // [cap]
  int32_t* vals = nullptr;             // [cap]
  int64_t cap = 0;
};

// The capacity the CPU backend uses too: a power of two >= 2 n (at least 16).
inline int64_t sparse_table_capacity(int64_t n) {
  int64_t cap = 16;
  while (cap < 2 * (n > 1 ? n : 1)) cap <<= 1;
  return cap;
}

// first_bad (int64 [1], set here): the lowest row of idx [n, ndim + 1] that is negative,
// has a batch index >= g.batch or a coordinate outside g.shape; -1 when none.
cudaError_t sparse_validate_indices_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                         int64_t* first_bad, cudaStream_t stream);

// Fills t (keys and vals set here) with the sites of idx (valid rows, grid g.shape): vals
// is the row. dup (int32 [1], set here) becomes 1 when a site is listed twice.
cudaError_t sparse_table_insert_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                     const SparseHashTable& t, int32_t* dup,
                                     cudaStream_t stream);

// Submanifold map nbmap [n, K] (every entry written) from the table of the same sites.
cudaError_t sparse_subm_map_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                 const SparseHashTable& t, int32_t* nbmap, cudaStream_t stream);

// Regular conv, step 1: inserts (keys set here; vals untouched) every output site
// (grid g.out_shape) that some row of idx reaches through some offset.
cudaError_t sparse_out_insert_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                   const SparseHashTable& out, cudaStream_t stream);
// Step 2: the table's keys into keys_out (room for max_keys; in slot order, which depends
// on timing: sort them next) and their number into count (int64 [1], set here).
cudaError_t sparse_out_collect_cuda(const SparseHashTable& out, int64_t* keys_out,
                                    int64_t max_keys, int64_t* count, cudaStream_t stream);
// Step 3: with keys [M] sorted ascending (batch-major, then coordinates): out_indices
// [M, ndim + 1] and the table's vals (the output row of each key).
cudaError_t sparse_out_assign_cuda(const int64_t* keys, int64_t M, const SparseMapGeom& g,
                                   const SparseHashTable& out, int32_t* out_indices,
                                   cudaStream_t stream);
// Step 4: nbmap [M, K] (set here: -1, then one writer per existing pair).
cudaError_t sparse_regular_map_cuda(const int32_t* idx, int64_t n, const SparseMapGeom& g,
                                    const SparseHashTable& out, int32_t* nbmap, int64_t M,
                                    cudaStream_t stream);

// inv [num_in, K] (set here) of nbmap [M, K]. flags (int32 [2], set here): flags[0] = 1
// when an entry is outside [-1, num_in) (such entries are skipped), flags[1] = 1 when an
// (input, offset) pair is named by two output rows.
cudaError_t sparse_map_transpose_cuda(const int32_t* nbmap, int64_t M, int64_t K,
                                      int64_t num_in, int32_t* inv, int32_t* flags,
                                      cudaStream_t stream);

// One sparse convolution call (csrc/common/sparse_conv_params.h has the math):
//   forward  out[m, o] = bias[o] + sum_k sum_c x[nbmap[m, k], c] * w[k, c, o]
//   wgrad    dw[k, c, o] = sum_m x[nbmap[m, k], c] * g[m, o]
// Sums over k ascending, then c ascending (forward) or m ascending (wgrad), one fp32 FMA
// per term, as the CPU kernels; entries of nbmap outside [-1, N) are taken as -1 and set
// *bad = 1 (bad is set to 0 here first).
struct SparseConvCudaParams {
  int64_t M = 0, K = 0, N = 0, Cin = 0, Cout = 0;
  DType dtype = DType::kFloat32;  // of x, w, out, g
  const int32_t* nbmap = nullptr;  // [M, K]
  const void* x = nullptr;         // [N, Cin]
  const void* w = nullptr;         // [K, Cin, Cout] (forward)
  const float* bias = nullptr;     // [Cout] fp32 or null (forward)
  void* out = nullptr;             // [M, Cout] (forward)
  const void* g = nullptr;         // [M, Cout] (wgrad)
  float* dw = nullptr;             // [K, Cin, Cout] fp32 (wgrad)
  float* ws = nullptr;             // [splits, K, Cin, Cout] fp32 when splits > 1 (wgrad)
  int64_t splits = 1;              // wgrad: ranges of output rows reduced separately
  int32_t* bad = nullptr;          // int32 [1]
};

// The weight gradient splits the output rows into this many ranges (a function of M only,
// so results are the same on every device): each range's partial sums go to ws and are
// added in range order.
inline int64_t sparse_wgrad_splits(int64_t M) {
  const int64_t s = (M + 4095) / 4096;
  return s < 1 ? 1 : (s > 32 ? 32 : s);
}

cudaError_t sparse_conv_fwd_cuda(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t sparse_conv_wgrad_cuda(const SparseConvCudaParams& p, cudaStream_t stream);

namespace cuda_sparse {
// One per dtype, each in its own translation unit so they compile in parallel.
cudaError_t conv_fwd_f32(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t conv_fwd_bf16(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t conv_fwd_f16(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t conv_wgrad_f32(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t conv_wgrad_bf16(const SparseConvCudaParams& p, cudaStream_t stream);
cudaError_t conv_wgrad_f16(const SparseConvCudaParams& p, cudaStream_t stream);
}  // namespace cuda_sparse

}  // namespace spikeops
