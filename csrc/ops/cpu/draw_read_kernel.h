// CPU kernels of draw_read (csrc/ops/cpu/draw_read_kernel.cpp).
// Inputs contiguous, checked and with a non-empty batch; outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pyvidgen::cpu {

void draw_read_forward_kernel(const at::Tensor& x, const at::Tensor& gx, const at::Tensor& gy, const at::Tensor& delta,
                              const at::Tensor& sigma2, const at::Tensor& gamma, int64_t n, at::Tensor& out);
// grads: grad_x (B, C, H, W), then grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma, each (B,).
void draw_read_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& gx,
                               const at::Tensor& gy, const at::Tensor& delta, const at::Tensor& sigma2,
                               const at::Tensor& gamma, int64_t n, at::Tensor& grad_x, at::Tensor& grad_gx,
                               at::Tensor& grad_gy, at::Tensor& grad_delta, at::Tensor& grad_sigma2,
                               at::Tensor& grad_gamma);

}  // namespace pyvidgen::cpu
