// CPU kernels of flow_smoothness (csrc/ops/cpu/flow_smoothness_kernel.cpp). Inputs contiguous and checked.
#pragma once

#include <ATen/core/Tensor.h>

namespace pyvidgen::cpu {

// The 0-dim penalty, in flow's dtype.
at::Tensor flow_smoothness_forward_kernel(const at::Tensor& flow, double delta);
// grad_flow = grad * d penalty / d flow; grad is 0-dim, grad_flow allocated and non-empty.
void flow_smoothness_backward_kernel(const at::Tensor& grad, const at::Tensor& flow, at::Tensor& grad_flow,
                                     double delta);

}  // namespace pyvidgen::cpu
