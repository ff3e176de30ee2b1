#include "cpu/output_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace spikeops {
namespace cpu {
namespace {

constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kMinPooled = size_t(1) << 20;

class Pool {
 public:
  Pool() {
    const char* env = std::getenv("SPIKEOPS_CPU_POOL_MB");
    limit_ = (env && *env) ? size_t(std::max(0L, std::atol(env))) << 20 : size_t(512) << 20;
  }

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second.ptr;
        order_.erase(it->second.tick);
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

  // Keeps the block just returned (the likeliest to be asked for next), evicting
  // the blocks cached longest ago when over the limit.
  void give_back(void* p, size_t bytes) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes > limit_) {
        evicted.push_back(p);
      } else {
        while (cached_ + bytes > limit_) {
          auto oldest = order_.begin();
          evicted.push_back(oldest->second.first);
          cached_ -= oldest->second.second;
          remove_free(oldest->second.second, oldest->second.first);
          order_.erase(oldest);
        }
        free_.emplace(bytes, FreeBlock{p, tick_});
        order_.emplace(tick_++, std::make_pair(p, bytes));
        cached_ += bytes;
      }
    }
    for (void* q : evicted) std::free(q);
  }

  void release() {
    std::multimap<size_t, FreeBlock> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      order_.clear();
      cached_ = 0;
    }
    for (auto& kv : drop) std::free(kv.second.ptr);
  }

  bool enabled() const { return limit_ > 0; }
  PoolStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {int64_t(limit_), int64_t(cached_), hits_, misses_};
  }

 private:
  struct FreeBlock {
    void* ptr;
    uint64_t tick;
  };

  void remove_free(size_t bytes, void* p) {
    auto range = free_.equal_range(bytes);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second.ptr == p) {
        free_.erase(it);
        return;
      }
  }

  std::mutex mu_;
  std::multimap<size_t, FreeBlock> free_;             // by size, for reuse
  std::map<uint64_t, std::pair<void*, size_t>> order_;  // by age, for eviction
  uint64_t tick_ = 0;
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
