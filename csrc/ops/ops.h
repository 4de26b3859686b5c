// Host entry points of pyvidgen's C++ ops: input checks, allocation, dtype dispatch.
// Each op's kernels live in csrc/ops/cpu/<op>_kernel.cpp; the module binds these in csrc/module.cpp.
#pragma once

#include <ATen/core/Tensor.h>

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

namespace cpu {
void flow_warp_forward_kernel(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t padding_mode,
                              bool normalized);
void flow_warp_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow,
                               at::Tensor* grad_x, at::Tensor* grad_flow, int64_t padding_mode, bool normalized);
at::Tensor flow_smoothness_forward_kernel(const at::Tensor& flow, double delta);
void flow_smoothness_backward_kernel(const at::Tensor& grad, const at::Tensor& flow, at::Tensor& grad_flow,
                                     double delta);
}  // namespace cpu

}  // namespace pyvidgen
