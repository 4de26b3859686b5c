// CPU kernels of flow_warp. Specification: kernels/reference/flow_warp.py (same formulas, same order
// of floating-point operations where it matters, so results agree to rounding).
//
// Work items are (batch, channel chunk). Each item walks the output in bands of rows: for each band
// it computes the band's sampling geometry (positions, tap indices, weights; independent of the
// channel) and then samples (forward) or scatters (backward) all the item's channels of the band, so
// the geometry and the band's output or upstream gradient stay in cache whatever the image size.
// The source (and in the backward the gradient to it) is held pixel-major, so that a tap of all
// channels is one contiguous run. When the image's vertical flow is bounded by a few rows, only a
// window of source rows around the band is held, in a power-of-two ring of rows filled (and, for
// grad_x, zeroed and written out) as the bands move down; otherwise the whole image is held. The
// backward item owns its grad_x planes (no atomics), scatters into them in pixel order band after
// band, and sums the flow gradient over its channels; with several chunks per image, their partial
// flow gradients are added in chunk order afterwards. Chunking depends on shapes only, never on the
// thread count, and the ring changes where a value is kept, not the order it is summed in, so the
// result is bitwise reproducible.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/cpu/flow_warp_geometry.h"
#include "ops/cpu/flow_warp_kernel.h"
#include "ops/cpu/layout_copy.h"
#include "ops/outputs.h"

namespace pyvidgen::cpu {
namespace {

using flow_warp_geometry::ImageGeometry;

// Channels per work item: all of them when the batch alone gives enough items, else chunks of at
// least 16 channels. A function of the shape only, so the backward's sums are reproducible.
int64_t chunk_channels(int64_t batch, int64_t channels) {
  if (batch >= 16) return std::max<int64_t>(channels, 1);
  const int64_t wanted_chunks = (16 + batch - 1) / batch;
  const int64_t per_chunk = (channels + wanted_chunks - 1) / wanted_chunks;
  return std::max<int64_t>(std::min<int64_t>(std::max<int64_t>(per_chunk, 16), channels), 1);
}

// Copies the first `pixels` pixels of `count` channel planes (plane[c * plane_size + p]) to a
// pixel-major buffer (buffer[p * stride + c]) or back, eight planes at a time (transpose_tiles).
template <bool kToPixelMajor, typename T>
void copy_tiles(const T* src, T* dst, int64_t count, int64_t pixels, int64_t plane_size, int64_t stride) {
  if constexpr (kToPixelMajor) {
    transpose_tiles(src, plane_size, dst, stride, count, pixels, /*plane_rows=*/true);
  } else {
    transpose_tiles(src, stride, dst, plane_size, pixels, count, /*plane_rows=*/false);
  }
}

// Pixel-major copy of `count` channel planes: dst[p * stride + c] = src[c * plane_size + p]. In this
// layout the four taps of a pixel are contiguous runs over the channels, so sampling is plain
// vector loads instead of gathers. Lanes count..stride-1 are zeroed: whole vectors are summed over.
template <typename T>
void to_pixel_major(const T* src, int64_t count, int64_t pixels, int64_t plane_size, T* dst, int64_t stride) {
  using Vec = at::vec::Vectorized<T>;
  if (count < 8) {  // a few channels (an RGB image), one vector per pixel
    int64_t p = 0;
    if constexpr (std::is_same_v<T, float>) {
      if (stride == 8 && Vec::size() == 8) {
        // Eight pixels at a time: the channels' runs and zero rows make a full 8x8 tile, whose transpose
        // writes the eight pixels' vectors, padding lanes included.
        alignas(32) float tile[8][8] = {};
        for (; p + 8 <= pixels; p += 8) {
          for (int64_t c = 0; c < count; ++c) Vec::loadu(src + c * plane_size + p).store(tile[c]);
          at::vec::transpose_mxn<float, 8, 8>(&tile[0][0], 8, dst + p * stride, stride);
        }
      }
    }
    for (; p < pixels; ++p) {
      for (int64_t c = 0; c < stride; c += Vec::size()) Vec(T(0)).store(dst + p * stride + c);
      for (int64_t c = 0; c < count; ++c) dst[p * stride + c] = src[c * plane_size + p];
    }
    return;
  }
  for (int64_t p = 0; p < pixels && count < stride; ++p) {
    for (int64_t c = count; c < stride; ++c) dst[p * stride + c] = T(0);  // a loop, not a memset call per pixel
  }
  copy_tiles<true>(src, dst, count, pixels, plane_size, stride);
}

// The inverse: dst[c * plane_size + p] = src[p * stride + c] for c < count, p < pixels.
template <typename T>
void to_channel_major(const T* src, int64_t stride, int64_t count, int64_t pixels, int64_t plane_size, T* dst) {
  if (count < 8) {
    int64_t p = 0;
    if constexpr (std::is_same_v<T, float>) {
      using Vec = at::vec::Vectorized<float>;
      if (stride == 8 && Vec::size() == 8) {
        // Eight pixels' vectors transposed at once; the first `count` rows of the tile are the channels' runs.
        alignas(32) float tile[8][8];
        for (; p + 8 <= pixels; p += 8) {
          at::vec::transpose_mxn<float, 8, 8>(src + p * stride, stride, &tile[0][0], 8);
          for (int64_t c = 0; c < count; ++c) Vec::loadu(tile[c]).store(dst + c * plane_size + p);
        }
      }
    }
    for (int64_t c = 0; c < count; ++c) {
      for (int64_t q = p; q < pixels; ++q) dst[c * plane_size + q] = src[q * stride + c];
    }
    return;
  }
  copy_tiles<false>(src, dst, count, pixels, plane_size, stride);
}

// Rows per band: about kBandPixels pixels, so that a band's geometry and pixel-major output or
// upstream gradient (a few hundred KiB at most) stay in L2 while its channels are processed.
constexpr int64_t kBandPixels = 2048;
int64_t band_rows(int64_t height, int64_t width) {
  return std::max<int64_t>(1, std::min<int64_t>(height, kBandPixels / std::max<int64_t>(width, 1)));
}

// Largest |vertical flow| in rows over the image's finite flows (non-finite ones read nothing), rounded
// up; `limit` when it reaches that far (or the flow is huge), which callers treat as "the whole image".
template <typename T>
int64_t vertical_reach(const T* flow_v, int64_t pixels, bool normalized, T scale_y, int64_t limit) {
  using Vec = at::vec::Vectorized<T>;
  const Vec zero(T(0));
  Vec largest(T(0));
  int64_t p = 0;
  for (; p + Vec::size() <= pixels; p += Vec::size()) {
    Vec v = Vec::loadu(flow_v + p);
    if (normalized) v = v * Vec(scale_y);  // a bound: rounding is covered by the window's margin
    // v - v is 0 for finite v and NaN otherwise: non-finite lanes count as 0.
    largest = at::vec::maximum(largest, Vec::blendv(zero, v.abs(), (v - v) == zero));
  }
  T lanes[Vec::size()];
  largest.store(lanes);
  T result = T(0);
  for (int64_t l = 0; l < Vec::size(); ++l) result = std::max(result, lanes[l]);
  for (; p < pixels; ++p) {
    const T v = normalized ? flow_v[p] * scale_y : flow_v[p];
    if (std::isfinite(v)) result = std::max(result, std::abs(v));
  }
  return result < static_cast<T>(limit) ? std::min<int64_t>(static_cast<int64_t>(std::ceil(result)), limit) : limit;
}

// Where the rows of a pixel-major source (or gradient) buffer go: row y in slot y & mask of `slots`.
// A band [r0, r1) of output rows whose vertical flows are at most `reach` rows reads rows
// [r0 - reach - 2, r1 + reach + 2) (one row for the bilinear tap below, one for rounding of i + v; the
// reflected or clamped position of a tap outside the image is no farther from its row). When a
// power-of-two ring holding that window is smaller than the image it is used; else the whole image.
struct RowRing {
  int64_t slots;
  int32_t mask;
  int64_t reach;  // rows the window reaches beyond a band; the height for the whole image

  RowRing(int64_t height, int64_t band_rows, int64_t flow_reach) : slots(height), mask(-1), reach(height) {
    const int64_t window = band_rows + 2 * (flow_reach + 2);
    int64_t ring = 1;
    while (ring < window) ring *= 2;
    if (ring < height) {
      slots = ring;
      mask = static_cast<int32_t>(ring - 1);
      reach = flow_reach + 2;
    }
  }
  int64_t slot(int64_t row) const { return row & mask; }
  // Calls f(first_row, rows) for the runs of [row_begin, row_end) that lie in consecutive slots.
  template <typename F>
  void runs(int64_t row_begin, int64_t row_end, F&& f) const {
    for (int64_t y = row_begin; y < row_end;) {
      const int64_t n = std::min(row_end - y, slots - slot(y));
      f(y, n);
      y += n;
    }
  }
};

template <typename T>
int64_t padded_stride(int64_t count) {
  const int64_t lanes = at::vec::Vectorized<T>::size();
  return (count + lanes - 1) / lanes * lanes;
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t mode, bool normalized) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t pixels = height * width;
  const int64_t chunk = chunk_channels(batch, channels);
  const int64_t chunks = (channels + chunk - 1) / chunk;
  const int64_t stride = padded_stride<T>(chunk);
  const T* x_data = x.const_data_ptr<T>();
  const T* flow_data = flow.const_data_ptr<T>();
  T* out_data = out.mutable_data_ptr<T>();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const int64_t rows = band_rows(height, width);
  const T scale_y = static_cast<T>((height - 1) / 2.0);

  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    ImageGeometry<T> geo(rows * width);
    outputs::Scratch<T> source;                   // pixel-major rows of x, + the zero sink pixel
    std::vector<T> result(rows * width * stride);  // pixel-major output of one band
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, c0 = (item % chunks) * chunk;
      const int64_t count = std::min(chunk, channels - c0);
      const T* flow_u = flow_data + b * 2 * pixels;
      const T* flow_v = flow_u + pixels;
      const RowRing ring(height, rows, vertical_reach(flow_v, pixels, normalized, scale_y, height));
      const int64_t sink = ring.slots * width;
      source.resize((sink + 1) * stride);
      std::fill(source.begin() + sink * stride, source.begin() + (sink + 1) * stride, T(0));
      const T* x_item = x_data + (b * channels + c0) * pixels;
      int64_t ready = 0;  // rows [0, ready) have been copied into the ring
      for (int64_t r0 = 0; r0 < height; r0 += rows) {
        const int64_t r1 = std::min(height, r0 + rows), band = (r1 - r0) * width, base = r0 * width;
        const int64_t need = std::min(height, r1 + ring.reach);
        ring.runs(std::max(ready, r0 - ring.reach), need, [&](int64_t y, int64_t n) {
          to_pixel_major(x_item + y * width, count, n * width, pixels, source.data() + ring.slot(y) * width * stride,
                         stride);
        });
        ready = std::max(ready, need);
        geo.compute(flow_u, flow_v, height, width, mode, normalized, r0, r1, ring.mask, static_cast<int32_t>(sink));
        for (int64_t p = 0; p < band; ++p) {
          T* dst = result.data() + p * stride;
          if (!geo.finite[p]) {
            std::fill(dst, dst + stride, nan);
            continue;
          }
          const T wx1 = geo.wx1[p], wy1 = geo.wy1[p];
          const T wx0 = T(1) - wx1, wy0 = T(1) - wy1;
          const Vec w00(wy0 * wx0), w01(wy0 * wx1), w10(wy1 * wx0), w11(wy1 * wx1);
          const T* t00 = source.data() + int64_t{geo.index[0][p]} * stride;
          const T* t01 = source.data() + int64_t{geo.index[1][p]} * stride;
          const T* t10 = source.data() + int64_t{geo.index[2][p]} * stride;
          const T* t11 = source.data() + int64_t{geo.index[3][p]} * stride;
          for (int64_t c = 0; c < stride; c += Vec::size()) {
            const Vec value = w00 * Vec::loadu(t00 + c) + w01 * Vec::loadu(t01 + c) + w10 * Vec::loadu(t10 + c) +
                              w11 * Vec::loadu(t11 + c);
            value.store(dst + c);
          }
        }
        to_channel_major(result.data(), stride, count, band, pixels, out_data + (b * channels + c0) * pixels + base);
      }
    }
  });
}

// The lane sums of two vectors, in a fixed order (a pairwise tree): the flow gradient's x and y parts.
template <typename T>
inline void horizontal_sums(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b, T& sum_a, T& sum_b) {
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    // [a01, a23, b01, b23, a45, a67, b45, b67] -> [a0123, b0123, ., ., a4567, b4567, ., .] -> halves added.
    __m256 pairs = _mm256_hadd_ps(a, b);
    pairs = _mm256_hadd_ps(pairs, pairs);
    const __m128 total = _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
    sum_a = _mm_cvtss_f32(total);
    sum_b = _mm_cvtss_f32(_mm_shuffle_ps(total, total, 1));
    return;
  }
#endif
  T lanes_a[at::vec::Vectorized<T>::size()], lanes_b[at::vec::Vectorized<T>::size()];
  a.store(lanes_a);
  b.store(lanes_b);
  sum_a = sum_b = T(0);
  for (int64_t l = 0; l < at::vec::Vectorized<T>::size(); ++l) {
    sum_a += lanes_a[l];
    sum_b += lanes_b[l];
  }
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow, at::Tensor* grad_x,
                   at::Tensor* grad_flow, int64_t mode, bool normalized) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t pixels = height * width;
  const int64_t chunk = chunk_channels(batch, channels);
  const int64_t chunks = (channels + chunk - 1) / chunk;
  const int64_t stride = padded_stride<T>(chunk);
  const T* go_data = grad_out.const_data_ptr<T>();
  const T* x_data = x.const_data_ptr<T>();
  const T* flow_data = flow.const_data_ptr<T>();
  T* gx_data = grad_x ? grad_x->mutable_data_ptr<T>() : nullptr;
  // Partial flow gradients per (batch, chunk) when a batch is split into several chunks.
  at::Tensor partial;
  T* gflow_data = nullptr;
  if (grad_flow) {
    if (chunks > 1) {
      partial = outputs::empty({batch, chunks, 2, height, width}, flow.options());
      gflow_data = partial.mutable_data_ptr<T>();
    } else {
      gflow_data = grad_flow->mutable_data_ptr<T>();
    }
  }
  const T scale_x = normalized ? static_cast<T>((width - 1) / 2.0) : T(1);
  const T scale_y = normalized ? static_cast<T>((height - 1) / 2.0) : T(1);

  const int64_t rows = band_rows(height, width);

  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    ImageGeometry<T> geo(rows * width);
    outputs::Scratch<T> source;                            // rows of x, pixel-major, + zero sink
    std::vector<T> upstream(rows * width * stride, T(0));  // grad_out of one band, pixel-major
    outputs::Scratch<T> accum;                             // rows of grad_x, pixel-major, + sink
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, chunk_index = item % chunks;
      const int64_t c0 = chunk_index * chunk, count = std::min(chunk, channels - c0);
      const T* flow_u = flow_data + b * 2 * pixels;
      const T* flow_v = flow_u + pixels;
      const RowRing ring(height, rows, vertical_reach(flow_v, pixels, normalized, scale_y, height));
      const int64_t sink = ring.slots * width;
      const size_t buffer = (sink + 1) * stride;
      if (gflow_data) {
        source.resize(buffer);
        std::fill(source.begin() + sink * stride, source.begin() + (sink + 1) * stride, T(0));
      }
      if (gx_data) accum.resize(buffer);
      const T* x_item = x_data + (b * channels + c0) * pixels;
      T* gx_item = gx_data ? gx_data + (b * channels + c0) * pixels : nullptr;
      // Rows [0, ready) of x are in the source ring; rows [flushed, zeroed) of grad_x are in the
      // accumulation ring, rows before `flushed` are final and written out.
      int64_t ready = 0, zeroed = 0, flushed = 0;
      const auto flush = [&](int64_t row_end) {
        ring.runs(flushed, row_end, [&](int64_t y, int64_t n) {
          to_channel_major(accum.data() + ring.slot(y) * width * stride, stride, count, n * width, pixels,
                           gx_item + y * width);
        });
        flushed = std::max(flushed, row_end);
      };
      T* du_image = gflow_data ? gflow_data + (b * chunks + chunk_index) * 2 * pixels : nullptr;
      // Bands in row order and pixels in order within each: every grad_x element receives its
      // contributions in pixel order, as in one pass over the image.
      for (int64_t r0 = 0; r0 < height; r0 += rows) {
        const int64_t r1 = std::min(height, r0 + rows), band = (r1 - r0) * width, base = r0 * width;
        const int64_t first = std::max<int64_t>(0, r0 - ring.reach), need = std::min(height, r1 + ring.reach);
        if (gflow_data) {
          ring.runs(std::max(ready, first), need, [&](int64_t y, int64_t n) {
            to_pixel_major(x_item + y * width, count, n * width, pixels, source.data() + ring.slot(y) * width * stride,
                           stride);
          });
          ready = std::max(ready, need);
        }
        if (gx_data) {
          flush(first);  // no later band reaches rows above this one's window
          ring.runs(std::max(zeroed, first), need, [&](int64_t y, int64_t n) {
            T* rows_start = accum.data() + ring.slot(y) * width * stride;
            std::fill(rows_start, rows_start + n * width * stride, T(0));
          });
          zeroed = std::max(zeroed, need);
        }
        geo.compute(flow_u, flow_v, height, width, mode, normalized, r0, r1, ring.mask, static_cast<int32_t>(sink));
        to_pixel_major(go_data + (b * channels + c0) * pixels + base, count, band, pixels, upstream.data(), stride);
        T* du = du_image ? du_image + base : nullptr;
        for (int64_t p = 0; p < band; ++p) {
          const T wx1 = geo.wx1[p], wy1 = geo.wy1[p];
          const T wx0 = T(1) - wx1, wy0 = T(1) - wy1;
          const T* g = upstream.data() + p * stride;
          const int64_t o00 = int64_t{geo.index[0][p]} * stride, o01 = int64_t{geo.index[1][p]} * stride;
          const int64_t o10 = int64_t{geo.index[2][p]} * stride, o11 = int64_t{geo.index[3][p]} * stride;
          if (gx_data) {
            // Taps that read nothing go to the sink pixel, which is never copied out.
            const Vec w00(wy0 * wx0), w01(wy0 * wx1), w10(wy1 * wx0), w11(wy1 * wx1);
            T* a = accum.data();
            for (int64_t c = 0; c < stride; c += Vec::size()) {
              const Vec gv = Vec::loadu(g + c);
              (Vec::loadu(a + o00 + c) + w00 * gv).store(a + o00 + c);
              (Vec::loadu(a + o01 + c) + w01 * gv).store(a + o01 + c);
              (Vec::loadu(a + o10 + c) + w10 * gv).store(a + o10 + c);
              (Vec::loadu(a + o11 + c) + w11 * gv).store(a + o11 + c);
            }
          }
          if (du) {
            const T* s = source.data();
            const Vec vwx0(wx0), vwx1(wx1), vwy0(wy0), vwy1(wy1);
            Vec acc_x(T(0)), acc_y(T(0));
            for (int64_t c = 0; c < stride; c += Vec::size()) {
              const Vec gv = Vec::loadu(g + c);
              const Vec v00 = Vec::loadu(s + o00 + c), v01 = Vec::loadu(s + o01 + c);
              const Vec v10 = Vec::loadu(s + o10 + c), v11 = Vec::loadu(s + o11 + c);
              acc_x = acc_x + gv * (vwy0 * (v01 - v00) + vwy1 * (v11 - v10));
              acc_y = acc_y + gv * (vwx0 * (v10 - v00) + vwx1 * (v11 - v01));
            }
            T sum_x, sum_y;
            horizontal_sums(acc_x, acc_y, sum_x, sum_y);
            du[p] = geo.finite[p] ? sum_x * scale_x : T(0);
            du[pixels + p] = geo.finite[p] ? sum_y * scale_y : T(0);
          }
        }
      }
      if (gx_data) flush(height);
    }
  });

  if (grad_flow && chunks > 1) {
    // Add the chunks' partial gradients in chunk order: the same sum whatever the thread count.
    T* dst = grad_flow->mutable_data_ptr<T>();
    const T* src = gflow_data;
    const int64_t per_batch = 2 * pixels;
    at::parallel_for(0, batch * per_batch, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t b = e / per_batch, k = e % per_batch;
        T total = T(0);
        for (int64_t ch = 0; ch < chunks; ++ch) total += src[(b * chunks + ch) * per_batch + k];
        dst[e] = total;
      }
    });
  }
}

}  // namespace

void flow_warp_forward_kernel(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t padding_mode,
                              bool normalized) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "flow_warp_forward", [&] {
    forward_impl<scalar_t>(x, flow, out, padding_mode, normalized);
  });
}

void flow_warp_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow,
                               at::Tensor* grad_x, at::Tensor* grad_flow, int64_t padding_mode, bool normalized) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "flow_warp_backward", [&] {
    backward_impl<scalar_t>(grad_out, x, flow, grad_x, grad_flow, padding_mode, normalized);
  });
}

}  // namespace pyvidgen::cpu
