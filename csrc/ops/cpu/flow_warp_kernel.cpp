// CPU kernels of flow_warp. Specification: kernels/reference/flow_warp.py (same formulas, same order
// of floating-point operations where it matters, so results agree to rounding).
//
// Forward: one work item per (batch, row). The row's sample positions, tap offsets and weights are
// computed once and reused for every channel, so the per-channel inner loop is four loads and a
// handful of multiply-adds per pixel.
// Backward: one work item per (batch, channel chunk); it owns its chunk's grad_x planes (no atomics)
// and sums the flow gradient over its channels. With several chunks per batch the partial flow
// gradients are added in chunk order afterwards. Chunking depends on shapes only, never on the
// thread count, so the result is bitwise reproducible.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/ops.h"

namespace pyvidgen::cpu {
namespace {

constexpr int64_t kZeros = 0;
constexpr int64_t kBorder = 1;
constexpr int64_t kReflection = 2;

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

template <typename T>
inline AxisTaps<T> axis_taps(T p, int64_t size, int64_t mode) {
  // Fold the position so that its floor fits in int64 without changing value or slope
  // (see _fold_position in the reference).
  if (mode == kReflection && size > 1) {
    const T period = static_cast<T>(2 * (size - 1));
    p = p - period * std::floor(p / period);
  } else {
    p = std::min(std::max(p, static_cast<T>(-2.0)), static_cast<T>(size + 1.0));
  }
  const T f = std::floor(p);
  const int64_t k = static_cast<int64_t>(f);
  AxisTaps<T> t;
  t.w1 = p - f;
  t.i0 = tap_index(k, size, mode, t.v0);
  t.i1 = tap_index(k + 1, size, mode, t.v1);
  return t;
}

// Everything about one output pixel that does not depend on the channel.
template <typename T>
struct Sample {
  int64_t off[4];  // plane offsets of taps 00, 01, 10, 11 (row, column)
  T wx0, wx1, wy0, wy1;
  unsigned valid;  // bit k set: tap k reads the image; 15 = all four (the common case)
  bool finite;     // the position is finite (else: NaN output, no gradient)
};

template <typename T>
void compute_row_samples(const T* flow_u, const T* flow_v, int64_t row, int64_t height, int64_t width,
                         int64_t mode, bool normalized, Sample<T>* samples) {
  const T scale_x = static_cast<T>((width - 1) / 2.0);
  const T scale_y = static_cast<T>((height - 1) / 2.0);
  for (int64_t j = 0; j < width; ++j) {
    T u = flow_u[j];
    T v = flow_v[j];
    if (normalized) {
      u = u * scale_x;
      v = v * scale_y;
    }
    T px = static_cast<T>(j) + u;
    T py = static_cast<T>(row) + v;
    Sample<T>& s = samples[j];
    s.finite = std::isfinite(px) && std::isfinite(py);
    if (!s.finite) px = py = T(0);
    const AxisTaps<T> ax = axis_taps(px, width, mode);
    const AxisTaps<T> ay = axis_taps(py, height, mode);
    s.off[0] = ay.i0 * width + ax.i0;
    s.off[1] = ay.i0 * width + ax.i1;
    s.off[2] = ay.i1 * width + ax.i0;
    s.off[3] = ay.i1 * width + ax.i1;
    s.valid = (ay.v0 && ax.v0 ? 1u : 0u) | (ay.v0 && ax.v1 ? 2u : 0u) | (ay.v1 && ax.v0 ? 4u : 0u) |
              (ay.v1 && ax.v1 ? 8u : 0u);
    s.wx1 = ax.w1;
    s.wx0 = T(1) - ax.w1;
    s.wy1 = ay.w1;
    s.wy0 = T(1) - ay.w1;
  }
}

template <typename T>
inline void tap_values(const Sample<T>& s, const T* plane, T v[4]) {
  if (s.valid == 15u) {
    v[0] = plane[s.off[0]];
    v[1] = plane[s.off[1]];
    v[2] = plane[s.off[2]];
    v[3] = plane[s.off[3]];
  } else {
    for (int k = 0; k < 4; ++k) v[k] = (s.valid >> k) & 1u ? plane[s.off[k]] : T(0);
  }
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t mode, bool normalized) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t plane = height * width;
  const T* x_data = x.const_data_ptr<T>();
  const T* flow_data = flow.const_data_ptr<T>();
  T* out_data = out.mutable_data_ptr<T>();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  // A row of work is about channels * width pixels; aim for a few thousand per grain.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, channels * width));

  at::parallel_for(0, batch * height, grain, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples(width);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / height, i = item % height;
      const T* flow_u = flow_data + b * 2 * plane + i * width;
      compute_row_samples(flow_u, flow_u + plane, i, height, width, mode, normalized, samples.data());
      for (int64_t c = 0; c < channels; ++c) {
        const T* src = x_data + (b * channels + c) * plane;
        T* dst = out_data + (b * channels + c) * plane + i * width;
        for (int64_t j = 0; j < width; ++j) {
          const Sample<T>& s = samples[j];
          T v[4];
          tap_values(s, src, v);
          const T value = s.wy0 * (s.wx0 * v[0] + s.wx1 * v[1]) + s.wy1 * (s.wx0 * v[2] + s.wx1 * v[3]);
          dst[j] = s.finite ? value : nan;
        }
      }
    }
  });
}

// Channels per backward work item: all of them when the batch alone gives enough items, else
// chunks of at least 16 channels. A function of the shape only (determinism).
int64_t backward_chunk_channels(int64_t batch, int64_t channels) {
  if (batch >= 16) return std::max<int64_t>(channels, 1);
  const int64_t wanted_chunks = (16 + batch - 1) / batch;
  const int64_t per_chunk = (channels + wanted_chunks - 1) / wanted_chunks;
  return std::max<int64_t>(std::min<int64_t>(std::max<int64_t>(per_chunk, 16), channels), 1);
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow, at::Tensor* grad_x,
                   at::Tensor* grad_flow, int64_t mode, bool normalized) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t plane = height * width;
  const int64_t chunk = backward_chunk_channels(batch, channels);
  const int64_t chunks = (channels + chunk - 1) / chunk;
  const T* go_data = grad_out.const_data_ptr<T>();
  const T* x_data = x.const_data_ptr<T>();
  const T* flow_data = flow.const_data_ptr<T>();
  T* gx_data = grad_x ? grad_x->mutable_data_ptr<T>() : nullptr;
  // Partial flow gradients per (batch, chunk) when a batch is split into several chunks.
  at::Tensor partial;
  T* gflow_data = nullptr;
  if (grad_flow) {
    if (chunks > 1) {
      partial = at::empty({batch, chunks, 2, height, width}, flow.options());
      gflow_data = partial.mutable_data_ptr<T>();
    } else {
      gflow_data = grad_flow->mutable_data_ptr<T>();
    }
  }
  const T scale_x = normalized ? static_cast<T>((width - 1) / 2.0) : T(1);
  const T scale_y = normalized ? static_cast<T>((height - 1) / 2.0) : T(1);

  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples(width);
    std::vector<T> acc_x(width), acc_y(width);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, chunk_index = item % chunks;
      const int64_t c_begin = chunk_index * chunk, c_end = std::min(channels, c_begin + chunk);
      if (gx_data) std::memset(gx_data + (b * channels + c_begin) * plane, 0, sizeof(T) * (c_end - c_begin) * plane);
      T* flow_grad_u = gflow_data ? gflow_data + (b * chunks + chunk_index) * 2 * plane : nullptr;
      for (int64_t i = 0; i < height; ++i) {
        const T* flow_u = flow_data + b * 2 * plane + i * width;
        compute_row_samples(flow_u, flow_u + plane, i, height, width, mode, normalized, samples.data());
        std::fill(acc_x.begin(), acc_x.end(), T(0));
        std::fill(acc_y.begin(), acc_y.end(), T(0));
        for (int64_t c = c_begin; c < c_end; ++c) {
          const T* go = go_data + (b * channels + c) * plane + i * width;
          const T* src = x_data + (b * channels + c) * plane;
          T* gsrc = gx_data ? gx_data + (b * channels + c) * plane : nullptr;
          for (int64_t j = 0; j < width; ++j) {
            const Sample<T>& s = samples[j];
            if (!s.finite) continue;
            const T g = go[j];
            if (gsrc) {
              const T w[4] = {s.wy0 * s.wx0, s.wy0 * s.wx1, s.wy1 * s.wx0, s.wy1 * s.wx1};
              for (int k = 0; k < 4; ++k) {
                if ((s.valid >> k) & 1u) gsrc[s.off[k]] += w[k] * g;
              }
            }
            if (flow_grad_u) {
              T v[4];
              tap_values(s, src, v);
              acc_x[j] += g * (s.wy0 * (v[1] - v[0]) + s.wy1 * (v[3] - v[2]));
              acc_y[j] += g * (s.wx0 * (v[2] - v[0]) + s.wx1 * (v[3] - v[1]));
            }
          }
        }
        if (flow_grad_u) {
          T* du = flow_grad_u + i * width;
          T* dv = flow_grad_u + plane + i * width;
          for (int64_t j = 0; j < width; ++j) {
            du[j] = samples[j].finite ? acc_x[j] * scale_x : T(0);
            dv[j] = samples[j].finite ? acc_y[j] * scale_y : T(0);
          }
        }
      }
    }
  });

  if (grad_flow && chunks > 1) {
    // Add the chunks' partial gradients in chunk order: the same sum whatever the thread count.
    T* dst = grad_flow->mutable_data_ptr<T>();
    const T* src = gflow_data;
    const int64_t per_batch = 2 * plane;
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
