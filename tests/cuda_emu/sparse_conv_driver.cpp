// C entry points over the sparse convolution CUDA kernels' launchers for the host emulation
// (tests/test_sparse_conv_cuda_emu.py loads them with ctypes). emu_sparse_map runs the
// steps of csrc/cuda/glue/sparse_conv.cpp's sparse_conv_map with host buffers (std::sort
// standing in for at::sort); the other entry points call one launcher each. Scratch
// buffers start as garbage so a read before write shows.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda/sparse_conv/sparse_conv_launch.h"
using namespace spikeops;

namespace {
struct Table {
  std::vector<unsigned long long> keys;
  std::vector<int32_t> vals;
  SparseHashTable t;
  explicit Table(int64_t n) {
    const int64_t cap = sparse_table_capacity(n);
    keys.assign(size_t(cap), 12345ull);
    vals.assign(size_t(cap), 777);
    t.keys = keys.data();
    t.vals = vals.data();
    t.cap = cap;
  }
};
}  // namespace

// Returns 0 (M rows written to out_indices [max_rows, ndim + 1] and nbmap [max_rows, K]),
// 1 a bad index row (*first_bad), 2 duplicate sites, 3 more than max_rows outputs.
extern "C" int emu_sparse_map(const int32_t* idx, int64_t n, int ndim, const int64_t* shape,
                              int64_t batch, const int64_t* k, const int64_t* s,
                              const int64_t* p, const int64_t* d, int subm, int64_t max_rows,
                              int32_t* out_indices, int32_t* nbmap, int64_t* M_out,
                              int64_t* first_bad) {
  SparseMapGeom g;
  g.ndim = ndim;
  g.batch = batch;
  g.K = 1;
  double cells = double(batch);
  for (int t = 0; t < ndim; ++t) {
    g.shape[t] = shape[t];
    g.k[t] = k[t];
    g.s[t] = s[t];
    g.p[t] = p[t];
    g.d[t] = d[t];
    g.K *= k[t];
    g.out_shape[t] = subm ? shape[t] : (shape[t] + 2 * p[t] - d[t] * (k[t] - 1) - 1) / s[t] + 1;
    cells *= double(g.out_shape[t]);
  }
  if (sparse_validate_indices_cuda(idx, n, g, first_bad, nullptr) != 0) return -1;
  if (n > 0 && *first_bad >= 0) return 1;
  Table in(n);
  int32_t dup = 99;
  if (sparse_table_insert_cuda(idx, n, g, in.t, &dup, nullptr) != 0) return -1;
  if (subm) {
    if (n > max_rows) return 3;
    if (sparse_subm_map_cuda(idx, n, g, in.t, nbmap, nullptr) != 0) return -1;
    if (dup) return 2;
    if (n > 0) std::memcpy(out_indices, idx, size_t(n * (ndim + 1)) * sizeof(int32_t));
    *M_out = n;
    return 0;
  }
  const int64_t bound = int64_t(std::min(double(n) * double(g.K), cells));
  Table out(bound);
  if (sparse_out_insert_cuda(idx, n, g, out.t, nullptr) != 0) return -1;
  std::vector<int64_t> keys(size_t(std::max<int64_t>(bound, 1)), -5);
  int64_t count = -3;
  if (sparse_out_collect_cuda(out.t, keys.data(), bound, &count, nullptr) != 0) return -1;
  if (dup) return 2;
  if (count < 0 || count > bound) return -2;
  if (count > max_rows) return 3;
  std::sort(keys.begin(), keys.begin() + count);
  if (sparse_out_assign_cuda(keys.data(), count, g, out.t, out_indices, nullptr) != 0) return -1;
  if (sparse_regular_map_cuda(idx, n, g, out.t, nbmap, count, nullptr) != 0) return -1;
  *M_out = count;
  return 0;
}

extern "C" int emu_sparse_transpose(const int32_t* nbmap, int64_t M, int64_t K, int64_t num_in,
                                    int32_t* inv, int32_t* flags) {
  return sparse_map_transpose_cuda(nbmap, M, K, num_in, inv, flags, nullptr);
}

// x, w (packed [K, Cin, Cout]), out: float buffers; dtype 1 / 2 runs the bf16 / fp16
// kernels on them (the emulated types are a float, unrounded: this checks their indexing).
extern "C" int emu_sparse_fwd(int dtype, int64_t M, int64_t K, int64_t N, int64_t Cin,
                              int64_t Cout, const int32_t* nbmap, const float* x,
                              const float* w, const float* bias, float* out, int32_t* bad) {
  SparseConvCudaParams p;
  p.M = M; p.K = K; p.N = N; p.Cin = Cin; p.Cout = Cout;
  p.dtype = DType(dtype);
  p.nbmap = nbmap; p.x = x; p.w = w; p.bias = bias; p.out = out; p.bad = bad;
  return sparse_conv_fwd_cuda(p, nullptr);
}

// dw [K, Cin, Cout] fp32; splits as the caller asks (the glue uses sparse_wgrad_splits).
extern "C" int emu_sparse_wgrad(int dtype, int64_t M, int64_t K, int64_t N, int64_t Cin,
                                int64_t Cout, const int32_t* nbmap, const float* x,
                                const float* g, float* dw, int64_t splits, int32_t* bad) {
  std::vector<float> ws(size_t(std::max<int64_t>(splits * K * Cin * Cout, 1)), 4321.f);
  SparseConvCudaParams p;
  p.M = M; p.K = K; p.N = N; p.Cin = Cin; p.Cout = Cout;
  p.dtype = DType(dtype);
  p.nbmap = nbmap; p.x = x; p.g = g; p.dw = dw; p.bad = bad;
  p.splits = splits;
  p.ws = splits > 1 ? ws.data() : nullptr;
  return sparse_conv_wgrad_cuda(p, nullptr);
}

extern "C" int64_t emu_sparse_wgrad_splits(int64_t M) { return sparse_wgrad_splits(M); }
