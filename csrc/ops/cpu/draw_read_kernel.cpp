// CPU kernels of draw_read. Specification: kernels/reference/draw_read.py.
//
// One sample at a time (at::parallel_for over the batch; every sample is computed by one thread alone, so
// the result does not depend on the thread count): its two filterbanks (N x W and N x H, a few KiB) and
// their transposes are built into the thread's buffers, then every channel goes through both contractions
// while its image is in cache: U = Fy x (N x W), then out = gamma U Fx^T (N x N), each a register-blocked
// small_gemm. The backward forms M = G Fx and U, then the image gradient gamma Fy^T M, both filterbank
// gradients (gamma G^T U and gamma M x^T, summed over the channels) and gamma's (sum M * U), and turns the
// filterbank gradients into the five parameters' (draw_filterbank.h). The intermediates are the
// reference's, formed in the same order, so NaN and infinities propagate as they do there.
//
// Buffers B may be read from have rows a whole number of vectors long (small_gemm::padded), zero-filled
// once: the padding columns only ever feed padding columns of other buffers, never a result.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/draw_filterbank.h"
#include "ops/cpu/draw_read_kernel.h"
#include "ops/cpu/small_gemm.h"

namespace pyvidgen::cpu {
namespace {

using draw::dot;
using draw::Attention;
using draw::AttentionGrads;
using draw::Filterbanks;
using draw::grain;
using small_gemm::gemm;
using small_gemm::Out;
using small_gemm::padded;
using small_gemm::transpose;

// The image as a matrix B may be read from: itself when its rows are a whole number of vectors long, else
// a copy in `buffer` with padded rows (the padding stays zero).
template <typename T>
const T* padded_image(const T* plane, int64_t height, int64_t width, int64_t wp, std::vector<T>& buffer) {
  if (wp == width) return plane;
  for (int64_t y = 0; y < height; ++y) std::copy(plane + y * width, plane + (y + 1) * width, buffer.data() + y * wp);
  return buffer.data();
}

template <typename T>
void forward_impl(const at::Tensor& x_t, const at::Tensor& gx_t, const at::Tensor& gy_t, const at::Tensor& delta_t,
                  const at::Tensor& sigma2_t, const at::Tensor& gamma_t, int64_t n, at::Tensor& out_t) {
  const int64_t batch = x_t.size(0), channels = x_t.size(1), height = x_t.size(2), width = x_t.size(3);
  const T* x = x_t.const_data_ptr<T>();
  const Attention<T> params(gx_t, gy_t, delta_t, sigma2_t, gamma_t);
  T* out = out_t.mutable_data_ptr<T>();
  at::parallel_for(0, batch, grain(channels, height, width, n), [&](int64_t begin, int64_t end) {
    Filterbanks<T> bank(n, height, width);
    const int64_t wp = bank.wp;
    std::vector<T> buffer(wp == width ? 0 : height * wp), u(n * wp);
    for (int64_t b = begin; b < end; ++b) {
      params.build(bank, b, true, false);
      for (int64_t c = 0; c < channels; ++c) {
        const T* image = padded_image(x + (b * channels + c) * height * width, height, width, wp, buffer);
        gemm<T>(n, height, width, bank.fy.data(), bank.hp, image, wp, {u.data(), wp, true});
        // out = gamma (U Fx^T).
        Out<T> glimpse{out + (b * channels + c) * n * n, n};
        glimpse.mul = params.gamma[b];
        gemm<T>(n, width, n, u.data(), wp, bank.fxt.data(), bank.np, glimpse);
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out_t, const at::Tensor& x_t, const at::Tensor& gx_t,
                   const at::Tensor& gy_t, const at::Tensor& delta_t, const at::Tensor& sigma2_t,
                   const at::Tensor& gamma_t, int64_t n, at::Tensor& grad_x_t, at::Tensor& grad_gx_t,
                   at::Tensor& grad_gy_t, at::Tensor& grad_delta_t, at::Tensor& grad_sigma2_t,
                   at::Tensor& grad_gamma_t) {
  const int64_t batch = x_t.size(0), channels = x_t.size(1), height = x_t.size(2), width = x_t.size(3);
  const T* grad_out = grad_out_t.const_data_ptr<T>();
  const T* x = x_t.const_data_ptr<T>();
  const Attention<T> params(gx_t, gy_t, delta_t, sigma2_t, gamma_t);
  T* grad_x = grad_x_t.mutable_data_ptr<T>();
  AttentionGrads<T> grads(grad_gx_t, grad_gy_t, grad_delta_t, grad_sigma2_t, grad_gamma_t);
  at::parallel_for(0, batch, grain(channels, height, width, 3 * n), [&](int64_t begin, int64_t end) {
    Filterbanks<T> bank(n, height, width);
    const int64_t np = bank.np, hp = bank.hp, wp = bank.wp;
    std::vector<T> buffer(wp == width ? 0 : height * wp), u(n * wp), m(n * wp), mt(width * np), gt(n * np);
    std::vector<T> grad_fx(n * wp), grad_fyt(height * np), grad_fy(n * hp);
    for (int64_t b = begin; b < end; ++b) {
      params.build(bank, b, false, true);
      std::fill(grad_fx.begin(), grad_fx.end(), T(0));
      std::fill(grad_fyt.begin(), grad_fyt.end(), T(0));
      T dgamma = T(0);
      const T scale = params.gamma[b];
      for (int64_t c = 0; c < channels; ++c) {
        const T* g = grad_out + (b * channels + c) * n * n;
        const T* image = padded_image(x + (b * channels + c) * height * width, height, width, wp, buffer);
        transpose(n, n, g, n, gt.data(), np);
        // M = G Fx and U = Fy x (N x W).
        gemm<T>(n, n, width, g, n, bank.fx.data(), wp, {m.data(), wp, true});
        gemm<T>(n, height, width, bank.fy.data(), hp, image, wp, {u.data(), wp, true});
        // grad_x = gamma (Fy^T M).
        Out<T> gimage{grad_x + (b * channels + c) * height * width, width};
        gimage.mul = scale;
        gemm<T>(height, n, width, bank.fyt.data(), np, m.data(), wp, gimage);
        // dL/dFx += G^T U and (dL/dFy)^T += x M^T, both times gamma after the channel sum.
        gemm<T>(n, n, width, gt.data(), np, u.data(), wp, {grad_fx.data(), wp, true, true});
        transpose(n, width, m.data(), wp, mt.data(), np);
        gemm<T>(height, width, n, image, wp, mt.data(), np, {grad_fyt.data(), np, true, true});
        for (int64_t i = 0; i < n; ++i) dgamma += dot(m.data() + i * wp, u.data() + i * wp, width);
      }
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t a = 0; a < width; ++a) grad_fx[i * wp + a] = scale * grad_fx[i * wp + a];
        for (int64_t y = 0; y < height; ++y) grad_fy[i * hp + y] = scale * grad_fyt[y * np + i];
      }
      grads.store(bank, params, b, grad_fx.data(), grad_fy.data(), dgamma);
    }
  });
}

}  // namespace

void draw_read_forward_kernel(const at::Tensor& x, const at::Tensor& gx, const at::Tensor& gy, const at::Tensor& delta,
                              const at::Tensor& sigma2, const at::Tensor& gamma, int64_t n, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "draw_read_forward",
                             [&] { forward_impl<scalar_t>(x, gx, gy, delta, sigma2, gamma, n, out); });
}

void draw_read_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& gx,
                               const at::Tensor& gy, const at::Tensor& delta, const at::Tensor& sigma2,
                               const at::Tensor& gamma, int64_t n, at::Tensor& grad_x, at::Tensor& grad_gx,
                               at::Tensor& grad_gy, at::Tensor& grad_delta, at::Tensor& grad_sigma2,
                               at::Tensor& grad_gamma) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "draw_read_backward", [&] {
    backward_impl<scalar_t>(grad_out, x, gx, gy, delta, sigma2, gamma, n, grad_x, grad_gx, grad_gy, grad_delta,
                            grad_sigma2, grad_gamma);
  });
}

}  // namespace pyvidgen::cpu
