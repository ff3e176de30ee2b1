#include "cpu/output_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace spikeops {
namespace cpu {
namespace {

constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kMinPooled = size_t(1) << 20;

class Pool {
 public:
  Pool() {
    const char* env = std::getenv("SPIKEOPS_CPU_POOL_MB");
    limit_ = (env && *env) ? size_t(std::max(0L, std::atol(env))) << 20 : size_t(1024) << 20;
  }

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        ++hits_;
        return p;
      }
      ++misses_;
    }
    void* p = std::aligned_alloc(kHuge, bytes);
    TORCH_CHECK(p != nullptr, "spikeops: out of memory allocating ", bytes, " bytes");
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  // a hint; ignored where THP is off
#endif
    return p;
  }

  void give_back(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + bytes <= limit_) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  void release() {
    std::multimap<size_t, void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      cached_ = 0;
    }
    for (auto& kv : drop) std::free(kv.second);
  }

  bool enabled() const { return limit_ > 0; }
  PoolStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {int64_t(limit_), int64_t(cached_), hits_, misses_};
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t limit_ = 0, cached_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors from the pool may be freed after static destructors ran.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t nbytes = size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (!pool().enabled() || nbytes < kMinPooled) return at::empty(sizes, options);
  const size_t bytes = (nbytes + kHuge - 1) / kHuge * kHuge;
  void* ptr = pool().take(bytes);
  return at::from_blob(ptr, sizes, [bytes](void* p) { pool().give_back(p, bytes); }, options);
}

PoolStats pool_stats() { return pool().stats(); }
void pool_release() { pool().release(); }

}  // namespace cpu
}  // namespace spikeops
