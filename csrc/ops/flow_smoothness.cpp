// flow_smoothness: checks and allocation around the CPU kernels.
#include <ATen/ATen.h>

#include "ops/ops.h"

namespace pyvidgen {
namespace {

void check_flow(const at::Tensor& flow, double delta) {
  TORCH_CHECK(flow.dim() == 4, "flow_smoothness: flow must be 4-D (B, C, H, W), got ", flow.sizes());
  TORCH_CHECK(flow.device().is_cpu(), "flow_smoothness: the cpp backend needs CPU tensors");
  TORCH_CHECK(flow.scalar_type() == at::kFloat || flow.scalar_type() == at::kDouble,
              "flow_smoothness: the cpp backend supports float32 and float64, got ", flow.scalar_type());
  TORCH_CHECK(delta > 0, "flow_smoothness: delta must be > 0, got ", delta);
}

}  // namespace

at::Tensor flow_smoothness_forward(const at::Tensor& flow, double delta) {
  check_flow(flow, delta);
  return cpu::flow_smoothness_forward_kernel(flow.contiguous(), delta);
}

at::Tensor flow_smoothness_backward(const at::Tensor& grad, const at::Tensor& flow, double delta) {
  check_flow(flow, delta);
  TORCH_CHECK(grad.dim() == 0 && grad.device().is_cpu(), "flow_smoothness backward: grad must be a 0-dim CPU tensor");
  at::Tensor grad_flow = at::empty_like(flow, at::MemoryFormat::Contiguous);
  if (flow.numel() > 0) cpu::flow_smoothness_backward_kernel(grad, flow.contiguous(), grad_flow, delta);
  return grad_flow;
}

}  // namespace pyvidgen
