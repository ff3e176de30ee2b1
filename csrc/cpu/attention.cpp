// CPU backend of spiking self-attention (ssa_fwd): splits the work into (head, token
// block) tasks over at::parallel_for and runs the active ISA's kernel
// (csrc/cpu/kernels/attention_kernel.cpp). Each task writes only its own output rows, so
// the result does not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/attention.h"

namespace spikeops {
namespace {

// Fused attention LIF over T for rows [n0, n1) of head position bh: the kernel charges the
// membrane potentials with each step's rows and writes the spikes.
int lif_rows(const cpu::SSAKernels& kern, const SSAParams& p, int64_t bh, int64_t n0,
             int64_t n1) {
  thread_local std::vector<float> v;
  const int64_t heads = p.G / p.T;
  v.assign(size_t((n1 - n0) * p.Dv), p.v_reset);
  for (int64_t t = 0; t < p.T; ++t) {
    const int st = kern.head_rows(p, t * heads + bh, n0, n1, v.data());
    if (st != kSsaOk) return st;
  }
  return kSsaOk;
}

void cpu_ssa_forward(const SSAParams& p) {
  const cpu::SSAKernels& kern = cpu::ssa_kernels();
  // Enough tasks for every thread: split heads into token blocks when there are few heads
  // (each block repacks its head's k and v: D * Dv * N / 64 popcounts, small next to the
  // N * D * Dv output sums), never below 32 tokens per block. With the fused LIF a task
  // owns its rows of one head position for all T steps.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t heads = p.lif ? p.G / p.T : p.G;
  int64_t blocks = 1;
  if (heads < 2 * threads)
    blocks = std::max<int64_t>(1, std::min((2 * threads + heads - 1) / heads, p.N / 32));
  const int64_t rows = (p.N + blocks - 1) / blocks;
  std::atomic<int> bad{kSsaOk};
  at::parallel_for(0, heads * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t g = t / blocks, n0 = std::min(p.N, (t % blocks) * rows);
      const int64_t n1 = std::min(p.N, n0 + rows);
      const int st = p.lif ? lif_rows(kern, p, g, n0, n1) : kern.head_rows(p, g, n0, n1, nullptr);
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
