// The small pybind11 module spikeops._C: build facts and the CPU ISA switch.
// Ops themselves are reached through torch.ops.spikeops.*, not through here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/version.h>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"

#ifndef SPIKEOPS_VERSION
#define SPIKEOPS_VERSION "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "spikeops native extension: build facts; ops are in torch.ops.spikeops";
  m.def("build_info", [] {
    py::dict d;
    d["version"] = SPIKEOPS_VERSION;
    d["torch_version"] = TORCH_VERSION;
#ifdef SPIKEOPS_WITH_CUDA
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["cuda_archs"] = std::string(SPIKEOPS_CUDA_ARCHS);
    d["cpu_isa_compiled"] = spikeops::cpu::compiled_isas();
    d["cpu_isa_supported"] = spikeops::cpu::supported_isas();
    d["cpu_isa_active"] = std::string(spikeops::cpu::isa_name(spikeops::cpu::active_isa()));
    return d;
  });
  m.def("cpu_pool_stats", [] {
    auto s = spikeops::cpu::pool_stats();
    py::dict d;
    d["limit_bytes"] = s.limit_bytes;
    d["cached_bytes"] = s.cached_bytes;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    return d;
  }, "The CPU output pool: limit, cached bytes, hits and misses.");
  m.def("cpu_pool_release", &spikeops::cpu::pool_release,
        "Free every cached (unused) CPU output buffer.");
  m.def("cpu_isa", [] { return std::string(spikeops::cpu::isa_name(spikeops::cpu::active_isa())); },
        "The CPU kernel variant in use.");
  m.def("set_cpu_isa", &spikeops::cpu::set_active_isa, py::arg("isa"),
        "Switch the CPU kernel variant: 'scalar', 'avx2' or 'avx512'.");
}
