#pragma once
// Emulation stub (tests/cuda_emu/cuda_runtime.h): values are kept in float, unrounded;
// only the float kernels are compared.
#include "cuda_runtime.h"
struct __nv_bfloat16 { float f; };
inline float __bfloat162float(__nv_bfloat16 h) { return h.f; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{f}; }
