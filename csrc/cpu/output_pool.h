// A small cache of large CPU output buffers.
//
// On the VMs this library is measured on, writing freshly allocated memory costs
// 4-20x a copy into memory already touched (first-touch page faults), so a
// memory-bound kernel that returns a new [T, N] tensor per call spends most of its
// time in the kernel's page-fault handler. Outputs of 1 MiB and more are therefore
// taken from this pool: blocks are 2 MiB-aligned (transparent huge pages where the
// OS allows), handed out as tensors whose deleter returns them here, and reused
// by the next call with the same rounded size; the oldest cached blocks are freed
// first. SPIKEOPS_CPU_POOL_MB caps the cached bytes (default 512; 0 disables it).
// Pooled tensors' storage cannot grow (resize_ / out= to a larger size raise).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace spikeops {
namespace cpu {

// An uninitialised CPU tensor like at::empty(sizes, options), pooled when large.
at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

struct PoolStats {
  int64_t limit_bytes, cached_bytes, hits, misses;
};
PoolStats pool_stats();
void pool_release();  // frees every cached (unused) block

}  // namespace cpu
}  // namespace spikeops
