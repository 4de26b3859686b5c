// CPU masked convolution (csrc/ops/cpu/masked_conv2d_kernel.cpp): the visible kernel rows as one dense
// convolution (oneDNN through ATen) over the input padded above and at the sides. x and grad_out may have
// any strides; the results (the output and x's gradient) are channels_last-contiguous where x is
// (checks::keeps_channels_last), contiguous otherwise.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>

namespace pyvidgen::cpu {

// Kernel rows 0 .. k / 2 of `weight` (Cout, Cin, k or k / 2 + 1, k) with every hidden tap an exact zero:
// (Cout, Cin, k / 2 + 1, k).
at::Tensor masked_visible_rows(const at::Tensor& weight, bool type_a, int64_t color_groups);

at::Tensor masked_conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, bool type_a, int64_t color_groups,
                                        int64_t dilation);

// Gradients of x, weight (exact zeros at hidden taps) and bias; undefined where not needed.
std::array<at::Tensor, 3> masked_conv2d_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x,
                                                        const at::Tensor& weight, bool has_bias, bool type_a,
                                                        int64_t color_groups, int64_t dilation,
                                                        std::array<bool, 3> needs_grad);

}  // namespace pyvidgen::cpu
