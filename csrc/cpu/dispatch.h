// Run-time choice of the CPU kernel variant (scalar, AVX2, AVX-512).
// Picked once from the CPU's features; SPIKEOPS_CPU_ISA=scalar|avx2|avx512
// forces one, and set_cpu_isa() switches it (the tests cover every variant so).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/neuron_params.h"

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

}  // namespace cpu
}  // namespace spikeops
