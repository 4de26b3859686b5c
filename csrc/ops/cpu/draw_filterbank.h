// DRAW's Gaussian filterbanks for draw_read and draw_write's CPU kernels, and their gradients.
// Specification: kernels/reference/draw_filterbank.py.
//
// One sample's filterbank of one axis (N x L) is built on the fly into a caller's buffer: never a
// materialised (B, N, L) tensor. The arithmetic follows the reference operation for operation (the
// same expression for each centre, `-(d * d) / (2 sigma2)`, the 1e-8 floor as a NaN-propagating clamp,
// the gradient's divisions by sigma2 in the same order), so NaN and infinities come out where the
// reference's do, not only finite values within rounding.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ops/cpu/gate_math.h"
#include "ops/cpu/small_gemm.h"
#include "ops/cpu/unfused.h"

namespace pyvidgen::cpu::draw {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// The normaliser's floor: a glimpse whose weights all underflow gives F = 0, not 0/0.
template <typename T>
inline T eps() {
  return static_cast<T>(1e-8);
}

// i - N/2 - 0.5 for 0-based i (the paper's i = 1..N): exact, half-integers.
template <typename T>
inline T offset(int64_t i, int64_t n) {
  return static_cast<T>(i + 1) - (static_cast<T>(n) / T(2) + T(0.5));
}

// Rounded as the reference's separate multiply and add: at extreme magnitudes (a centre 1e31 with a stride
// 3e30) the sum cancels, and a fused multiply-add would leave a residue of 1e23 pixels where the reference
// gets 0, moving a filter from inside the image to far outside it.
template <typename T>
inline T centre(T g, T delta, int64_t i, int64_t n) {
  return g + unfused(offset<T>(i, n) * delta);
}

// exp of a filter's exponent -(d^2) / (2 sigma2). float on AVX2/AVX512 builds: gate_math's inline exp (1 ulp;
// Sleef's, called out of line, took a sixth of the kernels' time), with every result below 2^-125
// (exponent < -86.6) flushed to 0 where the reference keeps ever smaller subnormals: a weight changes by at
// most 2e-38 (2e-30 once divided by the 1e-8 floor), far inside every tolerance, and a filter that misses
// the image still reads exactly 0. NaN stays NaN, an exponent of +inf (a negative sigma2) gives inf.
template <typename T>
inline Vec<T> gaussian_exp(const Vec<T>& x) {
  return x.exp();
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
template <>
inline Vec<float> gaussian_exp(const Vec<float>& x) {
  const Vec<float> tiny = x < Vec<float>(-86.6f);
  return Vec<float>::blendv(gate_math::gate_exp(x), Vec<float>(0.0f), tiny);
}
#endif

// sum_k a[k] * b[k]: two vector accumulators, then the tail.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = Vec<T>;
  constexpr int64_t width = V::size();
  V acc0(T(0)), acc1(T(0));
  int64_t k = 0;
  for (; k + 2 * width <= n; k += 2 * width) {
    acc0 = at::vec::fmadd(V::loadu(a + k), V::loadu(b + k), acc0);
    acc1 = at::vec::fmadd(V::loadu(a + k + width), V::loadu(b + k + width), acc1);
  }
  if (k + width <= n) {
    acc0 = at::vec::fmadd(V::loadu(a + k), V::loadu(b + k), acc0);
    k += width;
  }
  alignas(64) T lanes[width];
  (acc0 + acc1).store(lanes);
  T sum = T(0);
  for (int64_t l = 0; l < width; ++l) sum += lanes[l];
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

// The filterbank of one axis: f (n x size, rows `stride` apart, `stride` >= size rounded up to whole vectors;
// the columns past size are set to 0), and each filter's unnormalised sum in total (n). The last, partial
// vector of a row is computed whole and its lanes past size dropped by a blend: a scalar exp per column
// there cost more than the vectors before it.
template <typename T>
inline void filterbank(T g, T delta, T sigma2, int64_t n, int64_t size, int64_t stride, T* f, T* total) {
  using V = Vec<T>;
  constexpr int64_t width = V::size();
  const T two_sigma2 = T(2) * sigma2;
  const int64_t full = size / width * width;
  // Lanes of the last vector that lie inside the row: 1s there, 0s past size.
  const V inside = V::arange(static_cast<T>(full), T(1)) < V(static_cast<T>(size));
  for (int64_t i = 0; i < n; ++i) {
    const T mu = centre(g, delta, i, n);
    T* row = f + i * stride;
    V acc(T(0));
    for (int64_t a = 0; a < size; a += width) {
      const V d = V::arange(static_cast<T>(a), T(1)) - V(mu);
      V e = gaussian_exp((d * d).neg() / V(two_sigma2));
      if (a == full) e = V::blendv(V(T(0)), e, inside);
      e.store(row + a);
      acc = acc + e;
    }
    alignas(64) T lanes[width];
    acc.store(lanes);
    T sum = T(0);
    for (int64_t l = 0; l < width; ++l) sum += lanes[l];
    total[i] = sum;
    // torch's clamp_min: NaN stays NaN.
    const T clamped = sum < eps<T>() ? eps<T>() : sum;
    for (int64_t a = 0; a < size; a += width) {
      V normalised = V::loadu(row + a) / V(clamped);
      if (a == full) normalised = V::blendv(V(T(0)), normalised, inside);
      normalised.store(row + a);
    }
  }
}

// Gradients of one axis's filterbank: grad_f (n x size, rows `stride` apart) = dL/dF, f and total from
// filterbank(). With
// r = (grad_f - q) F, q = sum_a grad_f F (0 where the floor holds), dL/dmu_i = sum_a r d / sigma2 and the
// sigma2 part sum_{i,a} r d^2 / sigma2 / (2 sigma2); a pixel whose weight is exactly 0 contributes 0.
template <typename T>
inline void filterbank_backward(const T* grad_f, const T* f, const T* total, T g, T delta, T sigma2, int64_t n,
                                int64_t size, int64_t stride, T& grad_g, T& grad_delta, T& grad_sigma2) {
  T sum_mu = T(0), sum_delta = T(0), sum_rdd = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T mu = centre(g, delta, i, n);
    const T* gf = grad_f + i * stride;
    const T* fr = f + i * stride;
    const T q = total[i] >= eps<T>() ? dot(gf, fr, size) : T(0);
    // Lanes whose weight is exactly 0 are dropped by a blend, as the reference's torch.where does.
    using V = Vec<T>;
    constexpr int64_t width = V::size();
    V rd_acc(T(0)), rdd_acc(T(0));
    int64_t a = 0;
    for (; a + width <= size; a += width) {
      const V weight = V::loadu(fr + a);
      const V keep = weight != V(T(0));
      const V d = V::arange(static_cast<T>(a), T(1)) - V(mu);
      const V rd = V::blendv(V(T(0)), (V::loadu(gf + a) - V(q)) * weight * d, keep);
      rd_acc = rd_acc + rd;
      rdd_acc = rdd_acc + V::blendv(V(T(0)), rd * d, keep);
    }
    alignas(64) T lanes[2 * width];
    rd_acc.store(lanes);
    rdd_acc.store(lanes + width);
    T rd_sum = T(0), rdd_sum = T(0);
    for (int64_t l = 0; l < width; ++l) {
      rd_sum += lanes[l];
      rdd_sum += lanes[width + l];
    }
    for (; a < size; ++a) {
      const T weight = fr[a];
      if (weight != T(0)) {
        const T d = static_cast<T>(a) - mu;
        const T rd = (gf[a] - q) * weight * d;
        rd_sum += rd;
        rdd_sum += rd * d;
      }
    }
    const T grad_mu = rd_sum / sigma2;
    sum_mu += grad_mu;
    sum_delta += grad_mu * offset<T>(i, n);
    sum_rdd += rdd_sum;
  }
  grad_g = sum_mu;
  grad_delta = sum_delta;
  grad_sigma2 = sum_rdd / sigma2 / (T(2) * sigma2);
}

// Multiply-adds an at::parallel_for task should at least hold (some ten microseconds): small glimpses of
// small images are grouped several samples to a task.
constexpr int64_t kGrainWork = 1 << 16;

inline int64_t grain(int64_t channels, int64_t height, int64_t width, int64_t n) {
  const int64_t per_sample = std::max<int64_t>(1, channels * n * width * (height + n));
  return std::max<int64_t>(1, kGrainWork / per_sample);
}

// One thread's filterbanks of one sample: fx (N x Wp), fy (N x Hp), fx^T (W x Np), fy^T (H x Np).
template <typename T>
struct Filterbanks {
  int64_t n, height, width, np, hp, wp;
  std::vector<T> fx, fy, fxt, fyt, total_x, total_y;

  Filterbanks(int64_t n_, int64_t height_, int64_t width_)
      : n(n_),
        height(height_),
        width(width_),
        np(small_gemm::padded<T>(n_)),
        hp(small_gemm::padded<T>(height_)),
        wp(small_gemm::padded<T>(width_)),
        fx(n * wp), fy(n * hp), fxt(width * np), fyt(height * np), total_x(n), total_y(n) {}

  // The transposes only where a product needs them.
  void build(T gx, T gy, T delta, T sigma2, bool with_fxt, bool with_fyt) {
    filterbank(gx, delta, sigma2, n, width, wp, fx.data(), total_x.data());
    filterbank(gy, delta, sigma2, n, height, hp, fy.data(), total_y.data());
    if (with_fxt) small_gemm::transpose(n, width, fx.data(), wp, fxt.data(), np);
    if (with_fyt) small_gemm::transpose(n, height, fy.data(), hp, fyt.data(), np);
  }
};

// The five attention parameters of a batch, each (B,) and contiguous, read sample by sample.
template <typename T>
struct Attention {
  const T *gx, *gy, *delta, *sigma2, *gamma;

  Attention(const at::Tensor& gx_t, const at::Tensor& gy_t, const at::Tensor& delta_t, const at::Tensor& sigma2_t,
            const at::Tensor& gamma_t)
      : gx(gx_t.const_data_ptr<T>()),
        gy(gy_t.const_data_ptr<T>()),
        delta(delta_t.const_data_ptr<T>()),
        sigma2(sigma2_t.const_data_ptr<T>()),
        gamma(gamma_t.const_data_ptr<T>()) {}

  // Sample b's filterbanks (see Filterbanks::build).
  void build(Filterbanks<T>& bank, int64_t b, bool with_fxt, bool with_fyt) const {
    bank.build(gx[b], gy[b], delta[b], sigma2[b], with_fxt, with_fyt);
  }
};

// The gradients of the five parameters, each (B,), written sample by sample.
template <typename T>
struct AttentionGrads {
  T *gx, *gy, *delta, *sigma2, *gamma;

  AttentionGrads(at::Tensor& gx_t, at::Tensor& gy_t, at::Tensor& delta_t, at::Tensor& sigma2_t, at::Tensor& gamma_t)
      : gx(gx_t.mutable_data_ptr<T>()),
        gy(gy_t.mutable_data_ptr<T>()),
        delta(delta_t.mutable_data_ptr<T>()),
        sigma2(sigma2_t.mutable_data_ptr<T>()),
        gamma(gamma_t.mutable_data_ptr<T>()) {}

  // Sample b's: grad_fx (N x Wp) and grad_fy (N x Hp) are dL/dFx and dL/dFy of bank, built from params' sample b;
  // the centres get their axis's part, delta and sigma2 the sum of both axes' (x first), gamma `grad_gamma`.
  void store(const Filterbanks<T>& bank, const Attention<T>& params, int64_t b, const T* grad_fx, const T* grad_fy,
             T grad_gamma) {
    T dgx, dgy, ddelta_x, ddelta_y, dsigma2_x, dsigma2_y;
    const int64_t n = bank.n;
    filterbank_backward(grad_fx, bank.fx.data(), bank.total_x.data(), params.gx[b], params.delta[b], params.sigma2[b],
                        n, bank.width, bank.wp, dgx, ddelta_x, dsigma2_x);
    filterbank_backward(grad_fy, bank.fy.data(), bank.total_y.data(), params.gy[b], params.delta[b], params.sigma2[b],
                        n, bank.height, bank.hp, dgy, ddelta_y, dsigma2_y);
    gx[b] = dgx;
    gy[b] = dgy;
    delta[b] = ddelta_x + ddelta_y;
    sigma2[b] = dsigma2_x + dsigma2_y;
    gamma[b] = grad_gamma;
  }
};

}  // namespace pyvidgen::cpu::draw
