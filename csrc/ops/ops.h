// Host entry points of pyvidgen's C++ ops: input checks, allocation, dtype dispatch.
// Each op's kernels live in csrc/ops/cpu/<op>_kernel.cpp; the module binds these in csrc/module.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace pyvidgen {

// Bilinear flow warp (padding_mode: 0 zeros, 1 border, 2 reflection). See kernels/reference/flow_warp.py.
at::Tensor flow_warp_forward(const at::Tensor& x, const at::Tensor& flow, int64_t padding_mode, bool normalized);
std::tuple<at::Tensor, at::Tensor> flow_warp_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                      const at::Tensor& flow, int64_t padding_mode, bool normalized,
                                                      bool x_needs_grad, bool flow_needs_grad);

// Huber smoothness penalty on forward differences. See kernels/reference/flow_smoothness.py.
at::Tensor flow_smoothness_forward(const at::Tensor& flow, double delta);
at::Tensor flow_smoothness_backward(const at::Tensor& grad, const at::Tensor& flow, double delta);

// ConvLSTM cell update from gate pre-activations (i, f, g, o). See kernels/reference/conv_lstm_gates.py.
// The backward recomputes the activations; grad_peephole is undefined (None in Python) without peepholes.
std::tuple<at::Tensor, at::Tensor> conv_lstm_gates_forward(const at::Tensor& gates, const at::Tensor& c,
                                                           const std::optional<at::Tensor>& peephole);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_lstm_gates_backward(const at::Tensor& grad_h,
                                                                        const at::Tensor& grad_c_next,
                                                                        const at::Tensor& gates, const at::Tensor& c,
                                                                        const std::optional<at::Tensor>& peephole);

// VPN's multiplicative unit. See kernels/reference/multiplicative_unit.py.
at::Tensor multiplicative_unit_forward(const at::Tensor& pre, const at::Tensor& h);
std::tuple<at::Tensor, at::Tensor> multiplicative_unit_backward(const at::Tensor& grad_out, const at::Tensor& pre,
                                                                const at::Tensor& h);

namespace cpu {
void flow_warp_forward_kernel(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t padding_mode,
                              bool normalized);
void flow_warp_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow,
                               at::Tensor* grad_x, at::Tensor* grad_flow, int64_t padding_mode, bool normalized);
at::Tensor flow_smoothness_forward_kernel(const at::Tensor& flow, double delta);
void flow_smoothness_backward_kernel(const at::Tensor& grad, const at::Tensor& flow, at::Tensor& grad_flow,
                                     double delta);
// Inputs contiguous, checked, non-empty; outputs allocated (grad_peephole zeroed, nullptr without peepholes).
void conv_lstm_gates_forward_kernel(const at::Tensor& gates, const at::Tensor& c,
                                    const std::optional<at::Tensor>& peephole, at::Tensor& h, at::Tensor& c_next);
void conv_lstm_gates_backward_kernel(const at::Tensor& grad_h, const at::Tensor& grad_c_next, const at::Tensor& gates,
                                     const at::Tensor& c, const std::optional<at::Tensor>& peephole,
                                     at::Tensor& grad_gates, at::Tensor& grad_c, at::Tensor* grad_peephole);
void multiplicative_unit_forward_kernel(const at::Tensor& pre, const at::Tensor& h, at::Tensor& out);
void multiplicative_unit_backward_kernel(const at::Tensor& grad_out, const at::Tensor& pre, const at::Tensor& h,
                                         at::Tensor& grad_pre, at::Tensor& grad_h);
}  // namespace cpu

}  // namespace pyvidgen
