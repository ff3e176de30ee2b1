// Plain-C++ description of one N:M structured-sparse GEMM call, shared by the CPU
// kernels (csrc/cpu/kernels) and the torch-free CUDA kernels (csrc/cuda/nm).
//
// The sparse weight W [rows, k] keeps n of every m consecutive entries along k and is
// stored as
//   values [rows, kept]        kept = k / m * n, the kept entries of each row in order;
//   meta   [rows, meta_stride] uint8, meta_stride = ceil(k / 8): bit (c % 8) of byte
//                              c / 8 is set iff W[r, c] is kept (a bit-packed mask).
// Host glue validates tensors (each group of m bits has exactly n set) and fills this
// struct; kernels only read it. All tensors are contiguous, on the kernel's device.
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

struct NMGemmParams {
  DType dtype = DType::kFloat32;  // of in, values, bias, out (accumulation is fp32)
  int32_t n = 2, m = 4;
  int64_t batch = 0;        // rows of `in` and `out` (x's leading dims, flattened)
  int64_t rows = 0;         // rows of W (out_features)
  int64_t k = 0;            // columns of W (in_features)
  int64_t kept = 0;         // k / m * n
  int64_t meta_stride = 0;  // (k + 7) / 8

  const void* values = nullptr;   // [rows, kept]
  const uint8_t* meta = nullptr;  // [rows, meta_stride]
  const void* bias = nullptr;     // [rows] or null (forward only)

  // Forward (nm_linear):            in = x [batch, k],           out = y [batch, rows]
  //                                 y = x @ W^T + bias
  // Input gradient (grad_input):    in = grad_y [batch, rows],   out = grad_x [batch, k]
  //                                 grad_x = grad_y @ W
  const void* in = nullptr;
  void* out = nullptr;
};

// nm_compress: gather the kept entries of a dense weight [rows, k] into `values`; when
// `select` is set, first choose them (the n largest |w| of each group of m, the lower
// column first on ties; NaN counts as largest) and write `meta`.
struct NMCompressParams {
  DType dtype = DType::kFloat32;
  int32_t n = 2, m = 4;
  int64_t rows = 0, k = 0, kept = 0, meta_stride = 0;
  bool select = true;          // true: write meta from magnitudes; false: read meta
  const void* weight = nullptr;  // [rows, k]
  uint8_t* meta = nullptr;       // [rows, meta_stride] (written iff select)
  void* values = nullptr;        // [rows, kept]
};

}  // namespace spikeops
