// Output tensors of the C++ ops.
//
// A tensor of 32 MiB or more is always a fresh mmap from glibc's allocator (its largest mmap
// threshold), so its first touch faults every 4 KiB page in: for a 128 MiB gradient that costs more
// than the kernel that fills it (measured 42 ms to fill a fresh 128 MiB tensor, 2.6 ms a warm one).
// Where the system grants transparent huge pages on request
// (/sys/kernel/mm/transparent_hugepage/enabled = madvise or always), asking for them makes the first
// touch fault 2 MiB at a time (6 ms). Smaller tensors come from the allocator's reused heap and are
// left alone (advising heap ranges would split its mappings for nothing).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyvidgen::outputs {

constexpr int64_t kHugePageBytes = int64_t{2} << 20;
constexpr int64_t kFreshMapBytes = int64_t{32} << 20;

// Ask for huge pages on the whole 2 MiB pages inside `t`'s memory (best effort: a refusal changes
// nothing but speed).
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const auto bytes = static_cast<int64_t>(t.nbytes());
  if (bytes <= kFreshMapBytes || !t.device().is_cpu()) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t mask = static_cast<uintptr_t>(kHugePageBytes - 1);
  const uintptr_t first = (begin + mask) & ~mask, last = (begin + static_cast<uintptr_t>(bytes)) & ~mask;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// at::empty_like(t) in the contiguous layout, huge pages advised.
inline at::Tensor empty_like(const at::Tensor& t) {
  at::Tensor out = at::empty_like(t, at::MemoryFormat::Contiguous);
  advise_huge_pages(out);
  return out;
}

// at::empty(sizes, options), huge pages advised.
inline at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  advise_huge_pages(out);
  return out;
}

}  // namespace pyvidgen::outputs
