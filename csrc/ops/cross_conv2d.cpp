// cross_conv2d: checks and allocation around the CPU kernels, registered as pyvidgen_cpp::cross_conv2d_forward
// and pyvidgen_cpp::cross_conv2d_backward (schemas defined once, by the op's declaration in pyvidgen/ops).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/cross_conv2d_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "cross_conv2d";

void check_inputs(const at::Tensor& x, const at::Tensor& kernels) {
  checks::rank(kOp, "x", x, 4, "(B, C, H, W)");
  checks::rank(kOp, "kernels", kernels, 4, "(B, C, KH, KW)");
  checks::shape(kOp, "kernels", kernels, {x.size(0), x.size(1), kernels.size(2), kernels.size(3)},
                "(B, C, KH, KW)");
  checks::same_dtype(kOp, "kernels", kernels, "x", x);
  TORCH_CHECK_VALUE(kernels.size(2) % 2 == 1, kOp, ": the kernel size kh must be odd (for 'same' padding), got ",
                    kernels.size(2));
  TORCH_CHECK_VALUE(kernels.size(3) % 2 == 1, kOp, ": the kernel size kw must be odd (for 'same' padding), got ",
                    kernels.size(3));
}

at::Tensor cross_conv2d_forward(const at::Tensor& x_in, const at::Tensor& kernels_in) {
  check_inputs(x_in, kernels_in);
  const at::Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::zeros(x.sizes(), x.options());
  at::Tensor out = outputs::empty(x.sizes(), x.options());
  cpu::cross_conv2d_forward_kernel(x, kernels_in.contiguous(), out);
  return out;
}

// The gradients asked for come out of one pass over each plane (grad_out padded once for both).
std::tuple<at::Tensor, at::Tensor> cross_conv2d_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                         const at::Tensor& kernels_in, std::array<bool, 2> needs_grad) {
  check_inputs(x_in, kernels_in);
  checks::rank(kOp, "grad_out", grad_out_in, 4, "(B, C, H, W)");
  checks::shape(kOp, "grad_out", grad_out_in, x_in.sizes(), "(B, C, H, W)");
  checks::same_dtype(kOp, "grad_out", grad_out_in, "x", x_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor kernels = kernels_in.contiguous();
  if (x.numel() == 0) {
    // Nothing convolved: zero gradients (an empty sum), of the right shapes.
    return {needs_grad[0] ? at::zeros(x.sizes(), x.options()) : checks::no_grad_tensor(x),
            needs_grad[1] ? at::zeros(kernels.sizes(), kernels.options()) : checks::no_grad_tensor(kernels)};
  }
  at::Tensor grad_x = needs_grad[0] ? outputs::empty(x.sizes(), x.options()) : checks::no_grad_tensor(x);
  at::Tensor grad_kernels =
      needs_grad[1] ? at::empty(kernels.sizes(), kernels.options()) : checks::no_grad_tensor(kernels);
  if (needs_grad[0] || needs_grad[1]) {
    cpu::cross_conv2d_backward_kernel(grad_out_in.contiguous(), x, kernels, needs_grad[0], needs_grad[1], grad_x,
                                      grad_kernels);
  }
  return {grad_x, grad_kernels};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("cross_conv2d_forward", &cross_conv2d_forward);
  m.impl("cross_conv2d_backward", &cross_conv2d_backward);
}

}  // namespace pyvidgen
