// CPU backend of the recurrent attention ops: splits the work over at::parallel_for and
// runs the active ISA's kernels (csrc/cpu/kernels/recurrent_kernel.cpp). Tasks never share
// an output element and the RWKV parameter gradients are reduced over the batch in a
// fixed order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "cpu/dispatch.h"
#include "cpu/output_pool.h"
#include "ops/recurrent.h"

namespace spikeops {
namespace {

constexpr int64_t kRwkvChannels = 64;  // channels per RWKV task (the kernel's block)

// RWKV tasks: (batch row, channel block). Blocks of 64 channels, narrowed to 32 or 16 (one
// AVX-512 vector) when that is needed to give every thread two tasks (small B * C, as in
// inference); each channel's arithmetic does not depend on the split.
template <typename Fn>
void rwkv_tasks(const RWKVParams& p, Fn fn) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t width = kRwkvChannels;
  while (width > 16 && p.B * ((p.C + width - 1) / width) < 2 * threads) width /= 2;
  const int64_t cb = (p.C + width - 1) / width;
  at::parallel_for(0, p.B * cb, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t c0 = (i % cb) * width;
      fn(p, i / cb, c0, std::min(p.C, c0 + width));
    }
  });
}

void cpu_rwkv_forward(const RWKVParams& p) { rwkv_tasks(p, cpu::recurrent_kernels().rwkv_forward); }

void cpu_rwkv_backward(const RWKVParams& p) {
  rwkv_tasks(p, cpu::recurrent_kernels().rwkv_backward);
  // dL/dtime_decay = w * sum_b dL/dw (w = -exp(time_decay)), dL/dtime_first = sum_b dL/du,
  // each summed over b in order.
  at::parallel_for(0, p.C, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float sw = 0.f, su = 0.f;
      for (int64_t b = 0; b < p.B; ++b) {
        sw += p.param_partial[b * p.C + c];
        su += p.param_partial[(p.B + b) * p.C + c];
      }
      p.grad_time_decay[c] = sw * -std::exp(p.time_decay[c]);
      p.grad_time_first[c] = su;
    }
  });
}

// SDSA tasks: (head, feature block). Heads alone when there are enough of them for the
// threads; otherwise the features are split too (the LIF is independent per feature), in
// blocks of 16 (one cache line of fp32).
template <typename Fn>
void sdsa_tasks(const SDSAParams& p, Fn fn) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t blocks = 1;
  if (p.G < 2 * threads)
    blocks = std::max<int64_t>(1, std::min((2 * threads + p.G - 1) / p.G, (p.D + 15) / 16));
  int64_t width = (p.D + blocks - 1) / blocks;
  width = (width + 15) / 16 * 16;
  blocks = (p.D + width - 1) / width;
  at::parallel_for(0, p.G * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t d0 = (i % blocks) * width;
      fn(p, i / blocks, d0, std::min(p.D, d0 + width));
    }
  });
}

void cpu_sdsa_forward(const SDSAParams& p) { sdsa_tasks(p, cpu::recurrent_kernels().sdsa_forward); }
void cpu_sdsa_backward(const SDSAParams& p) { sdsa_tasks(p, cpu::recurrent_kernels().sdsa_backward); }

const RecurrentBackend kCpuRecurrentBackend{cpu_rwkv_forward, cpu_rwkv_backward,
                                            cpu_sdsa_forward, cpu_sdsa_backward,
                                            cpu::pooled_empty, false};

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  SPIKEOPS_REGISTER_RECURRENT_OPS(m, ::spikeops::kCpuRecurrentBackend);
}
