// draw_write: checks and allocation around the CPU kernels, registered as pyvidgen_cpp::draw_write_forward
// and pyvidgen_cpp::draw_write_backward (schemas defined once, by the op's declaration in pyvidgen/ops).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/draw_write_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "draw_write";
constexpr std::array<const char*, 5> kParams = {"gx", "gy", "delta", "sigma2", "gamma"};

void check_inputs(const at::Tensor& w, const std::array<const at::Tensor*, 5>& params, int64_t height, int64_t width) {
  checks::rank(kOp, "w", w, 4, "(B, C, N, N)");
  checks::shape(kOp, "w", w, {w.size(0), w.size(1), w.size(2), w.size(2)}, "(B, C, N, N)");
  for (size_t k = 0; k < params.size(); ++k) {
    checks::rank(kOp, kParams[k], *params[k], 1, "(B,)");
    checks::shape(kOp, kParams[k], *params[k], {w.size(0)}, "(B,)");
    checks::same_dtype(kOp, kParams[k], *params[k], "w", w);
  }
  TORCH_CHECK_VALUE(height >= 1, kOp, ": the canvas size H must be >= 1, got ", height);
  TORCH_CHECK_VALUE(width >= 1, kOp, ": the canvas size W must be >= 1, got ", width);
}

at::Tensor draw_write_forward(const at::Tensor& w_in, const at::Tensor& gx, const at::Tensor& gy,
                              const at::Tensor& delta, const at::Tensor& sigma2, const at::Tensor& gamma,
                              int64_t height, int64_t width) {
  check_inputs(w_in, {&gx, &gy, &delta, &sigma2, &gamma}, height, width);
  const at::Tensor w = w_in.contiguous();
  at::Tensor out = outputs::empty({w.size(0), w.size(1), height, width}, w.options());
  if (out.numel() > 0) {
    cpu::draw_write_forward_kernel(w, gx.contiguous(), gy.contiguous(), delta.contiguous(), sigma2.contiguous(),
                                   gamma.contiguous(), height, width, out);
  }
  return out;
}

// Every gradient comes out of one pass whatever is asked: they share the filterbanks and the contractions.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draw_write_backward(
    const at::Tensor& grad_out_in, const at::Tensor& w_in, const at::Tensor& gx, const at::Tensor& gy,
    const at::Tensor& delta, const at::Tensor& sigma2, const at::Tensor& gamma, int64_t height, int64_t width,
    std::array<bool, 6> needs_grad) {
  check_inputs(w_in, {&gx, &gy, &delta, &sigma2, &gamma}, height, width);
  checks::rank(kOp, "grad_out", grad_out_in, 4, "(B, C, H, W)");
  checks::shape(kOp, "grad_out", grad_out_in, {w_in.size(0), w_in.size(1), height, width}, "(B, C, H, W)");
  checks::same_dtype(kOp, "grad_out", grad_out_in, "w", w_in);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor w = w_in.contiguous();
  at::Tensor grad_w = outputs::empty_like(w);
  std::array<at::Tensor, 5> grads;
  for (auto& g : grads) g = at::empty({w.size(0)}, w.options());
  if (w.size(0) > 0) {
    cpu::draw_write_backward_kernel(grad_out, w, gx.contiguous(), gy.contiguous(), delta.contiguous(),
                                    sigma2.contiguous(), gamma.contiguous(), height, width, grad_w, grads[0],
                                    grads[1], grads[2], grads[3], grads[4]);
  }
  const auto pick = [&](size_t k, const at::Tensor& g) { return needs_grad[k] ? g : checks::no_grad_tensor(g); };
  return {pick(0, grad_w), pick(1, grads[0]), pick(2, grads[1]),
          pick(3, grads[2]), pick(4, grads[3]), pick(5, grads[4])};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("draw_write_forward", &draw_write_forward);
  m.impl("draw_write_backward", &draw_write_backward);
}

}  // namespace pyvidgen
