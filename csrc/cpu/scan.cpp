// CPU backend of the linear-attention scans (linear_scan_fwd / linear_scan_bwd): one task
// per (sequence, query head) pair over at::parallel_for, each running the active ISA's
// kernel (csrc/cpu/kernels/scan_kernel.cpp). A task writes only its own rows of o and of
// the per-query-head fp32 gradients (the glue sums GQA groups afterwards), so results do
// not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/scan.h"

namespace spikeops {
namespace {

template <bool kForward>
void run_tasks(const ScanParams& p) {
  const cpu::ScanKernels& kern = cpu::scan_kernels();
  at::parallel_for(0, p.N * p.Hq, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      if (kForward) kern.forward_task(p, t / p.Hq, t % p.Hq);
      else kern.backward_task(p, t / p.Hq, t % p.Hq);
    }
  });
}

const ScanBackend kCpuScanBackend{run_tasks<true>, run_tasks<false>, cpu::pooled_empty};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  SPIKEOPS_REGISTER_SCAN_OPS(m, ::spikeops::kCpuScanBackend);
}
