#include "ops/cpu/layout_copy.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstring>

namespace pyvidgen::cpu {
namespace {

// One (b, h) row of (C, W) values.
template <typename T>
void copy_row(const T* src, int64_t src_c, int64_t src_w, T* dst, int64_t dst_c, int64_t dst_w, int64_t channels,
              int64_t width) {
  if (src_w == 1 && dst_c == 1) {  // planes -> channels-last
    transpose_tiles(src, src_c, dst, dst_w, channels, width, /*plane_rows=*/true);
  } else if (src_c == 1 && dst_w == 1) {  // channels-last -> planes
    transpose_tiles(src, src_w, dst, dst_c, width, channels, /*plane_rows=*/false);
  } else if (src_w == 1 && dst_w == 1) {  // planes in both
    for (int64_t c = 0; c < channels; ++c) std::memcpy(dst + c * dst_c, src + c * src_c, width * sizeof(T));
  } else if (src_c == 1 && dst_c == 1) {  // channels-last in both
    if (src_w == channels && dst_w == channels) {
      std::memcpy(dst, src, channels * width * sizeof(T));
    } else {
      for (int64_t w = 0; w < width; ++w) std::memcpy(dst + w * dst_w, src + w * src_w, channels * sizeof(T));
    }
  } else {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t w = 0; w < width; ++w) dst[c * dst_c + w * dst_w] = src[c * src_c + w * src_w];
    }
  }
}

}  // namespace

void copy_between_layouts(const at::Tensor& src, const at::Tensor& dst) {
  TORCH_CHECK(src.dim() == 4 && src.sizes() == dst.sizes() && src.scalar_type() == dst.scalar_type(),
              "copy_between_layouts: expected two 4-D tensors of one size and dtype, got ", src.sizes(), " ",
              src.scalar_type(), " and ", dst.sizes(), " ", dst.scalar_type());
  const int64_t batch = src.size(0), channels = src.size(1), height = src.size(2), width = src.size(3);
  if (src.numel() == 0) return;
  const std::array<int64_t, 4> s{src.stride(0), src.stride(1), src.stride(2), src.stride(3)};
  const std::array<int64_t, 4> d{dst.stride(0), dst.stride(1), dst.stride(2), dst.stride(3)};
  const int64_t grain = std::max<int64_t>(1, 32768 / (channels * width));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, src.scalar_type(), "copy_between_layouts", [&] {
    const scalar_t* in = src.const_data_ptr<scalar_t>();
    scalar_t* out = dst.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, batch * height, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / height, h = row % height;
        copy_row(in + b * s[0] + h * s[2], s[1], s[3], out + b * d[0] + h * d[2], d[1], d[3], channels, width);
      }
    });
  });
}

}  // namespace pyvidgen::cpu
