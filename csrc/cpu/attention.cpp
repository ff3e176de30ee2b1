// CPU backend of spiking self-attention (ssa_fwd): splits the work into (head, token
// block) tasks over at::parallel_for and runs the active ISA's kernel
// (csrc/cpu/kernels/attention_kernel.cpp). Each task writes only its own output rows, so
// the result does not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/attention.h"

namespace spikeops {
namespace {

void cpu_ssa_forward(const SSAParams& p) {
  const cpu::SSAKernels& kern = cpu::ssa_kernels();
  // Enough tasks for every thread: split heads into token blocks when there are few heads
  // (each block repacks its head's k and v: D * Dv * N / 64 popcounts, small next to the
  // N * D * Dv output sums), never below 32 tokens per block.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t blocks = 1;
  if (p.G < 2 * threads)
    blocks = std::max<int64_t>(1, std::min((2 * threads + p.G - 1) / p.G, p.N / 32));
  const int64_t rows = (p.N + blocks - 1) / blocks;
  std::atomic<int> bad{kSsaOk};
  at::parallel_for(0, p.G * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t g = t / blocks, n0 = (t % blocks) * rows;
      const int st = kern.head_rows(p, g, std::min(n0, p.N), std::min(p.N, n0 + rows));
      // Keep the lowest nonzero status (q < k < v): the same report for any thread count.
      int cur = bad.load();
      while (st != kSsaOk && (cur == kSsaOk || st < cur) &&
             !bad.compare_exchange_weak(cur, st)) {
      }
    }
  });
  const int st = bad.load();
  const char* name = st == kSsaBadQ ? "q" : st == kSsaBadK ? "k" : "v";
  TORCH_CHECK_VALUE(st == kSsaOk, name,
                    ": expected binary spikes (every entry exactly 0 or 1), found another "
                    "value (or NaN); ssa bit-packs its inputs and accepts only 0/1 tensors "
                    "(spikeops.ref.ssa_ref computes the same product for any values)");
}

const SSABackend kCpuSSABackend{cpu_ssa_forward, cpu::pooled_empty};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) { SPIKEOPS_REGISTER_SSA_OPS(m, ::spikeops::kCpuSSABackend); }
