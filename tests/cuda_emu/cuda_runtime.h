// Host emulation of the few CUDA features the recurrent kernels use (NOT CUDA): used by
// tests/test_recurrent_cuda_emu.py to run the torch-free kernels of csrc/cuda/recurrent on
// a machine without a GPU. Every CUDA thread of a block is a std::thread, __syncthreads is
// a std::barrier, __shared__ arrays are function statics (blocks run one after another),
// and `kernel<<<grid, block, 0, stream>>>(p)` is rewritten by the test into
// emu_launch(kernel, grid, block, p). It checks indexing, bounds and barrier choreography,
// not timing, memory coalescing or the device's float arithmetic.
#pragma once
#include <cmath>
#include <cstdint>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <memory>
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
// Launch errors (bad configurations, see emu_check_launch) stay until read, as on a device.
inline int emu_error = cudaSuccess;
inline cudaError_t cudaGetLastError() { const int e = emu_error; emu_error = cudaSuccess; return e; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx(0, 0, 0);
inline dim3 blockIdx(0, 0, 0);
inline dim3 blockDim(1, 1, 1);
inline dim3 gridDim(1, 1, 1);
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
// ---- 3D grids and blocks, dynamic shared memory, warp shuffles, launch checks ------------
// `kernel<<<grid, block, smem, stream>>>(p)` with smem other than 0 is rewritten into
// emu_launch_smem(kernel, grid, block, smem, p), and `extern __shared__ T name[];` into a
// pointer to a per-launch heap buffer of exactly smem bytes, filled with 0xff (NaN floats)
// before every block (a read past it shows under AddressSanitizer, a read before write as
// NaN). Launches are checked against the device limits (zero-sized or too large grid or
// block, dynamic shared memory over 48 KB without cudaFuncSetAttribute): a bad one sets
// the error cudaGetLastError returns and runs nothing, as on a device.
// With EMU_FIBERS defined (x86-64), the threads of a block are fibers on the calling thread
// (cooperative, switched at __syncthreads and warp shuffles): fast enough for kernels that
// shuffle a lot, deterministic, and a barrier or shuffle not reached by every thread it
// waits for is reported (abort) instead of hanging. Otherwise they are std::threads.
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
constexpr size_t kEmuSmemDefault = 48 * 1024;   // dynamic shared memory without opt-in
constexpr size_t kEmuSmemOptin = 227 * 1024;    // sm_90's opt-in maximum per block
inline std::map<const void*, size_t>& emu_smem_optin() {
  static std::map<const void*, size_t> m;
  return m;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
  if (value < 0 || size_t(value) > kEmuSmemOptin) return cudaErrorInvalidValue;
  emu_smem_optin()[reinterpret_cast<const void*>(kernel)] = size_t(value);
  return cudaSuccess;
}
inline void* emu_dyn_smem = nullptr;  // extern __shared__ arrays of the running launch
inline bool emu_check_launch(const void* kernel, dim3 grid, dim3 block, size_t smem) {
  const char* why = nullptr;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) why = "zero-sized grid";
  else if (grid.x > 0x7fffffffu || grid.y > 65535u || grid.z > 65535u) why = "grid too large";
  else if (block.x == 0 || block.y == 0 || block.z == 0) why = "zero-sized block";
  else if (block.x > 1024u || block.y > 1024u || block.z > 64u ||
           uint64_t(block.x) * block.y * block.z > 1024u) why = "block over 1024 threads";
  else if (smem > kEmuSmemDefault) {
    const auto it = emu_smem_optin().find(kernel);
    if (it == emu_smem_optin().end() || smem > it->second)
      why = "dynamic shared memory over the kernel's limit (48 KB without cudaFuncSetAttribute)";
  }
  if (why == nullptr) return true;
  std::fprintf(stderr, "cuda emulation: invalid launch (%s): grid %u x %u x %u, block %u x %u x %u, "
               "%zu bytes dynamic shared memory\n", why, grid.x, grid.y, grid.z, block.x,
               block.y, block.z, smem);
  emu_error = cudaErrorInvalidConfiguration;
  return false;
}
inline unsigned emu_tid() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
inline uint64_t emu_shfl_buf[2][1024];  // lane values, double-buffered by shuffle parity
inline int emu_shfl_parity[1024];
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_bars;  // thread mode
inline void emu_warp_sync(unsigned warp);
template <typename T, typename Src>
T emu_shfl(unsigned mask, T v, Src src_of, int width) {
  static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
  const unsigned nt = blockDim.x * blockDim.y * blockDim.z, tid = emu_tid();
  if (mask != 0xffffffffu || width != 32 || nt % 32 != 0) {
    std::fprintf(stderr, "cuda emulation: only full-warp shuffles (mask 0xffffffff, width 32, "
                 "whole warps) are emulated\n");
    std::abort();
  }
  const unsigned lane = tid % 32, warp = tid / 32;
  const int par = emu_shfl_parity[tid];
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  emu_shfl_buf[par][tid] = bits;
  emu_warp_sync(warp);
  const uint64_t got = emu_shfl_buf[par][warp * 32 + (src_of(lane) & 31u)];
  emu_shfl_parity[tid] = par ^ 1;
  T r;
  std::memcpy(&r, &got, sizeof(T));
  return r;
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return emu_shfl(mask, v, [&](unsigned) { return unsigned(src); }, width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu_shfl(mask, v, [&](unsigned l) { return l ^ unsigned(lane_mask); }, width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu_shfl(mask, v, [&](unsigned l) { return l + delta < 32 ? l + delta : l; }, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu_shfl(mask, v, [&](unsigned l) { return l >= delta ? l - delta : l; }, width);
}

#ifdef EMU_FIBERS
#if !defined(__x86_64__)
#error "EMU_FIBERS: the fiber switch is written for x86-64"
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN_FIBERS 1
#endif
#include <sys/mman.h>
// emu_switch(&save, to): saves the callee-saved registers and the stack pointer into save,
// resumes the fiber whose stack pointer is `to`. Weak: every translation unit emits it.
extern "C" void emu_switch(void** save, void* to);
asm(R"(
  .text
  .weak emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
struct EmuFiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable byte (a PROT_NONE guard page below it)
  dim3 tid;
  int state = 0;  // 0 runnable, 1 at __syncthreads, 2 at a warp shuffle, 3 exited
  void* fake = nullptr;
};
struct EmuSched {
  static constexpr size_t kStack = 256 * 1024;
  std::vector<EmuFiber> f;
  std::function<void()> body;
  void* main_sp = nullptr;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  unsigned cur = 0, n = 0, live = 0, at_bar = 0;
  unsigned at_warp[32] = {};
};
inline EmuSched& emu_sched() {
  static EmuSched s;
  return s;
}
// 0: threads in index order, 1: reverse, 2: a pseudo-random order per round (env
// EMU_FIBER_ORDER; read once).
inline int emu_fiber_order() {
  static const int order = [] {
    const char* e = std::getenv("EMU_FIBER_ORDER");
    return e == nullptr ? 0 : std::atoi(e);
  }();
  return order;
}
inline void emu_to_main(bool exiting) {
  EmuSched& s = emu_sched();
  EmuFiber& me = s.f[s.cur];
#ifdef EMU_ASAN_FIBERS
  __sanitizer_start_switch_fiber(exiting ? nullptr : &me.fake, s.main_bottom, s.main_size);
#endif
  emu_switch(&me.sp, s.main_sp);
#ifdef EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(me.fake, &s.main_bottom, &s.main_size);
#endif
  (void)exiting;
}
inline void emu_fiber_entry() {
  EmuSched& s = emu_sched();
#ifdef EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom, &s.main_size);
#endif
  s.body();
  s.f[s.cur].state = 3;
  --s.live;
  emu_to_main(true);
  std::abort();  // an exited fiber is never resumed
}
inline void emu_fiber_sync() {
  EmuSched& s = emu_sched();
  if (++s.at_bar == s.n) {
    s.at_bar = 0;
    for (auto& f : s.f)
      if (f.state == 1) f.state = 0;
    return;
  }
  s.f[s.cur].state = 1;
  emu_to_main(false);
}
inline void emu_fiber_warp_sync(unsigned warp) {
  EmuSched& s = emu_sched();
  if (++s.at_warp[warp] == 32) {
    s.at_warp[warp] = 0;
    for (unsigned i = warp * 32; i < warp * 32 + 32; ++i)
      if (s.f[i].state == 2) s.f[i].state = 0;
    return;
  }
  s.f[s.cur].state = 2;
  emu_to_main(false);
}
inline void __syncthreads() { emu_fiber_sync(); }
inline void emu_warp_sync(unsigned warp) { emu_fiber_warp_sync(warp); }
// Runs one block: every thread from its start until it exits, switching at barriers.
inline void emu_run_block(const std::function<void()>& body, dim3 block) {
  EmuSched& s = emu_sched();
  const unsigned n = block.x * block.y * block.z;
  while (s.f.size() < n) {
    const size_t page = 4096;
    char* m = static_cast<char*>(mmap(nullptr, EmuSched::kStack + page, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (m == MAP_FAILED) std::abort();
    mprotect(m, page, PROT_NONE);
    s.f.emplace_back();
    s.f.back().stack = m + page;
  }
  s.body = body;
  s.n = s.live = n;
  s.at_bar = 0;
  std::memset(s.at_warp, 0, sizeof(s.at_warp));
  for (unsigned i = 0; i < n; ++i) {
    EmuFiber& f = s.f[i];
    f.tid = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
    f.state = 0;
    f.fake = nullptr;
#ifdef EMU_ASAN_FIBERS
    __asan_unpoison_memory_region(f.stack, EmuSched::kStack);
#endif
    auto* sp = reinterpret_cast<uintptr_t*>(f.stack + EmuSched::kStack);
    *--sp = 0;                                                // entry's return address
    *--sp = reinterpret_cast<uintptr_t>(&emu_fiber_entry);   // popped by emu_switch's ret
    for (int r = 0; r < 6; ++r) *--sp = 0;                     // rbp rbx r12 r13 r14 r15
    f.sp = sp;
  }
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t(blockIdx.x) << 20) ^ blockIdx.y ^
                 (uint64_t(blockIdx.z) << 40);
  while (s.live > 0) {
    bool ran = false;
    // The order in which the fibers run to their next barrier (EMU_FIBER_ORDER): a result
    // that depends on it reads shared memory that another thread writes between the same
    // two barriers (a missing __syncthreads).
    unsigned first = 0, step = 1;
    if (emu_fiber_order() == 1) {
      first = n - 1;
      step = n - 1;  // i.e. -1 mod n
    } else if (emu_fiber_order() == 2) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      first = unsigned(rng >> 33) % n;
      do {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        step = unsigned(rng >> 33) % n;
      } while (std::gcd(step, n) != 1);  // a permutation of the fibers
    }
    for (unsigned r = 0, i = first; r < n; ++r, i = (i + step) % n) {
      if (s.f[i].state != 0) continue;
      s.cur = i;
      threadIdx = s.f[i].tid;
      void* fake = nullptr;
#ifdef EMU_ASAN_FIBERS
      __sanitizer_start_switch_fiber(&fake, s.f[i].stack, EmuSched::kStack);
#endif
      emu_switch(&s.main_sp, s.f[i].sp);
#ifdef EMU_ASAN_FIBERS
      __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
      (void)fake;
      ran = true;
    }
    if (!ran) {
      std::fprintf(stderr, "cuda emulation: deadlock in block (%u, %u, %u): %u of %u threads "
                   "exited, %u wait at __syncthreads, the rest at a warp shuffle (a barrier or "
                   "shuffle not reached by every thread)\n", blockIdx.x, blockIdx.y, blockIdx.z,
                   n - s.live, n, s.at_bar);
      std::abort();
    }
  }
}
#else
inline std::barrier<>* emu_bar = nullptr;
inline void __syncthreads() { emu_bar->arrive_and_wait(); }
inline void emu_warp_sync(unsigned warp) { emu_warp_bars[warp]->arrive_and_wait(); }
inline void emu_run_block(const std::function<void()>& body, dim3 block) {
  const unsigned nt = block.x * block.y * block.z;
  std::barrier<> bar(nt);
  emu_bar = &bar;
  emu_warp_bars.clear();
  for (unsigned w = 0; w < (nt + 31) / 32; ++w)
    emu_warp_bars.push_back(std::make_unique<std::barrier<>>(std::min(32u, nt - 32 * w)));
  std::vector<std::thread> th;
  for (unsigned z = 0; z < block.z; ++z)
    for (unsigned y = 0; y < block.y; ++y)
      for (unsigned x = 0; x < block.x; ++x)
        th.emplace_back([&, x, y, z] { threadIdx = dim3(x, y, z); body(); });
  for (auto& t : th) t.join();
}
#endif

// __syncthreads_or: a barrier that also ORs a predicate over the block. Call c of a block
// uses flag c % 3 and, before its barrier, clears flag (c + 1) % 3: that flag's readers
// (call c - 2) all finished before barrier c - 1, and its next writers (call c + 1) start
// after barrier c, so neither a read nor an OR can meet the clear.
inline int emu_sync_or_flag[3];
inline int emu_sync_or_calls[1024];
inline int __syncthreads_or(int pred) {
  const unsigned tid = emu_tid();
  const int c = emu_sync_or_calls[tid]++ % 3;
  if (pred) __atomic_fetch_or(&emu_sync_or_flag[c], 1, __ATOMIC_SEQ_CST);
  __atomic_store_n(&emu_sync_or_flag[(c + 1) % 3], 0, __ATOMIC_SEQ_CST);
  __syncthreads();
  return __atomic_load_n(&emu_sync_or_flag[c], __ATOMIC_SEQ_CST);
}

// Kernel arguments are passed as they are (a Params struct, or several values).
template <typename K, typename... P>
void emu_launch_smem(K kernel, dim3 grid, dim3 block, size_t smem, const P&... p) {
  if (!emu_check_launch(reinterpret_cast<const void*>(kernel), grid, block, smem)) return;
  blockDim = block;
  gridDim = grid;
  std::unique_ptr<unsigned char[]> dyn(new unsigned char[smem]);
  emu_dyn_smem = dyn.get();
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        std::memset(dyn.get(), 0xff, smem);
        std::memset(emu_shfl_parity, 0, sizeof(emu_shfl_parity));
        std::memset(emu_sync_or_calls, 0, sizeof(emu_sync_or_calls));
        std::memset(emu_sync_or_flag, 0, sizeof(emu_sync_or_flag));
        emu_run_block([&] { kernel(p...); }, block);
      }
  emu_dyn_smem = nullptr;
}
template <typename K, typename... P>
void emu_launch(K kernel, dim3 grid, dim3 block, const P&... p) {
  emu_launch_smem(kernel, grid, block, 0, p...);
}
