// flow_warp: checks and allocation around the CPU kernels (defence in depth: the Python op checks
// first with friendlier messages, but a direct call must never reach a kernel with bad shapes).
#include <ATen/ATen.h>

#include "ops/ops.h"

namespace pyvidgen {
namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& flow, int64_t padding_mode) {
  TORCH_CHECK(x.dim() == 4, "flow_warp: x must be 4-D (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(flow.dim() == 4 && flow.size(0) == x.size(0) && flow.size(1) == 2 && flow.size(2) == x.size(2) &&
                  flow.size(3) == x.size(3),
              "flow_warp: flow must have shape (B, 2, H, W) matching x ", x.sizes(), ", got ", flow.sizes());
  TORCH_CHECK(x.device().is_cpu() && flow.device().is_cpu(), "flow_warp: the cpp backend needs CPU tensors");
  TORCH_CHECK(x.scalar_type() == flow.scalar_type(), "flow_warp: flow dtype ", flow.scalar_type(),
              " does not match x dtype ", x.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "flow_warp: the cpp backend supports float32 and float64, got ", x.scalar_type());
  // Tap indices inside one plane are 32-bit for float32 (vector gathers); batch/channel offsets are 64-bit.
  TORCH_CHECK(x.size(2) * x.size(3) < (int64_t{1} << 31), "flow_warp: H * W must be below 2^31, got ", x.size(2),
              " x ", x.size(3));
  TORCH_CHECK(padding_mode >= 0 && padding_mode <= 2, "flow_warp: padding_mode index must be 0, 1 or 2, got ",
              padding_mode);
}

}  // namespace

at::Tensor flow_warp_forward(const at::Tensor& x_in, const at::Tensor& flow_in, int64_t padding_mode,
                             bool normalized) {
  check_inputs(x_in, flow_in, padding_mode);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flow = flow_in.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (out.numel() > 0) cpu::flow_warp_forward_kernel(x, flow, out, padding_mode, normalized);
  return out;
}

std::tuple<at::Tensor, at::Tensor> flow_warp_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                      const at::Tensor& flow_in, int64_t padding_mode, bool normalized,
                                                      bool x_needs_grad, bool flow_needs_grad) {
  check_inputs(x_in, flow_in, padding_mode);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes() && grad_out_in.scalar_type() == x_in.scalar_type() &&
                  grad_out_in.device().is_cpu(),
              "flow_warp backward: grad_out must match x ", x_in.sizes(), ", got ", grad_out_in.sizes());
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flow = flow_in.contiguous();
  // grad_x is zeroed inside the kernel by the thread that scatters into it (cache-warm, no extra pass).
  at::Tensor grad_x = x_needs_grad ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor grad_flow = flow_needs_grad ? at::empty_like(flow, at::MemoryFormat::Contiguous) : at::Tensor();
  if (x.numel() > 0 && (x_needs_grad || flow_needs_grad)) {
    cpu::flow_warp_backward_kernel(grad_out, x, flow, x_needs_grad ? &grad_x : nullptr,
                                   flow_needs_grad ? &grad_flow : nullptr, padding_mode, normalized);
  } else if (flow_needs_grad) {
    grad_flow.zero_();  // C = 0: nothing is sampled, so the flow has no influence.
  }
  return {grad_x, grad_flow};
}

}  // namespace pyvidgen
