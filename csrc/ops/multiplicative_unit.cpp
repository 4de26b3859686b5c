// multiplicative_unit: checks and allocation around the CPU kernels (defence in depth: the Python op
// checks first with friendlier messages, but a direct call must never reach a kernel with bad shapes).
// Shape errors raise ValueError, dtype errors TypeError, device errors RuntimeError, as in the Python op.
#include <ATen/ATen.h>

#include "ops/ops.h"

namespace pyvidgen {
namespace {

void check_inputs(const at::Tensor& pre, const at::Tensor& h) {
  TORCH_CHECK_VALUE(h.dim() == 4, "multiplicative_unit: h must be 4-D (B, C, H, W), got ", h.sizes());
  TORCH_CHECK_VALUE(pre.dim() == 4, "multiplicative_unit: pre must be 4-D (B, 4C, H, W), got ", pre.sizes());
  TORCH_CHECK_VALUE(pre.size(0) == h.size(0) && pre.size(1) == 4 * h.size(1) && pre.size(2) == h.size(2) &&
                        pre.size(3) == h.size(3),
                    "multiplicative_unit: pre must have shape (B, 4C, H, W) = ",
                    at::IntArrayRef({h.size(0), 4 * h.size(1), h.size(2), h.size(3)}), " to match h ", h.sizes(),
                    ", got ", pre.sizes());
  TORCH_CHECK(pre.device().is_cpu() && h.device().is_cpu(), "multiplicative_unit: the cpp backend needs CPU tensors, ",
              "got pre on ", pre.device(), " and h on ", h.device());
  TORCH_CHECK_TYPE(h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble,
                   "multiplicative_unit: the cpp backend supports float32 and float64, got ", h.scalar_type());
  TORCH_CHECK_TYPE(pre.scalar_type() == h.scalar_type(), "multiplicative_unit: pre has dtype ", pre.scalar_type(),
                   " but h has dtype ", h.scalar_type());
}

}  // namespace

at::Tensor multiplicative_unit_forward(const at::Tensor& pre_in, const at::Tensor& h_in) {
  check_inputs(pre_in, h_in);
  const at::Tensor pre = pre_in.contiguous();
  const at::Tensor h = h_in.contiguous();
  at::Tensor out = at::empty_like(h, at::MemoryFormat::Contiguous);
  if (h.numel() > 0) cpu::multiplicative_unit_forward_kernel(pre, h, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> multiplicative_unit_backward(const at::Tensor& grad_out_in, const at::Tensor& pre_in,
                                                                const at::Tensor& h_in) {
  check_inputs(pre_in, h_in);
  TORCH_CHECK_VALUE(grad_out_in.sizes() == h_in.sizes(), "multiplicative_unit backward: grad_out must have the shape ",
                    "of h ", h_in.sizes(), ", got ", grad_out_in.sizes());
  TORCH_CHECK(grad_out_in.device().is_cpu(), "multiplicative_unit backward: grad_out is on ", grad_out_in.device(),
              " but h is on ", h_in.device());
  TORCH_CHECK_TYPE(grad_out_in.scalar_type() == h_in.scalar_type(), "multiplicative_unit backward: grad_out has dtype ",
                   grad_out_in.scalar_type(), " but h has dtype ", h_in.scalar_type());
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor pre = pre_in.contiguous();
  const at::Tensor h = h_in.contiguous();
  at::Tensor grad_pre = at::empty_like(pre, at::MemoryFormat::Contiguous);
  at::Tensor grad_h = at::empty_like(h, at::MemoryFormat::Contiguous);
  if (h.numel() > 0) cpu::multiplicative_unit_backward_kernel(grad_out, pre, h, grad_pre, grad_h);
  return {grad_pre, grad_h};
}

}  // namespace pyvidgen
