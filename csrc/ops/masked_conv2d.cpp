// masked_conv2d: checks and allocation around the CPU kernels, registered as
// pyvidgen_cpp::masked_conv2d_forward and pyvidgen_cpp::masked_conv2d_backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <string_view>

#include "ops/checks.h"
#include "ops/cpu/masked_conv2d_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "masked_conv2d";

bool is_type_a(c10::string_view mask_type) {
  if (mask_type == "A") return true;
  if (mask_type == "B") return false;
  TORCH_CHECK_VALUE(false, "masked_conv2d: mask_type must be one of 'A', 'B', got '", mask_type, "'");
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  int64_t color_groups, int64_t dilation) {
  checks::rank(kOp, "x", x, 4, "(B, Cin, H, W)");
  checks::rank(kOp, "weight", weight, 4, "(Cout, Cin, K, K)");
  checks::shape(kOp, "weight", weight, {weight.size(0), x.size(1), weight.size(2), weight.size(2)},
                "(Cout, Cin, K, K)");
  checks::same_dtype(kOp, "weight", weight, "x", x);
  TORCH_CHECK_VALUE(weight.size(2) % 2 == 1, "masked_conv2d: the kernel size K must be odd, got ", weight.size(2));
  TORCH_CHECK_VALUE(dilation >= 1, "masked_conv2d: dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(color_groups >= 1 && color_groups <= std::min(x.size(1), weight.size(0)),
                    "masked_conv2d: color_groups must be in [1, min(Cin, Cout)] = [1, ",
                    std::min(x.size(1), weight.size(0)), "], got ", color_groups);
  if (!bias.has_value()) return;
  checks::rank(kOp, "bias", *bias, 1, "(Cout,)");
  checks::shape(kOp, "bias", *bias, {weight.size(0)}, "(Cout,)");
  checks::same_dtype(kOp, "bias", *bias, "x", x);
}

at::Tensor masked_conv2d_forward(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 c10::string_view mask_type, int64_t color_groups, int64_t dilation) {
  check_inputs(x, weight, bias, color_groups, dilation);
  const bool type_a = is_type_a(mask_type);
  if (x.numel() == 0) {
    return at::zeros({x.size(0), weight.size(0), x.size(2), x.size(3)},
                     x.options().memory_format(checks::feature_map_format(checks::keeps_channels_last(x))));
  }
  return cpu::masked_conv2d_forward_kernel(x, weight.contiguous(), checks::contiguous(bias), type_a, color_groups,
                                           dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    c10::string_view mask_type, int64_t color_groups, int64_t dilation, std::array<bool, 3> needs_grad) {
  check_inputs(x, weight, bias, color_groups, dilation);
  checks::rank(kOp, "grad_out", grad_out, 4, "(B, Cout, H, W)");
  checks::shape(kOp, "grad_out", grad_out, {x.size(0), weight.size(0), x.size(2), x.size(3)}, "(B, Cout, H, W)");
  checks::same_dtype(kOp, "grad_out", grad_out, "x", x);
  const bool type_a = is_type_a(mask_type);
  std::array<at::Tensor, 3> grads;
  if (x.numel() == 0 || grad_out.numel() == 0) {
    // Nothing convolved: zero gradients (an empty sum), of the right shapes.
    grads = {at::zeros_like(x, checks::feature_map_format(checks::keeps_channels_last(x))),
             at::zeros_like(weight, at::MemoryFormat::Contiguous),
             bias.has_value() ? at::zeros_like(*bias) : at::Tensor()};
  } else {
    grads = cpu::masked_conv2d_backward_kernel(grad_out, x, weight.contiguous(),
                                               bias.has_value(), type_a, color_groups, dilation, needs_grad);
  }
  const at::Tensor& like_bias = bias.has_value() ? *bias : x;
  return {needs_grad[0] ? grads[0] : checks::no_grad_tensor(x), needs_grad[1] ? grads[1] : checks::no_grad_tensor(weight),
          needs_grad[2] && bias.has_value() ? grads[2] : checks::no_grad_tensor(like_bias)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("masked_conv2d_forward", &masked_conv2d_forward);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward);
}

}  // namespace pyvidgen
