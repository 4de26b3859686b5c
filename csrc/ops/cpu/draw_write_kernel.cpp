// CPU kernels of draw_write. Specification: kernels/reference/draw_write.py.
//
// One sample at a time (at::parallel_for over the batch; a sample is one thread's alone, so the result
// does not depend on the thread count): its filterbanks and their transposes are built into the thread's
// buffers, then each channel's patch goes through T = w Fx (N x W) and out = Fy^T T / gamma, each a
// register-blocked small_gemm. The backward forms G' = G / gamma, V = G' Fx^T (H x N) and R = Fy G'
// (N x W), from which come grad_w = Fy V, both filterbank gradients (w^T R and w V^T, summed over the
// channels) and gamma's (-sum grad_w * w / gamma): the same intermediates in the same order as the
// reference, so non-finite values propagate alike. Padded buffers as in draw_read_kernel.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/draw_filterbank.h"
#include "ops/cpu/draw_write_kernel.h"
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

template <typename T>
void forward_impl(const at::Tensor& w_t, const at::Tensor& gx_t, const at::Tensor& gy_t, const at::Tensor& delta_t,
                  const at::Tensor& sigma2_t, const at::Tensor& gamma_t, int64_t height, int64_t width,
                  at::Tensor& out_t) {
  const int64_t batch = w_t.size(0), channels = w_t.size(1), n = w_t.size(2);
  const T* w = w_t.const_data_ptr<T>();
  const Attention<T> params(gx_t, gy_t, delta_t, sigma2_t, gamma_t);
  T* out = out_t.mutable_data_ptr<T>();
  at::parallel_for(0, batch, grain(channels, height, width, n), [&](int64_t begin, int64_t end) {
    Filterbanks<T> bank(n, height, width);
    const int64_t wp = bank.wp;
    std::vector<T> t(n * wp);
    for (int64_t b = begin; b < end; ++b) {
      params.build(bank, b, false, true);
      for (int64_t c = 0; c < channels; ++c) {
        const T* patch = w + (b * channels + c) * n * n;
        gemm<T>(n, n, width, patch, n, bank.fx.data(), wp, {t.data(), wp, true});
        // out = (Fy^T T) / gamma.
        Out<T> canvas{out + (b * channels + c) * height * width, width};
        canvas.div = params.gamma[b];
        gemm<T>(height, n, width, bank.fyt.data(), bank.np, t.data(), wp, canvas);
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out_t, const at::Tensor& w_t, const at::Tensor& gx_t,
                   const at::Tensor& gy_t, const at::Tensor& delta_t, const at::Tensor& sigma2_t,
                   const at::Tensor& gamma_t, int64_t height, int64_t width, at::Tensor& grad_w_t,
                   at::Tensor& grad_gx_t, at::Tensor& grad_gy_t, at::Tensor& grad_delta_t, at::Tensor& grad_sigma2_t,
                   at::Tensor& grad_gamma_t) {
  const int64_t batch = w_t.size(0), channels = w_t.size(1), n = w_t.size(2);
  const T* grad_out = grad_out_t.const_data_ptr<T>();
  const T* w = w_t.const_data_ptr<T>();
  const Attention<T> params(gx_t, gy_t, delta_t, sigma2_t, gamma_t);
  T* grad_w = grad_w_t.mutable_data_ptr<T>();
  AttentionGrads<T> grads(grad_gx_t, grad_gy_t, grad_delta_t, grad_sigma2_t, grad_gamma_t);
  at::parallel_for(0, batch, grain(channels, height, width, 3 * n), [&](int64_t begin, int64_t end) {
    Filterbanks<T> bank(n, height, width);
    const int64_t np = bank.np, hp = bank.hp, wp = bank.wp;
    std::vector<T> scaled(height * wp), v(height * np), r(n * wp), wt(n * np);
    std::vector<T> grad_fx(n * wp), grad_fyt(height * np), grad_fy(n * hp);
    for (int64_t b = begin; b < end; ++b) {
      params.build(bank, b, true, false);
      std::fill(grad_fx.begin(), grad_fx.end(), T(0));
      std::fill(grad_fyt.begin(), grad_fyt.end(), T(0));
      T dgamma = T(0);
      const T scale = params.gamma[b];
      for (int64_t c = 0; c < channels; ++c) {
        const T* g = grad_out + (b * channels + c) * height * width;
        const T* patch = w + (b * channels + c) * n * n;
        T* gpatch = grad_w + (b * channels + c) * n * n;
        for (int64_t y = 0; y < height; ++y) {
          for (int64_t a = 0; a < width; ++a) scaled[y * wp + a] = g[y * width + a] / scale;
        }
        transpose(n, n, patch, n, wt.data(), np);
        // V = G' Fx^T (H x N), R = Fy G' (N x W), grad_w = Fy V.
        gemm<T>(height, width, n, scaled.data(), wp, bank.fxt.data(), np, {v.data(), np, true});
        gemm<T>(n, height, width, bank.fy.data(), hp, scaled.data(), wp, {r.data(), wp, true});
        gemm<T>(n, height, n, bank.fy.data(), hp, v.data(), np, {gpatch, n});
        // dL/dFx += w^T R and (dL/dFy)^T += V w^T.
        gemm<T>(n, n, width, wt.data(), np, r.data(), wp, {grad_fx.data(), wp, true, true});
        gemm<T>(height, n, n, v.data(), np, wt.data(), np, {grad_fyt.data(), np, true, true});
        dgamma += dot(gpatch, patch, n * n);
      }
      transpose(height, n, grad_fyt.data(), np, grad_fy.data(), hp);
      grads.store(bank, params, b, grad_fx.data(), grad_fy.data(), -dgamma / scale);
    }
  });
}

}  // namespace

void draw_write_forward_kernel(const at::Tensor& w, const at::Tensor& gx, const at::Tensor& gy, const at::Tensor& delta,
                               const at::Tensor& sigma2, const at::Tensor& gamma, int64_t height, int64_t width,
                               at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "draw_write_forward",
                             [&] { forward_impl<scalar_t>(w, gx, gy, delta, sigma2, gamma, height, width, out); });
}

void draw_write_backward_kernel(const at::Tensor& grad_out, const at::Tensor& w, const at::Tensor& gx,
                                const at::Tensor& gy, const at::Tensor& delta, const at::Tensor& sigma2,
                                const at::Tensor& gamma, int64_t height, int64_t width, at::Tensor& grad_w,
                                at::Tensor& grad_gx, at::Tensor& grad_gy, at::Tensor& grad_delta,
                                at::Tensor& grad_sigma2, at::Tensor& grad_gamma) {
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "draw_write_backward", [&] {
    backward_impl<scalar_t>(grad_out, w, gx, gy, delta, sigma2, gamma, height, width, grad_w, grad_gx, grad_gy,
                            grad_delta, grad_sigma2, grad_gamma);
  });
}

}  // namespace pyvidgen::cpu
