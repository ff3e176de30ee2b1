// Device-agnostic argument checks of the sparse convolution ops, shared by the CPU backend
// (csrc/cpu/sparse_conv.cpp) and the CUDA glue (csrc/cuda/glue/sparse_conv.cpp), so both
// raise the same errors (those of spikeops.ref.sparse_conv) in the same order. The value
// checks that need the data (index ranges, duplicates, nbmap entries) run on each device;
// their messages come from here.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace spikeops {
namespace sparse {

std::string shape_str(const std::vector<int64_t>& v);

// spatial_shape as a vector (1 to 8 dims, else ValueError).
std::vector<int64_t> spatial_dims(at::IntArrayRef spatial_shape);

// dtype int32, shape positivity, batch_size >= 1, indices [N, ndim + 1], keys fit int64:
// everything but the device and the values.
void check_indices_meta(const at::Tensor& indices, const std::vector<int64_t>& shape,
                        int64_t batch);

// Which check an index row fails: 0 none, 1 negative, 2 batch >= batch_size, 3 outside
// spatial_shape (the first that applies).
int index_row_error(const int32_t* row, const std::vector<int64_t>& shape, int64_t batch);
// Raises the ValueError of a failing row (index_row_error(row) != 0).
[[noreturn]] void raise_index_row(const int32_t* row, const std::vector<int64_t>& shape,
                                  int64_t batch);
[[noreturn]] void raise_duplicates();

// Kernel geometry of a conv: expanded kernel_size / stride / padding / dilation, the
// offsets (row-major over the kernel dims), K, and the output grid (= shape for subm).
struct MapGeometry {
  std::vector<int64_t> shape, k, s, p, d, out_shape;
  std::vector<std::vector<int64_t>> offs;
  int64_t K = 0;
};
MapGeometry map_geometry(const std::vector<int64_t>& shape, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, bool subm);

// Capacity bound of a regular conv's output-site table: an input site reaches at most
// prod_t ceil(k_t * gcd(d_t, s_t) / s_t) output sites (the offsets j with j d_t = x + p_t
// mod s_t), and there are at most batch * prod(out_shape) sites.
int64_t out_sites_bound(const MapGeometry& g, int64_t n, int64_t batch_size);

void check_nbmap(const at::Tensor& nbmap, const char* name);
[[noreturn]] void raise_nbmap_range(const char* name, int64_t num_in);
[[noreturn]] void raise_nbmap_twice();
void check_num_in(int64_t num_in);
void check_spikes(int64_t spikes);

// sparse_conv_fwd's shape / dtype checks (not the device, not the nbmap values).
void check_conv_fwd(const at::Tensor& features, const at::Tensor& nbmap,
                    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    int64_t spikes, const c10::optional<at::Tensor>& nbmap_t);
// sparse_conv_wgrad's shape / dtype checks.
void check_conv_wgrad(const at::Tensor& grad_out, const at::Tensor& features,
                      const at::Tensor& nbmap);

}  // namespace sparse
}  // namespace spikeops
