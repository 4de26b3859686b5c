// CPU kernels of flow_smoothness. Specification: kernels/reference/flow_smoothness.py.
// Forward: one partial sum per (batch, channel) plane, vectorised with at::vec and accumulated in
// fixed lane order, then the planes are added in order in double: reproducible bit for bit.
// Backward: elementwise, each output from its own four neighbours (no scatter, no atomics).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/scalar_tensor.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/flow_smoothness_kernel.h"

namespace pyvidgen::cpu {
namespace {

template <typename T>
inline T huber(T d, T delta) {
  const T a = std::abs(d);
  return a <= delta ? T(0.5) * d * d : delta * (a - T(0.5) * delta);
}

template <typename T>
inline T huber_slope(T d, T delta) {
  return std::min(std::max(d, -delta), delta);
}

// Sum of huber(b[k] - a[k]) for k < n.
template <typename T>
double huber_sum(const T* a, const T* b, int64_t n, T delta) {
  using Vec = at::vec::Vectorized<T>;
  const Vec vdelta(delta), vhalf(T(0.5)), vhalf_delta(T(0.5) * delta);
  Vec acc(T(0));
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    const Vec d = Vec::loadu(b + k) - Vec::loadu(a + k);
    const Vec abs_d = d.abs();
    const Vec quadratic = vhalf * d * d;
    const Vec linear = vdelta * (abs_d - vhalf_delta);
    // NaN differences take the linear branch, as in the reference (NaN <= delta is false).
    acc = acc + Vec::blendv(linear, quadratic, abs_d <= vdelta);
  }
  T lanes[Vec::size()];
  acc.store(lanes);
  double total = 0.0;
  for (int64_t l = 0; l < Vec::size(); ++l) total += static_cast<double>(lanes[l]);
  for (; k < n; ++k) total += static_cast<double>(huber(b[k] - a[k], delta));
  return total;
}

template <typename T>
at::Tensor forward_impl(const at::Tensor& flow, double delta_in) {
  const int64_t planes = flow.size(0) * flow.size(1), height = flow.size(2), width = flow.size(3);
  const T delta = static_cast<T>(delta_in);
  const T* data = flow.const_data_ptr<T>();
  std::vector<double> partial(planes, 0.0);
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* f = data + p * height * width;
      double total = 0.0;
      for (int64_t i = 0; i < height; ++i) total += huber_sum(f + i * width, f + i * width + 1, width - 1, delta);
      // Vertical differences: row i+1 minus row i, a whole plane minus one row in one contiguous sweep.
      total += huber_sum(f, f + width, (height - 1) * width, delta);
      partial[p] = total;
    }
  });
  double total = 0.0;
  for (double value : partial) total += value;
  // Beyond T's range the sum is infinite, as the reference's T-precision sum is (a flow of 1e38 overflows).
  const bool overflow = std::abs(total) > static_cast<double>(std::numeric_limits<T>::max());
  const T result = overflow ? std::copysign(std::numeric_limits<T>::infinity(), static_cast<T>(total > 0 ? 1 : -1))
                            : static_cast<T>(total);
  return at::scalar_tensor(result, flow.options());
}

// One row of the gradient: +slope(left difference) -slope(right) +slope(up) -slope(down), times
// scale, where a difference with a neighbour outside the image is absent. Same order of
// operations as the reference.
template <typename T>
void gradient_row(const T* f, T* g, int64_t width, bool has_up, bool has_down, T delta, T scale) {
  using Vec = at::vec::Vectorized<T>;
  auto scalar = [&](int64_t j) {
    T value = T(0);
    if (j > 0) value += huber_slope(f[j] - f[j - 1], delta);
    if (j + 1 < width) value -= huber_slope(f[j + 1] - f[j], delta);
    if (has_up) value += huber_slope(f[j] - f[j - width], delta);
    if (has_down) value -= huber_slope(f[j + width] - f[j], delta);
    g[j] = value * scale;
  };
  if (width < Vec::size() + 2) {
    for (int64_t j = 0; j < width; ++j) scalar(j);
    return;
  }
  const Vec vdelta(delta), vneg_delta(-delta), vscale(scale);
  auto slope = [&](const Vec& d) { return at::vec::clamp(d, vneg_delta, vdelta); };
  scalar(0);
  int64_t j = 1;
  // Interior columns have both horizontal neighbours.
  for (; j + Vec::size() <= width - 1; j += Vec::size()) {
    const Vec centre = Vec::loadu(f + j);
    Vec value = slope(centre - Vec::loadu(f + j - 1)) - slope(Vec::loadu(f + j + 1) - centre);
    if (has_up) value = value + slope(centre - Vec::loadu(f + j - width));
    if (has_down) value = value - slope(Vec::loadu(f + j + width) - centre);
    (value * vscale).store(g + j);
  }
  for (; j < width; ++j) scalar(j);
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& flow, at::Tensor& grad_flow, double delta_in) {
  const int64_t planes = flow.size(0) * flow.size(1), height = flow.size(2), width = flow.size(3);
  const T delta = static_cast<T>(delta_in);
  const T scale = grad.item<T>();
  const T* data = flow.const_data_ptr<T>();
  T* out = grad_flow.mutable_data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
  at::parallel_for(0, planes * height, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % height;
      gradient_row(data + r * width, out + r * width, width, i > 0, i + 1 < height, delta, scale);
    }
  });
}

}  // namespace

at::Tensor flow_smoothness_forward_kernel(const at::Tensor& flow, double delta) {
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES(flow.scalar_type(), "flow_smoothness_forward",
                             [&] { result = forward_impl<scalar_t>(flow, delta); });
  return result;
}

void flow_smoothness_backward_kernel(const at::Tensor& grad, const at::Tensor& flow, at::Tensor& grad_flow,
                                     double delta) {
  AT_DISPATCH_FLOATING_TYPES(flow.scalar_type(), "flow_smoothness_backward",
                             [&] { backward_impl<scalar_t>(grad, flow, grad_flow, delta); });
}

}  // namespace pyvidgen::cpu
