// CPU backend of the sparse convolution ops (schemas in csrc/registration.cpp):
//
//   sparse_conv_map       kernel map (output-major neighbour table) of a submanifold or a
//                         regular (strided) conv, built with an open-addressing hash table
//   sparse_map_transpose  the input-major table of a map (input gradient, inverse conv)
//   sparse_conv_fwd       out = gather-GEMM-scatter over a table (+ bias), fp32 accumulation
//   sparse_conv_wgrad     the weight gradient over a table
//
// The argument checks shared with the CUDA backend (csrc/cuda/glue/sparse_conv.cpp) are in
// csrc/ops/sparse_conv.cpp; the value checks (index ranges, duplicates, nbmap entries) run
// here on the data.
//
// Hash table: keys are the batch-major linearised coordinates ((b * s0 + c0) * s1 + c1)...
// (int64), capacity a power of two >= 2 N, linear probing, filled in parallel with a
// compare-and-swap per slot (a slot already holding the same key is a duplicate site, which
// is an error). Lookups only read. Which slot a key lands in may depend on thread timing,
// but every lookup's answer does not, so the tables are deterministic.
//
// Parallelisation: tables are filled over output rows (submanifold) or input rows (regular
// conv: each (output row, offset) entry has exactly one possible writer, so no conflicts);
// the convolution over blocks of output rows; the weight gradient over a fixed number of
// output-row ranges (a function of the shapes), whose partial sums are added in range order.
// No float atomics anywhere: results do not depend on the threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <sstream>
#include <vector>

#include "common/sparse_conv_params.h"
#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/common.h"
#include "ops/sparse_conv.h"

namespace spikeops {
namespace {

using Tensor = at::Tensor;
constexpr int64_t kEmpty = -1;

inline uint64_t hash64(int64_t key) {
  uint64_t x = uint64_t(key);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Open-addressing hash map int64 key -> int32 value; insert is thread-safe.
struct HashMap {
  std::vector<int64_t> keys;
  std::vector<int32_t> vals;
  uint64_t mask = 0;

  explicit HashMap(int64_t n) {
    uint64_t cap = 16;
    while (cap < uint64_t(2 * std::max<int64_t>(n, 1))) cap <<= 1;
    keys.assign(cap, kEmpty);
    vals.assign(cap, -1);
    mask = cap - 1;
  }
  // Inserts key; returns its slot, and sets `existed` when it was already there.
  int64_t insert(int64_t key, bool& existed) {
    uint64_t h = hash64(key) & mask;
    for (;;) {
      int64_t expected = kEmpty;
      if (__atomic_compare_exchange_n(&keys[h], &expected, key, false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
        existed = false;
        return int64_t(h);
      }
      if (expected == key) {
        existed = true;
        return int64_t(h);
      }
      h = (h + 1) & mask;
    }
  }
  int32_t find(int64_t key) const {
    uint64_t h = hash64(key) & mask;
    for (;;) {
      const int64_t k = keys[h];
      if (k == key) return vals[h];
      if (k == kEmpty) return -1;
      h = (h + 1) & mask;
    }
  }
};

// Validates indices against (spatial_shape, batch_size), the messages of
// spikeops.ref.sparse_conv.check_indices (the lowest bad row decides which one).
void check_indices(const Tensor& indices, const std::vector<int64_t>& shape, int64_t batch) {
  sparse::check_indices_meta(indices, shape, batch);
  TORCH_CHECK_VALUE(indices.device().is_cpu(), "indices must be a CPU tensor here, got ",
                    indices.device());
  const int64_t ndim = int64_t(shape.size());
  const int64_t n = indices.size(0);
  const Tensor ic = indices.contiguous();
  const int32_t* idx = ic.data_ptr<int32_t>();
  // The lowest failing row decides the message.
  std::atomic<int64_t> first{std::numeric_limits<int64_t>::max()};
  at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int k = sparse::index_row_error(idx + i * (ndim + 1), shape, batch);
      if (k) {
        int64_t cur = first.load();
        while (i < cur && !first.compare_exchange_weak(cur, i)) {
        }
        break;
      }
    }
  });
  const int64_t bad = first.load();
  if (bad != std::numeric_limits<int64_t>::max())
    sparse::raise_index_row(idx + bad * (ndim + 1), shape, batch);
}

inline int64_t linear_key(int64_t b, const int64_t* c, const std::vector<int64_t>& shape) {
  int64_t key = b;
  for (size_t d = 0; d < shape.size(); ++d) key = key * shape[d] + c[d];
  return key;
}

// Fills a map of the rows of idx [n, ndim + 1]; raises on a duplicate site.
void fill_map(HashMap& map, const int32_t* idx, int64_t n, const std::vector<int64_t>& shape) {
  const size_t ndim = shape.size();
  std::atomic<bool> dup{false};
  at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
    int64_t c[8];
    for (int64_t i = b; i < e; ++i) {
      const int32_t* r = idx + i * int64_t(ndim + 1);
      for (size_t d = 0; d < ndim; ++d) c[d] = r[d + 1];
      bool existed;
      const int64_t slot = map.insert(linear_key(r[0], c, shape), existed);
      if (existed) dup.store(true);
      else map.vals[size_t(slot)] = int32_t(i);
    }
  });
  if (dup.load()) sparse::raise_duplicates();
}

std::tuple<Tensor, Tensor> sparse_conv_map(const Tensor& indices, at::IntArrayRef spatial_shape,
                                           int64_t batch_size, at::IntArrayRef kernel_size,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, bool subm) {
  const std::vector<int64_t> shape = sparse::spatial_dims(spatial_shape);
  const size_t ndim = shape.size();
  check_indices(indices, shape, batch_size);
  const sparse::MapGeometry geo =
      sparse::map_geometry(shape, kernel_size, stride, padding, dilation, subm);
  const auto& k = geo.k;
  const auto& s = geo.s;
  const auto& p = geo.p;
  const auto& d = geo.d;
  const auto& offs = geo.offs;
  const int64_t K = geo.K;
  const Tensor ic = indices.contiguous();
  const int32_t* idx = ic.data_ptr<int32_t>();
  const int64_t n = ic.size(0);
  const auto opts_i = indices.options().dtype(at::kInt);

  if (subm) {
    HashMap map(n);
    fill_map(map, idx, n, shape);
    Tensor nbmap = at::empty({n, K}, opts_i);
    int32_t* nb = nbmap.data_ptr<int32_t>();
    at::parallel_for(0, n, 1024, [&](int64_t b, int64_t e) {
      int64_t q[8];
      for (int64_t m = b; m < e; ++m) {
        const int32_t* r = idx + m * int64_t(ndim + 1);
        for (int64_t j = 0; j < K; ++j) {
          bool ok = true;
          for (size_t t = 0; t < ndim; ++t) {
            q[t] = r[t + 1] + (offs[size_t(j)][t] - k[t] / 2) * d[t];
            ok = ok && q[t] >= 0 && q[t] < shape[t];
          }
          nb[m * K + j] = ok ? map.find(linear_key(r[0], q, shape)) : -1;
        }
      }
    });
    return {ic.clone(), nbmap};  // a fresh tensor: op outputs may not alias inputs
  }

  const std::vector<int64_t>& out_shape = geo.out_shape;
  {  // duplicates in the input are an error for every conv
    HashMap in_map(n);
    fill_map(in_map, idx, n, shape);
  }
  // Output site of input row i through offset j, or false.
  auto out_coord = [&](const int32_t* r, int64_t j, int64_t* o) {
    for (size_t t = 0; t < ndim; ++t) {
      const int64_t num = r[t + 1] + p[t] - offs[size_t(j)][t] * d[t];
      if (num < 0 || num % s[t] != 0) return false;
      o[t] = num / s[t];
      if (o[t] >= out_shape[t]) return false;
    }
    return true;
  };
  const int64_t bound = sparse::out_sites_bound(geo, n, batch_size);
  HashMap out_map(bound);
  at::parallel_for(0, n, 1024, [&](int64_t b, int64_t e) {
    int64_t o[8];
    for (int64_t i = b; i < e; ++i) {
      const int32_t* r = idx + i * int64_t(ndim + 1);
      for (int64_t j = 0; j < K; ++j)
        if (out_coord(r, j, o)) {
          bool existed;
          out_map.insert(linear_key(r[0], o, out_shape), existed);
        }
    }
  });
  std::vector<int64_t> out_keys;
  for (int64_t key : out_map.keys)
    if (key != kEmpty) out_keys.push_back(key);
  std::sort(out_keys.begin(), out_keys.end());  // batch-major, then by coordinates
  const int64_t M = int64_t(out_keys.size());
  Tensor out_indices = at::empty({M, int64_t(ndim + 1)}, opts_i);
  int32_t* oi = out_indices.data_ptr<int32_t>();
  at::parallel_for(0, M, 4096, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      int64_t rest = out_keys[size_t(m)];
      for (size_t t = ndim; t-- > 0;) {
        oi[m * int64_t(ndim + 1) + int64_t(t) + 1] = int32_t(rest % out_shape[t]);
        rest /= out_shape[t];
      }
      oi[m * int64_t(ndim + 1)] = int32_t(rest);
      bool existed;
      out_map.vals[size_t(out_map.insert(out_keys[size_t(m)], existed))] = int32_t(m);
    }
  });
  Tensor nbmap = at::full({M, K}, -1, opts_i);
  int32_t* nb = nbmap.data_ptr<int32_t>();
  at::parallel_for(0, n, 1024, [&](int64_t b, int64_t e) {
    int64_t o[8];
    for (int64_t i = b; i < e; ++i) {
      const int32_t* r = idx + i * int64_t(ndim + 1);
      for (int64_t j = 0; j < K; ++j)
        if (out_coord(r, j, o)) nb[int64_t(out_map.find(linear_key(r[0], o, out_shape))) * K + j] =
                                    int32_t(i);
    }
  });
  return {out_indices, nbmap};
}

using sparse::check_nbmap;

// Raises unless every entry of nbmap is in [-1, num_in).
void check_nbmap_range(const int32_t* nb, int64_t count, int64_t num_in, const char* name) {
  std::atomic<bool> bad{false};
  at::parallel_for(0, count, 1 << 16, [&](int64_t b, int64_t e) {
    bool local = false;
    for (int64_t i = b; i < e; ++i) local |= nb[i] < -1 || nb[i] >= num_in;
    if (local) bad.store(true);
  });
  if (bad.load()) sparse::raise_nbmap_range(name, num_in);
}

Tensor sparse_map_transpose(const Tensor& nbmap, int64_t num_in) {
  check_nbmap(nbmap, "nbmap");
  sparse::check_num_in(num_in);
  const Tensor nc = nbmap.contiguous();
  const int64_t M = nc.size(0), K = nc.size(1);
  const int32_t* nb = nc.data_ptr<int32_t>();
  check_nbmap_range(nb, M * K, num_in, "nbmap");
  Tensor inv = at::full({num_in, K}, -1, nbmap.options());
  int32_t* iv = inv.data_ptr<int32_t>();
  std::atomic<bool> twice{false};
  at::parallel_for(0, M, 1024, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m)
      for (int64_t j = 0; j < K; ++j) {
        const int32_t i = nb[m * K + j];
        if (i < 0) continue;
        // Two outputs naming the same (input, offset) cannot come from a conv map.
        int32_t expected = -1;
        if (!__atomic_compare_exchange_n(&iv[int64_t(i) * K + j], &expected, int32_t(m), false,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
          twice.store(true);
      }
  });
  if (twice.load()) sparse::raise_nbmap_twice();
  return inv;
}

Tensor as_f32(const Tensor& t) { return t.scalar_type() == at::kFloat ? t.contiguous()
                                                                       : t.to(at::kFloat).contiguous(); }

// The non-zero entries of x [N, C] (fp32, contiguous) in CSR form for the zero-skipping
// kernels: (row pointers int64 [N + 1], channels int32, values fp32), channels ascending.
// Built only when the skipping path is chosen: spikes 1 always, 0 never, -1 (auto) when at
// most 1/ratio of the entries are non-zero (counted in the same pass).
struct Csr {
  Tensor ptr, idx, val;
  bool used = false;
  bool binary = false;  // every non-zero value is 1
};
Csr spike_csr(const Tensor& x, int64_t spikes, int64_t ratio) {
  sparse::check_spikes(spikes);
  Csr out;
  if (spikes == 0 || x.numel() == 0) return out;
  const int64_t n = x.size(0), c = x.size(1);
  const float* xp = x.data_ptr<float>();
  const auto& kern = cpu::sparse_conv_kernels();
  out.ptr = at::empty({n + 1}, x.options().dtype(at::kLong));
  int64_t* ptr = out.ptr.data_ptr<int64_t>();
  ptr[0] = 0;
  // The count pass also keeps each row's non-zero lanes as bits and finds out whether the
  // values are all 1, so the fill pass of binary spikes does not read x again.
  const Tensor masks = cpu::pooled_empty({std::max<int64_t>(n * ((c + 63) / 64), 1)},
                                         x.options().dtype(at::kLong));
  auto* mp = reinterpret_cast<uint64_t*>(masks.data_ptr<int64_t>());
  std::atomic<bool> binary{true};
  at::parallel_for(0, n, 2048, [&](int64_t b, int64_t e) {
    if (!kern.csr_count(xp, c, b, e, ptr + 1, mp)) binary.store(false);
  });
  for (int64_t i = 0; i < n; ++i) ptr[i + 1] += ptr[i];
  if (spikes == -1 && ptr[n] * ratio > x.numel()) return out;
  // Pooled: fresh pages would cost more in first-touch faults than filling them.
  out.idx = cpu::pooled_empty({std::max<int64_t>(ptr[n], 1)}, x.options().dtype(at::kInt));
  out.val = cpu::pooled_empty({std::max<int64_t>(ptr[n], 1)}, x.options());
  int32_t* idx = out.idx.data_ptr<int32_t>();
  float* val = out.val.data_ptr<float>();
  out.binary = binary.load();
  at::parallel_for(0, n, 2048, [&](int64_t b, int64_t e) {
    kern.csr_fill(xp, c, b, e, ptr, mp, out.binary, idx, val);
  });
  out.used = true;
  return out;
}

Tensor sparse_conv_fwd(const Tensor& features, const Tensor& nbmap, const Tensor& weight,
                       const c10::optional<Tensor>& bias, int64_t spikes,
                       const c10::optional<Tensor>& nbmap_t) {
  sparse::check_conv_fwd(features, nbmap, weight, bias, spikes, nbmap_t);
  for (const Tensor* t : {&features, &nbmap, &weight})
    TORCH_CHECK_VALUE(t->device().is_cpu(), "sparse_conv_fwd: expected CPU tensors");
  const int64_t M = nbmap.size(0), K = nbmap.size(1), N = features.size(0);
  const int64_t Cin = weight.size(2), Cout = weight.size(0);
  Tensor b;
  if (bias.has_value()) b = as_f32(*bias);
  // Pooled: a fresh 25 MB output costs more in first-touch page faults than a fifth of
  // the convolution here (DESIGN.md, "fresh memory is expensive").
  Tensor out = cpu::pooled_empty({M, Cout}, features.options());
  if (poison_outputs() && out.numel() > 0) out.fill_(std::numeric_limits<float>::quiet_NaN());
  if (out.numel() == 0) return out;
  const Tensor nc = nbmap.contiguous();
  check_nbmap_range(nc.data_ptr<int32_t>(), M * K, N, "nbmap");
  const Tensor x = as_f32(features);
  const int64_t pad = (Cout + 15) / 16 * 16;
  const Csr csr = spike_csr(x, spikes, 4);
  const bool skip = csr.used;
  Tensor wp = at::zeros({K, Cin, pad}, weight.options().dtype(at::kFloat));
  wp.narrow(2, 0, Cout).copy_(weight.permute({1, 2, 0}));
  SparseConvParams p;
  p.M = M;
  p.K = K;
  p.Cin = Cin;
  p.Cout = Cout;
  p.CoutPad = pad;
  p.nbmap = nc.data_ptr<int32_t>();
  p.x = x.data_ptr<float>();
  p.w = wp.data_ptr<float>();
  p.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  p.out_dtype = float_dtype(features, "features");
  p.out = out.data_ptr();
  if (skip) {
    p.csr_ptr = csr.ptr.data_ptr<int64_t>();
    p.csr_idx = csr.idx.data_ptr<int32_t>();
    p.csr_val = csr.val.data_ptr<float>();
    p.csr_binary = csr.binary;
  }
  const auto& kern = cpu::sparse_conv_kernels();
  const int64_t rows = 96;
  at::parallel_for(0, (M + rows - 1) / rows, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m0 = t * rows, m1 = std::min(M, m0 + rows);
      if (skip) kern.forward_rows_skip(p, m0, m1);
      else kern.forward_rows(p, m0, m1);
    }
  });
  return out;
}

Tensor sparse_conv_wgrad(const Tensor& grad_out, const Tensor& features, const Tensor& nbmap,
                         int64_t spikes) {
  sparse::check_conv_wgrad(grad_out, features, nbmap);
  const int64_t M = nbmap.size(0), K = nbmap.size(1), N = features.size(0);
  const int64_t Cin = features.size(1), Cout = grad_out.size(1);
  Tensor dw = at::empty({K, Cin, Cout}, features.options().dtype(at::kFloat));
  const auto out_opts = grad_out.options();
  if (dw.numel() == 0) return at::zeros({Cout, K, Cin}, out_opts);
  const Tensor nc = nbmap.contiguous();
  const int32_t* nb = nc.data_ptr<int32_t>();
  check_nbmap_range(nb, M * K, N, "nbmap");
  const Tensor x = as_f32(features);
  const int64_t pad = (Cout + 15) / 16 * 16;
  Tensor g = as_f32(grad_out);
  if (pad != Cout) {
    Tensor gp = at::zeros({M, pad}, g.options());
    gp.narrow(1, 0, Cout).copy_(g);
    g = gp;
  }
  SparseConvParams p;
  p.M = M;
  p.K = K;
  p.Cin = Cin;
  p.Cout = Cout;
  p.CoutPad = pad;
  p.nbmap = nb;
  p.x = x.data_ptr<float>();
  const Csr csr = spike_csr(x, spikes, 4);
  const bool skip = csr.used;
  if (skip) {
    p.csr_ptr = csr.ptr.data_ptr<int64_t>();
    p.csr_idx = csr.idx.data_ptr<int32_t>();
    p.csr_val = csr.val.data_ptr<float>();
    p.csr_binary = csr.binary;
  }
  p.g = g.data_ptr<float>();
  // Tasks own ranges of output rows and accumulate partial weight gradients, summed in task
  // order at the end. The number of tasks depends on the shapes only (not on the threads),
  // so the result is the same for any thread count.
  // Partial rows padded by one vector: rows 256 B apart alias in the low address bits
  // (4K aliasing between the scatter's loads and stores): ~8 % slower unpadded.
  const int64_t ldp = pad + 16;
  const int64_t part_elems = K * Cin * ldp;
  int64_t tasks = std::min<int64_t>(16, std::max<int64_t>(1, (M + 4095) / 4096));
  tasks = std::max<int64_t>(1, std::min<int64_t>(tasks, (int64_t(64) << 20) / (4 * part_elems)));
  Tensor parts = at::zeros({tasks, part_elems}, x.options());
  float* pp = parts.data_ptr<float>();
  const int64_t step = (M + tasks - 1) / tasks;
  const auto& kern = cpu::sparse_conv_kernels();
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m0 = std::min(M, t * step), m1 = std::min(M, m0 + step);
      if (m0 < m1)
        (skip ? kern.weight_grad_rows_skip : kern.weight_grad_rows)(p, m0, m1,
                                                                    pp + t * part_elems, ldp);
    }
  });
  float* d = dw.data_ptr<float>();
  at::parallel_for(0, K * Cin, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t o = 0; o < Cout; ++o) {
        float acc = pp[r * ldp + o];
        for (int64_t t = 1; t < tasks; ++t) acc += pp[t * part_elems + r * ldp + o];
        d[r * Cout + o] = acc;
      }
  });
  return dw.permute({2, 0, 1}).to(out_opts.dtype()).contiguous();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("sparse_conv_map", &spikeops::sparse_conv_map);
  m.impl("sparse_map_transpose", &spikeops::sparse_map_transpose);
  m.impl("sparse_conv_fwd", &spikeops::sparse_conv_fwd);
  m.impl("sparse_conv_wgrad", &spikeops::sparse_conv_wgrad);
}
