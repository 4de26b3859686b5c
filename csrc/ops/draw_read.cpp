// draw_read: checks and allocation around the CPU kernels, registered as pyvidgen_cpp::draw_read_forward
// and pyvidgen_cpp::draw_read_backward (schemas defined once, by the op's declaration in pyvidgen/ops).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "ops/checks.h"
#include "ops/outputs.h"
#include "ops/cpu/draw_read_kernel.h"

namespace pyvidgen {
namespace {

constexpr const char* kOp = "draw_read";
constexpr std::array<const char*, 5> kParams = {"gx", "gy", "delta", "sigma2", "gamma"};

void check_inputs(const at::Tensor& x, const std::array<const at::Tensor*, 5>& params, int64_t n) {
  checks::rank(kOp, "x", x, 4, "(B, C, H, W)");
  for (size_t k = 0; k < params.size(); ++k) {
    checks::rank(kOp, kParams[k], *params[k], 1, "(B,)");
    checks::shape(kOp, kParams[k], *params[k], {x.size(0)}, "(B,)");
    checks::same_dtype(kOp, kParams[k], *params[k], "x", x);
  }
  TORCH_CHECK_VALUE(n >= 1, kOp, ": the glimpse size N must be >= 1, got ", n);
}

at::Tensor draw_read_forward(const at::Tensor& x_in, const at::Tensor& gx, const at::Tensor& gy,
                             const at::Tensor& delta, const at::Tensor& sigma2, const at::Tensor& gamma, int64_t n) {
  check_inputs(x_in, {&gx, &gy, &delta, &sigma2, &gamma}, n);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = outputs::empty({x.size(0), x.size(1), n, n}, x.options());
  if (out.numel() > 0) {
    cpu::draw_read_forward_kernel(x, gx.contiguous(), gy.contiguous(), delta.contiguous(), sigma2.contiguous(),
                                  gamma.contiguous(), n, out);
  }
  return out;
}

// Every gradient comes out of one pass whatever is asked: they share the filterbanks and the contractions.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> draw_read_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& gx, const at::Tensor& gy,
    const at::Tensor& delta, const at::Tensor& sigma2, const at::Tensor& gamma, int64_t n,
    std::array<bool, 6> needs_grad) {
  check_inputs(x_in, {&gx, &gy, &delta, &sigma2, &gamma}, n);
  checks::rank(kOp, "grad_out", grad_out_in, 4, "(B, C, N, N)");
  checks::shape(kOp, "grad_out", grad_out_in, {x_in.size(0), x_in.size(1), n, n}, "(B, C, N, N)");
  checks::same_dtype(kOp, "grad_out", grad_out_in, "x", x_in);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  at::Tensor grad_x = outputs::empty_like(x);
  std::array<at::Tensor, 5> grads;
  for (auto& g : grads) g = at::empty({x.size(0)}, x.options());
  if (x.size(0) > 0) {
    cpu::draw_read_backward_kernel(grad_out, x, gx.contiguous(), gy.contiguous(), delta.contiguous(),
                                   sigma2.contiguous(), gamma.contiguous(), n, grad_x, grads[0], grads[1], grads[2],
                                   grads[3], grads[4]);
  }
  const auto pick = [&](size_t k, const at::Tensor& g) { return needs_grad[k] ? g : checks::no_grad_tensor(g); };
  return {pick(0, grad_x), pick(1, grads[0]), pick(2, grads[1]),
          pick(3, grads[2]), pick(4, grads[3]), pick(5, grads[4])};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyvidgen_cpp, CPU, m) {
  m.impl("draw_read_forward", &draw_read_forward);
  m.impl("draw_read_backward", &draw_read_backward);
}

}  // namespace pyvidgen
