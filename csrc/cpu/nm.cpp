// CPU backend of the N:M ops: splits the work over at::parallel_for (each task owns a
// distinct block of the output, so results do not depend on the thread count) and runs
// the active ISA's kernels (csrc/cpu/kernels/nm_kernel.cpp). Compression and the meta
// check are plain loops: they move a few bytes per weight, once.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/nm.h"

namespace spikeops {
namespace {

float to_f32(const void* p, int64_t i, DType dt) {
  if (dt == DType::kFloat32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  if (dt == DType::kBFloat16) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return float(v);
}


// ---- meta check: every group of m bits holds exactly n, padding bits are zero -------

void cpu_validate_meta(const uint8_t* meta, int64_t rows, int64_t k, int64_t m, int64_t n) {
  const cpu::NMKernels& kern = cpu::nm_kernels();
  std::atomic<int64_t> bad_row{-1};
  at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
    if (bad_row.load(std::memory_order_relaxed) >= 0) return;
    const int64_t r = kern.first_bad_meta_row(meta, r0, r1, k, int(m), int(n));
    if (r >= 0) {
      int64_t expect = -1;
      bad_row.compare_exchange_strong(expect, r);
    }
  });
  const int64_t r = bad_row.load();
  TORCH_CHECK_VALUE(r < 0, "meta: row ", r, " does not keep exactly n = ", n,
                    " entries in every group of m = ", m,
                    " columns (or sets bits past k); meta must be the bit-packed N:M mask");
}

// ---- compression -----------------------------------------------------------------------

// The ranking key of w: |w|'s bits as an unsigned integer (monotonic in |w| for IEEE
// floats), every NaN mapped to one key above infinity, so NaN counts as the largest and
// NaNs tie with each other (the lower column wins, as between equal magnitudes).
template <typename T>
uint32_t magnitude_key(T w) {
  uint32_t bits;
  if constexpr (sizeof(T) == 4) {
    std::memcpy(&bits, &w, 4);
    bits &= 0x7fffffffu;
    return bits > 0x7f800000u ? 0x7fc00000u : bits;
  } else {  // bf16 / fp16 raw bits: the same order on their 15 magnitude bits
    uint16_t h;
    std::memcpy(&h, &w, 2);
    return h & 0x7fffu;  // NaN handled by the caller's exponent mask
  }
}

// One row: for each group of M columns keep the N largest keys (ties: lower column),
// write the mask bits (when selecting) and gather the kept values.
template <typename T, int M>
void compress_row(const NMCompressParams& p, int64_t r, uint32_t half_inf) {
  const T* w = static_cast<const T*>(p.weight) + r * p.k;
  T* out = static_cast<T*>(p.values) + r * p.kept;
  uint8_t* meta = p.meta + r * p.meta_stride;
  if (p.select) std::memset(meta, 0, size_t(p.meta_stride));
  for (int64_t c0 = 0; c0 < p.k; c0 += M) {
    uint32_t keep = 0;
    if (p.select) {
      uint32_t key[M];
      for (int i = 0; i < M; ++i) {
        key[i] = magnitude_key(w[c0 + i]);
        if (half_inf && key[i] > half_inf) key[i] = half_inf + 1;  // 16-bit NaNs tie
      }
      for (int i = 0; i < M; ++i) {
        int rank = 0;
        for (int j = 0; j < M; ++j) rank += (key[j] > key[i]) | ((key[j] == key[i]) & (j < i));
        keep |= uint32_t(rank < p.n) << i;
      }
      for (int i = 0; i < M; ++i)
        meta[(c0 + i) / 8] |= uint8_t(((keep >> i) & 1u) << ((c0 + i) % 8));
    } else {
      for (int i = 0; i < M; ++i) keep |= uint32_t((meta[(c0 + i) / 8] >> ((c0 + i) % 8)) & 1) << i;
    }
    for (uint32_t bits = keep; bits; bits &= bits - 1) *out++ = w[c0 + __builtin_ctz(bits)];
  }
}

template <typename T>
void compress_rows(const NMCompressParams& p, int64_t r0, int64_t r1) {
  // Magnitude bits of +inf in T's format (16-bit formats need the NaN tie by hand).
  const uint32_t half_inf = sizeof(T) == 4 ? 0u : (p.dtype == DType::kBFloat16 ? 0x7f80u : 0x7c00u);
  for (int64_t r = r0; r < r1; ++r) {
    switch (p.m) {
      case 2: compress_row<T, 2>(p, r, half_inf); break;
      case 4: compress_row<T, 4>(p, r, half_inf); break;
      case 8: compress_row<T, 8>(p, r, half_inf); break;
      case 16: compress_row<T, 16>(p, r, half_inf); break;
      default: compress_row<T, 32>(p, r, half_inf); break;
    }
  }
}

void cpu_compress(const NMCompressParams& p) {
  at::parallel_for(0, p.rows, std::max<int64_t>(1, (int64_t(1) << 16) / p.k),
                   [&](int64_t r0, int64_t r1) {
    if (p.dtype == DType::kFloat32) compress_rows<float>(p, r0, r1);
    else compress_rows<uint16_t>(p, r0, r1);
  });
}

// ---- GEMM drivers -------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void cpu_linear(const NMGemmParams& p) {
  const cpu::NMKernels& kern = cpu::nm_kernels();
  const int64_t threads = at::get_num_threads();
  if (kern.use_gemv(p)) {
    std::vector<float> converted;
    const float* xf = static_cast<const float*>(p.in);
    if (p.dtype != DType::kFloat32) {
      converted.resize(size_t(p.batch * p.k));
      for (int64_t i = 0; i < p.batch * p.k; ++i) converted[size_t(i)] = to_f32(p.in, i, p.dtype);
      xf = converted.data();
    }
    at::parallel_for(0, ceil_div(p.rows, 16), 1, [&](int64_t b, int64_t e) {
      kern.forward_gemv(p, xf, b * 16, std::min(p.rows, e * 16));
    });
    return;
  }
  const int64_t tb = kern.tile_batch();
  const int64_t tiles = ceil_div(p.batch, tb);
  // Split rows too when there are few batch tiles, so every thread has work.
  const int64_t splits =
      std::clamp<int64_t>(ceil_div(4 * threads, tiles), 1, std::max<int64_t>(1, p.rows / 64));
  const int64_t chunk = ceil_div(p.rows, splits);
  at::parallel_for(0, tiles * splits, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r0 = (t % splits) * chunk;
      if (r0 < p.rows) kern.forward_tile(p, (t / splits) * tb, r0, std::min(p.rows, r0 + chunk));
    }
  });
}

void cpu_grad_input(const NMGemmParams& p) {
  const cpu::NMKernels& kern = cpu::nm_kernels();
  const int64_t threads = at::get_num_threads();
  const int64_t tb = kern.tile_batch();
  const int64_t tiles = ceil_div(p.batch, tb);
  constexpr int64_t kBlock = 128;  // column splits stay multiples of the kernel's block
  const int64_t blocks = ceil_div(p.k, kBlock);
  const int64_t splits = std::clamp<int64_t>(ceil_div(4 * threads, tiles), 1, blocks);
  const int64_t chunk = ceil_div(blocks, splits) * kBlock;
  at::parallel_for(0, tiles * splits, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t c0 = (t % splits) * chunk;
      if (c0 < p.k) kern.grad_input_tile(p, (t / splits) * tb, c0, std::min(p.k, c0 + chunk));
    }
  });
}

const NMBackend kCpuNMBackend{cpu_compress, cpu_linear, cpu_grad_input, cpu::pooled_empty,
                              cpu_validate_meta};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) { SPIKEOPS_REGISTER_NM_OPS(m, ::spikeops::kCpuNMBackend); }
