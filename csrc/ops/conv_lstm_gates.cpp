// conv_lstm_gates: checks and allocation around the CPU kernels (defence in depth: the Python op checks
// first with friendlier messages, but a direct call must never reach a kernel with bad shapes).
// Shape errors raise ValueError, dtype errors TypeError, device errors RuntimeError, as in the Python op.
#include <ATen/ATen.h>

#include "ops/ops.h"

namespace pyvidgen {
namespace {

void check_inputs(const at::Tensor& gates, const at::Tensor& c, const std::optional<at::Tensor>& peephole) {
  TORCH_CHECK_VALUE(c.dim() == 4, "conv_lstm_gates: c must be 4-D (B, C, H, W), got ", c.sizes());
  TORCH_CHECK_VALUE(gates.dim() == 4, "conv_lstm_gates: gates must be 4-D (B, 4C, H, W), got ", gates.sizes());
  TORCH_CHECK_VALUE(gates.size(0) == c.size(0) && gates.size(1) == 4 * c.size(1) && gates.size(2) == c.size(2) &&
                        gates.size(3) == c.size(3),
                    "conv_lstm_gates: gates must have shape (B, 4C, H, W) = ",
                    at::IntArrayRef({c.size(0), 4 * c.size(1), c.size(2), c.size(3)}), " to match c ", c.sizes(),
                    ", got ", gates.sizes());
  TORCH_CHECK(gates.device().is_cpu() && c.device().is_cpu(),
              "conv_lstm_gates: the cpp backend needs CPU tensors, got gates on ", gates.device(), " and c on ",
              c.device());
  TORCH_CHECK_TYPE(c.scalar_type() == at::kFloat || c.scalar_type() == at::kDouble,
                   "conv_lstm_gates: the cpp backend supports float32 and float64, got ", c.scalar_type());
  TORCH_CHECK_TYPE(gates.scalar_type() == c.scalar_type(), "conv_lstm_gates: gates has dtype ", gates.scalar_type(),
                   " but c has dtype ", c.scalar_type());
  if (!peephole.has_value()) return;
  const at::Tensor& p = *peephole;
  const bool per_pixel = p.dim() == 4 && p.size(2) == c.size(2) && p.size(3) == c.size(3);
  const bool per_channel = p.dim() == 4 && p.size(2) == 1 && p.size(3) == 1;
  TORCH_CHECK_VALUE(p.dim() == 4 && p.size(0) == 3 && p.size(1) == c.size(1) && (per_pixel || per_channel),
                    "conv_lstm_gates: peephole must have shape (3, C, H, W) = ",
                    at::IntArrayRef({3, c.size(1), c.size(2), c.size(3)}), " or (3, C, 1, 1) = ",
                    at::IntArrayRef({3, c.size(1), 1, 1}), ", got ", p.sizes());
  TORCH_CHECK(p.device().is_cpu(), "conv_lstm_gates: peephole is on ", p.device(), " but c is on ", c.device());
  TORCH_CHECK_TYPE(p.scalar_type() == c.scalar_type(), "conv_lstm_gates: peephole has dtype ", p.scalar_type(),
                   " but c has dtype ", c.scalar_type());
}

void check_grad(const char* name, const at::Tensor& grad, const at::Tensor& c) {
  TORCH_CHECK_VALUE(grad.sizes() == c.sizes(), "conv_lstm_gates backward: ", name, " must have the shape of c ",
                    c.sizes(), ", got ", grad.sizes());
  TORCH_CHECK(grad.device().is_cpu(), "conv_lstm_gates backward: ", name, " is on ", grad.device(),
              " but c is on ", c.device());
  TORCH_CHECK_TYPE(grad.scalar_type() == c.scalar_type(), "conv_lstm_gates backward: ", name, " has dtype ",
                   grad.scalar_type(), " but c has dtype ", c.scalar_type());
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> conv_lstm_gates_forward(const at::Tensor& gates_in, const at::Tensor& c_in,
                                                           const std::optional<at::Tensor>& peephole_in) {
  check_inputs(gates_in, c_in, peephole_in);
  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  const std::optional<at::Tensor> peephole = contiguous(peephole_in);
  at::Tensor h = at::empty_like(c, at::MemoryFormat::Contiguous);
  at::Tensor c_next = at::empty_like(c, at::MemoryFormat::Contiguous);
  if (c.numel() > 0) cpu::conv_lstm_gates_forward_kernel(gates, c, peephole, h, c_next);
  return {h, c_next};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_lstm_gates_backward(const at::Tensor& grad_h_in,
                                                                        const at::Tensor& grad_c_next_in,
                                                                        const at::Tensor& gates_in,
                                                                        const at::Tensor& c_in,
                                                                        const std::optional<at::Tensor>& peephole_in) {
  check_inputs(gates_in, c_in, peephole_in);
  check_grad("grad_h", grad_h_in, c_in);
  check_grad("grad_c_next", grad_c_next_in, c_in);
  const at::Tensor grad_h = grad_h_in.contiguous();
  const at::Tensor grad_c_next = grad_c_next_in.contiguous();
  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  const std::optional<at::Tensor> peephole = contiguous(peephole_in);
  at::Tensor grad_gates = at::empty_like(gates, at::MemoryFormat::Contiguous);
  at::Tensor grad_c = at::empty_like(c, at::MemoryFormat::Contiguous);
  // An undefined tensor becomes None in Python: no peepholes, no peephole gradient. With peepholes the
  // gradient is a sum over the batch, which is zero for an empty batch, so it starts zeroed.
  at::Tensor grad_peephole =
      peephole.has_value() ? at::zeros_like(*peephole, at::MemoryFormat::Contiguous) : at::Tensor();
  if (c.numel() > 0) {
    cpu::conv_lstm_gates_backward_kernel(grad_h, grad_c_next, gates, c, peephole, grad_gates, grad_c,
                                         peephole.has_value() ? &grad_peephole : nullptr);
  }
  return {grad_gates, grad_c, grad_peephole};
}

}  // namespace pyvidgen
