// CPU kernels of cross_conv2d (csrc/ops/cpu/cross_conv2d_kernel.cpp).
// Inputs contiguous, checked (kernel sizes odd) and non-empty; outputs allocated, contiguous.
#pragma once

#include <ATen/core/Tensor.h>

namespace pyvidgen::cpu {

// out (B, C, H, W) = each plane of x correlated with its own kernel, zero "same" padding.
void cross_conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& kernels, at::Tensor& out);

// grad_x (B, C, H, W) and grad_kernels (B, C, KH, KW), each filled only when asked (need_x, need_kernels).
void cross_conv2d_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& kernels,
                                  bool need_x, bool need_kernels, at::Tensor& grad_x, at::Tensor& grad_kernels);

}  // namespace pyvidgen::cpu
