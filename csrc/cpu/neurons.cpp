// CPU backend of the neuron ops: splits the N elements over at::parallel_for
// (so torch.set_num_threads is obeyed) and runs the active ISA's kernel on each
// range. Ranges never share an element, so results do not depend on threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/neurons.h"

namespace spikeops {
namespace {

// At least ~64K element-steps per task, in whole cache lines of elements.
int64_t grain(const NeuronParams& p) {
  int64_t g = (int64_t(1) << 16) / std::max<int64_t>(1, p.T);
  return std::max<int64_t>(64, (g + 63) / 64 * 64);
}

void run(const NeuronParams& p, cpu::NeuronRangeFn fn) {
  const int64_t g = grain(p);
  // Round range boundaries to multiples of 64 elements so vectors never straddle tasks.
  const int64_t chunks = (p.N + 63) / 64;
  at::parallel_for(0, chunks, std::max<int64_t>(1, g / 64), [&](int64_t b, int64_t e) {
    fn(p, b * 64, std::min(p.N, e * 64));
  });
}

void cpu_forward(const NeuronParams& p) { run(p, cpu::neuron_kernels().forward); }
void cpu_backward(const NeuronParams& p) { run(p, cpu::neuron_kernels().backward); }

const NeuronBackend kCpuNeuronBackend{cpu_forward, cpu_backward, cpu::pooled_empty};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  SPIKEOPS_REGISTER_NEURON_OPS(m, ::spikeops::kCpuNeuronBackend);
}
