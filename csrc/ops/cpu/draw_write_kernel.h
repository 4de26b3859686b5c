// CPU kernels of draw_write (csrc/ops/cpu/draw_write_kernel.cpp).
// Inputs contiguous, checked and with a non-empty batch; outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pyvidgen::cpu {

void draw_write_forward_kernel(const at::Tensor& w, const at::Tensor& gx, const at::Tensor& gy, const at::Tensor& delta,
                               const at::Tensor& sigma2, const at::Tensor& gamma, int64_t height, int64_t width,
                               at::Tensor& out);
// grads: grad_w (B, C, N, N), then grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma, each (B,).
void draw_write_backward_kernel(const at::Tensor& grad_out, const at::Tensor& w, const at::Tensor& gx,
                                const at::Tensor& gy, const at::Tensor& delta, const at::Tensor& sigma2,
                                const at::Tensor& gamma, int64_t height, int64_t width, at::Tensor& grad_w,
                                at::Tensor& grad_gx, at::Tensor& grad_gy, at::Tensor& grad_delta,
                                at::Tensor& grad_sigma2, at::Tensor& grad_gamma);

}  // namespace pyvidgen::cpu
