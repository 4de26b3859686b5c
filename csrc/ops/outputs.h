// Output tensors of the C++ ops.
//
// Large outputs come from a small cache of the ops' own. A fresh large tensor costs a page fault per
// 4 KiB page at its first touch: glibc maps every allocation of 32 MiB or more afresh, and trims or
// remaps smaller ones often enough, so a training step that makes the same large outputs every
// iteration paid for faulting them in every time (a fresh 128 MiB tensor took 42 ms to fill, a warm
// one 2.6 ms; the multiplicative unit at 16x128x32x32 ran 4x slower than its kernels). The cache
// keeps the memory of freed outputs of kCachedBytes or more, up to a limit, and hands it to the next
// output of the same rounded size; see output_cache.cpp. New blocks over 32 MiB also ask for
// transparent huge pages where the system grants them on request, which makes their first touch
// fault 2 MiB at a time.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>

namespace pyvidgen::outputs {

// Outputs smaller than this come from torch's allocator (glibc reuses their memory well enough).
constexpr int64_t kCachedBytes = int64_t{4} << 20;

// A contiguous CPU tensor of `sizes`; from the output cache when it is large.
at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options);

// empty(t.sizes(), t.options()): contiguous whatever t's layout, or channels_last-contiguous (t 4-D) if asked.
at::Tensor empty_like(const at::Tensor& t, at::MemoryFormat format = at::MemoryFormat::Contiguous);

// A kernel's growable work buffer of T, from the same cache when large: a call that needs megabytes of
// scratch (a ring of pixel-major rows) then neither faults fresh pages in nor zero-fills them, as a
// std::vector would on every call. Growing keeps nothing: callers fill what they read.
template <typename T>
class Scratch {
 public:
  T* data() const { return data_; }
  T* begin() const { return data_; }
  // At least `count` elements (contents undefined).
  void resize(size_t count) {
    if (count <= size_) return;
    buffer_ = empty({static_cast<int64_t>(count)}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    data_ = buffer_.mutable_data_ptr<T>();
    size_ = count;
  }

 private:
  at::Tensor buffer_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// What the cache holds and has done (for pyvidgen.output_cache_info).
struct CacheInfo {
  int64_t limit_bytes;  // most bytes of idle blocks kept
  int64_t idle_bytes;   // bytes of freed blocks waiting for reuse
  int64_t idle_blocks;
  int64_t hits;    // allocations served by an idle block
  int64_t misses;  // allocations that took new memory
};

CacheInfo cache_info();
// Keep at most `bytes` of idle blocks (0: keep none); frees the oldest idle blocks over it.
void set_cache_limit(int64_t bytes);
// Frees every idle block.
void empty_cache();

// Makes the cache torch's CPU allocator (true), so that every CPU tensor of kCachedBytes or more reuses
// freed memory, or gives torch its allocator back (false). Tensors keep the memory they were made with.
void set_cache_all_cpu_tensors(bool enabled);
bool cache_all_cpu_tensors();

}  // namespace pyvidgen::outputs
