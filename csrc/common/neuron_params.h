// Plain-C++ description of one fused multi-step neuron call, shared by the CPU
// kernels (csrc/cpu/kernels) and the torch-free CUDA kernels (csrc/cuda/neurons).
// Host glue validates tensors and fills this struct; kernels only read it.
#pragma once
#include <cstdint>

namespace spikeops {

enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// How the membrane charges. "Div" divides by tau (LIF, SpikingJelly's float
// order), "Mul" multiplies by a per-channel decay k = sigmoid(w) (PLIF).
enum class Charge : int32_t {
  kDivDecayInput = 0,  // H = V + (X - (V - Vr)) / tau
  kDivDecay = 1,       // H = V - (V - Vr) / tau + X
  kMulDecayInput = 2,  // H = V + (X - (V - Vr)) * k
  kMulDecay = 3,       // H = V - (V - Vr) * k + X
  kNoLeak = 4,         // H = V + X  (IF)
};

// How the neuron fires.
enum class Fire : int32_t {
  kBinary = 0,    // S = [H - Vth >= 0]
  kInteger = 1,   // S = round(clamp(H / Vth, 0, D))           (ILIF)
  kAdaptive = 2,  // S = [H - (Vth + beta * A) >= 0], A traces S  (ALIF)
};

enum class Surrogate : int32_t {
  kSigmoid = 0, kATan = 1, kPiecewiseQuadratic = 2, kPiecewiseExp = 3,
  kSoftSign = 4, kSuperSpike = 5, kErf = 6, kRectangle = 7, kTriangle = 8,
};

enum class Rounding : int32_t { kHalfEven = 0, kHalfUp = 1 };

struct NeuronParams {
  int64_t T = 0;  // time steps
  int64_t N = 0;  // elements per step (x is [T, N] row-major)
  DType dtype = DType::kFloat32;  // of x, spikes, grad_spikes, grad_x

  Charge charge = Charge::kDivDecayInput;
  float tau = 2.f;
  // Mul charges: k[(i / decay_inner) % decay_channels] for element i.
  const float* decay = nullptr;
  int64_t decay_channels = 1;
  int64_t decay_inner = 1;

  Fire fire = Fire::kBinary;
  float v_threshold = 1.f;
  bool hard_reset = true;  // false: soft reset V = H - S * threshold
  float v_reset = 0.f;     // used by the charge as Vr only when hard_reset
  int32_t max_level = 4;   // kInteger
  Rounding rounding = Rounding::kHalfEven;
  float tau_adapt = 20.f;  // kAdaptive: A = A - A / tau_adapt + S
  float beta = 0.1f;       // kAdaptive: threshold = Vth + beta * A_prev

  Surrogate surrogate = Surrogate::kSigmoid;
  float alpha = 4.f;
  bool detach_reset = false;

  // Forward.
  const void* x = nullptr;     // [T, N], dtype
  const float* v0 = nullptr;   // [N] or null (zeros... or Vr for hard reset: see below)
  const float* a0 = nullptr;   // [N] or null (zeros)
  void* spikes = nullptr;      // [T, N], dtype
  float* v_last = nullptr;     // [N]
  float* a_last = nullptr;     // [N] (kAdaptive)
  float* v_seq = nullptr;      // [T, N] membrane after reset, or null

  // Backward (x, v0, a0 above are the forward inputs; spikes are recomputed).
  const void* grad_spikes = nullptr;    // [T, N], dtype
  const float* grad_v_last = nullptr;   // [N] or null
  const float* grad_a_last = nullptr;   // [N] or null
  void* grad_x = nullptr;               // [T, N], dtype
  float* grad_v0 = nullptr;             // [N]
  float* grad_a0 = nullptr;             // [N] (kAdaptive)
  float* grad_decay = nullptr;          // [N] per-element dL/dk summed over T (Mul charges)
};

// v0 == nullptr means the membrane starts at v_reset for a hard reset and at 0
// for a soft reset (SpikingJelly's v_init).
inline float initial_membrane(const NeuronParams& p) { return p.hard_reset ? p.v_reset : 0.f; }

}  // namespace spikeops
