// Sampling geometry of flow_warp: where each output pixel's four bilinear taps are and how much
// each weighs. It does not depend on the channel, so the kernels compute it once per image.
// Specification: kernels/reference/flow_warp.py (_fold_position, _tap_index); the same
// floating-point operations in the same order, so positions agree with the reference exactly.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ops/cpu/unfused.h"

namespace pyvidgen::cpu::flow_warp_geometry {

constexpr int64_t kZeros = 0;
constexpr int64_t kBorder = 1;
constexpr int64_t kReflection = 2;

// The padding mode as the ops pass it (a string, as in kernels/reference/flow_warp.py PADDING_MODES) to its code.
inline int64_t padding_code(std::string_view name) {
  if (name == "zeros") return kZeros;
  if (name == "border") return kBorder;
  if (name == "reflection") return kReflection;
  TORCH_CHECK_VALUE(false, "flow_warp: padding_mode must be one of 'zeros', 'border', 'reflection', got '", name,
                    "'");
}

// Maps an integer tap to an index inside [0, size); `valid` is false when zeros padding reads 0.
inline int64_t tap_index(int64_t k, int64_t size, int64_t mode, bool& valid) {
  if (mode == kZeros) {
    valid = k >= 0 && k < size;
    return std::min(std::max<int64_t>(k, 0), size - 1);
  }
  valid = true;
  if (mode == kBorder || size == 1) return std::min(std::max<int64_t>(k, 0), size - 1);
  const int64_t period = 2 * (size - 1);
  int64_t m = k % period;
  if (m < 0) m += period;
  return m < size ? m : period - m;
}

template <typename T>
struct AxisTaps {
  int64_t i0, i1;  // in-image indices of the two taps
  bool v0, v1;     // taps that read the image (false: outside, zeros padding)
  T w1;            // weight of tap 1, the fractional part of the position
};

// Fold a finite position so that its taps are small integers without changing value or slope
// (reference: _fold_position). Reflection subtracts whole periods; where T cannot resolve one period
// at |p| (float32 beyond about 2^24 periods) the remainder is off by rounding steps, and the clamp
// keeps it, and so every tap, inside [-1, period + 1]. The operations are the reference's, in its
// order and unfused, so both land on the same taps.
template <typename T>
inline T fold_position(T p, int64_t size, int64_t mode) {
  if (mode == kReflection && size > 1) {
    const T period = static_cast<T>(2 * (size - 1));
    p = p - unfused(period * std::floor(p / period));
    return std::min(std::max(p, T(-1)), period + T(1));
  }
  return std::min(std::max(p, static_cast<T>(-2.0)), static_cast<T>(size + 1.0));
}

template <typename T>
inline AxisTaps<T> axis_taps(T p, int64_t size, int64_t mode) {
  p = fold_position(p, size, mode);
  const T f = std::floor(p);
  const int64_t k = static_cast<int64_t>(f);
  AxisTaps<T> t;
  t.w1 = p - f;
  t.i0 = tap_index(k, size, mode, t.v0);
  t.i1 = tap_index(k + 1, size, mode, t.v1);
  return t;
}

// The same for eight float lanes at once. After folding, taps lie in [-1, 2 * (size - 1) + 2], so
// the reflection's remainder needs one conditional add or subtract, not a division.
struct AxisTapsVec {
  using FVec = at::vec::Vectorized<float>;
  using IVec = at::vec::Vectorized<int32_t>;
  IVec i0, i1, v0, v1;  // v0, v1: all bits set where the tap reads the image
  FVec w1;
};

inline void tap_index_vec(const at::vec::Vectorized<int32_t>& k, int32_t size, int64_t mode,
                          at::vec::Vectorized<int32_t>& index, at::vec::Vectorized<int32_t>& valid) {
  using IVec = at::vec::Vectorized<int32_t>;
  const IVec zero(0), last(size - 1), all(-1);
  if (mode == kZeros) {
    valid = (k >= zero) & (k <= last);
    index = at::vec::minimum(at::vec::maximum(k, zero), last);
    return;
  }
  valid = all;
  if (mode == kBorder || size == 1) {
    index = at::vec::minimum(at::vec::maximum(k, zero), last);
    return;
  }
  const IVec period(2 * (size - 1)), vsize(size);
  IVec m = IVec::blendv(k, k + period, k < zero);
  m = IVec::blendv(m, m - period, m >= period);
  index = IVec::blendv(period - m, m, m < vsize);
}

inline AxisTapsVec axis_taps_vec(at::vec::Vectorized<float> p, int32_t size, int64_t mode) {
  using FVec = at::vec::Vectorized<float>;
  if (mode == kReflection && size > 1) {
    const FVec period(static_cast<float>(2 * (size - 1)));
    p = p - unfused(period * (p / period).floor());
    p = at::vec::clamp(p, FVec(-1.0f), period + FVec(1.0f));
  } else {
    p = at::vec::clamp(p, FVec(-2.0f), FVec(static_cast<float>(size + 1.0)));
  }
  const FVec f = p.floor();
  AxisTapsVec t;
  t.w1 = p - f;
  const auto k = at::vec::convert_to_int_of_same_size(f);  // exact: f is integral and small
  tap_index_vec(k, size, mode, t.i0, t.v0);
  tap_index_vec(k + at::vec::Vectorized<int32_t>(1), size, mode, t.i1, t.v1);
  return t;
}

// The sampling geometry of the output pixels of a band of rows of one image (the whole image when
// the band spans it); arrays are indexed by the pixel's offset p from the band's first pixel. Tap k
// (00, 01, 10, 11 = row, column offset) of pixel p reads source row y, column x at index[k][p] =
// (y & row_mask) * W + x, or the all-zero sink pixel `sink` when it reads nothing (zeros padding
// outside the image, or a non-finite position). row_mask is all bits when the source buffer holds the
// whole image (index = y * W + x, sink = H * W) and ring - 1 when it holds a power-of-two ring of rows.
// Reading a real zero, rather than multiplying by a zero weight, keeps a NaN or inf elsewhere in
// the image out of the result, as in the reference. Indices are 32-bit: H * W < 2^31 is checked.
template <typename T>
struct ImageGeometry {
  std::vector<int32_t> index[4];
  std::vector<T> wx1, wy1;        // fractional parts: weights of the right and lower taps
  std::vector<int32_t> finite;    // -1 (all bits) where the position is finite, else 0

  explicit ImageGeometry(int64_t pixels) : wx1(pixels), wy1(pixels), finite(pixels) {
    for (auto& ix : index) ix.resize(pixels);
  }

  // flow_u, flow_v: the image's two flow planes (H*W each); rows [row_begin, row_end) are computed
  // (the arrays must hold (row_end - row_begin) * width pixels).
  void compute(const T* flow_u, const T* flow_v, int64_t height, int64_t width, int64_t mode, bool normalized,
               int64_t row_begin, int64_t row_end, int32_t row_mask, int32_t sink) {
    row_mask_ = row_mask;
    sink_ = sink;
    const T scale_x = static_cast<T>((width - 1) / 2.0);
    const T scale_y = static_cast<T>((height - 1) / 2.0);
    base_ = row_begin * width;
    for (int64_t i = row_begin; i < row_end; ++i) {
      int64_t j = 0;
      if constexpr (std::is_same_v<T, float>) {
        j = compute_row_vec(flow_u, flow_v, i, height, width, mode, normalized, scale_x, scale_y);
      }
      for (; j < width; ++j) compute_pixel(flow_u, flow_v, i, j, height, width, mode, normalized, scale_x, scale_y);
    }
  }

 private:
  int64_t base_ = 0;  // image pixel index of the band's first pixel
  int32_t row_mask_ = -1;
  int32_t sink_ = 0;

  void compute_pixel(const T* flow_u, const T* flow_v, int64_t i, int64_t j, int64_t height, int64_t width,
                     int64_t mode, bool normalized, T scale_x, T scale_y) {
    const int64_t p = i * width + j, sink = sink_, q = p - base_;
    T u = flow_u[p];
    T v = flow_v[p];
    if (normalized) {
      u = unfused(u * scale_x);
      v = unfused(v * scale_y);
    }
    T px = static_cast<T>(j) + u;
    T py = static_cast<T>(i) + v;
    const bool ok = std::isfinite(px) && std::isfinite(py);
    if (!ok) px = py = T(0);
    const AxisTaps<T> ax = axis_taps(px, width, mode);
    const AxisTaps<T> ay = axis_taps(py, height, mode);
    const int64_t row0 = (ay.i0 & row_mask_) * width, row1 = (ay.i1 & row_mask_) * width;
    index[0][q] = static_cast<int32_t>(ok && ay.v0 && ax.v0 ? row0 + ax.i0 : sink);
    index[1][q] = static_cast<int32_t>(ok && ay.v0 && ax.v1 ? row0 + ax.i1 : sink);
    index[2][q] = static_cast<int32_t>(ok && ay.v1 && ax.v0 ? row1 + ax.i0 : sink);
    index[3][q] = static_cast<int32_t>(ok && ay.v1 && ax.v1 ? row1 + ax.i1 : sink);
    wx1[q] = ax.w1;
    wy1[q] = ay.w1;
    finite[q] = ok ? -1 : 0;
  }

  // Whole vectors of row i; returns the first column left for the scalar tail.
  int64_t compute_row_vec(const float* flow_u, const float* flow_v, int64_t i, int64_t height, int64_t width,
                          int64_t mode, bool normalized, float scale_x, float scale_y) {
    using FVec = at::vec::Vectorized<float>;
    using IVec = at::vec::Vectorized<int32_t>;
    constexpr int64_t lanes = FVec::size();
    const FVec zero(0.0f), row(static_cast<float>(i)), lane = FVec::arange(0.0f, 1.0f);
    const IVec sink(sink_), vwidth(static_cast<int32_t>(width)), mask(row_mask_);
    int64_t j = 0;
    for (; j + lanes <= width; j += lanes) {
      const int64_t p = i * width + j, q = p - base_;
      FVec u = FVec::loadu(flow_u + p);
      FVec v = FVec::loadu(flow_v + p);
      if (normalized) {
        u = unfused(u * FVec(scale_x));
        v = unfused(v * FVec(scale_y));
      }
      FVec px = (FVec(static_cast<float>(j)) + lane) + u;  // j + lane is exact, as is the scalar (float)j
      FVec py = row + v;
      // x - x is 0 for finite x and NaN for NaN or inf.
      const FVec ok_f = ((px - px) == zero) & ((py - py) == zero);
      const IVec ok = at::vec::cast<int32_t>(ok_f);
      px = FVec::blendv(zero, px, ok_f);
      py = FVec::blendv(zero, py, ok_f);
      const AxisTapsVec ax = axis_taps_vec(px, static_cast<int32_t>(width), mode);
      const AxisTapsVec ay = axis_taps_vec(py, static_cast<int32_t>(height), mode);
      const IVec row0 = (ay.i0 & mask) * vwidth, row1 = (ay.i1 & mask) * vwidth;
      IVec::blendv(sink, row0 + ax.i0, ok & ay.v0 & ax.v0).store(index[0].data() + q);
      IVec::blendv(sink, row0 + ax.i1, ok & ay.v0 & ax.v1).store(index[1].data() + q);
      IVec::blendv(sink, row1 + ax.i0, ok & ay.v1 & ax.v0).store(index[2].data() + q);
      IVec::blendv(sink, row1 + ax.i1, ok & ay.v1 & ax.v1).store(index[3].data() + q);
      ax.w1.store(wx1.data() + q);
      ay.w1.store(wy1.data() + q);
      ok.store(finite.data() + q);
    }
    return j;
  }
};

}  // namespace pyvidgen::cpu::flow_warp_geometry
