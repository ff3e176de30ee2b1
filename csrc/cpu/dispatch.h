// Run-time choice of the CPU kernel variant (scalar, AVX2, AVX-512).
// Picked once from the CPU's features; SPIKEOPS_CPU_ISA=scalar|avx2|avx512
// forces one, and set_cpu_isa() switches it (the tests cover every variant so).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/neuron_params.h"
#include "common/attention_params.h"
#include "common/nm_params.h"
#include "common/recurrent_params.h"
#include "common/swa_params.h"
#include "common/scan_params.h"
#include "common/sparse_conv_params.h"

namespace spikeops {
namespace cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);       // by this CPU
Isa active_isa();
void set_active_isa(const std::string& name);  // throws on unknown/unsupported
std::vector<std::string> compiled_isas();
std::vector<std::string> supported_isas();

using NeuronRangeFn = void (*)(const NeuronParams&, int64_t begin, int64_t end);
struct NeuronKernels {
  NeuronRangeFn forward;
  NeuronRangeFn backward;
};
const NeuronKernels& neuron_kernels();  // of the active ISA

// N:M GEMM kernels (csrc/cpu/kernels/nm_kernel.cpp); csrc/cpu/nm.cpp splits the work.
struct NMKernels {
  int (*tile_batch)();                  // batch rows per tile task
  bool (*use_gemv)(const NMGemmParams&);  // small batch: the GEMV-shaped forward
  // Forward of batch rows [b0, b0 + tile_batch) x W rows [r0, r1).
  void (*forward_tile)(const NMGemmParams&, int64_t b0, int64_t r0, int64_t r1);
  // GEMV forward of every batch row x W rows [r0, r1); xf is x as fp32 [batch, k].
  void (*forward_gemv)(const NMGemmParams&, const float* xf, int64_t r0, int64_t r1);
  // Input gradient of batch rows [b0, b0 + tile_batch) x columns [c0, c1) (c0 a
  // multiple of 128).
  void (*grad_input_tile)(const NMGemmParams&, int64_t b0, int64_t c0, int64_t c1);
  // The first of rows [r0, r1) of meta [rows, ceil(k/8)] whose groups of m bits do not all
  // hold n set bits (or whose padding bits past k are set); -1 if none.
  int64_t (*first_bad_meta_row)(const uint8_t* meta, int64_t r0, int64_t r1, int64_t k, int m,
                                int n);
};
const NMKernels& nm_kernels();  // of the active ISA

// Spiking self-attention kernels (csrc/cpu/kernels/attention_kernel.cpp); csrc/cpu/attention.cpp
// splits the work.
struct SSAKernels {
  // Output rows [n0, n1) of head g (packs the head's k and v, builds KV, sums q's rows)
  // into p.out; with lif_v (p.lif) it charges the fp32 membrane potentials
  // lif_v[(n - n0) * Dv + e] with them and writes the attention LIF's spikes; returns an SSAStatus (which input, if any, holds a value that is not 0 or 1).
  int (*head_rows)(const SSAParams&, int64_t g, int64_t n0, int64_t n1, float* lif_v);
};
const SSAKernels& ssa_kernels();  // of the active ISA

// Recurrent attention kernels (csrc/cpu/kernels/recurrent_kernel.cpp); csrc/cpu/recurrent.cpp
// splits the work. RWKV: batch row b, channels [c0, c1) (at most 64). SDSA: head g,
// features [d0, d1).
struct RecurrentKernels {
  void (*rwkv_forward)(const RWKVParams&, int64_t b, int64_t c0, int64_t c1);
  void (*rwkv_backward)(const RWKVParams&, int64_t b, int64_t c0, int64_t c1);
  void (*sdsa_forward)(const SDSAParams&, int64_t g, int64_t d0, int64_t d1);
  void (*sdsa_backward)(const SDSAParams&, int64_t g, int64_t d0, int64_t d1);
};
const RecurrentKernels& recurrent_kernels();  // of the active ISA

// Sliding-window attention tile kernels (csrc/cpu/kernels/swa_kernel.cpp); csrc/cpu/swa.cpp
// splits the work. Tiles start at multiples of tile(); bh = b * H + h.
struct SWAKernels {
  int64_t (*tile)();
  void (*forward_tile)(const SWAParams&, int64_t bh, int64_t q0);  // o, lse of the rows
  void (*dq_tile)(const SWAParams&, int64_t bh, int64_t q0);       // delta, dq of the rows
  void (*dkdv_tile)(const SWAParams&, int64_t bh, int64_t k0);     // dk, dv of the key rows
  // The whole backward of head bh (delta, dq, dk, dv) in one sweep, bit-identical to
  // dq_tile over its query tiles followed by dkdv_tile over its key tiles.
  void (*backward_head)(const SWAParams&, int64_t bh);
  // The whole forward of head bh, bit-identical to forward_tile over its query tiles.
  void (*forward_head)(const SWAParams&, int64_t bh);
};
const SWAKernels& swa_kernels();  // of the active ISA

// Linear-attention scan kernels (csrc/cpu/kernels/scan_kernel.cpp); csrc/cpu/scan.cpp
// runs one task per (sequence n, query head h).
struct ScanKernels {
  void (*forward_task)(const ScanParams&, int64_t n, int64_t h);
  void (*backward_task)(const ScanParams&, int64_t n, int64_t h);
};
const ScanKernels& scan_kernels();  // of the active ISA

// Sparse convolution kernels (csrc/cpu/kernels/sparse_conv_kernel.cpp); csrc/cpu/sparse_conv.cpp
// splits the work over output rows [m0, m1): of the forward (dense GEMM or zero-skipping),
// and of the weight gradient, which accumulates into a partial dw `part` [K, Cin, CoutPad]
// per task. The CSR copy of spike features is built row range by row range.
struct SparseConvKernels {
  void (*forward_rows)(const SparseConvParams&, int64_t m0, int64_t m1);
  void (*forward_rows_skip)(const SparseConvParams&, int64_t m0, int64_t m1);
  void (*weight_grad_rows)(const SparseConvParams&, int64_t m0, int64_t m1, float* part,
                           int64_t part_row_stride);
  void (*weight_grad_rows_skip)(const SparseConvParams&, int64_t m0, int64_t m1, float* part,
                                int64_t part_row_stride);
  // Per-row non-zero counts and lane masks (ceil(C / 64) words per row); true when every
  // non-zero entry is 1.
  bool (*csr_count)(const float* x, int64_t C, int64_t r0, int64_t r1, int64_t* counts,
                    uint64_t* masks);
  void (*csr_fill)(const float* x, int64_t C, int64_t r0, int64_t r1, const int64_t* ptr,
                   const uint64_t* masks, bool binary, int32_t* idx, float* val);
};
const SparseConvKernels& sparse_conv_kernels();  // of the active ISA

}  // namespace cpu
}  // namespace spikeops
