// Plain-C++ description of one linear-attention scan call (linear attention, simple GLA,
// GLA), shared by the CPU kernels (csrc/cpu/kernels/scan_kernel.cpp) and any future device
// kernel. Per sequence n and query head h, with kv head hk = h / (Hq / Hkv):
//
//   S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t      S: [K, V] fp32, S_0 = h0[n, h] or 0
//   o_t = scale * q_t S_t
//
// g_t is 0 (kDecayNone), one log-decay per head and step broadcast over K (kDecayHead:
// g [rows, Hq], or the constant g_gamma [Hq] when `gamma`), or one per key (kDecayKey:
// gk [rows, Hq, K]). Tensors are row-major with "rows" = B * T flattened: q [rows, Hq, K],
// k [rows, Hkv, K], v [rows, Hkv, V], o / do [rows, Hq, V]; sequence n occupies rows
// [row0[n], row0[n] + len[n]) (batch rows, or the pieces of a packed cu_seqlens batch).
// Host glue validates everything and fills this struct; kernels only read it.
#pragma once
#include <cstdint>

#include "common/neuron_params.h"  // DType

namespace spikeops {

enum ScanDecay : int32_t { kDecayNone = 0, kDecayHead = 1, kDecayKey = 2 };

struct ScanParams {
  DType dtype = DType::kFloat32;  // of q, k, v, o and do
  int64_t Hq = 0, Hkv = 0, K = 0, V = 0;
  int64_t N = 0;                  // sequences
  int64_t chunk = 64;             // chunk length of the algorithm (>= 1)
  int32_t decay = kDecayNone;
  bool gamma = false;             // kDecayHead with a constant g_gamma [Hq]
  float scale = 1.f;
  const int64_t* row0 = nullptr;  // [N] first row of each sequence
  const int64_t* len = nullptr;   // [N] its length
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* g = nullptr;       // fp32 log-decays (see above), nullptr for kDecayNone
  const float* h0 = nullptr;      // [N, Hq, K, V] or nullptr (zeros)
  // forward
  void* o = nullptr;              // [rows, Hq, V] in dtype
  float* ht = nullptr;            // [N, Hq, K, V] final states, or nullptr
  // backward
  const void* dout = nullptr;     // [rows, Hq, V] in dtype: gradient of o
  const float* dht = nullptr;     // [N, Hq, K, V] gradient of the final state, or nullptr
  float* dq = nullptr;            // [rows, Hq, K] fp32
  float* dk = nullptr;            // [rows, Hq, K] fp32, per query head (glue sums groups)
  float* dv = nullptr;            // [rows, Hq, V] fp32, per query head
  float* dg = nullptr;            // g's shape fp32; for gamma [N, Hq] per-sequence sums
  float* dh0 = nullptr;           // [N, Hq, K, V] or nullptr

  // Device backends only (ScanBackend::device_chunk > 0; the CPU path leaves them unset):
  // csrc/ops/scan.cpp fills them because a kernel on the device cannot read the host
  // arrays row0 / len above. dev_seq holds, in device memory, 4 * N + total_chunks int64:
  // row0[N] | len[N] | slot0[N] (first state slot of sequence n: sequence n owns slots
  // slot0[n] .. slot0[n] + chunks_n, chunks_n = ceil(len[n] / dev_chunk)) | chunk0[N]
  // (index of its first chunk in the flattened chunk list) | seq_of_chunk[total_chunks].
  // ws is device scratch of ws_floats floats (layout: csrc/cuda/scan/scan_kernels.cuh).
  const int64_t* dev_seq = nullptr;
  int64_t dev_chunk = 0;          // the device kernels' chunk length
  int64_t total_chunks = 0;       // sum_n chunks_n
  int64_t state_slots = 0;        // sum_n (chunks_n + 1)
  int64_t rows = 0;               // B * T
  float* ws = nullptr;
  int64_t ws_floats = 0;
};

}  // namespace spikeops
