"""pyvidgen.ops.cross_conv2d: the shared op tester, the loop oracle and the op's own errors."""

from __future__ import annotations

import pytest
import torch

import pyvidgen
from pyvidgen.kernels.reference import cross_conv2d as reference
from pyvidgen.ops import OPS, cross_conv2d
from tests.conftest import DEVICE, kernel_backends
from tests.ops.op_tester import OpTester
from tests.oracles.conv_oracles import cross_conv2d_oracle

BACKENDS = ["reference", *(b for b in kernel_backends() if b in OPS["cross_conv2d"].spec.backends)]


class TestCrossConv2d(OpTester):
    op_name = "cross_conv2d"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 3, 3), (1, 2, 4, 3, 5, 7), (2, 1, 6, 6, 1, 5)])
def test_matches_the_loop_oracle(backend, shape, rng):
    x, kernels = OPS["cross_conv2d"].sample(shape, dtype=torch.float64, device=DEVICE, generator=rng)
    with pyvidgen.backend(backend):
        out = cross_conv2d(x, kernels)
    torch.testing.assert_close(out.cpu(), cross_conv2d_oracle(x.cpu(), kernels.cpu()))


def test_reference_gradients_are_autograd_of_the_oracle(rng):
    x = torch.randn(2, 3, 5, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2, 3, 3, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 5, 4, generator=rng, dtype=torch.float64)
    expected = torch.autograd.grad(cross_conv2d_oracle(x, kernels), (x, kernels), grad)
    result = reference.cross_conv2d_backward(grad, x.detach(), kernels.detach())
    for got, want in zip(result, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_one_hot_kernel_shifts_each_sample_its_own_way(backend):
    """Sample b's kernel is a one-hot tap at offset (di, dj): its output is its input shifted by (-di, -dj)."""
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32, device=DEVICE).reshape(2, 1, 5, 6)
    kernels = torch.zeros(2, 1, 3, 3, device=DEVICE)
    kernels[0, 0, 0, 2] = 1.0  # reads (y - 1, x + 1)
    kernels[1, 0, 2, 1] = 1.0  # reads (y + 1, x)
    with pyvidgen.backend(backend):
        out = cross_conv2d(x, kernels)
    expected = torch.zeros_like(x)
    expected[0, 0, 1:, :-1] = x[0, 0, :-1, 1:]
    expected[1, 0, :-1, :] = x[1, 0, 1:, :]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"kernels": torch.zeros(2, 3, 4, 3)}, ValueError, r"cross_conv2d: the kernel size kh must be odd"),
        ({"kernels": torch.zeros(2, 3, 3, 2)}, ValueError, r"cross_conv2d: the kernel size kw must be odd"),
        ({"kernels": torch.zeros(3, 3, 3, 3)}, ValueError, r"cross_conv2d: kernels must have shape \(B, C, KH, KW\)"),
        ({"kernels": torch.zeros(2, 4, 3, 3)}, ValueError, r"cross_conv2d: kernels must have shape \(B, C, KH, KW\)"),
        ({"kernels": torch.zeros(2, 3, 3)}, ValueError, r"cross_conv2d: kernels must be a 4-D tensor"),
        ({"x": torch.zeros(3, 5, 6)}, ValueError, r"cross_conv2d: x must be a 4-D tensor"),
        ({"kernels": torch.zeros(2, 3, 3, 3, dtype=torch.float64)}, TypeError, r"cross_conv2d: kernels"),
        ({"kernels": torch.zeros(2, 3, 3, 3, device="meta")}, RuntimeError, r"cross_conv2d: kernels is on meta"),
    ],
)
def test_bad_arguments(change, error, pattern):
    args = {"x": torch.zeros(2, 3, 5, 6), "kernels": torch.zeros(2, 3, 3, 3)}
    args.update(change)
    with pytest.raises(error, match=pattern):
        cross_conv2d(args["x"], args["kernels"])
