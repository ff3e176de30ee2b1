// CUDA backend of the sparse convolution ops (schemas in csrc/registration.cpp; the CPU
// backend is csrc/cpu/sparse_conv.cpp). The argument checks are shared with the CPU
// (csrc/ops/sparse_conv.cpp), so both raise the same errors; the checks on the data run on
// the device and come back in one small read per check that needs the host:
//
//   sparse_conv_map       the index validation (lowest bad row, then that row's message),
//                         the duplicate flag (with the output count for a strided conv);
//   sparse_map_transpose  the out-of-range and used-twice flags;
//   sparse_conv_fwd/wgrad the out-of-range flag of nbmap (the kernels never read outside
//                         the inputs; the flag turns a bad entry into the CPU's error).
//
// These reads synchronise the stream. A strided map needs the number of output sites
// anyway; the convolution's one int read per call is the price of the CPU's guarantee that
// a bad table raises instead of returning a silently wrong result.
//
// spikes: validated as on the CPU, then ignored: the CUDA forward and weight gradient run
// the dense kernels (the zero-skipping terms are exact zeros, so the results are the same).
//
// c10/cuda/CUDAStream.h rather than ATen/cuda/CUDAContext.h: nothing here needs cuBLAS.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "cuda/sparse_conv/sparse_conv_launch.h"
#include "ops/common.h"
#include "ops/sparse_conv.h"

namespace spikeops {
namespace {

using Tensor = at::Tensor;

void check_same_device(const Tensor& t, const char* name, const Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, ": expected device ", ref.device(),
                    " (that of ", ref_name, "), got ", t.device());
}

// A device hash table of capacity sparse_table_capacity(n); the tensors own the memory.
struct DeviceTable {
  Tensor keys, vals;
  SparseHashTable t;
  DeviceTable(int64_t n, const at::TensorOptions& opts) {
    const int64_t cap = sparse_table_capacity(n);
    keys = at::empty({cap}, opts.dtype(at::kLong));
    vals = at::empty({cap}, opts.dtype(at::kInt));
    t.keys = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());
    t.vals = vals.data_ptr<int32_t>();
    t.cap = cap;
  }
};

std::tuple<Tensor, Tensor> sparse_conv_map(const Tensor& indices, at::IntArrayRef spatial_shape,
                                           int64_t batch_size, at::IntArrayRef kernel_size,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, bool subm) {
  const std::vector<int64_t> shape = sparse::spatial_dims(spatial_shape);
  const int ndim = int(shape.size());
  sparse::check_indices_meta(indices, shape, batch_size);
  c10::DeviceGuard guard(indices.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Tensor ic = indices.contiguous();
  const int32_t* idx = ic.data_ptr<int32_t>();
  const int64_t n = ic.size(0);
  const auto opts_i = ic.options().dtype(at::kInt);
  SparseMapGeom g;
  g.ndim = ndim;
  g.batch = batch_size;
  for (int t = 0; t < ndim; ++t) g.shape[t] = shape[size_t(t)];
  if (n > 0) {  // index values: the lowest failing row decides the message, as on the CPU
    Tensor first = at::empty({1}, ic.options().dtype(at::kLong));
    C10_CUDA_CHECK(sparse_validate_indices_cuda(idx, n, g, first.data_ptr<int64_t>(), stream));
    const int64_t bad = first.item<int64_t>();
    if (bad >= 0) {
      const Tensor row = ic.select(0, bad).cpu();
      sparse::raise_index_row(row.data_ptr<int32_t>(), shape, batch_size);
    }
  }
  const sparse::MapGeometry geo =
      sparse::map_geometry(shape, kernel_size, stride, padding, dilation, subm);
  const int64_t K = geo.K;
  g.K = K;
  for (int t = 0; t < ndim; ++t) {
    g.out_shape[t] = geo.out_shape[size_t(t)];
    g.k[t] = geo.k[size_t(t)];
    g.s[t] = geo.s[size_t(t)];
    g.p[t] = geo.p[size_t(t)];
    g.d[t] = geo.d[size_t(t)];
  }
  DeviceTable in_table(n, ic.options());
  Tensor dup = at::empty({1}, opts_i);
  C10_CUDA_CHECK(sparse_table_insert_cuda(idx, n, g, in_table.t, dup.data_ptr<int32_t>(),
                                          stream));
  if (subm) {
    Tensor nbmap = at::empty({n, K}, opts_i);
    C10_CUDA_CHECK(sparse_subm_map_cuda(idx, n, g, in_table.t, nbmap.data_ptr<int32_t>(),
                                        stream));
    if (dup.item<int32_t>() != 0) sparse::raise_duplicates();
    return {ic.clone(), nbmap};  // a fresh tensor: op outputs may not alias inputs
  }
  const int64_t bound = sparse::out_sites_bound(geo, n, batch_size);
  DeviceTable out_table(bound, ic.options());
  C10_CUDA_CHECK(sparse_out_insert_cuda(idx, n, g, out_table.t, stream));
  Tensor keys = at::empty({std::max<int64_t>(bound, 1)}, ic.options().dtype(at::kLong));
  Tensor count = at::empty({1}, ic.options().dtype(at::kLong));
  C10_CUDA_CHECK(sparse_out_collect_cuda(out_table.t, keys.data_ptr<int64_t>(), bound,
                                         count.data_ptr<int64_t>(), stream));
  // One read for both: the duplicate flag, then the number of output sites.
  const Tensor host = at::cat({dup.to(at::kLong), count}).cpu();
  if (host.data_ptr<int64_t>()[0] != 0) sparse::raise_duplicates();
  const int64_t M = host.data_ptr<int64_t>()[1];
  TORCH_CHECK(M >= 0 && M <= bound, "sparse_conv_map: internal error (", M,
              " output sites for a bound of ", bound, ")");
  // Batch-major, then by coordinates (the order of the linear keys), as on the CPU.
  const Tensor sorted = std::get<0>(at::sort(keys.narrow(0, 0, M))).contiguous();
  Tensor out_indices = at::empty({M, int64_t(ndim + 1)}, opts_i);
  C10_CUDA_CHECK(sparse_out_assign_cuda(sorted.data_ptr<int64_t>(), M, g, out_table.t,
                                        out_indices.data_ptr<int32_t>(), stream));
  Tensor nbmap = at::empty({M, K}, opts_i);
  C10_CUDA_CHECK(sparse_regular_map_cuda(idx, n, g, out_table.t, nbmap.data_ptr<int32_t>(), M,
                                         stream));
  return {out_indices, nbmap};
}

Tensor sparse_map_transpose(const Tensor& nbmap, int64_t num_in) {
  sparse::check_nbmap(nbmap, "nbmap");
  sparse::check_num_in(num_in);
  c10::DeviceGuard guard(nbmap.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Tensor nc = nbmap.contiguous();
  const int64_t M = nc.size(0), K = nc.size(1);
  Tensor inv = at::empty({num_in, K}, nc.options());
  Tensor flags = at::empty({2}, nc.options());
  C10_CUDA_CHECK(sparse_map_transpose_cuda(nc.data_ptr<int32_t>(), M, K, num_in,
                                           inv.data_ptr<int32_t>(), flags.data_ptr<int32_t>(),
                                           stream));
  const Tensor host = flags.cpu();
  if (host.data_ptr<int32_t>()[0] != 0) sparse::raise_nbmap_range("nbmap", num_in);
  if (host.data_ptr<int32_t>()[1] != 0) sparse::raise_nbmap_twice();
  return inv;
}

Tensor sparse_conv_fwd(const Tensor& features, const Tensor& nbmap, const Tensor& weight,
                       const c10::optional<Tensor>& bias, int64_t spikes,
                       const c10::optional<Tensor>& nbmap_t) {
  sparse::check_conv_fwd(features, nbmap, weight, bias, spikes, nbmap_t);
  check_same_device(nbmap, "nbmap", features, "features");
  check_same_device(weight, "weight", features, "features");
  if (bias.has_value()) check_same_device(*bias, "bias", features, "features");
  if (nbmap_t.has_value()) check_same_device(*nbmap_t, "nbmap_t", features, "features");
  c10::DeviceGuard guard(features.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t M = nbmap.size(0), K = nbmap.size(1), N = features.size(0);
  const int64_t Cin = weight.size(2), Cout = weight.size(0);
  // The forward grid has ceil(Cout / 64) column tiles in grid.y (at most 65535).
  TORCH_CHECK_VALUE(Cout <= 65535 * 64, "weight: Cout = ", Cout, "; the CUDA kernels take "
                    "Cout <= ", 65535 * 64);
  Tensor out = at::empty({M, Cout}, features.options());
  if (poison_outputs() && out.numel() > 0) out.fill_(std::numeric_limits<float>::quiet_NaN());
  if (out.numel() == 0) return out;
  const Tensor nc = nbmap.contiguous();
  const Tensor x = features.contiguous();
  const Tensor wp = weight.permute({1, 2, 0}).contiguous();  // [K, Cin, Cout]
  Tensor b;
  if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
  Tensor bad = at::empty({1}, nc.options());
  SparseConvCudaParams p;
  p.M = M;
  p.K = K;
  p.N = N;
  p.Cin = Cin;
  p.Cout = Cout;
  p.dtype = float_dtype(features, "features");
  p.nbmap = nc.data_ptr<int32_t>();
  p.x = x.data_ptr();
  p.w = wp.data_ptr();
  p.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.bad = bad.data_ptr<int32_t>();
  C10_CUDA_CHECK(sparse_conv_fwd_cuda(p, stream));
  if (bad.item<int32_t>() != 0) sparse::raise_nbmap_range("nbmap", N);
  return out;
}

Tensor sparse_conv_wgrad(const Tensor& grad_out, const Tensor& features, const Tensor& nbmap,
                         int64_t spikes) {
  sparse::check_conv_wgrad(grad_out, features, nbmap);
  check_same_device(features, "features", grad_out, "grad_out");
  check_same_device(nbmap, "nbmap", grad_out, "grad_out");
  c10::DeviceGuard guard(grad_out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t M = nbmap.size(0), K = nbmap.size(1), N = features.size(0);
  const int64_t Cin = features.size(1), Cout = grad_out.size(1);
  const auto out_opts = grad_out.options();
  if (K * Cin * Cout == 0) return at::zeros({Cout, K, Cin}, out_opts);
  const Tensor nc = nbmap.contiguous();
  // Both operands in one dtype: theirs when they agree, fp32 otherwise.
  const bool same = features.scalar_type() == grad_out.scalar_type();
  const Tensor x = same ? features.contiguous() : features.to(at::kFloat).contiguous();
  const Tensor g = same ? grad_out.contiguous() : grad_out.to(at::kFloat).contiguous();
  const auto fopts = out_opts.dtype(at::kFloat);
  Tensor dw = at::empty({K, Cin, Cout}, fopts);
  const int64_t splits = sparse_wgrad_splits(M);
  Tensor ws;
  if (splits > 1) ws = at::empty({splits, K, Cin, Cout}, fopts);
  if (poison_outputs()) {  // every element must be written by the kernels
    dw.fill_(std::numeric_limits<float>::quiet_NaN());
    if (ws.defined()) ws.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  Tensor bad = at::empty({1}, nc.options());
  SparseConvCudaParams p;
  p.M = M;
  p.K = K;
  p.N = N;
  p.Cin = Cin;
  p.Cout = Cout;
  p.dtype = float_dtype(x, "features");
  p.nbmap = nc.data_ptr<int32_t>();
  p.x = x.data_ptr();
  p.g = g.data_ptr();
  p.dw = dw.data_ptr<float>();
  p.ws = ws.defined() ? ws.data_ptr<float>() : nullptr;
  p.splits = splits;
  p.bad = bad.data_ptr<int32_t>();
  C10_CUDA_CHECK(sparse_conv_wgrad_cuda(p, stream));
  if (bad.item<int32_t>() != 0) sparse::raise_nbmap_range("nbmap", N);
  sparse::check_spikes(spikes);  // where the CPU checks it (picking its kernel)
  return dw.permute({2, 0, 1}).to(out_opts.dtype()).contiguous();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  m.impl("sparse_conv_map", &spikeops::sparse_conv_map);
  m.impl("sparse_map_transpose", &spikeops::sparse_map_transpose);
  m.impl("sparse_conv_fwd", &spikeops::sparse_conv_fwd);
  m.impl("sparse_conv_wgrad", &spikeops::sparse_conv_wgrad);
}
