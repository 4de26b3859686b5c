// The output cache of outputs.h: a c10::Allocator whose freed large blocks wait, up to a limit, for the
// next allocation of the same rounded size.
//
// The ops' large outputs always use it; torch's own CPU tensors do only while set_cache_all_cpu_tensors
// has made it torch's CPU allocator (opt-in: it changes where every CPU tensor's memory comes from). A
// block is rounded up to a whole number of 2 MiB, so nearby sizes share blocks; an allocation takes the
// most recently freed block of its size (its pages are the likeliest to be in cache and TLB). Freed
// blocks beyond the limit push out the oldest idle ones. Blocks are freed outside the lock. The cache is
// never destroyed: tensors may outlive every static object at interpreter exit.
#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <iterator>
#include <mutex>
#include <unordered_map>
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
// The limit where the machine's memory is unknown.
constexpr int64_t kFallbackLimitBytes = 1024 * kMiB;

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

// The default limit: an eighth of the machine's memory. Idle blocks are what one training step freed, so
// the limit only binds where the step's large tensors outgrow it (the small VPN's step frees about 1 GiB
// of them) or where sizes keep changing.
int64_t default_limit() {
#if defined(__linux__)
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) return static_cast<int64_t>(pages) * page_size / 8;
#endif
  return kFallbackLimitBytes;
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

// One allocator for every size, so that its raw deleter is the same for all of its allocations (oneDNN
// allocates its scratch memory through the CPU allocator's raw interface): allocations of kCachedBytes or
// more are cached blocks, smaller ones go straight to c10::alloc_cpu as with torch's default allocator.
// Every allocation's context is its data pointer; the cached ones are found by address when freed.
class OutputCache final : public c10::Allocator {
 public:
  OutputCache() : limit_(initial_limit()) {}

  c10::DataPtr allocate(size_t nbytes) override {
    void* data = nullptr;
    if (static_cast<int64_t>(nbytes) < kCachedBytes) {
      data = c10::alloc_cpu(nbytes);
    } else {
      const int64_t bytes = (static_cast<int64_t>(nbytes) + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
      data = take(bytes);
      if (data == nullptr) {
        data = c10::alloc_cpu(static_cast<size_t>(bytes));
        advise_huge_pages(data, bytes);
        std::lock_guard<std::mutex> lock(mutex_);
        live_.emplace(data, bytes);
      }
    }
    c10::profiledCPUMemoryReporter().New(data, nbytes);
    return {data, data, &OutputCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &OutputCache::release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  CacheInfo info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {limit_, idle_bytes_, static_cast<int64_t>(idle_.size()), hits_, misses_};
  }

  void set_limit(int64_t bytes) {
    std::vector<Idle> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      evict_over_limit(evicted);
    }
    free_blocks(evicted);
  }

  void clear() {
    std::vector<Idle> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const Idle& block : idle_) live_.erase(block.data);
      evicted.assign(idle_.begin(), idle_.end());
      idle_.clear();
      idle_bytes_ = 0;
    }
    free_blocks(evicted);
  }

  static OutputCache& instance() {
    static OutputCache* cache = new OutputCache();  // never destroyed, see the file comment
    return *cache;
  }

 private:
  struct Idle {
    void* data;
    int64_t bytes;
  };

  // The most recently freed idle block of exactly `bytes`, taken off the idle list; nullptr if none.
  void* take(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
      if (it->bytes == bytes) {
        void* data = it->data;
        idle_.erase(std::next(it).base());
        idle_bytes_ -= bytes;
        ++hits_;
        return data;
      }
    }
    ++misses_;
    return nullptr;
  }

  static void release(void* data) {
    if (data == nullptr) return;  // an empty allocation
    c10::profiledCPUMemoryReporter().Delete(data);
    if (!instance().give_back(data)) c10::free_cpu(data);
  }

  // Puts a cached block on the idle list (false for memory that is not one: a small allocation).
  bool give_back(void* data) {
    std::vector<Idle> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(data);
      if (it == live_.end()) return false;
      idle_.push_back({data, it->second});
      idle_bytes_ += it->second;
      evict_over_limit(evicted);
    }
    free_blocks(evicted);
    return true;
  }

  // Moves the oldest idle blocks to `evicted` until the idle bytes fit the limit. Needs the lock.
  void evict_over_limit(std::vector<Idle>& evicted) {
    while (idle_bytes_ > limit_ && !idle_.empty()) {
      const Idle oldest = idle_.front();
      idle_.pop_front();
      idle_bytes_ -= oldest.bytes;
      live_.erase(oldest.data);
      evicted.push_back(oldest);
    }
  }

  static void free_blocks(const std::vector<Idle>& blocks) {
    for (const Idle& block : blocks) c10::free_cpu(block.data);
  }

  std::mutex mutex_;
  std::unordered_map<void*, int64_t> live_;  // every cached block, in use or idle -> its bytes
  std::deque<Idle> idle_;                    // oldest first
  int64_t limit_;
  int64_t idle_bytes_ = 0;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

// The allocator torch's CPU tensors had before set_cache_all_cpu_tensors(true), nullptr while it is off.
c10::Allocator* g_previous_cpu_allocator = nullptr;
std::mutex g_install_mutex;

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

at::Tensor empty_like(const at::Tensor& t, at::MemoryFormat format) {
  if (format != at::MemoryFormat::ChannelsLast) return empty(t.sizes(), t.options());
  // (B, H, W, C) memory seen as (B, C, H, W).
  return empty({t.size(0), t.size(2), t.size(3), t.size(1)}, t.options()).permute({0, 3, 1, 2});
}

CacheInfo cache_info() { return OutputCache::instance().info(); }

void set_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "pyvidgen.set_output_cache_limit: limit_bytes must be >= 0, got ", bytes);
  OutputCache::instance().set_limit(bytes);
}

void empty_cache() { OutputCache::instance().clear(); }

void set_cache_all_cpu_tensors(bool enabled) {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  OutputCache* cache = &OutputCache::instance();
  if (enabled && g_previous_cpu_allocator == nullptr) {
    g_previous_cpu_allocator = c10::GetCPUAllocator();
    c10::SetCPUAllocator(cache, /*priority=*/255);
  } else if (!enabled && g_previous_cpu_allocator != nullptr) {
    c10::SetCPUAllocator(g_previous_cpu_allocator, /*priority=*/255);
    g_previous_cpu_allocator = nullptr;
  }
}

bool cache_all_cpu_tensors() {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  return g_previous_cpu_allocator != nullptr;
}

}  // namespace pyvidgen::outputs
