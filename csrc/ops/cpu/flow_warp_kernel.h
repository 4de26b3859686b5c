// CPU kernels of flow_warp (csrc/ops/cpu/flow_warp_kernel.cpp). Inputs contiguous, checked, non-empty.
#pragma once

#include <ATen/core/Tensor.h>

#include "ops/cpu/flow_warp_geometry.h"

namespace pyvidgen::cpu {

// padding_mode: a flow_warp_geometry code (kZeros, kBorder, kReflection).
void flow_warp_forward_kernel(const at::Tensor& x, const at::Tensor& flow, at::Tensor& out, int64_t padding_mode,
                              bool normalized);
// grad_x, grad_flow: allocated outputs, or nullptr when that gradient is not needed.
void flow_warp_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& flow,
                               at::Tensor* grad_x, at::Tensor* grad_flow, int64_t padding_mode, bool normalized);

}  // namespace pyvidgen::cpu
