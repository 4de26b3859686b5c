// flow_smoothness: checks and allocation around the CPU kernels, registered as
// pyvidgen_cpp::flow_smoothness_forward and pyvidgen_cpp::flow_smoothness_backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cmath>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/flow_smoothness_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "flow_smoothness";

void check_inputs(const at::Tensor& flow, double delta) {
  checks::rank(kOp, "flow", flow, 4, "(B, C, H, W)");
  checks::same_dtype(kOp, "flow", flow, "flow", flow);
  TORCH_CHECK_VALUE(delta > 0 && std::isfinite(delta), "flow_smoothness: delta must be a finite number > 0, got ",
                    delta);
}

at::Tensor flow_smoothness_forward(const at::Tensor& flow, double delta) {
  check_inputs(flow, delta);
  return cpu::flow_smoothness_forward_kernel(flow.contiguous(), delta);
}

at::Tensor flow_smoothness_backward(const at::Tensor& grad_loss, const at::Tensor& flow, double delta,
                                    std::array<bool, 1> needs_grad) {
  check_inputs(flow, delta);
  checks::shape(kOp, "grad_loss", grad_loss, {}, "()");
  checks::same_dtype(kOp, "grad_loss", grad_loss, "flow", flow);
  if (!needs_grad[0]) return checks::no_grad_tensor(flow);
  at::Tensor grad_flow = outputs::empty_like(flow);
  if (flow.numel() > 0) cpu::flow_smoothness_backward_kernel(grad_loss, flow.contiguous(), grad_flow, delta);
  return grad_flow;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("flow_smoothness_forward", &flow_smoothness_forward);
  m.impl("flow_smoothness_backward", &flow_smoothness_backward);
}

}  // namespace pyvidgen
