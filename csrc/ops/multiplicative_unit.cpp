// multiplicative_unit: checks and allocation around the CPU kernels, registered as
// pyvidgen_cpp::multiplicative_unit_forward and pyvidgen_cpp::multiplicative_unit_backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/multiplicative_unit_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "multiplicative_unit";

void check_inputs(const at::Tensor& pre, const at::Tensor& h) {
  checks::rank(kOp, "pre", pre, 4, "(B, 4C, H, W)");
  checks::rank(kOp, "h", h, 4, "(B, C, H, W)");
  checks::shape(kOp, "pre", pre, {h.size(0), 4 * h.size(1), h.size(2), h.size(3)}, "(B, 4C, H, W)");
  checks::same_dtype(kOp, "pre", pre, "h", h);
}

at::Tensor multiplicative_unit_forward(const at::Tensor& pre_in, const at::Tensor& h_in) {
  check_inputs(pre_in, h_in);
  // A channels_last h keeps its layout (checks::keeps_channels_last); pre and the output then follow it.
  const at::MemoryFormat format = checks::feature_map_format(checks::keeps_channels_last(h_in));
  const at::Tensor pre = pre_in.contiguous(format);
  const at::Tensor h = h_in.contiguous(format);
  at::Tensor out = outputs::empty_like(h, format);
  if (h.numel() > 0) cpu::multiplicative_unit_forward_kernel(pre, h, out);
  return out;
}

// Both gradients come out of one pass whatever is asked: they share all the work.
std::tuple<at::Tensor, at::Tensor> multiplicative_unit_backward(const at::Tensor& grad_out_in, const at::Tensor& pre_in,
                                                                const at::Tensor& h_in, std::array<bool, 2> needs_grad) {
  check_inputs(pre_in, h_in);
  checks::rank(kOp, "grad_out", grad_out_in, 4, "(B, C, H, W)");
  checks::shape(kOp, "grad_out", grad_out_in, h_in.sizes(), "(B, C, H, W)");
  checks::same_dtype(kOp, "grad_out", grad_out_in, "h", h_in);
  const at::MemoryFormat format = checks::feature_map_format(checks::keeps_channels_last(h_in));
  const at::Tensor grad_out = grad_out_in.contiguous(format);
  const at::Tensor pre = pre_in.contiguous(format);
  const at::Tensor h = h_in.contiguous(format);
  at::Tensor grad_pre = outputs::empty_like(pre, format);
  at::Tensor grad_h = outputs::empty_like(h, format);
  if (h.numel() > 0) cpu::multiplicative_unit_backward_kernel(grad_out, pre, h, grad_pre, grad_h);
  return {needs_grad[0] ? grad_pre : checks::no_grad_tensor(pre), needs_grad[1] ? grad_h : checks::no_grad_tensor(h)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("multiplicative_unit_forward", &multiplicative_unit_forward);
  m.impl("multiplicative_unit_backward", &multiplicative_unit_backward);
}

}  // namespace pyvidgen
