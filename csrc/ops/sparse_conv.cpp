// Shared argument checks of the sparse convolution ops (see sparse_conv.h).
#include "ops/sparse_conv.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "ops/common.h"

namespace spikeops {
namespace sparse {

std::string shape_str(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  if (v.size() == 1) s << ",";
  s << ")";
  return s.str();
}

std::vector<int64_t> spatial_dims(at::IntArrayRef spatial_shape) {
  TORCH_CHECK_VALUE(spatial_shape.size() >= 1 && spatial_shape.size() <= 8,
                    "spatial_shape must have 1 to 8 dims, got ", spatial_shape);
  return std::vector<int64_t>(spatial_shape.begin(), spatial_shape.end());
}

void check_indices_meta(const at::Tensor& indices, const std::vector<int64_t>& shape,
                        int64_t batch) {
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kInt, "indices must be int32, got ",
                   indices.scalar_type());
  const int64_t ndim = int64_t(shape.size());
  bool shape_ok = ndim >= 1;
  for (int64_t s : shape) shape_ok = shape_ok && s >= 1;
  TORCH_CHECK_VALUE(shape_ok, "spatial_shape must be positive ints, got ", shape_str(shape));
  TORCH_CHECK_VALUE(batch >= 1, "batch_size must be >= 1, got ", batch);
  TORCH_CHECK_VALUE(indices.dim() == 2 && indices.size(1) == ndim + 1,
                    "indices must have shape [N, ", ndim + 1, "] (batch index + ", ndim,
                    " coordinates for spatial_shape ", shape_str(shape), "), got ",
                    indices.sizes());
  // Linear keys must fit int64.
  double cells = double(batch);
  for (int64_t s : shape) cells *= double(s);
  TORCH_CHECK_VALUE(cells < 9.0e18, "batch_size * prod(spatial_shape) must fit int64");
  TORCH_CHECK_VALUE(indices.size(0) < (int64_t(1) << 31), "indices: at most 2^31 - 1 sites "
                    "(rows are int32 in the kernel maps), got ", indices.size(0));
}

int index_row_error(const int32_t* r, const std::vector<int64_t>& shape, int64_t batch) {
  const size_t ndim = shape.size();
  for (size_t d = 0; d <= ndim; ++d)
    if (r[d] < 0) return 1;
  if (r[0] >= batch) return 2;
  for (size_t d = 0; d < ndim; ++d)
    if (r[d + 1] >= shape[d]) return 3;
  return 0;
}

void raise_index_row(const int32_t* r, const std::vector<int64_t>& shape, int64_t batch) {
  const int kind = index_row_error(r, shape, batch);
  TORCH_CHECK_VALUE(kind != 1, "indices must be non-negative (batch index and coordinates)");
  TORCH_CHECK_VALUE(kind != 2, "indices has a batch index >= batch_size (", batch, ")");
  TORCH_CHECK_VALUE(false, "indices has a coordinate outside spatial_shape ", shape_str(shape));
}

void raise_duplicates() {
  TORCH_CHECK_VALUE(false, "indices has duplicate coordinates (merge them first)");
}

namespace {
std::vector<int64_t> expand(at::IntArrayRef v, size_t ndim, const char* name) {
  TORCH_CHECK_VALUE(v.size() == ndim || v.size() == 1, name, " must be an int or ", ndim,
                    " ints, got ", v);
  std::vector<int64_t> out(ndim);
  for (size_t d = 0; d < ndim; ++d) out[d] = v.size() == 1 ? v[0] : v[d];
  return out;
}
}  // namespace

MapGeometry map_geometry(const std::vector<int64_t>& shape, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool subm) {
  MapGeometry g;
  const size_t ndim = shape.size();
  g.shape = shape;
  g.k = expand(kernel_size, ndim, "kernel_size");
  g.s = expand(stride, ndim, "stride");
  g.p = expand(padding, ndim, "padding");
  g.d = expand(dilation, ndim, "dilation");
  for (size_t i = 0; i < ndim; ++i)
    TORCH_CHECK_VALUE(g.k[i] >= 1 && g.s[i] >= 1 && g.d[i] >= 1 && g.p[i] >= 0,
                      "kernel_size, stride, dilation must be >= 1 and padding >= 0");
  g.offs = {{}};
  for (int64_t kd : g.k) {
    std::vector<std::vector<int64_t>> next;
    for (const auto& o : g.offs)
      for (int64_t j = 0; j < kd && next.size() <= (size_t(1) << 20); ++j) {
        auto x = o;
        x.push_back(j);
        next.push_back(x);
      }
    g.offs.swap(next);
  }
  double K = 1;
  for (int64_t kd : g.k) K *= double(kd);
  TORCH_CHECK_VALUE(K < double(int64_t(1) << 20), "kernel_size: too many offsets (",
                    int64_t(std::min(K, 9.0e18)), ")");
  g.K = int64_t(K);
  if (subm) {
    for (size_t i = 0; i < ndim; ++i)
      TORCH_CHECK_VALUE(g.s[i] == 1, "stride must be 1 for a submanifold conv, got ", stride);
    g.out_shape = shape;
    return g;
  }
  g.out_shape.resize(ndim);
  for (size_t i = 0; i < ndim; ++i) {
    g.out_shape[i] = (shape[i] + 2 * g.p[i] - g.d[i] * (g.k[i] - 1) - 1) / g.s[i] + 1;
    TORCH_CHECK_VALUE(shape[i] + 2 * g.p[i] - g.d[i] * (g.k[i] - 1) - 1 >= 0 &&
                          g.out_shape[i] >= 1,
                      "kernel_size/stride/padding/dilation give an empty output for "
                      "spatial_shape ", shape_str(shape));
    TORCH_CHECK_VALUE(g.out_shape[i] < (int64_t(1) << 31), "kernel_size/stride/padding/"
                      "dilation give an output grid too large for int32 indices: ",
                      shape_str(g.out_shape));
  }
  return g;
}

int64_t out_sites_bound(const MapGeometry& g, int64_t n, int64_t batch_size) {
  double per_input = 1, cells = double(batch_size);
  for (size_t t = 0; t < g.k.size(); ++t) {
    const int64_t gd = std::gcd(g.d[t], g.s[t]);
    per_input *= double((g.k[t] * gd + g.s[t] - 1) / g.s[t]);
    cells *= double(g.out_shape[t]);
  }
  TORCH_CHECK_VALUE(cells < 9.0e18, "batch_size * prod(output grid ", shape_str(g.out_shape),
                    ") must fit int64");
  return int64_t(std::min(double(n) * per_input, cells));
}

void check_nbmap(const at::Tensor& nbmap, const char* name) {
  TORCH_CHECK_TYPE(nbmap.scalar_type() == at::kInt, name, " must be int32, got ",
                   nbmap.scalar_type());
  TORCH_CHECK_VALUE(nbmap.dim() == 2, name, " must be [M, K], got shape ", nbmap.sizes());
}

void raise_nbmap_range(const char* name, int64_t num_in) {
  TORCH_CHECK_VALUE(false, name, " has an entry outside [-1, ", num_in,
                    ") (the number of input rows)");
}

void raise_nbmap_twice() {
  TORCH_CHECK_VALUE(false, "nbmap: an (input row, offset) pair is used by two output "
                    "rows; not a convolution's kernel map");
}

void check_num_in(int64_t num_in) {
  TORCH_CHECK_VALUE(num_in >= 0, "num_in must be >= 0, got ", num_in);
}

void check_spikes(int64_t spikes) {
  TORCH_CHECK_VALUE(spikes >= -1 && spikes <= 1, "spikes must be -1 (auto), 0 or 1, got ",
                    spikes);
}

void check_conv_fwd(const at::Tensor& features, const at::Tensor& nbmap,
                    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    int64_t spikes, const c10::optional<at::Tensor>& nbmap_t) {
  float_dtype(features, "features");
  float_dtype(weight, "weight");
  check_nbmap(nbmap, "nbmap");
  TORCH_CHECK_TYPE(weight.scalar_type() == features.scalar_type(), "weight: dtype ",
                   weight.scalar_type(), " differs from features' ", features.scalar_type());
  TORCH_CHECK_VALUE(features.dim() == 2, "features must be [N, Cin], got shape ",
                    features.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(1) == nbmap.size(1),
                    "weight must be [Cout, K=", nbmap.size(1), ", Cin] (kernel offsets of "
                    "nbmap), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(2) == features.size(1), "features has ", features.size(1),
                    " channels but weight expects Cin=", weight.size(2));
  check_spikes(spikes);
  const int64_t N = features.size(0), K = nbmap.size(1), Cout = weight.size(0);
  if (nbmap_t.has_value()) {
    check_nbmap(*nbmap_t, "nbmap_t");
    TORCH_CHECK_VALUE(nbmap_t->size(0) == N && nbmap_t->size(1) == K, "nbmap_t must be [N=", N,
                      ", K=", K, "] (the transposed nbmap), got shape ", nbmap_t->sizes());
  }
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == Cout, "bias must be [Cout=", Cout,
                      "], got shape ", bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == features.scalar_type(), "bias: dtype ",
                     bias->scalar_type(), " differs from features' ", features.scalar_type());
  }
}

void check_conv_wgrad(const at::Tensor& grad_out, const at::Tensor& features,
                      const at::Tensor& nbmap) {
  float_dtype(features, "features");
  float_dtype(grad_out, "grad_out");
  check_nbmap(nbmap, "nbmap");
  TORCH_CHECK_VALUE(features.dim() == 2, "features must be [N, Cin], got shape ",
                    features.sizes());
  TORCH_CHECK_VALUE(grad_out.dim() == 2 && grad_out.size(0) == nbmap.size(0),
                    "grad_out must be [M=", nbmap.size(0), ", Cout], got shape ",
                    grad_out.sizes());
}

}  // namespace sparse
}  // namespace spikeops
