// C entry points over the scan CUDA kernels' launchers for the host emulation
// (tests/test_scan_cuda_emu.py loads them with ctypes). The sequence table and the
// workspace are built here as csrc/ops/scan.cpp builds them for a device backend; the
// workspace starts as NaN-free garbage so a read before write shows.
#include <cstring>
#include <vector>
#include "cuda/scan/scan_launch.h"
using namespace spikeops;

namespace {
struct Table {
  std::vector<int64_t> seq;
  std::vector<float> ws;
};
// p: dims, decay, pointers already set; cu: N + 1 offsets of rows.
void fill(ScanParams& p, const int64_t* cu, int64_t rows, bool backward, Table& tb) {
  const int64_t C = cuda_scan::kChunk, N = p.N;
  std::vector<int64_t> nc(static_cast<size_t>(N));
  int64_t total = 0, slots = 0;
  for (int64_t n = 0; n < N; ++n) {
    nc[n] = (cu[n + 1] - cu[n] + C - 1) / C;
    total += nc[n];
    slots += nc[n] + 1;
  }
  tb.seq.assign(size_t(4 * N + total), 0);
  int64_t slot = 0, chunk = 0;
  for (int64_t n = 0; n < N; ++n) {
    tb.seq[n] = cu[n];
    tb.seq[N + n] = cu[n + 1] - cu[n];
    tb.seq[2 * N + n] = slot;
    tb.seq[3 * N + n] = chunk;
    for (int64_t c = 0; c < nc[n]; ++c) tb.seq[4 * N + chunk + c] = n;
    slot += nc[n] + 1;
    chunk += nc[n];
  }
  p.dev_seq = tb.seq.data();
  p.dev_chunk = C;
  p.total_chunks = total;
  p.state_slots = slots;
  p.rows = rows;
  p.ws_floats = cuda_scan::scan_workspace_floats(p, backward);
  tb.ws.assign(size_t(p.ws_floats + 1), 4321.f);
  p.ws = tb.ws.data();
}
void dims(ScanParams& p, int64_t N, int64_t Hq, int64_t Hkv, int64_t K, int64_t V, int decay,
          int gamma, float scale) {
  p.dtype = DType::kFloat32;
  p.N = N; p.Hq = Hq; p.Hkv = Hkv; p.K = K; p.V = V;
  p.decay = decay; p.gamma = gamma != 0; p.scale = scale;
}
}  // namespace

extern "C" int emu_scan_fwd(int64_t N, int64_t Hq, int64_t Hkv, int64_t K, int64_t V, int decay,
                            int gamma, float scale, const int64_t* cu, int64_t rows,
                            const float* q, const float* k, const float* v, const float* g,
                            const float* h0, float* o, float* ht) {
  ScanParams p;
  dims(p, N, Hq, Hkv, K, V, decay, gamma, scale);
  p.q = q; p.k = k; p.v = v; p.g = g; p.h0 = h0; p.o = o; p.ht = ht;
  Table tb;
  fill(p, cu, rows, false, tb);
  return scan_forward_cuda(p, nullptr);
}

extern "C" int emu_scan_bwd(int64_t N, int64_t Hq, int64_t Hkv, int64_t K, int64_t V, int decay,
                            int gamma, float scale, const int64_t* cu, int64_t rows,
                            const float* q, const float* k, const float* v, const float* g,
                            const float* h0, const float* dout, const float* dht, float* dq,
                            float* dk, float* dv, float* dg, float* dh0) {
  ScanParams p;
  dims(p, N, Hq, Hkv, K, V, decay, gamma, scale);
  p.q = q; p.k = k; p.v = v; p.g = g; p.h0 = h0;
  p.dout = dout; p.dht = dht; p.dq = dq; p.dk = dk; p.dv = dv; p.dg = dg; p.dh0 = dh0;
  Table tb;
  fill(p, cu, rows, true, tb);
  return scan_backward_cuda(p, nullptr);
}
