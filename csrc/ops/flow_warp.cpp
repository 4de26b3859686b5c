// flow_warp: checks and allocation around the CPU kernels, registered as pyvidgen_cpp::flow_warp_forward
// and pyvidgen_cpp::flow_warp_backward (schemas defined once, by the op's declaration in pyvidgen/ops).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <string_view>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/flow_warp_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "flow_warp";

void check_inputs(const at::Tensor& x, const at::Tensor& flow) {
  checks::rank(kOp, "x", x, 4, "(B, C, H, W)");
  checks::rank(kOp, "flow", flow, 4, "(B, 2, H, W)");
  checks::shape(kOp, "flow", flow, {x.size(0), 2, x.size(2), x.size(3)}, "(B, 2, H, W)");
  checks::same_dtype(kOp, "flow", flow, "x", x);
  // Tap indices inside one plane are 32-bit (vector gathers and the sink pixel at H * W); the clamped
  // positions reach size + 1 and a reflection period 2 (size - 1): all must fit an int32.
  TORCH_CHECK_VALUE(x.size(2) * x.size(3) < (int64_t{1} << 31) && x.size(2) < (int64_t{1} << 30) &&
                        x.size(3) < (int64_t{1} << 30),
                    "flow_warp: the cpp backend needs H * W < 2^31 and H, W < 2^30, got H = ", x.size(2),
                    ", W = ", x.size(3));
}

at::Tensor flow_warp_forward(const at::Tensor& x_in, const at::Tensor& flow_in, c10::string_view padding_mode,
                             bool normalized) {
  check_inputs(x_in, flow_in);
  const int64_t mode = cpu::flow_warp_geometry::padding_code(padding_mode);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flow = flow_in.contiguous();
  at::Tensor out = outputs::empty_like(x);
  if (out.numel() > 0) cpu::flow_warp_forward_kernel(x, flow, out, mode, normalized);
  return out;
}

std::tuple<at::Tensor, at::Tensor> flow_warp_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                      const at::Tensor& flow_in, c10::string_view padding_mode,
                                                      bool normalized, std::array<bool, 2> needs_grad) {
  check_inputs(x_in, flow_in);
  checks::rank(kOp, "grad_out", grad_out_in, 4, "(B, C, H, W)");
  checks::shape(kOp, "grad_out", grad_out_in, x_in.sizes(), "(B, C, H, W)");
  checks::same_dtype(kOp, "grad_out", grad_out_in, "x", x_in);
  const int64_t mode = cpu::flow_warp_geometry::padding_code(padding_mode);
  const auto [x_needs_grad, flow_needs_grad] = needs_grad;
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flow = flow_in.contiguous();
  // grad_x is zeroed inside the kernel by the thread that scatters into it (cache-warm, no extra pass).
  at::Tensor grad_x = x_needs_grad ? outputs::empty_like(x) : checks::no_grad_tensor(x);
  at::Tensor grad_flow =
      flow_needs_grad ? outputs::empty_like(flow) : checks::no_grad_tensor(flow);
  if (x.numel() > 0 && (x_needs_grad || flow_needs_grad)) {
    cpu::flow_warp_backward_kernel(grad_out, x, flow, x_needs_grad ? &grad_x : nullptr,
                                   flow_needs_grad ? &grad_flow : nullptr, mode, normalized);
  } else if (flow_needs_grad) {
    grad_flow.zero_();  // C = 0: nothing is sampled, so the flow has no influence.
  }
  return {grad_x, grad_flow};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("flow_warp_forward", &flow_warp_forward);
  m.impl("flow_warp_backward", &flow_warp_backward);
}

}  // namespace pyvidgen
