// CPU kernels of multiplicative_unit (csrc/ops/cpu/multiplicative_unit_kernel.cpp).
// Inputs contiguous, checked and non-empty; outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>

namespace pyvidgen::cpu {

void multiplicative_unit_forward_kernel(const at::Tensor& pre, const at::Tensor& h, at::Tensor& out);
void multiplicative_unit_backward_kernel(const at::Tensor& grad_out, const at::Tensor& pre, const at::Tensor& h,
                                         at::Tensor& grad_pre, at::Tensor& grad_h);

}  // namespace pyvidgen::cpu
