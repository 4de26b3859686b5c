// conv_lstm_gates: checks and allocation around the CPU kernels, registered as
// pyvidgen_cpp::conv_lstm_gates_forward and pyvidgen_cpp::conv_lstm_gates_backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/conv_lstm_gates_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "conv_lstm_gates";

void check_inputs(const at::Tensor& gates, const at::Tensor& c, const std::optional<at::Tensor>& peephole) {
  checks::rank(kOp, "gates", gates, 4, "(B, 4C, H, W)");
  checks::rank(kOp, "c", c, 4, "(B, C, H, W)");
  checks::shape(kOp, "gates", gates, {c.size(0), 4 * c.size(1), c.size(2), c.size(3)}, "(B, 4C, H, W)");
  checks::same_dtype(kOp, "gates", gates, "c", c);
  if (!peephole.has_value()) return;
  const at::Tensor& p = *peephole;
  checks::rank(kOp, "peephole", p, 4, "(3, C, H, W) or (3, C, 1, 1)");
  if (p.size(2) == 1 && p.size(3) == 1) {
    checks::shape(kOp, "peephole", p, {3, c.size(1), 1, 1}, "(3, C, 1, 1)");
  } else {
    checks::shape(kOp, "peephole", p, {3, c.size(1), c.size(2), c.size(3)}, "(3, C, H, W)");
  }
  checks::same_dtype(kOp, "peephole", p, "c", c);
}

void check_grad(const char* name, const at::Tensor& grad, const at::Tensor& c) {
  checks::rank(kOp, name, grad, 4, "(B, C, H, W)");
  checks::shape(kOp, name, grad, c.sizes(), "(B, C, H, W)");
  checks::same_dtype(kOp, name, grad, "c", c);
}

std::tuple<at::Tensor, at::Tensor> conv_lstm_gates_forward(const at::Tensor& gates_in, const at::Tensor& c_in,
                                                           const std::optional<at::Tensor>& peephole_in) {
  check_inputs(gates_in, c_in, peephole_in);
  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  const std::optional<at::Tensor> peephole = checks::contiguous(peephole_in);
  at::Tensor h = outputs::empty_like(c);
  at::Tensor c_next = outputs::empty_like(c);
  if (c.numel() > 0) cpu::conv_lstm_gates_forward_kernel(gates, c, peephole, h, c_next);
  return {h, c_next};
}

// The kernel writes every gradient in one pass whatever is asked: they share all the work.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_lstm_gates_backward(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_next_in, const at::Tensor& gates_in, const at::Tensor& c_in,
    const std::optional<at::Tensor>& peephole_in, std::array<bool, 3> needs_grad) {
  check_inputs(gates_in, c_in, peephole_in);
  check_grad("grad_h", grad_h_in, c_in);
  check_grad("grad_c_next", grad_c_next_in, c_in);
  const at::Tensor grad_h = grad_h_in.contiguous();
  const at::Tensor grad_c_next = grad_c_next_in.contiguous();
  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  const std::optional<at::Tensor> peephole = checks::contiguous(peephole_in);
  at::Tensor grad_gates = outputs::empty_like(gates);
  at::Tensor grad_c = outputs::empty_like(c);
  // The peephole gradient is a sum over the batch, zero for an empty batch, so it starts zeroed.
  at::Tensor grad_peephole =
      peephole.has_value() ? at::zeros_like(*peephole, at::MemoryFormat::Contiguous) : checks::no_grad_tensor(c);
  if (c.numel() > 0) {
    cpu::conv_lstm_gates_backward_kernel(grad_h, grad_c_next, gates, c, peephole, grad_gates, grad_c,
                                         peephole.has_value() ? &grad_peephole : nullptr);
  }
  return {needs_grad[0] ? grad_gates : checks::no_grad_tensor(gates), needs_grad[1] ? grad_c : checks::no_grad_tensor(c),
          needs_grad[2] ? grad_peephole : checks::no_grad_tensor(c)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("conv_lstm_gates_forward", &conv_lstm_gates_forward);
  m.impl("conv_lstm_gates_backward", &conv_lstm_gates_backward);
}

}  // namespace pyvidgen
