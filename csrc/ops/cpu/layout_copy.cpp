#include "ops/cpu/layout_copy.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

namespace pyvidgen::cpu {
namespace {

// Tiles of 8 x 8: the 8 rows a tile reads from an NCHW plane lie a plane apart, often a multiple of
// 4 KiB, so they share one L1 set; 8 of them fit its ways where 16 would evict each other.
constexpr int64_t kTile = 8;

// dst[j * dst_ld + i] = src[i * src_ld + j] for i < rows, j < cols.
template <typename T>
inline void transpose_tile(const T* src, int64_t src_ld, T* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t i = 0; i < rows; ++i) dst[j * dst_ld + i] = src[i * src_ld + j];
  }
}

#if defined(CPU_CAPABILITY_AVX2)
// The full 8 x 8 float tile in registers: unpack pairs, shuffle quads, swap 128-bit halves.
inline void transpose_tile_8x8(const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * dst_ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * dst_ld, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}
#endif

// dst (src_cols x src_rows, leading dimension dst_ld) = transpose of src (src_rows x src_cols, src_ld),
// both with unit stride along their rows. The outer loop runs over 8-row blocks of whichever side has
// planes for rows (the NCHW side, a plane apart): its 8 rows are swept from start to end before the next
// 8, so those rows never compete with more than 8 others for one L1 set.
template <typename T>
void transpose_block(const T* src, int64_t src_ld, T* dst, int64_t dst_ld, int64_t src_rows, int64_t src_cols,
                     bool rows_are_planes) {
  const auto tile = [&](int64_t i0, int64_t j0) {
    const int64_t rows = std::min(kTile, src_rows - i0), cols = std::min(kTile, src_cols - j0);
    const T* s = src + i0 * src_ld + j0;
    T* d = dst + j0 * dst_ld + i0;
#if defined(CPU_CAPABILITY_AVX2)
    if constexpr (std::is_same_v<T, float>) {
      if (rows == kTile && cols == kTile) return transpose_tile_8x8(s, src_ld, d, dst_ld);
    }
#endif
    transpose_tile(s, src_ld, d, dst_ld, rows, cols);
  };
  if (rows_are_planes) {
    for (int64_t i0 = 0; i0 < src_rows; i0 += kTile) {
      for (int64_t j0 = 0; j0 < src_cols; j0 += kTile) tile(i0, j0);
    }
  } else {
    for (int64_t j0 = 0; j0 < src_cols; j0 += kTile) {
      for (int64_t i0 = 0; i0 < src_rows; i0 += kTile) tile(i0, j0);
    }
  }
}

// One (b, h) row of (C, W) values.
template <typename T>
void copy_row(const T* src, int64_t src_c, int64_t src_w, T* dst, int64_t dst_c, int64_t dst_w, int64_t channels,
              int64_t width) {
  if (src_w == 1 && dst_c == 1) {  // NCHW -> channels-last
    transpose_block(src, src_c, dst, dst_w, channels, width, /*rows_are_planes=*/true);
  } else if (src_c == 1 && dst_w == 1) {  // channels-last -> NCHW
    transpose_block(src, src_w, dst, dst_c, width, channels, /*rows_are_planes=*/false);
  } else if (src_w == 1 && dst_w == 1) {  // rows of W in both
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
