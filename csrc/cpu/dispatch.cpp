#include "cpu/dispatch.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

namespace spikeops {
namespace cpu {

#define SPIKEOPS_DECLARE_ISA(ns)                                               \
  namespace ns {                                                               \
  void neuron_forward(const NeuronParams&, int64_t, int64_t);                  \
  void neuron_backward(const NeuronParams&, int64_t, int64_t);                 \
  int nm_tile_batch();                                                         \
  bool nm_use_gemv(const NMGemmParams&);                                       \
  void nm_forward_tile(const NMGemmParams&, int64_t, int64_t, int64_t);        \
  void nm_forward_gemv(const NMGemmParams&, const float*, int64_t, int64_t);   \
  void nm_grad_input_tile(const NMGemmParams&, int64_t, int64_t, int64_t);     \
  int64_t nm_first_bad_meta_row(const uint8_t*, int64_t, int64_t, int64_t, int, int); \
  int ssa_head_rows(const SSAParams&, int64_t, int64_t, int64_t, float*);      \
  void rwkv_forward(const RWKVParams&, int64_t, int64_t, int64_t);             \
  void rwkv_backward(const RWKVParams&, int64_t, int64_t, int64_t);            \
  void sdsa_forward(const SDSAParams&, int64_t, int64_t, int64_t);             \
  void sdsa_backward(const SDSAParams&, int64_t, int64_t, int64_t);            \
  int64_t swa_tile();                                                          \
  void swa_forward_tile(const SWAParams&, int64_t, int64_t);                   \
  void swa_dq_tile(const SWAParams&, int64_t, int64_t);                        \
  void swa_dkdv_tile(const SWAParams&, int64_t, int64_t);                      \
  void scan_forward_task(const ScanParams&, int64_t, int64_t);                 \
  void scan_backward_task(const ScanParams&, int64_t, int64_t);                \
  void swa_backward_head(const SWAParams&, int64_t);                           \
  void swa_forward_head(const SWAParams&, int64_t);                            \
  void sparse_conv_rows(const SparseConvParams&, int64_t, int64_t);            \
  void sparse_conv_rows_skip(const SparseConvParams&, int64_t, int64_t);       \
  void sparse_conv_wgrad_rows(const SparseConvParams&, int64_t, int64_t, float*, int64_t); \
  void sparse_conv_wgrad_rows_skip(const SparseConvParams&, int64_t, int64_t, float*, int64_t); \
  bool sparse_csr_count(const float*, int64_t, int64_t, int64_t, int64_t*, uint64_t*); \
  void sparse_csr_fill(const float*, int64_t, int64_t, int64_t, const int64_t*,  \
                       const uint64_t*, bool, int32_t*, float*);                 \
  }
SPIKEOPS_DECLARE_ISA(scalar)
SPIKEOPS_DECLARE_ISA(avx2)
SPIKEOPS_DECLARE_ISA(avx512)
#undef SPIKEOPS_DECLARE_ISA

namespace {

const NeuronKernels kNeuronKernels[] = {
    {scalar::neuron_forward, scalar::neuron_backward},
    {avx2::neuron_forward, avx2::neuron_backward},
    {avx512::neuron_forward, avx512::neuron_backward},
};

#define SPIKEOPS_NM_KERNELS(ns)                                                  \
  { ns::nm_tile_batch, ns::nm_use_gemv, ns::nm_forward_tile, ns::nm_forward_gemv,  \
    ns::nm_grad_input_tile, ns::nm_first_bad_meta_row }
const NMKernels kNMKernels[] = {
    SPIKEOPS_NM_KERNELS(scalar), SPIKEOPS_NM_KERNELS(avx2), SPIKEOPS_NM_KERNELS(avx512)};
#undef SPIKEOPS_NM_KERNELS

const SSAKernels kSSAKernels[] = {
    {scalar::ssa_head_rows}, {avx2::ssa_head_rows}, {avx512::ssa_head_rows}};

#define SPIKEOPS_RECURRENT_KERNELS(ns) \
  { ns::rwkv_forward, ns::rwkv_backward, ns::sdsa_forward, ns::sdsa_backward }
const RecurrentKernels kRecurrentKernels[] = {SPIKEOPS_RECURRENT_KERNELS(scalar),
                                              SPIKEOPS_RECURRENT_KERNELS(avx2),
                                              SPIKEOPS_RECURRENT_KERNELS(avx512)};
#undef SPIKEOPS_RECURRENT_KERNELS
#define SPIKEOPS_SWA_KERNELS(ns) \
  { ns::swa_tile, ns::swa_forward_tile, ns::swa_dq_tile, ns::swa_dkdv_tile, \
    ns::swa_backward_head, ns::swa_forward_head }
const SWAKernels kSWAKernels[] = {
    SPIKEOPS_SWA_KERNELS(scalar), SPIKEOPS_SWA_KERNELS(avx2), SPIKEOPS_SWA_KERNELS(avx512)};
#undef SPIKEOPS_SWA_KERNELS
const ScanKernels kScanKernels[] = {
    {scalar::scan_forward_task, scalar::scan_backward_task},
    {avx2::scan_forward_task, avx2::scan_backward_task},
    {avx512::scan_forward_task, avx512::scan_backward_task}};

#define SPIKEOPS_SPARSE_CONV_KERNELS(ns) \
  { ns::sparse_conv_rows, ns::sparse_conv_rows_skip, ns::sparse_conv_wgrad_rows, \
    ns::sparse_conv_wgrad_rows_skip, ns::sparse_csr_count, ns::sparse_csr_fill }
const SparseConvKernels kSparseConvKernels[] = {SPIKEOPS_SPARSE_CONV_KERNELS(scalar),
                                                SPIKEOPS_SPARSE_CONV_KERNELS(avx2),
                                                SPIKEOPS_SPARSE_CONV_KERNELS(avx512)};
#undef SPIKEOPS_SPARSE_CONV_KERNELS

Isa parse_isa(const std::string& name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  TORCH_CHECK_VALUE(false, "SPIKEOPS_CPU_ISA / isa: unknown CPU ISA '", name,
                    "'; expected scalar, avx2 or avx512");
}

Isa best_supported() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa initial_isa() {
  const char* env = std::getenv("SPIKEOPS_CPU_ISA");
  if (env == nullptr || *env == '\0') return best_supported();
  Isa isa = parse_isa(env);
  TORCH_CHECK(isa_supported(isa), "SPIKEOPS_CPU_ISA=", env, " but this CPU lacks it");
  return isa;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2") &&
             __builtin_cpu_supports("popcnt");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2") &&
             __builtin_cpu_supports("popcnt");
    default: return true;
  }
}

Isa active_isa() { return static_cast<Isa>(active_slot().load()); }

void set_active_isa(const std::string& name) {
  Isa isa = parse_isa(name);
  TORCH_CHECK_VALUE(isa_supported(isa), "isa: this CPU does not support '", name, "'");
  active_slot().store(static_cast<int>(isa));
}

std::vector<std::string> compiled_isas() { return {"scalar", "avx2", "avx512"}; }

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(isa)) out.emplace_back(isa_name(isa));
  return out;
}

const NeuronKernels& neuron_kernels() { return kNeuronKernels[static_cast<int>(active_isa())]; }
const NMKernels& nm_kernels() { return kNMKernels[static_cast<int>(active_isa())]; }
const SSAKernels& ssa_kernels() { return kSSAKernels[static_cast<int>(active_isa())]; }
const RecurrentKernels& recurrent_kernels() {
  return kRecurrentKernels[static_cast<int>(active_isa())];
}
const SWAKernels& swa_kernels() { return kSWAKernels[static_cast<int>(active_isa())]; }
const ScanKernels& scan_kernels() { return kScanKernels[static_cast<int>(active_isa())]; }
const SparseConvKernels& sparse_conv_kernels() {
  return kSparseConvKernels[static_cast<int>(active_isa())];
}

}  // namespace cpu
}  // namespace spikeops
