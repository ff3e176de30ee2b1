// C entry points over the recurrent CUDA kernels' launchers for the host emulation
// (tests/test_recurrent_cuda_emu.py loads them with ctypes); workspaces are NaN-free
// garbage so a read before write shows.
#include <vector>
#include "cuda/recurrent/recurrent_launch.h"
using namespace spikeops;
extern "C" int emu_rwkv_fwd(int64_t B, int64_t T, int64_t C, const float* td, const float* tf,
                            const float* k, const float* v, float* y) {
  RWKVParams p; p.B = B; p.T = T; p.C = C; p.time_decay = td; p.time_first = tf; p.k = k; p.v = v; p.y = y;
  return rwkv_forward_cuda(p, nullptr);
}
extern "C" int emu_rwkv_bwd(int64_t B, int64_t T, int64_t C, const float* td, const float* tf,
                            const float* k, const float* v, const float* gy, float* gk, float* gv,
                            float* gtd, float* gtf) {
  RWKVParams p; p.B = B; p.T = T; p.C = C; p.time_decay = td; p.time_first = tf; p.k = k; p.v = v;
  std::vector<float> ws(3 * B * T * C, 12345.f), part(2 * B * C, 777.f);
  p.grad_y = gy; p.grad_k = gk; p.grad_v = gv; p.grad_time_decay = gtd; p.grad_time_first = gtf;
  p.state_ws = ws.data(); p.param_partial = part.data();
  return rwkv_backward_cuda(p, nullptr);
}
extern "C" int emu_sdsa_fwd(int64_t T, int64_t G, int64_t N, int64_t D, const float* q, const float* k,
                            const float* v, float* out, float* h, float vth, float tau) {
  SDSAParams p; p.T = T; p.G = G; p.N = N; p.D = D; p.q = q; p.k = k; p.v = v; p.out = out; p.h_seq = h;
  p.v_threshold = vth; p.tau = tau;
  return sdsa_forward_cuda(p, nullptr);
}
extern "C" int emu_sdsa_bwd(int64_t T, int64_t G, int64_t N, int64_t D, const float* q, const float* k,
                            const float* v, const float* go, const float* h, float* gq, float* gk, float* gv,
                            float vth, float tau, int detach, int surrogate, float alpha) {
  SDSAParams p; p.T = T; p.G = G; p.N = N; p.D = D; p.q = q; p.k = k; p.v = v; p.h_seq = const_cast<float*>(h);
  p.grad_out = go; p.grad_q = gq; p.grad_k = gk; p.grad_v = gv; p.v_threshold = vth; p.tau = tau;
  p.detach_reset = detach; p.surrogate = static_cast<Surrogate>(surrogate); p.alpha = alpha;
  std::vector<float> ws(T * G * D, 999.f); p.grad_ws = ws.data();
  return sdsa_backward_cuda(p, nullptr);
}
