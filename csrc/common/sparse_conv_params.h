// Plain-C++ description of one sparse-convolution GEMM call, shared by the CPU kernels
// (csrc/cpu/kernels/sparse_conv_kernel.cpp) and any future device kernel.
//
// The kernel map is an output-major neighbour table nbmap [M, K] int32: nbmap[m, k] is the
// input row that feeds output row m through kernel offset k, or -1. Then
//
//   out[m, o] = bias[o] + sum_k sum_c x[nbmap[m, k], c] * w[k, c, o]      (forward)
//
// with the sum over k ascending and, inside one offset, over c ascending (one fp32 FMA per
// term), for every path: the dense register-tiled GEMM and the zero-skipping path give the
// same bits. The input gradient is the same call on the transposed table and the weight
// transposed per offset; the weight gradient is
//
//   dw[k, c, o] = sum_m x[nbmap[m, k], c] * g[m, o]                    (m ascending)
//
// Host glue validates shapes, converts x / g to fp32, packs w as fp32 [K, Cin, CoutPad]
// (CoutPad a multiple of 64 floats, zero padded) and fills this struct.
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

struct SparseConvParams {
  int64_t M = 0;        // output rows
  int64_t K = 0;        // kernel offsets
  int64_t Cin = 0;
  int64_t Cout = 0;
  int64_t CoutPad = 0;  // row stride of w and of the kernels' fp32 scratch
  const int32_t* nbmap = nullptr;  // [M, K]
  const float* x = nullptr;        // [N, Cin] fp32
  const float* w = nullptr;        // [K, Cin, CoutPad] fp32
  const float* bias = nullptr;     // [Cout] fp32 or null
  DType out_dtype = DType::kFloat32;
  void* out = nullptr;             // [M, Cout] in out_dtype
  // Zero-skipping kernels: the non-zero entries of x in CSR form, row i's entries are
  // [csr_ptr[i], csr_ptr[i + 1]) in ascending channel order (channel csr_idx, value csr_val).
  const int64_t* csr_ptr = nullptr;  // [N + 1]
  const int32_t* csr_idx = nullptr;
  const float* csr_val = nullptr;
  bool csr_binary = false;           // every csr_val is 1 (binary spikes)
  // Weight gradient: g [M, Cout] fp32; dw [K, Cin, Cout] fp32 (written by the tasks).
  const float* g = nullptr;
  float* dw = nullptr;
};

}  // namespace spikeops
