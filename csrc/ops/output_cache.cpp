// The output cache of outputs.h: a c10::Allocator whose freed blocks wait, up to a limit, for the next
// output of the same rounded size.
//
// Only the ops' large outputs use it (torch's own tensors keep torch's allocator). A block is rounded
// up to a whole number of 2 MiB, so outputs of nearby sizes share blocks; an allocation takes the most
// recently freed block of its size (its pages are the likeliest to be in cache and TLB). Freed blocks
// beyond the limit push out the oldest idle ones. Blocks are freed outside the lock. The cache is never
// destroyed: tensors may outlive every static object at interpreter exit.
#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "ops/outputs.h"

namespace pyvidgen::outputs {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kHugePageBytes = 2 * kMiB;
// glibc's largest mmap threshold: allocations of this size or more are always fresh mappings.
constexpr int64_t kFreshMapBytes = 32 * kMiB;
constexpr int64_t kDefaultLimitBytes = 1024 * kMiB;

// Ask for huge pages on the whole 2 MiB pages inside [data, data + bytes) of a new block over 32 MiB (best
// effort: a refusal changes nothing but speed). Not at exactly 32 MiB: such a block measured 3x slower with
// the advice than without.
void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes <= kFreshMapBytes) return;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const auto mask = static_cast<uintptr_t>(kHugePageBytes - 1);
  const uintptr_t first = (begin + mask) & ~mask, last = (begin + static_cast<uintptr_t>(bytes)) & ~mask;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// The default limit: 1 GiB, or an eighth of the machine's memory where that is less.
int64_t default_limit() {
  int64_t limit = kDefaultLimitBytes;
#if defined(__linux__)
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) limit = std::min(limit, static_cast<int64_t>(pages) * page_size / 8);
#endif
  return limit;
}

// PYVIDGEN_OUTPUT_CACHE_MB (a whole number of MiB, 0 turns the cache off), else the default.
int64_t initial_limit() {
  const char* text = std::getenv("PYVIDGEN_OUTPUT_CACHE_MB");
  if (text == nullptr || *text == '\0') return default_limit();
  char* end = nullptr;
  errno = 0;
  const long long mib = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || mib < 0 || mib > (int64_t{1} << 40) / kMiB) {
    TORCH_WARN("pyvidgen: PYVIDGEN_OUTPUT_CACHE_MB must be a whole number of MiB >= 0, got '", text,
               "'; using the default of ", default_limit() / kMiB, " MiB");
    return default_limit();
  }
  return static_cast<int64_t>(mib) * kMiB;
}

struct Block {
  void* data;
  int64_t bytes;
};

class OutputCache final : public c10::Allocator {
 public:
  OutputCache() : limit_(initial_limit()) {}

  c10::DataPtr allocate(size_t nbytes) override {
    const int64_t bytes = (static_cast<int64_t>(nbytes) + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    Block* block = take(bytes);
    if (block == nullptr) {
      void* data = c10::alloc_cpu(static_cast<size_t>(bytes));
      advise_huge_pages(data, bytes);
      block = new Block{data, bytes};
    }
    return {block->data, block, &OutputCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  CacheInfo info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {limit_, idle_bytes_, static_cast<int64_t>(idle_.size()), hits_, misses_};
  }

  void set_limit(int64_t bytes) {
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      evict_over_limit(evicted);
    }
    free_blocks(evicted);
  }

  void clear() {
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      evicted.assign(idle_.begin(), idle_.end());
      idle_.clear();
      idle_bytes_ = 0;
    }
    free_blocks(evicted);
  }

 private:
  // The most recently freed idle block of exactly `bytes`, removed from the idle list; nullptr if none.
  Block* take(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
      if ((*it)->bytes == bytes) {
        Block* block = *it;
        idle_.erase(std::next(it).base());
        idle_bytes_ -= bytes;
        ++hits_;
        return block;
      }
    }
    ++misses_;
    return nullptr;
  }

  static void release(void* context) { instance().give_back(static_cast<Block*>(context)); }

  void give_back(Block* block) {
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(block);
      idle_bytes_ += block->bytes;
      evict_over_limit(evicted);
    }
    free_blocks(evicted);
  }

  // Moves the oldest idle blocks to `evicted` until the idle bytes fit the limit. Needs the lock.
  void evict_over_limit(std::vector<Block*>& evicted) {
    while (idle_bytes_ > limit_ && !idle_.empty()) {
      evicted.push_back(idle_.front());
      idle_bytes_ -= idle_.front()->bytes;
      idle_.pop_front();
    }
  }

  static void free_blocks(const std::vector<Block*>& blocks) {
    for (Block* block : blocks) {
      c10::free_cpu(block->data);
      delete block;
    }
  }

 public:
  static OutputCache& instance() {
    static OutputCache* cache = new OutputCache();  // never destroyed, see the file comment
    return *cache;
  }

 private:
  std::mutex mutex_;
  std::deque<Block*> idle_;  // oldest first
  int64_t limit_;
  int64_t idle_bytes_ = 0;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

}  // namespace

at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const auto dtype = c10::typeMetaToScalarType(options.dtype());
  if (!options.device().is_cpu() || options.layout() != c10::kStrided ||
      static_cast<int64_t>(at::detail::computeStorageNbytesContiguous(sizes, c10::elementSize(dtype))) <
          kCachedBytes) {
    return at::empty(sizes, options);
  }
  return at::detail::empty_generic(sizes, &OutputCache::instance(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   dtype, c10::MemoryFormat::Contiguous);
}

at::Tensor empty_like(const at::Tensor& t) { return empty(t.sizes(), t.options()); }

CacheInfo cache_info() { return OutputCache::instance().info(); }

void set_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "pyvidgen.set_output_cache_limit: limit_bytes must be >= 0, got ", bytes);
  OutputCache::instance().set_limit(bytes);
}

void empty_cache() { OutputCache::instance().clear(); }

}  // namespace pyvidgen::outputs
