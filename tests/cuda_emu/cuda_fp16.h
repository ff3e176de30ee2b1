#pragma once
// Emulation stub (tests/cuda_emu/cuda_runtime.h): values are kept in float, unrounded;
// only the float kernels are compared.
#include "cuda_runtime.h"
struct __half { float f; };
inline float __half2float(__half h) { return h.f; }
inline __half __float2half_rn(float f) { return __half{f}; }
