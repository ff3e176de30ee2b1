// CPU backend of sliding-window attention (swa_fwd / swa_bwd): splits the work into tile
// tasks over at::parallel_for and runs the active ISA's kernels
// (csrc/cpu/kernels/swa_kernel.cpp).
//   forward: tasks (b, h) with at least 2 heads per thread, else (b, h, query tile); each
//   writes its own o rows and lse entries.
//   backward, with at least 2 heads per thread: tasks (b, h), one key-major sweep each.
//   backward, fewer heads: (1) tasks (b, h, query tile) write delta and dq of their rows;
//   (2) tasks (b, h, key tile) write dk and dv of their rows.
// No two tasks write the same element and every sum runs in the same fixed order in both
// backward schemes (bit-identical), so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/swa.h"

namespace spikeops {
namespace {

// At least 2 heads per thread: tasks own whole heads (operands converted once per head),
// unless a head is so long that its fp32 copies (~ 4 T (3 D + 2 Dv) bytes, kept per thread
// for reuse) would pass ~24 MiB: then tiles, whose scratch does not grow with T. Both
// schemes give the same bits.
bool per_head(const SWAParams& p) {
  return p.B * p.H >= 2 * std::max<int64_t>(1, at::get_num_threads()) &&
         p.T * (p.D + p.Dv) <= (int64_t(1) << 21);
}

void cpu_swa_forward(const SWAParams& p) {
  const cpu::SWAKernels& kern = cpu::swa_kernels();
  if (per_head(p)) {
    at::parallel_for(0, p.B * p.H, 1, [&](int64_t b, int64_t e) {
      for (int64_t bh = b; bh < e; ++bh) kern.forward_head(p, bh);
    });
    return;
  }
  const int64_t tile = kern.tile(), tiles = (p.T + tile - 1) / tile;
  at::parallel_for(0, p.B * p.H * tiles, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) kern.forward_tile(p, t / tiles, (t % tiles) * tile);
  });
}

void cpu_swa_backward(const SWAParams& p) {
  const cpu::SWAKernels& kern = cpu::swa_kernels();
  const int64_t tile = kern.tile(), tiles = (p.T + tile - 1) / tile;
  const int64_t heads = p.B * p.H;
  if (per_head(p)) {
    // Enough heads for every thread: one sweep per head (5 tile products per tile pair).
    at::parallel_for(0, heads, 1, [&](int64_t b, int64_t e) {
      for (int64_t bh = b; bh < e; ++bh) kern.backward_head(p, bh);
    });
    return;
  }
  // Few heads: split each head into tiles, in two passes (7 tile products per tile pair).
  at::parallel_for(0, heads * tiles, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) kern.dq_tile(p, t / tiles, (t % tiles) * tile);
  });
  at::parallel_for(0, heads * tiles, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) kern.dkdv_tile(p, t / tiles, (t % tiles) * tile);
  });
}

const SWABackend kCpuSWABackend{cpu_swa_forward, cpu_swa_backward, cpu::pooled_empty};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) { SPIKEOPS_REGISTER_SWA_OPS(m, ::spikeops::kCpuSWABackend); }
