// C entry points over the sliding-window attention CUDA kernels' launchers for the host
// emulation (tests/test_swa_cuda_emu.py loads them with ctypes). SWAParams is filled as
// csrc/ops/swa.cpp fills it (the window clamped to max(T, 1)); the delta scratch starts
// as NaN-free garbage so a read before write shows.
#include <algorithm>
#include <vector>
#include "cuda/swa/swa_launch.h"
using namespace spikeops;

namespace {
void dims(SWAParams& p, int64_t B, int64_t T, int64_t H, int64_t D, int64_t Dv, int64_t window,
          float scale) {
  p.dtype = DType::kFloat32;
  p.B = B; p.T = T; p.H = H; p.D = D; p.Dv = Dv;
  p.window = std::min<int64_t>(window, std::max<int64_t>(T, 1));
  p.scale = scale;
}
}  // namespace

extern "C" int emu_swa_fwd(int64_t B, int64_t T, int64_t H, int64_t D, int64_t Dv,
                           int64_t window, float scale, const float* q, const float* k,
                           const float* v, float* o, float* lse) {
  SWAParams p;
  dims(p, B, T, H, D, Dv, window, scale);
  p.q = q; p.k = k; p.v = v; p.o = o; p.lse = lse;
  return swa_forward_cuda(p, nullptr);
}

extern "C" int emu_swa_bwd(int64_t B, int64_t T, int64_t H, int64_t D, int64_t Dv,
                           int64_t window, float scale, const float* q, const float* k,
                           const float* v, const float* o, const float* lse,
                           const float* grad_o, const float* grad_lse, float* dq, float* dk,
                           float* dv) {
  SWAParams p;
  dims(p, B, T, H, D, Dv, window, scale);
  std::vector<float> delta(size_t(std::max<int64_t>(B * H * T, 1)), 4321.f);
  p.q = q; p.k = k; p.v = v; p.o = const_cast<float*>(o); p.lse = const_cast<float*>(lse);
  p.grad_o = grad_o; p.grad_lse = grad_lse; p.delta = delta.data();
  p.dq = dq; p.dk = dk; p.dv = dv;
  return swa_backward_cuda(p, nullptr);
}
