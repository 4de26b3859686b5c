// CPU kernels of conv_lstm_gates (csrc/ops/cpu/conv_lstm_gates_kernel.cpp).
// Inputs contiguous, checked and non-empty; outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace pyvidgen::cpu {

void conv_lstm_gates_forward_kernel(const at::Tensor& gates, const at::Tensor& c,
                                    const std::optional<at::Tensor>& peephole, at::Tensor& h, at::Tensor& c_next);
// grad_peephole: zeroed, or nullptr without peepholes.
void conv_lstm_gates_backward_kernel(const at::Tensor& grad_h, const at::Tensor& grad_c_next, const at::Tensor& gates,
                                     const at::Tensor& c, const std::optional<at::Tensor>& peephole,
                                     at::Tensor& grad_gates, at::Tensor& grad_c, at::Tensor* grad_peephole);

}  // namespace pyvidgen::cpu
