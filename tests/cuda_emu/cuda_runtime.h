// Host emulation of the few CUDA features the kernels use (NOT CUDA): used by the
// tests/test_*_cuda_emu.py files to run the torch-free kernels of csrc/cuda/<family> on
// a machine without a GPU. Every CUDA thread of a block is a std::thread, __syncthreads is
// a std::barrier, __shared__ arrays are function statics (blocks run one after another),
// and `kernel<<<grid, block, 0, stream>>>(p)` is rewritten by the test into
// emu_launch(kernel, grid, block, p). It checks indexing, bounds and barrier choreography,
// not timing, memory coalescing or the device's float arithmetic.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#define __host__
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__
#define __shared__ static
typedef int cudaError_t;
typedef void* cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNotSupported = 2, cudaErrorInvalidConfiguration = 3 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx(0, 0, 0);
inline dim3 blockIdx(0, 0, 0);
inline dim3 blockDim(1, 1, 1);
inline dim3 gridDim(1, 1, 1);
inline std::barrier<>* emu_bar = nullptr;
inline void __syncthreads() { emu_bar->arrive_and_wait(); }
// Device atomics (threads of a block run concurrently; blocks one after another).
inline int atomicOr(int* a, int v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }
inline int atomicCAS(int* a, int expected, int desired) {
  __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long expected,
                                    unsigned long long desired) {
  __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) {
  unsigned long long cur = __atomic_load_n(a, __ATOMIC_SEQ_CST);
  while (v < cur && !__atomic_compare_exchange_n(a, &cur, v, false, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_SEQ_CST)) {
  }
  return cur;
}
// Kernel arguments are passed as they are (a Params struct, or several values).
template <typename K, typename... P>
void emu_launch(K kernel, dim3 grid, dim3 block, const P&... p) {
  blockDim = block;
  gridDim = grid;
  const unsigned nt = block.x * block.y;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        std::barrier<> bar(nt);
        emu_bar = &bar;
        std::vector<std::thread> th;
        for (unsigned y = 0; y < block.y; ++y)
          for (unsigned x = 0; x < block.x; ++x)
            th.emplace_back([&, x, y] { threadIdx = dim3(x, y, 0); kernel(p...); });
        for (auto& t : th) t.join();
      }
}
