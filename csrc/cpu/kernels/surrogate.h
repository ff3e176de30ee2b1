// Surrogate gradients dS/du at u = H - threshold (python/spikeops/ref/surrogate.py), on
// the ISA's vector type: shared by the neuron and SDSA kernels. Include at file scope
// (it opens the ISA namespace itself).
#pragma once

#include "common/neuron_params.h"
#include "cpu/kernels/simd.h"

namespace spikeops {
namespace cpu {
namespace SPIKEOPS_ISA {

SPIKEOPS_INLINE VecF surrogate_grad(Surrogate sg, VecF u, VecF alpha) {
  const VecF one(1.f), zero(0.f), half(0.5f);
  switch (sg) {
    case Surrogate::kSigmoid: {
      // A true division: reciprocal estimates doubled the gradient error (tests/).
      VecF s = one / (one + vexp(zero - alpha * u));
      return alpha * s * (one - s);
    }
    case Surrogate::kATan: {
      VecF z = VecF(1.57079632679489662f) * alpha * u;
      return alpha * half / (one + z * z);
    }
    case Surrogate::kPiecewiseQuadratic: {
      VecF au = vabs(u);
      return select(le(au, one / alpha), alpha - alpha * alpha * au, zero);
    }
    case Surrogate::kPiecewiseExp: return alpha * half * vexp(zero - alpha * vabs(u));
    case Surrogate::kSoftSign: {
      VecF d = one + alpha * vabs(u);
      return alpha / (VecF(2.f) * d * d);
    }
    case Surrogate::kSuperSpike: {
      VecF d = alpha * vabs(u) + one;
      return alpha / (d * d);
    }
    case Surrogate::kErf: {
      VecF z = alpha * u;
      return alpha * VecF(0.56418958354775628f) * vexp(zero - z * z);
    }
    case Surrogate::kRectangle: return select(lt(vabs(u), alpha * half), one / alpha, zero);
    default: {  // triangle
      VecF r = one - vabs(u) / alpha;
      return vmax(zero, r) / alpha;  // r second: NaN propagates like torch.clamp
    }
  }
}

}  // namespace SPIKEOPS_ISA
}  // namespace cpu
}  // namespace spikeops
